"""Where a node of a loaded rules or calendar file is: the line and column that errors
found after loading (pydantic's, our checks') point at."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor, SafeConstructor


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
    return RoundTripConstructor.construct_yaml_int(loader, node)


class DigitsAsWritten(RoundTripConstructor):
    """Reads digits written with a leading zero as text (`_digits_or_int`): rules files."""


DigitsAsWritten.add_constructor("tag:yaml.org,2002:int", _digits_or_int)


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
