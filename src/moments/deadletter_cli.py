"""The `moments deadletter` subcommand: what was rejected and why, and replaying what the
current code accepts."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from moments.cliparts import (
    add_command,
    command_settings,
    parse_when,
    show_subcommands,
    stderr_console,
)
from moments.enums import EventType
from moments.exceptions import ConfigError
from moments.records import RejectReason

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from moments.cliparts import Subparsers
    from moments.deadletters import DeadLetterEntry, Group, Selection, Summary
    from moments.settings import Settings

SHOW_EXAMPLES = """
    moments deadletter show                          # counts by topic and reason, top errors
    moments deadletter show --reason invalid_event --topic topup --since 2026-12-04
    moments deadletter show --since 2h                # rejected in the last two hours
    moments deadletter show --json | jq -r .message  # every dead letter, bytes included
"""
REPLAY_EXAMPLES = """
    moments deadletter replay --dry-run              # what would go back, what is still refused
    moments deadletter replay --topic topup --since 2026-12-04T10:00+08:00
    moments deadletter replay --reason invalid_event --again   # replay even what was replayed
"""


def add_deadletter_command(sub: Subparsers) -> None:
    group = add_command(
        sub,
        "deadletter",
        "Rejected input records: why they were refused, and replaying them once the "
        "current code accepts them.",
        SHOW_EXAMPLES + REPLAY_EXAMPLES,
        show_subcommands,
    )
    actions = group.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    show = add_command(
        actions,
        "show",
        "Read the dead-letter topic of MOMENTS_KAFKA_BOOTSTRAP to its end (without a "
        "consumer group) and count its records by the topic they were refused from (an "
        "input topic, or the task outcomes') and reason, with their most frequent errors. "
        "--json prints each record instead, key and value included: personal data, as in "
        "the topic itself.",
        SHOW_EXAMPLES,
        _cmd_show,
    )
    _selection_arguments(show)
    show.add_argument(
        "--json", action="store_true", help="one JSON line per dead letter, bytes included"
    )
    replay = add_command(
        actions,
        "replay",
        "Validate the selected dead letters again with this version's checks (a worker's "
        "own) and send the ones that pass to their input topic, key and value unchanged "
        "(task outcomes are not replayed: the dispatch consumer sends them again). "
        "Each is sent once: Redis (MOMENTS_REDIS_URL) remembers what was replayed. Events "
        "older than their subscriber's latest by more than MOMENTS_LATENESS_SECONDS are "
        "counted late by the workers, not applied. Events dated ahead of the clock "
        "(future) go back once their time has come: the table says from when.",
        REPLAY_EXAMPLES,
        _cmd_replay,
    )
    _selection_arguments(replay)
    replay.add_argument(
        "--dry-run", action="store_true", help="send nothing; print what would be sent"
    )
    replay.add_argument(
        "--again", action="store_true", help="send also what an earlier replay sent"
    )


def _selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason",
        action="append",
        default=[],
        choices=[r.value for r in RejectReason],
        help="only this reason (repeatable)",
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="only records rejected from this topic: an event type "
        f"({', '.join(t.value for t in EventType)}), a full input topic name, or the task "
        "outcomes' topic (repeatable)",
    )
    parser.add_argument(
        "--since",
        type=_time("--since"),
        metavar="TIME",
        help="rejected at or after: a time ago (30m, 2h, 1d), a date or an ISO time (UTC "
        "unless given)",
    )
    parser.add_argument(
        "--until",
        type=_time("--until"),
        metavar="TIME",
        help="rejected before: as --since",
    )


def _time(flag: str) -> Callable[[str], str]:
    """Checks a `--since`/`--until` as it is parsed (a usage error naming the forms), and
    keeps it as written: `selection` reads both against one clock."""

    def check(text: str) -> str:
        try:
            _when(text, flag)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag} ")) from None
        return text

    return check


def _when(text: str, flag: str, now: dt.datetime | None = None) -> dt.datetime:
    """The commands' one time reader (`cliparts.parse_when`), with a date's midnight and a
    time without offset in UTC, as the dead letters' headers are."""
    return parse_when(text, dt.UTC, flag, naive=True, now=now, since=flag == "--since")


def selection(args: argparse.Namespace, settings: Settings) -> Selection:
    from moments.deadletters import Selection

    kinds = {t.value for t in EventType}
    topics = {settings.topic(t) if t in kinds else t for t in args.topic}
    now = dt.datetime.now(dt.UTC)  # `--since 2h --until 30m`: 90 minutes, to the microsecond
    since = _when(args.since, "--since", now) if args.since is not None else None
    until = _when(args.until, "--until", now) if args.until is not None else None
    if since is not None and since > now:
        # A date typed in a zone ahead of UTC (Asia/Shanghai before 08:00) is a midnight
        # still to come: show said "no dead letters match", replay sent none.
        raise ConfigError(
            f"--since {args.since} ({since.isoformat()}) is after now "
            f"({now.isoformat(timespec='seconds')}): no dead letter can match; a date is its "
            "midnight in UTC, hours into the day where the clock is ahead of UTC: give an "
            f"earlier date, a time ago (2h, 1d) or RFC 3339 with your offset "
            f"({since.date().isoformat()}T00:00+08:00)"
        )
    if since is not None and until is not None and until <= since:
        # Swapped (`--since 30m --until 2h`) or one date twice, it selected nothing: show
        # said "no dead letters match" and replay sent none, as if there were none.
        raise ConfigError(
            f"--until {args.until} ({until.isoformat()}) must be after --since {args.since} "
            f"({since.isoformat()}): a time ago counts back from now, a date is its midnight "
            "in UTC, and --until is the first instant left out"
        )
    return Selection(frozenset(args.reason), frozenset(topics), since, until)


def unknown_topics(args: argparse.Namespace, settings: Settings) -> list[str]:
    """A line for each `--topic` that is neither an event type nor a topic this
    configuration reads (a typo, another team's topic name): "no dead letters match"
    alone read as a clean topic. Not refused: a topic renamed since keeps its dead letters
    under its old name."""
    kinds = [t.value for t in EventType]
    inputs = [settings.topic(t) for t in kinds]
    outcomes = settings.topic("task_outcomes")  # read too, and has dead letters; no input
    return [
        f"{topic!r} is no topic this configuration reads: an event type "
        f"({', '.join(kinds)}), an input topic ({', '.join(inputs)}) "
        f"or the task outcomes' ({outcomes})"
        for topic in args.topic
        if topic not in kinds and topic not in inputs and topic != outcomes
    ]


def _cmd_show(args: argparse.Namespace) -> int:
    import asyncio

    import orjson

    from moments.deadletter_replay import summarize
    from moments.deadletters import entry_document
    from moments.topicread import ReadBar

    settings = command_settings()
    _require(settings, redis=False)
    console = stderr_console()
    bar = ReadBar(console, settings.topic("deadletter"))

    def print_json(entry: DeadLetterEntry) -> None:
        print(orjson.dumps(entry_document(entry)).decode())

    chosen = selection(args, settings)  # refused before the progress bar is drawn
    with bar.progress:
        summary = asyncio.run(summarize(settings, chosen, bar, print_json if args.json else None))
    if args.json:
        return 0
    if not summary.total:
        console.print("no dead letters" + (" match" if _filtered(args) else ""))
        for hint in unknown_topics(args, settings):
            console.print(hint)
        return 0
    letters = "dead letter" if summary.total == 1 else "dead letters"
    _stdout().print(_table(f"{summary.total:,} {letters}", summary))
    if summary.copies:
        _stdout().print(
            f"{summary.copies:,} of them copies of a record counted before (the same topic, "
            "partition and offset: a worker read it again and refused it again); a replay "
            "sends each record back once"
        )
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    import asyncio

    from aiokafka.errors import KafkaError
    from redis.exceptions import RedisError

    from moments.deadletter_replay import replay
    from moments.topicread import ReadBar

    settings = command_settings()
    _require(settings, redis=True)
    console = stderr_console()
    bar = ReadBar(console, settings.topic("deadletter"))
    chosen = selection(args, settings)
    try:
        with bar.progress:
            report = asyncio.run(
                replay(
                    settings,
                    chosen,
                    dry_run=args.dry_run,
                    again=args.again,
                    progress=bar,
                )
            )
    except (KafkaError, RedisError, OSError) as exc:
        unanswered = (
            " (a record whose acknowledgement did not come is not: it may have reached its "
            "topic all the same, and goes again)"
            if isinstance(exc, KafkaError)
            else ""
        )
        console.print(
            f"replay stopped: {type(exc).__name__}: {exc}. What was sent is remembered in "
            f"Redis{unanswered}: run the same command again to go on"
        )
        return 1
    out = _stdout()
    verb = "would be sent back" if args.dry_run else "sent back"
    if report.replayed.total:
        out.print(_table(f"{report.replayed.total:,} {verb} to their topics", report.replayed))
    else:
        out.print(f"none {verb}")
    if report.still_rejected.total:
        title = f"{report.still_rejected.total:,} still refused by this version (left in place)"
        out.print(_table(title, report.still_rejected))
    if (due := report.still_rejected.due) is not None:
        out.print(
            f"the first dead letter dated ahead can be replayed from {_second(due)}: run the "
            "replay again then (each row says from when its own can)"
        )
    if report.older_than_lateness:
        out.print(
            f"{report.older_than_lateness:,} of them happened more than "
            f"MOMENTS_LATENESS_SECONDS ({settings.lateness_seconds:,} s) ago: a worker "
            "applies such an event only if its subscriber sent nothing newer by more than "
            "that, and counts the others late (moments_events_out_of_time_total)"
        )
    if report.already:
        out.print(f"{report.already:,} replayed before, skipped (--again sends them anyway)")
    if report.copies:
        out.print(
            f"{report.copies:,} more dead letter(s) of a record met before (the same topic, "
            "partition and offset: a worker read it again), skipped: each record goes back once"
        )
    if report.not_selected and _filtered(args):
        out.print(f"{report.not_selected:,} not selected by the options")
    for hint in unknown_topics(args, settings):
        out.print(hint)
    return 0


def _require(settings: Settings, redis: bool) -> None:
    from moments.connections import require_kafka, require_redis

    require_kafka(settings)
    if redis:
        require_redis(settings, "a replay remembers there what it sent")


def _stdout() -> Console:
    """Tables for a terminal as wide as it is; piped (a log, `kubectl exec` without a
    terminal), wide enough that topic and reason are never cut to `telecom.to…`."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.reason or args.topic or args.since or args.until)


def _table(title: str, summary: Summary) -> Table:
    from rich.table import Table
    from rich.text import Text

    from moments.pii import mask_quoted_numbers

    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("topic", "left"),
        ("reason", "left"),
        ("count", "right"),
        ("first (UTC)", "left"),
        ("last (UTC)", "left"),
        ("errors, most frequent first", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for (topic, reason), group in summary.groups.items():
        table.add_row(  # Text, not markup: a producer's key "[link=...]" made a hyperlink
            Text(topic),
            Text(reason),
            f"{group.count:,}",
            _minute(group.first),
            _minute(group.last),
            Text(mask_quoted_numbers(_errors(group)) + _due(group)),  # --json has them whole
        )
    return table


def _due(group: Group) -> str:
    """The line saying from when a group's dead letters left for their time can be
    replayed (the first of them, and all of them), or nothing."""
    if group.due is None:
        return ""
    line = f"\nreplayable from {_second(group.due)}"
    if group.due_last is not None and group.due_last != group.due:
        line += f", the last of them from {_second(group.due_last)}"
    return line


def _second(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


ERRORS_SHOWN = 3
"""Distinct error messages a summary row shows, with their counts."""


def _errors(group: Group) -> str:
    """The group's most frequent messages, one a line with its count, and how many said
    others: the first one's alone hid a producer's own behind others' of the same reason."""
    top = group.messages.most_common(ERRORS_SHOWN)
    lines = [f"{n:,} x {message}" for message, n in top]
    if rest := group.count - sum(n for _, n in top):
        lines.append(f"{rest:,} x other message(s)")
    return "\n".join(lines)


def _minute(when: dt.datetime | None) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if when is not None else "-"
