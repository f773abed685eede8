"""The live table of `moments tasks tail` in a terminal: the latest tasks, and totals.

Plain state and rendering, no Kafka: the tail feeds it tasks as they arrive and
redraws it (`rich.live.Live`).
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from rich.table import Table

from moments.pii import mask_msisdn

ROWS = 20


def merged_types(task: dict[str, Any]) -> list[str]:
    """The moment types merged into a task (its `related`), in order."""
    return [str(r.get("moment", {}).get("type", "?")) for r in task.get("related") or []]


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
        totals = "  ".join(f"{ch} {n}" for ch, n in sorted(self.by_channel.items()))
        table = Table(
            title=f"moments.tasks: {self.seen} task(s), newest first",
            caption=f"{totals}  |  moments merged into a task: {self.merged}  |  Ctrl-C stops",
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
                str(task.get("triggered_at", ""))[:16].replace("T", " "),
                str(task.get("priority", "")),
                kind,
                mask_msisdn(str(task.get("subscriber_id", ""))),
                f"{task.get('channel')}:{task.get('action')}",
                str(deferred["reason"]) if deferred else "",
                str(task.get("task_id", "")),  # in full: `moments tasks ack` takes it
            )
        return table
