"""Load rules files into a `RuleSet`, reporting every problem with file, line and column."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from moments.models import EVENT_MODELS, EventType
from rules.base import Rule, TaskSpec
from rules.durations import parse_duration
from rules.exceptions import RuleProblem, RulesError
from rules.first_time import FirstTimeRule
from rules.predicates import OPERATORS, Predicate, all_of, field_test
from rules.spec import RulesFile, RuleSpec

DEFAULT_CATALOG = "default.yaml"


@dataclass(frozen=True)
class RuleSet:
    """Loaded rules, indexed by event type so an event meets only rules that can fire on it."""

    rules: tuple[Rule, ...]
    sources: tuple[str, ...] = ()
    by_event_type: dict[EventType, tuple[Rule, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: Sequence[Rule], sources: Sequence[str] = ()) -> RuleSet:
        index: dict[EventType, list[Rule]] = {t: [] for t in EventType}
        for rule in rules:
            for event_type in rule.event_types:
                index[event_type].append(rule)
        return cls(tuple(rules), tuple(sources), {t: tuple(r) for t, r in index.items()})

    def for_event(self, event_type: EventType) -> tuple[Rule, ...]:
        return self.by_event_type.get(event_type, ())

    def __len__(self) -> int:
        return len(self.rules)


def rule_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
    return [path]


def load_rules(path: Path | None = None) -> RuleSet:
    """Load a rules file or folder (the packaged default catalog when `path` is None).

    Raises `RulesError` listing every problem; nothing is half-loaded."""
    if path is None:
        ref = resources.files("rules") / "catalog" / DEFAULT_CATALOG
        with resources.as_file(ref) as default_path:
            texts = [(str(default_path), default_path.read_text(encoding="utf-8"))]
    else:
        try:
            texts = [(str(p), p.read_text(encoding="utf-8")) for p in rule_files(path)]
        except OSError as exc:
            raise RulesError(
                [RuleProblem(str(path), 1, 1, f"cannot read: {exc.strerror}")]
            ) from exc
        if not texts:
            raise RulesError([RuleProblem(str(path), 1, 1, "no .yaml rules files in this folder")])
    problems: list[RuleProblem] = []
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for name, text in texts:
        for rule, where in _parse(name, text, problems):
            if rule.id in seen:
                problems.append(
                    RuleProblem(
                        name,
                        *where,
                        f"duplicate rule id {rule.id!r} (first in "
                        f"{seen[rule.id]}); give each rule its own id",
                    )
                )
                continue
            seen[rule.id] = f"{name}:{where[0]}"
            rules.append(rule)
    if problems:
        raise RulesError(problems)
    return RuleSet.of(rules, [n for n, _ in texts])


def _parse(
    name: str, text: str, problems: list[RuleProblem]
) -> Iterator[tuple[Rule, tuple[int, int]]]:
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problems.append(RuleProblem(name, line, col, f"YAML syntax: {exc.problem}"))
        return
    if doc is None:
        doc = CommentedMap()
    try:
        parsed = RulesFile.model_validate(doc)
    except ValidationError as exc:
        for err in exc.errors():
            line, col = _position(doc, err["loc"])
            problems.append(RuleProblem(name, line, col, _message(err)))
        return
    for index, spec in enumerate(parsed.rules):
        where = _position(doc, ("rules", index))
        before = len(problems)
        rule = _build(spec, name, doc, index, problems)
        if rule is not None and len(problems) == before:
            yield rule, where


def _build(
    spec: RuleSpec, name: str, doc: Any, index: int, problems: list[RuleProblem]
) -> Rule | None:
    def problem(loc: tuple[str | int, ...], message: str) -> None:
        line, col = _position(doc, ("rules", index, *loc))
        problems.append(RuleProblem(name, line, col, message))

    fields = _fields_of(spec.on)
    tests: list[Predicate] = []
    for field_name, test in spec.when.items():
        if field_name not in fields:
            problem(("when", field_name), _unknown_field(field_name, spec.on, fields))
            continue
        if isinstance(test, dict):
            bad = [op for op in test if op not in OPERATORS]
            if bad:
                problem(
                    ("when", field_name),
                    f"unknown operator {bad[0]!r}; use one of " + ", ".join(sorted(OPERATORS)),
                )
                continue
        try:
            tests.append(field_test(field_name, test))
        except (ArithmeticError, ValueError, TypeError) as exc:
            problem(("when", field_name), f"bad test for {field_name!r}: {exc}")
    task = TaskSpec(
        family=spec.task.family,
        moment_type=spec.task.type,
        channel=spec.task.channel,
        priority=spec.task.priority,
        action=spec.task.action,
        ttl=parse_duration(spec.task.ttl),
        description=spec.task.description,
    )
    if spec.first_time is None:
        problem(("id",), "a rule needs a detector block: first_time")
        return None
    if spec.first_time.key not in fields:
        problem(("first_time", "key"), _unknown_field(spec.first_time.key, spec.on, fields))
        return None
    lookback = parse_duration(spec.first_time.lookback) if spec.first_time.lookback else None
    return FirstTimeRule(
        id=spec.id,
        version=spec.version,
        event_types=frozenset(spec.on),
        task=task,
        key_field=spec.first_time.key,
        when=all_of(tests),
        lookback=lookback,
    )


def _fields_of(event_types: Sequence[EventType]) -> set[str]:
    """Fields every listed event type has (a rule on several types may use only shared ones)."""
    sets = [set(EVENT_MODELS[t].model_fields) for t in event_types]
    return set.intersection(*sets) if sets else set()


def _unknown_field(field_name: str, on: Sequence[EventType], fields: set[str]) -> str:
    kinds = ", ".join(t.value for t in on)
    return f"{field_name!r} is not a field of {kinds} events; known: {', '.join(sorted(fields))}"


def _message(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return f"unknown field {loc!r}; check the spelling against docs/rules.md"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    return f"{loc}: {msg}"


def _position(doc: Any, loc: Sequence[str | int]) -> tuple[int, int]:
    """Best line and column (1-based) for a pydantic error location in a ruamel document."""
    node, line, col = doc, 1, 1
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            pos = node.lc.key(part)
            line, col = pos[0] + 1, pos[1] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            pos = node.lc.item(part)
            line, col = pos[0] + 1, pos[1] + 1
            node = node[part]
        else:
            break
    return line, col
