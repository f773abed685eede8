"""The `moments state` subcommand: a subscriber's stored record, readable."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from moments.exceptions import ConfigError
from moments.models import SUBSCRIBER_PATTERN
from moments.stateview import changelog_topic, latest_records, readable
from moments.statezip import StateFormatError
from moments.topicread import ReadBar

SHOW_EXAMPLES = """
    moments state show 13800138000                 # the record, field by field
    moments state show 13800138000 13900139000 --json | jq .record.first_seen
"""
DECODE_EXAMPLES = """
    kcat -C -t moments-subscribers-changelog -p 3 -o -1 -c 1 -D '' > record.bin
    moments state decode record.bin
    moments state decode - < record.bin
"""


def add_state_command(sub: Any, make_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Register `state show` and `state decode` with the CLI's `_parser` helper."""
    from moments.cli import show_subcommands

    state = make_parser(
        sub,
        "state",
        "Subscriber records as the workers store them (compressed), made readable.",
        SHOW_EXAMPLES + DECODE_EXAMPLES,
        show_subcommands,
    )
    actions = state.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    show = make_parser(
        actions,
        "show",
        "Print subscribers' latest records from the state changelog of MOMENTS_APP_ID on "
        "MOMENTS_KAFKA_BOOTSTRAP (reads the partitions holding them, without a consumer "
        "group). The records hold profile data: personal data, as in the topic itself.",
        SHOW_EXAMPLES,
        _cmd_show,
    )
    show.add_argument("subscribers", nargs="+", metavar="SUBSCRIBER", help="subscriber id")
    show.add_argument(
        "--json", action="store_true", help="one JSON line per subscriber: {subscriber_id, record}"
    )
    decode = make_parser(
        actions,
        "decode",
        "Print one stored record (the bytes of a changelog value, compressed or plain JSON).",
        DECODE_EXAMPLES,
        _cmd_decode,
    )
    decode.add_argument("file", metavar="FILE", help="the record's bytes; - for standard input")


def _cmd_show(args: argparse.Namespace) -> int:
    from moments.connections import require_kafka
    from moments.settings import load_settings

    settings = load_settings()
    odd = [sub for sub in args.subscribers if not re.fullmatch(SUBSCRIBER_PATTERN, sub)]
    if odd:
        raise ConfigError(f"not a subscriber id: {', '.join(odd)}; give the MSISDN, 5 to 20 digits")
    require_kafka(settings)
    console = Console(stderr=True)
    topic = changelog_topic(settings)
    bar = ReadBar(console, topic)
    with bar.progress:
        found = asyncio.run(latest_records(settings, args.subscribers, bar))
    missing = 0
    for sub, stored in found.items():
        record = readable(stored.value) if stored is not None else None
        if args.json:
            partition = stored.partition if stored is not None else None
            line = {"subscriber_id": sub, "partition": partition, "record": record}
            print(orjson.dumps(line).decode())
        elif stored is not None and record is not None:
            print(
                f"# {sub}: partition {stored.partition}, {record['_stored_bytes']} bytes "
                f"stored, {record['_json_bytes']} of JSON"
            )
            print(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
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


def _cmd_decode(args: argparse.Namespace) -> int:
    try:
        stored = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"moments: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        record = readable(stored)
    except (StateFormatError, orjson.JSONDecodeError) as exc:
        print(f"moments: {args.file} is not a subscriber record: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
    return 0
