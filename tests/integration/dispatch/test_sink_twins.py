"""The dispatch sink's decisions on the memory stores (the backtest's) and on Redis (the
stream's) over random batches and releases: the same tasks published, when and how, and
every ledger entry in the same state."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from moments.backtest import CollectingProducer, EventTime
from moments.models import Channel, ProfileEvent, ServiceTask
from rules.gating import FrequencyCap
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, redis_stores

from .conftest import task

pytestmark = pytest.mark.integration

SUBS = ["13800000001", "13800000002", "13800000003"]


def policies(start: float) -> list[dict[str, Any]]:
    """The dispatch policies a run starts with or reloads, their hours and days set from the
    run's `start`."""
    at = dt.datetime.fromtimestamp(start, dt.UTC)
    opens = (at + dt.timedelta(minutes=10)).replace(second=0)
    hours = f"{opens:%H:%M}-{opens + dt.timedelta(hours=8):%H:%M}"
    return [
        {"timezone": "UTC", "hours": {"outbound_call": hours, "manager": hours}},
        {
            "timezone": "UTC",
            "hours": {"outbound_call": hours},
            "closed_days": {"manager": [at.date().isoformat()]},
            "overflow": {"care": {"policy": "fallback", "channel": "sms"}},
        },
        {
            "timezone": "UTC",
            "closed_days": {"outbound_call": [(at + dt.timedelta(days=1)).date().isoformat()]},
            "capacity": {"*": {"outbound_call": 1}},
            "next_day_at": f"{at:%H:%M}",
        },
        {},
        {"merge": {"hold_channels": []}},
        {
            "capacity": {"*": {"outbound_call": 2, "sms": 2, "manager": 1}},
            "reserved_share": 0.5,
            "overflow": {"care": {"policy": "fallback", "channel": "sms"}, "*": {"policy": "drop"}},
        },
        {"contact": {"max_contacts": 1, "period": "1h"}, "merge": {"hold_channels": []}},
        {
            "capacity": {"*": {"outbound_call": 1}},
            "overflow": {"*": {"policy": "defer"}},
            "contact": {"max_contacts": 2, "period": "1h"},
        },
    ]


POLICY_COUNT = len(policies(0.0))

moments_ = st.tuples(
    st.sampled_from(SUBS),
    st.sampled_from([Channel.SMS, Channel.OUTBOUND_CALL, Channel.MANAGER]),
    st.integers(1, 5),
    st.sampled_from([0, 0, 60, 180]),  # deliver_after, seconds after the batch
    st.sampled_from(["care", "welcome", "low_balance"]),
)
caps = st.none() | st.sampled_from(
    [
        FrequencyCap(max_contacts=1, period="1h"),
        FrequencyCap(max_contacts=2, period="1d", reserved=1),
        FrequencyCap(max_contacts=3, period="1d", channels=(Channel.SMS,)),
    ]
)
"""The rule set's frequency cap (`gating.frequency_cap`), or none."""
steps = st.tuples(
    st.lists(moments_, max_size=4),
    st.integers(0, 300),
    st.none() | st.integers(0, POLICY_COUNT - 1),  # a policy reloaded before the release
    # a profile update before the release: its subscriber's opt-outs (the whole list)
    st.none()
    | st.tuples(
        st.sampled_from(SUBS),
        st.sampled_from([[], ["sms"], ["outbound_call"], ["sms", "manager"]]),
    ),
)


def made(n: int, at: float, spec: tuple[str, Channel, int, int, str]) -> ServiceTask:
    sub, channel, priority, later, rule = spec
    now = dt.datetime.fromtimestamp(at, dt.UTC)
    return task(
        f"t{n:03d}",
        sub,
        moment_type=rule,
        priority=priority,
        channel=channel,
        triggered=now,
        deliver_after=now + dt.timedelta(seconds=later),
        expires_at=now + dt.timedelta(days=1),
        deferred="quiet_hours" if later else None,
    )


async def run(
    make: Callable[[EventTime], DispatchStores],
    start: float,
    policy: int,
    plan: list[Any],
    cap: FrequencyCap | None,
) -> object:
    """The sink's clock starts at `start`, the wall clock when the example began, and moves
    on at most 25 minutes: the Redis stores' keys expire on Redis's clock (the merge group a
    park opens, for its 30-minute window) and the ledger reads the wall clock, so the memory
    stores' clock must keep near it. A `start` taken once at collection fell behind it over
    a long session or the examples' own minutes (flakes)."""
    chosen = policies(start)
    clock = EventTime(start)
    stores = make(clock)
    producer = CollectingProducer(clock)
    first = DispatchPolicy.model_validate(chosen[policy])
    sink = TaskSink(producer, "tasks", stores, Metrics(), first, clock, frequency_cap=lambda: cap)
    n = 0
    seen: list[object] = []
    for batch, wait, reload, opt_out in plan:
        tasks = []
        for spec in batch:
            tasks.append(made(n, clock(), spec))
            n += 1
        await sink.dispatch(tasks, from_engine=True)
        clock.advance(clock() + wait)
        if reload is not None:
            sink.use_policy(DispatchPolicy.model_validate(chosen[reload]))
        if opt_out is not None:
            sub, channels = opt_out
            at = dt.datetime.fromtimestamp(clock(), dt.UTC)
            await sink.subscribers.record_facts(
                [
                    ProfileEvent(
                        event_id=f"p{n}", subscriber_id=sub, occurred_at=at, opt_out=channels
                    )
                ]
            )
        await sink.release_due()
        seen.append(
            [
                (
                    s.at - start,
                    doc["task_id"],
                    doc["channel"],
                    doc["deliver_after"],
                    doc["deferred"],
                    sorted(r["task_id"] for r in doc["related"] or []),
                )
                for s in producer.sent
                for doc in [orjson.loads(s.payload)]
            ]
        )
        producer.sent.clear()
        entries = await stores.ledger.get_many([f"t{i:03d}" for i in range(n)])
        seen.append([(e or b"")[:1] for e in entries])
        seen.append(await stores.deferral.waiting())
    return seen


async def both(policy: int, plan: list[Any], cap: FrequencyCap | None, url: str) -> None:
    start = float(int(time.time()))
    client = Redis.from_url(url)
    try:
        redis = redis_stores(TaskLedger(client, f"twin:{uuid4().hex[:8]}:", 86400))
        got = await run(lambda _: redis, start, policy, plan, cap)
        want = await run(
            lambda clock: memory_stores(clock, ttl_seconds=86400), start, policy, plan, cap
        )
        assert got == want
    finally:
        await client.aclose()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.integers(0, POLICY_COUNT - 1), st.lists(steps, min_size=1, max_size=5), caps)
def test_the_sink_decides_alike_on_both(
    redis_db: str, policy: int, plan: list[Any], cap: FrequencyCap | None
) -> None:
    asyncio.run(both(policy, plan, cap, redis_db))
