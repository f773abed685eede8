"""The window sweep runs in chunks: batches get the state lock between them, a record a
batch changed meanwhile is read afresh, and the sweep makes the same tasks as in one go."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from moments.batchresult import BatchResult
from moments.engine import Detector
from moments.models import EventType
from moments.pipeline import run_pipeline
from moments.runtime import SWEEP_CHUNK, Runtime
from moments.settings import load_settings
from moments.state import SubscriberState
from moments.store import DictStateStore
from moments.sweep import sweep
from sinks.metrics import Metrics

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
           description: d}
"""
SUBSCRIBERS = SWEEP_CHUNK * 2 + 7  # three chunks, the last one short
DAY = "2026-11-02T10:00:00+08:00"
NEXT_DAY = dt.datetime(2026, 11, 3, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def _store() -> DictStateStore:
    events = [
        ev(EventType.USAGE, DAY, sub=f"1380000{i:04d}", kind="data") for i in range(SUBSCRIBERS)
    ]
    return run_pipeline(events, rules_from(DAILY)).store


class _Recorder:
    """Stands in for the runtime's publishing: saves the chunk's records, remembers it."""

    def __init__(self, store: DictStateStore) -> None:
        self.store = store
        self.chunks: list[BatchResult] = []

    async def publish(
        self, result: BatchResult, store: object, owned: object = None, what: str = ""
    ) -> bool:
        self.store.save(result.changes)
        self.chunks.append(result)
        await asyncio.sleep(0)
        return True


def _runtime(store: DictStateStore) -> tuple[Runtime, _Recorder]:
    runtime = Runtime(load_settings(), Metrics(), Detector(rules_from(DAILY), {}))
    recorder = _Recorder(store)
    runtime._publish = recorder.publish  # type: ignore[method-assign]
    runtime.clock.observe({0: int(NEXT_DAY.timestamp())}, time.time())
    return runtime, recorder


async def test_batches_run_between_chunks_and_the_tasks_are_those_of_one_sweep() -> None:
    expected = sweep(
        Detector(rules_from(DAILY), {}),
        _store().items([0]),
        lambda _p: int(NEXT_DAY.timestamp()),
        None,
    )
    store = _store()
    runtime, recorder = _runtime(store)
    got_in_after: list[int] = []

    async def batch() -> None:
        await asyncio.sleep(0)  # the sweep starts first
        async with runtime._state_lock:
            got_in_after.append(len(recorder.chunks))

    made, _ = await asyncio.gather(runtime.sweep(store, [0]), batch())
    assert [len(c.changes) for c in recorder.chunks] == [SWEEP_CHUNK, SWEEP_CHUNK, 7]
    assert got_in_after
    assert got_in_after[0] < len(recorder.chunks)  # it did not wait for the whole sweep
    assert made == len(expected.tasks) == SUBSCRIBERS
    got = sorted(t.task_id for c in recorder.chunks for t in c.tasks)
    assert got == sorted(t.task_id for t in expected.tasks)
    assert runtime.clock.due([0], time.time()) == {}  # marked swept once done


async def test_a_record_changed_between_chunks_is_read_afresh() -> None:
    store = _store()
    runtime, _ = _runtime(store)
    last = sorted(store.data)[-1]  # swept in the last chunk
    changed = SubscriberState.from_bytes(store.data[last])
    changed.seen["batch-between-chunks"] = 1  # what a batch would have written

    async def batch() -> None:
        await asyncio.sleep(0)
        async with runtime._state_lock:
            store.data[last] = changed.to_bytes()

    await asyncio.gather(runtime.sweep(store, [0]), batch())
    assert "batch-between-chunks" in SubscriberState.from_bytes(store.data[last]).seen


async def test_stops_when_the_partitions_are_no_longer_ours() -> None:
    store = _store()
    runtime, recorder = _runtime(store)
    answers = iter([True, False])
    made = await runtime.sweep(store, [0], still_ours=lambda: next(answers))
    assert len(recorder.chunks) == 1
    assert made == SWEEP_CHUNK
    assert runtime.clock.due([0], time.time()) != {}  # not marked swept: the next owner does it


async def test_a_complete_sweep_counts_the_partitions_records_into_the_gauges() -> None:
    """moments_state_subscribers/_bytes: what the worker holds, for capacity planning."""
    store = _store()
    stored = sum(len(v) for v in store.data.values())
    runtime, _ = _runtime(store)
    await runtime.sweep(store, [0])
    registry = runtime.metrics.registry
    labels = {"partition": "0"}
    assert registry.get_sample_value("moments_state_subscribers", labels) == SUBSCRIBERS
    assert registry.get_sample_value("moments_state_bytes", labels) == stored

    runtime.forget([1])  # partition 0 went to another worker: its owner reports it now
    assert registry.get_sample_value("moments_state_subscribers", labels) is None
    assert registry.get_sample_value("moments_state_bytes", labels) is None


async def test_a_sweep_cut_short_leaves_the_gauges_as_they_were() -> None:
    store = _store()
    runtime, _ = _runtime(store)
    answers = iter([True, False])
    await runtime.sweep(store, [0], still_ours=lambda: next(answers))
    assert (
        runtime.metrics.registry.get_sample_value("moments_state_subscribers", {"partition": "0"})
        is None
    )
