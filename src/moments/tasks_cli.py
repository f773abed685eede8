"""The `moments tasks` commands: the reference dispatch consumer's tools (tail the
dispatch topic, ack a task, list the tasks no outcome came back for)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from moments.cliparts import add_command, add_group, command_settings, positive_int

if TYPE_CHECKING:
    from moments.cliparts import Subparsers
    from moments.settings import Settings


def add_tasks_command(sub: Subparsers) -> None:
    tasks_sub = add_group(
        sub,
        "tasks",
        "Reference dispatch consumer tools.",
        """
                  moments tasks tail
                  moments tasks tail --json --from-beginning
                  moments tasks ack TASK_ID --status done_no_change
                  moments tasks pending --channel sms --older-than 2h
                  moments tasks deferred --reason quiet_hours
                """,
    )
    _add_tasks_tail(tasks_sub)
    _add_tasks_ack(tasks_sub)
    _add_tasks_pending(tasks_sub)
    _add_tasks_deferred(tasks_sub)


def _add_tasks_tail(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "tail",
        "Follow the dispatch topic: a live table of the latest tasks in a terminal, "
        "else one line (or JSON line) per task.",
        """
                  moments tasks tail
                  moments tasks tail --lines --from-beginning
                  moments tasks tail --json | jq .moment.type
                  moments tasks tail --withdrawals --from-beginning
                """,
        _cmd_tasks_tail,
    )
    p.add_argument("--json", action="store_true", help="one JSON line per task")
    p.add_argument("--lines", action="store_true", help="one readable line per task, no table")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest task")
    p.add_argument(
        "--exit-after", type=positive_int, default=None, metavar="N", help="stop after N tasks"
    )
    p.add_argument(
        "--withdrawals",
        action="store_true",
        help="follow moments.task-withdrawals instead: the published tasks withdrawn (one "
        "line each)",
    )


def _cmd_tasks_tail(args: argparse.Namespace) -> int:
    import asyncio

    from moments.connections import require_kafka
    from moments.tail import tail_tasks

    settings = command_settings()
    require_kafka(settings)  # unreachable or refused: a message naming the variable
    asyncio.run(
        tail_tasks(
            settings,
            json_lines=args.json,
            from_beginning=args.from_beginning,
            exit_after=args.exit_after,
            live=not args.json and not args.lines and sys.stdout.isatty(),
            withdrawals=args.withdrawals,
        )
    )
    return 0


ACK_EXAMPLES = """
    moments tasks ack 3f2a9c0e8b7d4c61a5e2f90b1d3c7a48 --status done_no_change
    moments tasks ack 3f2a9c0e8b7d4c61a5e2f90b1d3c7a48 --status declined --note "not interested"
    moments tasks ack 3f2a9c0e8b7d4c61a5e2f90b1d3c7a48 --status unreachable \\
        --subscriber 13800138001
"""
"""A task id is the task's `task_id` whole (32 hex characters): an example cut short
(`3f2a9c...`) was refused as written."""


def _add_tasks_ack(sub: Subparsers) -> None:
    from moments.enums import OutcomeStatus

    p = add_command(
        sub,
        "ack",
        "Write an outcome for a task to moments.task-outcomes, as a dispatch consumer does "
        "after acting on it. The subscriber is looked up in Redis unless given.",
        ACK_EXAMPLES,
        _cmd_tasks_ack,
    )
    p.add_argument("task_id", metavar="TASK_ID", type=_task_id, help="the task's task_id")
    p.add_argument(
        "--status",
        required=True,
        choices=[s.value for s in OutcomeStatus],
        help="what happened",
    )
    p.add_argument("--note", default=None, help="free text for the record")
    p.add_argument("--agent", default=None, help="who acted (agent id)")
    p.add_argument(
        "--subscriber",
        default=None,
        metavar="MSISDN",
        help="the task's subscriber, for a task Redis no longer holds (refused if Redis "
        "holds the task under another)",
    )


def _cmd_tasks_ack(args: argparse.Namespace) -> int:
    import asyncio

    import orjson

    from moments.ack import AckError, ack_task, check_parts
    from moments.connections import require_kafka, require_redis
    from moments.logmask import mask_text
    from moments.models import OutcomeStatus
    from moments.pii import mask_msisdn

    try:  # what the outcome cannot hold is said before any connection
        check_parts(args.subscriber, args.note, args.agent)
    except AckError as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 1
    settings = command_settings()
    require_kafka(settings)  # unreachable or refused: a message naming the variable
    if args.subscriber is None:
        require_redis(settings, "the task's subscriber is looked up in its ledger")
    try:
        outcome = asyncio.run(
            ack_task(
                settings,
                args.task_id,
                OutcomeStatus(args.status),
                subscriber_id=args.subscriber,
                note=args.note,
                agent_id=args.agent,
                warn=lambda text: print(f"moments: warning: {text}", file=sys.stderr),
            )
        )
    except AckError as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 1
    # What was written, as a receipt: the subscriber masked as in the logs (unless
    # MOMENTS_LOG_PII), since a terminal's scrollback and a ticket are no place for it.
    shown = outcome.model_dump(mode="json", exclude_none=True)
    if not settings.log_pii:
        shown["subscriber_id"] = mask_msisdn(outcome.subscriber_id)
        if outcome.note:  # free text: a called number in it is masked as in the logs
            shown["note"] = mask_text(outcome.note)
    print(orjson.dumps(shown).decode())
    return 0


def _add_tasks_pending(sub: Subparsers) -> None:
    from moments.enums import Channel

    p = add_command(
        sub,
        "pending",
        "List the published tasks no outcome came back for yet (read from Redis, "
        "MOMENTS_REDIS_URL, for MOMENTS_APP_ID): task id, channel, moment type, the "
        "subscriber masked, age since published and expiry, soonest expiry first. A task "
        "leaves the list at its first outcome, or an hour (outcomes.outcome_grace) after "
        "it expired, counted in moments_tasks_unanswered_expired_total.",
        """
                  moments tasks pending
                  moments tasks pending --channel outbound_call --older-than 2h
                  moments tasks pending --json | jq -r .task_id
                """,
        _cmd_tasks_pending,
    )
    p.add_argument(
        "--channel",
        action="append",
        choices=[c.value for c in Channel],
        help="only this channel's tasks (repeat for several)",
    )
    p.add_argument(
        "--older-than",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="only tasks published at least this long ago: 30m, 2h, 1d",
    )
    p.add_argument(
        "--limit",
        type=_at_least_zero,
        default=1000,
        metavar="N",
        help="list the N tasks that expire soonest (default 1000; 0: all, read a page at a time)",
    )
    p.add_argument("--json", action="store_true", help="one JSON line per task")


def _at_least_zero(text: str) -> int:
    from moments.cliparts import shown, whole

    value = whole(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(
            f"{shown(text)}: write a whole number of 0 or more, 0 for all"
        )
    return value


def _duration(text: str) -> float:
    """`--older-than`: a span of some time (`0h`, every task, is refused as the time
    options refuse a time ago of none)."""
    from rules.durations import echoed, parse_duration

    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not seconds:
        raise argparse.ArgumentTypeError(
            f"{echoed(text)} is no span: every task is published at least that long ago; give "
            "one of some time (30m, 2h, 1d), or leave --older-than out for every task"
        )
    return seconds


def redis_read(settings: Settings, command: str) -> str:
    """The line on stderr naming the Redis `command` reads and where its URL came from: in
    a shell without `moments run`'s export line, the default 127.0.0.1:6379 answered (a
    system Redis) with no task, and nothing said it was not the run's Redis."""
    from moments.redisurl import redacted_url
    from moments.settings import where_set

    return (
        f"{command}: reading Redis {redacted_url(settings.redis_url)} for app id "
        f"{settings.app_id} (MOMENTS_REDIS_URL {where_set('MOMENTS_REDIS_URL')})"
    )


def _cmd_tasks_pending(args: argparse.Namespace) -> int:
    import asyncio
    import time

    import orjson

    from moments.connections import redis_client, require_redis
    from moments.pending import PendingTask, pending_tasks, summary
    from sinks.ledger import TaskLedger
    from sinks.stores import CHANNELS

    settings = command_settings()
    require_redis(settings, "the ledger of published tasks is kept there")
    print(redis_read(settings, "tasks pending"), file=sys.stderr)
    now = time.time()

    channels = args.channel or CHANNELS

    async def read() -> tuple[list[PendingTask], int]:
        redis = redis_client(settings)
        try:
            ledger = TaskLedger(redis, settings.redis_prefix, settings.ledger_ttl_seconds)
            found = await pending_tasks(ledger, now, channels, args.older_than, args.limit)
            held = await ledger.unanswered()
            return found, sum(held[c] for c in channels)
        finally:
            await redis.aclose()

    found, held = asyncio.run(read())
    for task in found:
        if args.json:
            print(orjson.dumps(task.as_json(now)).decode())
        else:
            print(task.as_line(now))
    if not args.json or (args.limit and len(found) == args.limit):  # cut: say so
        print(summary(found, now, args.limit, held, args.older_than), file=sys.stderr)
    return 0


DEFERRED_LIMIT = 50
"""The waiting tasks `moments tasks deferred` lists unless told: the soonest due."""


def _add_tasks_deferred(sub: Subparsers) -> None:
    from moments.enums import DeferralReason

    p = add_command(
        sub,
        "deferred",
        "List the tasks waiting in the deferral queue (read from Redis, MOMENTS_REDIS_URL, "
        "for MOMENTS_APP_ID; nothing written): task id, moment type, how many moments were "
        "merged into it, channel, the subscriber masked, why it waits, when it is due (in "
        "the dispatch policy's zone, MOMENTS_DISPATCH_POLICY) and how long since the task "
        "was made, soonest due first, then a count by reason (of the whole queue with "
        "--limit 0; of the tasks listed otherwise, which reads only the soonest due).",
        """
                  moments tasks deferred
                  moments tasks deferred --limit 0 > /dev/null
                  moments tasks deferred --reason quiet_hours --reason capacity
                  moments tasks deferred --moment-type bill_spike --limit 0
                  moments tasks deferred --json | jq -r .task_id
                """,
        _cmd_tasks_deferred,
    )
    p.add_argument(
        "--reason",
        action="append",
        choices=[r.value for r in DeferralReason],
        help="only the tasks waiting for this reason (repeat for several)",
    )
    p.add_argument(
        "--moment-type",
        action="append",
        metavar="TYPE",
        help="only the tasks carrying a moment of this type: their own, or one merged "
        "into them (listed under their own moment's type, +N); repeat for several",
    )
    p.add_argument(
        "--limit",
        type=_at_least_zero,
        default=DEFERRED_LIMIT,
        metavar="N",
        help=f"list the N tasks due soonest (default {DEFERRED_LIMIT}; 0: all, reading the "
        "whole queue to count them by reason: seconds for a night's queue)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON line per task, with the types of every moment it carries "
        "(moment_types: its own first, then those merged into it)",
    )


def _cmd_tasks_deferred(args: argparse.Namespace) -> int:
    import asyncio
    import time

    import orjson
    from rich.console import Console
    from rich.table import Table

    from moments.connections import redis_client, require_redis
    from moments.deferred import Listing, aligned, deferred_tasks, summary, unmatched_types
    from sinks.deferral import DeferralQueue
    from sinks.ledger import TaskLedger
    from sinks.policy import load_policy

    settings = command_settings()
    policy = load_policy(settings.dispatch_policy)
    zone = policy.zone
    require_redis(settings, "the deferral queue is kept there")
    print(redis_read(settings, "tasks deferred"), file=sys.stderr)
    now = time.time()

    async def read() -> Listing:
        redis = redis_client(settings)
        try:
            ledger = TaskLedger(redis, settings.redis_prefix, settings.ledger_ttl_seconds)
            queue = DeferralQueue(redis, ledger)
            reasons, types = args.reason or (), args.moment_type or ()
            return await deferred_tasks(queue, reasons, types, args.limit, args.json)
        finally:
            await redis.aclose()

    listing = asyncio.run(read())
    if args.json:
        for task in listing.tasks:
            print(orjson.dumps(task.as_json(now, zone)).decode())
    elif listing.tasks:
        due = f"due ({policy.timezone})"
        columns = ("task id", "moment type", "merged", "channel", "subscriber", "reason", due)
        rows = [task.row(now, zone) for task in listing.tasks]
        if not sys.stdout.isatty():  # piped: plain columns (rich took 35 s for 50,000 rows)
            for line in aligned((*columns, "waited"), rows):
                print(line)
        else:
            table = Table(*columns, "waited")
            for row in rows:
                table.add_row(*row)
            Console().print(table)
    print(summary(listing), file=sys.stderr)
    if args.moment_type:
        for line in unmatched_types(listing, args.moment_type, _moment_types(settings)):
            print(line, file=sys.stderr)
    return 0


def _moment_types(settings: Settings) -> set[str] | None:
    """The moment types the rules of `MOMENTS_RULES` make; None when they cannot be read
    (the listing names no type as unknown then: the queue is what was asked about)."""
    from moments.exceptions import MomentsError
    from rules.catalog import load_rules

    try:
        return {r.task.moment_type for r in load_rules(settings.rules).rules}
    except (MomentsError, OSError):
        return None


def _task_id(text: str) -> str:
    from moments.ack import AckError, check_task_id

    try:
        return check_task_id(text)
    except AckError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
