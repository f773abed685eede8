"""CPU per event of the detector in process (`Detector.process`, no broker), with the
catalog or no rules, on the bench's events with their clock pinned so that every run
makes the same tasks (the bench dates its events two hours before now, and the hour of
day decides quiet hours and special days).

Prints `time.process_time` per event for each round (another process sharing the cores
does not count), the tasks made and, with `--check`, a digest of their JSON to compare
two versions of the code (old code: `git archive <commit> src | tar -x -C /tmp/old`,
then `PYTHONPATH=/tmp/old/src`).

    .venv/bin/python benchmarks/rules_cpu.py catalog --rounds 2
    .venv/bin/python benchmarks/rules_cpu.py none --rounds 2
    .venv/bin/python benchmarks/rules_cpu.py catalog --rounds 1 --check
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import time
from typing import Any

from moments import bench
from moments.engine import Detector
from moments.gctune import tune_gc
from moments.models import EventType
from moments.records import RawRecord
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rules", choices=("catalog", "none"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="print a digest of the tasks")
    args = parser.parse_args()

    bench.dt = _PinnedClock  # type: ignore[assignment]
    events = bench.bench_events(args.events, args.subscribers)
    records = [RawRecord(t.value, 0, i, k, v) for i, (t, k, v) in enumerate(events)]
    rules = RuleSet.of([]) if args.rules == "none" else load_rules()
    now = PINNED + dt.timedelta(hours=2)
    tune_gc()  # the worker's young-generation settings, as `moments bench` has them
    for _ in range(args.rounds):
        detector = Detector(rules, {t.value: t for t in EventType})
        store = DictStateStore()
        digest = hashlib.sha1()  # noqa: S324  # a fingerprint, not security
        tasks = 0
        started = time.process_time()
        for start in range(0, len(records), 5000):
            result = detector.process(records[start : start + 5000], store.load, now)
            store.save(result.changes)
            tasks += len(result.tasks)
            if args.check:
                for task in result.tasks:
                    digest.update(task.model_dump_json().encode())
        spent = time.process_time() - started
        shown = f", digest {digest.hexdigest()[:12]}" if args.check else ""
        print(
            f"{args.rules}: {spent * 1e6 / len(records):.2f} µs CPU an event, {tasks} tasks{shown}"
        )


if __name__ == "__main__":
    main()
