"""What `moments rules validate` warns of in a rule set it accepts: likely mistakes that
are not errors (a tier no subscriber has, say), so the file still loads."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator
from typing import Any

from rules import spec as sp
from rules.catalog import RuleSet
from rules.operators import OPERATORS

CONTRACT_TIERS = ("diamond", "gold", "silver", "standard")
"""The tiers the contract names (profile `tier`, e.g. ...): an operator may have more."""


def warnings(rules: RuleSet, read_elsewhere: Collection[str] = ()) -> list[str]:
    """One line, led by the rule's (or series') `file:line`, per override tier outside the
    contract's (`tier: [glod]` matched nobody, silently: analyst review), per description
    naming `{previous_at}`, which a first-time rule's first moment ever has not (it stayed
    in the text as written), and per series no rule reads (nor the code, `read_elsewhere`:
    the risk score's)."""
    out = []
    for rule in rules.rules:
        at = f"{rule.declared_at}: " if rule.declared_at else ""
        for i, override in enumerate(rule.overrides):
            for tier in sorted(override.tiers or ()):
                if tier in CONTRACT_TIERS:
                    continue
                close = difflib.get_close_matches(tier, CONTRACT_TIERS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                out.append(
                    f"{at}{rule.id}: overrides[{i}] tier {tier!r} is none of the contract's tiers "
                    f"({', '.join(CONTRACT_TIERS)}); {hint}it applies only to profiles whose "
                    "tier says so"
                )
        out.extend(at + said for said in _param_warnings(rule.id, rule.params, rule.spec))
        if "{previous_at" in rule.task.description:
            out.append(
                f"{at}{rule.id}: the task description uses {{previous_at}}, which only a moment "
                "seen before has: on a subscriber's first time ever the rule fires too, and "
                "the text shows '{previous_at}' as written; word it for both, or leave it out"
            )
    out.extend(_unread_series(rules, read_elsewhere))
    return out


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


def _param_warnings(rule_id: str, params: Any, spec: Any) -> list[str]:
    """A param named in the condition without its `$` (`prefix: hot` for `prefix: $hot`)
    is compared as the text written, and a param no condition reads changes nothing: both
    loaded without a word, the rule matching nothing or ignoring its overrides."""
    condition = getattr(spec, "condition", None)
    if not params or condition is None:
        return []
    tree = condition.model_dump(by_alias=True, exclude_none=True)
    out = []
    read = set()
    for op, value in _tests(tree):
        if value.startswith("$"):
            read.add(value[1:])
        elif value in params:
            out.append(
                f"{rule_id}: the condition's {op}: {value!r} is compared as written, and "
                f"{value!r} is a param of this rule; write {op}: ${value} for its value"
            )
    for name in sorted(set(params) - read):
        if not any(value == name for _, value in _tests(tree)):
            out.append(
                f"{rule_id}: param {name!r} is read by no condition (write ${name} where its "
                "value goes): its value and its overrides change nothing"
            )
    return out


def _tests(node: Any, op: str | None = None) -> Iterator[tuple[str, str]]:
    """Each text an operator of the condition compares with: (operator, text)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _tests(value, key if key in OPERATORS else op)
    elif isinstance(node, list):
        for item in node:
            yield from _tests(item, op)
    elif isinstance(node, str) and op is not None:
        yield op, node
