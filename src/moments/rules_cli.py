"""The `moments rules` commands: validate, explain, diff and test rules files offline,
before they are deployed."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from moments.cliparts import add_command, add_group, command_settings

if TYPE_CHECKING:
    from moments.cliparts import Subparsers


def add_rules_command(sub: Subparsers) -> None:
    rules_sub = add_group(
        sub,
        "rules",
        "Rules tooling.",
        """
                  moments rules validate src/rules/catalog/default.yaml my-rules/
                  moments rules explain low_balance
                  moments rules test my-rules/ --events events.jsonl
                  moments rules diff my-rules/ new-rules/
                """,
    )
    _add_rules_validate(rules_sub)
    _add_rules_explain(rules_sub)
    _add_rules_diff(rules_sub)
    _add_rules_test(rules_sub)


def _add_rules_validate(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "validate",
        "Exit 0 when every rules file is valid; otherwise print "
        "file:line:column: message for each error and exit 1. Each PATH (a file, or a "
        "folder: one catalog) is a catalog of its own, as MOMENTS_RULES takes one; with "
        "several, what they would break as one catalog (a rule id in two of them) is a "
        "warning, and an error with --together.",
        """
                  moments rules validate my-rules.yaml
                  moments rules validate rules/      # every .yaml in the folder
                  moments rules validate --together gating.yaml retention.yaml
                """,
        _cmd_rules_validate,
    )
    p.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="a rules file or folder; several are each checked as a catalog of its own",
    )
    p.add_argument(
        "--together",
        action="store_true",
        help="check the paths as one catalog, as if their files were in one rules folder "
        "(a file of gating: alone has no rules, and is not checked alone)",
    )


def _cmd_rules_validate(args: argparse.Namespace) -> int:
    from moments.risk import SPEND_SERIES
    from rules.catalog import load_rules, load_together
    from rules.exceptions import RulesError, RulesPathError
    from rules.lint import warnings

    if args.together:
        return _validate_together(args.paths)
    failed = missing = False
    for path in args.paths:
        try:
            rules = load_rules(path)
        except RulesError as exc:
            failed = True
            for problem in exc.problems:
                print(problem)
            if isinstance(exc, RulesPathError):
                missing = True
            continue
        print(f"{path}: {len(rules)} rule(s) OK")
        for warning in warnings(rules, read_elsewhere=(SPEND_SERIES,)):
            print(f"{path}: warning: {warning}")
        _say_left_out(path)
    if missing:  # a path given wrong: the check did not run as asked (exit 2)
        return 2
    if failed or len(args.paths) < 2:
        return 1 if failed else 0
    # Each was checked alone; what they would break in one rules folder is said too
    # (a rule id in two files passed, unnoticed: analyst review).
    try:
        load_together(args.paths)
    except RulesError as exc:
        print(
            f"note: each PATH is a catalog of its own (MOMENTS_RULES takes one); as one "
            f"catalog, in one rules folder, they would be refused ({len(exc.problems)} "
            f"problem(s), the first: {exc.problems[0]}); `--together` checks them as one"
        )
    return 0


def _validate_together(paths: Sequence[Path]) -> int:
    from moments.risk import SPEND_SERIES
    from rules.catalog import load_together
    from rules.exceptions import RulesError, RulesPathError
    from rules.lint import warnings

    try:
        rules = load_together(paths)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem)
        return 2 if isinstance(exc, RulesPathError) else 1
    named = " ".join(str(p) for p in paths)
    print(f"{named}: {len(rules)} rule(s) OK as one catalog")
    for warning in warnings(rules, read_elsewhere=(SPEND_SERIES,)):
        print(f"{named}: warning: {warning}")
    for path in paths:
        _say_left_out(path)
    return 0


def _say_left_out(path: Path) -> None:
    """A note per file of the folder `path` that looks meant as rules and is not read
    (`campaign.yaml.txt`): the folder validated without it, its rules never loaded."""
    from rules.catalog import left_out_files

    for file in left_out_files(path):
        print(
            f"{path}: note: {file.name} is left out: a rules file's name ends in .yaml or "
            ".yml; rename it to load it"
        )


def _add_rules_explain(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "explain",
        "Print each rule (or one) in plain words: what it looks at, when it fires, "
        "its thresholds per region and tier, and the task it creates.",
        """
                  moments rules explain
                  moments rules explain low_balance
                  moments rules explain my-rules.yaml             # as validate and test take it
                  moments rules explain my-rules/ bill_spike
                  moments rules explain --rules my-rules/ bill_spike
                  moments rules explain --policy dispatch-policy.yaml complaint_opened
                """,
        _cmd_rules_explain,
    )
    p.add_argument(
        "targets",
        nargs="*",
        metavar="[PATH] [RULE_ID]",
        help="a rules file or folder (a name ending in .yaml or .yml, holding a /, or that "
        "exists), and/or only this rule",
    )
    p.add_argument(
        "--rules",
        type=Path,
        default=None,
        help="rules file or folder, as PATH (default: MOMENTS_RULES or the packaged catalog)",
    )
    p.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="DISPATCH_POLICY.yaml",
        help="also say what dispatch does with each rule's task: its channel's hours, the "
        "limits a day, what happens over them (default: MOMENTS_DISPATCH_POLICY; unset: "
        "nothing of dispatch)",
    )


def _cmd_rules_explain(args: argparse.Namespace) -> int:
    from rules.catalog import load_rules
    from rules.explain import explain

    try:
        given, rule_id = _explain_targets(args.targets, args.rules)
    except ValueError as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 2
    from sinks.policy import check_rule_ids, load_policy

    settings = command_settings()
    path = given if given is not None else settings.rules
    rules = load_rules(path)
    policy_path = args.policy or settings.dispatch_policy
    dispatch = None
    if policy_path is not None:
        policy = load_policy(policy_path)
        check_rule_ids(
            policy_path,
            policy,
            (r.id for r in rules.rules),
            (r.task.moment_type for r in rules.rules),
        )
        dispatch = policy.describe_rule
    try:
        paragraphs = explain(rules, rule_id, dispatch)
    except KeyError:
        from rules.hints import meant

        ids = sorted(r.id for r in rules.rules)
        close = meant(str(rule_id), ids)  # `; did you mean 'big_topup'?`
        if path is None:
            # A rule of the analyst's own file, its path left out, was looked for in the
            # packaged catalog and told "`moments rules explain PATH` lists them all".
            then = f"{close} For" if close else "; for"  # not "did you mean 'x'?; for"
            print(
                f"moments: no rule {rule_id!r} in the packaged catalog (MOMENTS_RULES is "
                f"unset){then} a rule of your own file or folder, name it first: "
                f"moments rules explain my-rules/ {rule_id} (known here: {', '.join(ids)})",
                file=sys.stderr,
            )
            return 1
        print(
            f"moments: no rule {rule_id!r} in {path}{close} (known: {', '.join(ids)}); "
            "`moments rules explain PATH` lists them all",
            file=sys.stderr,
        )
        return 1
    print("\n\n".join(paragraphs))
    return 0


def _explain_targets(targets: Sequence[str], rules: Path | None) -> tuple[Path | None, str | None]:
    """`rules explain [PATH] [RULE_ID]`: the rules path and rule id among `targets` (a
    path, as `rules validate` and `rules test` take it, answered "no rule 'my.yaml'").
    Raises ValueError for two paths or two ids."""
    path, rule_id = rules, None
    for target in targets:
        if _looks_like_path(target):
            if path is not None:
                raise ValueError(f"give one rules file or folder (got {path} and {target})")
            path = Path(target)
        elif rule_id is not None:
            raise ValueError(f"explain one rule, or all (got {rule_id} and {target})")
        else:
            rule_id = target
    return path, rule_id


def _looks_like_path(text: str) -> bool:
    """A rules file or folder rather than a rule id (ids are lower case, with no /)."""
    return (
        text.lower().endswith((".yaml", ".yml"))
        or "/" in text
        or os.sep in text
        or Path(text).exists()
    )


def _add_rules_diff(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "diff",
        "Say what a new rules file or folder changes against the one in force: rules "
        "added, removed and changed (with their versions, and those changed without a new "
        "version), and catalog sections changed; nothing is loaded anywhere. Exit 0 "
        "whatever it finds (a change is no failure), 1 when the rules of either side are "
        "refused (each problem as file:line:column: message), 2 when a path is not there.",
        """
                  moments rules diff my-rules/ new-rules/
                  moments rules diff src/rules/catalog/default.yaml my-rules.yaml
                """,
        _cmd_rules_diff,
    )
    p.add_argument("old", type=Path, metavar="OLD", help="the rules in force")
    p.add_argument("new", type=Path, metavar="NEW", help="the rules to compare")


def _cmd_rules_diff(args: argparse.Namespace) -> int:
    from rules.catalog import load_rules
    from rules.changes import compare_rules

    changes = compare_rules(load_rules(args.old), load_rules(args.new))
    for label, items in (
        ("added", changes.added),
        ("removed", changes.removed),
        ("changed", changes.changed),
        ("catalog sections changed", changes.others),
    ):
        for item in items:
            print(f"{label}: {item}")
            for detail in changes.details.get(item.split(" ", 1)[0], ()):
                print(f"    {detail}")
    if not changes:
        print("no rule changed")
    for rule_id in changes.same_version:
        print(
            f"warning: {rule_id} changed but kept its version; raise `version:` so its tasks "
            "tell the old rule from the new",
            file=sys.stderr,
        )
    return 0


def _add_rules_test(sub: Subparsers) -> None:
    from moments.enums import EventType

    p = add_command(
        sub,
        "test",
        "Run rules over events from a file, offline (no broker, no Redis), and print "
        "each task with the values that made it fire. Lines are JSON events with a "
        '"type" (topup, roaming, complaint, usage, profile), or CSV with a type column; '
        "--type gives the type of lines without one (records of one topic). .gz files "
        "are read too.",
        """
                  moments rules test rules/ --events events.jsonl
                  kcat -C -b kafka-1:9092 -t telecom.usage -o -1000 -e -q > usage-sample.jsonl
                  moments rules test rules/ --events usage-sample.jsonl --type usage
                  moments rules test my-rules.yaml --events usage.jsonl.gz --profiles crm.jsonl
                  moments rules test rules/ --events events.jsonl --to 2026-12-01T00:00:00+08:00
                  moments rules test rules/ --events events.jsonl --shadow-as-live
                  moments rules test my-rules.yaml --events cases.jsonl \\
                      --expect low_balance=2 --expect refused=0    # exit 1 otherwise
                """,
        _cmd_rules_test,
    )
    p.add_argument("path", type=Path, metavar="PATH", help="rules file or folder")
    p.add_argument("--events", type=Path, required=True, help="events: JSON lines or CSV (.gz too)")
    p.add_argument(
        "--type",
        choices=[t.value for t in EventType],
        default=None,
        help='the event type of lines without a "type" field, e.g. records dumped from one '
        "input topic (default: each line needs one)",
    )
    p.add_argument("--profiles", type=Path, default=None, help="profile events: JSON lines or CSV")
    p.add_argument(
        "--to",
        "--until",
        dest="until",
        default=None,
        metavar="TIME",
        help="let event time run on to this time (closes windows): RFC 3339, a date "
        "(midnight in the rules' gating.timezone, Asia/Shanghai by default) or a time ago "
        "(2h, 1d); every event of "
        "the file is still judged, none is left out. --until is the same (its older name)",
    )
    p.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="RULE=N",
        help="the rule must make exactly N tasks (repeat per rule); with any --expect, an "
        "event refused fails too, unless refused=N allows it; exit 1 when not as expected. "
        "Without --expect, a run in which every event was refused (or the file held none) "
        "exits 1: nothing was tested",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print tasks as JSON lines, as the stream publishes them: subscriber ids whole "
        "(personal data, as in the events file)",
    )
    p.add_argument(
        "--show-ids",
        action="store_true",
        help="show subscriber ids unmasked in the readable lines (--json always does)",
    )
    p.add_argument(
        "--shadow-as-live",
        action="store_true",
        help="run rules in mode: shadow as live ones, to see each task they would make "
        "(by default they are counted in the summary only, as on the stream)",
    )


@contextmanager
def _progress_lines(
    until: dt.datetime | None,
) -> Iterator[tuple[Callable[[int, int], None], Callable[[int], None]]]:
    """How far `rules test` is, on stderr every `PROGRESS_EVERY_S` (a week of history ran
    a minute without a word; a test case's few events say nothing), and the last count
    when it said anything: (events done of all, after each batch; event time reached in
    the run on to `until` after them: a --to years after the last event swept for
    minutes without a word)."""
    from moments.progresslines import ProgressLines

    said = False

    def write(text: str) -> None:
        nonlocal said
        said = True
        print(text, file=sys.stderr, flush=True)

    lines = ProgressLines("rules test", write)
    last = 0

    def show(done: int, total: int) -> None:
        nonlocal last
        last = done
        lines.update(done, done / total if total else None)

    def swept(at: int) -> None:
        zone = until.tzinfo if until is not None else dt.UTC
        day = dt.datetime.fromtimestamp(at, zone).date()
        end = f" of the --to, {until.date()}" if until is not None else ""
        lines.say(lambda: f"all {last:,} events in; event time run on to {day}{end}")

    yield show, swept
    if said:
        lines.finish(last)


def _cmd_rules_test(args: argparse.Namespace) -> int:
    from moments.cliparts import parse_when
    from moments.models import EventType
    from moments.rulecheck import (
        EventFileError,
        MissingEventTypeError,
        NotAFileError,
        check_expectations,
        check_rules,
        describe_task,
        nothing_evaluated,
        parse_expectations,
        summary,
    )
    from rules.catalog import holiday_gaps, load_rules

    try:
        expected = parse_expectations(args.expect)
    except ValueError as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 2
    rules = load_rules(args.path)
    # A date is midnight where the rules count the days of profile-less subscribers.
    until = parse_when(args.until, rules.gating.zone, "--to")
    if args.shadow_as_live:
        rules = rules.with_shadows_live()
    try:
        event_type = EventType(args.type) if args.type else None
        with _progress_lines(until) as (progress, sweeping):
            result = check_rules(
                rules, args.events, args.profiles, until, event_type, progress, sweeping
            )
    except (EventFileError, OSError) as exc:
        hint = ""
        if (
            isinstance(exc, MissingEventTypeError)
            and args.type is None
            and "--type" not in str(exc)
        ):
            hint = ", or give --type TYPE for the lines without one (records of one topic)"
        print(f"moments: {exc}{hint}", file=sys.stderr)
        return 2 if isinstance(exc, NotAFileError) else 1  # a path given wrong: set-up
    for task in result.tasks:
        if args.json:
            print(task.model_dump_json())
        else:
            print(describe_task(task, mask=not args.show_ids))
    if not args.json:
        print("\n".join(summary(result, rules, until)))
    if until is not None and until.timestamp() < result.last_event:  # the backtest's --to?
        last = dt.datetime.fromtimestamp(result.last_event, until.tzinfo).isoformat()
        print(
            f"moments: note: --to {args.until} is before the last event ({last}): rules "
            "test leaves no event out (unlike the backtest's --to); it runs event time on "
            "after the last event, so this --to changed nothing. Cut the file to test part "
            "of it",
            file=sys.stderr,
        )
    for said in result.out_of_order:  # the tasks above are not the history's
        print(f"moments: warning: {said}", file=sys.stderr)
    if result.first_event:  # holiday rules silent for want of days: said, not guessed at
        end = max(result.last_event, until.timestamp() if until is not None else 0.0)
        zone = rules.gating.zone
        days = [dt.datetime.fromtimestamp(t, zone).date() for t in (result.first_event, end)]
        if gaps := holiday_gaps(rules, *days):
            print(f"moments: warning: {gaps}", file=sys.stderr)
    for cut in result.cuts:  # the tasks above are those of the lines before the cut
        print(f"moments: {cut.said()}", file=sys.stderr)
    if not expected:
        # With --expect, `refused=N` may be what a case tests; without, a run that ran no
        # rule on any event passed as a test.
        if nothing := nothing_evaluated(result, args.events):
            print(f"moments: {nothing}", file=sys.stderr)
            return 1
        return 1 if result.cuts else 0
    wrong = check_expectations(result, rules, expected)
    for line in wrong:
        print(f"FAILED {line}", file=sys.stderr)
    if not wrong:
        print(f"as expected: {', '.join(f'{k}={v}' for k, v in expected.items())}", file=sys.stderr)
    return 1 if wrong or result.cuts else 0
