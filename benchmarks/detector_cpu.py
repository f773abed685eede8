"""CPU per event of the detector in process, split into the batch's processing and the
save of its records (the stream's store: JSON, then zstd), on the bench's events with
their clock pinned, so that every run makes the same tasks (the bench dates its events
two hours before now, and the hour of day decides quiet hours and special days).

What `moments bench` calls "rules in process", timed with `time.process_time` rather than
the wall clock, so that another process on the machine does not count (it still
competes for caches and cores: alternate the codes you compare, several rounds each).
Put an older `src` first on PYTHONPATH to time that code with the same script:

    .venv/bin/python benchmarks/detector_cpu.py none             # no rules, 3 runs
    .venv/bin/python benchmarks/detector_cpu.py catalog --runs 2
    mkdir -p /tmp/old && git archive <commit> src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/detector_cpu.py none
    .venv/bin/python benchmarks/detector_cpu.py catalog --runs 1 --check   # tasks' digest

The clock is pinned by swapping `moments.bench`'s `dt` rather than by an argument, so the
script runs unchanged on older code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import moments
from moments import bench
from moments.decoding import decode
from moments.engine import Detector
from moments.gctune import tune_gc
from moments.models import EventType
from moments.records import RawRecord
from moments.state import SubscriberState
from moments.store import DictStateStore
from rules.catalog import RuleSet, load_rules

PINNED = dt.datetime(2026, 12, 5, 2, tzinfo=dt.UTC)
"""What the bench's events take for now: they span 00:00-02:00 UTC, daytime in Shanghai."""


class _PinnedDatetime(dt.datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _PinnedDatetime:  # always the pinned instant, whatever tz
        return cls.fromtimestamp(PINNED.timestamp(), dt.UTC)


class _PinnedClock:
    datetime = _PinnedDatetime
    timedelta = dt.timedelta
    UTC = dt.UTC


def run(
    rules: RuleSet, records: Sequence[RawRecord], batch: int, check: bool = False
) -> tuple[float, float, float, DictStateStore, int, str]:
    """(µs of CPU an event in `process`, in `save`, bytes a record after the run, the
    store, tasks made, their digest when `check`: hashing them is not timed)."""
    detector = Detector(rules, {t.value: t for t in EventType})
    store = DictStateStore()
    now = PINNED + dt.timedelta(hours=2)
    in_process = in_save = 0.0
    tasks = 0
    digest = hashlib.sha1()  # noqa: S324  # a fingerprint, not security
    for start in range(0, len(records), batch):
        began = time.process_time()
        result = detector.process(records[start : start + batch], store.load, now)
        between = time.process_time()
        store.save(result.changes)
        in_process += between - began
        in_save += time.process_time() - between
        tasks += len(result.tasks)
        if check:
            for task in result.tasks:
                digest.update(task.model_dump_json().encode())
    size = sum(map(len, store.data.values())) / max(len(store.data), 1)
    shown = digest.hexdigest()[:12] if check else ""
    per_event = 1e6 / len(records)
    return in_process * per_event, in_save * per_event, size, store, tasks, shown


def serializing(store: DictStateStore) -> tuple[float, float]:
    """µs of CPU a record for `to_json` of the records the cache holds after the run (the
    ones `save` serializes: built up event by event), and of the same records freshly read
    from their bytes (each one's objects allocated together)."""
    cached = [state for _, (_, state) in store.cache._entries.items()]
    fresh = [SubscriberState.from_bytes(saved) for saved, _ in store.cache._entries.values()]
    out = []
    for states in (cached, fresh):
        began = time.process_time()
        for state in states:
            state.to_json()
        out.append((time.process_time() - began) * 1e6 / max(len(states), 1))
    return out[0], out[1]


def decoding(records: Sequence[RawRecord]) -> float:
    """µs of CPU an event to validate it and nothing else."""
    began = time.process_time()
    for record in records:
        decode(record, EventType(record.topic))
    return (time.process_time() - began) * 1e6 / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rules", choices=("none", "catalog"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--layout",
        action="store_true",
        help="also time to_json on the cached records against the same records read afresh",
    )
    parser.add_argument("--check", action="store_true", help="print a digest of the tasks")
    args = parser.parse_args()
    bench.dt = _PinnedClock  # type: ignore[assignment, attr-defined]  # a stand-in module
    events = bench.bench_events(args.events, args.subscribers)
    records = [RawRecord(t.value, 0, i, k, v) for i, (t, k, v) in enumerate(events)]
    rules = RuleSet.of([]) if args.rules == "none" else load_rules()
    tune_gc()  # the worker's young-generation settings, as `moments bench` sets them
    code = moments.__file__.rsplit("/moments/", 1)[0]
    for _ in range(args.runs):
        in_process, in_save, size, store, tasks, digest = run(
            rules, records, args.batch, args.check
        )
        shown = f", digest {digest}" if digest else ""
        print(
            f"{code} {args.rules}: {in_process + in_save:.2f} µs CPU an event "
            f"(process {in_process:.2f}, save {in_save:.2f}; validating alone "
            f"{decoding(records):.2f}); {size:.1f} bytes a record; {tasks} tasks{shown}",
            flush=True,
        )
        if args.layout:
            cached, fresh = serializing(store)
            print(f"  to_json: {cached:.2f} µs a cached record, {fresh:.2f} read afresh")


if __name__ == "__main__":
    main()
