"""`merge: {window: 0s}` holds nothing: a call due now goes at once with `deferred` null,
as with `hold_channels: []` (docs/consuming-tasks.md: `deferred` is null for a task
published as soon as it was made).

Found walking as a dispatch consumer: with a window of 0 a call was parked "for the merge
window" until the same instant, went out at the next release tick, and said `deferred:
{reason: merge_window}` of a task that waited for nothing; its retry after a late
`unreachable` said `merge_window` instead of `unreachable_retry`."""

from __future__ import annotations

import datetime as dt

import orjson

from moments.backtest import CollectingProducer, EventTime
from moments.models import Channel
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy, MergePolicy

from .test_unanswered import CALL, SMS_1, START, task


async def test_a_window_of_zero_sends_a_call_at_once_undeferred() -> None:
    clock = EventTime(START.timestamp())
    producer = CollectingProducer(clock)
    policy = DispatchPolicy(merge=MergePolicy(window=dt.timedelta(0)))
    sink = TaskSink(producer, "moments.tasks", memory_stores(clock), Metrics(), policy, clock)
    await sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    await sink.flush()
    (sent,) = producer.sent
    assert sent.at == START.timestamp()
    assert orjson.loads(sent.payload)["deferred"] is None


async def test_a_window_of_zero_does_not_merge_a_call_into_a_task_waiting_hours() -> None:
    """A call due now does not join the customer's SMS waiting 10 hours: with nothing held,
    it may join one due within the window (0s) only, as with `hold_channels: []`. It joined
    it (bounded only for a channel not held), went out 10 hours late inside the SMS's task."""
    clock = EventTime(START.timestamp())
    producer = CollectingProducer(clock)
    policy = DispatchPolicy(merge=MergePolicy(window=dt.timedelta(0)))
    sink = TaskSink(producer, "moments.tasks", memory_stores(clock), Metrics(), policy, clock)
    later = task(SMS_1, Channel.SMS, "low_balance", 24).model_copy(
        update={"deliver_after": START + dt.timedelta(hours=10)}
    )
    await sink.dispatch([later])
    await sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 24)])
    await sink.flush()
    (sent,) = producer.sent
    call = orjson.loads(sent.payload)
    assert (sent.at, call["task_id"], call["deferred"]) == (START.timestamp(), CALL, None)


async def test_an_sms_due_now_joins_the_call_its_batch_holds_for_the_window() -> None:
    """A call and an SMS of one customer made in the same batch: the call is held for the
    merge window (until `now` + 30 min), and the SMS, due now, may join a task due within
    the window after now. The bound went through a datetime (microseconds), the call's
    release time did not: at a clock such as this one the bound came out under a
    microsecond before the call's release, and the SMS went out alone, a second contact
    (at about four clock readings in ten)."""
    clock = EventTime(START.timestamp() + 0.1343641)
    assert dt.datetime.fromtimestamp(clock(), dt.UTC).timestamp() < clock()  # rounds down
    producer = CollectingProducer(clock)
    policy = DispatchPolicy()  # calls held for the merge window
    sink = TaskSink(producer, "moments.tasks", memory_stores(clock), Metrics(), policy, clock)
    call = task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)
    await sink.dispatch([call, task(SMS_1, Channel.SMS, "low_balance", 12)])
    await sink.flush()
    assert producer.sent == []
    assert await sink.ledger.state(SMS_1) == "merged"
