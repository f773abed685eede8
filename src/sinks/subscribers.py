"""What dispatch keeps of subscribers besides their tasks: the facts a waiting task is
checked against (`record_facts`), and their erasure by a profile tombstone (`forget`,
`erasures`, `forgotten_tasks`; docs/security.md, "Forgetting a subscriber")."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence

from moments.models import InputEvent, ProfileEvent, ServiceTask
from sinks.payloads import Decoded
from sinks.relevance import erasures, is_forgotten
from sinks.retry import Retrying
from sinks.stores import Clock, DispatchStores, Released

log = logging.getLogger("sinks.dispatch")


Decide = Callable[[Sequence[Released], float], Awaitable[None]]
"""The sink's decision over tasks taken out of the deferral queue (`TaskSink.decide_taken`),
at a time (epoch seconds)."""


class Subscribers:
    """Over the sink's stores (facts, contacts, declines, deferral queue); `decoded`: the
    tasks the sink read back (`Decoded`), let go of when their subscriber is forgotten;
    `clock`: the sink's; `redis`: its retried store calls; `decide`: the sink's decision
    over the waiting tasks a tombstone takes out of the queue."""

    def __init__(
        self,
        stores: DispatchStores,
        decoded: Decoded,
        clock: Clock,
        redis: Retrying,
        decide: Decide,
    ) -> None:
        self.stores = stores
        self.facts = stores.facts
        self.declines = stores.declines
        self.deferral = stores.deferral
        self.clock = clock
        self._decoded = decoded
        self._redis = redis
        self._decide = decide

    async def forget(
        self,
        subscriber_ids: Sequence[str],
        rule_ids: Sequence[str],
        erased_at: Mapping[str, float] | None = None,
        made: Mapping[str, float] | None = None,
    ) -> None:
        """Profile tombstones: erase what the stores keep of these subscribers (facts,
        contacts, declines of `rule_ids`, open merge group, suspended-line index) and
        this sink keeps (their tasks read back, `Decoded`), and mark
        them forgotten now, so a task of theirs made before, still waiting or pending, is
        dropped when it comes up (`is_forgotten`) instead of reaching them. Their tasks
        waiting in the deferral queue come up now: taken out of it with these erasures
        (`Deferrals.forget`) and decided once the mark is written, so dropped, their
        payloads with them; one the store does not find (`Deferrals.forget`: an earlier
        version's, but for one its line or open merge group names; one more than a day
        overdue past a bounded look) is dropped at its release. And erased at
        `erased_at` (the tombstones' own times, `BatchResult.erased_at`; now when not
        given), so their events dated before it and read later are dropped (`erasures`).
        `made`: the earliest `created_at` (epoch seconds) of each one's tasks the batch
        made after the tombstone (the number's new holder): the mark is put just before
        it. The engine stamps a batch's tasks before the batch forgets; marked now, such
        a task read as made before the tombstone, and was dropped at its release."""
        if not subscriber_ids:
            return
        subs = list(dict.fromkeys(subscriber_ids))
        at = self.clock()
        self._decoded.forget(subs)
        erased = {sub: (erased_at or {}).get(sub, at) for sub in subs}
        marks: dict[float, list[str]] = {}
        for sub in subs:
            after = (made or {}).get(sub)
            mark = at if after is None else min(at, math.nextafter(after, -math.inf))
            marks.setdefault(mark, []).append(sub)

        async def erase() -> list[Released]:
            taken: list[Released] = []

            async def take_waiting() -> None:
                taken.extend(await self.deferral.forget(subs, at))

            # The marks first: an outcome that wrote a decline after the erasure below
            # looks them up again and erases it (`moments.outcomes`), which holds only if
            # the mark was there before the erasure (in one gather they went in no order).
            await asyncio.gather(
                *(self.facts.forget(group, mark, erased) for mark, group in marks.items())
            )
            await asyncio.gather(
                self.stores.contacts.forget(subs),
                self.stores.frequency.forget(subs),
                self.declines.forget(subs, rule_ids),
                take_waiting(),
            )
            return taken

        # Taken in a call that failed after the script ran, they are pending: the re-drive
        # decides them (`TaskSink.redrive`), as one a crash left.
        taken = await self._redis(erase, "forgetting subscribers")
        if taken:
            await self._decide(taken, at)

    async def erasures(self, subscriber_ids: Sequence[str]) -> dict[str, float]:
        """When each of these subscribers was erased, for those a tombstone erased in the
        last 90 days (the `forgotten` mark): one round trip, for the batch's subscribers
        that have no record (`Detector.unrecorded`)."""
        if not subscriber_ids:
            return {}
        got = await self._redis(lambda: self.facts.get_many(subscriber_ids), "reading erasures")
        return erasures(subscriber_ids, got)

    async def forgotten_tasks(self, tasks: Sequence[ServiceTask]) -> set[str]:
        """The ids of those of `tasks` made before a tombstone erased their subscriber
        (`is_forgotten`): what an outcome reported for them must not act on."""
        if not tasks:
            return set()
        subs = list(dict.fromkeys(t.subscriber_id for t in tasks))
        got = await self._redis(lambda: self.facts.get_many(subs), "reading erasures")
        facts = dict(zip(subs, got, strict=True))
        return {t.task_id for t in tasks if is_forgotten(t, facts[t.subscriber_id])}

    async def record_facts(self, events: Sequence[InputEvent]) -> None:
        """Record the facts a waiting task is checked against, and make the tasks of lines
        these events reactivate due now (not at their next look, `SUSPENDED_POLL_S`), after
        the facts: a release parking one of them meanwhile sees the fact
        (`Parking.active_after`)."""
        await self._redis(lambda: self.facts.record(events), "recording facts")
        lines = [
            e.subscriber_id for e in events if isinstance(e, ProfileEvent) and e.status == "active"
        ]
        if lines:
            now = self.clock()
            woken = await self._redis(
                lambda: self.deferral.wake(lines, now), "waking tasks of reactivated lines"
            )
            if woken:
                log.debug("%d task(s) of reactivated line(s) due now", woken)
