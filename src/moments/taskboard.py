"""The live table of `moments tasks tail` in a terminal: the latest tasks, and totals.

Plain state and rendering, no Kafka: the tail feeds it tasks as they arrive and
redraws it (`rich.live.Live`).
"""

from __future__ import annotations

import re
from collections import Counter, deque
from typing import Any

from rich.table import Table
from rich.text import Text

from moments.models import INVISIBLE
from moments.pii import mask_msisdn

ROWS = 20


def merged_types(task: dict[str, Any]) -> list[str]:
    """The moment types merged into a task (its `related`), in order."""
    return [str(r.get("moment", {}).get("type", "?")) for r in task.get("related") or []]


_CONTROL = re.compile(f"[{INVISIBLE}]")


def printable(line: str) -> str:
    """Control and format characters as escapes: a record on the task topic (anyone who
    may write to it) must not move the cursor, clear the screen, set the clipboard or
    reverse the text of whoever follows the topic in a terminal."""
    return _CONTROL.sub(lambda m: _escape(ord(m.group())), line)


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _cell(value: object) -> Text:
    """A task's field as a table cell: its characters escaped (`printable`) and taken as
    they are, not as rich markup (`[blink]`, `[link=...]` in a field styled the board)."""
    return Text(printable(str(value)))


class TaskBoard:
    """The last `rows` tasks, newest first, and how many were seen by channel."""

    def __init__(self, rows: int = ROWS) -> None:
        self.latest: deque[dict[str, Any]] = deque(maxlen=rows)
        self.by_channel: Counter[str] = Counter()
        self.merged = 0

    def add(self, task: dict[str, Any]) -> None:
        self.latest.appendleft(task)
        self.by_channel[str(task.get("channel", "?"))] += 1
        self.merged += len(task.get("related") or [])

    @property
    def seen(self) -> int:
        return sum(self.by_channel.values())

    def render(self) -> Table:
        """The table; every field of a task goes through `_cell`: the board wrote them to
        the terminal raw (an `ESC [2J` in a moment type cleared the screen, an OSC 52 set
        the clipboard) and read `[...]` in them as rich markup."""
        totals = "  ".join(f"{ch} {n}" for ch, n in sorted(self.by_channel.items()))
        table = Table(
            title=f"moments.tasks: {self.seen} task(s), newest first",
            caption=_cell(
                f"{totals}  |  moments merged into a task: {self.merged}  |  Ctrl-C stops"
            ),
            expand=False,
        )
        for name in ("triggered", "P", "moment", "subscriber", "channel:action", "waited", "task"):
            table.add_column(name, no_wrap=name != "moment")
        for task in self.latest:
            moment = task.get("moment", {})
            related = merged_types(task)
            kind = str(moment.get("type", "?")) + (f" + {', '.join(related)}" if related else "")
            deferred = task.get("deferred")
            table.add_row(
                *map(
                    _cell,
                    (
                        str(task.get("triggered_at", ""))[:16].replace("T", " "),
                        task.get("priority", ""),
                        kind,
                        mask_msisdn(str(task.get("subscriber_id", ""))),
                        f"{task.get('channel')}:{task.get('action')}",
                        deferred["reason"] if deferred else "",
                        task.get("task_id", ""),  # in full: `moments tasks ack` takes it
                    ),
                )
            )
        return table
