"""What writing a batch's state costs the stream's store (`FaustTableStore`): `save`,
then `persisted` once the changelog acknowledged it (write-ahead), on a stand-in of
Faust's memory store (a dict that notes each key's partition). The changelog write
itself is left out (`benchmarks/changelog_produce.py` measures it).

The records are those of `moments bench` (200,000 events over 20,000 subscribers, the
default catalog), detected once in batches of 5,000 as the worker takes them; each run
writes the same batches to a fresh store; CPU time (the machine is shared). Runs
against older code too (a `save` that returned a list and a `persisted(offsets)`), to
compare. Code that stamps records for fencing (moments.fence) saves them stamped, as the
worker does:

    .venv/bin/python benchmarks/state_write.py
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/state_write.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import statistics
import time
from typing import Any

from moments.bench import bench_events
from moments.engine import Detector
from moments.gctune import tune_gc
from moments.records import RawRecord
from moments.store import FaustTableStore
from rules.catalog import load_rules

BATCH = 5000


class _Topic:
    def get_topic_name(self) -> str:
        return "bench-subscribers-changelog"


class _NotingStore(dict[bytes, bytes]):
    """Faust's memory store as the state store sees it."""

    def __init__(self) -> None:
        super().__init__()
        self._key_partition: dict[bytes, int] = {}


class _Table:
    def __init__(self) -> None:
        self.data = _NotingStore()
        self.changelog_topic = _Topic()
        self.offsets: dict[int, int] = {}

    def written(self, partition: int, offset: int) -> None:
        self.offsets[partition] = offset


STAMPS = "generation" in inspect.signature(FaustTableStore.save).parameters
"""Whether this code stamps the records it saves (moments.fence): as the worker, in a
consumer generation."""


def write(store: FaustTableStore, changes: Any) -> int:
    """save, then persisted: the runtime's calls once the changelog acknowledged."""
    saved: Any = store.save(changes, 7) if STAMPS else store.save(changes)
    records = saved if isinstance(saved, list) else saved.records
    offsets = {p: 0 for p, _, _ in records}
    if isinstance(saved, list):  # before write-ahead: persisted(offsets)
        store.persisted(offsets)  # type: ignore[call-arg, arg-type]  # the older signature
    else:
        store.persisted(saved, offsets)
    return len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tune_gc()  # as the worker runs

    events = list(bench_events(args.events, args.subscribers))
    records = [RawRecord(t.value, i % 4, i, k, v) for i, (t, k, v) in enumerate(events)]
    detector = Detector(load_rules(), {t.value: t for t, _, _ in events})
    now = dt.datetime.now(dt.UTC)
    # Detected once; each run writes the same batches to a fresh store.
    store = FaustTableStore(_Table(), "roaming", partitions=4)
    batches = []
    for start in range(0, len(records), BATCH):
        result = detector.process(records[start : start + BATCH], store.load, now)
        write(store, result.changes)
        batches.append(result.changes)
    per_record: list[float] = []
    for run in range(args.runs):
        store = FaustTableStore(_Table(), "roaming", partitions=4)
        written = 0
        started = time.process_time()
        for changes in batches:
            written += write(store, changes)
        took = time.process_time() - started
        per_record.append(took / written * 1e6)
        print(f"run {run + 1}: {written:,} records written in {took:.2f} s of CPU")
    best = min(per_record)
    print(f"state write, µs a record: best {best:.2f}, median {statistics.median(per_record):.2f}")


if __name__ == "__main__":
    main()
