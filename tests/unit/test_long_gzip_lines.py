"""A gzip history file's line longer than a block (a junk line with no newline, a dump
pasted whole) is read whole, held in the blocks read and joined once.

`WholeLines` held the start of such a line as one bytes object and added each block to
it, copying all it held at every block: a 32 MB junk line took 41 s to read (8 MB, 2 s).
How long it takes now is a benchmark's question, not a test's (docs/performance-log.md,
"This sitting's figures (2026-12-06, twenty-second session)")."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

from moments.backtest_input import WholeLines

BLOCK = 1024
LINE = 4 << 20


class SmallBlocks:
    """What `gzip.GzipFile.read1` gives, in blocks of `BLOCK` bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read1(self, _size: int) -> bytes:
        return self._data.read(BLOCK)

    def close(self) -> None:
        pass


def lines_of(data: bytes) -> list[bytes]:
    whole = WholeLines(cast(Any, SmallBlocks(data)), Path("h.jsonl.gz"))
    return io.BufferedReader(whole, buffer_size=1 << 16).readlines()


def test_a_line_of_many_blocks_is_read_whole() -> None:
    junk = b"x" * LINE
    data = b'{"a": 1}\n' + junk + b"\n" + b'{"b": 2}\n' + junk  # the last with no newline
    assert lines_of(data) == [b'{"a": 1}\n', junk + b"\n", b'{"b": 2}\n', junk]


def test_a_cut_after_a_long_line_start_says_how_much_was_held() -> None:
    """At a cut the bytes of the line begun are named (`Cut` counts them), in parts now."""

    class CutShort(SmallBlocks):
        def read1(self, size: int) -> bytes:
            block = super().read1(size)
            if not block:
                raise EOFError("Compressed file ended before the end-of-stream marker")
            return block

    data = b'{"a": 1}\n' + b"y" * (3 * BLOCK + 10)
    whole = WholeLines(cast(Any, CutShort(data)), Path("h.jsonl.gz"))
    assert io.BufferedReader(whole).readlines() == [b'{"a": 1}\n']
    cut = whole.cut(1)
    assert cut is not None
    assert (cut.line, cut.partial) == (2, 3 * BLOCK + 10)
