"""The `moments events` subcommand: would a worker take these events? For the teams that
produce them, before they do (moments.eventcheck)."""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from moments.cliparts import add_command, command_settings, show_subcommands, stderr_console
from moments.enums import EventType
from moments.filenames import gzipped, is_csv

if TYPE_CHECKING:
    from rich.console import Console

    from moments.backtest_input import Cut, WholeLines
    from moments.cliparts import Subparsers
    from moments.eventcheck import CheckTally, LineVerdict

CHECK_EXAMPLES = """
    moments events check --type usage billing-sample.jsonl     # one payload per line
    moments events check events.jsonl.gz                       # lines with a "type" field
    kcat -C -b broker:9092 -t telecom.topup -e | moments events check --type topup -
    moments events check --now 2026-11-22T10:00:00+08:00 replayed-day.jsonl   # that day's clock
    moments events check --type roaming --json sample.jsonl | jq -r .message
    moments events check --type task_outcome outcomes.jsonl    # a dispatch consumer's outcomes
"""
PROGRESS_EVERY = 20_000


def add_events_command(sub: Subparsers) -> None:
    group = add_command(
        sub,
        "events",
        "Input events (and task outcomes): check payloads against the contract as a worker does.",
        CHECK_EXAMPLES,
        show_subcommands,
    )
    actions = group.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    check = add_command(
        actions,
        "check",
        "Check each line of JSON-lines files (.gz too; - for stdin) as a worker checks a "
        "record of its topic: the same validation, keyed by the line's subscriber_id. "
        "Prints FILE:LINE: REASON (TYPE): what is wrong for each line a worker would send to the "
        "dead-letter topic, then counts by type; exits 1 when any line is refused, or a "
        "file holds none to check. No "
        "broker or Redis.",
        CHECK_EXAMPLES,
        _cmd_check,
    )
    check.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="JSON lines (a named pipe too, as <(...) gives); - reads stdin",
    )
    check.add_argument(
        "--type",
        choices=[*(t.value for t in EventType), "task_outcome"],
        help='the event type of every line (default: each line\'s "type" field); '
        "task_outcome: task outcomes, as a worker reads moments.task-outcomes (not whether "
        "it holds the task: unknown_task and subscriber_mismatch need its ledger)",
    )
    check.add_argument(
        "--now",
        type=_instant,
        default=None,
        metavar="TIME",
        help="the clock a worker would read them by, RFC 3339 (default: now); an event "
        "dated over 15 minutes ahead of it (or MOMENTS_LATENESS_SECONDS when shorter, as "
        "the worker) is refused as `future`",
    )
    check.add_argument(
        "--json", action="store_true", help="one JSON object per refused line, on stdout"
    )
    check.add_argument(
        "--max-shown",
        type=_max_shown,
        default=50,
        metavar="N",
        help="refused lines printed (text output; all are counted; default 50)",
    )


def _max_shown(text: str) -> int:
    """An argparse type: a count of refused lines to print, 0 or more (`-1` was taken;
    a pasted value was echoed whole)."""
    from moments.cliparts import shown, whole  # `shown` names a count in this module

    value = whole(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(
            f"{shown(text)}: write a whole number of 0 or more, 0 to print no refused line "
            "(all are counted)"
        )
    return value


def _instant(text: str) -> dt.datetime:
    from moments.cliparts import WHEN_ECHOED, no_such_date
    from rules.durations import echoed

    shown = echoed(text, WHEN_ECHOED)  # pages of digits were echoed whole
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        said = no_such_date(text) or "write an RFC 3339 time, e.g. 2026-11-22T10:00:00+08:00"
        raise argparse.ArgumentTypeError(f"{shown}: {said}") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{shown}: give an offset, e.g. +08:00 or Z")
    return at


UTF16_HEAD = 4
"""Bytes of a file's beginning that tell UTF-16 text (`decoding.utf16_form`)."""


class _Utf16Error(Exception):
    """A file (or stdin) of UTF-16 text: what it is told (`eventcheck.utf16_said`)."""


class _Source:
    """The lines of one file (or stdin), counted as they are read; for a gzip file, the
    whole lines only, and where its data ended early (`cut`), as the backtest reads it.
    One of UTF-16 text stops before its first line (`_Utf16Error`): every line was refused
    as invalid_json, the encoding not named. It is told from the file's first four bytes,
    whatever lines they are in: without a byte-order mark a blank first line is a line of
    one byte (`\n` of `\n\x00`), which showed nothing, and every line after was refused."""

    def __init__(
        self, name: str, lines: Iterable[bytes], whole: WholeLines | None, piped: bool = False
    ) -> None:
        self.name = name
        self.piped = piped
        """A named pipe (`<(kcat ...)`), not a file on disk."""
        self._lines = lines
        self._whole = whole
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        held: list[bytes] | None = []  # the lines the file's first four bytes are in
        for number, line in enumerate(self._lines, 1):
            self.read = number
            if held is None:
                yield line
                continue
            held.append(line)
            if sum(map(len, held)) < UTF16_HEAD:
                continue
            self._not_utf16(b"".join(held))
            yield from held
            held = None
        if held:
            self._not_utf16(b"".join(held))
            yield from held

    def _not_utf16(self, head: bytes) -> None:
        from moments.eventcheck import utf16_said

        said = utf16_said(self.name, head[:UTF16_HEAD], jsonl=True, piped=self.piped)
        if said:
            raise _Utf16Error(said)

    def cut(self) -> Cut | None:
        return self._whole.cut(self.read) if self._whole is not None else None


@contextmanager
def _lines(name: str) -> Iterator[_Source]:
    if name == "-":
        yield _Source(name, sys.stdin.buffer, None)
        return
    path = Path(name)
    if gzipped(path):
        from moments.backtest_input import unzipped

        with path.open("rb") as raw:
            lines, whole = unzipped(raw, path)
            yield _Source(name, lines, whole, piped=not path.is_file())
    else:
        with path.open("rb") as file:
            yield _Source(name, file, None, piped=not path.is_file())


class _LogProgress:
    """How far a check is, for a log (a producer's CI, where `events check` runs): a line on
    stderr every `PROGRESS_EVERY_S`, and the last count when it said anything. The spinner
    is drawn on a terminal only, and a day's export checked for minutes without a word."""

    def __init__(self) -> None:
        from moments.progresslines import ProgressLines

        self.lines = ProgressLines("events check", self._write)
        self.said: int | None = None  # the count of the last line written

    def _write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def _count(self, total: int) -> str:
        elapsed = self.lines.clock() - self.lines.started
        rate = total / elapsed if elapsed > 0 else 0.0
        self.said = total
        return f"{total:,} lines in {elapsed:.0f} s ({rate:,.0f}/s)"

    def update(self, total: int, name: str) -> None:
        """`total` lines checked so far, of all the files; the one being read, `name`."""
        self.lines.say(lambda: f"{self._count(total)}, reading {name}")

    def finish(self, total: int) -> None:
        if self.said is not None and self.said != total:
            self._write(f"events check: {self._count(total)}")


def _cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from moments.eventcheck import CheckTally, check_lines
    from moments.refusals import allowed_ahead

    err = stderr_console()
    # A named pipe (`<(kcat ... | head)` gives /dev/fd/63) is read once, as a file is.
    missing = [f for f in args.files if f != "-" and not Path(f).exists()]
    if missing:
        err.print(
            f"no such file: {', '.join(missing)}; check the path, or pass - to read the "
            "payloads from stdin (kcat ... | moments events check -)",
            markup=False,
        )
        return 2
    if folders := [f for f in args.files if f != "-" and Path(f).is_dir()]:
        for folder in folders:
            err.print(
                f"{folder}: a folder; pass the files in it ({folder}/*.jsonl.gz, say)", markup=False
            )
        return 2
    if tables := [f for f in args.files if is_csv(f)]:
        err.print(
            f"{', '.join(tables)}: events check reads what a producer sends, one JSON "
            "payload per line (.jsonl, .gz); a CSV export is read by `moments backtest` and "
            "`moments rules test`",
            markup=False,
        )
        return 2
    outcomes = args.type == "task_outcome"
    event_type = EventType(args.type) if args.type and not outcomes else None
    now = args.now.timestamp() if args.now is not None else time.time()
    # The worker's tolerance, from the same setting: 15 minutes ahead accepted here when
    # MOMENTS_LATENESS_SECONDS=300 made the worker refuse what is over 5.
    ahead = allowed_ahead(command_settings().lateness_seconds)
    tally = CheckTally()
    shown = 0
    # Lines on stdout (for grep and jq), the count of lines checked on stderr. When both
    # are one terminal, the lines go through the progress display, which keeps them above
    # itself; rich would otherwise send stdout to stderr whenever stderr is a terminal.
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    same_terminal = sys.stdout.isatty() and err.is_terminal
    out = progress.console if same_terminal else Console(file=sys.stdout, soft_wrap=True)
    task = progress.add_task("checking")
    log = None if err.is_terminal else _LogProgress()
    cuts = []
    wide: list[str] = []  # files of UTF-16 text, left unchecked
    empty: list[str] = []  # files of no line but blank ones
    forms: list[str] = []  # files that are one JSON document, not JSON lines
    with progress:
        for name in args.files:
            before = sum(tally.checked.values())
            refused_before = tally.refused_total
            with _lines(name) as lines:
                try:
                    verdicts = check_lines(
                        lines,
                        event_type,
                        now,
                        file=name != "-",
                        outcomes=outcomes,
                        ahead_s=ahead,
                        path=name,
                        piped=lines.piped,
                    )
                    for verdict in verdicts:
                        tally.add(verdict)
                        if verdict.reason is not None and (args.json or shown < args.max_shown):
                            shown += 1
                            said = _json(name, verdict) if args.json else _describe(name, verdict)
                            out.print(said, markup=False, highlight=False, soft_wrap=True)
                        total = sum(tally.checked.values())
                        if total % PROGRESS_EVERY == 0:
                            progress.update(task, description=f"checking {name}: {total:,} lines")
                            if log is not None:
                                log.update(total, name)
                except gzip.BadGzipFile:  # no gzip from its first byte
                    from moments.backtest_input import not_gzip

                    err.print(not_gzip(Path(name)), markup=False)
                    return 2
                except _Utf16Error as exc:  # before its first line was checked
                    # One line: a path wrapped in the middle was pasted broken with iconv.
                    # The other files are still checked and the totals said: it stopped
                    # here, and the refusals printed before had no count.
                    err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
                    wide.append(name)
                    continue
                if (cut := lines.cut()) is not None:
                    cuts.append(cut)
                elif sum(tally.checked.values()) == before:
                    empty.append(name)
                elif sum(tally.checked.values()) - before == tally.refused_total - refused_before:
                    forms += _form_said(name)  # every line refused: a JSON array?
    if log is not None:
        log.finish(sum(tally.checked.values()))
    _print_tally(err, tally, shown, ahead, clock_given=args.now is not None, outcomes=outcomes)
    for said in forms:
        err.print(f"moments: {said}", style="bold red", markup=False, highlight=False)
    for cut in cuts:  # the lines before were checked; the rest of the file is missing
        err.print(f"moments: {cut.said()}", style="bold red", markup=False, highlight=False)
    if wide:
        err.print(
            f"moments: not checked, UTF-16 text (see above): {', '.join(wide)}",
            style="bold red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 2
    if empty:  # an empty table and exit 0 read as a pass: a CI step green on nothing
        files = ", ".join(_file_named(n) for n in empty)
        # the lines of the other files were checked, and counted above
        lead = "" if sum(tally.checked.values()) else "nothing was checked: "
        holds = "holds" if len(empty) == 1 else "hold"
        err.print(
            f"moments: {lead}{files} {holds} no payload (an empty file? a "
            "sample cut to nothing?); give the producer's payloads, one JSON object a line",
            style="bold red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    return 1 if tally.refused_total or cuts or empty else 0


def _form_said(name: str) -> list[str]:
    """What a file every line of which was refused is, when it is one JSON array or
    pretty-printed JSON (`rulecheck.one_document_said`), with the command that converts
    it; nothing for standard input or any other file."""
    from moments.rulecheck import one_document_said

    said = None if name == "-" else one_document_said(Path(name))
    return [said] if said else []


def _file_named(name: str) -> str:
    return "stdin" if name == "-" else name


def _describe(name: str, verdict: LineVerdict) -> str:
    what = f" ({verdict.event_type})" if verdict.event_type else ""
    return f"{name}:{verdict.line}: {verdict.reason}{what}: {verdict.message}"


def _json(name: str, verdict: LineVerdict) -> str:
    import orjson

    return orjson.dumps({"file": name, **verdict._asdict()}).decode()


def _print_tally(
    err: Console,
    tally: CheckTally,
    shown: int,
    ahead_s: int,
    clock_given: bool = False,
    outcomes: bool = False,
) -> None:
    from rich.table import Table

    from moments.eventcheck import NO_TYPE, OUTCOME, types_said
    from moments.records import RejectReason

    total, refused = sum(tally.checked.values()), tally.refused_total
    if 0 < shown < refused:
        err.print(f"... {refused - shown:,} more refused line(s) not shown (--max-shown)")
    table = Table(title=f"{total:,} line(s) checked, {refused:,} refused")
    for column in ("type", "lines", "accepted", "refused (reason: lines)"):
        table.add_column(column, justify="left" if column == "type" else "right")
    for kind, lines in sorted(tally.checked.items()):
        reasons = {r: n for (k, r), n in tally.refused.items() if k == kind}
        table.add_row(
            kind or "(none)",
            f"{lines:,}",
            f"{lines - sum(reasons.values()):,}",
            ", ".join(f"{r}: {n:,}" for r, n in sorted(reasons.items())),
        )
    err.print(table)
    untyped = sum(n for (_, reason), n in tally.refused.items() if reason == NO_TYPE)
    # Lines typed `task_outcome` among events are said of as with `--type task_outcome`
    if outcomes or OUTCOME in tally.checked:
        err.print(
            "A worker would send the refused lines to the dead-letter topic with the reason "
            "shown. An outcome's fields: schemas/task-outcome.schema.json. Not checked here: "
            "whether the worker published the task (unknown_task) and for that subscriber "
            "(subscriber_mismatch), which only its ledger knows.",
            markup=False,
        )
    if any(r != NO_TYPE and k != OUTCOME for k, r in tally.refused):
        err.print(
            "A worker would send these lines to the dead-letter topic with the reason "
            "shown. Each event type's fields: schemas/<type>-event.schema.json (JSON Schema).",
            markup=False,
        )
    if tally.deletions:  # taken, as a worker takes them, but not in the form to send
        err.print(
            f"{tally.deletions:,} line(s) `null`: a deletion to a worker, which erases the "
            "subscriber the record key names (a line has no key: key it by the subscriber "
            "id) and warns, since compaction keeps such a record and its key for good: "
            "send a null value (a tombstone) instead, as docs/producing-events.md says "
            '("Deleting a subscriber").',
            markup=False,
        )
    ahead = sum(n for (_, reason), n in tally.refused.items() if reason == RejectReason.FUTURE)
    if ahead and not clock_given:  # each line said "check the producer's clock"
        err.print(
            f"{ahead:,} line(s) dated over {_seconds_said(ahead_s)} ahead of this machine's "
            "clock (a worker's limit, MOMENTS_LATENESS_SECONDS as set here shortening its 15 "
            "minutes): from a live producer, its clock or offset is "
            "wrong; a history (a warehouse export, or `moments simulate --to-file`, which "
            "dates its events from when it ran) is checked with --now TIME at or after its "
            "last event (RFC 3339), the clock a worker replaying it would have.",
            markup=False,
        )
    if untyped:  # a worker knows the type from its topic: these were not checked at all
        err.print(
            f"{untyped:,} line(s) with no event type were not checked: give --type "
            f"({', '.join(types_said(outcomes=True))}), the topic they go to, or a "
            '"type" field.',
            markup=False,
        )


def _seconds_said(seconds: int) -> str:
    """`15 minutes`, `90 s`: a worker's limit as the note says it."""
    return f"{seconds // 60} minutes" if seconds % 60 == 0 and seconds >= 120 else f"{seconds} s"
