"""Bounds on a rules or calendar file, checked before it is loaded.

Loading is recursive and alias-following: a file nested thousands of levels deep ends in
`RecursionError`, and a few hundred bytes of anchors and aliases ("billion laughs") stand
for millions of values that the checks after loading walk one by one. Both would stop a
worker's event loop, so such a file is refused here, from YAML's event stream (read
without recursion and without expanding aliases), before anything is built from it.
"""

from __future__ import annotations

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    NodeEvent,
)

from rules.exceptions import RuleProblem

MAX_FILE_BYTES = 1024 * 1024
"""The default catalog is 12 KiB; the cap on values binds first for files like it."""
MAX_DEPTH = 64
"""Maps and lists inside one another; the default catalog nests 7 deep."""
MAX_NODES = 50_000
"""Values (scalars, maps, lists): some 1,100 rules like the default catalog's 21, which with
its series hold 910. Bounds the time a worker spends on a file before refusing it."""


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
    """The first reason `text` must not be loaded (too large, an anchor or alias, nested
    too deep, too many values), with its position; None when it may be loaded. A YAML
    syntax error is left to the loader, which reports it with its position."""
    problem = too_large(name, len(text.encode("utf-8")))
    if problem is not None:
        return problem
    depth = nodes = 0
    try:
        for event in YAML(typ="rt").parse(text):
            if isinstance(event, CollectionEndEvent):
                depth -= 1
                continue
            if not isinstance(event, NodeEvent):
                continue
            mark = event.start_mark
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
            if isinstance(event, AliasEvent) or event.anchor is not None:
                sign = "alias *" if isinstance(event, AliasEvent) else "anchor &"
                return RuleProblem(
                    name,
                    line,
                    col,
                    f"YAML {sign}{event.anchor} is not allowed; rules files hold plain data: "
                    "write the value out in full where it is used (anchors and aliases, "
                    "`<<:` merges included, are refused)",
                )
            nodes += 1
            if nodes > MAX_NODES:
                return RuleProblem(
                    name,
                    line,
                    col,
                    f"more than {MAX_NODES:,} YAML values in one file (the default catalog "
                    "holds under 1,000); split the rules into several files of a rules folder",
                )
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return RuleProblem(
                        name,
                        line,
                        col,
                        f"nested more than {MAX_DEPTH} levels deep (the default catalog "
                        "nests 7); check the brackets and the indentation here",
                    )
    except YAMLError:
        return None
    return None
