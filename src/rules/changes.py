"""What changed between two rule sets, rule by rule: for the log of a reload and for
`moments rules diff` before one.

A rule counts as changed when anything in its spec differs (a threshold, an override,
the task); its `version` goes into every task, so a change without a new version is
flagged: dashboards and outcomes would mix the old rule's tasks with the new one's.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML

from rules.calendar import HolidayCalendar, HolidayEntry
from rules.catalog import RuleSet
from rules.rule import CompiledRule


@dataclass
class RuleChanges:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    """Rules whose spec differs, each described: `id (version 1 -> 2)`."""
    same_version: list[str] = field(default_factory=list)
    """Changed rules whose version was not raised."""
    others: list[str] = field(default_factory=list)
    """Catalog-wide sections that differ: series, gating, special days."""
    details: dict[str, list[str]] = field(default_factory=dict)
    """What differs in each changed rule (by id) and section (by name): `path: old -> new`."""

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.others)

    def describe(self) -> str:
        """One line for a log: what was added, removed and changed."""
        if not self:
            return "no rule changed"
        parts = []
        for label, items in (
            ("added", self.added),
            ("removed", self.removed),
            ("changed", self.changed),
            ("also", self.others),
        ):
            if items:
                parts.append(f"{label} {', '.join(items)}")
        return "; ".join(parts)


def compare_rules(old: RuleSet, new: RuleSet) -> RuleChanges:
    """The rules of `new` against those of `old`, by id."""
    before = {r.id: r for r in old.rules}
    after = {r.id: r for r in new.rules}
    out = RuleChanges()
    out.added = [
        f"{i} (version {after[i].version}{_mode(after[i])})" for i in after if i not in before
    ]
    out.removed = [i for i in before if i not in after]
    for rule_id, rule in after.items():
        was = before.get(rule_id)
        if was is None or was.spec == rule.spec:
            continue
        notes = []
        only_mode = was.spec.model_copy(update={"mode": rule.spec.mode}) == rule.spec
        if was.version != rule.version:
            notes.append(f"version {was.version} -> {rule.version}")
        elif not only_mode:  # going live changes no task: no new version needed
            out.same_version.append(rule_id)
        if was.shadow != rule.shadow:
            notes.append("now in shadow" if rule.shadow else "now live")
        out.changed.append(f"{rule_id} ({', '.join(notes)})" if notes else rule_id)
        out.details[rule_id] = differences(_plain(was.spec), _plain(rule.spec))
    # A series' tag changes with its definition (rules.series), its predicates are code;
    # its `keep` (written, or what the rules need) is no part of the tag: compared too.
    if _series_shapes(old) != _series_shapes(new):
        out.others.append("series")
        out.details["series"] = _series_changes(old, new)
    if old.gating != new.gating:
        out.others.append("gating")
        out.details["gating"] = differences(_plain(old.gating), _plain(new.gating))
    if (old.special.local_hour, old.special.config) != (new.special.local_hour, new.special.config):
        out.others.append("special days")
    said = _holiday_changes(old.special.calendar, new.special.calendar)
    if said:  # the calendar file's days: "no rule changed" hid a greeting moved or added
        out.others.append("holidays")
        out.details["holidays"] = said
    return out


def _holiday_changes(old: HolidayCalendar, new: HolidayCalendar) -> list[str]:
    """Per holiday key of either calendar: added, removed, or its days changed (an entry of
    the operator's file replacing the package's, or written anew)."""

    def days(calendar: HolidayCalendar) -> dict[str, Any]:
        own = {e.key: e for e in calendar.entries}
        keys = calendar.keys()  # its holiday keys (a calendar is no mapping)
        return {k: own.get(k, "the package's days") for k in keys}

    before, after = days(old), days(new)
    out = []
    for key in [*before, *(k for k in after if k not in before)]:
        if key not in after:
            out.append(f"{key}: removed")
        elif key not in before:
            out.append(f"{key}: added")
        elif before[key] != after[key]:
            out.append(f"{key}: {_entry_change(before[key], after[key])}")
    return out + _order_changes(old, new)


ORDER_YEARS = 11
"""Years from this one in which `_order_changes` looks for days two holidays share (an
every-year day shares every year; the package's festivals, such as Mid-Autumn on
National Day, once in some years), besides the years of the dates a file lists."""


def _order_changes(old: HolidayCalendar, new: HolidayCalendar) -> list[str]:
    """Holidays of one day listed in another order: a greeting goes to the first of the
    day's holidays a rule greets (the operator's entries in file order, then the
    package's, `HolidayCalendar.on`), so swapping two entries of one day changes which
    is greeted, its name and its task id, while each key's days stay as they were."""
    listed = old.keys(), new.keys()  # a calendar is no mapping: its holiday keys, in order
    common = set(listed[0]) & set(listed[1])
    if [k for k in listed[0] if k in common] == [k for k in listed[1] if k in common]:
        return []  # a day's holidays are listed in the order of `keys()`: none changed
    today = dt.date.today()
    years = set(range(today.year, today.year + ORDER_YEARS))
    for calendar in (old, new):
        years |= {d.year for e in calendar.entries for d in e.dates or ()}
    found: dict[tuple[str, ...], tuple[dt.date, tuple[str, ...], tuple[str, ...]]] = {}
    for year in sorted(years):
        for day in sorted({h.day for h in new.in_year(year)}):
            now = tuple(h.key for h in new.on(day))
            was = tuple(h.key for h in old.on(day))
            if len(now) > 1 and now != was and sorted(now) == sorted(was):
                keys = tuple(sorted(now))
                if keys not in found or found[keys][0] < today:  # the next such day
                    found[keys] = (day, now, was)
    return [
        f"{', '.join(keys)}: their order changed, and a rule greets the first of a day's "
        f"holidays it greets: on the days they share (e.g. {day}) it is now "
        f"{', '.join(now)} (was {', '.join(was)})"
        for keys, (day, now, was) in found.items()
    ]


def _entry_change(old: Any, new: Any) -> str:
    """What changed of a holiday: its days, or its names only (what a greeting shows): a
    renamed day was said to have moved."""
    named = {"name", "local_name"}
    if (
        isinstance(old, HolidayEntry)
        and isinstance(new, HolidayEntry)
        and old.model_dump(exclude=named) == new.model_dump(exclude=named)
    ):
        return "its name changed"
    return "its days changed"


def _series_shapes(rules: RuleSet) -> dict[str, tuple[str, int]]:
    return {k: (s.tag, s.keep) for k, s in rules.series.items()}


def _series_changes(old: RuleSet, new: RuleSet) -> list[str]:
    """Per series: added, removed, or changed, with what a change costs (its tag is new,
    so the windows stored under the old one are dropped), or how many windows it keeps."""
    out = []
    for name in sorted(set(old.series) | set(new.series)):
        was, now = old.series.get(name), new.series.get(name)
        if was is None:
            out.append(f"{name}: added")
        elif now is None:
            out.append(f"{name}: removed")
        elif was.tag != now.tag:
            out.append(
                f"{name}: changed; the windows stored under it are dropped, so the baselines "
                "and windows that read it start again"
            )
        elif was.keep != now.keep:
            out.append(_keep_change(name, was.keep, now.keep, now.period))
    return out


def _keep_change(name: str, was: int, now: int, period: str) -> str:
    """A new `keep` leaves the stored windows under the same tag (rules.series); what the
    rules then read of them."""
    said = f"{name}: keeps {now} windows, was {was}; its stored windows stay"
    if now < was:
        return f"{said}, the {was - now} oldest no longer read (dropped as new ones come)"
    more = now - was
    periods = f"{more} more {period}{'s' if more > 1 else ''}"
    return (
        f"{said}, but the {more} before them were not kept: they count as no history, so a "
        f"baseline over them makes none until {periods} have passed (a ring last written "
        "before 0.1.0 reads them as empty, a low baseline, until they pass)"
    )


def _plain(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """`path: old -> new` for each value that differs between two plain documents (dicts
    by key, lists by position), e.g. `params.threshold: 50 -> 60`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in [*old, *(k for k in new if k not in old)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"{where}: {_shown(old[key])} removed")
            elif key not in old:
                out.append(f"{where}: {_shown(new[key])} added")
            else:
                out += differences(old[key], new[key], where)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += differences(a, b, f"{path}[{i}]")
        return out
    return [] if old == new else [f"{path or 'value'}: {_shown(old)} -> {_shown(new)}"]


def _shown(value: Any) -> str:
    """A list or map as a rules file writes it, a YAML flow (`[sms, manager]`, `{k: 1}`,
    quoted where YAML needs it); it was compact JSON (`["sms","manager"]`)."""
    if not isinstance(value, dict | list):
        return str(value)
    yaml = YAML()  # round-trip: the keys in their order
    yaml.default_flow_style = True
    yaml.width = 2**31 - 1  # one line
    out = io.StringIO()
    yaml.dump(value, out)
    return out.getvalue().strip()


def _mode(rule: CompiledRule) -> str:
    return ", shadow" if rule.shadow else ""
