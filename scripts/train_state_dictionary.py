"""Train the zstd dictionary subscriber records are compressed with (moments.statezip).

Records come from simulated histories replayed through the default catalog (the same
seeds every time), so the dictionary holds what real records repeat: keys, profile
fields, zone names, the catalog's rule tags. Never overwrite a dictionary records
already use: give a new one the next id, add it to `KNOWN_DICTIONARIES` and make it
`CURRENT_DICTIONARY`; the old file stays to read what it wrote.

    .venv/bin/python scripts/train_state_dictionary.py --id 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
from pathlib import Path

import zstandard

from moments.backtest import Backtest
from moments.backtest_input import EventFile, merged
from moments.backtest_state import BacktestState
from moments.simulate import limit, simulate, write_jsonl
from moments.statezip import KNOWN_DICTIONARIES, LEVEL, MAX_DICTIONARY_ID
from rules.catalog import load_rules

HISTORIES = (
    # subscribers, events/s, seconds, seed, start
    (2000, 0.5, 3 * 86400, 11, dt.datetime(2026, 3, 2, tzinfo=dt.UTC)),
    (1000, 1.0, 86400, 12, dt.datetime(2026, 9, 14, tzinfo=dt.UTC)),
)
SIZE = 8192
"""Bytes of dictionary: 4-16 KiB compress these records about equally well."""


def records(folder: Path) -> list[bytes]:
    """The plain JSON of every record at the end of each history."""
    out: list[bytes] = []
    for subscribers, rate, seconds, seed, start in HISTORIES:
        events = simulate(subscribers, rate, seed, start=start)
        path = folder / f"history-{seed}.jsonl"
        write_jsonl(path, events, limit(events, rate, seconds) or 0)
        backtest = Backtest(load_rules())
        asyncio.run(backtest.run(merged([EventFile(path)]), None, None))
        assert isinstance(backtest.state, BacktestState)
        held = backtest.state.records
        out += [record.to_json() for record in held.values()]
        print(f"{path.name}: {len(held):,} records")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--id", type=int, required=True, help="the new dictionary's id")
    parser.add_argument("--out", type=Path, default=Path("src/moments"), help="folder")
    args = parser.parse_args()
    if args.id != KNOWN_DICTIONARIES[-1] + 1 or args.id > MAX_DICTIONARY_ID:
        # A frame naming an id above it is read as damaged (moments.statezip.unpack).
        raise SystemExit(
            f"--id {args.id}: give the next id, {KNOWN_DICTIONARIES[-1] + 1} (ids are given "
            f"in turn, and at most {MAX_DICTIONARY_ID})"
        )
    with tempfile.TemporaryDirectory() as folder:
        samples = records(Path(folder))
    # [*samples]: the stub asks for a list of any buffer, and a list[bytes] is not one
    trained = zstandard.train_dictionary(SIZE, [*samples], dict_id=args.id, level=LEVEL)
    target = args.out / f"state-dict-{args.id}.zstd"
    if target.exists():
        raise SystemExit(f"{target} exists: records may use it; train with a new --id")
    target.write_bytes(trained.as_bytes())
    compressor = zstandard.ZstdCompressor(level=LEVEL, dict_data=trained, write_dict_id=True)
    packed = sum(len(compressor.compress(s)) for s in samples)
    plain = sum(len(s) for s in samples)
    print(
        f"wrote {target} ({len(trained.as_bytes()):,} bytes) from {len(samples):,} records: "
        f"{plain / len(samples):.0f} bytes of JSON each, {packed / len(samples):.0f} packed"
    )


if __name__ == "__main__":
    main()
