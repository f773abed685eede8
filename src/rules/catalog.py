"""Load rules files into a `RuleSet`, reporting every problem with file, line and column."""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from moments.errortext import error_text
from moments.filenames import close_rules_path
from moments.models import EVENT_MODELS, EventType, ProfileEvent
from moments.sources import SOURCE_CODES
from rules import spec as sp
from rules.base import TaskSpec
from rules.calendar import (
    KNOWN_BY_KEY,
    CalendarFile,
    HolidayCalendar,
    gaps_said,
    load_calendar,
)
from rules.conditions import (
    OCCASION_PARAMS,
    Scope,
    compile_condition,
    event_fields,
    history_series,
    number_fields,
    numeric_params,
    optional_fields,
    present_names,
    produced_names,
    required_fields,
    text_names,
    when_present,
)
from rules.contract import event_carried, event_values, never_carried, refusal, when_tests
from rules.durations import parse_duration
from rules.exceptions import RuleProblem, RulesError, RulesPathError
from rules.gating import GatingPolicy
from rules.hints import closest, known_fields, meant, unknown_key
from rules.operators import NUMERIC_OPS, number, number_hint
from rules.predicates import OPERATORS, Predicate, all_of, field_test
from rules.routing import Keys, Routes, route, text_keys
from rules.rule import CompiledRule, Override, state_tag
from rules.series import Series, SeriesGroup
from rules.spec import CONDITION_KINDS, PERIOD_OF, RulesFile, RuleSpec
from rules.special_days import DEFAULT_LEAD_DAYS, DEFAULT_LOCAL_HOUR, SpecialDayConfig
from rules.templates import (
    EXAMPLES,
    formats,
    placeholders,
    spec_problem,
    unclosed,
    unfilled,
)
from rules.yamllimits import Budget, beyond_limits, read_limited, reused_anchors, yaml_problem
from rules.yamlpos import DigitsAsWritten, key_at, lines_within, position

DEFAULT_CATALOG = "default.yaml"


@dataclass(frozen=True)
class RuleSet:
    """Loaded rules and series, indexed so an event meets only what can use it."""

    rules: tuple[CompiledRule, ...]
    sources: tuple[str, ...] = ()
    series: Mapping[str, Series] = field(default_factory=dict)
    by_event_type: dict[EventType, tuple[CompiledRule, ...]] = field(default_factory=dict)
    by_period: dict[str, tuple[CompiledRule, ...]] = field(default_factory=dict)
    series_groups: dict[EventType, tuple[SeriesGroup, ...]] = field(default_factory=dict)
    """Per event type, the series that share a `when` filter: each filter runs once."""
    special: SpecialDays = field(default_factory=lambda: SpecialDays())
    """Special-day rules, the local hour they are looked at, and the holiday calendar."""
    gating: GatingPolicy = field(default_factory=GatingPolicy)
    """Do-not-disturb gates applied to every task (the defaults when no file sets them)."""
    routes: dict[EventType, Routes[CompiledRule]] = field(default_factory=dict)
    """`by_event_type`, bucketed by the field most `when:` filters test (rules.routing)."""
    series_routes: dict[EventType, Routes[SeriesGroup]] = field(default_factory=dict)
    """`series_groups`, bucketed the same way."""
    notes: tuple[str, ...] = ()
    """Warnings of the files' YAML itself, `file:line:column: ...` (`rules.lint`)."""

    @classmethod
    def of(
        cls,
        rules: Sequence[CompiledRule],
        sources: Sequence[str] = (),
        series: Mapping[str, Series] | None = None,
        gating: GatingPolicy | None = None,
        special: SpecialDays | None = None,
    ) -> RuleSet:
        declared = dict(series or {})
        index: dict[EventType, list[CompiledRule]] = {t: [] for t in EventType}
        periods: dict[str, list[CompiledRule]] = {}
        special_rules: list[CompiledRule] = []
        for rule in rules:
            if rule.evaluate == "special_day":
                special_rules.append(rule)
                continue
            if rule.period is not None:
                periods.setdefault(rule.period, []).append(rule)
                continue
            for event_type in rule.event_types:
                index[event_type].append(rule)
        grouped = {
            t: _group_by_filter([x for x in declared.values() if t in x.event_types])
            for t in EventType
        }
        return cls(
            tuple(rules),
            tuple(sources),
            declared,
            {t: tuple(r) for t, r in index.items()},
            {p: tuple(r) for p, r in periods.items()},
            grouped,
            replace(special or SpecialDays(), rules=tuple(special_rules)),
            gating if gating is not None else GatingPolicy(),
            {t: route(r, _rule_keys) for t, r in index.items()},
            {t: route(g, _group_keys) for t, g in grouped.items()},
        )

    @property
    def shadows(self) -> tuple[CompiledRule, ...]:
        """The rules in `mode: shadow`."""
        return tuple(r for r in self.rules if r.shadow)

    def with_shadows_live(self) -> RuleSet:
        """The same rules with every shadow rule live: what `rules test` and the backtest
        show with `--shadow-as-live`, each would-be task in full."""
        if not self.shadows:
            return self
        rules = [replace(r, shadow=False, _cache={}) if r.shadow else r for r in self.rules]
        shown = RuleSet.of(rules, self.sources, self.series, self.gating, self.special)
        return replace(shown, notes=self.notes)

    @cached_property
    def history_series(self) -> tuple[Series, ...]:
        """The series some rule reads with a test that waits for the subscriber's history
        (rules.conditions' `history_series`): each is begun (`Series.begin`) at every
        subscriber's first event read with it declared, so that one with no event in it
        is judged once known long enough."""
        names: set[str] = set()
        for rule in self.rules:
            condition = getattr(rule.spec, "condition", None)
            if condition is not None:
                names |= history_series(condition)
        return tuple(self.series[n] for n in sorted(names) if n in self.series)

    @cached_property
    def begun_tags(self) -> frozenset[str]:
        """The keys of the begins the `history_series` keep in a record (`begun_tag`):
        any other begin is read by nothing (`rules.series.forget_begins`)."""
        return frozenset(s.begun_tag for s in self.history_series)

    @cached_property
    def tags_by_moment_type(self) -> Mapping[str, tuple[str, ...]]:
        """Moment type -> the state tags of the live rules making it (to read `fired` by
        type: a shadow rule's cooldown mark is no task the subscriber received)."""
        found: dict[str, list[str]] = {}
        for rule in self.rules:
            if rule.shadow:
                continue
            found.setdefault(rule.task.moment_type, []).append(rule.tag)
        return {moment_type: tuple(tags) for moment_type, tags in found.items()}

    def task_ttl(self, rule_id: str, version: int) -> dt.timedelta | None:
        """The ttl of the tasks this version of the rule makes; None when the rules have
        another version of it, or none."""
        return next(
            (r.task.ttl for r in self.rules if r.id == rule_id and r.version == version), None
        )

    def __len__(self) -> int:
        return len(self.rules)


@dataclass(frozen=True)
class SpecialDays:
    rules: tuple[CompiledRule, ...] = ()
    local_hour: int = DEFAULT_LOCAL_HOUR
    config: SpecialDayConfig = field(default_factory=SpecialDayConfig)
    """What to look for: its `lead_days` is the widest of the catalog's and its rules'."""
    lead_days: int = DEFAULT_LEAD_DAYS
    """How early a contract expiry is due for a rule with no `lead_days` of its own
    (`special_days.lead_days`)."""
    calendar: HolidayCalendar = field(default_factory=HolidayCalendar.default)
    calendar_file: Path | None = None
    """The operator's calendar file the rules name (`special_days: {calendar: ...}`), as
    read: a worker reloads the rules when it changes, as when a rules file does."""


def _rule_keys(rule: CompiledRule) -> Keys:
    return text_keys(getattr(rule.spec, "when", None))


def _group_keys(group: SeriesGroup) -> Keys:
    return group[1][0].when_keys  # one `when` per group


def _group_by_filter(feeds: Sequence[Series]) -> tuple[SeriesGroup, ...]:
    groups: dict[str, tuple[Predicate, list[Series]]] = {}
    for series in feeds:
        group = groups.setdefault(series.when_key, (series.when, []))
        group[1].append(series)
    return tuple((when, tuple(members)) for when, members in groups.values())


def is_yaml(path: Path) -> bool:
    """The name ends in `.yaml` or `.yml`, in any case (`CAMPAIGN.YAML`, as Windows tools
    write it, was left out of a rules folder without a word)."""
    return path.suffix.lower() in (".yaml", ".yml")


def rule_files(path: Path) -> list[Path]:
    """A rules file, or the `.yaml`/`.yml` files of a folder, hidden ones left out: an
    editor's lock (Emacs links `.#rules.yaml` to nothing while a buffer is modified) or a
    hidden copy is not part of the catalog."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if is_yaml(p) and not p.name.startswith("."))
    return [path]


def left_out_files(path: Path) -> list[Path]:
    """The files of a rules folder that look meant as rules files and are not read: `.yaml`
    or `.yml` before another extension (`campaign.yaml.txt`, as Notepad saves a file
    where extensions are hidden; `rules.yaml.bak`), hidden ones aside. None for a file."""
    if not path.is_dir():
        return []
    return sorted(
        p
        for p in path.iterdir()
        if not is_yaml(p)
        and not p.name.startswith(".")
        and any(s.lower() in (".yaml", ".yml") for s in p.suffixes[:-1])
    )


def load_rules(path: Path | None = None) -> RuleSet:
    """Load a rules file or folder (the packaged default catalog when `path` is None).

    Raises `RulesError` listing every problem; nothing is half-loaded."""
    if path is None:
        ref = resources.files("rules") / "catalog" / DEFAULT_CATALOG
        with resources.as_file(ref) as default_path:
            return load_texts([(str(default_path), default_path.read_text(encoding="utf-8"))])
    return load_texts(_read(path))


def load_together(paths: Sequence[Path]) -> RuleSet:
    """Load rules files and folders as one catalog, as if their files were in one rules
    folder (`moments rules validate --together`). Raises `RulesError` as `load_rules`."""
    texts: list[tuple[str, str]] = []
    problems: list[RuleProblem] = []
    unopened = False  # a path given wrong: RulesPathError, a set-up problem
    for path in paths:
        try:
            texts += _read(path)
        except RulesError as exc:
            problems += exc.problems
            unopened = unopened or isinstance(exc, RulesPathError)
    if problems:
        raise (RulesPathError if unopened else RulesError)(problems)
    return load_texts(texts)


def _no_rules_files(folder: Path) -> str:
    """Why a folder gave no rules files: one of hidden ones only is told they are left
    out, as `ls -a` shows them."""
    said = "no .yaml or .yml rules files in this folder"
    with contextlib.suppress(OSError):
        hidden = sorted(p.name for p in folder.iterdir() if is_yaml(p) and p.name.startswith("."))
        if hidden:
            shown = ", ".join(hidden[:3]) + (", ..." if len(hidden) > 3 else "")
            files = "file" if len(hidden) == 1 else "files"
            said += (
                f" ({len(hidden)} hidden {files} left out: {shown}; a name starting with '.' "
                "is an editor's or a copy's, rename it to load it)"
            )
    return said


def _read(path: Path) -> list[tuple[str, str]]:
    """The (name, text) of a rules file, or of each .yaml file of a folder."""
    try:
        files = rule_files(path)
        texts, refused = [], []
        for file in files:
            try:
                texts.append((str(file), read_limited(file)))
            except RulesError as exc:
                refused.extend(exc.problems)
            except FileNotFoundError:
                if file == path:  # the path given: said below, with the directory
                    raise
                said = "a link to a file that is not there" if file.is_symlink() else "gone"
                problem = f"cannot read: {said}; fix the link or remove it from the folder"
                refused.append(RuleProblem(str(file), 1, 1, problem))
    except FileNotFoundError as exc:  # a recipe's path copied from another directory
        where = "" if path.is_absolute() else f" (a path from {Path.cwd()})"
        problem = f"cannot read: no such rules file or folder{where}" + (
            close_rules_path(path)
            or "; check the path, give a rules .yaml file or a folder of them"
        )
        raise RulesPathError([RuleProblem(str(path), 1, 1, problem)]) from exc
    except OSError as exc:
        problem = f"cannot read: {exc.strerror}"
        raise RulesPathError([RuleProblem(str(path), 1, 1, problem)]) from exc
    if refused:
        raise RulesError(refused)
    if not texts:
        raise RulesError([RuleProblem(str(path), 1, 1, _no_rules_files(path))])
    return texts


def load_texts(texts: Sequence[tuple[str, str]]) -> RuleSet:
    """Load rules from (file name, YAML text) pairs; see `load_rules`. A holiday calendar
    that a rules file names (`special_days: {calendar: ...}`) may sit among them, as it
    does in a rules folder: it is loaded as that calendar, not as rules."""
    problems: list[RuleProblem] = []
    # Before any loading: the loaders recurse and follow aliases (rules.yamllimits).
    budget = Budget()  # the files of a folder count towards one total too
    refused = {
        name: p for name, text in texts if (p := beyond_limits(name, text, budget)) is not None
    }
    problems.extend(refused.values())
    texts = [(name, text) for name, text in texts if name not in refused]
    calendars = _calendars_named(texts)
    texts = [(name, text) for name, text in texts if _resolved(name) not in calendars]
    files = [f for f in (_parse(name, text, problems) for name, text in texts) if f is not None]
    series = _compile_series(files, problems)
    special = _special_days(files, problems)
    lead = special.lead_days if special is not None else DEFAULT_LEAD_DAYS
    rules: list[CompiledRule] = []
    seen: dict[str, str] = {}
    for file in files:
        for index, spec in enumerate(file.parsed.rules):
            where = file.at(("rules", index))
            if spec.id in seen:
                file.problem(
                    problems,
                    ("rules", index, "id"),
                    f"duplicate rule id {spec.id!r} (first in {seen[spec.id]}); "
                    "give each rule its own id",
                )
                continue
            seen[spec.id] = f"{file.name}:{where[0]}"
            rule = _build(spec, file, index, series, problems, lead)
            if rule is not None:
                lines = lines_within(file.doc["rules"][index])
                rules.append(replace(rule, declared_at=seen[spec.id], lines=lines))
    gating: GatingPolicy | None = None
    gating_from = ""
    for file in files:
        if file.parsed.gating is None:
            continue
        if gating is not None:
            file.problem(
                problems,
                ("gating",),
                f"gating: is already set in {gating_from}; keep one gating: section per catalog",
            )
            continue
        gating, gating_from = file.parsed.gating, f"{file.name}:{file.at(('gating',))[0]}"
    _check_holiday_keys(files, special, problems)
    if not rules and not problems:
        part = not any("rules" in f.doc for f in files)  # gating.yaml, series.yaml
        problems.extend(
            RuleProblem(
                file.name,
                *file.at(("rules",) if "rules" in file.doc else ()),
                "no rules in this rule set: it would detect nothing; write at least one "
                "(`mode: shadow` keeps a rule from making tasks)"
                + (
                    "; a file of gating:, series: or special_days: alone is one file of a "
                    "rules folder: check the folder, or the files together "
                    "(moments rules validate --together gating.yaml my-rules.yaml)"
                    if part
                    else ""
                ),
            )
            for file in files[:1]
        )
    if problems:
        raise RulesError(problems)
    special = _widest_lead(special, rules)
    loaded = RuleSet.of(rules, [name for name, _ in texts], series, gating, special)
    return replace(loaded, notes=tuple(n for f in files for n in f.notes))


def _widest_lead(special: SpecialDays | None, rules: Sequence[CompiledRule]) -> SpecialDays | None:
    """Special days looked for with the widest contract-expiry lead of the rules (each
    rule's `occasion:` condition waits for its own, rules.conditions._occasion)."""
    leads = [
        node.lead_days
        for rule in rules
        for node in sp.walk(rule.spec.condition)
        if isinstance(node, sp.OccasionCond) and node.lead_days is not None
    ]
    found = special if special is not None else SpecialDays()
    if not leads or max(leads) <= found.config.lead_days:
        return special
    return replace(found, config=replace(found.config, lead_days=max(leads)))


def _check_holiday_keys(
    files: Sequence[_File], special: SpecialDays | None, problems: list[RuleProblem]
) -> None:
    """`holidays:` of a rule names days of the calendar in force: a misspelt key, or one
    the operator's calendar turns off, would leave the rule silent for ever."""
    calendar = special.calendar if special is not None else HolidayCalendar.default()
    in_force = [*calendar.package_keys, *(e.key for e in calendar.entries)]
    for file in files:
        for index, spec in enumerate(file.parsed.rules):
            for loc, node in sp.walk_at(spec.condition, ("rules", index, "condition")):
                if not isinstance(node, sp.OccasionCond):
                    continue
                for i, key in enumerate(node.holidays or ()):
                    if key not in in_force:
                        off = " (the calendar file turns it off)" if key in KNOWN_BY_KEY else ""
                        close = "" if off else _closest_holiday(key, in_force)
                        file.problem(
                            problems,
                            (*loc, "holidays", i),
                            f"holiday {key[:40]!r} is not in the calendar in force{off}; "
                            f"{close}known ones: {', '.join(sorted(in_force))} (moments "
                            "calendar export lists their dates)",
                        )


def holiday_gaps(rules: RuleSet, first: dt.date, last: dt.date) -> str | None:
    """Why the rules' holiday greetings find no day in some years from `first` to `last`
    (local days), naming them, the rules and the fix; None when the calendar has every
    day they greet (or no rule greets a holiday). The package's calendar ends with 2100
    (`calendar.package_years`) and event times run to 9898: a backtest of history past it
    found no festival, New Year's Day included, and said nothing."""
    calendar = rules.special.calendar
    greeted: dict[str, set[str]] = {}
    for rule in rules.special.rules:
        for node in sp.walk(rule.spec.condition):
            if isinstance(node, sp.OccasionCond) and "holiday" in _occasions(node.occasion):
                greeted.setdefault(rule.id, set()).update(node.holidays or calendar.keys())
    wanted = set().union(*greeted.values()) & set(calendar.package_keys)
    missing = calendar.missing(wanted, range(first.year, last.year + 1))
    if not missing:
        return None
    lacking = set().union(*missing.values())
    who = [rule_id for rule_id, keys in greeted.items() if keys & lacking]
    finds = f"the rule {who[0]} finds" if len(who) == 1 else f"the rules {', '.join(who)} find"
    return (
        f"The holiday calendar has {gaps_said(missing, wanted)}, so {finds} no holiday on "
        "those days, and no task. Give those years' days in an operator calendar file "
        "(`special_days: {calendar: FILE}`, docs/special-days.md), or look at years it covers"
    )


def _occasions(occasion: str | Sequence[str]) -> Sequence[str]:
    return (occasion,) if isinstance(occasion, str) else occasion


def _closest_holiday(key: str, in_force: Sequence[str]) -> str:
    """`did you mean 'mid_autumn'? ` for `midautumn`, `new_years_day`; else empty."""
    squeezed = {k.replace("_", ""): k for k in in_force}
    close = difflib.get_close_matches(key.replace("_", "").lower(), list(squeezed), n=1, cutoff=0.6)
    return f"did you mean {squeezed[close[0]]!r}? " if close else ""


def _resolved(name: str) -> Path:
    return Path(name).resolve()


def _calendars_named(texts: Sequence[tuple[str, str]]) -> set[Path]:
    """The calendar files the rules files among `texts` name, resolved. A file that cannot
    be read names none (its own problems are reported when it is parsed)."""
    named: set[Path] = set()
    for name, text in texts:
        try:
            with reused_anchors():  # told by the file's own load (`_parse`)
                doc = YAML(typ="safe").load(text)
        except YAMLError:
            continue
        special = doc.get("special_days") if isinstance(doc, dict) else None
        calendar = special.get("calendar") if isinstance(special, dict) else None
        if isinstance(calendar, str):
            named.add((Path(name).parent / calendar).resolve())
    return named


def _special_days(files: Sequence[_File], problems: list[RuleProblem]) -> SpecialDays | None:
    """The one `special_days:` section of a catalog, with its calendar loaded."""
    found: list[_File] = [f for f in files if f.parsed.special_days is not None]
    for extra in found[1:]:
        extra.problem(
            problems,
            ("special_days",),
            f"special_days: is already set in {found[0].name}; keep one per catalog",
        )
    if not found:
        return None
    file = found[0]
    spec = file.parsed.special_days
    assert spec is not None
    calendar = HolidayCalendar.default()
    path = None
    if spec.calendar is not None:
        path = Path(file.name).parent / spec.calendar
        if not path.exists():
            # It was told as `our-days.yaml:1:1: cannot read`, a file the analyst never
            # wrote: the mistake is the line naming it.
            file.problem(problems, ("special_days", "calendar"), _no_calendar(path, spec.calendar))
        else:
            try:
                calendar = load_calendar(path)
            except RulesError as exc:
                problems.extend(exc.problems)
    return SpecialDays(
        local_hour=spec.local_hour,
        config=SpecialDayConfig(lead_days=spec.lead_days),
        lead_days=spec.lead_days,
        calendar=calendar,
        calendar_file=path,
    )


def _no_calendar(path: Path, written: str) -> str:
    """What to fix for a `special_days.calendar:` that names no file."""
    said = (
        f"calendar file {written!r} does not exist ({path}; a path is read from this file's folder)"
    )
    try:
        near = [p.name for p in path.parent.iterdir() if is_yaml(p)]
    except OSError:
        near = []
    close = difflib.get_close_matches(path.name, near, n=1, cutoff=0.75)
    if close:
        return f"{said}; did you mean {close[0]!r}?"
    return f"{said}; check the name, or write the calendar there (docs/special-days.md)"


def _looks_like_calendar(doc: Any) -> bool:
    """Top-level keys of a calendar file (`rules.calendar.CalendarFile`) and none of a
    rules file's."""
    keys = set(doc) if isinstance(doc, dict) else set()
    return bool(keys) and keys <= set(CalendarFile.model_fields)


def _looks_like_policy(doc: Any) -> bool:
    """Top-level keys of a dispatch policy file (`sinks.policy.DispatchPolicy`) and none of
    a rules file's: copied into the rules folder, it was refused key by key (`'timezone'
    ... belongs in gating:; move it there`, `unknown field 'capacity'`)."""
    keys = set(doc) if isinstance(doc, dict) else set()
    # `timezone:` alone is more likely gating's, written at the top: told to move it there.
    if not keys - set(GatingPolicy.model_fields) or keys & set(RulesFile.model_fields):
        return False
    # Here, not at the top: the rule language does not depend on dispatch.
    from sinks.policy import DispatchPolicy

    return keys <= set(DispatchPolicy.model_fields)


@dataclass
class _File:
    name: str
    doc: Any
    parsed: RulesFile
    notes: tuple[str, ...] = ()
    """Warnings of the file's YAML itself (`rules.yamllimits.reused_anchors`)."""

    def at(self, loc: Sequence[str | int]) -> tuple[int, int]:
        return position(self.doc, loc, at_key=True)

    def problem(self, problems: list[RuleProblem], loc: Sequence[str | int], message: str) -> None:
        problems.append(RuleProblem(self.name, *self.at(loc), message))


def _parse(name: str, text: str, problems: list[RuleProblem]) -> _File | None:
    # Round-trip loading keeps line numbers; it builds plain data only, and a tag that
    # would construct an object (e.g. !!python/object) is refused below.
    yaml = YAML(typ="rt")
    yaml.Constructor = DigitsAsWritten
    try:
        with reused_anchors() as reused:
            doc = yaml.load(text)
    except YAMLError as exc:
        problems.append(yaml_problem(name, text, exc))
        return None
    if doc is None or doc == {}:
        problems.append(
            RuleProblem(
                name,
                1,
                1,
                "empty file (a half-written one?): write its rules:, series:, gating: or "
                "special_days:, or remove it",
            )
        )
        return None
    tagged = _tagged(doc)
    if tagged is not None:
        tag, (line, col) = tagged
        problems.append(
            RuleProblem(
                name, line, col, f"YAML tag {tag} is not allowed; rules files hold plain data"
            )
        )
        return None
    if _looks_like_policy(doc):
        problems.append(
            RuleProblem(
                name,
                1,
                1,
                "a dispatch policy file, not rules: name it in MOMENTS_DISPATCH_POLICY (or "
                "--policy), and keep it out of the rules folder",
            )
        )
        return None
    if _looks_like_calendar(doc):
        problems.append(
            RuleProblem(
                name,
                1,
                1,
                "a holiday calendar file, not rules: name it in a rules file's "
                "special_days: {calendar: " + Path(name).name + "} (the path is relative to "
                "that file), or keep it out of the rules folder",
            )
        )
        return None
    try:
        parsed = RulesFile.model_validate(doc)
    except ValidationError as exc:
        for err in _one_per_place(exc.errors()):
            loc = _data_loc(err["loc"])
            line, col = position(doc, loc, at_key=True)
            message = _message(err, loc) + _task_text_below(doc, err, loc, line)
            problems.append(RuleProblem(name, line, col, message))
        return None
    return _File(name, doc, parsed, tuple(r.said(name) for r in reused))


_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")
)


def _tagged(node: Any, where: tuple[int, int] = (1, 1)) -> tuple[str, tuple[int, int]] | None:
    """The first explicit YAML tag in the document, with its position."""
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", None) if tag is not None else None
    if value and str(value) not in _PLAIN_TAGS:
        return str(value).replace("tag:yaml.org,2002:", "!!"), where
    if isinstance(node, CommentedMap):
        for key in node:
            pos = key_at(node, key)
            found = _tagged(node[key], (pos[0] + 1, pos[1] + 1) if pos else where)
            if found:
                return found
    elif isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            line, col = node.lc.item(i)
            found = _tagged(item, (line + 1, col + 1))
            if found:
                return found
    return None


_UNION_MEMBER = re.compile(r"^[a-z][a-z-]*\[")
"""How pydantic names the member of a union an error is about: `literal['a','b']`, `list[...]`."""
_PLAIN_MEMBER = frozenset({"str", "int", "float", "bool"})
"""A plain type pydantic names last for a value that fits no member of a union (`eq: [1, 2]`
fits none of `str`, `int`, `float`, `bool`); elsewhere such a part is a key of the file (a
param named `int`)."""


def _one_per_place(errors: Sequence[Any]) -> list[Any]:
    """A value that fits no member of a union is reported once per member (`occasion:` is a
    name or a list of names): one error per place is kept, preferring the one that names
    the values allowed, its location without the member's name."""
    kept: dict[tuple[Any, ...], Any] = {}
    for err in errors:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _UNION_MEMBER.match(p)))
        if len(loc) > 1 and loc[-1] in _PLAIN_MEMBER:
            loc = loc[:-1]
        err = {**err, "loc": loc}
        before = kept.get(loc)
        names_values = err["type"] == "literal_error" and before is not None
        if before is None or (names_values and before["type"] != "literal_error"):
            kept[loc] = err
    return list(kept.values())


def _data_loc(loc: Sequence[Any]) -> tuple[str | int, ...]:
    """A pydantic error location without the union tags it inserts after each condition."""
    parts = list(loc)
    out: list[str | int] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        out.append(part)
        holds_condition = part in ("condition", "not") or (
            isinstance(part, int) and i > 0 and parts[i - 1] in ("all", "any")
        )
        if holds_condition and i + 1 < len(parts) and parts[i + 1] in CONDITION_KINDS:
            i += 1  # skip the tag
        i += 1
    return tuple(out)


def _needs(files: Sequence[_File]) -> dict[str, int]:
    """Windows each series must keep for the conditions that use it."""
    needs: dict[str, int] = {}

    def need(name: str, windows: int) -> None:
        needs[name] = max(needs.get(name, 1), windows)

    for file in files:
        for rule in file.parsed.rules:
            for node in sp.walk(rule.condition) if rule.condition is not None else ():
                if isinstance(node, sp.SeriesCond):
                    need(node.series, node.last)
                elif isinstance(node, sp.BaselineCond):
                    need(node.baseline, node.windows + 1)
                elif isinstance(node, sp.ShareCond):
                    need(node.share, node.last)
                    need(node.of, node.last)
    return needs


def _compile_series(files: Sequence[_File], problems: list[RuleProblem]) -> dict[str, Series]:
    needs = _needs(files)
    out: dict[str, Series] = {}
    origin: dict[str, str] = {}
    for file in files:
        for name, spec in file.parsed.series.items():
            loc = ("series", name)
            if name in out:
                file.problem(
                    problems, loc, f"series {name!r} is declared twice (first in {origin[name]})"
                )
                continue
            origin[name] = f"{file.name}:{file.at(loc)[0]}"
            fields = event_fields(spec.on)
            when = _when(
                spec.when,
                spec.on,
                fields,
                partial(_at, file, problems, (*loc, "when")),
                series=True,
            )
            if spec.field is not None:
                if spec.field not in fields:
                    file.problem(
                        problems, (*loc, "field"), _unknown_field(spec.field, spec.on, fields)
                    )
                elif spec.field not in number_fields(EVENT_MODELS[t] for t in spec.on):
                    file.problem(
                        problems,
                        (*loc, "field"),
                        f"{spec.field!r} is not a number; "
                        "sum a numeric field, or leave field out to count events",
                    )
            need = needs.get(name, 1)
            keep = spec.keep if spec.keep is not None else need + 1
            if keep < need:
                file.problem(
                    problems,
                    (*loc, "keep"),
                    f"keep: {keep} is fewer than the {need} windows the rules use",
                )
            when_text = sorted(spec.when.items(), key=str)
            definition = f"{name}|{sorted(spec.on)}|{when_text}|{spec.field}|{spec.period}"
            out[name] = Series(
                name=name,
                tag=state_tag(definition),
                event_types=frozenset(spec.on),
                when=when,
                field=spec.field,
                period=spec.period,
                keep=keep,
                when_key=f"{sorted(spec.on)}|{when_text}",
                when_keys=text_keys(spec.when),
                declared_at=origin[name],
            )
    return out


def _at(
    file: _File,
    problems: list[RuleProblem],
    prefix: tuple[str | int, ...],
    loc: tuple[str | int, ...],
    message: str,
) -> None:
    file.problem(problems, (*prefix, *loc), message)


def _when(
    when: Mapping[str, Any],
    on: Sequence[EventType],
    fields: set[str],
    problem: Callable[[tuple[str | int, ...], str], None],
    series: bool = False,
    listed: frozenset[str] = frozenset(),
) -> Predicate:
    """The filter's test; `listed` names the params whose value (the rule's or an
    override's) holds a comma-separated list, told `in:` where a `$param` is refused."""
    tests: list[Predicate] = []
    for field_name, test in when.items():
        if field_name not in fields:
            problem((field_name,), _unknown_field(field_name, on, fields))
            continue
        if isinstance(test, dict):
            bad = [op for op in test if op not in OPERATORS]
            if bad:
                problem(
                    (field_name,),
                    f"unknown operator {bad[0]!r}; use one of " + ", ".join(sorted(OPERATORS)),
                )
                continue
        held = list(_params_in(test))
        for loc, value in held:
            # In a list (`kind: [$k]`: one of), `in:`, which reads a param's comma-separated
            # list; `eq: $k` matched no event once the param held two values, and so did
            # a scalar `kind: $k` told `eq: $k` when the param's value holds a comma
            # (and `ne: $k` told `ne:`, which let every event through: `not_in:`).
            op = loc[0] if loc and isinstance(loc[0], str) else "in" if loc else "eq"
            if value[1:] in listed:
                op = {"eq": "in", "ne": "not_in"}.get(op, op)
            problem(
                (field_name, *loc),
                f"{value}: when: compares with values written in it, not params"
                + (
                    " (a series has none: write the value)"
                    if series
                    else " (a filter is the same for every region and tier); to use a "
                    f"param, test it in the condition: {{field: {field_name}, {op}: {value}}}"
                ),
            )
        if held or _outside_contract(field_name, test, on, problem):
            continue
        try:
            tests.append(field_test(field_name, test))
        except (ArithmeticError, ValueError, TypeError) as exc:
            problem((field_name,), f"bad test for {field_name!r}: {exc}")
    return all_of(tests)


def _params_in(test: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Each `$name` of a `when:` entry (a scalar, a list, or a map of operators), with its
    place under the field: `kind: $k` was compared with the text "$k" and matched nothing."""
    for op, raw in test.items() if isinstance(test, dict) else [(None, test)]:
        where: tuple[str | int, ...] = () if op is None else (str(op),)
        for i, value in enumerate(raw) if isinstance(raw, list) else [(None, raw)]:
            if isinstance(value, str) and value.startswith("$"):
                yield (*where, *(() if i is None else (i,))), value


def _outside_contract(
    field_name: str,
    test: Any,
    on: Sequence[EventType],
    problem: Callable[[tuple[str | int, ...], str], None],
) -> bool:
    """Report each value of a `when:` test that the contract never gives the field
    (`status: open`: complaints are opened, updated or resolved; `country: UK`: a roaming
    record saying UK is a dead letter; `amount: {lt: 0}`); True if any."""
    allowed = event_values(tuple(on), field_name)
    carried = event_carried(tuple(on), field_name)
    what = f"{field_name} of {', '.join(t.value for t in on)} events"
    refused = False
    for loc, op, kind, value in when_tests(test, bounds=allowed is None):
        if allowed is not None:
            said = refusal(what, kind, value, allowed)
        else:
            said = never_carried(what, carried, op, kind, value)
        if said is not None:
            problem((field_name, *loc), said)
            refused = True
    return refused


def _build(
    spec: RuleSpec,
    file: _File,
    index: int,
    series: Mapping[str, Series],
    problems: list[RuleProblem],
    lead_days: int = DEFAULT_LEAD_DAYS,
) -> CompiledRule | None:
    before = len(problems)

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        file.problem(problems, ("rules", index, *loc), message)

    fields = event_fields(spec.on)
    listed = frozenset(
        name
        for params in (spec.params, *(o.params for o in spec.overrides))
        for name, value in params.items()
        if isinstance(value, str) and "," in value
    )
    when = _when(
        spec.when,
        spec.on,
        fields,
        lambda sub, msg: problem(("when", *sub), msg),
        listed=listed,
    )
    period = PERIOD_OF.get(spec.evaluate)
    special_day = spec.evaluate == "special_day"
    if special_day and spec.when:
        problem(("when",), "a special_day rule has no event to filter; use profile conditions")
    if period is not None and spec.when:
        problem(
            ("when",),
            f"when: filters events, but this rule runs when a window closes "
            f"({spec.evaluate}); filter in the series instead",
        )
    for i, override in enumerate(spec.overrides):
        if override.region is None and override.tier is None:
            problem(("overrides", i), "an override needs region: and/or tier:")
        for name in override.params:
            if name not in spec.params:
                known = ", ".join(sorted(spec.params)) or "none"
                problem(
                    ("overrides", i, "params", name),
                    f"override of unknown param {name!r}; "
                    f"declare it under params: (known: {known})",
                )
    scope = Scope(
        fields=fields,
        series=series,
        params=spec.params,
        period=period,
        sources=tuple(SOURCE_CODES[t] for t in spec.on),
        profile_fields=set(ProfileEvent.model_fields)
        - {"event_id", "subscriber_id", "occurred_at"},
        special_day=special_day,
        event_types=tuple(spec.on),
        overrides=tuple(o.params for o in spec.overrides),
        lead_days=lead_days,
    )
    condition = None
    if spec.condition is not None:
        _check_numeric_params(spec.condition, scope, problem)
        condition = compile_condition(spec.condition, scope, ("condition",), problem)
        # Fields the condition cannot do without: an event lacking one is skipped cheaply.
        when = all_of([when, *(_present(name) for name in required_fields(spec.condition))])
    elif period is not None or special_day:
        problem(("evaluate",), f"a rule with evaluate: {spec.evaluate} needs a condition")
    if special_day and spec.condition is not None and not _has_occasion(spec.condition):
        nested = [
            (loc, n.occasion)
            for loc, n in sp.walk_at(spec.condition)
            if isinstance(n, sp.OccasionCond)
        ]
        if nested:  # under any: or not:, where it says nothing of which day the rule is for
            meant: dict[str, None] = dict.fromkeys(
                k for _, o in nested for k in ([o] if isinstance(o, str) else o)
            )
            if any("not" in loc for loc, _ in nested):  # every occasion but these
                meant = dict.fromkeys(k for k in OCCASION_PARAMS if k not in meant)
            problem(
                ("condition",),
                "a special_day rule's occasion: is its condition or one of all:'s, not under "
                "any: or not:; for the days meant write occasion: [" + ", ".join(meant) + "]",
            )
        else:
            problem(
                ("condition",), "a special_day rule needs an occasion: condition, e.g. birthday"
            )
    names = produced_names(spec.condition, period is None) if spec.condition else set()
    if period is None and not special_day:
        # A field the condition misnames (`field: ammount`, told its fix there) is no name
        # a task carries: offered for the description, it led to the wrong fix.
        misnamed = (
            {
                n.field
                for _, n in sp.walk_at(spec.condition)
                if isinstance(n, sp.FieldCond) and n.field not in fields
            }
            if spec.condition is not None
            else set()
        )
        names -= misnamed | {f"{f}_{op}" for f in misnamed for op in NUMERIC_OPS}
        names |= fields
    for odd in unfilled(spec.task.description):
        problem(
            ("task", "description"),
            f"{odd} is not a placeholder (only {{name}} and {{name:format}} are filled: no "
            "attribute, index, position, conversion or nested field) and would be sent as "
            "written; write {name}, or a number's format, " + EXAMPLES,
        )
    for odd in unclosed(spec.task.description):
        problem(
            ("task", "description"),
            f"a brace that opens or closes no placeholder, in {odd!r}, would be sent as "
            "written; write a placeholder whole, {name}, or leave the brace out",
        )
    _check_formats(spec, names, period is None and not special_day, problem)
    _check_missing(spec, names, period is None and not special_day, problem)
    unknown = [m for m in placeholders(spec.task.description) if m not in names]
    if unknown:
        known = ", ".join(sorted(names))
        # A declared series that the condition misnames (`baseline: topup_dy`) is no
        # misspelling here: the condition's own problem names the fix.
        close = None if unknown[0] in series else closest(unknown[0], sorted(names))
        problem(
            ("task", "description"),
            f"{{{unknown[0]}}} is not known when this rule fires; "
            + (f"did you mean {{{close}}}? (known: {known})" if close else f"use one of: {known}"),
        )
    if len(problems) > before:
        return None
    task = TaskSpec(
        family=spec.task.family,
        moment_type=spec.task.type,
        channel=spec.task.channel,
        priority=spec.task.priority,
        action=spec.task.action,
        ttl=parse_duration(spec.task.ttl),
        description=spec.task.description,
        cooldown=parse_duration(spec.task.cooldown) if spec.task.cooldown else None,
        purpose=spec.task.purpose,
    )
    return CompiledRule(
        id=spec.id,
        version=spec.version,
        description=spec.description,
        event_types=frozenset(spec.on),
        evaluate=spec.evaluate,
        period=period,
        when=when,
        condition=condition,
        task=task,
        params=dict(spec.params),
        overrides=tuple(
            Override(_set_of(o.region), _set_of(o.tier), dict(o.params)) for o in spec.overrides
        ),
        sources=scope.sources,
        tag=state_tag(spec.id),
        judges_silence=spec.condition is not None and _has_absence(spec.condition),
        shadow=spec.mode == "shadow",
        spec=spec,
    )


def _check_formats(
    spec: RuleSpec,
    names: set[str],
    on_event: bool,
    problem: Callable[[tuple[str | int, ...], str], None],
) -> None:
    """`{spend:.2f}` is checked when the file loads: a spec outside the subset `fill`
    applies, or one on a param that may hold text (`{country:.2f}`), is refused."""
    numbers = number_fields(EVENT_MODELS[t] for t in spec.on)
    profile_numbers = {f"profile_{n}" for n in number_fields([ProfileEvent])}
    number_field = (numbers | profile_numbers).__contains__
    texts = text_names(spec.condition, number_field) if spec.condition is not None else set()
    if on_event:
        texts |= event_fields(spec.on) - numbers
    for name, fmt in formats(spec.task.description):
        said = spec_problem(fmt)
        if said is None and name in names and name in texts:
            said = (
                f"{name!r} may hold text (a name, a date, a code), and a format applies to "
                f"numbers only; write {{{name}}}"
            )
        if said is not None:
            problem(("task", "description"), f"{{{name}:{fmt}}}: {said}")


def _check_missing(
    spec: RuleSpec,
    names: set[str],
    on_event: bool,
    problem: Callable[[tuple[str | int, ...], str], None],
) -> None:
    """A description naming an event field the contract makes optional (`{operator}`,
    `{region}`, `{counterparty}`), or a profile field (`{profile_tier}`), is refused
    unless the rule fires only when it has a value: the text showed "{operator}" (or
    "None", for a test such as `ne:` that a missing value passes) to the customer or the
    agent. The fix is the catalog's own: `{field: service_code}` in the condition."""
    condition = spec.condition
    sure = present_names(condition) if condition is not None else set()
    unsure: dict[str, str] = {}
    if on_event:
        sure |= when_present(spec.when)
        kinds = ", ".join(t.value for t in spec.on)
        for name in optional_fields(spec.on):
            unsure[name] = (
                f"{name} is optional on {kinds} events, so the rule fires on events "
                "without it too; to fire only on those that carry it, add "
                f"{{field: {name}}} to the condition (under all:)"
            )
    for node in sp.walk(condition) if condition is not None else ():
        if isinstance(node, sp.SeriesCond) and node.agg in ("avg", "max"):
            unsure.setdefault(
                node.series,
                f"the {node.agg} of {node.series} over windows without events is no value, "
                "and this condition lets the rule fire without one (the test under any:); "
                "to fire only with one, put that test under all:",
            )
        if isinstance(node, sp.ProfileCond):
            unsure[f"profile_{node.profile}"] = (
                f"a profile may have no {node.profile} and this condition lets one without "
                f"it fire (a test under any: or not:, or ne:/not_in:); to fire only with "
                f"one, add {{profile: {node.profile}}} to the condition (under all:)"
            )
    for name in dict.fromkeys(placeholders(spec.task.description)):
        if name in names and name in unsure and name not in sure:
            problem(
                ("task", "description"),
                f"{{{name}}} may have no value when this rule fires, and the text would "
                f"show it as written ('{{{name}}}' or 'None'): {unsure[name]}, or leave "
                "it out of the description",
            )


def _check_numeric_params(
    condition: Any, scope: Scope, problem: Callable[[tuple[str | int, ...], str], None]
) -> None:
    """`gte: three` is refused; so is `gte: $count` with `count: three` (or an override's
    `-80%`): either way the comparison is false for every event. So is a param that is no
    finite number (`.nan`, `.inf`, "nan"), as `gte: .nan` written in the condition is:
    it loaded, and the rule never fired (or, `.inf`, always held)."""
    for name, op in numeric_params(condition).items():
        for loc, value in scope.param_values(name):
            read = number(value)
            if read is None:
                problem(
                    loc,
                    f"param {name!r} is compared with {op} (as ${name}), so it must be a "
                    f"number; got {value!r}: {number_hint(value)}",
                )
            elif not math.isfinite(read):
                problem(
                    loc,
                    f"param {name!r} is compared with {op} (as ${name}), so it must be a "
                    f"finite number; got {value!r}: write a number, e.g. 100",
                )


def _has_absence(node: Any) -> bool:
    return any(isinstance(n, sp.AbsenceCond) for n in sp.walk(node))


def _has_occasion(node: Any) -> bool:
    if isinstance(node, sp.OccasionCond):
        return True
    if isinstance(node, sp.AllCond):
        return any(_has_occasion(c) for c in node.all)
    return False


def _present(name: str) -> Predicate:
    return lambda e: getattr(e, name, None) is not None


def _set_of(value: str | list[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value] if isinstance(value, str) else value)


def _unknown_field(field_name: str, on: Sequence[EventType], fields: set[str]) -> str:
    kinds = ", ".join(t.value for t in on)
    return f"{field_name!r} is not a field of {kinds} events{known_fields(field_name, fields)}"


NUMBER_HINTS = {
    "lead_days": "a whole number of days from 0 to 366, e.g. 7 (no unit: not 7d)",
    "windows": "a whole number of windows from 1 to 12, e.g. 3",
    "last": (
        "a whole number of windows from 1 to 60, the current one included, e.g. 4 (no unit: "
        "the series' period is the unit, 4 weeks of a weekly one)"
    ),
    "keep": (
        "a whole number of windows from 1 to 60, e.g. 30 (no unit: the series' period is the "
        "unit, 30 days of a daily one)"
    ),
    "local_hour": "an hour of the day from 0 to 23, e.g. 9",
    "priority": "a whole number from 1 (highest) to 5",
    "max_contacts": "a whole number from 1 to 1000, e.g. 2",
    "version": "a whole number from 1, e.g. 2 (no v; raise it by one with each change)",
}
"""What a number field of a rules file takes, said after pydantic's words when a value is
refused (`lead_days: 7d` read "Input should be a valid integer" and no more)."""
_NUMBER_ERRORS = frozenset(
    {
        "int_parsing",
        "int_type",
        "int_from_float",
        "greater_than_equal",
        "greater_than",
        "less_than_equal",
        "less_than",
    }
)


DURATION_KEYS = frozenset(
    {
        "ttl",
        "cooldown",
        "lookback",
        "absence",
        "open_complaint_lapses_after",
        "roaming_lapses_after",
    }
)
"""The keys of a rules file that take a duration (`24h`, `60d`), and `gating.frequency_cap.
period`: a bare number there (`ttl: 24`, `lookback: 60`) read "Input should be a valid
string" and no more."""


def _is_duration(path: Sequence[str | int]) -> bool:
    key = path[-1] if path else None
    return key in DURATION_KEYS or tuple(path[-2:]) == ("frequency_cap", "period")


def _unitless(key: str | int, number: int | float) -> str:
    """What to write for a duration given as a bare number."""
    if isinstance(number, float) and not number.is_integer():
        return (
            f"{number} is no duration: write a whole number and a unit (s, m, h, d or w), "
            "a smaller unit for a fraction (90m, not 1.5h)"
        )
    n = int(number)
    if key in ("lookback", "absence"):  # a day at least
        return f"{n} has no unit: write {n}d for {n} days"
    return f"{n} has no unit: write {n}d for {n} days, {n}h for {n} hours (s, m, h, d or w)"


_NAMES = {"id": "_.-", "type": "_"}
"""A rule's `id` and a task's `type`, and the characters they take besides lower-case
letters and digits: their refusal showed the pattern alone (`String should match pattern
'^[a-z][a-z0-9_.-]*$'`), which a retention analyst does not read."""


def _part_of(written: str, allowed: Sequence[str]) -> str:
    """`; did you mean 'app_push'?` for `push`: a word of one allowed value alone (`call`
    for outbound_call, `first` for first_time), which no misspelling measure finds close
    (analyst walk: `channel: push` was given the list and no value meant)."""
    word = written.strip().lower()
    having = [a for a in allowed if word and word in a.split("_") and word != a]
    return f"; did you mean {having[0]!r}?" if len(having) == 1 else ""


def _name_fix(key: str, written: str) -> str:
    """What to write for an `id` or a `type` that is no such name: the one meant, when
    lower case and underscores for the other characters make one."""
    others = _NAMES[key]
    meant = re.sub(rf"[^a-z0-9{re.escape(others)}]+", "_", written.strip().lower()).strip("_")
    allowed = ", ".join(others)
    said = (
        f"{written!r} is no {key}: write lower-case letters, digits and {allowed}, "
        "starting with a letter"
    )
    if meant and meant[0].isalpha() and meant != written:
        return f"{said}, e.g. {meant!r}"
    return said


TASK_TEXT = ("rules", "task", "description")


def _task_text_below(doc: Any, err: Any, loc: Sequence[str | int], line: int) -> str:
    """For a task with no `description:` whose rule has one below the task's block: that
    line, the task's text written level with the rule's keys (and read as the rule's),
    which "required field is missing" at `task:` did not point at (analyst walk)."""
    if err["type"] != "missing" or tuple(loc[:1]) + tuple(loc[2:]) != TASK_TEXT:
        return ""
    rules = doc.get("rules") if isinstance(doc, dict) else None
    rule = rules[loc[1]] if isinstance(rules, list) and isinstance(loc[1], int) else None
    if not isinstance(rule, dict) or "description" not in rule:
        return ""
    below, _ = position(doc, ("rules", loc[1], "description"), at_key=True)
    if below <= line:
        return ""
    return (
        f"; the description: on line {below} is the rule's, level with task:; if it is the "
        "task's text, indent it under task: as that block's keys are"
    )


def _shape_message(err: Any, path: Sequence[str | int], loc: str) -> str | None:
    """A file, rule or section of the wrong shape, in words (pydantic's named its classes:
    `Input should be a valid dictionary or instance of RuleSpec`); None for any other."""
    kind, value = err["type"], err.get("input")
    if kind in ("model_type", "dict_type"):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        if not path:
            listed = isinstance(value, list)
            return (
                f"the file is {'a list' if listed else shown}, not a mapping: rules files "
                "write their sections as keys (rules:, series:, gating:, special_days:)"
                + ("; put the list under rules:, indented" if listed else "")
            )
        if len(path) == 2 and path[0] == "rules":
            return (
                f"{loc}: {shown} is not a rule: write each rule as a mapping, its first line "
                "`- id: my_rule`, its keys indented under it"
            )
        return (
            f"{loc}: {shown} is not a mapping: write its keys under it, one `name: value` a "
            "line indented below, or in braces, {name: value}"
        )
    if kind == "list_type" and tuple(path) == ("rules",) and not isinstance(value, list):
        said = "empty" if not value else "a mapping, not a list"
        return f"{loc}: {said}: write each rule under it, on a line starting with '- '"
    return None


def _message(err: Any, path: Sequence[str | int]) -> str:
    loc = ".".join(str(p) for p in path)
    msg = error_text(err)
    if err["type"] == "extra_forbidden":
        raw = err["loc"]
        kind = str(raw[-2]) if len(raw) > 1 and raw[-2] in CONDITION_KINDS else None
        return f"unknown field {loc!r}; {unknown_key(path, kind)}"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    if (shape := _shape_message(err, path, loc)) is not None:
        return shape
    scalar = err.get("input")
    if err["type"] in ("list_type", "tuple_type") and isinstance(scalar, str | int | float):
        key = str(path[-1]) if path else loc
        item = f'"{scalar}"' if isinstance(scalar, str) and set(scalar) & set(":#,[]{}") else scalar
        return f"{loc}: Input should be a list: write {key}: [{item}] (a list, even of one)"
    if err["type"] == "string_type" and isinstance(scalar, dict) and len(scalar) == 1:
        # `description: {country}` is a YAML map of one key with no value, not the text.
        ((name, value),) = scalar.items()
        if value is None:
            key = str(path[-1]) if path else loc
            return (
                f"{loc}: {{{name}}} at the start of a value is read as a YAML map, not text: "
                f'quote the whole value, {key}: "{{{name}}}"'
            )
    if (
        err["type"] == "string_type"
        and isinstance(scalar, int | float)
        and not isinstance(scalar, bool)
        and _is_duration(path)
    ):
        return f"{loc}: {_unitless(path[-1], scalar)}"
    if isinstance(scalar, str) and re.fullmatch(r"[0-9]+", scalar) and _is_duration(path):
        # `ttl: 024`: digits with a leading zero are read as text (`in: [0086]`), and
        # were told the form alone, not `write 24d` as `ttl: 24` is.
        return f"{loc}: {_unitless(path[-1], int(scalar))}"
    if isinstance(scalar, list) and len(path) >= 2 and path[-2] == "params":
        items = ", ".join(map(str, scalar))
        return (
            f"{loc}: a param holds one value; for in:, not_in: or prefix: write its list as "
            f'text: {path[-1]}: "{items}"'
        )
    if err["type"] == "string_pattern_mismatch" and path and path[-1] in _NAMES:
        return f"{loc}: {_name_fix(str(path[-1]), str(scalar))}"
    number = isinstance(scalar, int) and not isinstance(scalar, bool)
    if err["type"] == "string_type" and number and path and path[-1] in _NAMES:
        # `id: 123` was told "Input should be a valid string"
        return f"{loc}: {_name_fix(str(path[-1]), str(scalar))}"
    op = path[-1] if path else None
    if isinstance(scalar, list | dict) and "condition" in path:
        if op in ("eq", "ne"):
            one_of = "in" if op == "eq" else "not_in"
            items = ", ".join(map(str, scalar)) if isinstance(scalar, list) else "..."
            return (
                f"{loc}: {op} compares with one value, not a list or map; for one of several, "
                f"write {one_of}: [{items}]"
            )
        if op in NUMERIC_OPS:
            return f"{loc}: {op} compares with one number or $param, e.g. {op}: 5"
    hint = NUMBER_HINTS.get(str(path[-1])) if path else None
    if hint is not None and err["type"] in _NUMBER_ERRORS:
        return f"{loc}: {msg}; write {hint}"
    if err["type"] in ("literal_error", "enum") and isinstance(scalar, str):
        # `channel: smss`, `period: daily`, `occasion: birthdays`: the values allowed were
        # listed, the one meant not named.
        allowed = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        return f"{loc}: {msg}{meant(scalar, allowed) or _part_of(scalar, allowed)}"
    return f"{loc}: {msg}"
