"""The caps on contacts with a subscriber, both counting contacts really made (a merged
group is one, a task not sent gives its own back): the rule set's frequency cap on its
counted channels, then the dispatch policy's contact cap on every channel (docs/
architecture.md, "Frequency cap, then contact cap")."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from moments.models import Channel, ServiceTask
from rules.gating import FrequencyCap
from sinks.capacity import HIGH_PRIORITY
from sinks.contact import Contact, ContactLimiter
from sinks.policy import ContactPolicy, DispatchPolicy
from sinks.retry import Retrying
from sinks.routes import Writes
from sinks.stores import ContactBook


class ContactCaps:
    """The caps of one dispatch policy and one frequency cap of the rule set's
    (`frequency_cap`, None: off), over the contact books (`contacts`: the policy's;
    `frequency`: the rule set's). Both are bound: a decision takes the caps in force at
    its start (`Judging.under`) and keeps them to its end, as a rules reload lands while
    it awaits its stores too (one that read the cap at each step could take a contact
    under a cap and, the cap gone meanwhile, not give it back: counted until it aged
    out)."""

    def __init__(
        self,
        contacts: ContactBook,
        frequency: ContactBook,
        policy: DispatchPolicy,
        frequency_cap: FrequencyCap | None,
        redis: Retrying,
    ) -> None:
        self.policy = policy
        self.contacts = ContactLimiter(contacts, policy.contact)
        self.frequency = frequency
        self.frequency_cap = frequency_cap
        self._redis = redis
        self._frequency = _frequency_limiters(frequency, frequency_cap)

    def under(self, frequency_cap: FrequencyCap | None) -> ContactCaps:
        """These caps with the rule set's `frequency_cap` (itself when it is the one they
        have; the counts are the books', kept either way)."""
        if frequency_cap is self.frequency_cap:
            return self
        return ContactCaps(
            self.contacts.book, self.frequency, self.policy, frequency_cap, self._redis
        )

    def frequency_limiter(self) -> tuple[FrequencyCap, ContactLimiter, ContactLimiter] | None:
        """The rule set's cap these caps have, and limiters over the frequency book for it:
        one for priorities 1-2 (the whole cap), one for the others (the cap less its
        reserve)."""
        return self._frequency

    async def capped_until_expiry(self, tasks: Sequence[ServiceTask], now: float) -> set[str]:
        """The ids of fresh tasks about to wait (quiet hours) whose subscriber's frequency
        cap is full now and frees only after they expire: when released they would be
        dropped (contacts only add up until the oldest age out), so they are now, without
        parking and releasing them (they were most of the tasks parked for quiet hours in
        a simulated week once the cap moved to dispatch). Nothing is taken."""
        looks = await self.frequency_contacts(tasks, now, look=True)
        return {
            tasks[i].task_id
            for i, look in looks.items()
            if not look.taken
            and look.free_at is not None
            and look.free_at > self.policy.last_send(tasks[i])
        }

    async def frequency_contacts(
        self, tasks: Sequence[ServiceTask], now: float, look: bool = False
    ) -> dict[int, Contact]:
        """The rule set's frequency cap for the tasks on its counted channels, by index:
        a contact taken (`look`: whether it would be, taking nothing) or when one frees."""
        capped = self.frequency_limiter()
        if capped is None:
            return {}
        cap, high, low = capped
        out: dict[int, Contact] = {}
        counted = [i for i, t in enumerate(tasks) if t.channel in cap.channels]
        for limiter, group in (
            (high, [i for i in counted if tasks[i].priority <= HIGH_PRIORITY]),
            (low, [i for i in counted if tasks[i].priority > HIGH_PRIORITY]),
        ):
            if not group:
                continue
            items = [(tasks[i].task_id, tasks[i].subscriber_id, now) for i in group]
            got = await self._redis(
                functools.partial(limiter.take_many, items, look), "frequency cap"
            )
            out.update(zip(group, got, strict=True))
        return out

    async def take(self, tasks: Sequence[ServiceTask], now: float, w: Writes) -> list[Contact]:
        """A contact for each task about to be sent, or why not and when one frees: first
        the rule set's frequency cap (its counted channels), then the dispatch policy's
        contact cap (every channel). Both count contacts made here, where a task is sent:
        a merged group is one contact, and a task not sent after all (capacity) gives its
        contacts back (`write`)."""
        out = [Contact(True) for _ in tasks]
        for i, contact in (await self.frequency_contacts(tasks, now)).items():
            out[i] = contact
        if self.contacts.capped:
            open_ = [i for i, c in enumerate(out) if c.taken]
            items = [(tasks[i].task_id, tasks[i].subscriber_id, now) for i in open_]
            if items:
                taken = await self._redis(lambda: self.contacts.take_many(items), "contact policy")
                for i, contact in zip(open_, taken, strict=True):
                    if not contact.taken:  # its frequency contact, if it took one, goes back
                        w.given_back.append((tasks[i].task_id, tasks[i].subscriber_id))
                    out[i] = contact
        return out

    async def write(self, w: Writes) -> None:
        """The contacts a wave gives back or moves (`Writes.given_back`, `.moved`), in both
        books, then those it counts over a cap (`Writes.counted`, `count`): the first of a
        wave's writes (`TaskSink._write`)."""
        if w.given_back:
            await self._redis(lambda: self.contacts.give_back_many(w.given_back), "contact policy")
            capped = self.frequency_limiter()
            if capped is not None:
                frequency, given = capped[1], w.given_back  # (both limiters' book)
                await self._redis(lambda: frequency.give_back_many(given), "frequency cap")
        if w.moved:
            await self._redis(lambda: self.contacts.move_many(w.moved), "contact policy")
            capped = self.frequency_limiter()
            if capped is not None:
                frequency, moved = capped[1], w.moved
                await self._redis(lambda: frequency.move_many(moved), "frequency cap")
        if w.counted:
            await self.count(w.counted, w.now)

    async def count(self, tasks: Sequence[ServiceTask], now: float) -> None:
        """The contacts of `tasks`, sent though a cap refused them (they may have gone out
        already: `TaskSink._route_wave`), counted in each book whose cap applies to them
        as made `now`, unless counted already (`ContactBook.take_back_many`): after the
        wave's given back, so a frequency contact the contact cap made it give back is
        counted again."""
        books: list[tuple[ContactBook, float, frozenset[Channel] | None, str]] = []
        if self.contacts.capped:
            period = self.contacts.policy.period.total_seconds()
            books.append((self.contacts.book, period, None, "contact policy"))
        if (capped := self.frequency_limiter()) is not None:
            cap, span = capped[0], capped[0].span.total_seconds()
            books.append((self.frequency, span, frozenset(cap.channels), "frequency cap"))
        for book, period, channels, what in books:
            items = [
                (t.subscriber_id, t.task_id, now)
                for t in tasks
                if channels is None or t.channel in channels
            ]
            if items:
                take = functools.partial(book.take_back_many, items, period, now)
                await self._redis(take, what)


def _frequency_limiters(
    book: ContactBook, cap: FrequencyCap | None
) -> tuple[FrequencyCap, ContactLimiter, ContactLimiter] | None:
    """Limiters over the frequency `book` for `cap` (`ContactCaps.frequency_limiter`)."""
    if cap is None:
        return None
    span = cap.span
    high = ContactPolicy(max_contacts=cap.max_contacts, period=span)
    low = ContactPolicy(max_contacts=cap.max_contacts - cap.reserved, period=span)
    return (
        cap,
        ContactLimiter(book, high, "frequency_cap"),
        ContactLimiter(book, low, "frequency_cap"),
    )
