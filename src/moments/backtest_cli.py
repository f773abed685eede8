"""The `moments backtest` subcommand: arguments, progress, and the files it writes."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moments.cliparts import add_command, command_settings, parse_when, positive_int, stderr_console
from moments.exceptions import ConfigError
from moments.filenames import is_csv

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from moments.backtest import Published
    from moments.backtest_input import EventFile
    from moments.cliparts import Subparsers
    from moments.progresslines import ProgressLines
    from rules.catalog import RuleSet
    from sinks.policy import DispatchPolicy

EXAMPLES = """
    moments simulate --subscribers 2000 --rate 2 --duration 7d --seed 1 --to-file week.jsonl.gz
    moments backtest --events week.jsonl.gz --rules src/rules/catalog/default.yaml
    moments backtest --events week.jsonl.gz --rules my-rules/ --policy dispatch.yaml --out out/
    moments backtest --events usage.csv.gz topups.jsonl --profiles crm.jsonl --rules rules/ \\
        --from 2026-12-01 --to 2026-12-08
    moments backtest --events week.jsonl.gz --rules new-rules/ --baseline-rules rules/
    moments backtest --events week.jsonl.gz --rules trial-rules/ --shadow-as-live
    moments backtest --events history.jsonl.gz --profiles crm.jsonl \\
        --live-from 2027-01-15 --out golive-0115/   # a cut-over: no task before the 15th
"""

OUTPUTS = (
    "tasks.jsonl, withdrawals.jsonl, report.json, report.md, tasks_per_day.png and report.html"
)
REFUSED_SHARE_WARN = 0.01
"""Above this share of refused events the backtest's figures are in doubt: said in yellow."""


def add_backtest_command(sub: Subparsers) -> None:
    from moments.enums import EventType

    p = add_command(
        sub,
        "backtest",
        "Replay event history through rules and the dispatch policy, offline and in event "
        "time (the stream's engine and dispatch decisions, no broker or Redis): the tasks "
        f"they would have made and the load per day, region and channel. Writes {OUTPUTS} "
        "to --out and prints the tables.",
        EXAMPLES,
        _cmd_backtest,
    )
    p.add_argument(
        "--events",
        type=Path,
        nargs="+",
        required=True,
        metavar="FILE",
        help="JSON lines or CSV with a `type` per event (.gz too), each in event-time order",
    )
    p.add_argument(
        "--type",
        dest="event_type",
        choices=[t.value for t in EventType if t is not EventType.PROFILE],
        default=None,
        help='the event type of lines without a "type" field, e.g. records dumped from one '
        "input topic (as `rules test --type`)",
    )
    p.add_argument(
        "--rules",
        type=Path,
        default=None,
        metavar="PATH",
        help="rules file or folder (default: the packaged catalog)",
    )
    p.add_argument(
        "--profiles",
        type=Path,
        default=None,
        metavar="FILE",
        help="profile events (no `type` needed), applied before the events",
    )
    p.add_argument(
        "--from",
        dest="start",
        default=None,
        metavar="DATE",
        help="report from this on (YYYY-MM-DD in the policy's time zone, RFC 3339, or a "
        "time ago: 2h, 7d); "
        "earlier events are a warm-up: they build state (first-time values, baselines) and "
        "go through dispatch, but are not reported",
    )
    p.add_argument(
        "--live-from",
        dest="live_from",
        default=None,
        metavar="DATE",
        help="rehearse a cut-over with MOMENTS_LIVE_FROM set to DATE: moments dated before "
        "it make no task (every rule as in mode: shadow, counted) and build the state; "
        "unlike --from, nothing before it is dispatched",
    )
    p.add_argument(
        "--to",
        dest="end",
        default=None,
        metavar="DATE",
        help="skip events from this on; event time runs on to it (windows close, waiting "
        "tasks are released); as --from",
    )
    p.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="DISPATCH_POLICY.yaml",
        help="capacity, overflow, contact cap, merge window (default: MOMENTS_DISPATCH_POLICY "
        "or the built-in defaults)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("backtest-out"),
        metavar="DIR",
        help="where the files go (created; default backtest-out/)",
    )
    p.add_argument(
        "--baseline-rules",
        type=Path,
        default=None,
        metavar="PATH",
        help="also run these rules over the same history and report tasks added, removed "
        "and changed per rule",
    )
    p.add_argument(
        "--top", type=positive_int, default=10, metavar="N", help="rules in the top list (10)"
    )
    p.add_argument(
        "--shadow-as-live",
        action="store_true",
        help="run rules in mode: shadow as live ones, through dispatch (capacity, contact "
        "cap, merge) like the others; by default they are counted only, as on the stream",
    )


def _cmd_backtest(args: argparse.Namespace) -> int:
    from rich.console import Console

    from moments.backtest import BacktestResult, run_backtest
    from moments.backtest_input import (
        EventFile,
        Window,
        cuts_of,
        history,
        order_said,
        unreadable_lines,
        unreadable_note,
        untyped_lines,
        untyped_note,
    )
    from moments.backtest_report import (
        build_report,
        compare,
        compare_moments,
        empty_period,
        moment_figures,
        print_report,
        report_warnings,
        short_history_notes,
        suppressed_notes,
        unused_regions,
    )
    from moments.models import EventType
    from moments.records import OUT_OF_TIME
    from moments.rulecheck import EventFileError, NotAFileError
    from rules.catalog import load_rules
    from sinks.policy import check_rule_ids, load_policy

    console = stderr_console()
    policy_path = args.policy
    if policy_path is None:
        policy_path = command_settings().dispatch_policy
    policy = load_policy(policy_path)
    start = parse_when(args.start, policy.zone, "--from")
    end = parse_when(args.end, policy.zone, "--to")
    live_from = parse_when(args.live_from, policy.zone, "--live-from", ago=False)
    if start is not None and end is not None and end <= start:
        raise ConfigError(  # it said no more: which was wrong, a date or a zone, was to guess
            f"--to {args.end} ({end.isoformat()}) must be after --from {args.start} "
            f"({start.isoformat()}): dates are midnights in the policy's zone, "
            f"{policy.timezone}, and --to is the first instant left out"
        )
    rules = load_rules(args.rules)
    baseline = load_rules(args.baseline_rules) if args.baseline_rules is not None else None
    # One policy serves both runs: a key may name a rule of either catalog (the one the
    # candidate removes, in the production policy), and is said when only the baseline's.
    both = [*rules.rules, *(baseline.rules if baseline is not None else ())]
    check_rule_ids(policy_path, policy, (r.id for r in both), (r.task.moment_type for r in both))
    policy_said = baseline_only_keys(policy_path, policy, rules) if baseline is not None else []
    if args.shadow_as_live:
        rules = rules.with_shadows_live()
        baseline = baseline.with_shadows_live() if baseline is not None else None
    try:  # before the replay: said after it, a long history's minutes were lost
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        said = (  # it said "[Errno 17] File exists", with no fix
            f"{args.out} is a file: name a folder (created if need be), e.g. --out "
            f"{args.out.with_name(args.out.stem + '-report')}"
            if args.out.exists() and not args.out.is_dir()
            else str(exc)
        )
        print(f"moments: cannot write the report to --out {args.out}: {said}", file=sys.stderr)
        return 2  # a path given wrong: set-up (README, exit codes)
    from moments.gctune import tune_gc

    tune_gc()  # as the worker does: start-up objects frozen, fewer young collections

    reading: list[tuple[str, FileBar | FileLines]] = []  # the run under way: said at a stop

    def run(label: str, rule_set: Any) -> BacktestResult:
        default = EventType(args.event_type) if args.event_type else None
        files = [EventFile(p, default) for p in args.events]
        if args.profiles is not None:
            files.insert(0, EventFile(args.profiles, EventType.PROFILE, profiles=True))
        hi = end.timestamp() if end is not None else float("inf")
        window = Window()
        with file_bar(console, label, files) as bar:
            reading[:] = [(label, bar)]

            def swept(at: int) -> None:
                if end is not None:
                    bar.swept(dt.datetime.fromtimestamp(at, end.tzinfo).date(), end.date())

            result = run_backtest(
                rule_set,
                history(files, args.profiles is not None, hi, window),
                policy,
                bar.show,
                until=end,
                report_from=start,
                live_from=live_from,
                sweeping=swept,
            )
            bar.done(result.events)
        result.window = window
        result.unreadable_count, result.unreadable = unreadable_lines(files)
        result.untyped_count, result.untyped = untyped_lines(files)
        result.cuts = cuts_of(files)
        # The snapshot of --profiles is applied whole at the start, in no time order.
        result.out_of_order = order_said(files[1:] if args.profiles is not None else files)
        return result

    had_report = any(args.out.iterdir())  # an earlier run's: left as it was by a stop
    try:
        with ctrl_c_stops():
            result = run("backtest", rules)
            empty = empty_period(result, args.start, args.end, args.events, args.live_from)
            # The baseline's period is the same: empty too, its run would be time lost.
            base = run("baseline", baseline) if baseline is not None and not empty else None
    except (EventFileError, OSError) as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, NotAFileError) else 1  # a path given wrong: set-up
    except KeyboardInterrupt:
        label, bar = reading[-1] if reading else ("backtest", None)
        print(stopped_reading(label, bar, args.out, had_report), file=sys.stderr)
        return 130
    report = build_report(result, top=args.top)
    # A file cut short first: every figure after its cut lacks its events.
    report["warnings"] = [cut.said() for cut in result.cuts] + ([empty] if empty else [])
    report["warnings"] += (
        report_warnings(result, rules) + unused_regions(result.policy, report["capacity"])
    ) + policy_said
    report["run"] = {
        "events": ", ".join(str(p) for p in args.events),
        "profiles": str(args.profiles) if args.profiles is not None else None,
        "rules": str(args.rules or "the default catalog"),
        "baseline rules": str(args.baseline_rules) if args.baseline_rules else None,
        "dispatch policy": str(policy_path or "the built-in default"),
        "--from": args.start,  # the report's start is `report from`: --live-from, when later
        "--to": args.end,
        "--live-from": args.live_from,
        "shadow rules": "as live" if args.shadow_as_live else None,
    }
    if base is not None and baseline is not None:
        comparison = compare(
            [p.payload for p in base.reported],
            [p.payload for p in result.reported],
            (baseline, rules),
        )
        report["comparison"] = comparison.as_dict()
        report["comparison"]["per_moment_type"] = compare_moments(
            moment_figures(base), moment_figures(result)
        )
        report["notes"] += short_history_notes(report["comparison"], result, rules)
        report["notes"] += suppressed_notes(report, rules)
    try:
        _write(
            args.out,
            report,
            result.reported,
            base.reported if base else None,
            result.reported_withdrawals,
        )
    except OSError as exc:
        print(f"moments: cannot write the report to --out {args.out}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"moments: backtest stopped (Ctrl-C) while writing the report to {args.out}/: its "
            "files may be part this run's, part missing or an earlier run's; run it again",
            file=sys.stderr,
        )
        return 130
    said_last = len(result.cuts) + bool(empty)  # the cuts and an empty period
    if empty:  # no table to show: the other warnings, then what is wrong and the fix
        for warning in report["warnings"][said_last:]:
            console.print(warning, style="bold yellow")
        if note := untyped_note(result.untyped_count, result.untyped):
            console.print(note, style="bold yellow", markup=False, highlight=False)
        for cut in result.cuts:  # a file read in part: maybe why the period is empty
            console.print(f"moments: {cut.said()}", style="bold red", markup=False, highlight=False)
        console.print(f"moments: {empty}", style="bold red", markup=False, highlight=False)
        return 1
    print_report(report, Console())
    for warning in report["warnings"][said_last:]:
        console.print(warning, style="bold yellow")
    for note in report["notes"]:
        console.print(note)
    out_of_time = sum(n for reason, n in result.dead_letters.items() if reason in OUT_OF_TIME)
    refused = sum(result.dead_letters.values()) - out_of_time
    if refused:
        share = refused / max(result.events, 1)
        style = "bold yellow" if share > REFUSED_SHARE_WARN else ""
        console.print(
            f"{refused:,} event(s) ({share:.1%}) refused as a worker would refuse them; "
            f"{_see_refused(args.events)}. Most often:",
            style=style,
        )
        for said, n in result.refusals.most_common(3):
            console.print(f"  {n:,} x {said}", style=style, markup=False, highlight=False)
        if note := unreadable_note(result.unreadable_count, result.unreadable):
            console.print(note, style=style, markup=False, highlight=False)
    if note := untyped_note(result.untyped_count, result.untyped):
        console.print(note, style="bold yellow", markup=False, highlight=False)
    if out_of_time:
        console.print(
            f"{out_of_time:,} event(s) not applied, as on the stream: older than their "
            "subscriber's latest of their topic by more than the lateness (1 h), or an old "
            "profile snapshot (the history is out of order)"
        )
    console.print(
        f"{result.events:,} event(s) in {result.seconds:.1f}s ({result.rate:,.0f} events/s), "
        f"{len(result.reported):,} task(s) reported; wrote {OUTPUTS} to {args.out}/"
    )
    if result.cuts:  # said last, where it is seen, and the exit status says it to scripts
        for cut in result.cuts:
            console.print(f"moments: {cut.said()}", style="bold red", markup=False, highlight=False)
        console.print(
            "The report holds the lines read before the cut: re-copy the file and run again "
            "(or --to before the cut, for a report of what was read)",
            style="bold red",
        )
        return 1
    return 0


@contextmanager
def ctrl_c_stops() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt at once within: `asyncio.run` (the engine's) takes
    Python's own SIGINT handler to mean "cancel the task", and the backtest's task, all
    computation, gives the loop no turn to be cancelled in: the first Ctrl-C did nothing
    and the run went on to write its report. A handler of our own is left alone by
    asyncio. A SIGINT ignored (`cmd &` in a script) stays ignored, as asyncio leaves it."""
    main = threading.current_thread() is threading.main_thread()  # where signals are set
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def stopped_reading(
    label: str, bar: FileBar | FileLines | None, out: Path, had_report: bool
) -> str:
    """What a Ctrl-C before the report is written says: how far the run had read, and that
    --out holds nothing of it (it exited 130 without a word, and the user looked for a
    report, or took the earlier one there for this run's)."""
    where = " in the baseline rules' run" if label == "baseline" else ""
    read = ""
    if bar is not None:
        done, total = bar.read()
        share = f" ({done / total:.0%} of the history's bytes)" if total else ""
        read = f" after {bar.events:,} event(s) read{share}"
    left = (
        "; the report already there, from an earlier run, is as it was"
        if had_report
        else " (the report needs the whole run)"
    )
    return (
        f"moments: backtest stopped (Ctrl-C){where}{read}: nothing was written to {out}/"
        f"{left}. Run it again (an earlier --to makes a shorter run)"
    )


def baseline_only_keys(path: Path | None, policy: DispatchPolicy, rules: RuleSet) -> list[str]:
    """A warning per `overflow:`/`relevance:` key of the policy file that names a rule
    (or moment type) only the baseline rules hold: a worker with the candidate rules
    refuses such a policy, so it needs the key dropped when they are deployed."""
    from sinks.policy import unknown_rule_keys

    if path is None:
        return []
    keys = unknown_rule_keys(
        policy, (r.id for r in rules.rules), (r.task.moment_type for r in rules.rules)
    )
    return [
        f"{path}: {section}.{key} names {key!r}, which only the baseline rules hold: it "
        "applies to the baseline run; a worker with the candidate rules refuses this policy "
        f"(no rule id {key!r}), so drop the key when you deploy them"
        for section, key in keys
    ]


class FileBar:
    """A progress bar over the bytes of history files read (`progress_of`), with the
    events read so far; `show` is the engine's progress callback (drawn at most 5 times a
    second)."""

    def __init__(self, progress: Progress, label: str, files: list[EventFile]) -> None:
        from moments.backtest_input import progress_of

        self.progress = progress
        self.read = progress_of(files)
        self.label = label
        self.task = progress.add_task(label, total=self.read()[1], events=0, rate=0.0)
        self.started = self.last = time.monotonic()
        self.events = 0

    def show(self, events: int) -> None:
        self.events = events
        now = time.monotonic()
        if now - self.last >= 0.2:
            self.last = now
            self.progress.update(
                self.task, completed=self.read()[0], events=events, rate=self._rate(events, now)
            )

    def done(self, events: int) -> None:
        rate = self._rate(events, time.monotonic())
        done = self.read()[1]
        self.progress.update(self.task, completed=done, events=events, rate=rate)
        self.progress.update(self.task, description=self.label)  # the run on's said: over

    def swept(self, day: dt.date, until: dt.date) -> None:
        """Event time run on to `day` after the last event, of the `--to` `until`: the
        bar, full, stood still for minutes of it."""
        now = time.monotonic()
        if now - self.last >= 0.2:
            self.last = now
            self.progress.update(self.task, description=f"run on to {day} of {until}")

    def _rate(self, events: int, now: float) -> float:
        """Events a second: the bytes a second of a gzip file read like a wrong unit."""
        return events / (now - self.started) if now > self.started else 0.0


class FileLines:
    """`FileBar` for a log (the output is no terminal): a line every few seconds."""

    def __init__(self, lines: ProgressLines, files: list[EventFile]) -> None:
        from moments.backtest_input import progress_of

        self.lines = lines
        self.read = progress_of(files)
        self.events = 0

    def show(self, events: int) -> None:
        self.events = events
        done, total = self.read()
        self.lines.update(events, done / total if total else None)

    def done(self, events: int) -> None:
        self.lines.finish(events)

    def swept(self, day: dt.date, until: dt.date) -> None:
        """A line, when one is due, of event time run on to `day` after the last event,
        of the `--to` `until` (as `rules test` says it)."""
        self.lines.say(
            lambda: (
                f"all {self.events:,} events in; event time run on to {day} of the --to, {until}"
            )
        )


@contextmanager
def file_bar(console: Console, label: str, files: list[EventFile]) -> Iterator[FileBar | FileLines]:
    """The bar of `moments backtest` and `moments state seed` while they read history;
    lines in a log instead, where a bar is drawn only once it ends."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from moments.progresslines import to_console

    if not console.is_terminal:
        yield FileLines(to_console(label, console), files)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[events]:>12,} events"),
        TextColumn("{task.fields[rate]:>8,.0f}/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        yield FileBar(progress, label, files)


def _see_refused(events: Sequence[Path]) -> str:
    """The command that shows each refused event of these files: `events check` reads JSON
    lines only and refuses a CSV file, whose rows `rules test` lists with their reasons."""
    csvs = [p for p in events if is_csv(p)]
    check = "`moments events check FILE` names each line and what is wrong with it"
    if not csvs:
        return check
    name = csvs[0] if len(csvs) == 1 else "FILE"
    rows = (
        f"`moments rules test RULES --events {name}` lists the refused rows and what is "
        "wrong with each"
    )
    if len(csvs) == len(events):
        return rows
    return f"for a JSON lines file {check}; for a CSV one {rows}"


def _write(
    out: Path,
    report: dict[str, Any],
    tasks: list[Published],
    baseline: list[Published] | None,
    withdrawals: Sequence[Published] = (),
) -> None:
    import orjson

    from moments.backtest_report import chart_png, html_page, markdown

    out.mkdir(parents=True, exist_ok=True)
    _write_private(out / "tasks.jsonl", b"".join(p.payload + b"\n" for p in tasks))
    _write_private(out / "withdrawals.jsonl", b"".join(p.payload + b"\n" for p in withdrawals))
    if baseline is not None:
        _write_private(out / "baseline-tasks.jsonl", b"".join(p.payload + b"\n" for p in baseline))
    (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (out / "report.md").write_text(markdown(report))
    png = chart_png(report)
    (out / "tasks_per_day.png").write_bytes(png)
    (out / "report.html").write_text(html_page(report, png))


def _write_private(path: Path, data: bytes) -> None:
    """`data` in a file only its owner reads: the tasks name subscribers, and under the
    usual umask (022) every user of a shared analysis machine could read them. A symbolic
    link in its place is refused, not followed: on a shared machine it could send the
    tasks to a file someone else chose."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if path.is_symlink():
            raise OSError(
                exc.errno, f"{path} is a symbolic link; remove it or choose another --out"
            ) from exc
        raise
    with open(fd, "wb") as file:
        os.fchmod(file.fileno(), 0o600)  # a file left by an earlier run keeps its mode
        file.write(data)
