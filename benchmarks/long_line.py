"""Seconds to read a gzip history file whose one line is long (a junk line, a dump
pasted whole with no newline), through the history reader's `WholeLines`, by the
line's size. The reader held such a line as one bytes object grown a block at a time,
which is quadratic in its length; run it with an older `src` first on PYTHONPATH to
compare:

    .venv/bin/python benchmarks/long_line.py --mb 8 32
    mkdir -p /tmp/old && git archive <commit> src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/long_line.py --mb 8
"""

from __future__ import annotations

import argparse
import gzip
import io
import tempfile
import time
from pathlib import Path

import moments
from moments.backtest_input import WholeLines


def seconds_to_read(path: Path) -> float:
    started = time.perf_counter()
    with gzip.open(path, "rb") as unzipped:
        reader = io.BufferedReader(WholeLines(unzipped, path), buffer_size=1 << 16)
        for _line in reader:
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[8, 32], help="line sizes, MB")
    args = parser.parse_args()
    print(f"code: {Path(moments.__file__).parent.parent}")
    with tempfile.TemporaryDirectory() as tmp:
        for mb in args.mb:
            path = Path(tmp) / f"junk{mb}.jsonl.gz"
            with gzip.open(path, "wb", compresslevel=1) as out:
                out.write(b'{"a": 1}\n' + b"x" * (mb << 20) + b"\n" + b'{"b": 2}\n')
            print(f"a line of {mb} MB: {seconds_to_read(path):.2f} s")


if __name__ == "__main__":
    main()
