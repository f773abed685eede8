"""A window sweep and a revocation (a consumer-group rebalance taking partitions away).

The sweep runs on a timer beside the batch loop. A chunk in flight when the revocation
starts, its tasks waiting on Redis or its records on the changelog, must not write the
records of its partitions after they are handed over: the next owner restores them from
the changelog, and a record landing after its own writes would undo them at its next
restore (a cooldown mark lost, an applied event forgotten). So the revocation waits for
the chunk (bounded, `BatchConsumer.wait_empty`), and a chunk whose partitions are no
longer held when its tasks are acknowledged writes no record (`Runtime._publish`).

Unit-level, with fakes for the task sink and the changelog: on a real worker pair the
chunk's moment in flight lasts milliseconds and cannot be hit on purpose (Tansu holds
every join for the whole rebalance timeout), so the ordering is tested here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from moments import runtime as runtime_module
from moments.batchresult import StateChange
from moments.consumer import BatchConsumer
from moments.engine import Detector
from moments.models import EventType, ServiceTask
from moments.pipeline import run_pipeline
from moments.runtime import Runtime
from moments.settings import load_settings
from moments.store import DictStateStore, StateWrite
from sinks.metrics import Metrics

from .fakes import FakeChangelog, NoDeadLetters
from .rules.helpers import ev, rules_from

DAILY = """
series:
  n: {on: [usage], period: day}
rules:
  - id: busy_day
    description: at least one event on a day, told at the day's close
    on: [usage]
    evaluate: daily
    condition: {series: n, gte: 1}
    task: {family: anomaly, type: busy_day, channel: sms, priority: 3, action: a, ttl: 3650d,
           description: d, cooldown: 7d}
"""
SUBSCRIBERS = 5
DAY = "2026-11-02T10:00:00+08:00"
NEXT_DAY = dt.datetime(2026, 11, 3, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


class _LoggedStore(DictStateStore):
    """A dict store with a changelog, as the Faust table's store has."""

    changelog_topic = "subscribers-changelog"

    def save(self, changes: Mapping[str, StateChange], generation: int | None = None) -> StateWrite:
        super().save(changes)
        return StateWrite(
            [
                (0, sub.encode(), None if c.state is None else c.state.to_bytes())
                for sub, c in changes.items()
            ]
        )


class _HeldTasks:
    """The task sink, its flush held until `release` (Redis slow, or gone a while)."""

    def __init__(self) -> None:
        self.added: list[ServiceTask] = []
        self.flushing = asyncio.Event()
        self.release = asyncio.Event()
        self.subscribers = _NoErasures()

    def add(self, task: ServiceTask, rejudged: bool = False) -> None:
        self.added.append(task)

    async def flush(self) -> set[str]:
        self.flushing.set()
        await self.release.wait()
        return set()

    def took_over(self) -> set[str]:
        return set()


class _NoErasures:
    """The sink's `subscribers`: no one erased, facts kept nowhere."""

    async def erasures(self, _: Sequence[str]) -> dict[str, float]:
        return {}

    async def record_facts(self, _: object) -> None:
        pass


def _store() -> _LoggedStore:
    events = [
        ev(EventType.USAGE, DAY, sub=f"1380000{i:04d}", kind="data") for i in range(SUBSCRIBERS)
    ]
    store = _LoggedStore()
    store.data.update(run_pipeline(events, rules_from(DAILY)).store.data)
    return store


def _runtime(
    monkeypatch: pytest.MonkeyPatch, order: list[str], hold_changelog: bool
) -> tuple[Runtime, _HeldTasks, FakeChangelog]:
    runtime = Runtime(load_settings(), Metrics(), Detector(rules_from(DAILY), {}))
    tasks = _HeldTasks()
    tasks.release.set()
    runtime.tasks = tasks  # type: ignore[assignment]
    runtime.dead_letters = NoDeadLetters()  # type: ignore[assignment]
    runtime._producer = object()
    changelog = FakeChangelog(order, hold=hold_changelog)
    monkeypatch.setattr(runtime_module, "produce_to_partitions", changelog)
    runtime.clock.observe({0: int(NEXT_DAY.timestamp())}, time.time())
    return runtime, tasks, changelog


class _Revoking:
    """What `BatchConsumer.wait_empty` touches of the consumer: nothing queued, no agent
    holding an event, the batch loop idle (the quiet partitions a sweep is for)."""

    def __init__(self, runtime: Runtime) -> None:
        self.idle = asyncio.Event()
        self.idle.set()

        async def state_settled() -> None:  # what the app wires: `Runtime.settled`
            async with runtime._state_lock:
                pass

        self.state_settled = state_settled
        self._unacked_messages: set[object] = set()
        self.committed = 0
        self.app = SimpleNamespace(should_stop=False)  # a revocation, not a stop

    def invalidate(self) -> None:
        pass

    def _clean_unacked_messages(self) -> None:
        pass

    async def commit_and_end_transactions(self) -> None:
        pass

    async def commit_processed(self) -> None:
        self.committed += 1

    async def _agents_done(self) -> None:
        await BatchConsumer._agents_done(self)  # type: ignore[arg-type]

    async def _batch_committed(self) -> None:
        await BatchConsumer._batch_committed(self)  # type: ignore[arg-type]

    async def _sweep_settled(self, seconds: float) -> None:
        await BatchConsumer._sweep_settled(self, seconds)  # type: ignore[arg-type]


class TestSweepAndRevocation:
    async def test_a_chunk_whose_partitions_went_while_its_tasks_were_sent_writes_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Its tasks are in the ledger; its records, read before the revocation, are
        neither in the local store nor in the changelog: the next owner sweeps them."""
        order: list[str] = []
        store = _store()
        before = dict(store.data)
        runtime, tasks, changelog = _runtime(monkeypatch, order, hold_changelog=False)
        tasks.release.clear()  # Redis slow: the chunk's tasks wait
        held = {"ours": True}
        sweep = asyncio.create_task(runtime.sweep(store, [0], lambda: held["ours"]))
        await asyncio.wait_for(tasks.flushing.wait(), 60)
        held["ours"] = False  # the revocation began (Faust sets app.rebalancing at once)
        tasks.release.set()
        made = await sweep
        assert made == len(tasks.added) == SUBSCRIBERS  # the tasks went out (the ledger)
        assert changelog.records == []
        assert store.data == before
        assert runtime.clock.due([0], time.time()) != {}  # not marked swept

    async def test_the_moments_of_a_chunk_not_written_are_counted_by_the_next_owner_only(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`moments_detected_total` counts each moment once (the contract: "moments that
        fired"), as for a batch not written. The old owner counted the chunk's moments,
        and the next owner, sweeping the same records again, counted them a second time
        (its tasks stopped by the ledger, the counter summed over the workers doubled)."""
        store = _store()
        old, tasks, _ = _runtime(monkeypatch, [], hold_changelog=False)
        tasks.release.clear()
        held = {"ours": True}
        sweep = asyncio.create_task(old.sweep(store, [0], lambda: held["ours"]))
        await asyncio.wait_for(tasks.flushing.wait(), 60)
        held["ours"] = False
        tasks.release.set()
        assert await sweep == SUBSCRIBERS
        new, _, _ = _runtime(monkeypatch, [], hold_changelog=False)
        assert await new.sweep(store, [0], lambda: True) == SUBSCRIBERS  # ids the ledger stops
        labels = {"family": "anomaly", "moment_type": "busy_day"}
        counted = [
            r.metrics.registry.get_sample_value("moments_detected_total", labels) or 0
            for r in (old, new)
        ]
        assert counted == [0, SUBSCRIBERS]

    async def test_a_chunk_still_ours_writes_its_records(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        order: list[str] = []
        store = _store()
        runtime, _, changelog = _runtime(monkeypatch, order, hold_changelog=False)
        made = await runtime.sweep(store, [0], lambda: True)
        assert made == SUBSCRIBERS
        assert sorted(k for _, k, _ in changelog.records) == sorted(s.encode() for s in store.data)

    async def test_a_revocation_waits_for_the_changelog_write_of_the_chunk_in_flight(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The partitions are handed over only once the chunk's records are acknowledged:
        the next owner restores them, and none lands after its own writes."""
        order: list[str] = []
        store = _store()
        runtime, _, changelog = _runtime(monkeypatch, order, hold_changelog=True)
        sweep = asyncio.create_task(runtime.sweep(store, [0], lambda: True))
        await asyncio.wait_for(changelog.writing.wait(), 60)
        consumer: Any = _Revoking(runtime)
        revocation = asyncio.create_task(BatchConsumer.wait_empty(consumer))
        revocation.add_done_callback(lambda _: order.append("revoked"))
        for _ in range(50):  # the revocation runs as far as it can
            await asyncio.sleep(0)
        changelog.release.set()
        await asyncio.wait_for(revocation, 60)
        await sweep
        assert order == ["changelog written", "revoked"]
        assert consumer.committed == 1

    async def test_settled_returns_once_the_chunk_in_flight_is_written(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`Runtime.settled`, which the app hands the consumer for its revocations."""
        order: list[str] = []
        store = _store()
        runtime, _, changelog = _runtime(monkeypatch, order, hold_changelog=True)
        sweep = asyncio.create_task(runtime.sweep(store, [0], lambda: True))
        await asyncio.wait_for(changelog.writing.wait(), 60)
        settled = asyncio.create_task(runtime.settled())
        settled.add_done_callback(lambda _: order.append("settled"))
        for _ in range(50):
            await asyncio.sleep(0)
        changelog.release.set()
        await asyncio.wait_for(settled, 60)
        await sweep
        assert order == ["changelog written", "settled"]
