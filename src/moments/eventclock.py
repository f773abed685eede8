"""Event time per partition, and when to close windows for subscribers who went silent.

An event closes its subscriber's finished windows, but a silent subscriber sends
none: a sweep closes them when a partition's watermark (the latest event time
seen in it) moves on. A partition with no traffic for a while lets the wall clock
stand in for its watermark (minus the allowed lateness), so an "absence" still
fires on a quiet topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SWEEP_BUCKET_S = 3600
"""A partition is swept when its watermark enters a new hour: windows end on local
midnights, which in every zone with whole or half-hour offsets fall on an hour or half."""


@dataclass
class EventClock:
    lateness_s: int
    idle_after_s: float
    watermarks: dict[int, int] = field(default_factory=dict)
    """Partition -> latest event time seen (epoch seconds)."""
    last_seen_wall: dict[int, float] = field(default_factory=dict)
    swept: dict[int, int] = field(default_factory=dict)
    """Partition -> the watermark bucket of its last sweep."""

    def observe(self, marks: Mapping[int, int], wall: float) -> None:
        for partition, at in marks.items():
            if at > self.watermarks.get(partition, 0):
                self.watermarks[partition] = at
            self.last_seen_wall[partition] = wall

    def effective(self, partition: int, wall: float) -> int | None:
        """The watermark to sweep to; the wall clock minus lateness when the partition idles."""
        mark = self.watermarks.get(partition)
        last = self.last_seen_wall.get(partition)
        if last is None or wall - last >= self.idle_after_s:
            idle_mark = int(wall) - self.lateness_s
            return idle_mark if mark is None else max(mark, idle_mark)
        return mark

    def due(self, partitions: Iterable[int], wall: float) -> dict[int, int]:
        """Partitions whose watermark entered a new hour since their last sweep.

        A partition this worker was just given counts as busy until it had `idle_after_s`
        to deliver events: taken for idle at once, it was swept at the wall clock minus
        the lateness, an hour behind its events, and swept again as soon as they came
        (every record twice after each restart)."""
        out: dict[int, int] = {}
        for partition in partitions:
            self.last_seen_wall.setdefault(partition, wall)
            mark = self.effective(partition, wall)
            if mark is None:
                continue
            bucket = mark // SWEEP_BUCKET_S
            if bucket > self.swept.get(partition, -1):
                out[partition] = mark
        return out

    def done(self, swept: Mapping[int, int]) -> None:
        for partition, mark in swept.items():
            self.swept[partition] = mark // SWEEP_BUCKET_S

    def forget(self, keep: Iterable[int]) -> None:
        """After a rebalance: drop partitions no longer assigned (a new owner sweeps them)."""
        kept = set(keep)
        for table in (self.watermarks, self.last_seen_wall, self.swept):
            for partition in [p for p in table if p not in kept]:
                del table[partition]
