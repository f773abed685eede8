"""Outcome feedback over the real broker and Redis: outcomes written by `moments tasks
ack` are read back from the topic and change what the dispatch sink does next."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import subprocess
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from moments.ack import AckError, check_subscriber, subscriber_of, write_outcome
from moments.models import Channel, OutcomeStatus, TaskOutcome
from moments.outcomes import handle_outcomes, retry_id
from moments.records import RawRecord, RejectReason
from moments.settings import Settings
from rules.gating import FrequencyCap
from sinks.cooldowns import CollectedCooldownReturns
from sinks.ledger import TaskLedger
from sinks.memory import MemoryLedger
from sinks.policy import DispatchPolicy
from tests.integration.conftest import settings_env
from tests.integration.kafka_io import read_topic

from .conftest import (
    HOUR,
    NOW,
    Worker,
    published,
    task,
)
from .test_crash_windows import CrashError, crashing

pytestmark = pytest.mark.integration


def tid(name: str) -> str:
    """A task id of the form the detector makes (32 lowercase hex), named for the test."""
    return hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


X1, X2, X3, U1, A1, A2 = (tid(n) for n in ("x1", "x2", "x3", "u1", "a1", "a2"))


async def outcomes_from_topic(settings: Settings, count: int) -> list[RawRecord]:
    records = await read_topic(settings, "task_outcomes", count=count, wait_s=20)
    return [RawRecord(r.topic, r.partition, r.offset, r.key, r.value) for r in records]


def outcome(task_id: str, sub: str, status: OutcomeStatus) -> TaskOutcome:
    return TaskOutcome(task_id=task_id, subscriber_id=sub, status=status, occurred_at=NOW)


def record_of(task_id: str, sub: str, status: OutcomeStatus) -> RawRecord:
    """The outcome's record as the worker reads it, keyed by the subscriber it names."""
    value = outcome(task_id, sub, status).model_dump_json().encode()
    return RawRecord("outcomes", 0, 0, sub.encode(), value)


class TestOutcomes:
    """declined suppresses the rule for the subscriber; unreachable queues one retry."""

    async def test_declined_suppresses_the_same_rule_for_that_subscriber(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        w = make_worker()
        sub = "13200000001"
        await w.send(task(X1, sub=sub, moment_type="low_balance"))
        await write_outcome(w.settings, outcome(X1, sub, OutcomeStatus.DECLINED))
        result = await handle_outcomes(await outcomes_from_topic(w.settings, 1), w.sink)
        assert (result.handled, result.declined) == (1, 1)
        labels = {"moment_type": "low_balance", "status": "declined"}
        assert w.sample("moments_task_outcomes_total", **labels) == 1
        # Later moments: same rule and subscriber suppressed; another subscriber is not.
        await w.send(
            task(X2, sub=sub, moment_type="low_balance"),
            task(X3, sub="13200000002", moment_type="low_balance"),
        )
        assert [await w.ledger.state(i) for i in (X2, X3)] == ["dropped", "sent"]
        suppressed = {"moment_type": "low_balance", "reason": "declined"}
        assert w.sample("moments_tasks_suppressed_total", **suppressed) == 1

    async def test_an_outcome_read_again_is_counted_once(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """Read again after a restart (its offset not yet committed), an outcome was counted
        again in moments_task_outcomes_total (code review)."""
        w = make_worker()
        sub = "13200000001"
        await w.send(task(X1, sub=sub, moment_type="low_balance"))
        records = [record_of(X1, sub, OutcomeStatus.DONE_NO_CHANGE)]
        await handle_outcomes(records, w.sink)
        await handle_outcomes(records, w.sink)  # the same record read again
        labels = {"moment_type": "low_balance", "status": "done_no_change"}
        assert w.sample("moments_task_outcomes_total", **labels) == 1
        accepted = [record_of(X1, sub, OutcomeStatus.ACCEPTED)]
        await handle_outcomes(accepted, w.sink)  # another status of the task: counted
        labels["status"] = "accepted"
        assert w.sample("moments_task_outcomes_total", **labels) == 1

    @pytest.mark.parametrize("payload_gone", [False, True])
    async def test_an_outcome_whose_redis_reply_was_lost_is_counted_once(
        self, make_worker: Callable[..., Worker], payload_gone: bool
    ) -> None:
        """Redis noted the outcome but its reply never came (a timeout, a dropped
        connection): the call is retried (`with_retry`) and found the status noted, by
        itself, so nobody counted it: 0 where 1 was due. Read again later, it is still
        counted once. Both ways of noting it: the task's payload kept (its channel known)
        and gone (a script)."""
        w = make_worker()
        sub, task_id = "13200000015", tid("lost-reply")
        await w.send(task(task_id, sub=sub, moment_type="low_balance"))
        ledger = w.ledger
        if payload_gone:
            if isinstance(ledger, TaskLedger):
                assert await ledger.redis.delete(ledger.body_key(task_id)) == 1
            else:
                assert isinstance(ledger, MemoryLedger)
                del ledger.bodies[task_id]
        real, lost = ledger.first_outcome, list[bool]()

        async def reply_lost(*args: Any, **kwargs: Any) -> bool:
            noted = await real(*args, **kwargs)
            if not lost:
                lost.append(noted)
                raise ConnectionError("the reply never came")
            return noted

        ledger.first_outcome = reply_lost  # type: ignore[method-assign]
        records = [record_of(task_id, sub, OutcomeStatus.DONE_NO_CHANGE)]
        await handle_outcomes(records, w.sink)
        assert lost == [True]  # the first try noted it
        labels = {"moment_type": "low_balance", "status": "done_no_change"}
        assert w.sample("moments_task_outcomes_total", **labels) == 1
        await handle_outcomes(records, w.sink)  # the same record read again
        assert w.sample("moments_task_outcomes_total", **labels) == 1

    async def test_declining_a_merged_task_suppresses_each_of_its_rules(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """Only the leading rule was suppressed (dispatch review)."""
        w = make_worker(DispatchPolicy.model_validate({"merge": {"hold_channels": []}}))
        sub = "13200000005"
        later = NOW + HOUR
        await w.send(
            task(
                A1, sub=sub, moment_type="low_balance", deliver_after=later, deferred="quiet_hours"
            )
        )
        await w.send(task(A2, sub=sub, moment_type="complaint", deliver_after=later))  # joins
        assert await w.sink.release_due(now=later.timestamp() + 1) == 1
        [sent] = await published(w.settings, 1)
        rules = [sent["moment"]["rule_id"], *(r["moment"]["rule_id"] for r in sent["related"])]
        assert sorted(rules) == ["complaint", "low_balance"]
        result = await handle_outcomes([record_of(A1, sub, OutcomeStatus.DECLINED)], w.sink)
        assert result.declined == 1
        await w.send(
            task(X2, sub=sub, moment_type="low_balance"),
            task(X3, sub=sub, moment_type="complaint"),
        )
        assert [await w.ledger.state(i) for i in (X2, X3)] == ["dropped", "dropped"]

    async def test_unreachable_queues_one_retry_within_expiry(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        w = make_worker(
            DispatchPolicy.model_validate(
                {
                    "outcomes": {"unreachable_retry_after": "2h", "max_retries": 1},
                    # The call goes out at once (not held for merging), so it can be answered.
                    "merge": {"hold_channels": []},
                }
            )
        )
        sub = "13200000003"
        await w.send(task(U1, sub=sub, channel=Channel.OUTBOUND_CALL))
        unreachable = outcome(U1, sub, OutcomeStatus.UNREACHABLE)
        raw = RawRecord("outcomes", 0, 0, sub.encode(), unreachable.model_dump_json().encode())
        # The retry is due `unreachable_retry_after` from the worker's clock, pinned to
        # NOW, which was read when this module was imported (a minute or more before
        # this test in a long run).
        first = await handle_outcomes([raw], w.sink, now=NOW)
        again = await handle_outcomes([raw], w.sink, now=NOW)  # the same outcome read twice
        retry = retry_id(U1, 1)
        assert first.retries == again.retries == [retry]
        assert await w.ledger.state(retry) == "deferred"
        assert w.sample("moments_tasks_deferred_total", reason="unreachable_retry") == 1
        assert await w.sink.release_due(now=(NOW + HOUR).timestamp()) == 0
        assert await w.sink.release_due(now=(NOW + 2 * HOUR + HOUR / 60).timestamp()) == 1
        out = await published(w.settings, 2)
        assert [(t["task_id"], t["attempt"], t.get("retry_of")) for t in out] == [
            (U1, 0, None),
            (retry, 1, U1),
        ]
        # The retry unreachable too: max_retries reached, nothing more is queued.
        record = RawRecord(
            "outcomes",
            0,
            1,
            sub.encode(),
            outcome(retry, sub, OutcomeStatus.UNREACHABLE).model_dump_json().encode(),
        )
        assert (await handle_outcomes([record], w.sink, now=NOW)).retries == []

    @pytest.mark.parametrize(
        "reached", [OutcomeStatus.ACCEPTED, OutcomeStatus.DONE_NO_CHANGE, OutcomeStatus.FAILED]
    )
    async def test_an_unreachable_read_after_a_reached_status_makes_no_retry(
        self, make_worker: Callable[..., Worker], reached: OutcomeStatus
    ) -> None:
        """Outcomes out of order (an earlier attempt's `unreachable` reported after the
        call that got through): the customer who took the offer was called again two hours
        later. The same task's `in_progress` says nothing of reaching them: it retries.
        After `failed` (a number not in service), a task is not sent again either: an
        earlier attempt's `unreachable` read after it queued a retry all the same."""
        w = make_worker(DispatchPolicy.model_validate({"merge": {"hold_channels": []}}))
        sub, served, ringing = "13200000021", tid("served"), tid("ringing")
        await w.send(
            task(served, sub=sub, channel=Channel.OUTBOUND_CALL),
            task(ringing, sub="13200000022", channel=Channel.OUTBOUND_CALL),
        )
        await handle_outcomes(
            [
                record_of(served, sub, reached),
                record_of(ringing, "13200000022", OutcomeStatus.IN_PROGRESS),
            ],
            w.sink,
            now=NOW,
        )
        late = [
            record_of(served, sub, OutcomeStatus.UNREACHABLE),
            record_of(ringing, "13200000022", OutcomeStatus.UNREACHABLE),
        ]
        result = await handle_outcomes(late, w.sink, now=NOW)
        assert result.retries == [retry_id(ringing, 1)]
        assert await w.ledger.state(retry_id(served, 1)) is None
        assert result.not_retried == [served]

    @pytest.mark.parametrize(
        ("later", "reason"),
        [(OutcomeStatus.ACCEPTED, "reached"), (OutcomeStatus.FAILED, "failed")],
    )
    async def test_a_waiting_retry_is_dropped_when_a_later_outcome_says_reached(
        self, make_worker: Callable[..., Worker], later: OutcomeStatus, reason: str
    ) -> None:
        """`unreachable` first, its retry waiting two hours; then the dialer's own redial
        got through (`accepted`): the retry called the customer again all the same; or it
        found the number out of service (`failed`): the retry went out too, though a
        failed task is not sent again. The rule's cooldown stays taken, as a published
        task's does whatever its outcome: the dropped retry gave it back."""
        w = make_worker(DispatchPolicy.model_validate({"merge": {"hold_channels": []}}))
        w.sink.returns = returns = CollectedCooldownReturns(lambda: {"first_international_roaming"})
        sub, served = "13200000023", tid("redialled")
        await w.send(task(served, sub=sub, channel=Channel.OUTBOUND_CALL))
        queued = await handle_outcomes(
            [record_of(served, sub, OutcomeStatus.UNREACHABLE)], w.sink, now=NOW
        )
        assert queued.retries == [retry_id(served, 1)]
        await handle_outcomes([record_of(served, sub, later)], w.sink, now=NOW)
        await w.sink.release_due(now=(NOW + 2 * HOUR + HOUR / 60).timestamp())
        assert await w.ledger.state(retry_id(served, 1)) == "dropped"
        labels = {"moment_type": "first_international_roaming", "reason": reason}
        assert w.sample("moments_tasks_suppressed_total", **labels) == 1
        assert returns.take() == []

    async def test_an_sms_due_now_does_not_wait_in_the_retry_of_an_unanswered_call(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """The retry waits two hours for the customer to answer again; their low-balance
        SMS, due now, goes now. It joined the retry, waited the two hours and went out
        in a call, to a customer who had not answered one."""
        w = make_worker(
            DispatchPolicy.model_validate(
                {"outcomes": {"unreachable_retry_after": "2h"}, "merge": {"hold_channels": []}}
            )
        )
        sub = "13200000009"
        await w.send(task(U1, sub=sub, channel=Channel.OUTBOUND_CALL))
        result = await handle_outcomes(
            [record_of(U1, sub, OutcomeStatus.UNREACHABLE)], w.sink, now=NOW
        )
        [retry] = result.retries
        assert await w.ledger.state(retry) == "deferred"
        await w.send(task(X1, sub=sub, moment_type="low_balance"))
        assert [await w.ledger.state(i) for i in (retry, X1)] == ["deferred", "sent"]
        out = await published(w.settings, 2)
        assert [(t["task_id"], t["channel"]) for t in out] == [
            (U1, "outbound_call"),
            (X1, "sms"),
        ]

    @pytest.mark.parametrize(
        "status", [OutcomeStatus.DECLINED, OutcomeStatus.UNREACHABLE, OutcomeStatus.ACCEPTED]
    )
    async def test_an_outcome_naming_another_subscriber_is_a_dead_letter(
        self, make_worker: Callable[..., Worker], status: OutcomeStatus
    ) -> None:
        """A known task id with someone else's number changes nothing for either of them:
        no decline for the number named, no retry, not counted as the task's outcome."""
        w = make_worker()
        owner, other = "13200000011", "13200000012"
        await w.send(task(tid("m1"), sub=owner, moment_type="low_balance"))
        result = await handle_outcomes([record_of(tid("m1"), other, status)], w.sink, now=NOW)
        await w.send(
            task(tid("m2"), sub=owner, moment_type="low_balance"),
            task(tid("m3"), sub=other, moment_type="low_balance"),
        )
        assert [await w.ledger.state(tid(i)) for i in ("m2", "m3")] == ["sent", "sent"]
        assert (result.handled, result.declined, result.retries) == (0, 0, [])
        [dead] = result.dead_letters
        assert dead.reason is RejectReason.SUBSCRIBER_MISMATCH
        assert dead.message == (
            f"subscriber_id is not the subscriber of task {tid('m1')}; write the "
            "subscriber_id published with the task on moments.tasks"
        )
        labels = {"moment_type": "low_balance", "status": status.value}
        assert w.sample("moments_task_outcomes_total", **labels) == 0

    async def test_a_decline_applies_to_the_subscriber_stored_with_the_task(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """The rule is suppressed for the task's subscriber, read from the task's payload."""
        w = make_worker()
        sub = "13200000013"
        await w.send(task(tid("d1"), sub=sub, moment_type="low_balance"))
        result = await handle_outcomes(
            [record_of(tid("d1"), sub, OutcomeStatus.DECLINED)], w.sink, now=NOW
        )
        assert (result.handled, result.declined, result.dead_letters) == (1, 1, [])
        assert await w.sink.declines.suppressed(sub, "low_balance")

    @pytest.mark.redis_only
    @pytest.mark.parametrize("named", ["13200000014", "13200000015"])
    async def test_a_decline_whose_task_payload_is_gone_is_counted_not_applied(
        self, make_worker: Callable[..., Worker], named: str
    ) -> None:
        """Once the payload has gone (a day after the task expired), nothing says whose the
        task was: the decline is counted and suppresses nothing, for the task's subscriber
        (13200000014) or another one."""
        w = make_worker()
        await w.send(task(tid("g1"), sub="13200000014", moment_type="low_balance"))
        ledger = w.ledger
        assert isinstance(ledger, TaskLedger)
        assert await ledger.redis.delete(ledger.body_key(tid("g1"))) == 1
        result = await handle_outcomes(
            [record_of(tid("g1"), named, OutcomeStatus.DECLINED)], w.sink, now=NOW
        )
        assert (result.handled, result.declined, result.dead_letters) == (1, 0, [])
        labels = {"moment_type": "low_balance", "status": "declined"}
        assert w.sample("moments_task_outcomes_total", **labels) == 1
        assert not await w.sink.declines.suppressed(named, "low_balance")

    @pytest.mark.parametrize("status", [OutcomeStatus.ACCEPTED, OutcomeStatus.UNREACHABLE])
    async def test_an_outcome_for_a_task_never_published_is_a_dead_letter(
        self, make_worker: Callable[..., Worker], status: OutcomeStatus
    ) -> None:
        """Every task is claimed in the ledger before it is published, and its entry is kept
        for the ledger's TTL: no entry is no task of ours (it was counted
        `moment_type="unknown"`, and the consumer never heard; dispatch consumer review).
        A task whose payload is gone but whose entry is kept is counted (above)."""
        w = make_worker()
        sub = "13200000016"
        result = await handle_outcomes([record_of(tid("never"), sub, status)], w.sink, now=NOW)
        assert (result.handled, result.retries) == (0, [])
        [dead] = result.dead_letters
        assert dead.reason is RejectReason.UNKNOWN_TASK
        assert dead.message.startswith(f"task {tid('never')} was never published by this")
        assert dead.message.endswith(
            "copy task_id from the task on moments.tasks of the detector (MOMENTS_APP_ID) "
            "whose outcomes topic this is"
        )
        labels = {"moment_type": "unknown", "status": status.value}
        assert w.sample("moments_task_outcomes_total", **labels) == 0

    async def test_an_outcome_for_a_merged_moments_own_id_names_the_task_to_report(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """A call joined a waiting SMS: the task went out as the SMS's id, led by the call,
        whose own id is the task's `moment_id`. A decline reported for that id was taken,
        counted `moment_type="unknown"`, and suppressed nothing (recheck)."""
        w = make_worker(DispatchPolicy.model_validate({"merge": {"hold_channels": []}}))
        sub = "13200000017"
        later = NOW + HOUR
        waiting = task(
            A1, sub=sub, moment_type="low_balance", deliver_after=later, deferred="quiet_hours"
        )
        await w.send(waiting)
        call = task(A2, sub=sub, moment_type="complaint", channel=Channel.OUTBOUND_CALL)
        await w.send(call.model_copy(update={"deliver_after": later}))  # joins
        assert await w.sink.release_due(now=later.timestamp() + 1) == 1
        [sent] = await published(w.settings, 1)
        assert (sent["task_id"], sent["moment_id"]) == (A1, A2)
        record = record_of(A2, sub, OutcomeStatus.DECLINED)
        result = await handle_outcomes([record], w.sink, now=later)
        assert (result.handled, result.declined) == (0, 0)
        [dead] = result.dead_letters
        assert dead.reason is RejectReason.UNKNOWN_TASK
        assert dead.message.endswith(f"report the outcome for task_id {A1}, the task as published")
        labels = {"moment_type": "unknown", "status": "declined"}
        assert w.sample("moments_task_outcomes_total", **labels) == 0
        # `moments tasks ack` refuses that id too, naming the task to ack
        if isinstance(w.ledger, TaskLedger):  # the command reads Redis
            for check in (subscriber_of(w.settings, A2), check_subscriber(w.settings, A2, sub)):
                with pytest.raises(AckError, match=f"merged into task {A1}, the one published"):
                    await check

    async def test_bad_outcome_is_a_dead_letter(self, make_worker: Callable[..., Worker]) -> None:
        w = make_worker()
        result = await handle_outcomes([RawRecord("o", 0, 0, b"1", b"{not json")], w.sink)
        assert result.handled == 0
        assert [d.reason.value for d in result.dead_letters] == ["invalid_json"]


class TestAnOutcomeIsCheckedAgainstTheClock:
    """An outcome's `occurred_at` is the consumer's clock: dated ahead of the worker's by
    more than an input event may be, it is a `future` dead letter, and a retry's time is
    the worker's. (Local time written with Z queued a retry 10 hours out; a 2099 outcome
    was counted; dispatch consumer review.)"""

    @pytest.mark.parametrize(
        "occurred_at",
        [NOW + 8 * HOUR, dt.datetime(2099, 1, 1, tzinfo=dt.UTC)],
        ids=["local-time-as-Z", "2099"],
    )
    async def test_an_outcome_dated_ahead_is_a_dead_letter(
        self, make_worker: Callable[..., Worker], occurred_at: dt.datetime
    ) -> None:
        w = make_worker(DispatchPolicy.model_validate({"merge": {"hold_channels": []}}))
        sub = "13200000031"
        await w.send(task(tid("t1"), sub=sub, moment_type="low_balance"))
        ahead = outcome(tid("t1"), sub, OutcomeStatus.UNREACHABLE).model_copy(
            update={"occurred_at": occurred_at}
        )
        record = RawRecord("outcomes", 0, 0, sub.encode(), ahead.model_dump_json().encode())
        result = await handle_outcomes([record], w.sink, now=NOW)
        assert (result.handled, result.retries) == (0, [])
        [dead] = result.dead_letters
        assert dead.reason is RejectReason.FUTURE
        assert "ahead of the worker's clock" in dead.message
        assert "at most 900 s" in dead.message
        labels = {"moment_type": "low_balance", "status": "unreachable"}
        assert w.sample("moments_task_outcomes_total", **labels) == 0

    async def test_the_tolerance_is_the_one_input_events_have(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """`ahead_s` is what the worker passes: `allowed_ahead(MOMENTS_LATENESS_SECONDS)`."""
        w = make_worker()
        sub = "13200000032"
        await w.send(task(tid("t2"), sub=sub))
        record = record_of(tid("t2"), sub, OutcomeStatus.ACCEPTED)
        result = await handle_outcomes([record], w.sink, now=NOW - HOUR / 6, ahead_s=60)
        assert [d.reason for d in result.dead_letters] == [RejectReason.FUTURE]
        assert (await handle_outcomes([record], w.sink, now=NOW - HOUR / 6)).handled == 1

    async def test_a_retry_waits_from_the_workers_clock(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """Ten minutes ahead is within the tolerance: taken, and its retry is due two hours
        after the worker read it, not two hours after the time it names."""
        policy = {"merge": {"hold_channels": []}, "outcomes": {"unreachable_retry_after": "2h"}}
        w = make_worker(DispatchPolicy.model_validate(policy))
        sub = "13200000033"
        call = tid("t3")
        await w.send(task(call, sub=sub, channel=Channel.OUTBOUND_CALL))
        ahead = outcome(call, sub, OutcomeStatus.UNREACHABLE).model_copy(
            update={"occurred_at": NOW + HOUR / 6}
        )
        record = RawRecord("outcomes", 0, 0, sub.encode(), ahead.model_dump_json().encode())
        result = await handle_outcomes([record], w.sink, now=NOW)
        assert result.retries == [retry_id(call, 1)]
        assert await w.sink.deferral.due_at(retry_id(call, 1)) == (NOW + 2 * HOUR).timestamp()

    @pytest.mark.parametrize(
        ("late", "due_in"),
        [(HOUR + HOUR / 2, HOUR / 2), (3 * HOUR, dt.timedelta(0))],
        ids=["read-90-min-late", "read-after-the-wait"],
    )
    async def test_a_retry_of_an_outcome_read_late_counts_from_the_attempt(
        self, make_worker: Callable[..., Worker], late: dt.timedelta, due_in: dt.timedelta
    ) -> None:
        """The unanswered call was at `NOW - late`, its outcome read at NOW (consumer lag,
        a backlog): the 2-hour retry is due two hours after the call, at once when that
        has passed, not two hours after the outcome was read."""
        policy = {"merge": {"hold_channels": []}, "outcomes": {"unreachable_retry_after": "2h"}}
        w = make_worker(DispatchPolicy.model_validate(policy))
        sub = "13200000034"
        call = tid(f"t4-{late}")
        went_out = NOW - late - HOUR / 6  # published before the call was made
        await w.send(
            task(
                call,
                sub=sub,
                channel=Channel.OUTBOUND_CALL,
                triggered=went_out,
                deliver_after=went_out,
            )
        )
        behind = outcome(call, sub, OutcomeStatus.UNREACHABLE).model_copy(
            update={"occurred_at": NOW - late}
        )
        record = RawRecord("outcomes", 0, 0, sub.encode(), behind.model_dump_json().encode())
        result = await handle_outcomes([record], w.sink, now=NOW)
        retry = retry_id(call, 1)
        assert result.retries == [retry]
        if due_in:
            assert await w.sink.deferral.due_at(retry) == (NOW + due_in).timestamp()
        else:
            assert await w.ledger.state(retry) == "sent"
            [_, out] = await published(w.settings, 2)
            assert out["task_id"] == retry
            assert dt.datetime.fromisoformat(out["deliver_after"]) == NOW


WEEK_CAP = FrequencyCap(max_contacts=3, period="7d")
"""The default catalog's cap: 3 contacts a week on calls, manager tasks and SMS."""


def capped(cap: str, **outcomes: Any) -> tuple[DispatchPolicy, FrequencyCap | None]:
    """A policy sending every task when due, with the rule set's frequency cap or the
    dispatch policy's contact cap at 3 a week."""
    policy: dict[str, Any] = {"merge": {"hold_channels": []}, "outcomes": outcomes}
    if cap == "contact_cap":
        policy["contact"] = {"max_contacts": 3, "period": "7d"}
    return DispatchPolicy.model_validate(policy), WEEK_CAP if cap == "frequency_cap" else None


@pytest.mark.parametrize("cap", ["frequency_cap", "contact_cap"])
class TestAnAttemptThatReachedNoOneGivesItsContactBack:
    """Caps count contacts really made: an `unreachable` or `failed` attempt gives back
    the contact its task took. (Two SMS and an unanswered call filled a week's cap of 3,
    and the call's retry was dropped `frequency_cap` without a word to the dialer;
    dispatch consumer review.)"""

    async def test_the_retry_of_an_unreachable_call_is_made(
        self, make_worker: Callable[..., Worker], cap: str
    ) -> None:
        policy, frequency = capped(cap, unreachable_retry_after="2h", max_retries=1)
        w = make_worker(policy, frequency_cap=frequency)
        sub = "13200000021"
        call = tid("c1")
        await w.send(
            task(tid("s1"), sub=sub, moment_type="a"),
            task(tid("s2"), sub=sub, moment_type="b"),
            task(call, sub=sub, moment_type="c", channel=Channel.OUTBOUND_CALL),
        )
        assert await w.ledger.state(call) == "sent"
        record = record_of(call, sub, OutcomeStatus.UNREACHABLE)
        for _ in range(2):  # read again after a restart: the same one contact back
            assert (await handle_outcomes([record], w.sink, now=NOW)).retries == [retry_id(call, 1)]
        assert await w.sink.release_due(now=(NOW + 2 * HOUR + HOUR / 60).timestamp()) == 1
        assert await w.ledger.state(retry_id(call, 1)) == "sent"
        assert w.sample("moments_tasks_suppressed_total", moment_type="c", reason=cap) == 0

    async def test_a_failed_attempt_frees_its_contact_once(
        self, make_worker: Callable[..., Worker], cap: str
    ) -> None:
        policy, frequency = capped(cap)
        w = make_worker(policy, frequency_cap=frequency)
        sub = "13200000022"
        first = [tid(f"f{i}") for i in range(3)]
        await w.send(*(task(i, sub=sub, moment_type=i) for i in first))
        record = record_of(first[0], sub, OutcomeStatus.FAILED)
        await handle_outcomes([record, record], w.sink, now=NOW)
        await handle_outcomes([record], w.sink, now=NOW)
        later = [tid("f3"), tid("f4")]
        await w.send(*(task(i, sub=sub, moment_type=i) for i in later))
        # (over the cap, a task that cannot wait a week is dropped)
        assert [await w.ledger.state(i) for i in later] == ["sent", "dropped"]
        assert w.sample("moments_tasks_suppressed_total", moment_type=later[1], reason=cap) == 1

    async def test_a_reached_customer_keeps_the_contact(
        self, make_worker: Callable[..., Worker], cap: str
    ) -> None:
        policy, frequency = capped(cap)
        w = make_worker(policy, frequency_cap=frequency)
        sub = "13200000023"
        first = [tid(f"k{i}") for i in range(3)]
        await w.send(*(task(i, sub=sub, moment_type=i) for i in first))
        await handle_outcomes(
            [record_of(first[0], sub, OutcomeStatus.DONE_NO_CHANGE)], w.sink, now=NOW
        )
        await w.send(task(tid("k3"), sub=sub, moment_type="k3"))
        assert await w.ledger.state(tid("k3")) == "dropped"
        assert w.sample("moments_tasks_suppressed_total", moment_type="k3", reason=cap) == 1

    async def test_a_contact_given_back_is_counted_again_when_the_customer_was_reached(
        self, make_worker: Callable[..., Worker], cap: str
    ) -> None:
        """`failed` read first gave the contact back; `done_no_change` after it says it was
        made: counted again (once, read again after a restart), and the cap is full."""
        policy, frequency = capped(cap)
        w = make_worker(policy, frequency_cap=frequency)
        sub = "13200000024"
        first = [tid(f"r{i}") for i in range(3)]
        await w.send(*(task(i, sub=sub, moment_type=i) for i in first))
        failed = record_of(first[0], sub, OutcomeStatus.FAILED)
        done = record_of(first[0], sub, OutcomeStatus.DONE_NO_CHANGE)
        for _ in range(2):
            await handle_outcomes([failed], w.sink, now=NOW)
            await handle_outcomes([done], w.sink, now=NOW)
        await w.send(task(tid("r3"), sub=sub, moment_type="r3"))
        assert await w.ledger.state(tid("r3")) == "dropped"
        assert w.sample("moments_tasks_suppressed_total", moment_type="r3", reason=cap) == 1


@pytest.mark.redis_only
class TestAckCommand:
    """`moments tasks ack` finds the subscriber of a sent task and writes the outcome."""

    async def test_ack_writes_an_outcome(self, make_worker: Callable[..., Worker]) -> None:
        w = make_worker()
        await w.send(task(A1, sub="13200000009"))
        proc = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "moments",
                "tasks",
                "ack",
                A1,
                "--status",
                "done_no_change",
                "--note",
                "called, all fine",
            ],
            env=settings_env(w.settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        [record] = await outcomes_from_topic(w.settings, 1)
        assert record.key == b"13200000009"
        written: dict[str, Any] = TaskOutcome.model_validate_json(record.value or b"").model_dump()
        assert (written["task_id"], written["status"], written["note"]) == (
            A1,
            OutcomeStatus.DONE_NO_CHANGE,
            "called, all fine",
        )

    def ack(self, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "moments", "tasks", "ack", *args],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def test_another_subscriber_than_the_tasks_is_refused(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """It exited 0, and the worker made the outcome a `subscriber_mismatch` dead letter
        (dispatch consumer review)."""
        w = make_worker()
        await w.send(task(tid("k1"), sub="13200000041"))
        args = [tid("k1"), "--status", "accepted", "--subscriber", "13200000042"]
        proc = await asyncio.to_thread(self.ack, w.settings, *args)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip() == (
            f"moments: task {tid('k1')} is subscriber 132****0041's, not 132****0042's: the "
            "worker would refuse this outcome (subscriber_mismatch); leave out --subscriber "
            "(the task's is looked up) or pass the task's"
        )
        ok = await asyncio.to_thread(
            self.ack, w.settings, tid("k1"), "--status", "accepted", "--subscriber", "13200000041"
        )
        assert (ok.returncode, ok.stderr) == (0, "")

    async def test_a_task_the_ledger_never_had_is_a_warning(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        w = make_worker()
        args = [tid("k2"), "--status", "accepted", "--subscriber", "13200000043"]
        proc = await asyncio.to_thread(self.ack, w.settings, *args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.startswith(f"moments: warning: task {tid('k2')} is not in the ledger")
        assert "(unknown_task)" in proc.stderr

    async def test_a_task_recorded_just_after_the_ack_asks_is_found(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """A task is on the topic a moment before it is recorded as sent; an ack that
        quick waits for the record (it said "unknown or expired")."""
        w = make_worker()

        async def send_later() -> None:
            await asyncio.sleep(0.5)
            await w.send(task(A2, sub="13200000008"))

        sender = asyncio.create_task(send_later())
        assert await subscriber_of(w.settings, A2) == "13200000008"
        await sender

    async def test_unknown_task_names_the_fix(self, make_worker: Callable[..., Worker]) -> None:
        w = make_worker()
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "moments", "tasks", "ack", tid("nope"), "--status", "accepted"],
            env=settings_env(w.settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1
        # --subscriber would only make it an unknown_task dead letter (new user's walk)
        assert f"task {tid('nope')} is not in the ledger" in proc.stderr
        assert "never published it" in proc.stderr
        assert "--subscriber" not in proc.stderr

    async def test_a_task_dropped_unsent_is_not_called_expired(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """A task id dispatch dropped (`X<reason>`), not recorded as sent: it was told its
        payload "expired" (a day after its expires_at, or erased), where it was never
        recorded as sent: most likely a wrong id."""
        w = make_worker()
        assert isinstance(w.ledger, TaskLedger)  # the class is redis_only
        await w.ledger.redis.set(w.ledger.key(A2), b"Xfrequency_cap")
        with pytest.raises(AckError) as refused:
            await subscriber_of(w.settings, A2, wait_s=0)
        said = str(refused.value)
        assert said.startswith(f"task {A2} was dropped by dispatch (frequency_cap) ")
        assert "expired" not in said

    async def test_a_task_waiting_in_the_queue_is_not_called_expired(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """A task id waiting in the deferral queue (`D<payload>`): the command waited, then
        said its payload "expired" (a day after its expires_at, or erased), where the
        ledger holds it whole, never recorded as sent."""
        w = make_worker()
        assert isinstance(w.ledger, TaskLedger)  # the class is redis_only
        waiting = task(A2, sub="13200000011", deliver_after=NOW + HOUR, deferred="quiet_hours")
        await w.send(waiting)
        assert await w.ledger.state(A2) == "deferred"
        with pytest.raises(AckError) as refused:
            await subscriber_of(w.settings, A2, wait_s=0)
        said = str(refused.value)
        assert said.startswith(f"task {A2} is waiting in the deferral queue, not published ")
        assert "expired" not in said
        assert "pass --subscriber MSISDN to ack it anyway" in said

    @pytest.mark.parametrize("entry", ["waiting", "dropped"])
    async def test_a_task_not_published_is_refused_at_once(
        self, make_worker: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch, entry: str
    ) -> None:
        """An entry that says the task was not published (`D<payload>` with no
        `redriven:<id>`, `X<reason>`) does not become a published one by waiting: the
        command read it again every 0.1 s for its whole wait (3 s) before refusing it. It
        refuses at once, its message the same, naming the fix (`--subscriber`)."""
        w = make_worker()
        assert isinstance(w.ledger, TaskLedger)  # the class is redis_only
        if entry == "waiting":
            later = NOW + HOUR
            await w.send(task(A2, sub="13200000012", deliver_after=later, deferred="quiet_hours"))
            assert await w.ledger.state(A2) == "deferred"
        else:
            await w.ledger.redis.set(w.ledger.key(A2), b"Xfrequency_cap")

        async def no_wait(seconds: float) -> None:
            raise AssertionError(f"waited {seconds} s for a task whose entry says why not")

        # The command's own asyncio only (the broker's and Redis's clients keep theirs).
        monkeypatch.setattr("moments.ack.asyncio", SimpleNamespace(sleep=no_wait))
        with pytest.raises(AckError) as refused:
            await subscriber_of(w.settings, A2, wait_s=60)
        said = str(refused.value)
        opening = "is waiting in the deferral queue" if entry == "waiting" else "was dropped"
        assert said.startswith(f"task {A2} {opening}")
        assert "pass --subscriber MSISDN to ack it anyway" in said

    async def test_a_task_whose_payload_expired_names_subscriber_as_the_fix(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """The ledger keeps a task id 400 days, its payload (with the subscriber) a day
        past its expiry: after that, --subscriber is the way to ack it."""
        w = make_worker()
        assert isinstance(w.ledger, TaskLedger)  # the class is redis_only
        await w.send(task(A2, sub="13200000009"))
        assert await subscriber_of(w.settings, A2) == "13200000009"
        await w.ledger.redis.delete(w.ledger.body_key(A2))  # what its expiry does
        with pytest.raises(AckError, match=f"task {A2} expired: ") as refused:
            await subscriber_of(w.settings, A2, wait_s=0)
        assert "pass --subscriber MSISDN to ack it anyway" in str(refused.value)

    async def test_a_task_sent_but_not_confirmed_is_acked_for_its_subscriber(
        self, make_worker: Callable[..., Worker]
    ) -> None:
        """Its worker died after the broker's ack, before the confirm that keeps the body:
        the task was on the topic, and the worker now acts on its outcome (the task as its
        pending entry holds it), but the command waited, then said the task "expired" and
        to pass --subscriber, and a --subscriber not the task's was let through, for the
        worker to refuse (subscriber_mismatch)."""
        w = make_worker()
        dying = make_worker()
        dying.sink.stores = stores = crashing(dying.sink.stores, "ledger", "confirm")
        dying.sink.ledger = stores.ledger
        with pytest.raises(CrashError):
            await dying.send(task(A2, sub="13200000010"))
        assert await w.ledger.state(A2) == "pending"
        assert await subscriber_of(w.settings, A2, wait_s=0) == "13200000010"
        with pytest.raises(AckError, match="subscriber_mismatch"):
            await check_subscriber(w.settings, A2, "13200000011")
        assert await check_subscriber(w.settings, A2, "13200000010") is None
