"""`moments tasks pending`: published tasks no outcome came back for yet, read from the
ledger's unanswered index in Redis (`sinks.ledger.TaskLedger.unanswered_page`).

Plain reads and formatting; the CLI only wires. The subscriber is masked as
`moments tasks tail` masks it (`138****8001`): the list goes to a terminal or a ticket.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from moments.pii import mask_msisdn
from sinks.ledger import TaskLedger, Unanswered, sent_meta_fields
from sinks.stores import CHANNELS

UNKNOWN = "?"


@dataclass(frozen=True)
class PendingTask:
    task_id: str
    channel: str
    moment_type: str
    subscriber: str
    """Masked (`138****8001`)."""
    sent_at: float | None
    """Epoch seconds it was published (None: not known)."""
    expires_at: float

    def age_s(self, now: float) -> float | None:
        return None if self.sent_at is None else max(0.0, now - self.sent_at)

    def as_json(self, now: float) -> dict[str, object]:
        age = self.age_s(now)
        return {
            "task_id": self.task_id,
            "channel": self.channel,
            "moment_type": self.moment_type,
            "subscriber_id": self.subscriber,
            "published_at": None if self.sent_at is None else _iso(self.sent_at),
            "age_seconds": None if age is None else int(age),
            "expires_at": _iso(self.expires_at),
            "expired": self.expires_at <= now,
        }

    def as_line(self, now: float) -> str:
        age = self.age_s(now)
        left = self.expires_at - now
        expiry = f"expired {span(-left)} ago" if left <= 0 else f"expires in {span(left)}"
        return (
            f"{self.task_id}  {self.channel:<13} {self.moment_type:<32} {self.subscriber:<12} "
            f"age {UNKNOWN if age is None else span(age):>6}  {expiry} ({_iso(self.expires_at)})"
        )


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def span(seconds: float) -> str:
    """`45s`, `12m`, `3h05m`, `2d04h`: an age read at a glance."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


LIMIT = 1000
"""The tasks listed unless told (`--limit`): the soonest to expire."""
PAGE = 500
"""Index entries read per round trip (their ledger entries and bodies come with them)."""


async def pending_tasks(
    ledger: TaskLedger,
    now: float,
    channels: Sequence[str] = CHANNELS,
    older_than_s: float = 0.0,
    limit: int = LIMIT,
) -> list[PendingTask]:
    """The `limit` (0: all) unanswered tasks of `channels` published at least
    `older_than_s` ago that expire soonest, each with its moment type and published time
    (the ledger entry's meta) and its subscriber (the body the ledger keeps until the
    task expires and a day). Each channel's index is read a page at a time (`PAGE`
    entries, then their entries and bodies in one pipeline), until `limit` are found:
    the index is largest when a consumer stopped answering, and one read of it all
    blocked Redis and took the command gigabytes. A task answered while the pages are
    read may shift the next page by one (a listing, not a count)."""
    found: list[PendingTask] = []
    for channel in channels:
        start, kept = 0, 0
        while not limit or kept < limit:
            page = await ledger.unanswered_page(channel, start, PAGE)
            start += len(page)
            for task in await _described(ledger, page):
                age = task.age_s(now)
                if older_than_s and (age is None or age < older_than_s):
                    continue
                found.append(task)
                kept += 1
            if len(page) < PAGE:
                break
    found.sort(key=lambda t: (t.expires_at, t.task_id))
    return found[:limit] if limit else found


async def _described(ledger: TaskLedger, page: Sequence[Unanswered]) -> list[PendingTask]:
    """The page's tasks with their ledger entries' meta and bodies' subscriber, in one
    round trip."""
    if not page:
        return []
    pipe = ledger.redis.pipeline(transaction=False)
    for u in page:
        pipe.get(ledger.key(u.task_id))
        pipe.get(ledger.body_key(u.task_id))
    replies = await pipe.execute()
    out: list[PendingTask] = []
    for u, entry, body in zip(page, replies[::2], replies[1::2], strict=True):
        meta = sent_meta_fields(None if entry is None else _bytes(entry))
        task = json_object(None if body is None else _bytes(body))
        sent_at = meta.get("sent_at")
        out.append(
            PendingTask(
                task_id=u.task_id,
                channel=u.channel,
                moment_type=str(meta.get("moment_type") or UNKNOWN),
                subscriber=mask_msisdn(str(task.get("subscriber_id") or "")) or UNKNOWN,
                sent_at=float(sent_at) if isinstance(sent_at, int | float) else None,
                expires_at=u.expires_at,
            )
        )
    return out


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def json_object(raw: bytes | None) -> dict[str, object]:
    """A stored task's JSON object; {} when there is none, or it is no JSON object."""
    if not raw:
        return {}
    try:
        found = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def summary(
    tasks: Sequence[PendingTask],
    now: float,
    limit: int = 0,
    held: int = 0,
    older_than_s: float = 0.0,
) -> str:
    """The closing line: how many, by channel, and how many are past their expiry; when
    `limit` cut the list, how many the index holds (`held`, of the channels asked). With
    none listed because `older_than_s` left them out, how many wait all the same: the
    runbook's `--older-than 2h` must not read as a consumer that answers everything."""
    if not tasks:
        if older_than_s and held:
            return (
                f"no task published {span(older_than_s)} ago or earlier is waiting "
                f"for an outcome; {held} younger (or of unknown age) are: run without "
                "--older-than to list them"
            )
        return "no published task is waiting for an outcome"
    by_channel: dict[str, int] = {}
    for t in tasks:
        by_channel[t.channel] = by_channel.get(t.channel, 0) + 1
    expired = sum(1 for t in tasks if t.expires_at <= now)
    counts = ", ".join(f"{c} {n}" for c, n in sorted(by_channel.items()))
    listed = f"{len(tasks)} task(s) waiting for an outcome"
    if limit and len(tasks) == limit:
        listed = (
            f"the first {len(tasks)} of {held} waiting for an outcome, soonest expiry first "
            "(--limit 0 lists all)"
        )
    return (
        f"{listed} ({counts}); {expired} past their "
        "expiry, counted as expired unanswered once the outcome grace has passed"
    )
