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

import ast
import contextlib
import re
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    NodeEvent,
)

from rules.exceptions import RuleProblem, RulesError
from rules.yamlhints import yaml_hint

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
FOLDER_FACTOR = 4
"""The files of one rules folder together hold at most this many times one file's values and
text: twenty files near the limits of one took 114 s of CPU to validate, and a worker
reloading them runs that beside its batches."""


@dataclass
class Budget:
    """Values and characters counted so far over the files of one load (a rules folder)."""

    nodes: int = 0
    chars: int = 0
    files: list[str] = field(default_factory=list)
    """The files counted, in order."""


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


def beyond_limits(name: str, text: str, budget: Budget | None = None) -> RuleProblem | None:
    """The first reason `text` must not be loaded (too large, nested too deep, too many
    values, an alias inside the value it names), with its position; None when it may be
    loaded. An alias counts as the values and levels its anchor stands for, each time it
    is used: that is what the loaded document holds, and what the checks after loading
    walk. A YAML syntax error is left to the loader, which reports it with its position.

    With a `budget`, the file's values and text also count towards the folder's totals
    (`FOLDER_FACTOR` times one file's), and are added to it when the file is within them."""
    problem = too_large(name, len(text.encode("utf-8")))
    if problem is not None:
        return problem
    budget = budget or Budget()
    nodes, chars = budget.nodes, budget.chars
    max_nodes, max_text = MAX_NODES, MAX_TEXT
    if budget.files:
        max_nodes, max_text = FOLDER_FACTOR * MAX_NODES, FOLDER_FACTOR * MAX_TEXT
    file_nodes_start, file_chars_start = nodes, chars
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
            if chars - file_chars_start > MAX_TEXT:
                return RuleProblem(
                    name,
                    line,
                    col,
                    f"more than {MAX_TEXT:,} characters of text in one file, each alias "
                    "counting as the text it stands for; write shorter values, or split the "
                    "rules into several files of a rules folder",
                )
            if nodes - file_nodes_start > MAX_NODES:
                return RuleProblem(
                    name,
                    line,
                    col,
                    f"more than {MAX_NODES:,} YAML values in one file, each alias counting "
                    "as the values it stands for (the default catalog holds under 1,000); "
                    "split the rules into several files of a rules folder",
                )
            if chars > max_text or nodes > max_nodes:
                return RuleProblem(
                    name,
                    line,
                    col,
                    f"this file and the {len(budget.files)} before it in the folder hold more "
                    f"than {max_nodes:,} YAML values or {max_text:,} characters of text "
                    "together, the most a worker loads; remove the rules no longer in use",
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
    budget.nodes, budget.chars = nodes, chars
    budget.files.append(Path(name).name)
    return None


@dataclass
class _Open:
    """A map or list being read: its anchor, the values before it, the levels in it."""

    anchor: str | None
    nodes_before: int
    chars_before: int
    levels: int = 1


def read_limited(path: Path) -> str:
    """A rules, calendar or policy file's text, read only when it can be: a file over
    `MAX_FILE_BYTES` is refused without being read, so is one that is not a regular file
    (a FIFO blocked the reader until something wrote to it; /dev/zero, of size 0 to `stat`,
    filled the memory), and one that is not UTF-8 at the first byte that is not (it ended
    `rules validate` and the worker's start in a traceback). Raises `RulesError`; an
    `OSError` (no such file, no permission) is the caller's to word."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise RulesError(
            [RuleProblem(str(path), 1, 1, "not a regular file; name a YAML file or a folder")]
        )
    problem = too_large(str(path), info.st_size)
    if problem is None:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # not more, should it have grown since
        problem = too_large(str(path), len(data))
    if problem is not None:
        raise RulesError([problem])
    kind = _events_kind(path, data)
    if kind is not None:  # it was told its first byte is not UTF-8, or YAML's syntax
        said = (
            f"a {kind} file (events?), not YAML: events go to --events (moments backtest, "
            "moments rules test); give a YAML file here"
        )
        raise RulesError([RuleProblem(str(path), 1, 1, said)])
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


def _events_kind(path: Path, data: bytes) -> str | None:
    """What an events file given for a YAML one is (gzip, CSV, JSON lines), by its first
    bytes or its name; None for any other file, read as YAML (JSON is YAML too)."""
    name = path.name.lower()
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if name.endswith(".csv"):
        return "CSV"
    if name.endswith((".jsonl", ".ndjson")):
        return "JSON lines"
    return None


def yaml_problem(name: str, text: str, exc: YAMLError) -> RuleProblem:
    """A YAML error as a problem at its position: a syntax error at its mark, a character
    YAML does not allow (ReaderError, no mark) at the position it names."""
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        hint = yaml_hint(exc, text)
        said = f"YAML syntax: {exc.problem}" + (f"; {hint}" if hint else "")
        return RuleProblem(name, line, col, said)
    at = getattr(exc, "position", 0) or 0
    line = text.count("\n", 0, at) + 1
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    said = " ".join(str(exc).split("\n")[0].split())  # without "in <unicode string>"
    return RuleProblem(name, line, col, f"YAML: {said}")


@dataclass(frozen=True, slots=True)
class ReusedAnchor:
    """An anchor defined again: YAML lets the later one stand for the aliases after it."""

    name: str
    first_line: int
    line: int
    column: int

    def said(self, file: str) -> str:
        return (
            f"{file}:{self.line}:{self.column}: anchor &{self.name} is defined again (first "
            f"at line {self.first_line}): an alias *{self.name} after this line stands for "
            "this one, before it for the first; give each anchor its own name"
        )


_REUSED = re.compile(
    r"""duplicate anchor (?P<name>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    r".*?line (?P<first>\d+), column \d+"
    r".*?second occurrence\s+in [^\n]*?, line (?P<line>\d+), column (?P<column>\d+)",
    re.S,
)
"""ruamel's message: the name as Python's repr writes it (`'welcome'`, `"welcome's"`)."""


@contextlib.contextmanager
def reused_anchors() -> Iterator[list[ReusedAnchor]]:
    """The anchors a YAML load inside the block defines again, in the list it yields once
    the block ends; other warnings go on as they would. ruamel warns of each on stderr, as
    a dump naming `<unicode string>` and its own source line, at every load of the file."""
    found: list[ReusedAnchor] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReusedAnchorWarning)
        yield found
    for seen in caught:
        match = _REUSED.search(str(seen.message))
        if issubclass(seen.category, ReusedAnchorWarning) and match is not None:
            first, line, column = (int(match[k]) for k in ("first", "line", "column"))
            found.append(ReusedAnchor(ast.literal_eval(match["name"]), first, line, column))
        else:  # another warning, or one of a form not read: as it would have gone
            warnings.warn_explicit(seen.message, seen.category, seen.filename, seen.lineno)
