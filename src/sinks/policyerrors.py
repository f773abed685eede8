"""A refused dispatch policy's errors as a manager reads them: each at its line and
column in the file, with what to write instead of pydantic's words ("unable to parse
string as an integer", "Input should be a valid dictionary" named no fix)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from moments.errortext import error_text
from moments.models import Channel
from rules.yamlpos import position

KEY = "[key]"
"""The part pydantic adds to an error's location when a mapping's key is refused."""


def _channel_key(word: object) -> str:
    names = [c.value for c in Channel]
    if str(word).casefold() in names:  # `SMS`: channels are written in lower case
        return f"{str(word)!r} is not a channel; did you mean {str(word).casefold()!r}?"
    close = difflib.get_close_matches(str(word), names, n=1)
    if close:
        return f"{str(word)!r} is not a channel; did you mean {close[0]!r}?"
    return f"{str(word)!r} is not a channel: write one of {', '.join(names)}"


def _as_written(value: object) -> str:
    """A YAML value as the file wrote it: `true`, not Python's `True`."""
    if isinstance(value, bool) or value is None:
        return "null" if value is None else str(value).lower()
    return repr(value)


def message(error: Mapping[str, Any]) -> str:
    """What is wrong with one value and what to write."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "enum" and error["loc"] and error["loc"][-1] == KEY:
        return _channel_key(value)
    if kind == "string_type" and error["loc"] and error["loc"][-1] == KEY:
        # A key written as a number is its text (`010`, `10`: `rules.yamlpos.NamesAsWritten`)
        if isinstance(value, bool):
            said = str(value).lower()
            return f'{said} is read as yes or no, not a name: write it in quotes, "{said}"'
        if value is None:
            return "an empty key (null, ~) is not a name: write the region, rule or channel"
    if kind in {"int_parsing", "int_from_float", "int_type"}:
        return f"{value!r} is not a count: write a whole number, e.g. 40"
    if kind in {"time_parsing", "time_type"}:
        return f'{value!r} is not a time of day: write HH:MM, e.g. "09:00"'
    if kind in {"dict_type", "model_type"} and value is None:  # `outcomes:` and no more
        return "empty: write its entries under it, or remove the line for the default"
    if kind in {"dict_type", "model_type"} and not error["loc"]:  # the whole file
        return (
            f"the dispatch policy is {_as_written(value)}, not a mapping: write its settings "
            "as `name: value` lines (timezone:, capacity:, hours: ...)"
        )
    if kind in {"dict_type", "model_type"}:  # pydantic named the model's class
        return (
            f"{_as_written(value)} is not a mapping: write its settings under it, one "
            "`name: value` a line indented below, or in braces, {name: value}"
        )
    if kind in {"greater_than_equal", "less_than_equal"}:
        bound, side = ("ge", ">=") if kind == "greater_than_equal" else ("le", "<=")
        size = "small" if side == ">=" else "large"
        limit = ctx.get(bound)
        shown = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
        return f"{value!r} is too {size}: write a number {side} {shown}"
    return error_text(error)


def _item_named(doc: Any, loc: Sequence[str | int], said: str) -> str | int | None:
    """The index of the item of the list at `loc` that `said` begins with (`13:00-25:00:
    hour must be ...`): a list of windows or days is checked whole, so pydantic's error
    is the list's, and a bad item on the fourth line of a block list was reported at
    its key's line. Likewise the key of the mapping at `loc` (`nj: the same region as
    'NJ'`: the capacity's regions are checked together)."""
    node = doc
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            node = node[part]
        else:
            return None
    if isinstance(node, CommentedMap):
        return next((k for k in node if isinstance(k, str) and said.startswith(f"{k}:")), None)
    if not isinstance(node, CommentedSeq):
        return None
    for i, item in enumerate(node):
        if isinstance(item, str) and said.startswith(f"{item}:"):
            return i
    return None


def located(doc: Any, error: Mapping[str, Any]) -> tuple[int, int, str, str]:
    """Line, column (1-based), the field as written (`capacity.NJ.manager`) and the message;
    line 1 column 1 when the document could not be read with positions. An error of a
    whole list that names one of its items is at that item (`_item_named`)."""
    loc: Sequence[str | int] = tuple(p for p in error["loc"] if isinstance(p, str | int))
    field = [str(p) for p in loc if p != KEY]
    if loc and loc[-1] == KEY and isinstance(error.get("input"), bool) and field:
        field[-1] = str(error["input"]).lower()  # pydantic says a key true as 1
    at_key = bool(loc and loc[-1] == KEY) or error.get("input", "") is None
    said = message(error)
    path = [p for p in loc if p != KEY]
    if not at_key and (item := _item_named(doc, path, said)) is not None:
        path.append(item)
    try:
        line, col = position(doc, path, at_key)
    except (AttributeError, TypeError):  # a plain document: no positions kept
        line, col = 1, 1
    return line, col, ".".join(field), said
