"""Published tasks no outcome came back for, over the real broker and Redis (and the
in-memory stores): tasks published, some answered through moments.task-outcomes, the
gauge `moments_tasks_unanswered{channel}` and the counter
`moments_tasks_unanswered_expired_total{channel,moment_type}` moving, and the Redis
index bounded (an entry leaves at its outcome or once expired and counted)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from moments.ack import write_outcome
from moments.models import Channel, OutcomeStatus, ProfileEvent, ServiceTask, TaskOutcome
from moments.outcomes import handle_outcomes
from moments.pending import pending_tasks
from moments.records import RawRecord
from sinks.cooldowns import CollectedCooldownReturns
from sinks.ledger import TaskLedger, as_bytes, sent_meta_fields
from sinks.policy import DispatchPolicy, MergePolicy
from sinks.stores import Declines
from tests.integration.conftest import tasks_command
from tests.integration.kafka_io import read_topic

from .conftest import HOUR, NOW, Worker, published, task
from .test_crash_windows import CrashError, crashing
from .test_merged_groups import refusing_managers

pytestmark = pytest.mark.integration

GO_NOW = DispatchPolicy(merge=MergePolicy(hold_channels=[]))
"""Calls are not held for the merge window: every task is published at once."""
GRACE_S = 3600.0


def tid(name: str) -> str:
    return hashlib.blake2b(f"unanswered-{name}".encode(), digest_size=16).hexdigest()


S1, S2, S3, C1 = (tid(n) for n in ("s1", "s2", "s3", "c1"))
SUB = "13300000001"


def expires() -> dt.datetime:
    """When the tasks expire: two hours after the test's `NOW` (read at its start)."""
    return NOW + dt.timedelta(hours=2)


def expired_total(w: Worker, channel: str, moment_type: str) -> float:
    return w.sample(
        "moments_tasks_unanswered_expired_total", channel=channel, moment_type=moment_type
    )


class TestUnanswered:
    async def test_answered_tasks_leave_and_the_others_expire_counted(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        w = make_worker(GO_NOW)
        await w.send(
            task(S1, sub=SUB, moment_type="low_balance", expires_at=expires()),
            task(S2, sub=SUB, moment_type="low_balance", expires_at=expires()),
            task(S3, sub=SUB, moment_type="first_international_roaming", expires_at=expires()),
            task(C1, sub=SUB, channel=Channel.OUTBOUND_CALL, moment_type="bill_shock"),
        )
        assert len(await published(w.settings, 4)) == 4
        await w.sink.expiry.expire_unanswered()
        assert w.sample("moments_tasks_unanswered", channel="sms") == 3
        assert w.sample("moments_tasks_unanswered", channel="outbound_call") == 1

        # The SMS gateway answers two of its three, through the outcomes topic.
        for task_id, status in ((S1, OutcomeStatus.DONE_NO_CHANGE), (S3, OutcomeStatus.FAILED)):
            await write_outcome(
                w.settings,
                TaskOutcome(task_id=task_id, subscriber_id=SUB, status=status, occurred_at=NOW),
            )
        records = await read_topic(w.settings, "task_outcomes", count=2, wait_s=20)
        raw = [RawRecord(r.topic, r.partition, r.offset, r.key, r.value) for r in records]
        assert (await handle_outcomes(raw, w.sink)).handled == 2
        assert await w.sink.expiry.expire_unanswered() == 0
        assert w.sample("moments_tasks_unanswered", channel="sms") == 1

        # Past the SMS's expiry and the grace: S2 is counted, under its channel and type;
        # the call (3 days to live) still waits.
        after = expires().timestamp() + GRACE_S + 1
        assert await w.sink.expiry.expire_unanswered(now=after) == 1
        assert expired_total(w, "sms", "low_balance") == 1
        assert expired_total(w, "sms", "first_international_roaming") == 0
        assert w.sample("moments_tasks_unanswered", channel="sms") == 0
        assert w.sample("moments_tasks_unanswered", channel="outbound_call") == 1
        assert [u.task_id for u in await w.ledger.list_unanswered()] == [C1]
        assert await w.sink.expiry.expire_unanswered(now=after) == 0
        assert expired_total(w, "sms", "low_balance") == 1

    @pytest.mark.redis_only
    async def test_workers_sweeping_at_once_count_each_task_once(
        self, make_worker: Callable[..., Worker], redis_url: str
    ) -> None:
        workers = [make_worker(GO_NOW) for _ in range(3)]
        ids = [tid(f"many-{n}") for n in range(40)]
        await workers[0].send(
            *(task(i, sub=f"1330000{n:04d}", expires_at=expires()) for n, i in enumerate(ids))
        )
        after = expires().timestamp() + GRACE_S + 1
        counts = await asyncio.gather(
            *(w.sink.expiry.expire_unanswered(now=after) for w in workers)
        )
        assert sum(counts) == 40
        assert sum(expired_total(w, "sms", "first_international_roaming") for w in workers) == 40
        ledger = workers[0].ledger
        assert isinstance(ledger, TaskLedger)
        client = Redis.from_url(redis_url)
        try:
            assert await client.exists(ledger.unanswered_key("sms")) == 0  # nothing left
        finally:
            await client.aclose()

    @pytest.mark.redis_only
    async def test_a_confirm_repeated_after_the_outcome_does_not_put_the_task_back(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """A retried confirm (its first reply lost) after the outcome was read: the entry
        is `S` already, and the script adds to the index only as it leaves `P`."""
        ledger = make_worker().ledger
        task_id = tid("repeated")
        awaiting = {task_id: ("sms", time.time() + 60)}
        assert await ledger.claim([(task_id, b"{}")]) == [True]
        await ledger.confirm([task_id], awaiting=awaiting)
        assert (await ledger.unanswered())["sms"] == 1
        assert await ledger.first_outcome(task_id, "done_no_change", "sms")
        await ledger.confirm([task_id], awaiting=awaiting)
        assert (await ledger.unanswered())["sms"] == 0

    async def test_an_outcome_read_before_the_confirm_leaves_the_task_answered(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """The worker died between the broker's ack and the confirm; the consumer answered
        the task it got before a fresh worker's re-drive sent it again (same id) and
        confirmed it. The outcome came first: the task is answered, neither listed as
        awaiting one nor counted as expired unanswered (the confirm put it in the index
        after its outcome, and it was counted against a consumer that had answered)."""
        w = make_worker(GO_NOW)
        early = tid("answered-early")
        dying = dies_before_its_confirm(make_worker(GO_NOW))
        with pytest.raises(CrashError):
            await dying.send(task(early, sub=SUB, moment_type="low_balance", expires_at=expires()))
        assert len(await published(w.settings, 1)) == 1
        assert await w.ledger.state(early) == "pending"

        record = outcome_of(early, OutcomeStatus.DONE_NO_CHANGE)
        assert (await handle_outcomes([record], w.sink)).handled == 1

        fresh = make_worker(GO_NOW)
        assert await fresh.sink.redrive(older_than=0) == 1
        assert await w.ledger.state(early) == "sent"
        assert (await w.ledger.unanswered())["sms"] == 0
        assert await w.ledger.list_unanswered() == []
        after = expires().timestamp() + GRACE_S + 1
        assert await w.sink.expiry.expire_unanswered(now=after) == 0
        assert expired_total(w, "sms", "low_balance") == 0

    async def test_a_decline_read_before_the_confirm_holds_the_task_back(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """As above, the customer declining the task the dying worker sent: its body is
        kept at the confirm only, so the outcome found no task, suppressed nothing and was
        counted `moment_type="unknown"`; the fresh worker's re-drive then sent the task
        again to the customer who had declined it. The pending entry holds the task: the
        decline is written, and the re-drive, finding the task answered, confirms it as
        sent: not sent again, nor counted suppressed (`declined`) as if it had not gone
        out."""
        w = make_worker(GO_NOW)
        early = tid("declined-early")
        dying = dies_before_its_confirm(make_worker(GO_NOW))
        with pytest.raises(CrashError):
            await dying.send(task(early, sub=SUB, moment_type="low_balance", expires_at=expires()))
        assert len(await published(w.settings, 1)) == 1
        assert await w.ledger.state(early) == "pending"

        record = outcome_of(early, OutcomeStatus.DECLINED)
        assert (await handle_outcomes([record], w.sink, now=NOW)).declined == 1
        assert (
            w.sample("moments_task_outcomes_total", moment_type="low_balance", status="declined")
            == 1
        )

        fresh = make_worker(GO_NOW)
        await fresh.sink.redrive(older_than=0)
        assert await w.ledger.state(early) == "sent"
        assert len(await published(w.settings, 1)) == 1  # not sent again
        assert not fresh.sample(
            "moments_tasks_suppressed_total", moment_type="low_balance", reason="declined"
        )

    async def test_a_decline_read_before_a_merged_tasks_confirm_holds_back_every_moment(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """As above, for a call an SMS moment joined in the merge window: the pending entry
        holds the call's own payload, the SMS in its group. Read alone, the decline
        suppressed the call's rule only, and the re-drive, merging the group again, sent
        the SMS moment to the customer who had declined the whole contact."""
        call, sms = tid("merged-call"), tid("merged-sms")
        w = make_worker()  # calls held for the merge window
        await w.send(task(call, sub=SUB, channel=Channel.OUTBOUND_CALL, moment_type="bill_shock"))
        await w.send(task(sms, sub=SUB, moment_type="low_balance", expires_at=expires()))
        assert await w.ledger.state(sms) == "merged"
        dying = dies_before_its_confirm(make_worker())
        with pytest.raises(CrashError):
            await dying.sink.release_due(now=time.time() + 3600)
        [sent] = await published(w.settings, 1)
        assert [r["moment"]["rule_id"] for r in sent["related"]] == ["low_balance"]
        assert await w.ledger.state(call) == "pending"

        record = outcome_of(call, OutcomeStatus.DECLINED)
        assert (await handle_outcomes([record], w.sink, now=NOW)).declined == 1
        assert await w.sink.declines.suppressed(SUB, "low_balance")

        # The entry went pending at the release's time, an hour ahead, then its fence
        # (`Ledger.fence`, before the produce) re-scored it to the wall clock: any re-drive
        # claims it (older_than=0 too, on both stores); -3660 whatever the fence did.
        assert await make_worker().sink.redrive(older_than=-3600.0 - 60) == 1
        assert await w.ledger.state(call) == "sent"
        assert len(await published(w.settings, 1)) == 1  # nothing sent again

    @pytest.mark.parametrize("crashes", [1, 2])
    async def test_a_decline_after_a_redrive_holds_back_a_moment_expired_since_the_publish(
        self, make_worker: Callable[..., Worker], crashes: int
    ) -> None:
        """A call an SMS moment joined in the merge window, published and its worker dead
        before the confirm (then, `crashes` 2, the re-drive's too); by the re-drive the SMS
        moment has expired. Dropped there (it left the group), the call went out again
        without it, and a decline read after the confirm suppressed the call's rule only:
        the consumer acted on the first publish, which carried the SMS moment (it drops
        repeats by `task_id`). The same id carries the same body."""
        w = make_worker()
        call, _ = await merged_then_dead(w, make_worker, f"lapsed-{crashes}")
        redriving = [make_worker() for _ in range(crashes)]
        for dying in redriving[:-1]:
            with pytest.raises(CrashError):
                await redrive_after_lapse(dies_before_its_confirm(dying))
        assert await redrive_after_lapse(redriving[-1]) == 1
        assert await w.ledger.state(call) == "sent"
        first, *again = await published(w.settings, 1 + crashes)
        assert len(again) == crashes
        assert all(a["related"] == first["related"] for a in again)
        assert [r["moment"]["rule_id"] for r in first["related"]] == ["low_balance"]
        for r in redriving:
            assert not r.sample(
                "moments_tasks_suppressed_total", moment_type="low_balance", reason="expired"
            )

        record = outcome_of(call, OutcomeStatus.DECLINED)
        assert (await handle_outcomes([record], w.sink, now=NOW)).declined == 1
        assert await w.sink.declines.suppressed(SUB, "bill_shock")
        assert await w.sink.declines.suppressed(SUB, "low_balance")

    async def test_the_moments_that_went_out_in_a_carrier_dropped_go_with_it(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """As above, a push moment in the group too, and the call's rule declined before
        the re-drive: the call is dropped, and the moments merged into it with it (they
        went out inside it, maybe), counted `declined` as the call is. Before: the push
        went out again as a task of its own, to a consumer that had it in the call's
        `related` (and the lapsed SMS moment was dropped `expired` there)."""
        w = make_worker()
        push = task(tid("lapsed-push"), sub=SUB, channel=Channel.APP_PUSH, moment_type="roam")
        call, sms = await merged_then_dead(w, make_worker, "lapsed-carrier-dropped", push)
        await w.sink.declines.suppress(SUB, "bill_shock", 86400)
        redriving = make_worker()
        assert await redrive_after_lapse(redriving) == 1
        assert len(await published(w.settings, 1)) == 1  # nothing sent again
        states = [await w.ledger.state(i) for i in (call, sms, push.task_id)]
        assert states == ["dropped", "dropped", "dropped"]
        for moment_type in ("bill_shock", "low_balance", "roam"):
            assert redriving.sample(
                "moments_tasks_suppressed_total", moment_type=moment_type, reason="declined"
            )

    @pytest.mark.parametrize("meanwhile", ["lapsed", "carrier declined"])
    async def test_a_task_the_redrive_parked_goes_out_again_as_it_went_or_not_at_all(
        self, make_worker: Callable[..., Worker], meanwhile: str
    ) -> None:
        """As above, the line suspended before the re-drive: the re-drive parks the call
        for its line (`D`, `redriven:<id>` kept) and it is released once the line is
        active again. The SMS moment lapsed meanwhile goes out again in it: before, the
        release dropped it (the re-drive alone kept one) and the call went out again under
        its id without it. The call's rule declined meanwhile drops the call and the
        moments merged into it with it: before, the push moment went out again under its
        own id."""
        w = make_worker()
        push = task(tid(f"parked-{meanwhile}-push"), sub=SUB, channel=Channel.APP_PUSH)
        call, sms = await merged_then_dead(w, make_worker, f"parked-{meanwhile}", push)
        await w.sink.subscribers.record_facts([line(SUB, "suspended", NOW)])
        redriving = make_worker()
        assert await redrive_after_lapse(redriving) == 1
        assert [await w.ledger.state(i) for i in (call, sms)] == ["deferred", "merged"]
        assert await w.ledger.redriven([call]) == {call}
        if meanwhile == "carrier declined":
            await w.sink.declines.suppress(SUB, "bill_shock", 86400)
        await w.sink.subscribers.record_facts([line(SUB, "active", NOW + HOUR)])
        assert await redriving.sink.release_due(now=time.time() + 4 * 3600) == 1
        if meanwhile == "lapsed":
            first, again = await published(w.settings, 2)
            assert again["task_id"] == call
            assert again["related"] == first["related"]
            assert await w.ledger.state(call) == "sent"
        else:
            assert len(await published(w.settings, 1)) == 1  # nothing sent again
            states = [await w.ledger.state(i) for i in (call, sms, push.task_id)]
            assert states == ["dropped", "dropped", "dropped"]

    async def test_a_decline_read_as_the_redrive_decides_still_finds_the_task_sent(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """The decline is read after the re-drive looked at the answered marks, before its
        decision read the declines: the task was dropped as `declined` (counted
        suppressed, its rule's cooldown given back) though it had reached the customer.
        The mark is written before the decline, so a look after the declines' read finds
        it: confirmed as sent, as when the outcome came first."""
        w = make_worker(GO_NOW)
        early = await published_then_dead(w, make_worker, "declined-meanwhile")
        fresh = make_worker(GO_NOW)
        fresh.sink.returns = returns = CollectedCooldownReturns(lambda: {"low_balance"})
        answer_as_it_reads_declines(fresh, w, outcome_of(early, OutcomeStatus.DECLINED))
        await fresh.sink.redrive(older_than=0)
        assert await w.ledger.state(early) == "sent"
        assert await w.sink.declines.suppressed(SUB, "low_balance")
        assert len(await published(w.settings, 1)) == 1  # not sent again
        assert not fresh.sample(
            "moments_tasks_suppressed_total", moment_type="low_balance", reason="declined"
        )
        assert returns.take() == []

    async def test_an_outcome_read_as_the_redrive_decides_is_not_sent_again(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """As above, an outcome that is not a decline: the re-drive published the task a
        second time to a consumer that had answered it."""
        w = make_worker(GO_NOW)
        early = await published_then_dead(w, make_worker, "answered-meanwhile")
        fresh = make_worker(GO_NOW)
        answer_as_it_reads_declines(fresh, w, outcome_of(early, OutcomeStatus.DONE_NO_CHANGE))
        assert await fresh.sink.redrive(older_than=0) == 1
        assert await w.ledger.state(early) == "sent"
        assert len(await published(w.settings, 1)) == 1
        assert (await w.ledger.unanswered())["sms"] == 0

    async def test_a_task_confirmed_answered_says_when_it_went_out(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """The re-drive confirming a task answered while pending wrote its own time as the
        task's `sent_at` (an hour late here), which `moments tasks pending` shows and a
        contact counted again is dated by (`_take_back`). It is when the entry went
        pending, just before the dying worker's publish."""
        w = make_worker(GO_NOW)
        before = time.time()
        early = await published_then_dead(w, make_worker, "answered-late")
        after = time.time()
        assert (
            await handle_outcomes([outcome_of(early, OutcomeStatus.DONE_NO_CHANGE)], w.sink)
        ).handled == 1
        fresh = make_worker(GO_NOW)
        fresh.sink.clock = lambda: time.time() + 3600
        assert await fresh.sink.redrive(older_than=0) == 1
        sent_at = sent_meta_fields(await w.ledger.get(early))["sent_at"]
        assert isinstance(sent_at, int)
        assert int(before) <= sent_at <= after

    async def test_a_decline_read_before_the_confirm_spares_the_moments_dropped_at_publish(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """A manager task joined by a complaint callback; the manager pool full, the manager
        moment is dropped (`capacity`) and the callback goes out alone, then the worker
        dies before its confirm. A decline read then suppresses the callback's rule only:
        the dropped moment left the group (`Ledger.leave_many`) before the publish, and
        the outcome reads the group as it went out."""
        policy = refusing_managers(**{"*": {"policy": "drop"}})
        w = make_worker(policy)
        later = NOW + HOUR
        manager, callback = tid("dropped-manager"), tid("sent-callback")
        filler = task(
            tid("filler"),
            sub="13900000200",
            channel=Channel.MANAGER,
            priority=1,
            triggered=NOW - HOUR,
            deliver_after=later,
            deferred="quiet_hours",
        )
        await w.send(filler)
        await w.send(
            task(
                manager,
                sub=SUB,
                moment_type="third_complaint_30d",
                priority=1,
                channel=Channel.MANAGER,
                deliver_after=later,
                deferred="quiet_hours",
            ),
            task(
                callback,
                sub=SUB,
                moment_type="complaint",
                priority=2,
                channel=Channel.OUTBOUND_CALL,
                deliver_after=later - dt.timedelta(minutes=10),
                deferred="quiet_hours",
            ),
        )
        assert await w.ledger.state(callback) == "merged"
        dying = dies_before_its_confirm(make_worker(policy))
        with pytest.raises(CrashError):
            await dying.sink.release_due(now=later.timestamp() + 1)
        sent = {t["task_id"]: t for t in await published(w.settings, 2)}
        assert sent[callback]["related"] is None
        assert [await w.ledger.state(i) for i in (manager, callback)] == ["dropped", "pending"]

        record = outcome_of(callback, OutcomeStatus.DECLINED)
        assert (await handle_outcomes([record], w.sink, now=NOW)).declined == 1
        assert await w.sink.declines.suppressed(SUB, "complaint")
        assert not await w.sink.declines.suppressed(SUB, "third_complaint_30d")


class TestRedrivenLead:
    """A re-driven merged task whose carrier (the call that waited first) does not lead it
    (a manager moment joined it): judged opted out by the channel it went out on,
    `manager`, on Redis as in memory (tests/unit/test_redriven_content.py)."""

    @pytest.mark.parametrize("opted_out_of", ["manager", "outbound_call"])
    async def test_the_opt_out_that_counts_is_the_tasks_channel(
        self, make_worker: Callable[..., Worker], opted_out_of: str
    ) -> None:
        """Out of `manager`, the task is dropped `opt_out` and nothing goes out again
        (before: sent again on `manager`); out of `outbound_call` only, the carrier's own
        channel, it goes out again as it went (before: dropped, and the manager moment
        sent again under its own id)."""
        w = make_worker()
        mgr = task(tid(f"led-{opted_out_of}"), sub=SUB, channel=Channel.MANAGER)
        call, _ = await merged_then_dead(w, make_worker, f"led-{opted_out_of}", mgr)
        [first] = await published(w.settings, 1)
        assert (first["task_id"], first["channel"]) == (call, "manager")
        opt_out = ProfileEvent.model_validate(
            {"event_id": f"out-{opted_out_of}", "subscriber_id": SUB, "occurred_at": NOW}
            | {"opt_out": [opted_out_of]}
        )
        await w.sink.subscribers.record_facts([opt_out])
        redriving = make_worker()
        assert await redrive_after_lapse(redriving) == 1
        if opted_out_of == "manager":
            assert len(await published(w.settings, 1)) == 1  # nothing sent again
            assert await w.ledger.state(call) == "dropped"
            assert redriving.sample(
                "moments_tasks_suppressed_total", moment_type="bill_shock", reason="opt_out"
            )
        else:
            _, again = await published(w.settings, 2)
            assert (again["task_id"], again["channel"]) == (call, "manager")
            assert again["related"] == first["related"]
            assert await w.ledger.state(call) == "sent"


async def published_then_dead(w: Worker, make_worker: Callable[..., Worker], name: str) -> str:
    """The id of a task (`SUB`'s, rule `low_balance`) a worker published and died before
    confirming: its entry pending."""
    early = tid(name)
    dying = dies_before_its_confirm(make_worker(GO_NOW))
    with pytest.raises(CrashError):
        await dying.send(task(early, sub=SUB, moment_type="low_balance", expires_at=expires()))
    assert len(await published(w.settings, 1)) == 1
    assert await w.ledger.state(early) == "pending"
    return early


async def merged_then_dead(
    w: Worker, make_worker: Callable[..., Worker], name: str, *more: ServiceTask
) -> tuple[str, str]:
    """The ids of a call (`bill_shock`) and the SMS moment (`low_balance`, lapsing in two
    hours) that joined it in the merge window (and `more`), published together an hour
    from now by a worker that died before its confirm (`w` holds calls for the window)."""
    call, sms = tid(f"{name}-call"), tid(f"{name}-sms")
    start = time.time()
    lapses = dt.datetime.fromtimestamp(start + 2 * 3600 + 300, dt.UTC)  # min_time_left
    await w.send(task(call, sub=SUB, channel=Channel.OUTBOUND_CALL, moment_type="bill_shock"))
    for t in [task(sms, sub=SUB, moment_type="low_balance", expires_at=lapses), *more]:
        await w.send(t)
        assert await w.ledger.state(t.task_id) == "merged"
    dying = dies_before_its_confirm(make_worker())
    with pytest.raises(CrashError):
        await dying.sink.release_due(now=start + 3600)
    [sent] = await published(w.settings, 1)
    assert "low_balance" in [r["moment"]["rule_id"] for r in sent["related"]]
    return call, sms


async def redrive_after_lapse(redriving: Worker) -> int:
    """`redriving`'s re-drive three hours from now, the SMS moment of `merged_then_dead`
    lapsed. Its entry went pending at the release's time, an hour ahead of the wall clock
    the stores claim stale entries by, and the release's fence (`Ledger.fence`, before its
    produce) re-scored it to that wall clock: `older_than` -3660 claims it either way. Its
    sink's `lease_s` is then negative: `_keep_claim` renews every `LEASE_RENEW_MIN_S`
    (10 ms) while the produce runs, as no worker's timer does (a third of 30 s)."""
    redriving.sink.clock = lambda: time.time() + 3 * 3600
    return await redriving.sink.redrive(older_than=-3600.0 - 60)


def line(sub: str, status: str, at: dt.datetime) -> ProfileEvent:
    """A profile update saying the line of `sub` is `status` at `at`."""
    return ProfileEvent.model_validate(
        {"event_id": f"line-{status}-{at.timestamp()}", "subscriber_id": sub, "occurred_at": at}
        | {"status": status}
    )


def answer_as_it_reads_declines(fresh: Worker, w: Worker, record: RawRecord) -> None:
    """`record` handled by `w` just before `fresh`'s sink first reads declines: after a
    re-drive's first look at the pending tasks, as its decision begins."""
    real = fresh.sink.declines
    answered: list[bool] = []

    class Answering:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        async def suppressed_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
            if not answered:
                answered.append((await handle_outcomes([record], w.sink, now=NOW)).handled == 1)
            return await real.suppressed_many(pairs)

    fresh.sink.declines = cast(Declines, Answering())


def dies_before_its_confirm(w: Worker) -> Worker:
    """`w` with a ledger whose confirm crashes: its worker dies between the broker's ack of
    a task and the confirm, the entry left pending."""
    w.sink.stores = stores = crashing(w.sink.stores, "ledger", "confirm")
    w.sink.ledger = stores.ledger
    return w


def outcome_of(task_id: str, status: OutcomeStatus) -> RawRecord:
    """The consumer's outcome of `task_id`, for `SUB`, as the outcomes topic holds it."""
    outcome = TaskOutcome(task_id=task_id, subscriber_id=SUB, status=status, occurred_at=NOW)
    return RawRecord("outcomes", 0, 0, SUB.encode(), outcome.model_dump_json().encode())


def pending_command(w: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return tasks_command(w.settings, "pending", *args)


@pytest.mark.redis_only
class TestTheWholeIndex:
    async def test_a_backlog_is_read_a_chunk_a_call_not_in_one_zrange(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """`list_unanswered` read each channel's index in one ZRANGE 0 -1: a consumer's
        outage leaves hundreds of thousands there, and that one read held Redis (0.2 s per
        100,000). It reads them with ZSCAN, a chunk a call, every task listed once, soonest
        expiry first. Seen in Redis's own log of commands (SLOWLOG, every command logged
        for the test)."""
        w = make_worker(GO_NOW)
        ledger = w.ledger
        assert isinstance(ledger, TaskLedger)
        redis = ledger.redis
        now = time.time()
        ids = [tid(f"backlog-{n}") for n in range(2500)]
        key = ledger.unanswered_key("sms")
        await redis.zadd(key, {i: now + 3600 + n for n, i in enumerate(ids)})
        await redis.zadd(ledger.unanswered_key("manager"), {tid("m"): now + 1800})
        before = (await redis.config_get("slowlog-log-slower-than"))["slowlog-log-slower-than"]
        assert before is not None
        await redis.config_set("slowlog-log-slower-than", 0)
        await redis.slowlog_reset()
        try:
            found = await ledger.list_unanswered()
            logged = await redis.slowlog_get(128)
        finally:
            await redis.config_set("slowlog-log-slower-than", before)
        assert [u.task_id for u in found] == [tid("m"), *ids]
        assert [u.channel for u in found[:2]] == ["manager", "sms"]
        words = [[as_bytes(a).decode() for a in e["command"].split()] for e in logged]
        on_sms = [c for c in words if len(c) > 1 and c[1] == key]
        assert not [c for c in on_sms if c[0].upper() != "ZSCAN"]  # no ZRANGE 0 -1
        assert len(on_sms) >= 2  # the backlog in more than one call


@pytest.mark.redis_only
class TestPendingCommand:
    """`moments tasks pending` lists what the index holds, the subscriber masked."""

    async def test_lists_the_unanswered_tasks_by_channel_and_age(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        w = make_worker(GO_NOW)
        p1, p2, p3 = tid("p1"), tid("p2"), tid("p3")
        await w.send(
            task(p1, sub="13800138001", moment_type="low_balance", expires_at=expires()),
            task(p2, sub="13800138002", moment_type="low_balance", expires_at=expires()),
            task(p3, sub="13800138003", channel=Channel.OUTBOUND_CALL, moment_type="bill_shock"),
        )
        assert await w.ledger.first_outcome(p2, "accepted", "sms")

        proc = await asyncio.to_thread(pending_command, w, "--json")
        assert proc.returncode == 0, proc.stderr
        # Which Redis it read, on stderr: the default one may be another (a system Redis).
        read = f"tasks pending: reading Redis {w.settings.redis_url} for app id "
        assert read in proc.stderr, proc.stderr
        assert "(MOMENTS_REDIS_URL in the environment)" in proc.stderr
        rows = [orjson.loads(line) for line in proc.stdout.splitlines()]
        assert [(r["task_id"], r["channel"], r["moment_type"]) for r in rows] == [
            (p1, "sms", "low_balance"),  # soonest expiry first
            (p3, "outbound_call", "bill_shock"),
        ]
        assert rows[0]["subscriber_id"] == "138****8001"
        assert "13800138001" not in proc.stdout
        assert 0 <= rows[0]["age_seconds"] < 120
        assert rows[0]["expires_at"] == expires().isoformat().replace("+00:00", "Z")

        proc = await asyncio.to_thread(pending_command, w, "--channel", "outbound_call")
        assert proc.returncode == 0, proc.stderr
        assert p3 in proc.stdout
        assert p1 not in proc.stdout
        assert "138****8003" in proc.stdout
        assert "1 task(s) waiting for an outcome (outbound_call 1)" in proc.stderr

        proc = await asyncio.to_thread(pending_command, w, "--older-than", "2h")
        assert (proc.returncode, proc.stdout) == (0, "")
        assert "no task published 2h00m ago or earlier is waiting for an outcome; 2 younger" in (
            proc.stderr
        )

        proc = await asyncio.to_thread(pending_command, w, "--older-than", "2 hours")
        assert proc.returncode == 2
        assert "'2 hours' is not a duration; write 2h" in proc.stderr

    async def test_a_huge_index_is_read_in_pages_and_shows_the_soonest_expiring(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """The index is largest when a consumer stopped answering, which is when the
        command is run: it read every entry in one ZRANGE and every task's entry and
        body in one pipeline (100,000 SMS: Redis blocked 0.2 s, the command 7.6 s and
        320 MB). It shows the `--limit` soonest-expiring (1,000 unless told; 0: all),
        reading pages, and says how many the index holds."""
        w = make_worker(GO_NOW)
        ledger = w.ledger
        assert isinstance(ledger, TaskLedger)
        now = time.time()
        ids = [tid(f"huge-{n}") for n in range(1203)]
        pipe = ledger.redis.pipeline(transaction=False)
        for n, i in enumerate(ids):
            pipe.zadd(ledger.unanswered_key("sms"), {i: now + 3600 + n})
            meta = orjson.dumps({"moment_type": "low_balance", "sent_at": int(now) - 60})
            pipe.set(ledger.key(i), b"S" + meta)
        await pipe.execute()
        await ledger.redis.zadd(ledger.unanswered_key("manager"), {tid("m"): now + 7200})

        shown = await pending_tasks(ledger, now)
        assert [t.task_id for t in shown] == ids[:1000]  # soonest expiry first
        assert len(await pending_tasks(ledger, now, limit=0)) == 1204
        soonest = await pending_tasks(ledger, now, ["manager", "sms"], limit=3)
        assert [t.task_id for t in soonest] == ids[:3]

        proc = await asyncio.to_thread(pending_command, w, "--limit", "2")
        assert proc.returncode == 0, proc.stderr
        assert [line.split()[0] for line in proc.stdout.splitlines()] == ids[:2]
        assert "the first 2 of 1204 waiting for an outcome" in proc.stderr
        proc = await asyncio.to_thread(pending_command, w, "--limit", "-1")
        assert proc.returncode == 2
        assert "'-1': write a whole number of 0 or more, 0 for all" in proc.stderr
