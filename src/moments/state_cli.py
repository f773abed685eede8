"""The `moments state` subcommand: a subscriber's stored record, readable."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from moments.cliparts import add_command, command_settings, show_subcommands, stderr_console
from moments.exceptions import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from moments.cliparts import Subparsers
    from moments.seed import Seeded
    from moments.settings import Settings
    from rules.series import Series

SHOW_EXAMPLES = """
    moments state show 13800138000                 # the record, field by field
    moments state show 13800138000 13900139000 --json | jq .record.first_seen
    moments state show - < ids.txt                 # ids from stdin, out of shell history and ps
"""
SEED_EXAMPLES = """
    moments state seed --events billing-2026.jsonl.gz usage-2026.csv.gz --profiles crm.jsonl \\
        --to 2027-01-15 --dry-run                  # counts and record sizes, nothing written
    moments state seed --events billing-2026.jsonl.gz --profiles crm.jsonl --to 2027-01-15
    moments state seed --events billing-2026.jsonl.gz --profiles crm.jsonl --to 2027-01-15 \\
        --partitions 0-3                           # a part: millions do not fit one run
    MOMENTS_LIVE_FROM=2027-01-15 moments worker    # then start the workers
"""
DECODE_EXAMPLES = """
    kcat -C -b kafka-1:9092 -t moments-subscribers-changelog -p 3 -o -1 -c 1 -D '' > record.bin
    moments state decode record.bin
    moments state decode - < record.bin
"""
DECODE_WANTS = (
    "give the bytes of one value of the state changelog as they are, e.g. "
    "`kcat -C -b kafka-1:9092 -t moments-subscribers-changelog -p 3 -o OFFSET -c 1 -e -q "
    "-f '%s' > record.bin` (docs/operations.md, a record mended), not the JSON "
    "`moments state show` prints"
)
"""What `state decode` reads, said when it is given something else."""


def add_state_command(sub: Subparsers) -> None:
    state = add_command(
        sub,
        "state",
        "Subscriber records as the workers store them (compressed), made readable.",
        SHOW_EXAMPLES + SEED_EXAMPLES + DECODE_EXAMPLES,
        show_subcommands,
    )
    actions = state.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    show = add_command(
        actions,
        "show",
        "Print subscribers' latest records from the state changelog of MOMENTS_APP_ID on "
        "MOMENTS_KAFKA_BOOTSTRAP (reads the partitions holding them, without a consumer "
        "group). The records hold profile data: personal data, as in the topic itself.",
        SHOW_EXAMPLES,
        _cmd_show,
    )
    show.add_argument(
        "subscribers",
        nargs="+",
        metavar="SUBSCRIBER",
        help="subscriber id; `-` reads ids from stdin, one a line or separated by spaces, so "
        "the numbers stay out of the shell's history and the process list",
    )
    show.add_argument(
        "--json",
        action="store_true",
        help="one JSON line per subscriber: {subscriber_id, record}, the record's fields as "
        "stored (epoch seconds, day ordinals, hashed rule tags); without it times are RFC "
        "3339 in UTC, days dates, and _tags names each tag's rule or series",
    )
    seed = add_command(
        actions,
        "seed",
        "Build every subscriber's record from history (the backtest's engine in event time, "
        "every moment in shadow: no task) and write the records to the state changelog of "
        "MOMENTS_APP_ID, so that workers started afterwards know everyone. Refuses while "
        "workers of the app are in their consumer group, and when the changelog holds "
        "records already (--replace). Input as `moments backtest` reads it.",
        SEED_EXAMPLES,
        _cmd_seed,
    )
    seed.add_argument(
        "--events",
        type=Path,
        nargs="+",
        required=True,
        metavar="FILE",
        help="history: JSON lines or CSV (gzip too), each event with its type, each file in "
        "event-time order",
    )
    seed.add_argument(
        "--type",
        dest="event_type",
        choices=["topup", "roaming", "complaint", "usage"],
        default=None,
        help='the event type of lines without a "type" field, e.g. records dumped from one '
        "input topic (as `backtest --type`)",
    )
    seed.add_argument(
        "--profiles",
        type=Path,
        default=None,
        metavar="FILE",
        help="profile events (no `type` needed), applied before the events",
    )
    seed.add_argument(
        "--rules",
        type=Path,
        default=None,
        metavar="PATH",
        help="the rules the workers will run (default: MOMENTS_RULES, else the packaged catalog)",
    )
    seed.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="DISPATCH_POLICY.yaml",
        help="its time zone reads the dates (default: MOMENTS_DISPATCH_POLICY)",
    )
    seed.add_argument(
        "--to",
        dest="end",
        default=None,
        metavar="DATE",
        help="the end of the history: events from here on are left out and event time runs "
        "on to it; the first event the input topics hold should not be earlier (a date in "
        "the dispatch policy's zone, RFC 3339, or a time ago: 2h, 1d)",
    )
    seed.add_argument(
        "--dry-run",
        action="store_true",
        help="build the records and print the counts and sizes; no broker needed, nothing written",
    )
    seed.add_argument(
        "--partitions",
        default=None,
        metavar="LIST",
        help="seed only the subscribers of these changelog partitions (0-3, or 0,2,5; of "
        "MOMENTS_PARTITIONS), so that a seed too big for one machine's memory runs in parts, "
        "one after another or side by side; each part refuses only records of its own",
    )
    seed.add_argument(
        "--replace",
        action="store_true",
        help="write even though the changelog holds records (a seed run again): the seeded "
        "subscribers' records replace theirs",
    )
    decode = add_command(
        actions,
        "decode",
        "Print one stored record (the bytes of a changelog value, compressed or plain JSON).",
        DECODE_EXAMPLES,
        _cmd_decode,
    )
    decode.add_argument("file", metavar="FILE", help="the record's bytes; - for standard input")
    decode.add_argument(
        "--json",
        action="store_true",
        help="the fields as stored (epoch seconds, day ordinals), as `state show --json`",
    )


def subscribers_given(args: list[str], stdin: TextIO) -> list[str]:
    """The ids on the command line, with `-` replaced by those read from stdin (in order,
    each once): a subscriber number typed as an argument lands in the shell's history and
    in every `ps` listing on the host."""
    out: dict[str, None] = {}
    for arg in args:
        out.update(dict.fromkeys(stdin.read().split() if arg == "-" else [arg]))
    if not out:
        raise ConfigError(
            "no subscriber id on stdin: give one a line, e.g. `moments state show - < ids.txt`"
        )
    return list(out)


def _cmd_show(args: argparse.Namespace) -> int:
    import asyncio

    import orjson

    from moments.connections import require_kafka
    from moments.models import SUBSCRIBER_PATTERN
    from moments.stateview import READ_AS, changelog_topic, for_people, latest_records, readable
    from moments.topicread import ReadBar

    settings = command_settings()
    subscribers = subscribers_given(args.subscribers, sys.stdin)
    odd = [sub for sub in subscribers if not re.fullmatch(SUBSCRIBER_PATTERN, sub)]
    if odd:
        raise ConfigError(f"not a subscriber id: {', '.join(odd)}; give the MSISDN, 5 to 20 digits")
    require_kafka(settings)
    console = stderr_console()
    topic = changelog_topic(settings)
    bar = ReadBar(console, topic)
    with bar.progress:
        found = asyncio.run(latest_records(settings, subscribers, bar))
    missing = 0
    named, series = (None, {}) if args.json else names(settings)
    for sub, stored in found.items():
        record = readable(stored.value) if stored is not None else None
        if args.json:
            partition = stored.partition if stored is not None else None
            line = {"subscriber_id": sub, "partition": partition, "record": record}
            print(orjson.dumps(line).decode())
        elif stored is not None and record is not None:
            print(
                f"# {sub}: partition {stored.partition}, {record['_stored_bytes']} bytes "
                f"stored, {record['_json_bytes']} of JSON; {READ_AS}"
            )
            shown = for_people(record, named, series)
            print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        if stored is not None and stored.partition != stored.hashed:
            console.print(
                f"{sub} is on partition {stored.partition}, not {stored.hashed} where murmur2 "
                "of its id puts it: its events came from a producer with another partitioner "
                "(see docs/operations.md, misplaced events); this record may be one of two"
            )
        if record is None:
            missing += 1
            console.print(
                f"no record for {sub} in {topic}: no event of it was processed yet (or it "
                "was deleted by a profile tombstone); check the id and MOMENTS_APP_ID"
            )
    return 1 if missing else 0


def names(settings: Settings | None) -> tuple[dict[str, str] | None, dict[str, Series]]:
    """The tags of MOMENTS_RULES (or the packaged catalog), named, and its series by tag
    (their rings read by period); None and none when they cannot be loaded, or the
    settings could not be read (the record is shown all the same)."""
    from moments.stateview import series_by_tag, tag_names
    from rules.catalog import load_rules
    from rules.exceptions import RulesError

    if settings is None:
        return None, {}
    try:
        rules = load_rules(settings.rules)
    except RulesError:
        return None, {}
    return tag_names(rules), series_by_tag(rules)


def _cmd_seed(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from moments.backtest_cli import file_bar
    from moments.backtest_input import EventFile, history
    from moments.cliparts import parse_when
    from moments.connections import check_kafka, kafka_client_kwargs, require_kafka, require_redis
    from moments.models import EventType
    from moments.rulecheck import EventFileError, NotAFileError
    from moments.seed import (
        build_states,
        changelog_records,
        describe,
        erased_subscribers,
        live_group,
        of_partitions,
        parse_partitions,
        refusal,
        unreadable_read,
        write_records,
    )
    from moments.stateview import changelog_topic
    from moments.topiclayout import partition_layout
    from moments.topics import ensure_topics
    from rules.catalog import load_rules
    from sinks.policy import load_policy

    settings = command_settings()
    policy = load_policy(args.policy if args.policy is not None else settings.dispatch_policy)
    end = parse_when(args.end, policy.zone, "--to")
    rules = load_rules(args.rules if args.rules is not None else settings.rules)
    console = stderr_console()
    topic = changelog_topic(settings)
    try:
        chosen = (
            parse_partitions(args.partitions, settings.partitions)
            if args.partitions is not None
            else None
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if chosen is not None and end is None:
        raise ConfigError(
            "--partitions needs --to: every part must run event time on to the same end, "
            "or each part's records close the windows of its own last event only"
        )

    def may_write() -> None:
        """Refuse before hours of reading, and again just before writing."""
        group = asyncio.run(live_group(settings))
        if group.live:
            raise ConfigError(refusal(group, settings))
        # The topics' partitions as a worker's start checks them: a layout it refuses
        # would take a changelog no worker can use (written where no event arrives).
        counts = asyncio.run(check_kafka(settings))
        problem = partition_layout(settings, counts)[0] if counts is not None else None
        if problem is not None:
            raise ConfigError(f"{problem}; the workers would refuse to start: nothing seeded")
        held = asyncio.run(changelog_records(settings, topic, chosen))
        if held and not args.replace:
            where = "" if chosen is None else " in the partitions of --partitions"
            raise ConfigError(
                f"{topic} holds {held:,} record(s){where} already: workers ran, or a seed did. "
                "Seeding a new app id (MOMENTS_APP_ID) is the clean way; --replace writes "
                "the seeded subscribers' records over theirs"
            )

    if not args.dry_run:
        require_kafka(settings)
        require_redis(settings, "the erasures of the last 90 days, whose records are left out")
        may_write()
    default = EventType(args.event_type) if args.event_type else None
    try:  # a file missing is said by EventFile, as the backtest says it
        files = [EventFile(p, default) for p in args.events]
        if args.profiles is not None:
            files.insert(0, EventFile(args.profiles, EventType.PROFILE, profiles=True))
        hi = end.timestamp() if end is not None else float("inf")
        events = history(files, args.profiles is not None, hi)
        if chosen is not None:
            events = of_partitions(events, settings.partitions, chosen)
        with file_bar(console, "history", files) as bar:
            seeded = build_states(rules, events, policy, end, bar.show)
            bar.done(seeded.events)
        seeded.unreadable_count, seeded.unreadable = unreadable_read(
            files, settings.partitions, chosen
        )
        from moments.backtest_input import cuts_of, order_said, untyped_lines

        seeded.untyped_count, seeded.untyped = untyped_lines(files)
        seeded.cuts = cuts_of(files)
        out_of_order = order_said(files[1:] if args.profiles is not None else files)
    except (EventFileError, OSError) as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, NotAFileError) else 1  # a path given wrong: set-up
    if not args.dry_run:  # the erased stay erased, whatever the warehouse still holds
        seeded.leave_out(asyncio.run(erased_subscribers(settings, list(seeded.records))))
    table = Table("figure", "value", title=f"state seed for {topic}")
    for name, value in describe(seeded, settings.partitions, chosen).items():
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)
    said_refused(Console(), seeded)
    for said in out_of_order:  # the records are built, but not as the history would build them
        console.print(said, style="bold yellow", markup=False, highlight=False)
    if seeded.cuts:
        # The records would lack each cut file's later events, and workers would start
        # from them as if complete: the seed writes nothing, and says why.
        for cut in seeded.cuts:
            console.print(f"moments: {cut.said()}", style="bold red", markup=False, highlight=False)
        console.print("nothing written: seed from a whole copy of the history", style="bold red")
        return 1
    if args.dry_run or not seeded.records:
        console.print("dry run: nothing written" if args.dry_run else "no record to write")
        return 0
    asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap,
            {topic: settings.partitions},
            [topic],
            replication_factor=settings.replication_factor,
            strict=True,
            client_kwargs=kafka_client_kwargs(settings),
        )
    )
    may_write()
    records = [
        (partition, key, value)
        for partition, items in seeded.by_partition(settings.partitions).items()
        for key, value in items
    ]
    with Progress(
        TextColumn(f"[bold]writing {topic}"), BarColumn(), TimeRemainingColumn(), console=console
    ) as writing:
        task = writing.add_task("write", total=len(records))
        written = asyncio.run(
            write_records(settings, topic, records, lambda n: writing.update(task, completed=n))
        )
    console.print(
        f"{written:,} record(s) written to {topic}; start the workers (with MOMENTS_LIVE_FROM "
        "at the history's end if events before it may still be read): they restore them"
    )
    return 0


def said_refused(console: Console, seeded: Seeded) -> None:
    """The refused rows (dead letters on the stream, in no record): the first ones by file
    and line with what was wrong, then how many by reason. One line each, unwrapped, so
    that a path can be copied and the list grepped."""
    from rich.table import Table

    total = seeded.dead_letters.total()
    if not total:
        return
    console.print("refused rows (dead letters on the stream; not in the records):")
    for where, reason, told in seeded.refused:
        console.print(f"  {where}: {reason}: {told}", markup=False, highlight=False, soft_wrap=True)
    if total > len(seeded.refused):
        console.print(f"  … and {total - len(seeded.refused):,} more", highlight=False)
    by_reason = Table("reason", "rows", title="refused rows by reason")
    for reason, n in seeded.dead_letters.most_common():
        by_reason.add_row(reason, f"{n:,}")
    console.print(by_reason)


def _stored_json(stored: bytes) -> bytes | None:
    """A stored record's JSON (its frame's dictionary misnamed too), None where it has
    none: `readable` says why."""
    from moments.statezip import MisnamedRecordError, StateFormatError, unpack

    try:
        return unpack(stored)
    except MisnamedRecordError as exc:
        return exc.json
    except StateFormatError:
        return None


def _unknown_keys(stored: bytes) -> list[str]:
    """The keys of a stored record's JSON object that the state format does not have
    (`STORED_KEYS`), sorted; [] for a record, or for what is no JSON object (said after)."""
    import orjson

    from moments.state import STORED_KEYS

    json = _stored_json(stored)
    try:
        doc = orjson.loads(json) if json is not None else None
    except orjson.JSONDecodeError:
        return []
    return sorted(k for k in doc if k not in STORED_KEYS) if isinstance(doc, dict) else []


def _faults(stored: bytes) -> list[str]:
    """The fields of a readable record whose shape the detector never writes
    (`SubscriberState.faults`): `{"a": 1}` printed as a record of region 1, with no word."""
    from moments.state import SubscriberState
    from moments.statezip import StateFormatError

    json = _stored_json(stored)
    try:
        return SubscriberState.from_bytes(json).faults() if json is not None else []
    except StateFormatError:
        return []


def _shown_field(stored: bytes) -> str | None:
    """The first field of `SubscriberState` that `stored` names as `state show` writes it
    (`first_seen`; in `--json`'s `record` too), or None: a stored record's keys are one
    letter each (`SubscriberState.to_json`), so a document with a field's name is no record."""
    import dataclasses

    import orjson

    from moments.state import SubscriberState

    if stored[:1] != b"{":
        return None
    try:
        doc = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("record"), dict):
        doc = doc["record"]
    if not isinstance(doc, dict):
        return None
    return next((f.name for f in dataclasses.fields(SubscriberState) if f.name in doc), None)


def _cmd_decode(args: argparse.Namespace) -> int:
    import orjson

    from moments.logmask import mask_text
    from moments.state import STORED_KEYS
    from moments.stateview import READ_AS, for_people, readable
    from moments.statezip import ZSTD_MAGIC, StateFormatError

    try:
        stored = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:  # a path given wrong: the command could not run as set up
        print(f"moments: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    if not stored:
        # What kcat or a console consumer saves of a tombstone: the subscriber was erased.
        print(
            f"moments: {args.file} is empty: a deletion (a tombstone: the subscriber's record "
            "was erased by a profile deletion), not a record; printed as null",
            file=sys.stderr,
        )
        print("null")
        return 0
    name = "standard input" if args.file == "-" else args.file
    if stored[:1] != b"{" and stored[:4] != ZSTD_MAGIC:
        # Not the changelog's bytes at all: say what to give, not statezip's advice for a
        # worker (MOMENTS_APP_ID), which no file or pipe has.
        print(
            f"moments: {name} is not a subscriber record (it starts with "
            f"{mask_text(repr(stored[:8]))}; a record starts with zstd's 28 b5 2f fd or "
            f"`{{`): {DECODE_WANTS}",
            file=sys.stderr,
        )
        return 1
    if (shown := _shown_field(stored)) is not None:
        # It starts with `{` as a plain record does, and was printed as an empty one.
        print(
            f"moments: {name} holds what `moments state show` prints ({shown}, ...), not a "
            f"record: {DECODE_WANTS}",
            file=sys.stderr,
        )
        return 1
    if unknown := _unknown_keys(stored):
        # `{"z": 1}` printed as an empty record, exit 0: a JSON object is no record.
        print(
            f"moments: {name} is not a subscriber record: its keys {', '.join(unknown)} are "
            f"none the state format has (a record's keys are one letter each: "
            f"{' '.join(sorted(STORED_KEYS, key=lambda k: (k.isupper(), k)))}): {DECODE_WANTS}",
            file=sys.stderr,
        )
        return 1
    try:
        record = readable(stored)
    except (StateFormatError, orjson.JSONDecodeError) as exc:
        print(f"moments: {name} cannot be read as a subscriber record: {exc}", file=sys.stderr)
        return 1
    if faults := _faults(stored):
        print(
            f"moments: {name}: {', '.join(faults)}: a shape the detector never writes (a "
            "damaged or hand-edited record), printed as stored",
            file=sys.stderr,
        )
    if not args.json:
        print(f"# {READ_AS}")
        try:  # the tags' names only: decode reads a file, and needs no setting otherwise
            settings = command_settings()
        except ConfigError:
            settings = None
        record = for_people(record, *names(settings))
    print(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
    return 0
