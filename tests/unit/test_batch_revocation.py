"""An input batch and a revocation (a consumer-group rebalance taking partitions away).

A batch whose tasks wait on Redis past the revocation's bounded wait
(`BatchConsumer.wait_empty`) goes on after the partitions are handed over. Its records,
read before, must not be written then: the next owner restored the partitions and writes
its own records, and a stale one landing after them would undo them at its next restore
(a cooldown mark lost, applied events forgotten). Nor may its offsets be marked processed:
the next owner reads its events again (the ledger stops their tasks twice). So the batch
loop asks, per batch, whether the partitions are still held in the generation the batch
began in (`BatchLoop.ownership`, the app's `group_ownership`), and `Runtime._publish` writes no
state when they are not.

Unit-level, with fakes for the consumer, the task sink and the changelog (as
tests/unit/test_sweep_revocation.py): the order of the writes is recorded, not timed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from faust.types import TP

from moments import runtime as runtime_module
from moments.app import group_ownership
from moments.batchloop import BatchLoop
from moments.consumer import Fetch
from moments.engine import Detector
from moments.models import EventType
from moments.partitioning import partition_of
from moments.pipeline import to_records
from moments.records import RawRecord
from moments.rewind import RewindGuard, TopicPartition
from moments.runtime import Runtime
from moments.settings import load_settings
from sinks.metrics import Metrics

from .fakes import FakeChangelog, NoDeadLetters
from .rules.helpers import ev, rules_from
from .test_sweep_revocation import _HeldTasks, _LoggedStore

RULES = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: big_topup
    description: A large top-up
    on: [topup]
    condition: {field: amount, gte: 100}
    task: {family: anomaly, type: big_topup, channel: sms, priority: 3, action: a, ttl: 3d,
           cooldown: 30d, description: d}
"""
SUBSCRIBERS = 4


@dataclass
class _Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class _Source:
    """What the batch loop needs of the consumer: one fetch, the offsets it marks."""

    fetch: Fetch
    epoch: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    processed: dict[TP, int] = field(default_factory=dict)
    stopping: bool = False

    async def take(self, max_records: int) -> Fetch:
        return self.fetch

    async def commit_processed(self) -> None:
        pass


class _Group:
    """The app's view of the group, as `ownership` in moments.app reads it."""

    def __init__(self) -> None:
        self.rebalancing = False
        self.generation = 1
        self.assigned = {0}

    def ownership(self, partitions: Collection[int]) -> Callable[[], bool]:
        generation = self.generation

        def still_ours() -> bool:
            if self.rebalancing or self.generation != generation:
                return False
            return all(p in self.assigned for p in partitions)

        return still_ours


def _records() -> list[RawRecord]:
    """Top-ups of subscribers partition 0 holds (as the producer partitions them)."""
    partitions = load_settings().partitions
    subs = (f"1380000{i:04d}" for i in range(1000))
    ours = [s for s in subs if partition_of(s.encode(), partitions) == 0][:SUBSCRIBERS]
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()  # live, not late
    events = [
        ev(EventType.TOPUP, when, sub=sub, region="NJ", amount=150, channel="app") for sub in ours
    ]
    return to_records(events)


def _setup(
    monkeypatch: pytest.MonkeyPatch, order: list[str]
) -> tuple[Runtime, _HeldTasks, FakeChangelog, _LoggedStore, _Group, BatchLoop, _Source]:
    detector = Detector(rules_from(RULES), {t.value: t for t in EventType})
    runtime = Runtime(load_settings(), Metrics(), detector)
    tasks = _HeldTasks()
    runtime.tasks = tasks  # type: ignore[assignment]
    runtime.dead_letters = NoDeadLetters()  # type: ignore[assignment]
    runtime._producer = object()
    changelog = FakeChangelog(order, hold=False)
    monkeypatch.setattr(runtime_module, "produce_to_partitions", changelog)
    store = _LoggedStore()
    records = _records()
    tp = TP(records[0].topic, 0)
    fetch = Fetch(0, [(tp, [_Rec(r.offset, r.key, r.value, r.timestamp_ms) for r in records])])
    source = _Source(fetch)
    group = _Group()

    async def handle(batch: Sequence[RawRecord], owned: Callable[[], bool]) -> None:
        await runtime.handle(batch, store, owned)  # as the app wires it

    loop = BatchLoop(
        source,
        handle,
        RewindGuard(),
        lambda _: None,
        _no_seek,
        batch_size=100,
        ownership=group.ownership,
    )
    return runtime, tasks, changelog, store, group, loop, source


async def _no_seek(_: Mapping[TopicPartition, int]) -> Collection[TopicPartition]:
    return ()


class TestBatchAndRevocation:
    async def test_a_batch_whose_partitions_went_while_its_tasks_were_sent_writes_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Its tasks are in the ledger; its records are neither in the local store nor in
        the changelog after the next owner's, and its offsets are not marked processed."""
        order: list[str] = []
        runtime, tasks, changelog, store, group, loop, source = _setup(monkeypatch, order)
        step = asyncio.create_task(loop.step())
        await asyncio.wait_for(tasks.flushing.wait(), 60)  # Redis slow: the tasks wait
        # The revocation's bounded wait ran out; the group moved on and the partition's
        # next owner restored it and wrote its own records.
        group.rebalancing = True
        group.generation += 1
        group.assigned = set()
        order.append("next owner's records")
        tasks.release.set()
        await asyncio.wait_for(step, 60)
        assert len(tasks.added) == SUBSCRIBERS  # the tasks went out (the ledger)
        assert order == ["next owner's records"]
        assert changelog.records == []
        assert store.data == {}
        assert source.processed == {}
        assert runtime.metrics.events.labels(EventType.TOPUP.value)._value.get() == 0

    async def test_a_batch_given_back_in_a_new_generation_writes_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Held again after the rebalance, the partition was sought back to its commit:
        the batch's events are read again, not written twice."""
        order: list[str] = []
        _, tasks, changelog, store, group, loop, source = _setup(monkeypatch, order)
        step = asyncio.create_task(loop.step())
        await asyncio.wait_for(tasks.flushing.wait(), 60)
        group.generation += 1
        tasks.release.set()
        await asyncio.wait_for(step, 60)
        assert (changelog.records, store.data, source.processed) == ([], {}, {})

    async def test_a_batch_still_ours_writes_its_records_and_marks_its_offsets(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        order: list[str] = []
        runtime, tasks, changelog, store, _, loop, source = _setup(monkeypatch, order)
        tasks.release.set()
        await loop.step()
        assert order == ["changelog written"]
        assert sorted(k for _, k, _ in changelog.records) == sorted(s.encode() for s in store.data)
        assert len(store.data) == len(tasks.added) == SUBSCRIBERS
        assert source.processed == {TP(EventType.TOPUP.value, 0): SUBSCRIBERS}
        assert runtime.metrics.events.labels(EventType.TOPUP.value)._value.get() == SUBSCRIBERS


class TestGroupOwnership:
    """The app's check (`group_ownership`) on a stand-in for the Faust app."""

    def _app(self) -> SimpleNamespace:
        return SimpleNamespace(consumer_generation_id=3, rebalancing_count=2, rebalancing=False)

    def test_held_while_no_rebalance_began_and_the_partitions_stay(self) -> None:
        app = self._app()
        assigned = [0, 1]
        owned = group_ownership(app, lambda: assigned, {0})
        assert owned()
        assigned.remove(0)
        assert not owned()

    def test_a_rebalance_that_began_since_ends_it_even_before_a_new_generation(self) -> None:
        app = self._app()
        owned = group_ownership(app, lambda: [0], {0})
        app.rebalancing, app.rebalancing_count = True, 3  # Faust's on_rebalance_start
        assert not owned()
        app.rebalancing = False  # given back in the same generation id (Tansu's first is 0)
        assert not owned()

    def test_a_new_generation_ends_it(self) -> None:
        app = self._app()
        owned = group_ownership(app, lambda: [0], {0})
        app.consumer_generation_id = 4
        assert not owned()

    def test_a_batch_begun_as_the_rebalance_ends_is_ours(self) -> None:
        """Faust lowers its `rebalancing` flag after the flow resumed: a batch begun before
        that is held (the flag alone would keep it unwritten and its offsets unmarked,
        and the next batches would commit past its events)."""
        app = self._app()
        app.rebalancing = True
        owned = group_ownership(app, lambda: [0], {0})
        assert owned()
        app.rebalancing = False
        assert owned()
