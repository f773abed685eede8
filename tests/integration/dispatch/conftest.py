"""Shared by the dispatch tests: task factory, one worker's dispatch objects, fixtures.

Every scenario that takes `make_worker` runs twice: on the Redis stores the stream uses
and on the in-memory stores the backtest uses (`store_kind`), with the same `TaskSink`
and the same assertions; that is what makes the backtest's dispatch the stream's.
Scenarios about Redis itself are marked `redis_only`."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from moments.models import Channel, Deferral, Family, Moment, ServiceTask
from moments.settings import Settings
from rules.gating import FrequencyCap
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.legacy import TaskTtl, no_ttl
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from sinks.stores import Clock, DispatchStores, Ledger, Parking, redis_stores
from tests.integration.conftest import MakeSettings
from tests.integration.kafka_io import read_written, values
from tests.unit.fakes import Clock as FakeClock

if TYPE_CHECKING:  # annotations only: the tests also run against an older src
    from sinks.stores import Held

# `NOW`: the instant a test starts, to the second (`now_at_test_start` sets it, here and in
# every module of these tests, before the test's other fixtures). The sinks decide by the wall clock
# (or `pinned_clock`, standing at `NOW`), so a task dated from `NOW` is judged when its
# dates say. The value read at import only serves callers outside these tests (unit tests
# that borrow `task`). `MOMENTS_TEST_NOW_BACK_S`: seconds to date that import-time value
# back by, as if the tests ran that long after they were collected (`make test` runs for
# an hour and more): `MOMENTS_TEST_NOW_BACK_S=7200 pytest tests/integration/dispatch/...`
# checks that no test depends on how long after collection it runs.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(
    seconds=float(os.environ.get("MOMENTS_TEST_NOW_BACK_S", "0"))
)
HOUR = dt.timedelta(hours=1)


def task(
    task_id: str,
    sub: str = "13800138001",
    *,
    moment_type: str = "first_international_roaming",
    priority: int = 3,
    channel: Channel = Channel.SMS,
    region: str | None = "NJ",
    triggered: dt.datetime | None = None,
    deliver_after: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    deferred: str | None = None,
) -> ServiceTask:
    """A task made at `triggered` and due at `deliver_after` (both default: `NOW`, read
    when called, so at the calling test's start)."""
    triggered = triggered or NOW
    deliver_after = deliver_after or NOW
    return ServiceTask(
        task_id=task_id,
        subscriber_id=sub,
        region=region,
        moment=Moment(
            family=Family.ANOMALY,
            type=moment_type,
            rule_id=moment_type,
            rule_version=1,
            description=f"{moment_type} moment",
        ),
        priority=priority,
        channel=channel,
        action="act",
        triggered_at=triggered,
        created_at=triggered,
        deliver_after=deliver_after,
        expires_at=expires_at or triggered + dt.timedelta(days=3),
        evidence=[f"ev-{task_id}"],
        deferred=Deferral(reason=deferred, until=deliver_after) if deferred else None,
    )


class Worker:
    """One worker's dispatch objects: its own stores (a Redis connection, or the test's
    shared in-memory stores), producer and metrics."""

    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        stores: DispatchStores,
        policy: DispatchPolicy,
        frequency_cap: FrequencyCap | None = None,
        task_ttl: TaskTtl = no_ttl,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.ledger: Ledger = stores.ledger
        self.sink = TaskSink(
            producer,
            settings.topic("tasks"),
            stores,
            self.metrics,
            policy,
            frequency_cap=lambda: frequency_cap,
            task_ttl=task_ttl,
            clock=clock,
        )

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def send(self, *tasks: ServiceTask) -> None:
        for t in tasks:
            self.sink.add(t)
        await self.sink.flush()


MakeWorker = Callable[..., Worker]


def lose_claims_first_reply(w: Worker) -> list[bool]:
    """Make the sink's ledger claim run, then lose its first reply (a Redis connection
    error raised where the reply is awaited, after the script ran), as a socket timeout
    under load does; returns a list that holds True once a reply was lost."""
    real = w.sink.ledger.claim
    lost: list[bool] = []

    async def reply_lost(*args: Any, **kwargs: Any) -> Any:
        replies = await real(*args, **kwargs)
        if not lost:
            lost.append(True)
            raise RedisConnectionError("ledger.claim: reply lost")
        return replies

    w.sink.ledger.claim = reply_lost  # type: ignore[method-assign]
    return lost


@pytest.fixture(params=["redis", "memory"])
async def stores(request: pytest.FixtureRequest, redis_db: str) -> AsyncIterator[DispatchStores]:
    """One worker's dispatch stores, on Redis (its database emptied for the test) and in
    memory: a test taking `stores` runs on both."""
    if request.param == "memory":
        yield memory_stores()
        return
    client = Redis.from_url(redis_db)
    try:
        yield redis_stores(TaskLedger(client, "dispatch:", 3600))
    finally:
        await client.aclose()


@pytest.fixture
async def stack(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any], redis_url: str
) -> AsyncIterator[tuple[Settings, AIOKafkaProducer, list[Redis]]]:
    settings = make_settings()
    await topics_for(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    clients: list[Redis] = []
    yield settings, producer, clients
    await producer.stop()
    for client in clients:
        await client.aclose()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        redis_only = metafunc.definition.get_closest_marker("redis_only") is not None
        metafunc.parametrize("store_kind", ["redis"] if redis_only else ["redis", "memory"])


@pytest.fixture(autouse=True)
def now_at_test_start() -> Iterator[None]:
    """Sets `NOW` to this test's start, here and in every module of these tests
    (`from .conftest import NOW` copies it; a test may call another module's helpers,
    which read that module's): read once at collection, it was an hour or more before
    some tests ran, and a task dated from it was already due, or expired, on the sinks'
    wall clock. Autouse, it runs before the test's other fixtures (`pinned_clock` reads
    it). Its own patch, not the test's `monkeypatch`: a test's `monkeypatch.undo()`
    keeps it."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    modules = [m for n, m in sys.modules.items() if n.startswith(f"{__package__}.")]
    with pytest.MonkeyPatch.context() as patch:
        for module in modules:
            if hasattr(module, "NOW"):
                patch.setattr(module, "NOW", now)
        yield


@pytest.fixture
def sink_clock() -> Clock:
    """The clock the sinks decide by: the wall clock. A module whose assertions name
    today's date overrides it with a clock pinned at its test's start (`pinned_clock`)."""
    return time.time


def pinned_clock() -> FakeClock:
    """A clock standing at the test's `NOW` until the test moves it: a sink on the wall
    clock that passed midnight UTC since the test started judged the day after the one
    the test's dates name (and `make test` runs at any hour)."""
    return FakeClock(NOW.timestamp())


@pytest.fixture
def make_worker(
    stack: tuple[Settings, AIOKafkaProducer, list[Redis]],
    redis_url: str,
    store_kind: str,
    sink_clock: Clock,
) -> Callable[..., Worker]:
    """Workers of one test share their stores: the same Redis, or one set in memory;
    their sinks decide by `sink_clock`, and the memory stores keep time by it too (their
    keys' expiry, a merge group's window, a pending task's age): on the wall clock beside
    a pinned sink, a test moving its clock saw a window still open that had closed by it."""
    settings, producer, clients = stack
    shared = memory_stores(sink_clock)

    def make(
        policy: DispatchPolicy | None = None,
        url: str | None = None,
        frequency_cap: FrequencyCap | None = None,
        task_ttl: TaskTtl = no_ttl,
    ) -> Worker:
        if store_kind == "memory":
            stores = shared
        else:
            client = Redis.from_url(url or redis_url, socket_timeout=2, socket_connect_timeout=2)
            clients.append(client)
            stores = redis_stores(TaskLedger(client, f"moments:{settings.app_id}:", 864000))
        policy = policy or DispatchPolicy()
        return Worker(settings, producer, stores, policy, frequency_cap, task_ttl, sink_clock)

    return make


async def published(settings: Settings, count: int) -> list[dict[str, Any]]:
    """Every task on the tasks topic (at least `count`, waited for): the sinks' flushes
    were awaited, so a task published once too often is on it already, no wait needed."""
    return values(await read_written(settings, "tasks", at_least=count))


def ids(tasks: list[dict[str, Any]]) -> list[str]:
    return sorted(str(t["task_id"]) for t in tasks)


def tombstone_before_park(parker: TaskSink, forgetter: TaskSink, subscriber: str) -> list[str]:
    """Hooks `parker`'s deferral queue so that `subscriber`'s tombstone is applied (through
    `forgetter`, another worker's sink or the same) just before its first park: the race of
    a decision that read the facts before the tombstone's mark and parks after its take.
    Returns the list that holds `subscriber` once the tombstone was applied."""
    deferral, applied = parker.deferral, list[str]()
    park_many = deferral.park_many

    async def tombstone_then_park(
        items: Sequence[Parking], timetable: str = "", held: Held | None = None
    ) -> list[bool]:
        if not applied:
            applied.append(subscriber)
            await forgetter.subscribers.forget([subscriber], ["first_international_roaming"])
        return await park_many(items, timetable, held)

    deferral.park_many = tombstone_then_park  # type: ignore[method-assign]
    return applied
