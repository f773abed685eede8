"""Is a waiting task still worth delivering? Checks run just before a task is released.

The facts they need are recorded by the runtime as events stream past, in one small
Redis hash per subscriber (`moments:<app>:facts:<subscriber>`, 90 days):
- `topup`: epoch seconds (event time) of the latest top-up;
- `home`: epoch seconds of the latest sighting at home (a domestic roaming record,
  or a roaming record in the home country);
- `abroad`: epoch seconds of the latest sighting abroad;
- `active`: epoch seconds of the latest profile update saying the line is active
  (a task deferred while the line was suspended waits for it);
- `suspended`: epoch seconds of the latest one saying it is suspended (`reactivated`:
  an `active` after it says the line is active, however late it was read; a task that
  waited for something else and finds the line suspended at its release waits for it,
  `SubscriberFacts.line_suspended`, `TimeGates.suspended`);
- `closed`: epoch seconds of the latest one saying it is closed: the line is closed while
  no `active` or `suspended` came at or after it (`SubscriberFacts.line_closed`; a task
  that waited is dropped then, `closed`, and one published is withdrawn,
  sinks.withdrawals);
- `forgotten`: when a profile tombstone erased the subscriber (the wall clock, or event
  time in a backtest); the hash then holds nothing else but `erased`, and a task made
  before it is dropped when it comes up for a decision (`is_forgotten`);
- `opt_out:<channel>` / `opt_in:<channel>`: epoch seconds of the latest profile update
  whose `opt_out` list named the channel / did not (one of each channel moments sends
  on, for every update carrying `opt_out`; a null `opt_out` says nothing): the channel
  is opted out when the first is at or after the second, so the latest update carrying
  `opt_out` decides, however late an older one is read (`SubscriberFacts.opted_out`).
  A channel this version does not send on gets its `opt_out:` only, when named, its name
  A-Z lowered (`models.channel_key`: `opt_out:wechat` for `WeChat`): a newer version
  sharing the hash in a rolling upgrade may send on it, and its release and confirm read
  it by the lowered name of the task's channel;
- `opt_list`: epoch seconds of the latest profile update carrying `opt_out`, whatever it
  named: a channel is opted out only when its `opt_out:` is at or after this too
  (`opted_out_of_channel`). For a channel of this version's it says no more than its
  `opt_in:` (written with it); for one this version does not know, whose `opt_in:` it
  never writes, it is that opt-in: a newer version's channel opted into again in an
  update an older worker read is not opted out (a hash from before it has none: as
  before);
- `erased`: the tombstone's own time (`moments.batchresult.erasure_time`): an event dated at or
  before it, read later (a topic read behind the profile topic), is the erased
  subscriber's and is dropped (`Subscribers.erasures`, `Detector.process`).
Only newer times overwrite older ones, so replays and late events are harmless.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from moments.enums import Channel, WithdrawReason
from moments.models import (
    InputEvent,
    ProfileEvent,
    RoamingEvent,
    ServiceTask,
    TopUpEvent,
    channel_key,
    unknown_opt_outs,
)
from moments.records import SuppressReason
from sinks.luabatch import BatchScript
from sinks.policy import DispatchPolicy, OverflowPolicy, RelevanceCheckName

FACTS_TTL_S = 90 * 86400
HOME_COUNTRY = "CN"

# KEYS: facts hash; ARGV: ttl, then field, epoch pairs. Keeps the latest time per field.
# K: facts hash; A: field, epoch; S: seconds to keep the hash (sinks.luabatch)
_NEWER = """
local old = redis.call('HGET', K[1], A[1])
if (not old) or tonumber(old) < tonumber(A[2]) then
  redis.call('HSET', K[1], A[1], A[2])
end
redis.call('EXPIRE', K[1], S[1])
return 1
"""


@dataclass(frozen=True)
class SubscriberFacts:
    topup_at: float | None = None
    home_at: float | None = None
    abroad_at: float | None = None
    active_at: float | None = None
    forgotten_at: float | None = None
    erased_at: float | None = None
    """The tombstone's own time; marks written before it was kept have only
    `forgotten_at`."""
    suspended_at: float | None = None
    """The latest profile update saying the line is suspended (None before it was kept,
    or never)."""
    opted_out: frozenset[str] = frozenset()
    """The channels the latest profile update carrying `opt_out` opted out of
    (`opt_out:<channel>` at or after `opt_in:<channel>` and `opt_list`)."""
    closed_at: float | None = None
    """The latest profile update saying the line is closed (None before it was kept, or
    never)."""

    @property
    def line_closed(self) -> bool:
        """The latest profile update carrying a `status` closed the line."""
        if self.closed_at is None:
            return False
        later = max(self.active_at or -math.inf, self.suspended_at or -math.inf)
        return self.closed_at > later

    @property
    def line_suspended(self) -> bool:
        """The latest profile update carrying a `status` suspended the line (none said it
        active after, nor closed it)."""
        if self.suspended_at is None:
            return False
        return self.suspended_at > (self.active_at or -math.inf) and self.suspended_at >= (
            self.closed_at or -math.inf
        )

    @property
    def erasure(self) -> float | None:
        """When the subscriber was erased, as the events' time goes (None: never)."""
        return self.erased_at if self.erased_at is not None else self.forgotten_at


def opted_out(task: ServiceTask, facts: SubscriberFacts | None) -> bool:
    """The customer opted out of the task's channel (the one it would go out on) in the
    latest profile update saying so: a task made before, waiting since (quiet hours,
    channel hours, capacity, a suspended line...), must not go out on it (the engine's
    gates judged the opt-outs only when the task was made)."""
    return facts is not None and str(task.channel) in facts.opted_out


def line_closed(task: ServiceTask, facts: SubscriberFacts | None) -> bool:
    """The latest profile update carrying a `status` closed the task's subscriber's line:
    a task made before, waiting since, must not go out (the engine's gates judged the
    line only when the task was made)."""
    return facts is not None and facts.line_closed


def opted_out_of(facts: Mapping[str, SubscriberFacts]) -> Callable[[str], frozenset[str]]:
    """The channels each subscriber opted out of, as far as `facts` (those read for a
    decision) tell: none for a subscriber not among them."""

    def of(subscriber_id: str) -> frozenset[str]:
        got = facts.get(subscriber_id)
        return got.opted_out if got is not None else frozenset()

    return of


def falls_back(policy: DispatchPolicy, task: ServiceTask) -> bool:
    """The task's rule falls back to another channel (`overflow:`) when its own is not
    worked or full: that channel, which the engine's gates did not judge, may be one the
    customer opted out of."""
    overflow = policy.overflow_for(task.moment.rule_id)
    return overflow.policy is OverflowPolicy.FALLBACK and overflow.channel not in (
        None,
        task.channel,
    )


def made_at(task: ServiceTask) -> float:
    """When the task was made, as a tombstone's `forgotten` mark is compared with (epoch
    seconds): a retry's moment happened at its trigger, any other task at its making."""
    made = task.triggered_at if task.retry_of is not None else task.created_at
    return made.timestamp()


def is_forgotten(task: ServiceTask, facts: SubscriberFacts | None) -> bool:
    """The task was made before a tombstone erased its subscriber (a retry: its moment
    happened before), so it must not go out; events after the tombstone are new."""
    if facts is None or facts.forgotten_at is None:
        return False
    return made_at(task) <= facts.forgotten_at


def voided(
    values: Mapping[str, float], channel: str, made: float
) -> tuple[WithdrawReason, float] | None:
    """What in a subscriber's facts hash (`values`, as stored) makes void a task that goes
    out on `channel`, made at `made` (`made_at`; `math.inf`: not judged against a
    tombstone), and that change's time; None when nothing does. In the order a batch's
    withdrawals take them (`sinks.withdrawals.profile_changes`): a tombstone erasing the
    subscriber after the task was made (its `erased` time), a closed line
    (`SubscriberFacts.line_closed`), an opt-out of `channel`. The confirm's script
    (`sinks.ledger._SETTLE`) reads the same, as the task enters the published index."""
    facts = facts_from(values)
    if facts.forgotten_at is not None and made <= facts.forgotten_at:
        erased = facts.erasure
        return WithdrawReason.FORGOTTEN, facts.forgotten_at if erased is None else erased
    if facts.line_closed and facts.closed_at is not None:
        return WithdrawReason.CLOSED, facts.closed_at
    if (out := opted_out_of_channel(values, channel)) is not None:
        return WithdrawReason.OPT_OUT, out
    return None


def opted_out_of_channel(values: Mapping[str, float], channel: str) -> float | None:
    """When the latest profile update carrying `opt_out` named `channel`, any channel (one
    this version does not send on too, as the confirm's script reads it), by the facts hash
    (`values`, as stored); None when it did not. Its `opt_out:` field is at or after its
    `opt_in:` and the update's `opt_list`. By `channel_key` (`WeChat` is `wechat`): every
    `opt_out:` field whose channel's key is the channel's counts, the latest of them
    (`opt_out:WeChat`, recorded by a build before the lowering and kept while the
    subscriber's facts are written), as `_facts` folds them for the release and the script
    reads the whole hash."""
    key = channel_key(channel)
    out = max(
        (at for name, at in values.items() if _opt_out_key(name) == key),
        default=None,
    )
    if out is None or out < max(
        values.get(f"opt_in:{key}", -math.inf), values.get("opt_list", -math.inf)
    ):
        return None
    return out


def _opt_out_key(name: str) -> str | None:
    """The `channel_key` of an `opt_out:<channel>` field's channel; None for another field."""
    return channel_key(name[8:]) if name.startswith("opt_out:") else None


def erasures(subscriber_ids: Sequence[str], facts: Sequence[SubscriberFacts]) -> dict[str, float]:
    """When each of `subscriber_ids` (their `facts`, in order) was erased, for those a
    tombstone erased in the last 90 days (the `forgotten` mark)."""
    return {
        sub: when
        for sub, f in zip(subscriber_ids, facts, strict=True)
        if (when := f.erasure) is not None
    }


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: SuppressReason | None = None
    """Why not, when not kept."""


KEEP = Verdict(True)
RelevanceCheck = Callable[[ServiceTask, SubscriberFacts], Verdict]


def _after(at: float | None, moment: dt.datetime) -> bool:
    return at is not None and at > moment.timestamp()


def topped_up(task: ServiceTask, facts: SubscriberFacts) -> Verdict:
    """A low-balance task is pointless once the customer topped up after it fired."""
    if _after(facts.topup_at, task.triggered_at):
        return Verdict(False, SuppressReason.TOPPED_UP)
    return KEEP


def came_home(task: ServiceTask, facts: SubscriberFacts) -> Verdict:
    """A roaming welcome is pointless once the customer was seen at home after it fired
    (and not abroad again since)."""
    if _after(facts.home_at, task.triggered_at) and (facts.abroad_at or 0) < (facts.home_at or 0):
        return Verdict(False, SuppressReason.CAME_HOME)
    return KEEP


CHECKS: dict[RelevanceCheckName, RelevanceCheck] = {
    RelevanceCheckName.TOPPED_UP: topped_up,
    RelevanceCheckName.CAME_HOME: came_home,
}


def check_for(
    relevance: Mapping[str, RelevanceCheckName], task: ServiceTask
) -> RelevanceCheck | None:
    """The check configured for the task's moment type (or rule id), if any."""
    name = relevance.get(task.moment.type) or relevance.get(task.moment.rule_id)
    return CHECKS[name] if name is not None else None


def facts_of(event: InputEvent, home_country: str = HOME_COUNTRY) -> list[tuple[str, float]]:
    """The (field, epoch) facts an event contributes."""
    at = event.occurred_at.timestamp()
    if isinstance(event, TopUpEvent):
        return [("topup", at)]
    if isinstance(event, RoamingEvent):
        home = event.roaming_type == "domestic" or event.country == home_country
        return [("home" if home else "abroad", at)]
    if isinstance(event, ProfileEvent):
        facts: list[tuple[str, float]] = []
        if event.status in ("active", "suspended", "closed"):
            facts.append((event.status, at))
        if event.opt_out is not None:  # the whole list; null: unchanged
            out = set(event.opt_out)
            facts += [
                (f"opt_out:{c.value}" if c in out else f"opt_in:{c.value}", at) for c in Channel
            ]
            # A channel only a newer version sends on (rolling upgrades): its opt-out, for
            # that version's release and confirm, under `channel_key` (`WeChat` and
            # `wechat` are one channel); its opt-in is `opt_list`.
            unknown = dict.fromkeys(channel_key(c) for c in unknown_opt_outs(event))
            facts += [(f"opt_out:{c}", at) for c in unknown]
            facts.append(("opt_list", at))
        return facts
    return []


def reactivated(held_since: dt.datetime, facts: SubscriberFacts) -> bool:
    """A task gating deferred for a suspended line, its moments held since `held_since`
    (the latest of their triggers), may go once the line is active again (`line_active`)."""
    return line_active(held_since.timestamp(), facts.active_at, facts.suspended_at)


def line_active(held_since: float, active: float | None, suspended: float | None) -> bool:
    """The facts say the line is active again for moments held since `held_since`: a
    profile update said active after it, or the latest update said active (after the
    latest suspension). Topics are read side by side, so a moment from another topic
    read ahead of the profile topic is held for the line the engine still knew
    suspended, though the update reactivating it, read next, is dated before the moment:
    compared with the moment only, it never came. The park script compares the same
    (`sinks.deferral._PARK`)."""
    if active is None:
        return False
    return active > held_since or (suspended is not None and active > suspended)


class FactsStore:
    """The per-subscriber facts hash: written from the event stream, read at release."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._newer = BatchScript(redis, _NEWER, keys=1, args=2)

    def key(self, subscriber_id: str) -> str:
        return f"{self.prefix}facts:{subscriber_id}"

    async def record(self, events: Iterable[InputEvent]) -> int:
        """Record the facts of a batch of events (one call, with the batch's latest time
        per subscriber and field); returns how many facts."""
        latest, n = latest_facts(events)
        items = [
            ((self.key(subscriber_id),), (field, at))
            for subscriber_id, fields in latest.items()
            for field, at in fields.items()
        ]
        if items:
            await self._newer.run(items, shared=(FACTS_TTL_S,))
        return n

    async def get(self, subscriber_id: str) -> SubscriberFacts:
        return (await self.get_many([subscriber_id]))[0]

    async def get_many(self, subscriber_ids: Sequence[str]) -> list[SubscriberFacts]:
        """One pipeline of HGETALL."""
        if not subscriber_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for subscriber_id in subscriber_ids:
            pipe.hgetall(self.key(subscriber_id))
        raws: list[dict[Any, Any]] = await pipe.execute()
        return [_facts(raw) for raw in raws]

    async def forget(
        self, subscriber_ids: Sequence[str], at: float, erased: Mapping[str, float] | None = None
    ) -> None:
        """Erase the subscribers' facts, leaving only when they were forgotten (`at`) and
        erased (`erased`, by subscriber; `at` when not given). Not a MULTI (the ACL user
        has no @transaction): a retry after a partial run redoes it."""
        pipe = self.redis.pipeline(transaction=False)
        for subscriber_id in subscriber_ids:
            key = self.key(subscriber_id)
            pipe.delete(key)
            pipe.hset(
                key,
                mapping={"forgotten": at, "erased": (erased or {}).get(subscriber_id, at)},
            )
            pipe.expire(key, FACTS_TTL_S)
        await pipe.execute()


def _facts(raw: Mapping[Any, Any]) -> SubscriberFacts:
    """The facts of a hash as read: only the fields this version reads (`KNOWN_FACTS`), an
    opt-out by its channel's `channel_key` (the later of those naming it). A
    newer version sharing the hash in a rolling upgrade may add fields, numbers or not: an
    older worker read them all as numbers, and one that is not stopped every release and
    re-drive of the subscriber (docs/operations.md, "Rolling upgrades")."""
    values: dict[str, float] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        if (key := _opt_out_key(name)) is not None:
            # As its channel is named (`channel_key`): a build before the lowering
            # recorded `opt_out:WeChat` for a version whose tasks say `wechat`.
            name = f"opt_out:{key}"
        if name in KNOWN_FACTS:
            values[name] = max(float(v), values.get(name, -math.inf))
    return facts_from(values)


OPT_FIELDS = tuple((c.value, f"opt_out:{c.value}", f"opt_in:{c.value}") for c in Channel)
"""Each channel with its opt-out and opt-in fields in the facts hash, named once (read for
every task a decision looks at)."""

KNOWN_FACTS = frozenset(
    ("topup", "home", "abroad", "active", "forgotten", "erased", "suspended", "closed")
) | frozenset(("opt_list", *(f for _, opt_out, opt_in in OPT_FIELDS for f in (opt_out, opt_in))))
"""The fields of the facts hash `facts_from` reads."""


def facts_from(values: Mapping[str, float]) -> SubscriberFacts:
    get = values.get
    return SubscriberFacts(
        get("topup"),
        get("home"),
        get("abroad"),
        get("active"),
        get("forgotten"),
        get("erased"),
        get("suspended"),
        frozenset(
            channel
            for channel, opt_out, opt_in in OPT_FIELDS
            if (out := get(opt_out)) is not None
            and out >= get(opt_in, -math.inf)
            and out >= get("opt_list", -math.inf)
        ),
        get("closed"),
    )


def latest_facts(events: Iterable[InputEvent]) -> tuple[dict[str, dict[str, float]], int]:
    """The latest time per subscriber and field among `events`' facts, and how many facts
    there were: writing only these leaves the store as writing every fact in turn would
    (only a newer time overwrites)."""
    latest: dict[str, dict[str, float]] = {}
    n = 0
    for event in events:
        for field, at in facts_of(event):
            fields = latest.setdefault(event.subscriber_id, {})
            if at > fields.get(field, -math.inf):
                fields[field] = at
            n += 1
    return latest, n
