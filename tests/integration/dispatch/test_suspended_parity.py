"""A differential run of suspended lines: the same random operations (moments held for
the line or not, profile updates saying active or suspended, some dated before the
moments they follow, release ticks early and late) through a sink on Redis and one on
the memory stores the backtest uses. After every step both must have sent the same
tasks and hold each task in the same state, due at the same time: the park script's
reading of the line's facts (`_PARK`) and `MemoryDeferrals.park_many` agree, and so do
the wake, the merge group a look keeps open and the last look."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from moments.backtest import CollectingProducer
from moments.models import Channel, Deferral, Family, Moment, ProfileEvent, ServiceTask
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, redis_stores
from tests.unit.fakes import Clock

pytestmark = pytest.mark.integration

SUBS = ("13400000001", "13400000002")
CHANNELS = (Channel.SMS, Channel.APP_PUSH, Channel.OUTBOUND_CALL)


def moment_task(n: int, sub: str, at: float, rng: random.Random, held: bool) -> ServiceTask:
    when = dt.datetime.fromtimestamp(at, dt.UTC)
    life = dt.timedelta(hours=rng.choice([1, 3, 30]))
    kind = f"m{n % 3}"
    return ServiceTask(
        task_id=f"t{n}",
        subscriber_id=sub,
        moment=Moment(
            family=Family.FIRST_TIME, type=kind, rule_id=kind, rule_version=1, description="d"
        ),
        priority=rng.choice([1, 3, 5]),
        channel=rng.choice(CHANNELS),
        action="act",
        triggered_at=when,
        created_at=when,
        deliver_after=when,
        expires_at=when + life,
        evidence=[f"e{n}"],
        deferred=Deferral(reason="suspended", until=when + life) if held else None,
    )


class Side:
    def __init__(self, stores: DispatchStores, clock: Clock) -> None:
        self.stores = stores
        self.producer = CollectingProducer(clock)
        self.sink = TaskSink(
            self.producer, "tasks", stores, Metrics(), DispatchPolicy(), clock=clock
        )

    async def seen(self, ids: list[str]) -> list[tuple[str, str | None, float | None]]:
        ledger, deferral = self.stores.ledger, self.stores.deferral
        return [(i, await ledger.state(i), await deferral.due_at(i)) for i in ids]

    def sent(self) -> list[tuple[str, list[str], str | None]]:
        out = []
        for p in self.producer.sent:
            t = json.loads(p.payload)
            related = sorted(r["task_id"] for r in t["related"] or [])
            out.append((t["task_id"], related, (t["deferred"] or {}).get("reason")))
        return sorted(out)


async def moved_on(client: Redis, side: Side, seconds: int) -> None:
    """Redis's merge groups (`open:<subscriber>`, PX) as if its clock had moved on with
    the test's, as the memory store's do: the windows are whole seconds here, so the
    few milliseconds the test took are rounded away."""
    deferral = side.stores.deferral
    for sub in SUBS:
        key = deferral.open_key(sub)  # type: ignore[attr-defined]
        left = await client.pttl(key)
        if left < 0:
            continue
        if round(left / 1000) <= seconds:
            await client.delete(key)
        else:
            await client.pexpire(key, (round(left / 1000) - seconds) * 1000)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.mark.parametrize("seed", range(12))
async def test_redis_and_memory_agree_on_suspended_lines(redis_client: Redis, seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock(float(int(time.time())))
    mem = Side(memory_stores(clock, ttl_seconds=864000), clock)
    red = Side(redis_stores(TaskLedger(redis_client, f"test:{uuid4().hex[:8]}:", 864000)), clock)
    ids: list[str] = []
    for step in range(60):
        op = rng.random()
        sub = rng.choice(SUBS)
        if op < 0.35:
            t = moment_task(step, sub, clock.now - rng.choice([0, 0, 30]), rng, rng.random() < 0.7)
            ids.append(t.task_id)
            for side in (mem, red):
                side.sink.add(t)
                await side.sink.flush()
        elif op < 0.55:
            status = rng.choice(["active", "active", "suspended"])
            at = clock.now - rng.choice([0, 0, 45, 3600])  # some read late
            update = ProfileEvent(
                event_id=f"p{step}",
                subscriber_id=sub,
                occurred_at=dt.datetime.fromtimestamp(at, dt.UTC),
                status=status,
            )
            for side in (mem, red):
                await side.sink.subscribers.record_facts([update])
        else:
            step_s = rng.choice([1, 10, 600, 1800, 3600, 3605, 7200])
            clock.now += step_s
            await moved_on(redis_client, red, step_s)
            for side in (mem, red):
                await side.sink.release_due()
        # A dropped entry is kept until the task would have expired: by the memory
        # ledger's clock (moved on here), by Redis's own (not)
        gone = [
            (i, "dropped" if state is None else state, due) for i, state, due in await mem.seen(ids)
        ]
        assert await red.seen(ids) == gone, (seed, step)
        assert red.sent() == mem.sent(), (seed, step)
