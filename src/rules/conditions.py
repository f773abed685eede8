"""Compile a rule's `condition:` tree into plain closures over an `Env`.

Every node records the values it looked at in `env.out` (they become the task's
params: the values against the thresholds). Nodes that remember something
(first_time, changed) update the subscriber's state whether or not the rule
fires, so `all`/`any` evaluate every child rather than stopping early.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from moments.models import EventType, topup_channel
from moments.placetext import PLACE_FIELDS, folded, folded_spec
from rules import spec as s
from rules.base import Condition, Env
from rules.contract import (
    Carried,
    compared,
    event_carried,
    event_values,
    holds_number,
    never_carried,
    profile_carried,
    profile_list,
    profile_values,
    refusal,
    tested,
)
from rules.durations import parse_duration
from rules.hints import known_fields
from rules.operators import (
    NUMERIC_OPS,
    Members,
    bound_test,
    empty_list,
    member,
    members_of,
    number,
    number_hint,
    prefixes_of,
    same,
    starts_with,
)
from rules.series import Series
from rules.special_days import DEFAULT_LEAD_DAYS

Path = tuple[str | int, ...]
Report = Callable[[Path, str], None]
Getter = Callable[[Env], Any]


@dataclass(frozen=True)
class Scope:
    """What a rule's condition may refer to, for checks at load time."""

    fields: set[str]
    series: Mapping[str, Series]
    params: Mapping[str, Any]
    period: str | None
    """The window period of a close-evaluated rule; None for `evaluate: event`."""
    sources: tuple[str, ...]
    """Codes of the rule's event types (absence looks at their latest times)."""
    profile_fields: set[str]
    special_day: bool = False
    """True for `evaluate: special_day` rules (occasions are known, no event)."""
    event_types: tuple[EventType, ...] = ()
    overrides: tuple[Mapping[str, Any], ...] = ()
    """The params of each override, in order (a `$param` has a value in each)."""
    lead_days: int = DEFAULT_LEAD_DAYS
    """How early a contract expiry is due for a rule that gives no `lead_days` of its own
    (the catalog's `special_days.lead_days`)."""

    def param_values(self, name: str) -> Iterator[tuple[Path, Any]]:
        """Where param `name` is given a value in the rule (params, then each override
        that sets it) and that value."""
        if name in self.params:
            yield ("params", name), self.params[name]
        for i, override in enumerate(self.overrides):
            if name in override:
                yield ("overrides", i, "params", name), override[name]


def compile_condition(node: Any, scope: Scope, path: Path, report: Report) -> Condition:
    """A closure for one node; problems go to `report` with their path."""
    if isinstance(node, s.AllCond | s.AnyCond):
        items = node.all if isinstance(node, s.AllCond) else node.any
        key = "all" if isinstance(node, s.AllCond) else "any"
        children = [
            compile_condition(c, scope, (*path, key, i), report) for i, c in enumerate(items)
        ]
        # Every child runs (no short-circuit): first_time and changed must see each event.
        if isinstance(node, s.AllCond):
            return lambda env: all([c(env) for c in children])  # noqa: C419
        return lambda env: any([c(env) for c in children])  # noqa: C419
    if isinstance(node, s.NotCond):
        child = compile_condition(node.not_, scope, (*path, "not"), report)
        return lambda env: not child(env)
    if isinstance(node, s.FieldCond):
        _needs_event(scope, path, report, "field")
        _known_field(node.field, scope, (*path, "field"), report)
        name = node.field
        on = ", ".join(t.value for t in scope.event_types)
        _contract_values(
            f"{name} of {on} events",
            event_values(scope.event_types, name),
            event_carried(scope.event_types, name),
            node,
            scope,
            path,
            report,
        )
        _refuse_null_comparisons("field", name, node, path, report)
        return _compare(
            name,
            lambda env: getattr(env.event, name, None),
            node,
            scope,
            path,
            report,
            place=name in PLACE_FIELDS,
        )
    if isinstance(node, s.ProfileCond):
        if node.profile not in scope.profile_fields:
            report(
                (*path, "profile"),
                f"{node.profile!r} is not a profile field; known: "
                + ", ".join(sorted(scope.profile_fields)),
            )
        pname = node.profile
        if profile_list(pname):
            _whole_list(pname, node, path, report)
        allowed = profile_values(pname)
        _contract_values(
            f"profile {pname}", allowed, profile_carried(pname), node, scope, path, report
        )
        _refuse_null_comparisons("profile", pname, node, path, report)
        return _compare(
            f"profile_{pname}",
            lambda env: env.state.profile.get(pname),
            node,
            scope,
            path,
            report,
            place=pname in PLACE_FIELDS,
        )
    if isinstance(node, s.FirstTimeCond):
        _needs_event(scope, path, report, "first_time")
        _known_field(node.first_time, scope, (*path, "first_time"), report)
        lookback = parse_duration(node.lookback) if node.lookback else None
        return _first_time(node.first_time, lookback, path.count("not") % 2 == 1)
    if isinstance(node, s.ChangedCond):
        _needs_event(scope, path, report, "changed")
        _known_field(node.changed, scope, (*path, "changed"), report)
        return _changed(node.changed, path.count("not") % 2 == 1)
    if isinstance(node, s.SeriesCond):
        series = _series(node.series, scope, (*path, "series"), report)
        if series is None:
            return _never
        check = _compare(node.series, _aggregate(series, node), node, scope, path, report)
        negated = path.count("not") % 2 == 1
        judged = _with_history(series, node, check, negated)
        if node.agg in _NONE_WHEN_EMPTY:  # no value over windows without events
            return _judged_only(node.series, judged, negated)
        return judged
    if isinstance(node, s.BaselineCond):
        series = _series(node.baseline, scope, (*path, "baseline"), report)
        if series is None:
            return _never
        check = _compare(
            f"{node.baseline}_{node.measure}", _baseline(series, node), node, scope, path, report
        )
        return _judged_only(f"{node.baseline}_{node.measure}", check, path.count("not") % 2 == 1)
    if isinstance(node, s.ShareCond):
        part = _series(node.share, scope, (*path, "share"), report)
        whole = _series(node.of, scope, (*path, "of"), report)
        if part is None or whole is None:
            return _never
        if part.period != whole.period:
            report((*path, "of"), f"{node.share!r} and {node.of!r} need the same period")
        check = _compare(
            f"{node.share}_share", _share(part, whole, node), node, scope, path, report
        )
        return _judged_only(f"{node.share}_share", check, path.count("not") % 2 == 1)
    if isinstance(node, s.OccasionCond):
        if not scope.special_day:
            report(
                (*path, "occasion"),
                "occasion is judged once a day at the local hour: use it in a rule with "
                "evaluate: special_day",
            )
        kinds = frozenset([node.occasion] if isinstance(node.occasion, str) else node.occasion)
        if node.lead_days is not None and "contract_expiry" not in kinds:
            report(
                (*path, "lead_days"),
                "lead_days is how early a contract_expiry is due, and this condition has no "
                "contract_expiry occasion: remove lead_days, or add contract_expiry",
            )
        lead = node.lead_days if node.lead_days is not None else scope.lead_days
        return _occasion(kinds, frozenset(node.holidays) if node.holidays else None, lead)
    if isinstance(node, s.AbsenceCond):
        if scope.period is None:
            report(
                (*path, "absence"),
                "absence is judged as time passes: use it in a rule with evaluate: daily",
            )
        return _absence(parse_duration(node.absence), scope.sources, path.count("not") % 2 == 1)
    report(path, "unknown condition")  # pragma: no cover - the spec's union forbids it
    return _never


def _whole_list(name: str, node: s.ProfileCond, path: Path, report: Report) -> None:
    """Refuse every comparison of a profile field that holds a list (`opt_out`,
    `quiet_hours`): the list is compared as a whole, so `in: [app_push]` or `eq:` matched
    no subscriber (not one who opted out of app push) and `ne:` or `not_in:` every one,
    and the file loaded. A bare test (is it set) is kept."""
    for op in node.given():
        held = "every" if op in ("ne", "not_in") else "no"
        report(
            (*path, op),
            f"profile {name} holds a list, compared as a whole: {op}: matches {held} "
            f"subscriber, whatever the list holds; test only whether it is set "
            f"({{profile: {name}}}): the gates apply it already (opted-out channels, quiet "
            "hours)",
        )


def _refuse_null_comparisons(
    kind: str, name: str, node: s.Operators, path: Path, report: Report
) -> None:
    """Refuse every comparison written `null` in a condition (`eq: null`, `gte: null`,
    `in: null`, ...), each at its line with the fix. They were read as no operator, a bare
    test, "is present": `eq: null` fired on every event with the value, the opposite of
    what `when: {x: {eq: null}}` means (only events without it), and `gte: null`, `in:
    null` and the like on every event with the value too. `ne: null`, "is not none", says
    what the bare test says, and loads."""
    for attr in sorted(node.model_fields_set & s.Operators.model_fields.keys()):
        if getattr(node, attr) is not None or attr == "ne":
            continue
        op = "in" if attr == "in_" else attr
        if op == "eq":
            fix = (
                f"for one without {name} write not: {{{kind}: {name}}}; for one with it, "
                f"{{{kind}: {name}}}"
            )
        else:
            fix = (
                f"give it a value (a number, a text, a list or a $param), or leave {op}: out "
                f"for 'has a value'"
            )
        report((*path, op), f"{op}: null compares with nothing in a condition: {fix}")


def _never(env: Env) -> bool:
    return False


def _needs_event(scope: Scope, path: Path, report: Report, what: str) -> None:
    if scope.special_day:
        report(path, f"{what} looks at the event, but a special_day rule has none")
    elif scope.period is not None:
        report(
            path,
            f"{what} looks at the event, but this rule runs when a window closes; "
            "use evaluate: event, or a series/baseline condition",
        )


def _known_field(name: str, scope: Scope, path: Path, report: Report) -> None:
    if name not in scope.fields:
        report(
            path,
            f"{name!r} is not a field of these events{known_fields(name, scope.fields)}",
        )


def _series(name: str, scope: Scope, path: Path, report: Report) -> Series | None:
    found = scope.series.get(name)
    if found is None:
        known = ", ".join(sorted(scope.series)) or "none yet"
        report(path, f"unknown series {name!r}; declare it under series: (known: {known})")
        return None
    if scope.period is not None and found.period != scope.period:
        report(
            path,
            f"series {name!r} has period {found.period} but the rule closes {scope.period} "
            "windows; use a series of the same period",
        )
    return found


def _contract_values(
    what: str,
    allowed: tuple[str, ...] | None,
    carried: tuple[Carried, ...],
    node: s.Operators,
    scope: Scope,
    path: Path,
    report: Report,
) -> None:
    """Refuse a value (written, or a `$param`'s in params and each override) that the
    contract never gives the field: `eq: open` for a complaint's status matched nothing,
    and so did `in: [UK, FR]` for a roaming country (UK is a dead letter: GB) or `lt: 0`
    for an amount. `allowed`: the field's values when it lists them; `carried`: what its
    validators take (`rules.contract`)."""
    for op, raw in node.given().items():
        for loc, kind, value in compared(op, raw) if allowed is None else tested(op, raw):
            for where, found in _values_of(op, value, scope, (*path, op, *loc)):
                if allowed is not None:
                    said = refusal(what, kind, found, allowed)
                else:
                    said = never_carried(what, carried, op, kind, found)
                if said is not None:
                    report(where, said)


def _values_of(op: str, value: Any, scope: Scope, where: Path) -> Iterator[tuple[Path, Any]]:
    """The value as written, or each value a `$param` holds (`in: $x` and `prefix: $x`
    hold a comma-separated list), with where it is written."""
    if not (isinstance(value, str) and value.startswith("$")):
        yield where, value
        return
    for at, held in scope.param_values(value[1:]):
        parts = (
            [p.strip() for p in str(held).split(",")]
            if op in ("in", "not_in", "prefix")
            else [held]
        )
        for part in parts:
            yield at, part


def _param(
    value: Any, scope: Scope, path: Path, report: Report, place: bool = False
) -> Callable[[Env], Any]:
    """A constant, or `$name` read from the rule's params (overridden per region/tier);
    `place`: a region's or tier's text, read folded (moments.placetext)."""
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in scope.params:
            known = ", ".join(sorted(scope.params)) or "none"
            report(path, f"unknown param {value!r}; declare it under params: (known: {known})")
        if place:
            return lambda env: folded(env.params.get(name))
        return lambda env: env.params.get(name)
    value = folded_spec(value) if place else value
    return lambda env: value


def _bound(value: Any, scope: Scope, path: Path, report: Report) -> Callable[[Env], Any]:
    """A threshold (`gte: 0100`, `gte: $min`) as the number it reads as, which the task
    carries (`amount_gte`): digits with a leading zero are read as text (`in: [0086]`),
    and a threshold so written reached the consumer as the text "0100", not 100."""
    if isinstance(value, str) and value.startswith("$"):
        param = _param(value, scope, path, report)

        def held(env: Env) -> Any:
            found = param(env)
            return _as_number(found) if isinstance(found, str) else found

        return held
    read = _as_number(value) if isinstance(value, str) else value
    return lambda env: read


def _not_finite(value: Any) -> bool:
    """A threshold YAML or its text reads as NaN or infinity (`.nan`, `.inf`, "nan")."""
    if isinstance(value, str):
        value = None if value.startswith("$") else number(value)
    return isinstance(value, float) and not math.isfinite(value)


def _as_number(text: str) -> Any:
    """`text` as a finite number, else as it is."""
    read = number(text)
    return read if read is not None and math.isfinite(read) else text


def _compare(
    label: str,
    get: Getter,
    node: s.Operators,
    scope: Scope,
    path: Path,
    report: Report,
    place: bool = False,
) -> Condition:
    """`place`: the value is a region or tier, matched whatever its case (eq, ne, in,
    not_in, prefix; moments.placetext); the task records it as written."""
    ops = node.given()
    if not ops:
        if isinstance(node, s.FieldCond | s.ProfileCond):
            return _present(label, get)  # a bare field test means "is present"
        report(path, "add a comparison: one of eq, ne, in, not_in, prefix, gt, gte, lt, lte")
        return _never
    tests: list[Callable[[Env, Any], bool]] = []
    limits: list[tuple[str, Callable[[Env], Any], Callable[[Any, Any], bool]]] = []
    for op, raw in ops.items():
        where = (*path, op)
        if raw == [] and op in ("in", "not_in", "prefix"):
            report(where, empty_list(op, _tested(node, label)))
        elif op in ("in", "not_in", "prefix") and isinstance(raw, str) and raw.startswith("$"):
            _refuse_empty_params(op, raw, _tested(node, label), scope, report)
        if op in NUMERIC_OPS:
            if isinstance(raw, str) and not raw.startswith("$") and number(raw) is None:
                fix = (
                    f"{raw!r} is a param of this rule: write {op}: ${raw} for its value"
                    if raw in scope.params
                    else number_hint(raw)
                )
                report(where, f"{op} needs a number or $param, got {raw!r}: {fix}")
            elif _not_finite(raw):
                # `gte: .nan` compared false with every value: the rule loaded and never fired.
                report(where, f"{op} needs a finite number, got {raw!r}: write a number, e.g. 100")
            limits.append((f"{label}_{op}", _bound(raw, scope, where, report), bound_test(op)))
        elif op in ("in", "not_in"):
            members = _members(raw, scope, where, report, place)
            tests.append(_membership(op == "in", members))
        elif op == "prefix":
            tests.append(_prefix(_prefixes(raw, scope, where, report, place)))
        else:
            tests.append(_equality(op == "eq", _param(raw, scope, where, report, place)))
    if place:
        tests = [_on_folded(test) for test in tests]

    def check(env: Env) -> bool:
        # Every value and bound is recorded before any test (they are the task's params);
        # each bound is read once.
        value = get(env)
        out = env.out
        out[label] = value if not isinstance(value, float) else round(value, 4)
        for name, limit, _ in limits:
            out[name] = limit(env)
        for name, _, compare in limits:
            if not compare(value, out[name]):
                return False
        for test in tests:  # noqa: SIM110  # all() over a generator: a frame per event
            if not test(env, value):
                return False
        return True

    return check


def _refuse_empty_params(op: str, raw: str, what: str, scope: Scope, report: Report) -> None:
    """Refuse, where it is given, a param that holds no value for `in:`/`not_in:`/`prefix:
    $p` (`""`, spaces and commas, null), as `in: []` written in the condition is: `in:`
    then matched only a blank value, `prefix:` nothing, and `not_in:` let every event
    through, and the rule loaded."""
    for at, held in scope.param_values(raw[1:]):
        if not any(part.strip() for part in _listed(held).split(",")):
            written = f"param {raw[1:]!r} ({held!r}, for {op}: {raw})"
            report(at, empty_list(op, what, written))


def _tested(node: s.Operators, label: str) -> str:
    """The value a test compares, in words: "event's counterparty", "profile's tier"."""
    if isinstance(node, s.FieldCond):
        return f"event's {node.field}"
    if isinstance(node, s.ProfileCond):
        return f"profile's {node.profile}"
    return f"value of {label}"


def _present(label: str, get: Getter) -> Condition:
    def check(env: Env) -> bool:
        value = get(env)
        if value is None:
            return False
        env.out[label] = value
        return True

    return check


def _aggregate(series: Series, node: s.SeriesCond) -> Callable[[Env], float | None]:
    agg, last = node.agg, node.last

    def value(env: Env) -> float | None:
        ring = env.state.series.get(series.tag)
        index = env.window(series.period)
        found = series.aggregate(ring, index, agg, last)
        if agg in _NONE_WHEN_EMPTY and not series.aggregate(ring, index, "count", last):
            # The average or the largest of no event is no value, not 0: "the average
            # top-up today is under 20" fired at the close of every day without one.
            return None
        return found

    return value


def _on_folded(test: Callable[[Env, Any], bool]) -> Callable[[Env, Any], bool]:
    return lambda env, value: test(env, folded(value))


def _members(
    raw: Any, scope: Scope, path: Path, report: Report, place: bool = False
) -> Callable[[Env], Members]:
    if isinstance(raw, list):
        members = members_of(folded_spec(raw) if place else raw)
        return lambda env: members
    param = _param(raw, scope, path, report, place)
    if not (isinstance(raw, str) and raw.startswith("$")):
        report(path, "in/not_in take a list, e.g. [10010, 10000], or a $param holding one")
    # "10010, 10000": a space after a comma is no part of the value ("10000" missed).
    return lambda env: members_of(p.strip() for p in _listed(param(env)).split(","))


def _listed(value: Any) -> str:
    """A param's comma-separated list as text: a number is its digits (`p: 0` held no
    value, so `in: $p` matched nothing and `prefix: $p` never fired), a missing one none."""
    return "" if value is None else str(value)


def _membership(inside: bool, members: Callable[[Env], Members]) -> Callable[[Env, Any], bool]:
    """`in` (`inside`) or `not_in`: a missing value is in no list, so it passes `not_in`
    as it passes `ne`."""
    return lambda env, value: member(value, members(env)) == inside


def _equality(equal: bool, expected: Callable[[Env], Any]) -> Callable[[Env, Any], bool]:
    return lambda env, value: same(value, expected(env)) == equal


def _prefixes(
    raw: Any, scope: Scope, path: Path, report: Report, place: bool = False
) -> Callable[[Env], tuple[str, ...]]:
    """The prefixes written, or a `$param`'s (a comma-separated list, as `in: $x`): one was
    taken as the text `$name`, which no value starts with, and the rule never fired."""
    if isinstance(raw, str) and raw.startswith("$"):
        param = _param(raw, scope, path, report, place)
        return lambda env: tuple(p.strip() for p in _listed(param(env)).split(",") if p.strip())
    prefixes = prefixes_of(folded_spec(raw) if place else raw)
    return lambda env: prefixes


def _prefix(prefixes: Callable[[Env], tuple[str, ...]]) -> Callable[[Env, Any], bool]:
    return lambda env, value: starts_with(value, prefixes(env))


def _first_time(key: str, lookback: dt.timedelta | None, negated: bool) -> Condition:
    """`negated`: under an odd number of `not:`, where an event without the field is not
    judged either (true, so that the `not:` is false): `not: {first_time: operator}` ("an
    operator seen before") held for every event naming none."""
    window = lookback.total_seconds() if lookback else None

    def check(env: Env) -> bool:
        value = getattr(env.event, key, None)
        if value is None:
            return negated
        state_key = f"{env.tag}:{value}"
        last = env.state.first_seen.get(state_key)
        if last is None and key in WRITTEN_BEFORE:
            last = _seen_as_written(env.state.first_seen, f"{env.tag}:", str(value), key)
        if last is not None and env.at <= last:
            return False  # seen at or after this event time: late or replayed, never "first"
        seen = env.state.first_seen
        seen[state_key] = env.at
        if len(seen) > MAX_FIRST_SEEN:
            _forget_oldest(seen, f"{env.tag}:", window)
        env.out[key] = value
        if last is not None and (window is None or env.at - last <= window):
            return False
        if window is None:
            env.occurrence = str(value)
        else:
            env.occurrence = f"{value}@{env.at}"  # "first in 60 days" can happen again
            env.out["lookback_days"] = int(window // 86400)
            if last is not None:
                env.out["previous_at"] = dt.datetime.fromtimestamp(last, dt.UTC).isoformat()
        return True

    return check


def _seen_as_written(seen: dict[str, int], prefix: str, value: str, key: str) -> int | None:
    """When `value` was seen in a spelling a version before kept (`WRITTEN_BEFORE`): its
    keys leave for `value`'s, at the latest of their times. Only on a first time."""
    taken = WRITTEN_BEFORE[key]
    older = [k for k in seen if k.startswith(prefix) and taken(k[len(prefix) :]) == value]
    if not older:
        return None
    last = max(seen.pop(k) for k in older)
    seen[prefix + value] = last
    return last


WRITTEN_BEFORE: dict[str, Callable[[str], str]] = {"channel": topup_channel}
"""Fields the models now take otherwise than as written (a top-up's `channel`, without the
spaces around it and in lowercase since 0.1.0), and how: a subscriber's state written
before holds `first_time:` keys and `changed:` values in the spelling as written
(`APP`), which must count as the value taken (`app`). Else the next `APP` top-up after
the upgrade was a first (a second "First top-up by app" SMS, its task id of another
occurrence) and a channel changed from APP to app."""

MAX_FIRST_SEEN = 32
"""First-seen keys a subscriber keeps per rule: the record stays bounded."""


def _forget_oldest(seen: dict[str, int], prefix: str, window: float | None) -> None:
    """Keep a rule's first-seen keys bounded: drop those past the look-back (they can no
    longer stop a "first"), then the oldest beyond MAX_FIRST_SEEN (a value last seen that
    long ago counts as first again: a bound, not an accident)."""
    mine = sorted((at, k) for k, at in seen.items() if k.startswith(prefix))
    newest = mine[-1][0]
    for at, k in mine:
        if window is not None and newest - at > window:
            del seen[k]
    mine = [(at, k) for at, k in mine if k in seen]
    for _, k in mine[: max(0, len(mine) - MAX_FIRST_SEEN)]:
        del seen[k]


IDENTITY: dict[str, Callable[[str], str]] = {"imei": lambda imei: imei[:14], **WRITTEN_BEFORE}
"""What of a field's value `changed:` compares, where more than the text differs: an
IMEI's first 14 digits name the handset (type and serial number); the 15th is a check
digit some systems leave out, and an IMEISV's last two are the software version, which
every system update changes. A value stored before in a spelling now taken otherwise
(`WRITTEN_BEFORE`: a top-up channel's `APP`, now `app`) is the same value."""


def _changed(key: str, negated: bool) -> Condition:
    """`negated`: under an odd number of `not:`, what is not judged (an event without the
    field, a record read late, the first value ever seen) is true, so that the `not:` is
    false: `not: {changed: imei}` ("the same handset") held for every record naming no
    IMEI, and for a subscriber's first."""
    identity = IDENTITY.get(key)

    def check(env: Env) -> bool:
        value = getattr(env.event, key, None)
        if value is None:
            return negated
        value = str(value)
        state = env.state
        tag = env.tag
        if env.at < state.last_at.get(tag, env.at):
            # Read late: a record of the old handset dated before the new one's shows what
            # the line had then; taken as the latest, it made a "new handset" of the old
            # one, and the next record of the new one another.
            return negated
        previous = state.last.get(tag)
        state.last[tag] = value
        state.last_at[tag] = env.at
        env.out[key] = value
        if previous is None:
            return negated  # the first value ever seen is a baseline, not a change
        if previous == value:
            return False
        if identity is not None and identity(previous) == identity(value):
            return False  # the same thing written another way
        env.out[f"previous_{key}"] = previous
        env.occurrence = f"{value}@{env.at}"
        return True

    return check


_NONE_WHEN_EMPTY = frozenset({"avg", "max"})


_GROWS = frozenset({"sum", "count", "max"})
"""Aggregates that windows before the subscriber's history, had they been seen, could only
have raised (the field summed is no negative amount): what is read of fewer windows is a
floor of the true value."""


def _with_history(series: Series, node: s.SeriesCond, check: Condition, negated: bool) -> Condition:
    """A series test over `last` windows that reach back before the subscriber's history
    in the series began, or into the window it began in (joined, or the detector
    started, part-way into it), read those windows as 0: "fewer than 3 calls in 4 weeks"
    fired on a subscriber seen for one week. A `sum`, `count` or `max` so read is a floor
    of the true value, so `gt`/`gte` may be judged (the windows missed could only add),
    but any other test (`lt`, `lte`, `eq`, ...), or any test under an odd number of
    `not:`, is not judged until the history covers the windows: false (true under `not:`,
    so that the `not:` is false), as a baseline waits for its windows. The history in
    such a series begins at the subscriber's first event of any kind (`history_series`),
    so one with no event in the series is judged too, once known that long: none is
    fewer than 3; a record with no window of it (from before the series was declared,
    and no event since) is not judged."""
    if not waits_for_history(node, negated):
        return check
    last = node.last

    def judged(env: Env) -> bool:
        held = check(env)  # records the value and bounds, the task's params, either way
        rings = env.state.series
        first = series.history_since(rings.get(series.tag), rings.get(series.begun_tag))
        if first is None or first > env.window(series.period) - last:
            return negated
        return held

    return judged


def waits_for_history(node: s.SeriesCond, negated: bool) -> bool:
    """Whether a series test is judged only once the subscriber's history in the series
    covers its windows (`_with_history`): a `sum`, `count` or `max` with a test that is no
    "at least" (`gt`, `gte`), or any test under an odd number of `not:` (`negated`)."""
    if node.agg not in _GROWS:
        return False
    return negated or any(op not in ("gt", "gte") for op in node.given())


def history_series(node: Any, negated: bool = False) -> set[str]:
    """The series a condition reads with a test that waits for the history
    (`waits_for_history`). A subscriber's history in such a series begins at their first
    event read with it declared, whatever its type (`Series.begin`): "fewer than 3
    top-ups in 30 days" is judged, and holds, for one who has had none."""
    if isinstance(node, s.NotCond):
        return history_series(node.not_, not negated)
    if isinstance(node, s.AllCond | s.AnyCond):
        children = node.all if isinstance(node, s.AllCond) else node.any
        return set().union(*(history_series(c, negated) for c in children))
    if isinstance(node, s.SeriesCond) and waits_for_history(node, negated):
        return {node.series}
    return set()


def _judged_only(label: str, check: Condition, negated: bool) -> Condition:
    """A baseline or share test that judged nothing (too little history, a baseline below
    `min_baseline` or 0, a total below `min_total`: no value under `label`) is false, and
    true under an odd number of `not:`, so that the `not:` over it is false: taken as
    false there too, `not: {baseline: ...}` fired on every subscriber without the windows.
    A series test over `last:` waits alike (`_with_history`)."""
    if not negated:
        # Only `ne`/`not_in` hold of no value; false all the same.
        def judged(env: Env) -> bool:
            held = check(env)
            return held and env.out.get(label) is not None

        return judged

    def negated_judged(env: Env) -> bool:
        held = check(env)  # records the values and bounds, the task's params, either way
        return held if env.out.get(label) is not None else True

    return negated_judged


def _baseline(series: Series, node: s.BaselineCond) -> Callable[[Env], float | None]:
    agg, windows, floor, measure = node.agg, node.windows, node.min_baseline, node.measure
    name = node.baseline

    def value(env: Env) -> float | None:
        ring = env.state.series.get(series.tag)
        index = env.window(series.period)
        first = series.history_from(ring)
        if first is None or first > index - windows - (agg not in _NONE_WHEN_EMPTY):
            # Not enough of the subscriber's own past yet. For a sum or a count, the window
            # their history began in is no part of it: they joined, or the detector
            # started, part-way into it (a month begun on the 25th made a usual spend of
            # 74 out of 100s, and 150 "twice the usual"). An average or a peak of it is fine.
            return None
        earlier = range(index - windows, index)
        past = [series.aggregate(ring, w, agg) for w in earlier]
        current = series.aggregate(ring, index, agg)
        if current is None or any(p is None for p in past):
            return None
        if agg in _NONE_WHEN_EMPTY and not series.aggregate(ring, index, "count"):
            # Nor is the current window's without events, as an earlier one's: "today's
            # average top-up is half the usual" fired on every day with no top-up.
            return None
        if agg in _NONE_WHEN_EMPTY:
            # The average or peak of a window with no events is no value, not 0: the
            # baseline is over the windows that had any ("the usual top-up", not
            # "the usual daily top-up", which `sum` gives, a quiet day counting 0).
            had = [
                p for w, p in zip(earlier, past, strict=True) if series.aggregate(ring, w, "count")
            ]
            if not had:
                return None
            base = sum(p for p in had if p is not None) / len(had)
        else:
            base = sum(p for p in past if p is not None) / windows
        env.out[name] = current
        env.out[f"{name}_baseline"] = round(base, 4)
        if base <= 0 or base < floor:
            return None
        return _quotient(current / base if measure == "ratio" else (current - base) / base)

    return value


def _share(part: Series, whole: Series, node: s.ShareCond) -> Callable[[Env], float | None]:
    last, floor = node.last, node.min_total

    def value(env: Env) -> float | None:
        index = env.window(part.period)
        a = part.aggregate(env.state.series.get(part.tag), index, "sum", last)
        b = whole.aggregate(env.state.series.get(whole.tag), index, "sum", last)
        if a is None or b is None or b < floor or b <= 0:
            return None
        return _quotient(a / b)

    return value


QUOTIENT_PLACES = 9
"""Places a baseline's ratio or change and a share are compared at: far below any
threshold written (they hold two or three), far above a binary float's error."""


def _quotient(value: float) -> float:
    """A division of amounts as the decimals it stands for: 20.10 against a usual 30 is a
    change of -0.33, which binary floats compute as -0.32999999999999996, so `lte: -0.33`
    did not hold of it (the task would have shown -0.33); a share of 2.10 in 3.00 was
    0.7000000000000001, above `lte: 0.7`."""
    return round(value, QUOTIENT_PLACES)


def _occasion(kinds: frozenset[str], holidays: frozenset[str] | None, lead: int) -> Condition:
    """`lead`: the days before a contract's end its expiry is due for this rule. The
    engine lists a contract expiry from the widest lead of the catalog's rules on, so
    that a rule with a shorter one waits for its own day (from then until the end date,
    as the catalog's lead did: a day missed is caught up)."""

    def check(env: Env) -> bool:
        occasion = env.occasion
        if occasion is None or occasion.kind not in kinds:
            return False
        if occasion.kind == "contract_expiry" and occasion.params.get("days_left", 0) > lead:
            return False
        if holidays is not None and occasion.kind == "holiday":
            # The first of the day's holidays this rule greets: on a day of two (Mid-Autumn
            # on National Day, an operator's own day on Labour Day) the second is its own.
            occasion = next(
                (o for o in (occasion, *occasion.others) if o.params.get("holiday") in holidays),
                None,
            )
            if occasion is None:
                return False
        env.out.update(occasion.params)
        env.occurrence = occasion.occurrence
        return True

    return check


def _absence(duration: dt.timedelta, sources: Sequence[str], negated: bool) -> Condition:
    """`negated`: under an odd number of `not:`, where a subscriber never seen on the
    sources is not judged either (true, so that the `not:` is false): `not: {absence: 7d}`
    ("active in the last 7 days") held for one with only top-ups on a usage rule."""
    seconds = duration.total_seconds()

    def check(env: Env) -> bool:
        seen = [env.state.seen[c] for c in sources if c in env.state.seen]
        if not seen:
            return negated  # never active: nothing to have stopped, nor to be active
        last = max(seen)
        silent = env.at - last
        env.out["silent_days"] = round(silent / 86400, 1)
        env.out["last_seen"] = dt.datetime.fromtimestamp(last, dt.UTC).isoformat()
        if silent < seconds:
            return False
        env.occurrence = f"silent:{last}"  # one task per silence, whichever close noticed it
        return True

    return check


def numeric_params(node: Any) -> dict[str, str]:
    """The params a condition compares as numbers (`gte: $count`), each with the first
    operator that does: such a param must hold a number in params and in every override,
    or the comparison is false for every event (the rule never fires)."""
    found: dict[str, str] = {}
    for child in s.walk(node):
        if isinstance(child, s.Operators):
            for op, raw in child.given().items():
                if op in NUMERIC_OPS and isinstance(raw, str) and raw.startswith("$"):
                    found.setdefault(raw[1:], op)
    return found


def event_fields(event_types: Sequence[EventType]) -> set[str]:
    """Fields every listed event type has (a rule on several types may use only shared ones)."""
    from moments.models import EVENT_MODELS

    sets = [set(EVENT_MODELS[t].model_fields) for t in event_types]
    return set.intersection(*sets) if sets else set()


def number_fields(models: Iterable[type[BaseModel]]) -> set[str]:
    """The fields that hold a number (int, float or Decimal; optional or not) in every one
    of `models`: the money, counts and levels of events and profiles."""
    found = [{n for n, f in m.model_fields.items() if holds_number(f.annotation)} for m in models]
    return set.intersection(*found) if found else set()


def required_fields(node: Any) -> set[str]:
    """Event fields without which the condition is false (so the rule may skip the event)."""
    if isinstance(node, s.AllCond):
        out: set[str] = set()
        for child in node.all:
            out |= required_fields(child)
        return out
    if isinstance(node, s.FirstTimeCond):
        return {node.first_time}
    if isinstance(node, s.ChangedCond):
        return {node.changed}
    if isinstance(node, s.FieldCond):
        ops = node.given()
        # ne/not_in are true of a missing value, and `eq: null` asks for one.
        if ops and "ne" not in ops and "not_in" not in ops and ops.get("eq", "") is not None:
            return {node.field}
        if not ops:
            return {node.field}
    return set()


_NEED_A_VALUE = frozenset({"in", "prefix", "eq", *NUMERIC_OPS})
"""Operators no missing value passes (`ne` and `not_in` do: rules.operators)."""


def needs_value(ops: Mapping[str, Any]) -> bool:
    """Whether a field or profile test with these operators (all of them must hold) is
    false of a missing value; a test with none is "is present"."""
    return not ops or any(op in _NEED_A_VALUE for op in ops)


def present_names(node: Any, holds: bool = True) -> set[str]:
    """Params a firing of the condition always carries with a value: the field or profile
    labels of the tests it needs a value for, a first-time or changed field. With `holds`
    False, those the condition being false needs (what a `not:` over it needs). A test
    under `any:` counts when every branch needs it (`any: [{field: operator, eq: A1},
    {field: operator, eq: Vodafone}]`), one under `not:` when its falsity does (`not:
    {field: operator, ne: A1}`); a test a missing value passes (`ne:`, `not_in:`) needs
    none, nor does one that may have been false."""
    if isinstance(node, s.NotCond):
        return present_names(node.not_, not holds)
    if isinstance(node, s.AllCond | s.AnyCond):
        children = [
            present_names(c, holds) for c in (node.all if isinstance(node, s.AllCond) else node.any)
        ]
        # all: true needs what each child needs; any: true needs what every branch does
        # (one of them held); false the other way round.
        if isinstance(node, s.AllCond) == holds:
            return set().union(*children)
        return set.intersection(*children)
    if isinstance(node, s.FieldCond | s.ProfileCond):
        label = node.field if isinstance(node, s.FieldCond) else f"profile_{node.profile}"
        ops = node.given()
        if holds and needs_value(ops):
            return {label}
        if not holds and ops and not needs_value(ops):
            return {label}  # true of a missing value, so false only of one: `not: {ne: A1}`
        return set()
    if isinstance(node, s.SeriesCond) and node.agg in _NONE_WHEN_EMPTY:
        # Judged only with a value (`_judged_only`), held or not: a `not:` over it is false
        # of no value too.
        return {node.series}
    if isinstance(node, s.FirstTimeCond):
        return {node.first_time}  # false only of a value seen before, under not: (`_first_time`)
    if isinstance(node, s.ChangedCond):
        # Under not:, false only of the value last seen (`_changed`), with no previous one.
        return {node.changed, f"previous_{node.changed}"} if holds else {node.changed}
    return set()


def optional_fields(event_types: Sequence[EventType]) -> set[str]:
    """Fields of the events that may be absent (no value) in one of the listed types:
    `region`, a roaming `operator`, a usage `counterparty`, ..."""
    from moments.models import EVENT_MODELS

    return {
        name
        for t in event_types
        for name, f in EVENT_MODELS[t].model_fields.items()
        if not f.is_required() and f.default is None and f.default_factory is None
    }


def when_present(when: Mapping[str, Any]) -> set[str]:
    """Fields a `when:` filter lets no event without through: a value (`kind: voice`), a
    list, or operators one of which a missing value fails (`quantity: {gte: 10}`); not
    `operator: null` or `operator: {eq: null}`, which ask for none, nor `ne`/`not_in`
    alone (`ne: null` asks for a value)."""
    out = set()
    for name, test in when.items():
        if isinstance(test, Mapping):
            if "eq" in test and test["eq"] is None:
                continue  # only events without it (`same(None, None)`)
            if test and needs_value({op: v for op, v in test.items() if v is not None}):
                out.add(name)
        elif test is not None:
            out.add(name)
    return out


def produced_names(node: Any, on_event: bool) -> set[str]:
    """Params a condition puts on the task (what a description template may name)."""
    if isinstance(node, s.AllCond | s.AnyCond):
        out: set[str] = set()
        for child in node.all if isinstance(node, s.AllCond) else node.any:
            out |= produced_names(child, on_event)
        return out
    if isinstance(node, s.NotCond):
        return produced_names(node.not_, on_event)
    if isinstance(node, s.FieldCond | s.ProfileCond | s.SeriesCond):
        if isinstance(node, s.FieldCond):
            label = node.field
        elif isinstance(node, s.ProfileCond):
            label = f"profile_{node.profile}"
        else:
            label = node.series
        return {label, *(f"{label}_{op}" for op in node.given() if op in NUMERIC_OPS)}
    if isinstance(node, s.BaselineCond):
        label = f"{node.baseline}_{node.measure}"
        limits = {f"{label}_{op}" for op in node.given() if op in NUMERIC_OPS}
        return {node.baseline, f"{node.baseline}_baseline", label, *limits}
    if isinstance(node, s.ShareCond):
        label = f"{node.share}_share"
        return {label, *(f"{label}_{op}" for op in node.given() if op in NUMERIC_OPS)}
    if isinstance(node, s.FirstTimeCond):
        # With a lookback also how long it is and, when seen before it, when.
        return {node.first_time, *(("lookback_days", "previous_at") if node.lookback else ())}
    if isinstance(node, s.ChangedCond):
        return {node.changed, f"previous_{node.changed}"}
    if isinstance(node, s.AbsenceCond):
        return {"silent_days", "last_seen"}
    if isinstance(node, s.OccasionCond):
        kinds = [node.occasion] if isinstance(node.occasion, str) else node.occasion
        return {name for kind in kinds for name in OCCASION_PARAMS[kind]}
    return set()


def text_names(node: Any, number_field: Callable[[str], bool]) -> set[str]:
    """Params of `produced_names` that may hold text rather than a number (a format spec
    such as `.2f` cannot apply to them). `number_field` says whether a field of the event,
    or `profile_<field>` of the profile, always holds a number."""
    if isinstance(node, s.AllCond | s.AnyCond):
        out: set[str] = set()
        for child in node.all if isinstance(node, s.AllCond) else node.any:
            out |= text_names(child, number_field)
        return out
    if isinstance(node, s.NotCond):
        return text_names(node.not_, number_field)
    if isinstance(node, s.FieldCond | s.ProfileCond | s.FirstTimeCond):
        if isinstance(node, s.FieldCond):
            label = node.field
        elif isinstance(node, s.ProfileCond):
            label = f"profile_{node.profile}"
        else:
            label = node.first_time
        # A threshold (`<label>_gte`) is a number: load checks refuse any other.
        text = set() if number_field(label) else {label}
        return text | {"previous_at"} if isinstance(node, s.FirstTimeCond) else text
    if isinstance(node, s.ChangedCond):
        return {node.changed, f"previous_{node.changed}"}  # compared, and kept, as text
    if isinstance(node, s.AbsenceCond):
        return {"last_seen"}
    if isinstance(node, s.OccasionCond):
        kinds = [node.occasion] if isinstance(node.occasion, str) else node.occasion
        return {name for kind in kinds for name in OCCASION_PARAMS[kind]} - OCCASION_NUMBERS
    return set()  # series, baselines and shares are numbers


OCCASION_PARAMS: dict[str, tuple[str, ...]] = {
    "birthday": ("birthday",),
    "join_anniversary": ("years", "joined_on"),
    "contract_expiry": ("contract_end", "days_left"),
    "holiday": ("holiday", "name", "local_name", "date", "also"),
}
"""What each special day puts on a task (see rules.special_days; `also` lists the other
holidays of the day, empty on most days)."""
OCCASION_NUMBERS = frozenset({"years", "days_left"})
"""The params of special days that are numbers (the rest are dates, keys and names)."""
