"""Peak RSS of RocksDB alone holding a large state: Faust's options against the bounded ones.

Opens one database per partition (as Faust's store does) in a temporary directory, writes
`--records` records of `--bytes` random bytes spread over `--partitions` databases in
write batches (as a restore applies the changelog), then reads every key back in random
order (as lookups do), and prints the process's peak RSS (VmHWM) after each phase and the
write rate. `--options faust` opens the databases with Faust's `RocksDBOptions` defaults
(a 2 GiB block cache each, 3 x 64 MiB write buffers); `--options bounded` with
`moments.rocksdb_memory` and the MOMENTS_ROCKSDB_* settings (defaults: one 256 MiB cache,
2 x 16 MiB per database). Run each in its own process, alternated:

    for i in 1 2; do for o in faust bounded; do
        .venv/bin/python benchmarks/rocksdb_memory.py --options $o; done; done
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from faust.stores.rocksdb import RocksDBOptions

from moments.rocksdb_memory import BoundedRocksDBOptions, RocksDBMemory
from moments.settings import load_settings

BATCH = 10_000


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--options", choices=("faust", "bounded"), required=True)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--records", type=int, default=4_000_000)
    parser.add_argument("--bytes", type=int, default=300)
    args = parser.parse_args()
    options: RocksDBOptions
    if args.options == "faust":
        options = RocksDBOptions(use_rocksdict=True)
    else:
        options = BoundedRocksDBOptions(RocksDBMemory.from_settings(load_settings()))
    import rocksdict

    workdir = Path(tempfile.mkdtemp(prefix="moments-rocksdb-memory-"))
    try:
        dbs = [options.open(workdir / f"p{p}.db") for p in range(args.partitions)]
        rng = random.Random(5)  # noqa: S311 - test data, not secrets
        started = time.perf_counter()
        for start in range(0, args.records, BATCH):
            batches = [rocksdict.WriteBatch(raw_mode=True) for _ in dbs]
            for n in range(start, min(start + BATCH, args.records)):
                batches[n % len(dbs)].put(b"%011d" % n, rng.randbytes(args.bytes))
            for db, batch in zip(dbs, batches, strict=True):
                db.write(batch)
        written = time.perf_counter() - started
        after_write = peak_rss_mib()
        keys = list(range(args.records))
        rng.shuffle(keys)
        started = time.perf_counter()
        for n in keys:
            assert dbs[n % len(dbs)][b"%011d" % n] is not None
        read = time.perf_counter() - started
        print(
            f"{args.options}: {args.records:,} records of {args.bytes} B in "
            f"{args.partitions} databases: written in {written:.1f} s "
            f"({args.records / written:,.0f}/s), peak RSS {after_write:.0f} MiB; all read "
            f"back in random order in {read:.1f} s, peak RSS {peak_rss_mib():.0f} MiB; "
            f"on disk {sum(f.stat().st_size for f in workdir.rglob('*')) / 2**20:.0f} MiB"
        )
        for db in dbs:
            db.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    main()
