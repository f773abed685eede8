"""The stores' batch calls (one round trip for many tasks) on Redis and in memory: each
answers what the single call would, item by item and in order, empty input included."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from moments.models import (
    Channel,
    InputEvent,
    ProfileEvent,
    RiskScore,
    RoamingEvent,
    TopUpEvent,
)
from sinks.capacity import claim_order, rank_score
from sinks.contact import RedisContactBook
from sinks.deferral import DeferralQueue
from sinks.ledger import DROPPED_KEPT_S, TaskLedger, as_bytes
from sinks.memory import MemoryDeferrals, MemoryLedger, memory_stores
from sinks.relevance import SubscriberFacts, line_active
from sinks.stores import DispatchStores, Joining, Leave, Parking, SlotKey, redis_stores

from .conftest import HOUR, NOW, task

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "memory"])
async def stores(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[DispatchStores]:
    if request.param == "memory":
        yield memory_stores(ttl_seconds=3600)  # as the Redis ledger below
        return
    client = Redis.from_url(redis_url)
    yield redis_stores(TaskLedger(client, f"test:{uuid4().hex[:8]}:", 3600))
    await client.aclose()


class TestDeclines:
    """`suppressed_many` is `suppressed` per (subscriber, rule)."""

    async def test_each_pair_answers_as_alone(self, stores: DispatchStores) -> None:
        declines = stores.declines
        await declines.suppress("s1", "roam", 60)
        await declines.suppress("s2", "topup", 60)
        pairs = [("s1", "roam"), ("s1", "topup"), ("s3", "roam"), ("s2", "topup"), ("s1", "roam")]
        assert await declines.suppressed_many(pairs) == [True, False, False, True, True]
        assert [await declines.suppressed(s, r) for s, r in pairs] == [
            True,
            False,
            False,
            True,
            True,
        ]
        assert await declines.suppressed_many([]) == []


class TestFacts:
    """`get_many` is `get` per subscriber; `record` keeps the latest time per field."""

    async def test_latest_time_per_field_and_nothing_for_unknown(
        self, stores: DispatchStores
    ) -> None:
        at = dt.datetime.fromtimestamp(int(time.time()), dt.UTC)
        hour = dt.timedelta(hours=1)
        topup = TopUpEvent(
            event_id="t1", subscriber_id="13800000001", occurred_at=at, amount=5, channel="app"
        )
        events: list[InputEvent] = [
            topup,
            topup.model_copy(update={"event_id": "t0", "occurred_at": at - hour}),
            RoamingEvent(
                event_id="r1",
                subscriber_id="13800000001",
                occurred_at=at - hour,
                country="JP",
                roaming_type="international",
            ),
            topup.model_copy(update={"event_id": "t2", "subscriber_id": "13800000002"}),
        ]
        assert await stores.facts.record(events) == 4
        assert await stores.facts.record([]) == 0
        subs = ["13800000001", "13800000009", "13800000002"]
        got = await stores.facts.get_many(subs)
        assert got == [
            SubscriberFacts(topup_at=at.timestamp(), abroad_at=(at - hour).timestamp()),
            SubscriberFacts(),
            SubscriberFacts(topup_at=at.timestamp()),
        ]
        assert got == [await stores.facts.get(s) for s in subs]
        assert await stores.facts.get_many([]) == []

    async def test_the_latest_profile_saying_opt_out_decides(self, stores: DispatchStores) -> None:
        """A profile's opt-outs are the whole list: the latest profile carrying one
        decides, however late an older one is recorded; one not carrying it (null) says
        nothing; `[]` lifts them; a channel moments does not send on is not among them."""
        at = dt.datetime.fromtimestamp(int(time.time()), dt.UTC)
        minute = dt.timedelta(minutes=1)

        def profile(sub: str, when: dt.datetime, opt_out: list[str] | None) -> ProfileEvent:
            return ProfileEvent(
                event_id=f"p-{sub}-{when.timestamp()}",
                subscriber_id=sub,
                occurred_at=when,
                opt_out=opt_out,
                tier="gold",
            )

        a, b, c, d = "13800000011", "13800000012", "13800000013", "13800000014"
        # a: opted out of SMS and calls; an older profile, read late, opted in again
        await stores.facts.record([profile(a, at, ["sms", "outbound_call", "email"])])
        await stores.facts.record([profile(a, at - minute, [])])
        # b: opted out, then a newer profile lifts the SMS opt-out, then one saying nothing
        await stores.facts.record([profile(b, at - minute, ["sms"])])
        await stores.facts.record([profile(b, at, ["app_push"]), profile(b, at + minute, None)])
        # c: both in one batch, the newer last or first
        await stores.facts.record([profile(c, at + minute, []), profile(c, at, ["sms"])])
        # d: never said
        await stores.facts.record([profile(d, at, None)])
        got = await stores.facts.get_many([a, b, c, d])
        assert [f.opted_out for f in got] == [
            {"sms", "outbound_call"},
            {"app_push"},
            set(),
            set(),
        ]
        assert got == [await stores.facts.get(s) for s in [a, b, c, d]]


class TestDeferrals:
    """`park_many` and `join_many` are `park` and `join` per task, in order."""

    async def test_park_then_join_per_subscriber(self, stores: DispatchStores) -> None:
        ledger, deferral = stores.ledger, stores.deferral
        release = time.time() + 3600
        await ledger.claim([(t, t.encode()) for t in ("a", "b", "c", "d", "e")])
        parked = await deferral.park_many(
            [
                Parking("a", "s1", b"A", release, 1800),
                Parking("c", "s2", b"C", release, 1800),
                Parking("gone", "s3", b"G", release, 1800),  # never claimed
            ]
        )
        assert parked == [True, True, False]
        joined = await deferral.join_many(
            [Joining("b", "s1", b"B"), Joining("d", "s2", b"D"), Joining("e", "s4", b"E")]
        )
        assert joined == ["a", "c", None]
        # repeated (a retried pipeline): the same answers, no second copy
        assert await deferral.join_many([Joining("b", "s1", b"B"), Joining("d", "s2", b"D")]) == [
            "a",
            "c",
        ]
        assert await ledger.group("a") == [b"B"]
        assert [await ledger.state(t) for t in "abcde"] == [
            "deferred",
            "merged",
            "deferred",
            "merged",
            "pending",
        ]
        assert await deferral.park_many([]) == []
        assert await deferral.join_many([]) == []

    async def test_a_join_is_bounded_by_when_the_waiting_task_is_due(
        self, stores: DispatchStores
    ) -> None:
        """`due_from` bounds every waiting task; `due_by` every one but those waiting for
        the subscriber's caps (`waits_for_cap`)."""
        ledger, deferral = stores.ledger, stores.deferral
        release = time.time() + 3600
        ids = ("a", "b", "c", "d", "e", "f", "g", "h", "i")
        await ledger.claim([(t, t.encode()) for t in ids])
        assert await deferral.park_many(
            [
                Parking("a", "s1", b"", release, 1800, waits_for_hours=True),
                Parking("b", "s2", b"", release, 1800, waits_for_cap=True),  # the customer's
                Parking("h", "s3", b"", release, 1800),  # capacity, a retry: its channel's
            ]
        ) == [True, True, True]
        joined = await deferral.join_many(
            [
                Joining("c", "s1", b"", due_by=release - 1),  # would wait for the hours
                Joining("d", "s2", b"", due_by=release - 1),  # waits as the other would
                Joining("e", "s2", b"", due_from=release + 1),  # would hold it later
                Joining("i", "s3", b"", due_by=release - 1),  # would wait for the other
            ]
        )
        assert joined == [None, "b", None, None]
        both = [Joining("f", "s1", b"", release, release), Joining("g", "s2", b"", release)]
        assert await deferral.join_many(both) == ["a", "b"]
        # Parked again for something else, it is bounded.
        await ledger.claim([("j", b"j")])
        assert await deferral.park_many([Parking("b", "s2", b"", release, 1800)]) == [True]
        assert await deferral.join_many([Joining("j", "s2", b"", due_by=release - 1)]) == [None]

    async def test_an_empty_payload_means_the_one_the_ledger_holds(
        self, stores: DispatchStores
    ) -> None:
        ledger, deferral = stores.ledger, stores.deferral
        release = time.time() + 3600
        await ledger.claim([("a", b"A"), ("b", b"B"), ("c", b"C")])
        assert await deferral.park_many(
            [Parking("a", "s1", b"", release, 1800), Parking("c", "s2", b"C2", release, 1800)]
        ) == [True, True]
        assert await ledger.get("a") == b"DA"  # the claimed payload, now waiting
        assert await ledger.get("c") == b"DC2"  # a payload that changed replaces it
        assert await deferral.join_many([Joining("b", "s1", b"")]) == ["a"]
        assert await ledger.group("a") == [b"B"]  # the claimed payload joined the group
        assert await deferral.park_many([Parking("a", "s1", b"", release + 60, 1800)]) == [True]
        assert await ledger.get("a") == b"DA"  # parked again: still the payload it had

    async def test_wake_makes_a_reactivated_line_s_tasks_due_now(
        self, stores: DispatchStores
    ) -> None:
        ledger, deferral = stores.ledger, stores.deferral
        now = time.time()
        later = now + 900
        await ledger.claim([("a", b"A"), ("b", b"B"), ("c", b"C"), ("d", b"D")])
        await deferral.park_many(
            [
                Parking("a", "s1", b"", later, 1800, waits_for_line=True),
                Parking("b", "s1", b"", later, 1800),  # waits for something else
                Parking("c", "s2", b"", later, 1800, waits_for_line=True),
                Parking("d", "s3", b"", now - 1, 1800, waits_for_line=True),  # due already
            ]
        )
        assert await deferral.wake(["s1", "s1", "s3", "s9"], now) == 1
        assert [await deferral.due_at(t) for t in "abcd"] == [now, later, later, now - 1]
        assert await deferral.wake(["s1"], now) == 0  # woken once
        released = await deferral.release(now)
        assert sorted(r.task_id for r in released) == ["a", "d"]
        assert await deferral.wake(["s2"], later + 1) == 0  # its own time came first
        assert await deferral.wake([], now) == 0

    async def test_a_park_for_a_line_reads_its_last_status_to_the_last_digit(
        self, stores: DispatchStores
    ) -> None:
        """A park for a suspended line (`Parking.active_after`) is due at once exactly
        when `line_active` says so of the facts (active after the moments held, or after
        the last suspension), on both stores: the times with microseconds, equal, a
        double apart, missing."""
        ledger, deferral, facts = stores.ledger, stores.deferral, stores.facts
        now = time.time()
        look = now + 3600
        base = dt.datetime.fromtimestamp(int(now) - 86400, dt.UTC) + dt.timedelta(
            microseconds=123457
        )
        t = base.timestamp()
        t_60 = (base - dt.timedelta(seconds=60)).timestamp()
        before, after = math.nextafter(t, -math.inf), math.nextafter(t, math.inf)
        cases: list[tuple[str, float | None, float | None, float]] = [
            # (subscriber, active, suspended, held since)
            ("13900000001", t, None, before),  # active a double after the moment
            ("13900000002", t, None, t),  # at the moment: not after it
            ("13900000003", t, None, after),
            ("13900000004", t, t_60, t + 60),  # dated before the moment, after the suspension
            ("13900000005", t, t, t + 60),  # suspended at the same time: not after it
            ("13900000006", t_60, t, t + 60),  # suspended again since
            ("13900000007", None, t, t_60),  # never active
            ("13900000008", None, None, t),  # no facts
        ]
        events: list[ProfileEvent] = []
        for sub, active, suspended, _ in cases:
            for status, at in (("active", active), ("suspended", suspended)):
                if at is not None:
                    when = dt.datetime.fromtimestamp(at, dt.UTC)
                    assert when.timestamp() == at  # the datetime holds the double
                    events.append(
                        ProfileEvent(
                            event_id=f"{sub}-{status}",
                            subscriber_id=sub,
                            occurred_at=when,
                            status=status,
                        )
                    )
        await facts.record(events)
        ids = [sub for sub, *_ in cases]
        await ledger.claim([(i, i.encode()) for i in ids])
        items = [
            Parking(
                sub, sub, b"", look, 1800, waits_for_line=True, active_after=since, woken_at=now
            )
            for sub, _, _, since in cases
        ]
        assert await deferral.park_many(items) == [True] * len(cases)
        expected = [now if line_active(since, a, s) else look for _, a, s, since in cases]
        assert expected == [now, look, look, now, look, look, look, look]
        assert [await deferral.due_at(i) for i in ids] == expected

    async def test_group_many_is_group_per_task(self, stores: DispatchStores) -> None:
        ledger, deferral = stores.ledger, stores.deferral
        release = time.time() + 3600
        await ledger.claim([("a", b"A"), ("b", b"B"), ("c", b"C"), ("x", b"X")])
        await deferral.park_many([Parking("a", "s1", b"", release, 1800)])
        assert await deferral.join_many([Joining("b", "s1", b""), Joining("c", "s1", b"C2")]) == [
            "a",
            "a",
        ]
        assert await ledger.group_many(["a", "x", "missing"]) == [[b"B", b"C2"], [], []]
        assert await ledger.group_many([]) == []

    async def test_confirm_keeps_bodies_only_where_given(self, stores: DispatchStores) -> None:
        ledger = stores.ledger
        await ledger.claim([("a", b"A"), ("b", b"B")])
        await ledger.confirm(["a", "b"], {"a": b"meta-a"}, {"b": (b"body-b", 60)})
        assert [await ledger.state(t) for t in "ab"] == ["sent", "sent"]
        assert await ledger.sent_meta("a") == b"meta-a"
        assert await ledger.body("a") is None
        assert await ledger.body("b") == b"body-b"
        assert await ledger.pending_count() == 0

    async def test_drop_many_settles_each_task(self, stores: DispatchStores) -> None:
        ledger = stores.ledger
        await ledger.claim([("a", b"A"), ("b", b"B"), ("c", b"C")])
        await ledger.drop_many([("a", "expired"), ("c", "capacity"), ("missing", "capacity")])
        await ledger.drop_many([])
        assert [await ledger.state(t) for t in "abc"] == ["dropped", "pending", "dropped"]
        assert await ledger.get("a") == b"Xexpired"
        assert await ledger.get("missing") is None
        assert await ledger.pending_count() == 1

    async def test_a_dropped_task_is_kept_a_day_past_its_expiry_not_the_ledger_s_ttl(
        self, stores: DispatchStores
    ) -> None:
        """Every task the caps or capacity drop held a ledger entry for 400 days (the
        frequency cap, applied by dispatch since, drops thousands a week per 5,000
        subscribers); after its expiry a task made again is dropped as expired anyway."""
        ledger = stores.ledger
        await ledger.claim([("a", b"A"), ("b", b"B"), ("c", b"C")])
        expired_long_ago = time.time() - DROPPED_KEPT_S + 100
        expires_later = time.time() + 86400
        await ledger.drop_many(
            [("a", "capacity"), ("b", "frequency_cap"), ("c", "capacity")],
            {"a": expired_long_ago, "b": expires_later},
        )
        assert [await ledger.state(t) for t in "abc"] == ["dropped"] * 3

        if isinstance(ledger, MemoryLedger):
            left = {t: ledger.entries[t].expires_at - time.time() for t in "abc"}
        else:
            assert isinstance(ledger, TaskLedger)
            left = {t: float(await ledger.redis.ttl(ledger.key(t))) for t in "abc"}
        assert 90 <= left["a"] <= 101  # shortened to a day past its expiry
        assert 3590 <= left["b"] <= 3600  # the ledger's TTL (an hour here) is shorter: kept
        assert 3590 <= left["c"] <= 3600  # no expiry given: as it was


class TestMarks:
    """`redriven_unsent` is `redriven` and `unsent` together, in one MGET on Redis: the
    drop of tasks a re-drive decided read the two marks one after the other, a round trip
    more per wave."""

    async def test_both_marks_in_one_read(
        self, stores: DispatchStores, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ledger = stores.ledger
        await ledger.claim([("a", b"A")])
        assert [i for i, _ in await ledger.claim_stale(-1.0)] == ["a"]  # marked `redriven`
        await ledger.claim([("b", b"B"), ("d", b"D")])
        await stores.deferral.park_many([Parking("b", "s1", b"", time.time() + 3600, 1800)])
        assert [r.task_id for r in await stores.deferral.forget(["s1"])] == ["b"]  # `unsent`
        ids = ["a", "b", "d", "missing"]
        reads: list[int] = []
        if isinstance(ledger, TaskLedger):
            mget = ledger.redis.mget

            async def counted(*args: Any, **kwargs: Any) -> Any:
                reads.append(1)
                return await mget(*args, **kwargs)

            monkeypatch.setattr(ledger.redis, "mget", counted)
        assert await ledger.redriven_unsent(ids) == ({"a"}, {"b"})
        assert reads == ([1] if isinstance(ledger, TaskLedger) else [])
        assert await ledger.redriven_unsent(ids) == (
            await ledger.redriven(ids),
            await ledger.unsent(ids),
        )
        assert await ledger.redriven_unsent([]) == (set(), set())


class TestLeave:
    """`leave_many`: a merged moment out of its carrier's group, dropped or moved; once."""

    async def test_dropped_carrying_or_joining_another(self, stores: DispatchStores) -> None:
        ledger, deferral = stores.ledger, stores.deferral
        await ledger.claim([(t, t.upper().encode()) for t in "abcd"])
        assert await deferral.park("a", "s1", b"", time.time() + 600, 600)
        assert await deferral.join_many([Joining(t, "s1", b"") for t in "bcd"]) == ["a"] * 3
        assert await ledger.group("a") == [b"B", b"C", b"D"]
        leaves = [
            Leave("a", "b", b"B", dropped="expired", keep_until=time.time()),
            Leave("a", "c", b"C", to="c"),
            Leave("a", "d", b"D", to="c"),
            Leave("a", "x", b"X", dropped="expired"),  # never merged
        ]
        assert await ledger.leave_many(leaves) == [True, True, True, False]
        assert await ledger.leave_many(leaves) == [False] * 4  # done: not again
        assert await ledger.leave_many([]) == []
        assert await ledger.group("a") == []
        assert await ledger.group("c") == [b"D"]
        assert [await ledger.get(t) for t in "bcd"] == [b"Xexpired", b"PC", b"Mc"]
        assert await ledger.pending_count() == 1  # c, to be decided as a carrier
        assert await ledger.claim_stale(-1) == [("c", b"C")]

    async def test_carrying_what_may_have_gone_out_marks_it_redriven(
        self, stores: DispatchStores
    ) -> None:
        """`went_out`: the moment that now carries the others, out of a carrier that may
        have gone out with them inside and was withdrawn, is marked `redriven:<id>` with
        when it went pending (its drop keeps their cooldowns); one moved without it, or
        joining another, is not. Before: no moment leaving a group was marked. The mark is
        a leave's (`redriven_carried`: its id never went out, not `redriven`) until a
        re-drive's claim makes it its own, the time kept (that claim's decision may
        publish it). Before: a claim's from the start, and its release sealed it."""
        ledger, deferral = stores.ledger, stores.deferral
        await ledger.claim([(t, t.upper().encode()) for t in "abcd"])
        assert await deferral.park("a", "s1", b"", time.time() + 600, 600)
        assert await deferral.join_many([Joining(t, "s1", b"") for t in "bcd"]) == ["a"] * 3
        before = time.time()
        leaves = [
            Leave("a", "b", b"B", to="b", went_out=True),
            Leave("a", "c", b"C", to="b"),
            Leave("a", "d", b"D", to="d"),
        ]
        assert await ledger.leave_many(leaves) == [True, True, True]
        assert await ledger.redriven_carried(["a", "b", "c", "d"]) == (set(), {"b"})
        assert await ledger.redriven(["a", "b", "c", "d"]) == set()
        assert await ledger.redriven_unsent(["b"]) == (set(), set())
        left = (await ledger.first_pending(["b"]))["b"]
        assert left is not None
        assert before <= left <= time.time()
        first: dict[str, float | None] = {}
        claimed = await ledger.claim_stale(-1, first_pending=first)
        assert sorted(i for i, _ in claimed) == ["b", "d"]
        assert first == {"b": left}
        assert await ledger.redriven_carried(["b", "d"]) == ({"b", "d"}, set())
        assert await ledger.first_pending(["b"]) == {"b": left}

    async def test_carrying_what_may_have_gone_out_is_marked_when_its_decision_judged_it(
        self, stores: DispatchStores
    ) -> None:
        """`went_at`: the mark holds when the decision judged the moment sendable, not the
        leave's time, which may come after its last send (Redis retried). Before: the
        leave's time."""
        ledger, deferral = stores.ledger, stores.deferral
        await ledger.claim([(t, t.upper().encode()) for t in "ab"])
        assert await deferral.park("a", "s1", b"", time.time() + 600, 600)
        assert await deferral.join_many([Joining("b", "s1", b"")]) == ["a"]
        judged = time.time() - 5.25
        leave = Leave("a", "b", b"B", to="b", went_out=True, went_at=judged)
        assert await ledger.leave_many([leave]) == [True]
        assert await ledger.first_pending(["b"]) == {"b": judged}

    async def test_dropped_out_of_what_may_have_gone_out_is_marked_sealed(
        self, stores: DispatchStores
    ) -> None:
        """`went_out` on a drop: the moment's `X` entry is marked `redriven:<id>` `1` (when
        it went pending not said: sealed), so that its batch read again keeps the cooldown
        its drop kept (`TaskSink._dropped_before`). One dropped without it is not marked.
        Before: no dropped moment was marked."""
        ledger, deferral = stores.ledger, stores.deferral
        await ledger.claim([(t, t.upper().encode()) for t in "abc"])
        assert await deferral.park("a", "s1", b"", time.time() + 600, 600)
        assert await deferral.join_many([Joining(t, "s1", b"") for t in "bc"]) == ["a"] * 2
        until = time.time() + 3600
        leaves = [
            Leave("a", "b", b"B", dropped="declined", keep_until=until, went_out=True),
            Leave("a", "c", b"C", dropped="declined", keep_until=until),
        ]
        assert await ledger.leave_many(leaves) == [True, True]
        assert [await ledger.get(t) for t in "bc"] == [b"Xdeclined", b"Xdeclined"]
        assert await ledger.redriven(["a", "b", "c"]) == {"b"}
        assert await ledger.first_pending(["b", "c"]) == {"b": None}
        assert await ledger.pending_count() == 0  # neither dropped one is re-driven


class TestSlotsAndContacts:
    """Capacity is taken in the items' order (the earlier task gets the last slot); the
    contact book per subscriber, in order."""

    async def test_slots_in_order_and_idempotent(self, stores: DispatchStores) -> None:
        day = dt.date(2026, 12, 3)
        sms = SlotKey("NJ", Channel.SMS, day)
        call = SlotKey("NJ", Channel.OUTBOUND_CALL, day)
        items = [(sms, "t1", 2), (call, "t2", 1), (sms, "t3", 2), (sms, "t4", 2), (sms, "t1", 2)]
        assert await stores.slots.take_many(items) == [
            (True, 1),
            (True, 1),
            (True, 2),
            (False, 2),
            (True, 2),
        ]
        assert await stores.slots.take_many([]) == []

    async def test_contacts_in_order_and_given_back(self, stores: DispatchStores) -> None:
        book = stores.contacts
        now = float(int(time.time()))  # Lua's tostring keeps 14 digits
        taken = await book.take_many(
            [("s1", "t1", now), ("s2", "t2", now), ("s1", "t3", now)], 100, 1
        )
        assert taken == [None, None, now + 100]
        await book.give_back_many([("s1", "t1"), ("s9", "t9")])
        assert await book.take_many([("s1", "t3", now)], 100, 1) == [None]
        await book.give_back_many([])
        assert await book.take_many([], 100, 1) == []

    async def test_a_contact_moved_to_another_task_keeps_its_time(
        self, stores: DispatchStores
    ) -> None:
        book = stores.contacts
        now = float(int(time.time()))
        assert await book.take_many([("s1", "t1", now - 40)], 100, 1) == [None]
        await book.move_many([("s1", "t1", "t2"), ("s1", "t9", "t8"), ("s2", "t1", "t3")])
        await book.move_many([])
        assert await book.take_many([("s1", "t2", now)], 100, 1, look=True) == [None]
        assert await book.take_many([("s1", "t1", now)], 100, 1) == [now + 60]  # t2's time
        assert await book.take_many([("s2", "t3", now)], 100, 1) == [None]  # none to move

    async def test_a_contact_taken_back_keeps_its_time_over_the_cap_once(
        self, stores: DispatchStores
    ) -> None:
        """A contact given back, then said made (an outcome): counted again at its own
        time, though the cap is full; not a second time, nor once aged out."""
        book = stores.contacts
        now = float(int(time.time()))
        assert await book.take_many([("s1", "t1", now - 40)], 100, 1) == [None]
        await book.give_back_many([("s1", "t1")])
        assert await book.take_many([("s1", "t2", now)], 100, 1) == [None]
        for _ in range(2):
            await book.take_back_many([("s1", "t1", now - 40), ("s2", "t3", now - 100)], 100, now)
        await book.take_back_many([], 100, now)
        assert await book.take_many([("s1", "t4", now)], 100, 2) == [now + 60]  # t1's time
        assert await book.take_many([("s2", "t5", now)], 100, 1) == [None]  # aged out
        await book.take_back_many([("s3", "t6", now - 40)], 100, now)  # a key gone meanwhile
        assert await book.take_many([("s3", "t7", now)], 100, 1) == [now + 60]
        if isinstance(book, RedisContactBook):  # it goes when its contact ages out
            assert 0 < await book.redis.ttl(book.key("s3")) <= 60


class TestReleaseByRank:
    """`release` hands out the highest ranked of everything due (`Parking.rank`), whatever
    the due times and ids, and counts a task due but not released yet as waiting."""

    async def test_a_join_ranks_the_waiting_task_by_its_best_moment(
        self, stores: DispatchStores
    ) -> None:
        """`a` (rank 5) would go after `b` (rank 3); `c` (rank 1) joins `a` while it waits,
        and `e` (rank 2) joins `d` once it is due but not released: the queue released
        by the ranks they were parked with."""
        ledger, deferral = stores.ledger, stores.deferral
        now = time.time()
        await ledger.claim([(t, t.upper().encode()) for t in "abcdef"])
        parks = [
            Parking("a", "s1", b"", now - 30, 1800, rank=5.0),
            Parking("b", "s2", b"", now - 60, 1800, rank=3.0),
            Parking("d", "s3", b"", now - 10, 1800, rank=4.0),
        ]
        assert await deferral.park_many(parks) == [True, True, True]
        assert await deferral.join_many([Joining("c", "s1", b"", rank=1.0)]) == ["a"]
        [first] = await deferral.release(now, limit=1)
        assert (first.task_id, first.members) == ("a", [b"C"])
        # `b` and `d` are due, ranked and not released: still waiting, due when they were
        assert await deferral.waiting() == 2
        assert await deferral.due_at("d") == now - 10
        assert await deferral.earliest_due() == now - 60
        assert await deferral.waiting_and_due() == (2, now - 60)
        assert await deferral.join_many([Joining("e", "s3", b"", rank=2.0)]) == ["d"]
        assert [r.task_id for r in await deferral.release(now, limit=1)] == ["d"]
        assert [r.task_id for r in await deferral.release(now)] == ["b"]
        assert await deferral.waiting() == 0
        assert await deferral.earliest_due() is None
        assert await deferral.waiting_and_due() == (0, None)

    async def test_the_top_of_everything_due_whatever_the_due_time_and_id(
        self, stores: DispatchStores
    ) -> None:
        """Unranked tasks (parked by an earlier version) go first, by due time, then the
        ranked by rank, ties by id; one parked again after it was due waits for its new
        time."""
        ledger, deferral = stores.ledger, stores.deferral
        now = time.time()
        ids = [f"t{n:04d}" for n in range(1200)]
        await ledger.claim([(i, b"X") for i in ids])
        ranks = {i: 1e14 + 1200 - n for n, i in enumerate(ids)}  # the last id ranks first
        parks = [
            Parking(i, f"s{i}", b"", now - n % 7, 1800, rank=ranks[i]) for n, i in enumerate(ids)
        ]
        parks[5] = Parking(ids[5], "s", b"", now - 3, 1800)  # no rank
        parks[9] = Parking(ids[9], "s", b"", now - 5, 1800)  # no rank, due before
        assert all(await deferral.park_many(parks))
        released = await deferral.release(now, limit=10)
        assert [r.task_id for r in released] == [ids[9], ids[5], *ids[-1:-9:-1]]
        # Parked again (a worker's decision), `t1190` is due later, not ranked now.
        await deferral.park_many([Parking("t1190", "s", b"", now + 60, 1800, rank=0.5)])
        nxt = await deferral.release(now, limit=3)
        assert [r.task_id for r in nxt] == ["t1191", "t1189", "t1188"]
        assert await deferral.due_at("t1190") == now + 60
        rest = await deferral.release(now, limit=5000)
        assert len(rest) == 1200 - 13 - 1  # all but t1190
        assert await deferral.waiting() == 1

    @pytest.mark.parametrize("due", [False, True], ids=["waiting", "due"])
    async def test_a_join_ranks_the_merged_group_as_claim_order_does(
        self, stores: DispatchStores, due: bool
    ) -> None:
        """A courtesy call `a` (priority 3, 21:00) waits for the opening; the customer's
        complaint callback `j` (priority 1, 23:00) joins it. Released, the group is ranked
        by `claim_order` of its moments: priority 1 (the callback's), the highest risk
        (the call's 60), the oldest moment (the call's 21:00), so it goes before `y`,
        another customer's callback (priority 1, risk 60, 22:00). Ranked by the better of
        the two ranks, it was the callback's own (priority 1, risk 0, 23:00), after `y`,
        and when the morning's slots ran out between two releases, `y` took the last."""
        ledger, deferral = stores.ledger, stores.deferral
        now = time.time()
        night = NOW.replace(hour=21, minute=0) - dt.timedelta(days=1)
        risky = RiskScore(score=60, parts=[])
        a = task("a", "13800000001", priority=3, triggered=night).model_copy(update={"risk": risky})
        j = task("j", "13800000001", priority=1, triggered=night + 2 * HOUR)
        y = task("y", "13800000002", priority=1, triggered=night + HOUR).model_copy(
            update={"risk": risky}
        )
        first = task("f", "13800000003", priority=1, triggered=night).model_copy(
            update={"risk": RiskScore(score=100, parts=[])}
        )
        assert claim_order([a, j]) < claim_order([y])
        await ledger.claim([(t, t.upper().encode()) for t in "ajyf"])
        release_at = now - 60 if due else now + 60
        parks = [
            Parking(t.task_id, t.subscriber_id, b"", at, 1800, rank=rank_score([t]))
            for t, at in ((a, release_at), (y, release_at), (first, now - 60))
        ]
        assert await deferral.park_many(parks) == [True, True, True]
        # `f` goes; `a` and `y` wait, or, due, are ranked and not released
        assert [r.task_id for r in await deferral.release(now, limit=1)] == ["f"]
        joining = Joining("j", j.subscriber_id, b"", rank=rank_score([j]))
        assert await deferral.join_many([joining]) == ["a"]
        released = await deferral.release(now + 120, limit=1)
        assert [(r.task_id, r.members) for r in released] == [("a", [b"J"])]

    async def test_a_joined_rank_is_that_of_all_the_moments(self, stores: DispatchStores) -> None:
        """The join script's rank of the merged moments (Lua) is `rank_score` of them all,
        exactly, for every pair of priority, risk and age, whichever joins which."""
        ledger, deferral = stores.ledger, stores.deferral
        now = time.time()
        night = NOW - dt.timedelta(days=1)
        kinds = [
            task(f"k{n}", priority=p, triggered=night + h * HOUR).model_copy(
                update={"risk": None if r is None else RiskScore(score=r, parts=[])}
            )
            for n, (p, r, h) in enumerate(
                (p, r, h) for p in (1, 5) for r in (None, 0.01, 99.99) for h in (0, 2)
            )
        ]
        pairs = [(a, b) for a in kinds for b in kinds]
        subs = [f"1380000{n:04d}" for n in range(len(pairs))]
        await ledger.claim([(f"c{n}", b"C") for n in range(len(pairs))])
        await ledger.claim([(f"j{n}", b"J") for n in range(len(pairs))])
        parks = [
            Parking(f"c{n}", subs[n], b"", now + 60, 1800, rank=rank_score([a]))
            for n, (a, _) in enumerate(pairs)
        ]
        assert all(await deferral.park_many(parks))
        joins = [
            Joining(f"j{n}", subs[n], b"", rank=rank_score([b])) for n, (_, b) in enumerate(pairs)
        ]
        assert await deferral.join_many(joins) == [f"c{n}" for n in range(len(pairs))]
        want = {f"c{n}": rank_score([a, b]) for n, (a, b) in enumerate(pairs)}
        if isinstance(deferral, DeferralQueue):
            stored = await deferral.redis.hgetall(deferral.rank_key)
            got = {as_bytes(k).decode(): float(v) for k, v in stored.items()}
        else:
            assert isinstance(deferral, MemoryDeferrals)
            got = deferral.ranks
        assert got == want
