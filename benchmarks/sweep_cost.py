"""What the window sweep costs the stream: one sweep of every record of a partition, as
`Runtime.sweep` does when a partition's event time enters a new hour.

The records are those of `moments bench` (200,000 events over 20,000 subscribers, the
default catalog). Three sweeps to the same instant: the first of the day (it looks at
special days and writes each record's day marker), then, with its records saved, one
where nothing is due, and decoding alone for comparison.

    .venv/bin/python benchmarks/sweep_cost.py
    .venv/bin/python benchmarks/sweep_cost.py --events 50000 --subscribers 5000
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from moments.bench import bench_events
from moments.engine import Detector
from moments.gctune import tune_gc
from moments.records import RawRecord
from moments.store import DictStateStore
from moments.sweep import sweep
from rules.catalog import load_rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--subscribers", type=int, default=20_000)
    args = parser.parse_args()
    tune_gc()  # as the worker runs

    events = list(bench_events(args.events, args.subscribers))
    records = [RawRecord(t.value, 0, i, k, v) for i, (t, k, v) in enumerate(events)]
    detector = Detector(load_rules(), {t.value: t for t, _, _ in events})
    store = DictStateStore()
    now = dt.datetime.now(dt.UTC)
    for start in range(0, len(records), 5000):
        store.save(detector.process(records[start : start + 5000], store.load, now).changes)
    at = max(state.watermark for _, state, _ in store.items([0]))
    count = len(store.data)

    def timed_sweep(label: str) -> None:
        started = time.perf_counter()
        result = sweep(detector, store.items([0]), lambda _p: at, now, store.reread)
        took = time.perf_counter() - started
        print(
            f"{label:<28} {took * 1e3:7.0f} ms  {took / count * 1e6:5.1f} µs/record  "
            f"{len(result.changes):>6} records changed, {len(result.tasks)} tasks"
        )
        store.save(result.changes)

    started = time.perf_counter()
    calendar = detector.rules.special.calendar
    for year in {dt.datetime.fromtimestamp(at, dt.UTC).year + d for d in (-1, 0, 1)}:
        calendar.in_year(year)  # once per process and year, not per sweep
    took = time.perf_counter() - started
    print(f"{count:,} records, swept to their latest event time")
    print(f"{'the holidays of the year':<28} {took * 1e3:7.0f} ms  (once per process and year)")
    timed_sweep("first sweep of the day")
    timed_sweep("nothing due")
    started = time.perf_counter()
    sum(1 for _ in store.items([0]))
    took = time.perf_counter() - started
    print(f"{'decoding alone':<28} {took * 1e3:7.0f} ms  {took / count * 1e6:5.1f} µs/record")


if __name__ == "__main__":
    main()
