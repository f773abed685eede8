"""Published tasks no outcome came back for (sinks.expiry `UnansweredExpiry.expire_unanswered`),
on the in-memory stores the backtest uses: the gauge by channel, an outcome taking a task
out, and the tasks that expire unanswered counted by channel and moment type once the
outcome grace is past. The Redis stores run the same scenario in
tests/integration/dispatch/test_unanswered.py."""

from __future__ import annotations

import datetime as dt
import logging

import orjson
import pytest
from redis.exceptions import ResponseError

import sinks.expiry
from moments.backtest import CollectingProducer, EventTime
from moments.models import Channel, Family, Moment, OutcomeStatus, ServiceTask, TaskOutcome
from moments.outcomes import handle_outcomes
from moments.records import RawRecord
from rules.gating import FrequencyCap
from sinks.dispatch import TaskSink
from sinks.ledger import Unanswered
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy, MergePolicy

START = dt.datetime(2026, 12, 5, 2, 0, tzinfo=dt.UTC)
HOUR = 3600.0
SUB = "13800138001"
SMS_1, SMS_2, CALL = "a" * 32, "b" * 32, "c" * 32


def task(task_id: str, channel: Channel, moment_type: str, expires_h: float) -> ServiceTask:
    return ServiceTask(
        task_id=task_id,
        subscriber_id=SUB,
        region="NJ",
        moment=Moment(
            family=Family.ANOMALY,
            type=moment_type,
            rule_id=moment_type,
            rule_version=1,
            description=f"{moment_type} moment",
        ),
        priority=3,
        channel=channel,
        action="act",
        triggered_at=START,
        created_at=START,
        deliver_after=START,
        expires_at=START + dt.timedelta(hours=expires_h),
        evidence=[f"ev-{task_id}"],
    )


def outcome_record(task_id: str, status: OutcomeStatus, at: dt.datetime) -> RawRecord:
    value = TaskOutcome(task_id=task_id, subscriber_id=SUB, status=status, occurred_at=at)
    return RawRecord("moments.task-outcomes", 0, 0, SUB.encode(), value.model_dump_json().encode())


class Scenario:
    def __init__(self) -> None:
        self.clock = EventTime(START.timestamp())
        self.metrics = Metrics()
        self.producer = CollectingProducer(self.clock)
        self.sink = TaskSink(
            self.producer,
            "moments.tasks",
            memory_stores(self.clock),
            self.metrics,
            DispatchPolicy(merge=MergePolicy(hold_channels=[])),  # every task goes now
            self.clock,
        )

    def capped(self, contact_cap: bool = True) -> None:
        """The sink again with the frequency cap on (3 contacts a week on calls, manager
        tasks and SMS) and, with `contact_cap`, the contact cap too (3 a week); every task
        still goes now."""
        policy = self.sink.policy
        if contact_cap:
            policy = DispatchPolicy.model_validate(
                {"merge": {"hold_channels": []}, "contact": {"max_contacts": 3, "period": "7d"}}
            )
        self.sink = TaskSink(
            self.producer,
            "moments.tasks",
            self.sink.stores,
            self.metrics,
            policy,
            self.clock,
            frequency_cap=lambda: FrequencyCap(max_contacts=3, period="7d"),
        )

    def at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    def gauge(self, channel: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "moments_tasks_unanswered", {"channel": channel}
        )

    def expired(self, channel: str, moment_type: str) -> float:
        labels = {"channel": channel, "moment_type": moment_type}
        found = self.metrics.registry.get_sample_value(
            "moments_tasks_unanswered_expired_total", labels
        )
        return found or 0.0


async def test_the_gauge_starts_at_zero_for_every_channel() -> None:
    s = Scenario()
    assert {c.value: s.gauge(c.value) for c in Channel} == {c.value: 0.0 for c in Channel}


async def test_published_tasks_wait_for_an_outcome_and_expire_unanswered_after_the_grace() -> None:
    s = Scenario()
    await s.sink.dispatch(
        [
            task(SMS_1, Channel.SMS, "low_balance", expires_h=2),
            task(SMS_2, Channel.SMS, "low_balance", expires_h=2),
            task(CALL, Channel.OUTBOUND_CALL, "bill_shock", expires_h=4),
        ]
    )
    assert len(s.producer.sent) == 3
    assert await s.sink.expiry.expire_unanswered() == 0
    assert (s.gauge("sms"), s.gauge("outbound_call"), s.gauge("manager")) == (2, 1, 0)
    meta = orjson.loads((await s.sink.ledger.sent_meta(SMS_1)) or b"{}")
    assert meta["sent_at"] == int(START.timestamp())

    # Any outcome answers a task, even one that changes nothing (in_progress).
    await handle_outcomes([outcome_record(SMS_1, OutcomeStatus.IN_PROGRESS, s.at())], s.sink)
    await s.sink.expiry.expire_unanswered()
    assert (s.gauge("sms"), s.gauge("outbound_call")) == (1, 1)

    # Expired, but within the grace (1 hour by default): an outcome may still come.
    s.clock.advance(START.timestamp() + 2 * HOUR + HOUR - 1)
    assert await s.sink.expiry.expire_unanswered() == 0
    assert s.gauge("sms") == 1
    s.clock.advance(START.timestamp() + 3 * HOUR + 1)
    assert await s.sink.expiry.expire_unanswered() == 1
    assert s.expired("sms", "low_balance") == 1
    assert s.expired("outbound_call", "bill_shock") == 0
    assert (s.gauge("sms"), s.gauge("outbound_call")) == (0, 1)

    # The call is answered late, after its expiry but within the grace: not counted.
    s.clock.advance(START.timestamp() + 4 * HOUR + 30 * 60)
    await handle_outcomes([outcome_record(CALL, OutcomeStatus.FAILED, s.at())], s.sink)
    s.clock.advance(START.timestamp() + 10 * HOUR)
    assert await s.sink.expiry.expire_unanswered() == 0
    assert s.expired("outbound_call", "bill_shock") == 0
    assert s.gauge("outbound_call") == 0
    # Counted once: a later tick finds nothing more.
    assert await s.sink.expiry.expire_unanswered() == 0
    assert s.expired("sms", "low_balance") == 1


async def test_the_grace_is_the_policys() -> None:
    s = Scenario()
    s.sink.use_policy(
        DispatchPolicy.model_validate(
            {"merge": {"hold_channels": []}, "outcomes": {"outcome_grace": "10m"}}
        )
    )
    await s.sink.dispatch([task(SMS_1, Channel.SMS, "low_balance", expires_h=1)])
    s.clock.advance(START.timestamp() + HOUR + 11 * 60)
    assert await s.sink.expiry.expire_unanswered() == 1
    assert s.expired("sms", "low_balance") == 1


async def test_the_timer_tick_sets_the_gauge() -> None:
    """`redrive` (the worker's timer, every worker) expires and counts as well."""
    s = Scenario()
    await s.sink.dispatch([task(SMS_1, Channel.SMS, "low_balance", expires_h=1)])
    await s.sink.redrive(30)
    assert s.gauge("sms") == 1
    s.clock.advance(START.timestamp() + 3 * HOUR)
    await s.sink.redrive(30)
    assert (s.gauge("sms"), s.expired("sms", "low_balance")) == (0, 1)


class TestPendingLines:
    """`moments tasks pending`'s lines (moments.pending): the subscriber masked, age and
    expiry readable."""

    def test_a_line_says_age_and_time_left_and_masks_the_subscriber(self) -> None:
        from moments.pending import PendingTask

        now = START.timestamp()
        t = PendingTask(SMS_1, "sms", "low_balance", "138****8001", now - 7500, now + 90)
        line = t.as_line(now)
        assert line.startswith(f"{SMS_1}  sms ")
        assert "138****8001" in line
        assert "age  2h05m" in line
        assert "expires in 1m (2026-12-05T02:01:30Z)" in line
        assert "expired 1h00m ago" in t.as_line(now + 3690)
        row = t.as_json(now)
        assert (row["age_seconds"], row["expired"]) == (7500, False)
        assert row["published_at"] == "2026-12-04T23:55:00Z"

    def test_the_summary_counts_by_channel(self) -> None:
        from moments.pending import PendingTask, summary

        now = START.timestamp()
        tasks = [
            PendingTask(SMS_1, "sms", "low_balance", "?", None, now - 1),
            PendingTask(SMS_2, "sms", "low_balance", "?", None, now + 1),
            PendingTask(CALL, "outbound_call", "bill_shock", "?", None, now + 1),
        ]
        assert summary(tasks, now).startswith(
            "3 task(s) waiting for an outcome (outbound_call 1, sms 2); 1 past their expiry"
        )
        assert "age      ?" in tasks[0].as_line(now)

    def test_none_old_enough_is_not_none_waiting(self) -> None:
        """The runbook's `--older-than 2h` with only younger tasks waiting said "no
        published task is waiting for an outcome", as if the consumer answered all."""
        from moments.pending import summary

        now = START.timestamp()
        said = summary([], now, 1000, held=3, older_than_s=7200)
        assert said == (
            "no task published 2h00m ago or earlier is waiting for an outcome; 3 younger "
            "(or of unknown age) are: run without --older-than to list them"
        )
        assert summary([], now, 1000, held=0, older_than_s=7200) == (
            "no published task is waiting for an outcome"
        )
        assert summary([], now, 1000, held=3) == "no published task is waiting for an outcome"


async def test_a_backlog_of_expired_tasks_is_counted_in_one_tick() -> None:
    """After a consumer's outage thousands expire at once: a tick counted 500 a channel,
    so the count (and the alert on it) trailed the backlog by hours."""
    s = Scenario()
    many = [task(f"{n:032x}", Channel.SMS, "low_balance", expires_h=1) for n in range(1, 1301)]
    await s.sink.dispatch(many)
    assert len(s.producer.sent) == 1300
    s.clock.advance(START.timestamp() + 3 * HOUR)  # expired, and the hour's grace past
    assert await s.sink.expiry.expire_unanswered() == 1300
    assert s.expired("sms", "low_balance") == 1300
    assert s.gauge("sms") == 0


def refusing_after(monkeypatch: pytest.MonkeyPatch, s: Scenario, calls: int) -> list[int]:
    """Make the ledger's `expire_unanswered` refuse (a Redis error no wait cures) after
    `calls` calls that go through; returns the count of calls made, as it grows."""
    ledger = s.sink.expiry.ledger
    real = ledger.expire_unanswered
    made = [0]

    async def expire(before: float, limit: int = 500) -> list[tuple[Unanswered, bytes | None]]:
        made[0] += 1
        if made[0] > calls:
            raise ResponseError("ERR Error running script: refused")
        return await real(before, limit)

    monkeypatch.setattr(ledger, "expire_unanswered", expire)
    return made


async def test_the_tasks_taken_before_a_failing_call_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three expired SMS taken one a call; the second call fails: the first one's task,
    out of the index, is counted (it was counted only after the last call: never). The
    next try takes and counts the other two."""
    monkeypatch.setattr(sinks.expiry, "EXPIRE_BATCH", 1)
    s = Scenario()
    await s.sink.dispatch([task(f"{n:032x}", Channel.SMS, "low_balance", 1) for n in (1, 2, 3)])
    s.clock.advance(START.timestamp() + 3 * HOUR)
    refusing_after(monkeypatch, s, 1)
    with pytest.raises(ResponseError):
        await s.sink.expiry.expire_unanswered()
    assert s.expired("sms", "low_balance") == 1
    monkeypatch.undo()
    assert await s.sink.expiry.expire_unanswered() == 2
    assert s.expired("sms", "low_balance") == 3


async def test_a_failing_expiry_step_is_counted_and_tried_again_without_stopping_the_worker(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expiry step only reads and writes Redis, and a task it does not take stays in
    the unanswered index: its error (a Redis refusal, a bug) is counted, logged and tried
    again after the step's back-off, and the timer raises nothing. Raised, it stopped the
    worker, at every start (the timer runs there), for a count and a gauge."""
    s = Scenario()
    await s.sink.dispatch([task(SMS_1, Channel.SMS, "low_balance", expires_h=1)])
    s.clock.advance(START.timestamp() + 3 * HOUR)
    made = refusing_after(monkeypatch, s, 0)
    with caplog.at_level(logging.ERROR, logger="sinks.steps"):
        await s.sink.redrive(30)
    errors = s.metrics.registry.get_sample_value("moments_timer_errors_total", {"step": "expiry"})
    assert errors == 1
    said = " ".join(r.getMessage() for r in caplog.records if r.name == "sinks.steps")
    assert "while expiring unanswered tasks" in said
    assert "stay in the unanswered index" in said
    await s.sink.redrive(30)  # within the back-off: not tried
    assert made == [1]
    monkeypatch.undo()
    s.clock.advance(START.timestamp() + 3 * HOUR + 11)
    await s.sink.redrive(30)
    assert s.expired("sms", "low_balance") == 1
    assert s.gauge("sms") == 0
