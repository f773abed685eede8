"""Channel hours (`hours:`) and capacity: a moment that capacity moves to another channel
(its rule's `fallback`, or the part of a merged group left when its lead's pool is full)
waits for that channel's hours too. `CapacityFitting.fit` (then `TaskSink._fit`) took the
other channel's capacity and published at once: a call at 08:30 to a centre that opens at
10:00 (recheck)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import orjson

from moments.backtest import CollectingProducer, EventTime
from moments.models import Channel, ServiceTask
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from tests.integration.dispatch.conftest import task

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
AT = dt.datetime(2026, 11, 2, 8, 30, tzinfo=SHANGHAI)
OPENS = AT.replace(hour=10, minute=0)  # the call centre's hours: 10:00-18:00
SUB = "13800138001"


def policy(**more: object) -> DispatchPolicy:
    return DispatchPolicy.model_validate(
        {
            "timezone": "Asia/Shanghai",
            "hours": {"outbound_call": "10:00-18:00"},
            "capacity": {"*": {"manager": 0}},
            **more,
        }
    )


def published(
    p: DispatchPolicy, batches: list[list[ServiceTask]], *releases: dt.datetime
) -> list[tuple[dt.datetime, dict[str, Any]]]:
    """Each batch dispatched at `AT`, then the queue released at each of `releases`: when
    each task went, and what."""
    clock = EventTime(int(AT.timestamp()))
    producer = CollectingProducer(clock)
    sink = TaskSink(producer, "moments.tasks", memory_stores(clock), Metrics(), p, clock)

    async def go() -> None:
        for batch in batches:
            await sink.dispatch(batch)
        for at in releases:
            clock.advance(at.timestamp())
            await sink.release_due()

    asyncio.run(go())
    return [
        (dt.datetime.fromtimestamp(s.at, SHANGHAI), orjson.loads(s.payload)) for s in producer.sent
    ]


def moment(name: str, rule: str, channel: Channel) -> ServiceTask:
    return task(
        name * 32,
        sub=SUB,
        moment_type=rule,
        channel=channel,
        triggered=AT,
        deliver_after=AT,
        expires_at=AT + dt.timedelta(days=1),
    )


def test_a_manager_task_falling_back_to_calls_waits_for_the_call_centre() -> None:
    p = policy(
        merge={"hold_channels": []},
        overflow={"care": {"policy": "fallback", "channel": "outbound_call"}},
    )
    [(at, out)] = published(p, [[moment("a", "care", Channel.MANAGER)]], OPENS)
    assert (at, out["channel"]) == (OPENS, "outbound_call")
    assert out["deferred"]["reason"] == "channel_hours"


def test_a_call_merged_into_a_manager_task_goes_alone_when_the_centre_opens() -> None:
    p = policy(
        merge={"window": "10m", "hold_channels": ["manager"]},
        overflow={"care": {"policy": "drop"}},
    )
    lead = moment("b", "care", Channel.MANAGER)
    joins = moment("c", "offer", Channel.OUTBOUND_CALL)
    window = AT + dt.timedelta(minutes=10)
    [(at, out)] = published(p, [[lead], [joins]], window, OPENS)
    assert (at, out["channel"], out["moment_id"]) == (OPENS, "outbound_call", joins.task_id)
