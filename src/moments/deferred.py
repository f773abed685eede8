"""`moments tasks deferred`: the tasks waiting in the deferral queue (`sinks.deferral`),
read from Redis, writing nothing: the queue's `deferred` sorted set a page at a time in
due order (by score), each page's ledger entries (`D<payload>` while a task waits) in one
MGET, with `--moment-type` each page's merge groups (`LRANGE`, a script call per 1,000
tasks: a task matches by any moment it carries), and the merge group sizes of the tasks
listed (`LLEN`, a script call per 1,000 tasks; with `--json` their payloads, `LRANGE`,
for the types they carry).

Plain reads and formatting; the CLI only wires. The subscriber is masked as
`moments tasks pending` masks it (`138****8001`)."""

from __future__ import annotations

import dataclasses
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
from sinks.luabatch import BatchScript

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
    """Epoch seconds the task was made (None: not known): how long it has waited. The
    queue keeps no time a task was parked: a task is parked as it is made (dispatch
    judges it then; a retry is made when its outcome came), and one released and parked
    again (a cap after quiet hours) has waited since it was made, its moment unanswered."""
    merged: int = 0
    """Moments of the subscriber merged into it while it waits (its merge group,
    `group:<id>`): the task carries them too, under its own moment's type."""
    moment_types: tuple[str, ...] = ()
    """The types of every moment it carries, its own first: those of its `related`
    moments (merged before it was parked again) and, once read (`--moment-type`), those
    of its merge group's. What `--moment-type` matches."""

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
            "merged": self.merged,
            "moment_types": list(self.moment_types),
        }

    def row(self, now: float, zone: dt.tzinfo) -> tuple[str, ...]:
        waited = self.waited_s(now)
        due = dt.datetime.fromtimestamp(self.due_at, zone).strftime("%Y-%m-%d %H:%M")
        return (
            self.task_id,
            self.moment_type,
            f"+{self.merged}" if self.merged else "",
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
    """How many of those read match the filters (listed or not)."""
    by_reason: Counter[str] = field(default_factory=Counter)
    """The matching tasks read, by reason."""
    complete: bool = True
    """The whole queue was read: `matched` and `by_reason` count every waiting task."""
    waiting: int = 0
    """Tasks in the queue (ZCARD), matching or not, read or not."""
    filtered: bool = False
    """Reasons or moment types were asked for."""
    by_type: Counter[str] = field(default_factory=Counter)
    """The tasks read of the reasons asked for (all: none asked), by each moment type they
    carry (`DeferredTask.moment_types`: a merged task counts under several), whatever
    the moment types asked for: what a `--moment-type` that matched nothing could have
    said (then no part of the queue reached `limit`, so every task was read)."""


def _described(task_id: str, due_at: float, entry: bytes | None) -> DeferredTask | None:
    """The task the ledger entry holds while it waits; None once released or gone."""
    if entry is None or entry[:1] != b"D":
        return None
    task: dict[str, Any] = json_object(entry[1:])
    moment, deferred = task.get("moment"), task.get("deferred")
    own = str(moment.get("type") or UNKNOWN) if isinstance(moment, dict) else UNKNOWN
    created = task.get("created_at")
    try:
        created_at = dt.datetime.fromisoformat(created).timestamp() if created else None
    except (TypeError, ValueError):
        created_at = None
    return DeferredTask(
        task_id=task_id,
        moment_type=own,
        channel=str(task.get("channel") or UNKNOWN),
        subscriber=mask_msisdn(str(task.get("subscriber_id") or "")) or UNKNOWN,
        reason=str(deferred.get("reason") or UNKNOWN) if isinstance(deferred, dict) else UNKNOWN,
        due_at=due_at,
        created_at=created_at,
        moment_types=tuple(dict.fromkeys((own, *_related_types(task)))),
    )


def _related_types(task: dict[str, Any]) -> list[str]:
    """The moment types of a stored task's `related` moments (those merged into it)."""
    related = task.get("related")
    if not isinstance(related, list):
        return []
    moments = (r.get("moment") for r in related if isinstance(r, dict))
    return [str(m["type"]) for m in moments if isinstance(m, dict) and m.get("type")]


def _carried_types(payload: bytes) -> list[str]:
    """The moment types a merge group's payload carries: its own and its `related`."""
    task = json_object(payload)
    moment = task.get("moment")
    own = [str(moment["type"])] if isinstance(moment, dict) and moment.get("type") else []
    return own + _related_types(task)


async def deferred_tasks(
    queue: DeferralQueue,
    reasons: Collection[str] = (),
    moment_types: Collection[str] = (),
    limit: int = 0,
    merged_types: bool = False,
) -> Listing:
    """The waiting tasks of `reasons` and `moment_types` (empty: all), the `limit` (0: all)
    soonest due, each with the moments merged into it, and how many match by reason. A
    task is of a moment type when any moment it carries is (`DeferredTask.moment_types`):
    with `moment_types`, each page's merge groups are read too.

    The queue is read in due order, a page at a time (`PAGE`), in its two parts: the
    tasks due and ranked, not released yet (scores below 0), and the tasks waiting for
    their time. Each part is read until `limit` of its tasks match (the soonest due are
    among them), so a listing reads a page or two whatever the queue holds (0.01 s of a
    50,000-task queue against a local redis-server): counting by reason means reading
    every payload (the whole queue read took 1.4-3.4 s, on a loaded 2-core machine). With
    `limit` 0 the whole queue is read and the counts are of every waiting task
    (`Listing.complete`): 1.1-1.4 s for those 50,000 there (1.7-2.9 s, measured alike,
    while the merge group sizes came in a pipeline of LLENs: `_per_group`). Each part is
    read by its scores, so a release meanwhile (of ranked tasks) leaves the waiting part
    whole; a task released while a part's pages are read may shift its next page by one
    (a listing, not a count).

    `merged_types` reads the merge groups of the tasks listed (LRANGE), not only their
    sizes (LLEN), so that each one's `moment_types` names its merge group's types too
    (`--json`; the table shows `+N`)."""
    waiting = int(await queue.redis.zcard(queue.key))
    listing = Listing(waiting=waiting, filtered=bool(reasons or moment_types))
    seen: set[str] = set()
    for ranked in (True, False):
        kept: list[DeferredTask] = []
        start = 0
        while True:
            page, last = await _page(queue, ranked, start)
            start += PAGE
            ids = [as_bytes(member).decode() for member, _ in page]
            entries = await _entries(queue, ids)
            groups = await _groups(queue, ids) if moment_types else [None] * len(ids)
            for task_id, (_, score), entry, group in zip(ids, page, entries, groups, strict=True):
                task = _described(task_id, _due(float(score)), entry)
                if task is None or task_id in seen or (reasons and task.reason not in reasons):
                    continue
                seen.add(task_id)
                if group is not None:
                    task = _with_group(task, group)
                listing.by_type.update(task.moment_types)
                if moment_types and not set(task.moment_types) & set(moment_types):
                    continue
                listing.matched += 1
                listing.by_reason[task.reason] += 1
                kept.append(task)
            if last:
                break
            if limit and len(kept) >= limit:  # the rest of this part is due later
                listing.complete = False
                break
        listing.tasks.extend(heapq.nsmallest(limit, kept, key=_order) if limit else kept)
    listing.tasks.sort(key=_order)
    if limit:
        del listing.tasks[limit:]
    await _count_merged(queue, listing, merged_types)
    return listing


async def _page(queue: DeferralQueue, ranked: bool, start: int) -> tuple[Sequence[Any], bool]:
    """`PAGE` (member, score) of a part of the queue from its `start`-th, soonest due
    first, and whether it is the part's last page: the tasks due and ranked (a score of
    -1 minus the due time, the soonest due the highest score below 0), or those waiting
    for their time (a score of the due time). By score, not by rank: the ranks of one
    part counted first were moved by a release meanwhile, and the waiting part, read
    from the rank the ranked part ended at, lost its soonest due tasks to the ranked
    part's reading, neither listed nor counted. Redis walks the offset: a page at 49,500
    of 50,000 took 0.4 ms against a local redis-server (by rank 0.2; best of 20)."""
    if ranked:
        page: Sequence[Any] = await queue.redis.zrevrangebyscore(
            queue.key, "(0", "-inf", start=start, num=PAGE, withscores=True
        )
    else:
        page = await queue.redis.zrangebyscore(
            queue.key, 0, "+inf", start=start, num=PAGE, withscores=True
        )
    return page, len(page) < PAGE


async def _entries(queue: DeferralQueue, task_ids: Sequence[str]) -> list[bytes | None]:
    """The ledger entries of `task_ids`, in one MGET (a pipeline of GETs took twice as long:
    redis-py's cost per command)."""
    if not task_ids:
        return []
    values = await queue.redis.mget([queue.ledger.key(t) for t in task_ids])
    return [None if v is None else as_bytes(v) for v in values]


_LLEN = "return redis.call('LLEN', K[1])"
_LRANGE = "return redis.call('LRANGE', K[1], 0, -1)"


async def _per_group(queue: DeferralQueue, body: str, task_ids: Sequence[str]) -> list[Any]:
    """`body`'s reply for each task's merge group, a script call per `luabatch.CHUNK`
    tasks: a pipeline of one command per task cost redis-py ~25 µs a command to pack and
    parse (the merge group sizes of a 50,000-task queue took 1.3 of the 2 s `--limit 0`
    took, against a local redis-server)."""
    script = BatchScript(queue.redis, body, keys=1, args=1)
    return await script.run([((queue.ledger.group_key(t),), ("",)) for t in task_ids])


async def _groups(queue: DeferralQueue, task_ids: Sequence[str]) -> list[list[bytes]]:
    """The payloads merged into each task (its merge group; [] for none)."""
    if not task_ids:
        return []
    return [[as_bytes(p) for p in group] for group in await _per_group(queue, _LRANGE, task_ids)]


def _with_group(task: DeferredTask, group: Sequence[bytes]) -> DeferredTask:
    """`task` with the moments of its merge group (`group`, their payloads) counted."""
    carried = (t for payload in group for t in _carried_types(payload))
    types = tuple(dict.fromkeys((*task.moment_types, *carried)))
    return dataclasses.replace(task, merged=len(group), moment_types=types)


async def _count_merged(queue: DeferralQueue, listing: Listing, types: bool) -> None:
    """Each listed task's `merged`: the length of its merge group; with `types`, its
    `moment_types` with those the group carries."""
    if not listing.tasks:
        return
    if types:
        groups = await _groups(queue, [t.task_id for t in listing.tasks])
        listing.tasks = [
            _with_group(task, group) for task, group in zip(listing.tasks, groups, strict=True)
        ]
        return
    sizes = await _per_group(queue, _LLEN, [t.task_id for t in listing.tasks])
    listing.tasks = [  # most carry none: replace() took 0.5 s of 50,000
        dataclasses.replace(task, merged=int(n)) if n else task
        for task, n in zip(listing.tasks, sizes, strict=True)
    ]


def _due(score: float) -> float:
    """A `deferred` score as the time the task is due (a ranked one's is -1 minus it)."""
    return -1 - score if score < 0 else score


def _order(task: DeferredTask) -> tuple[float, str]:
    return task.due_at, task.task_id


def summary(listing: Listing) -> str:
    """The closing line: how many wait, by reason, and how many more than listed; of a
    listing that did not read the whole queue, how many wait in all, and how to count."""
    if not listing.complete:
        listed = Counter(t.reason for t in listing.tasks)
        by_reason = ", ".join(f"{r} {n}" for r, n in sorted(listed.items()))
        return (
            f"{len(listing.tasks)} task(s) listed, the soonest due of those asked for "
            f"({by_reason}), of {listing.waiting:,} waiting in all; --limit 0 reads the whole "
            "queue, to list and count them all by reason"
        )
    if not listing.matched:
        if listing.filtered and listing.waiting:
            return (
                f"none of the {listing.waiting:,} task(s) waiting in the deferral queue is of "
                "the --reason or --moment-type asked for"
            )
        return "no task is waiting in the deferral queue"
    counts = ", ".join(f"{r} {n}" for r, n in sorted(listing.by_reason.items()))
    said = f"{listing.matched} task(s) waiting ({counts})"
    more = listing.matched - len(listing.tasks)
    if more:
        said += f"; {more} more not listed, soonest due first (--limit 0 lists all)"
    return said


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """`header` and `rows` as lines of columns two spaces apart, each as wide as its widest
    cell (the last one unpadded): the listing on a pipe, greppable and cut-able, where a
    rich table took 35 s to draw 50,000 rows."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *rows)
    ]


def unmatched_types(
    listing: Listing, asked: Sequence[str], known: Collection[str] | None
) -> list[str]:
    """A line for each `--moment-type` asked for that no waiting task has: whether it is a
    moment type of the rules in force (`known`; None: the rules could not be read), the
    closest that is, and the types that do wait. "No task is waiting" alone read the same
    for a typo (`bill_shock` for `bill_spike`) as for an empty queue."""
    import difflib  # on this answer only

    waiting = ", ".join(f"{t} {n}" for t, n in sorted(listing.by_type.items()))
    lines = []
    for moment_type in dict.fromkeys(asked):
        if listing.by_type[moment_type]:
            continue
        said = f"no task of moment type {moment_type!r} " + (
            "waits"
            if listing.complete  # else only the soonest due were read: it may wait later on
            else "among the soonest due read (--limit 0 reads the whole queue)"
        )
        if known is not None and moment_type not in known:
            said += " and no rule in force (MOMENTS_RULES) makes that type"
            close = difflib.get_close_matches(moment_type, sorted(known), n=1)
            if close:
                said += f": did you mean {close[0]!r}?"
            else:
                said += " (`moments rules explain` lists the rules and their types)"
        lines.append(said + (f"; waiting: {waiting}" if waiting and listing.complete else ""))
    return lines
