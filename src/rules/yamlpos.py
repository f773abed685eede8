"""Where a node of a loaded rules or calendar file is: the line and column that errors
found after loading (pydantic's, our checks') point at."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor, SafeConstructor
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode


def _text(loader: Any, node: Any) -> Any:
    return loader.construct_scalar(node)


class TextDates(RoundTripConstructor):
    """Reads YAML timestamps as text, so pydantic checks them and a bad date such as
    2026-02-30 is reported at its position instead of failing the whole load."""


class SafeTextDates(SafeConstructor):
    """`TextDates` for a file read as plain data (`YAML(typ="safe")`)."""


TextDates.add_constructor("tag:yaml.org,2002:timestamp", _text)
SafeTextDates.add_constructor("tag:yaml.org,2002:timestamp", _text)

_LEADING_ZERO = re.compile(r"0[0-9]+")


def _digits_or_int(loader: Any, node: Any) -> Any:
    """Digits written with a leading zero as the text written (a number where the model
    wants one: pydantic reads `09` as 9); any other integer as YAML reads it. `in:
    [01012345, 0086]`, a Beijing landline and China's calling code, read as the numbers
    1012345 and 86, and matched no event's `counterparty`, silently."""
    if isinstance(node.value, str) and _LEADING_ZERO.fullmatch(node.value):
        return node.value
    # A plain int: the round-trip loader gives `0` (and `1_000`, `0x1f`) as its ScalarInt,
    # which the models' `float | int | str` read as a float: `p: 0` was the param 0.0, and
    # `prefix: $p` looked for numbers beginning with "0.0".
    return int(loader.construct_yaml_int(node))


class DigitsAsWritten(RoundTripConstructor):
    """Reads digits written with a leading zero as text (`_digits_or_int`): rules files."""


DigitsAsWritten.add_constructor("tag:yaml.org,2002:int", _digits_or_int)

_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


def _number_keys_as_text(root: Node) -> None:
    """Every key written as a plain number (`010`, `10`, `1.5`) tagged as text, to be read
    as written: keys of a file whose maps are all keyed by names (the dispatch policy's
    regions, rule ids, channels)."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:  # an alias is the node it names
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if key.tag in _NUMBER_TAGS:
                    key.tag = "tag:yaml.org,2002:str"
                todo += [key, value]
        elif isinstance(node, SequenceNode):
            todo += node.value


class NamesAsWritten(SafeTextDates):
    """`SafeTextDates` where digits with a leading zero are text (`_digits_or_int`), as in a
    rules file, and a key written as a number is its text (`_number_keys_as_text`): the
    dispatch policy, whose maps are keyed by names. A region key `010` (Beijing's area
    code) was read as 10 and `10` as a number, each refused "Input should be a valid
    string" while a rules file's `region: 010` read "010"."""

    def construct_document(self, node: Any) -> Any:
        _number_keys_as_text(node)
        return super().construct_document(node)


class NamesAsWrittenAt(TextDates):
    """`NamesAsWritten` keeping each node's line and column (`YAML(typ="rt")`)."""

    def construct_document(self, node: Any) -> Any:
        _number_keys_as_text(node)
        return super().construct_document(node)


NamesAsWritten.add_constructor("tag:yaml.org,2002:int", _digits_or_int)
NamesAsWrittenAt.add_constructor("tag:yaml.org,2002:int", _digits_or_int)


def key_at(node: CommentedMap, key: Any) -> tuple[int, int] | None:
    """Line and column (0-based) of `key` in `node`; None for a key merged in with `<<:`,
    which ruamel keeps no position of."""
    try:
        line, col = node.lc.key(key)
    except KeyError:
        return None
    return line, col


def position(doc: Any, loc: Sequence[str | int], at_key: bool = False) -> tuple[int, int]:
    """Line and column (1-based) of the deepest node of `loc` (a pydantic error location)
    present in the document: of a scalar value itself, of the key holding a mapping or a
    list (of the key whatever the value with `at_key`). A key merged in with `<<:` has no
    position of its own: the map holding it is given."""
    node, line, col = doc, 1, 1
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            child = node[part]
            if at_key or isinstance(child, CommentedMap | CommentedSeq):
                pos = key_at(node, part)
            else:
                try:
                    pos = node.lc.value(part)
                except KeyError:
                    pos = None
            if pos is None:
                break
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            child = node[part]
            pos = node.lc.item(part)
        else:
            break
        line, col = pos[0] + 1, pos[1] + 1
        node = child
    return line, col


Path = tuple[str | int, ...]


def lines_within(node: Any) -> dict[Path, int]:
    """The line (1-based) of each node under `node` (a rules file's rule, say), by its path
    from there (keys and list indexes, as pydantic's locations): a scalar's own line, a
    map's or a list's that of the key holding it, a list item's its own. A key merged in
    with `<<:` (no position) and what it holds are left out."""
    out: dict[Path, int] = {}
    todo: list[tuple[Path, Any]] = [((), node)]
    seen: set[int] = set()
    while todo:
        path, here = todo.pop()
        if id(here) in seen:  # an alias is the node it names: its first path stands
            continue
        seen.add(id(here))
        children: list[tuple[Path, Any]] = []
        if isinstance(here, CommentedMap):
            for key, child in here.items():
                container = isinstance(child, CommentedMap | CommentedSeq)
                try:
                    line = (here.lc.key(key) if container else here.lc.value(key))[0]
                except KeyError:
                    continue
                out[(*path, key)] = line + 1
                children.append(((*path, key), child))
        elif isinstance(here, CommentedSeq):
            for i, child in enumerate(here):
                out[(*path, i)] = here.lc.item(i)[0] + 1
                children.append(((*path, i), child))
        # in the file's order (a stack: the first child on top), so that the first path to
        # a node, the anchor's, walks it, and an alias after it keeps its own line: walked
        # last child first, an alias took the anchor's item lines from it
        todo.extend(reversed(children))
    return out


def line_of(lines: Mapping[Path, int], path: Sequence[str | int]) -> int | None:
    """The line `lines_within` gives the deepest node of `path` it holds (None: none)."""
    for end in range(len(path), 0, -1):
        if (found := lines.get(tuple(path[:end]))) is not None:
            return found
    return None
