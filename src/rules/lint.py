"""What `moments rules validate` warns of in a rule set it accepts: likely mistakes that
are not errors (a tier no subscriber has, say), so the file still loads."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator
from typing import Any

from moments.placetext import place_key
from rules import spec as sp
from rules.catalog import RuleSet
from rules.operators import OPERATORS
from rules.rule import CompiledRule
from rules.yamlpos import Path

CONTRACT_TIERS = ("diamond", "gold", "silver", "standard")
"""The tiers the contract names (profile `tier`, e.g. ...): an operator may have more."""


def warnings(rules: RuleSet, read_elsewhere: Collection[str] = ()) -> list[str]:
    """One line, led by the `file:line` of the item it is about (the rule's where the file
    does not say: `CompiledRule.at`), per override tier outside the contract's (`tier:
    [glod]` matched nobody, silently: analyst review), per description naming
    `{previous_at}`, which a first-time rule's first moment ever has not (it stayed in the
    text as written), and per series no rule reads (nor the code, `read_elsewhere`: the
    risk score's)."""
    out = []
    for rule in rules.rules:
        for i, override in enumerate(rule.overrides):
            for tier in sorted(override.tiers or ()):
                if tier in CONTRACT_TIERS:
                    continue
                close = difflib.get_close_matches(tier, CONTRACT_TIERS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                out.append(
                    f"{_at(rule, *_tier_path(rule, i, tier))}{rule.id}: overrides[{i}] tier "
                    f"{tier!r} is none of the contract's tiers ({', '.join(CONTRACT_TIERS)}); "
                    f"{hint}it applies only to profiles whose tier says so"
                )
        out.extend(
            _at(rule, *path) + said
            for path, said in _param_warnings(rule.id, rule.params, rule.spec)
        )
        if "{previous_at" in rule.task.description:
            out.append(
                f"{_at(rule, 'task', 'description')}{rule.id}: the task description uses "
                "{previous_at}, which only a moment seen before has: on a subscriber's first "
                "time ever the rule fires too, and the text shows '{previous_at}' as written; "
                "word it for both, or leave it out"
            )
    out.extend(_unread_series(rules, read_elsewhere))
    out.extend(rules.notes)
    return out


def _at(rule: CompiledRule, *path: str | int) -> str:
    """A warning's lead: `file:line: ` of the rule's item at `path` ('' for a rule made in
    code, which has no file)."""
    at = rule.at(*path)
    return f"{at}: " if at else ""


def _tier_path(rule: CompiledRule, index: int, tier: str) -> tuple[str | int, ...]:
    """Where the override's `tier` names `tier` (folded, as `Override` keeps it): the list
    item that does, or the `tier:` written as one text."""
    written = getattr(getattr(rule.spec, "overrides", [None] * (index + 1))[index], "tier", None)
    if isinstance(written, list):
        for j, item in enumerate(written):
            if place_key(item) == tier:
                return ("overrides", index, "tier", j)
    return ("overrides", index, "tier")


def _unread_series(rules: RuleSet, read_elsewhere: Collection[str]) -> list[str]:
    """A declared series that no condition reads is still kept, its windows in every
    subscriber's record (and the state store's memory), loaded without a word."""
    read = set(read_elsewhere)
    for rule in rules.rules:
        condition = getattr(rule.spec, "condition", None)
        for node in sp.walk(condition) if condition is not None else ():
            if isinstance(node, sp.SeriesCond):
                read.add(node.series)
            elif isinstance(node, sp.BaselineCond):
                read.add(node.baseline)
            elif isinstance(node, sp.ShareCond):
                read |= {node.share, node.of}
    return [
        f"{series.declared_at}: series {name!r} is read by no rule: every subscriber's "
        "record keeps its windows for nothing; read it in a condition, or take it out"
        for name, series in rules.series.items()  # as declared: file by file, in order
        if name not in read
    ]


def _param_warnings(rule_id: str, params: Any, spec: Any) -> list[tuple[Path, str]]:
    """A param named in the condition without its `$` (`prefix: hot` for `prefix: $hot`)
    is compared as the text written, and a param no condition reads changes nothing: both
    loaded without a word, the rule matching nothing or ignoring its overrides. Each with
    the path of its item in the rule (the text compared, the param declared)."""
    condition = getattr(spec, "condition", None)
    if not params or condition is None:
        return []
    tree = condition.model_dump(by_alias=True, exclude_none=True)
    out: list[tuple[Path, str]] = []
    read = set()
    for op, value, path in _tests(tree, None, ("condition",)):
        if value.startswith("$"):
            read.add(value[1:])
        elif value in params:
            out.append(
                (
                    path,
                    f"{rule_id}: the condition's {op}: {value!r} is compared as written, and "
                    f"{value!r} is a param of this rule; write {op}: ${value} for its value",
                )
            )
    for name in sorted(set(params) - read):
        if not any(value == name for _, value, _ in _tests(tree, None, ())):
            out.append(
                (
                    ("params", name),
                    f"{rule_id}: param {name!r} is read by no condition (write ${name} where "
                    "its value goes): its value and its overrides change nothing",
                )
            )
    return out


def _tests(node: Any, op: str | None, path: Path) -> Iterator[tuple[str, str, Path]]:
    """Each text an operator of the condition compares with: (operator, text, its path:
    the condition's as dumped, which is the rules file's for a condition written in full;
    `CompiledRule.at` falls back to the deepest part the file has)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _tests(value, key if key in OPERATORS else op, (*path, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _tests(item, op, (*path, i))
    elif isinstance(node, str) and op is not None:
        yield op, node, path
