"""`moments tasks deferred`: the tasks waiting in the deferral queue (`sinks.deferral`),
read from Redis without a script: the queue's `deferred` sorted set a page at a time
(`ZRANGE` by rank), each page's ledger entries (`TaskLedger.get_many`, `D<payload>`
while a task waits) in one round trip.

Plain reads and formatting; the CLI only wires. The subscriber is masked as
`moments tasks pending` masks it (`138****8001`)."""

from __future__ import annotations

import datetime as dt
import heapq
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from moments.pending import UNKNOWN, json_object, span
from moments.pii import mask_msisdn
from sinks.deferral import DeferralQueue
from sinks.ledger import as_bytes

PAGE = 500
"""Queue entries read per round trip (their ledger entries come in one more)."""


@dataclass(frozen=True)
class DeferredTask:
    task_id: str
    moment_type: str
    channel: str
    subscriber: str
    """Masked (`138****8001`)."""
    reason: str
    """`Deferral.reason` of the payload it waits with (`?` when it holds none)."""
    due_at: float
    created_at: float | None
    """Epoch seconds the task was made (None: not known): how long it has waited."""

    def waited_s(self, now: float) -> float | None:
        return None if self.created_at is None else max(0.0, now - self.created_at)

    def as_json(self, now: float, zone: dt.tzinfo) -> dict[str, object]:
        waited = self.waited_s(now)
        return {
            "task_id": self.task_id,
            "moment_type": self.moment_type,
            "channel": self.channel,
            "subscriber_id": self.subscriber,
            "reason": self.reason,
            "due_at": dt.datetime.fromtimestamp(self.due_at, zone).isoformat(),
            "waited_seconds": None if waited is None else int(waited),
        }

    def row(self, now: float, zone: dt.tzinfo) -> tuple[str, ...]:
        waited = self.waited_s(now)
        due = dt.datetime.fromtimestamp(self.due_at, zone).strftime("%Y-%m-%d %H:%M")
        return (
            self.task_id,
            self.moment_type,
            self.channel,
            self.subscriber,
            self.reason,
            due,
            UNKNOWN if waited is None else span(waited),
        )


@dataclass
class Listing:
    tasks: list[DeferredTask] = field(default_factory=list)
    """The `limit` soonest due of those matching the filters."""
    matched: int = 0
    """How many match the filters (listed or not)."""
    by_reason: Counter[str] = field(default_factory=Counter)
    """The matching tasks by reason."""


def _described(task_id: str, due_at: float, entry: bytes | None) -> DeferredTask | None:
    """The task the ledger entry holds while it waits; None once released or gone."""
    if entry is None or entry[:1] != b"D":
        return None
    task: dict[str, Any] = json_object(entry[1:])
    moment, deferred = task.get("moment"), task.get("deferred")
    created = task.get("created_at")
    try:
        created_at = dt.datetime.fromisoformat(created).timestamp() if created else None
    except (TypeError, ValueError):
        created_at = None
    return DeferredTask(
        task_id=task_id,
        moment_type=str(moment.get("type") or UNKNOWN) if isinstance(moment, dict) else UNKNOWN,
        channel=str(task.get("channel") or UNKNOWN),
        subscriber=mask_msisdn(str(task.get("subscriber_id") or "")) or UNKNOWN,
        reason=str(deferred.get("reason") or UNKNOWN) if isinstance(deferred, dict) else UNKNOWN,
        due_at=due_at,
        created_at=created_at,
    )


async def deferred_tasks(
    queue: DeferralQueue,
    reasons: Collection[str] = (),
    moment_types: Collection[str] = (),
    limit: int = 0,
) -> Listing:
    """The waiting tasks of `reasons` and `moment_types` (empty: all), the `limit` (0: all)
    soonest due, with how many match and their count by reason. The whole queue is read,
    a page at a time (`PAGE`): the counts are of every waiting task; only the ids seen
    and the `limit` soonest are kept, not a row per task of a night's queue. A task released
    while the pages are read may shift the next page by one (a listing, not a count)."""
    listing = Listing()
    seen: set[str] = set()
    start = 0
    while True:
        page: Sequence[Any] = await queue.redis.zrange(
            queue.key, start, start + PAGE - 1, withscores=True
        )
        start += len(page)
        ids = [as_bytes(member).decode() for member, _ in page]
        entries = await queue.ledger.get_many(ids)
        for task_id, (_, score), entry in zip(ids, page, entries, strict=True):
            due = -1 - float(score) if float(score) < 0 else float(score)  # ranked: due
            task = _described(task_id, due, entry)
            if task is None or task_id in seen or (reasons and task.reason not in reasons):
                continue
            if moment_types and task.moment_type not in moment_types:
                continue
            seen.add(task_id)
            listing.matched += 1
            listing.by_reason[task.reason] += 1
            listing.tasks.append(task)
        if limit and len(listing.tasks) > limit:  # only the soonest due are kept
            listing.tasks = heapq.nsmallest(limit, listing.tasks, key=_order)
        if len(page) < PAGE:
            break
    listing.tasks.sort(key=_order)
    return listing


def _order(task: DeferredTask) -> tuple[float, str]:
    return task.due_at, task.task_id


def summary(listing: Listing) -> str:
    """The closing line: how many wait, by reason, and how many more than listed."""
    if not listing.matched:
        return "no task is waiting in the deferral queue (of those asked for)"
    counts = ", ".join(f"{r} {n}" for r, n in sorted(listing.by_reason.items()))
    said = f"{listing.matched} task(s) waiting ({counts})"
    more = listing.matched - len(listing.tasks)
    if more:
        said += f"; {more} more not listed, soonest due first (--limit 0 lists all)"
    return said
