"""Follow the dispatch topic and print tasks (or the withdrawals topic and print
withdrawals): one readable line each, or JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import sys
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.live import Live

from moments.connections import kafka_client_kwargs
from moments.models import INVISIBLE
from moments.pii import mask_msisdn
from moments.settings import Settings
from moments.taskboard import TaskBoard, merged_types, printable

log = logging.getLogger(__name__)


def format_task(task: dict[str, Any]) -> str:
    """One line a person reads at a glance; the subscriber id is masked."""
    moment = task.get("moment", {})
    triggered = _time(task.get("triggered_at"))
    when = _shown(triggered) if triggered else str(task.get("triggered_at", ""))
    deferred = task.get("deferred")
    later = ""
    if deferred:
        until = _time(deferred.get("until"))
        if until is not None and triggered is not None:  # both in the moment's offset
            until = until.astimezone(triggered.tzinfo)
        shown = _shown(until) if until is not None else deferred.get("until")
        later = f"  deferred until {shown} ({deferred['reason']})"
    related = merged_types(task)
    merged = f"  + {', '.join(related)} (merged)" if related else ""
    return printable(
        f"{when}  P{task.get('priority')}  {moment.get('type', '?'):<32} "
        f"{mask_msisdn(str(task.get('subscriber_id', '')))}  "
        f"{task.get('channel')}:{task.get('action')}  {moment.get('description', '')}"
        f"{merged}  [{task.get('task_id', '')}]{later}"
    )


def format_withdrawal(notice: dict[str, Any]) -> str:
    """A withdrawal (`moments.task-withdrawals`) as one line; the subscriber id is masked."""
    occurred = _time(notice.get("occurred_at"))
    when = _shown(occurred) if occurred else str(notice.get("occurred_at", ""))
    return printable(
        f"{when}  WITHDRAWN ({notice['reason']})  {notice.get('moment_type', '?')!s:<32} "
        f"{mask_msisdn(str(notice.get('subscriber_id', '')))}  {notice.get('channel')}  "
        f"[{notice.get('task_id', '')}]"
    )


_INVISIBLE = re.compile(f"[{INVISIBLE}]")


def _json_printable(value: bytes) -> str:
    """A task's record (JSON: `_read_task` took it) as one line of JSON for jq, written
    afresh: its own text, passed on, kept its line breaks (a producer's pretty-printed JSON
    came out with `\\u000a` between its tokens, no JSON at all, and no longer one line).
    The characters `printable` escapes are JSON escapes (`\\u202e`) here: orjson writes
    the C0 controls escaped, the rest (C1, bidi overrides, line separators) raw."""
    text = orjson.dumps(orjson.loads(value)).decode()
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _read_task(value: bytes, withdrawals: bool = False) -> tuple[dict[str, Any], str] | None:
    """The task (or withdrawal) in a record and its line, or None for a record that is
    none (not JSON, not an object, a field of the wrong shape: the line and the board
    read them)."""
    try:
        task = orjson.loads(value)
        return task, (format_withdrawal(task) if withdrawals else format_task(task))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def _time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _shown(when: dt.datetime) -> str:
    """`2026-12-05 08:30:44+08:00`: to the second, with the offset it was written in."""
    text = when.strftime("%Y-%m-%d %H:%M:%S%z")
    return text[:-2] + ":" + text[-2:] if when.tzinfo is not None else text


STOP_S = 5.0
"""Longest the viewer waits for its Kafka consumer to close."""


async def tail_tasks(
    settings: Settings,
    json_lines: bool = False,
    from_beginning: bool = False,
    exit_after: int | None = None,
    out: TextIO | None = None,
    ready: asyncio.Event | None = None,
    live: bool = False,
    withdrawals: bool = False,
) -> int:
    """Print tasks until cancelled (or `exit_after` tasks); returns how many were printed.

    `live`: a table of the latest tasks redrawn in place (for a terminal), instead of
    one line per task. `withdrawals`: the withdrawals topic instead, one line each.

    Reads every partition without a consumer group: a viewer must not take
    partitions away from real dispatch consumers."""
    stream = out or sys.stdout
    topic = settings.topic("task_withdrawals" if withdrawals else "tasks")
    live = live and not withdrawals
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        client_id=f"{settings.app_id}-tail",
        **kafka_client_kwargs(settings),
    )
    await consumer.start()
    printed = 0
    try:
        partitions: set[int] | None = None
        for _ in range(100):
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                break
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
        if not partitions:
            raise SystemExit(
                f"topic {topic} does not exist; start a worker first "
                "(it creates the topics) or check MOMENTS_TOPIC_PREFIX"
            )
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        if ready is not None:
            ready.set()
        board = TaskBoard() if live else None
        unreadable = 0
        with contextlib.ExitStack() as stack:
            screen = None
            if board is not None:
                console = Console(file=stream)
                screen = stack.enter_context(Live(board.render(), console=console))
            while exit_after is None or printed < exit_after:
                batches = await consumer.getmany(timeout_ms=500)
                values = [r.value for rs in batches.values() for r in rs if r.value is not None]
                if exit_after is not None:  # a fetch may bring more than are left to print
                    values = values[: exit_after - printed]
                for value in values:
                    read = _read_task(value, withdrawals)
                    if read is None:  # anyone may write to the topic: skip, say so once
                        if not unreadable:
                            what = "withdrawal" if withdrawals else "task"
                            log.warning("a record of the %s topic is no %s: skipped", what, what)
                        unreadable += 1
                        continue
                    task, line = read
                    if board is not None:
                        board.add(task)
                    else:
                        print(
                            _json_printable(value) if json_lines else line, file=stream, flush=True
                        )
                    printed += 1
                if board is not None and screen is not None and batches:
                    screen.update(board.render())
    finally:
        # A viewer holds nothing to lose: its stop is bounded, so a fetch the broker does
        # not answer cannot keep Ctrl-C of `moments run` from stopping the worker.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consumer.stop(), STOP_S)
    return printed
