"""`moments_tasks_overflow_total{moment_type,policy}` counts what capacity's overflow did
with a moment its channel had no room for: moved it to its rule's fallback channel
(`fallback`), kept it for the next day (`defer`) or dropped it (`drop`). A fallback the
customer opted out of is no fallback: the moment waits or is dropped, and was counted as
`fallback` all the same (docs/operations.md, the metrics table)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping

import orjson

from moments.backtest import CollectingProducer, EventTime
from moments.models import Channel, ProfileEvent, ServiceTask
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from tests.integration.dispatch.conftest import task

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
AT = dt.datetime(2026, 11, 2, 10, 30, tzinfo=SHANGHAI)
OUT, STAYS = "13800138001", "13800138002"
FALLBACK = {"callback": {"policy": "fallback", "channel": "sms"}}
DEFER = {"callback": {"policy": "defer"}}


def calls_full(overflow: Mapping[str, object]) -> DispatchPolicy:
    """No call capacity at all; `overflow` per rule id."""
    return DispatchPolicy.model_validate(
        {
            "timezone": "Asia/Shanghai",
            "capacity": {"*": {"outbound_call": 0}},
            "reserved_share": 0,
            "overflow": overflow,
            "merge": {"hold_channels": []},
        }
    )


def call(sub: str, worth: dt.timedelta) -> ServiceTask:
    return task(
        f"c-{sub}",
        sub,
        moment_type="callback",
        channel=Channel.OUTBOUND_CALL,
        triggered=AT,
        deliver_after=AT,
        expires_at=AT + worth,
    )


def overflow(
    tasks: list[ServiceTask], policy: DispatchPolicy | None = None
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """The tasks dispatched at `AT`, the customer `OUT` opted out of SMS: the overflow
    count by policy, and what was published (task id, channel)."""
    clock = EventTime(int(AT.timestamp()))
    producer = CollectingProducer(clock)
    metrics = Metrics()
    sink = TaskSink(
        producer,
        "moments.tasks",
        memory_stores(clock),
        metrics,
        policy or calls_full(FALLBACK),
        clock,
    )
    opted = ProfileEvent(
        event_id="p-out",
        subscriber_id=OUT,
        occurred_at=AT - dt.timedelta(hours=1),
        opt_out=["sms"],
    )

    async def go() -> None:
        await sink.subscribers.record_facts([opted])
        await sink.dispatch(tasks)

    asyncio.run(go())
    counts = {
        applied: metrics.registry.get_sample_value(
            "moments_tasks_overflow_total", {"moment_type": "callback", "policy": applied}
        )
        or 0.0
        for applied in ("fallback", "defer", "drop")
    }
    sent = [
        (t["task_id"], t["channel"]) for t in map(orjson.loads, (s.payload for s in producer.sent))
    ]
    return {k: v for k, v in counts.items() if v}, sent


class TestOverflowOfAnOptedOutFallback:
    def test_one_that_falls_back_is_counted_as_fallback(self) -> None:
        counts, sent = overflow([call(STAYS, dt.timedelta(hours=2))])
        assert counts == {"fallback": 1}
        assert sent == [(f"c-{STAYS}", "sms")]

    def test_one_dropped_for_the_opt_out_is_counted_as_drop(self) -> None:
        """The SMS fallback is not the opted-out customer's, and the next day comes after
        the call expires: dropped (`suppressed{reason="capacity"}`), no fallback."""
        counts, sent = overflow([call(OUT, dt.timedelta(hours=2))])
        assert counts == {"drop": 1}
        assert sent == []

    def test_one_that_waits_for_the_next_day_is_counted_as_defer(self) -> None:
        counts, sent = overflow([call(OUT, dt.timedelta(days=3))])
        assert counts == {"defer": 1}
        assert sent == []

    def test_each_counted_as_what_became_of_it(self) -> None:
        counts, _ = overflow([call(OUT, dt.timedelta(hours=2)), call(STAYS, dt.timedelta(hours=2))])
        assert counts == {"fallback": 1, "drop": 1}


class TestOverflowOfADeferral:
    def test_one_whose_wait_outlasts_it_is_counted_as_drop(self) -> None:
        """`defer` to the next day, which comes after the call expires: dropped."""
        counts, _ = overflow([call(STAYS, dt.timedelta(hours=2))], calls_full(DEFER))
        assert counts == {"drop": 1}

    def test_one_that_waits_is_counted_as_defer(self) -> None:
        counts, _ = overflow([call(STAYS, dt.timedelta(days=3))], calls_full(DEFER))
        assert counts == {"defer": 1}


def both_full(overflow: Mapping[str, object]) -> DispatchPolicy:
    """No call capacity and no SMS capacity; `overflow` per rule id."""
    return DispatchPolicy.model_validate(
        {
            "timezone": "Asia/Shanghai",
            "capacity": {"*": {"outbound_call": 0, "sms": 0}},
            "reserved_share": 0,
            "overflow": overflow,
            "merge": {"hold_channels": []},
        }
    )


class TestOverflowOfARefusedFallback:
    """A moment moved to its fallback channel that is refused there too never went out
    on it: counted as what became of it, not `fallback` (it was)."""

    def test_one_whose_fallback_is_full_and_that_expires_first_is_counted_as_drop(self) -> None:
        counts, sent = overflow([call(STAYS, dt.timedelta(hours=2))], both_full(FALLBACK))
        assert counts == {"drop": 1}
        assert sent == []

    def test_one_whose_fallback_is_full_that_waits_is_counted_as_defer(self) -> None:
        counts, sent = overflow([call(STAYS, dt.timedelta(days=3))], both_full(FALLBACK))
        assert counts == {"defer": 1}
        assert sent == []

    def test_one_whose_fallback_is_not_worked_yet_is_counted_as_defer(self) -> None:
        """SMS worked from 12:00: at 10:30 the moment waits for it (and its release judges
        its own channel again, counting what becomes of it then)."""
        policy = DispatchPolicy.model_validate(
            {
                "timezone": "Asia/Shanghai",
                "capacity": {"*": {"outbound_call": 0}},
                "reserved_share": 0,
                "overflow": FALLBACK,
                "merge": {"hold_channels": []},
                "hours": {"sms": "12:00-20:00"},
            }
        )
        counts, sent = overflow([call(STAYS, dt.timedelta(hours=6))], policy)
        assert counts == {"defer": 1}
        assert sent == []
