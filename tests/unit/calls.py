"""Counting the calls a piece of code makes: a deterministic measure of work for the tests
of the hot paths (no timing: the machine's load does not change a count)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")


def counted_calls(run: Callable[[], T]) -> tuple[T, Counter[str]]:
    """`run()`'s result and the calls made meanwhile, Python functions (`file:name`) and
    built-ins (`name`) alike, as `cProfile` counts them."""
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            calls[f"{frame.f_code.co_filename}:{frame.f_code.co_name}"] += 1
        elif event == "c_call":
            calls[getattr(arg, "__qualname__", repr(arg))] += 1

    sys.setprofile(profile)
    try:
        result = run()
    finally:
        sys.setprofile(None)
    return result, calls
