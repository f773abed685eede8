"""CPU of a restore's own work per changelog record, without a broker: folding a
partition's records to the one kept per key, then handing them to a Faust memory store,
as `moments.restore` does; fenced (moments.fence: stamps read from headers, a stale
record skipped) against the plain fold of before (the last record per key), in
alternated rounds in one process.

The records are like a worker's changelog: `--keys` subscribers written `--writes` times
each, values of 430 bytes, stamped with a generation header (or not: `--unstamped`, a
changelog written before stamps); one write in `--stale` a stale one (a lower
generation). Prints CPU µs per record of each way, per round and the best.

    .venv/bin/python benchmarks/changelog_fold.py
    .venv/bin/python benchmarks/changelog_fold.py --keys 100000 --writes 6 --rounds 5
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from faust.types import TP

from moments.app import create_app
from moments.fence import HEADER, Fold, header_value
from moments.restore import PreloadingTable, _ChangelogEvent, _Message, _stamped
from moments.settings import load_settings


class _Record(NamedTuple):
    """What aiokafka's ConsumerRecord gives the fold."""

    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def records(keys: int, writes: int, stale: int, stamped: bool) -> list[_Record]:
    rng = random.Random(7)  # noqa: S311 - test data
    out = []
    value = bytes(rng.getrandbits(8) for _ in range(430))
    for n in range(writes):
        for k in range(keys):
            generation = n + 1
            if stale and rng.randrange(stale) == 0:
                generation = n  # a previous owner's, landed late
            headers = ((HEADER, str(generation).encode()),) if stamped else ()
            out.append(_Record(b"1300%07d" % k, value, headers))
    return out


def table() -> Any:
    app = create_app(load_settings(store="memory"))
    return app.tables.add(
        PreloadingTable(
            app, name="subs", default=None, partitions=1, key_type=bytes, value_type=bytes
        )
    )


def events(tp: TP, values: dict[bytes, bytes | None], stamps: dict[bytes, bytes]) -> Iterable[Any]:
    return (
        _ChangelogEvent(_Message(tp, 0, 0, k, v, _stamped(stamps.get(k, b""))), k, v)
        for k, v in values.items()
    )


def plain(batch: list[_Record]) -> float:
    """Before: the last value per key, handed to the store as it is."""
    started = time.process_time()
    values: dict[bytes, bytes | None] = {}
    for record in batch:
        if record.key is not None:
            values[record.key] = record.value
    into = table()
    tp = TP(into.changelog_topic.get_topic_name(), 0)
    faust_apply = super(PreloadingTable, into).apply_changelog_batch
    faust_apply(events(tp, values, {}))
    return time.process_time() - started


def fenced(batch: list[_Record]) -> float:
    """Now: `Fold` by stamp, then through `_fenced` against the store."""
    started = time.process_time()
    kept = Fold()
    offer = kept.offer
    for record in batch:
        if record.key is not None:
            offer(record.key, record.value, header_value(record.headers))
    into = table()
    tp = TP(into.changelog_topic.get_topic_name(), 0)
    faust_apply = super(PreloadingTable, into).apply_changelog_batch
    faust_apply(into._fenced(events(tp, kept.values, kept.stamps), unique=True))
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--writes", type=int, default=6)
    parser.add_argument("--stale", type=int, default=1000, help="one stale write in N (0: none)")
    parser.add_argument("--unstamped", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    batch = records(args.keys, args.writes, args.stale, not args.unstamped)
    table()  # the app's start-up cost outside the rounds
    best = {"plain": float("inf"), "fenced": float("inf")}
    for n in range(args.rounds):
        for name, way in (("plain", plain), ("fenced", fenced)):
            took = way(batch) / len(batch) * 1e6
            best[name] = min(best[name], took)
            print(f"round {n + 1} {name}: {took:.2f} µs CPU per record")
    print(
        f"{len(batch):,} records of {args.keys:,} keys: best plain {best['plain']:.2f}, "
        f"fenced {best['fenced']:.2f} µs CPU per record"
    )


if __name__ == "__main__":
    main()
