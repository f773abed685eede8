"""Bounds on a rules or calendar file, checked before it is loaded.

Loading is recursive and alias-following: a file nested thousands of levels deep ends in
`RecursionError`, and a few hundred bytes of anchors and aliases ("billion laughs") stand
for millions of values that the checks after loading walk one by one. Both would stop a
worker's event loop, so such a file is refused here, from YAML's event stream (read
without recursion; an alias counted as what its anchor stands for, not expanded), before
anything is built from it. Anchors and aliases themselves are allowed: a rules file may
share a task block between rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    NodeEvent,
)

from rules.exceptions import RuleProblem, RulesError

MAX_FILE_BYTES = 1024 * 1024
"""The default catalog is 12 KiB; the cap on values binds first for files like it."""
MAX_DEPTH = 64
"""Maps and lists inside one another; the default catalog nests 7 deep."""
MAX_NODES = 50_000
"""Values (scalars, maps, lists): some 1,100 rules like the default catalog's 21, which with
its series hold 910. Bounds the time a worker spends on a file before refusing it."""
MAX_TEXT = 2 * MAX_FILE_BYTES
"""Characters of all the text values, each alias counting as the text it stands for: an
alias of a 100,000-character value used 5,000 times (a 120 KB file) took 2 GB and froze
the worker's event loop for a minute while it loaded."""


def too_large(name: str, size: int) -> RuleProblem | None:
    """The problem of a file of `size` bytes, or None when it is within the limit."""
    if size <= MAX_FILE_BYTES:
        return None
    return RuleProblem(
        name,
        1,
        1,
        f"file is {size:,} bytes, over the limit of {MAX_FILE_BYTES:,} (1 MiB); split the "
        "rules into several files of a rules folder",
    )


def beyond_limits(name: str, text: str) -> RuleProblem | None:
    """The first reason `text` must not be loaded (too large, nested too deep, too many
    values, an alias inside the value it names), with its position; None when it may be
    loaded. An alias counts as the values and levels its anchor stands for, each time it
    is used: that is what the loaded document holds, and what the checks after loading
    walk. A YAML syntax error is left to the loader, which reports it with its position."""
    problem = too_large(name, len(text.encode("utf-8")))
    if problem is not None:
        return problem
    nodes = chars = 0
    enclosing: list[_Open] = []
    anchored: dict[str, tuple[int, int, int]] = {}  # anchor -> (values, levels, characters)
    try:
        for event in YAML(typ="rt").parse(text):
            if isinstance(event, CollectionEndEvent):
                done = enclosing.pop()
                if done.anchor is not None:
                    anchored[done.anchor] = (
                        nodes - done.nodes_before,
                        done.levels,
                        chars - done.chars_before,
                    )
                if enclosing:
                    enclosing[-1].levels = max(enclosing[-1].levels, done.levels + 1)
                continue
            if not isinstance(event, NodeEvent):
                continue
            mark = event.start_mark
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
            values, levels, size = 1, 0, len(getattr(event, "value", None) or "")
            if isinstance(event, AliasEvent):
                if any(o.anchor == event.anchor for o in enclosing):
                    return RuleProblem(
                        name,
                        line,
                        col,
                        f"YAML alias *{event.anchor} is inside the value it names "
                        f"(&{event.anchor}), which would never end; write the value out",
                    )
                values, levels, size = anchored.get(str(event.anchor), (1, 0, 0))
            elif isinstance(event, CollectionStartEvent):
                enclosing.append(_Open(event.anchor, nodes, chars))
            elif event.anchor is not None:
                anchored[event.anchor] = (1, 0, size)
            nodes += values
            chars += size
            if chars > MAX_TEXT:
                return RuleProblem(
                    name,
                    line,
                    col,
                    f"more than {MAX_TEXT:,} characters of text in one file, each alias "
                    "counting as the text it stands for; write shorter values, or split the "
                    "rules into several files of a rules folder",
                )
            if nodes > MAX_NODES:
                return RuleProblem(
                    name,
                    line,
                    col,
                    f"more than {MAX_NODES:,} YAML values in one file, each alias counting "
                    "as the values it stands for (the default catalog holds under 1,000); "
                    "split the rules into several files of a rules folder",
                )
            if len(enclosing) + levels > MAX_DEPTH:
                expanded = f" once *{event.anchor} is expanded" if levels else ""
                return RuleProblem(
                    name,
                    line,
                    col,
                    f"nested more than {MAX_DEPTH} levels deep{expanded} (the default catalog "
                    "nests 7); check the brackets and the indentation here",
                )
            if levels and enclosing:
                enclosing[-1].levels = max(enclosing[-1].levels, levels + 1)
    except YAMLError:
        return None
    return None


@dataclass
class _Open:
    """A map or list being read: its anchor, the values before it, the levels in it."""

    anchor: str | None
    nodes_before: int
    chars_before: int
    levels: int = 1


def read_utf8(path: Path) -> str:
    """A rules or calendar file's text; one that is not UTF-8 is refused at the first byte
    that is not (it ended `rules validate` and the worker's start in a traceback)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RulesError(
            [
                RuleProblem(
                    str(path),
                    line,
                    col,
                    f"byte {data[exc.start]:#04x} is not UTF-8: save the file as UTF-8",
                )
            ]
        ) from None


def yaml_problem(name: str, text: str, exc: YAMLError) -> RuleProblem:
    """A YAML error as a problem at its position: a syntax error at its mark, a character
    YAML does not allow (ReaderError, no mark) at the position it names."""
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return RuleProblem(name, line, col, f"YAML syntax: {exc.problem}")
    at = getattr(exc, "position", 0) or 0
    line = text.count("\n", 0, at) + 1
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    said = " ".join(str(exc).split("\n")[0].split())  # without "in <unicode string>"
    return RuleProblem(name, line, col, f"YAML: {said}")
