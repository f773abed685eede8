"""Each rule in plain words, for `moments rules explain`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from moments.models import Channel
from rules import spec as s
from rules.catalog import RuleSet
from rules.conditions import event_fields, numeric_params, produced_names, waits_for_history
from rules.gating import describe
from rules.operators import NUMERIC_OPS, number
from rules.rule import CompiledRule

_OPS = {
    "eq": "is",
    "ne": "is not",
    "in": "is one of",
    "not_in": "is none of",
    "prefix": "starts with",
    "gt": "is above",
    "gte": "is at least",
    "lt": "is below",
    "lte": "is at most",
}
_PERIOD_WORDS = {"day": "day", "week": "week (Monday to Sunday)", "month": "calendar month"}


def explain(
    rules: RuleSet,
    rule_id: str | None = None,
    dispatch: Callable[[str, Channel], str] | None = None,
) -> list[str]:
    """Paragraphs, one per rule (or only `rule_id`), then the do-not-disturb gates and
    special days of the whole catalog; raises KeyError for an unknown id. `dispatch`
    (`DispatchPolicy.describe_rule`) adds what dispatch does with each rule's task."""
    chosen = [r for r in rules.rules if rule_id is None or r.id == rule_id]
    if rule_id is not None and not chosen:
        raise KeyError(rule_id)
    paragraphs = [explain_rule(rule) for rule in chosen]
    if dispatch is not None:
        paragraphs = [
            f"{text}\n  {dispatch(rule.id, rule.spec.task.channel)}"
            for text, rule in zip(paragraphs, chosen, strict=True)
        ]
    if rule_id is None:
        gates = "\n".join(f"  {line}" for line in describe(rules.gating))
        paragraphs.append(f"Do-not-disturb, for every task:\n{gates}")
        special = rules.special
        if special.rules:
            paragraphs.append(
                f"Special days are looked at once a day at {special.local_hour:02d}:00 in "
                f"each subscriber's time zone ({rules.gating.timezone} when the profile names "
                "none), and again on a profile update later that day; "
                f"contract expiry is due {special.lead_days} days ahead (unless a rule gives "
                "its own lead_days); holidays: " + ", ".join(special.calendar.keys()) + "."
            )
    return paragraphs


def explain_rule(rule: CompiledRule) -> str:
    spec: s.RuleSpec = rule.spec
    lines = [f"{rule.id} (version {rule.version}): {rule.description}"]
    types = [t.value for t in spec.on]
    # "each usage or topup event": "each usage, topup event" read as a list of two things.
    on = " or ".join([", ".join(types[:-1]), types[-1]] if len(types) > 1 else types)
    if rule.evaluate == "special_day":
        lines.append("  Looks once a day at the local hour (see special days below).")
    elif rule.period is None:
        lines.append(
            f"  Looks at each {on} event"
            + (f" where {_when(spec.when)}" if spec.when else "")
            + "."
        )
    else:
        lines.append(
            f"  Runs when a {_PERIOD_WORDS[rule.period]} closes, in the subscriber's time zone."
        )
    if spec.condition is not None:
        lines.append(f"  Fires when {_cond(spec.condition, spec)}.")
    else:
        lines.append("  Fires on every such event.")
    for override in spec.overrides:
        who = " and ".join(
            f"{name} {_listed(value)}"
            for name, value in (("region", override.region), ("tier", override.tier))
            if value is not None
        )
        numeric = numeric_params(spec.condition) if spec.condition is not None else {}
        values = ", ".join(
            f"{k} = {_read(v) if k in numeric else v}" for k, v in override.params.items()
        )
        lines.append(f"  For {who}: {values}.")
    t = spec.task
    once = f"; at most once per subscriber every {t.cooldown}" if t.cooldown else ""
    lines.append(
        f"  Creates a task '{t.type}' ({t.family.value}) for {t.channel.value}, "
        f"priority {t.priority}, action {t.action}, worthless after {t.ttl}{once} "
        f"({t.purpose} contact)."
    )
    names = produced_names(spec.condition, rule.period is None) if spec.condition else set()
    if names:
        lines.append(
            "  Its task's params (what a description or a consumer's template may use): "
            + ", ".join(sorted(names))
            + "."
        )
    if rule.period is None and rule.evaluate != "special_day":
        lines.append(
            f"  Its description may also name the fields of the {on} event it fires on: "
            + ", ".join(sorted(event_fields(spec.on)))
            + "."
        )
    if rule.shadow:
        lines.append(
            "  In shadow mode: runs and is counted (moments_shadow_moments_total), makes no task."
        )
    return "\n".join(lines)


def _listed(value: str | list[str]) -> str:
    return value if isinstance(value, str) else " or ".join(value)


def _read(value: Any) -> Any:
    """A threshold as the number it is read as: digits written with a leading zero are
    text to the rules (`in: [0086]`), but a bound (`gte: 05`, a param `least: 08`)
    compares as the number, 5 or 8, which `explain` showed as "05"."""
    if not isinstance(value, str) or value.startswith("$"):
        return value
    read = number(value)
    if read is None or not math.isfinite(read):
        return value
    return int(read) if read.is_integer() else read


def _whole(value: float) -> int | float:
    """`10` for the float a rule's `min_baseline: 10` is read as: explain said "at least
    10.0" of what the analyst wrote 10, where its thresholds show as written (analyst
    walk)."""
    return int(value) if value.is_integer() else value


def _value(value: Any, spec: s.RuleSpec, numeric: bool = False) -> str:
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        held = spec.params.get(name, "?")
        return f"{_read(held) if numeric else held} (param {name})"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(_read(value) if numeric else value)


def _ops(node: s.Operators, spec: s.RuleSpec) -> str:
    given = node.given()
    parts = [f"{_OPS[op]} {_value(v, spec, op in NUMERIC_OPS)}" for op, v in given.items()]
    if not parts:
        return "is present"
    said = " and ".join(parts)
    if isinstance(node, s.FieldCond | s.ProfileCond) and given.keys() <= {"ne", "not_in"}:
        return f"{said}, or has none"  # a value that is not there passes ne and not_in
    return said


def _plain(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _when(when: dict[str, Any]) -> str:
    parts = []
    for name, test in when.items():
        if isinstance(test, dict):
            parts.append(
                " and ".join(
                    f"{name} {_OPS.get(op, op)} {_read(v) if op in NUMERIC_OPS else _plain(v)}"
                    for op, v in test.items()
                )
            )
        elif isinstance(test, list):
            parts.append(f"{name} is one of {', '.join(str(v) for v in test)}")
        else:
            parts.append(f"{name} is {test}")
    return " and ".join(parts)


def _cond(node: Any, spec: s.RuleSpec, negated: bool = False) -> str:
    """`node` in words; `negated` under an odd number of `not:` (a series test there
    waits for the history whatever its operators)."""
    if isinstance(node, s.AllCond):
        return "all of (" + "; ".join(_cond(c, spec, negated) for c in node.all) + ")"
    if isinstance(node, s.AnyCond):
        return "any of (" + "; ".join(_cond(c, spec, negated) for c in node.any) + ")"
    if isinstance(node, s.NotCond):
        return "not (" + _cond(node.not_, spec, not negated) + ")"
    if isinstance(node, s.FieldCond):
        return f"the event's {node.field} {_ops(node, spec)}"
    if isinstance(node, s.ProfileCond):
        return f"the profile's {node.profile} {_ops(node, spec)}"
    if isinstance(node, s.FirstTimeCond):
        if node.lookback:
            return f"it is the first {node.first_time} seen for the subscriber in {node.lookback}"
        return f"it is the first time the subscriber shows this {node.first_time}"
    if isinstance(node, s.ChangedCond):
        return f"{node.changed} differs from the last one seen (the first one is a baseline)"
    if isinstance(node, s.SeriesCond):
        span = "this window" if node.last == 1 else f"this window and the {node.last - 1} before"
        waits = ""
        if waits_for_history(node, negated):
            waits = (
                " (judged once the subscriber's history covers those windows, not the "
                "partial one it began in; it begins at their first event of any kind, so "
                f"one with no event in {node.series} is judged too)"
            )
        if node.agg in ("avg", "max"):
            waits += " (not judged when those windows hold no event)"
        return f"the {node.agg} of {node.series} over {span} {_ops(node, spec)}{waits}"
    if isinstance(node, s.BaselineCond):
        measure = (
            "this window divided by the average of"
            if node.measure == "ratio"
            else "the change of this window against the average of"
        )
        floor = (
            f", judged only when that average is at least {_whole(node.min_baseline)}"
            if node.min_baseline
            else ""
        )
        history = (
            " (from the subscriber's first event in the series on, never the window it"
            " fell in, a partial one)"
            if node.agg in ("sum", "count")
            else ""
        )
        return (
            f"{node.baseline} ({node.agg}): {measure} the {node.windows} windows before"
            f"{history} {_ops(node, spec)}{floor}"
        )
    if isinstance(node, s.ShareCond):
        return (
            f"the share of {node.share} in {node.of} {_ops(node, spec)} "
            f"(with at least {_whole(node.min_total)} in all)"
        )
    if isinstance(node, s.OccasionCond):
        kinds = [node.occasion] if isinstance(node.occasion, str) else list(node.occasion)
        only = f" ({', '.join(node.holidays)})" if node.holidays else ""
        if node.lead_days is not None:
            only += f" (from {node.lead_days} days before the contract ends)"
        several = (
            " (on a day of several, a task for each, judged in the order birthday, join "
            "anniversary, contract expiry, holiday)"
            if len(kinds) > 1
            else ""
        )
        return (
            "it is the subscriber's "
            + " or ".join(k.replace("_", " ") for k in kinds)
            + only
            + several
        )
    if isinstance(node, s.AbsenceCond):
        sources = " or ".join(t.value for t in spec.on)
        return f"the subscriber has had no {sources} event for {node.absence}"
    return str(node)
