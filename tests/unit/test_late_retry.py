"""A retry of an unanswered call whose wait has passed when its `unreachable` is read (the
outcome read more than `unreachable_retry_after` late, or dated before the task went out)
goes at once (docs/consuming-tasks.md, "Reporting back": "an outcome it reads more than 2
hours late is retried at once"), as one that waited its 2 hours goes when they end.

Found walking as a dispatch consumer: such a retry came to dispatch as a fresh task and,
on a channel held for the merge window (calls and manager tasks by default), was held
another 30 minutes, `deferred` saying `merge_window`: a report read 2 h 1 min late was
called back 30 minutes later, one read 1 h 59 min late one minute later. On the
in-memory stores the backtest uses; seen on the real broker and Redis too."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from moments.backtest import CollectingProducer, EventTime
from moments.models import Channel, OutcomeStatus
from moments.outcomes import handle_outcomes, retry_id
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy

from .test_unanswered import CALL, SMS_1, START, outcome_record, task

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)


@pytest.mark.parametrize("late", [121 * MINUTE, 119 * MINUTE], ids=["2h01 late", "1h59 late"])
async def test_a_retry_goes_when_its_wait_ends_not_a_merge_window_later(
    late: dt.timedelta,
) -> None:
    clock = EventTime(START.timestamp())
    producer = CollectingProducer(clock)
    policy = DispatchPolicy()  # calls held 30 minutes for the merge window, retry after 2 h
    sink = TaskSink(producer, "moments.tasks", memory_stores(clock), Metrics(), policy, clock)
    await sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    clock.advance((START + 30 * MINUTE).timestamp())
    await sink.release_due()  # the call, after its merge window
    await sink.flush()
    (call,) = [orjson.loads(p.payload) for p in producer.sent]
    attempt = dt.datetime.fromisoformat(call["deliver_after"]) + MINUTE  # no answer
    read = attempt + late
    clock.advance(read.timestamp())
    unreachable = outcome_record(CALL, OutcomeStatus.UNREACHABLE, attempt)
    assert (await handle_outcomes([unreachable], sink, now=read)).retries == [retry_id(CALL, 1)]
    due = max(read, attempt + policy.outcomes.unreachable_retry_after)
    for step in range(0, 40, 1):  # the release ticks, a minute apart, for 40 minutes
        clock.advance((read + step * MINUTE).timestamp())
        await sink.release_due()
        await sink.flush()
    sent = [(p.at, orjson.loads(p.payload)) for p in producer.sent]
    ((at, retry),) = [(at, t) for at, t in sent if t["attempt"] == 1]
    assert dt.datetime.fromtimestamp(at, dt.UTC) <= due + MINUTE  # at its next tick at most
    assert retry["deferred"]["reason"] == "unreachable_retry"
    assert dt.datetime.fromisoformat(retry["deliver_after"]) == due


async def test_a_late_retry_does_not_wait_for_another_task_of_the_customer() -> None:
    """The late-read retry of a call goes at once though the customer has an SMS waiting
    10 hours: it is not held for the merge window, so it joins no task due more than a
    window after it (`TimeGates.join_bounds`). Taken for held, it joined that SMS and was
    called back 10 hours later."""
    clock = EventTime(START.timestamp())
    producer = CollectingProducer(clock)
    sink = TaskSink(
        producer, "moments.tasks", memory_stores(clock), Metrics(), DispatchPolicy(), clock
    )
    await sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 24)])
    clock.advance((START + 30 * MINUTE).timestamp())
    await sink.release_due()
    await sink.flush()
    (call,) = [orjson.loads(p.payload) for p in producer.sent]
    attempt = dt.datetime.fromisoformat(call["deliver_after"]) + MINUTE
    read = attempt + 121 * MINUTE
    clock.advance(read.timestamp())
    sms = task(SMS_1, Channel.SMS, "low_balance", 24).model_copy(
        update={"triggered_at": read, "created_at": read, "deliver_after": read + 10 * HOUR}
    )
    await sink.dispatch([sms])
    unreachable = outcome_record(CALL, OutcomeStatus.UNREACHABLE, attempt)
    assert (await handle_outcomes([unreachable], sink, now=read)).retries == [retry_id(CALL, 1)]
    await sink.release_due()
    await sink.flush()
    sent = [(at, t) for at, t in ((p.at, orjson.loads(p.payload)) for p in producer.sent)]
    ((at, retry),) = [(at, t) for at, t in sent if t["attempt"] == 1]
    assert (at, retry["task_id"], retry["channel"]) == (
        read.timestamp(),
        retry_id(CALL, 1),
        "outbound_call",
    )
