"""Dead letters read back: what was rejected, why, and which of them the current code
would accept (the replay's question).

A record in the dead-letter topic is the rejected record's key, value and headers,
unchanged, with its origin and reason in `__dlq.errors.*` headers (sinks.deadletter). Here those
are parsed into `DeadLetterEntry`, chosen with `Selection` and counted with `Summary`:
plain code, no broker, so the CLI (moments.deadletter_cli) only wires it to Kafka.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moments.decoding import MAX_MESSAGE_BYTES, decode
from moments.models import EventType, InputEvent
from moments.records import DeadLetter, Header, RawRecord, RejectReason

UNKNOWN = "unknown"
"""A header the record lacks (written by another tool, or by hand)."""


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One record of the dead-letter topic, its headers parsed."""

    partition: int
    """Where it sits in the dead-letter topic."""
    offset: int
    origin_topic: str
    origin_partition: int | None
    origin_offset: int | None
    reason: str
    error: str
    message: str
    rejected_at: dt.datetime | None
    key: bytes | None
    value: bytes | None
    original_size: int | None = None
    """Bytes of the original value when `value` is not all of it (a `too_large` record
    cut to its first 64 KiB, or a dead letter sent with an empty value as refused for
    its size); None when `value` is the original."""
    original_timestamp: dt.datetime | None = None
    """The original record's Kafka timestamp, where the dead letter says it."""
    headers: tuple[Header, ...] = ()
    """The original record's own headers (not the `__dlq.*` ones): a replay restores them."""

    @property
    def coordinates(self) -> str:
        """`partition:offset` in the dead-letter topic: what a replay remembers."""
        return f"{self.partition}:{self.offset}"


def parse_entry(
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[Header],
    timestamp_ms: int | None = None,
) -> DeadLetterEntry:
    """An entry from a dead-letter record's parts. Missing or unreadable headers become
    `unknown` / None, never an error: a record put there by hand is still shown."""
    found: dict[str, str] = {}
    original: list[Header] = []
    for name, raw in headers:
        if name.startswith("__dlq."):
            found[name] = (raw or b"").decode("utf-8", "replace")
        else:
            original.append((name, raw))

    def text(name: str) -> str:
        return found.get(f"__dlq.errors.{name}") or UNKNOWN

    def number(name: str) -> int | None:
        try:
            return int(found[f"__dlq.errors.{name}"])
        except (KeyError, ValueError):
            return None

    rejected_at = parse_time(found.get("__dlq.errors.timestamp", ""))
    if rejected_at is None and timestamp_ms is not None:
        rejected_at = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    return DeadLetterEntry(
        partition=partition,
        offset=offset,
        origin_topic=text("topic"),
        origin_partition=number("partition"),
        origin_offset=number("offset"),
        reason=text("reason"),
        error=text("exception.class.name"),
        message=text("exception.message"),
        rejected_at=rejected_at,
        key=key,
        value=value,
        original_size=number("original.size"),
        original_timestamp=parse_time(found.get("__dlq.errors.original.timestamp", "")),
        headers=tuple(original),
    )


def parse_time(text: str) -> dt.datetime | None:
    """An ISO 8601 date or time; a naive one is taken as UTC. None when it is not one."""
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command looks at; an empty set means any."""

    reasons: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()
    """Origin topics, full names (with the prefix)."""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    """Rejected at or after `since` and before `until`."""

    def matches(self, entry: DeadLetterEntry) -> bool:
        if self.reasons and entry.reason not in self.reasons:
            return False
        if self.topics and entry.origin_topic not in self.topics:
            return False
        if self.since is None and self.until is None:
            return True
        when = entry.rejected_at
        if when is None:
            return False  # a time was asked for, and this one has none
        if self.since is not None and when < self.since:
            return False
        return self.until is None or when < self.until


MESSAGES_KEPT = 1000
"""Distinct error messages a `Group` counts."""

_QUOTED = r"b?(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
"""A Python repr of a text or bytes value, as a message quotes one."""
_KEY_VALUES = re.compile(
    rf"(?<=^record key ){_QUOTED}(?= differs from subscriber_id )"
    rf"|(?<= differs from subscriber_id ){_QUOTED}(?=; )"
    rf"|(?<=^a profile tombstone keyed ){_QUOTED}(?= forgets nobody)"
    rf"|(?<=: it is ){_QUOTED}(?= as | in UTF)"
)
"""The values a `key_mismatch` message quotes (`moments.decoding.key_problem`): the record
key, the subscriber id, and the key read in the form a serializer wrote it."""


_OUT_OF_TIME = re.compile(
    r"^occurred_at \S+ is (?:(?P<seconds>\d+) s )?(?P<how>ahead of the worker's clock|older "
    r"than this subscriber's latest \w+ event|older than the updates that set each field it "
    r"carries) \((?:the latest applied: )?\S+?(?=[;)])"
)
"""The times and seconds a `future` or `late` message quotes (`moments.refusals`)."""


def message_shape(reason: str, message: str) -> str:
    """The message a summary counts: a `key_mismatch` one with the key and subscriber id it
    quotes as `'…'`, and a `future` or `late` one with its times as `…` and its seconds
    ahead or behind in hours (`_hours`), so that a producer's dead letters of one mistake
    are one row with their count, not one a key or an instant (the three a row shows hid
    the rest as "other message(s)"); any other as it is."""
    if reason == RejectReason.KEY_MISMATCH.value:
        return _KEY_VALUES.sub("'…'", message)
    if reason in (RejectReason.FUTURE.value, RejectReason.LATE.value):
        limit = _LIMIT.search(message)
        floor = int(limit[1] or limit[2]) if limit is not None else None
        return _OUT_OF_TIME.sub(lambda m: _out_of_time_shape(m, floor), message, count=1)
    return message


_LIMIT = re.compile(r"at most (\d+) s\)|MOMENTS_LATENESS_SECONDS=(\d+)\)")
"""The limit a `future` or `late` message names: seconds it refuses beyond."""


def _out_of_time_shape(found: re.Match[str], floor: int | None) -> str:
    seconds = found["seconds"]
    by = f"{_hours(int(seconds), floor)} " if seconds is not None else ""
    latest = "the latest applied: …" if found["how"].startswith("older than the updates") else "…"
    return f"occurred_at … is {by}{found['how']} ({latest}"


def _hours(seconds: int, floor: int | None = None) -> str:
    """Seconds ahead or behind as a summary groups them: an offset written wrong is whole
    hours (local time with `Z`: 8 h in China), a clock off or a backlog less than one.
    Under an hour it starts at `floor`, the limit the message names (only what is past
    it is refused): "less than an hour" read as if an event a minute ahead was."""
    if seconds < 3600:
        if floor is not None and 0 < floor < 3600:
            since = f"{floor // 60} min" if floor % 60 == 0 else f"{floor} s"
            return f"between {since} and an hour"
        return "less than an hour"
    if seconds < 2 * 86400:
        return f"about {round(seconds / 3600)} h"
    return f"about {round(seconds / 86400)} days"


@dataclass
class Group:
    """Dead letters of one origin topic and reason."""

    count: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    messages: Counter[str] = field(default_factory=Counter)
    """How many said each distinct error message, by its shape (`message_shape`: the first
    one's alone hid a producer's own dead letters behind others' of the same reason, and
    a key quoted made each key's its own): at most `MESSAGES_KEPT` distinct
    ones, those first read (a message may quote a value, and the topic may hold millions);
    the rest are only in `count`."""
    due: dt.datetime | None = None
    """For dead letters a replay left for their time (`future`, still ahead of the
    clock): the earliest instant one of them can be replayed; None for the others."""
    due_last: dt.datetime | None = None
    """The latest such instant: from then on, every one of them can be."""

    def add(self, entry: DeadLetterEntry, due: dt.datetime | None = None) -> None:
        when = entry.rejected_at
        self.count += 1
        if due is not None:
            self.due = due if self.due is None else min(self.due, due)
            self.due_last = due if self.due_last is None else max(self.due_last, due)
        message = message_shape(entry.reason, entry.message)
        if message in self.messages or len(self.messages) < MESSAGES_KEPT:
            self.messages[message] += 1
        if when is not None:
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)


@dataclass
class Summary:
    """Counts by (origin topic, reason), in the order they were first seen."""

    groups: dict[tuple[str, str], Group] = field(default_factory=dict)
    copies: int = 0
    """Of those counted, dead letters of an original record (the same topic, partition and
    offset) counted before: a worker read the record again and refused it again."""

    def add(self, entry: DeadLetterEntry, due: dt.datetime | None = None) -> None:
        """Counts `entry`; `due`: when it can be replayed, where that is still to come."""
        key = (entry.origin_topic, entry.reason)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group()
        group.add(entry, due)

    @property
    def due(self) -> dt.datetime | None:
        """The earliest instant one of the dead letters can be replayed, of those a replay
        left for their time; None when it left none so."""
        return min((g.due for g in self.groups.values() if g.due is not None), default=None)

    @property
    def total(self) -> int:
        return sum(g.count for g in self.groups.values())


NOT_AN_INPUT = "not_an_input_topic"
"""Reason given when a dead letter's origin is no input topic of this app (a topic renamed
since, or MOMENTS_TOPIC_PREFIX set otherwise): a replay has nowhere to send it."""


def revalidate(
    entry: DeadLetterEntry, topic_types: Mapping[str, EventType]
) -> InputEvent | DeadLetter | str | None:
    """What the current code makes of a dead letter: the event when it would accept it now
    (None: a profile tombstone; a replay sends either), else why not: the `DeadLetter` it
    would make again, or `NOT_AN_INPUT`. The same `decode` a worker runs, so the answer is
    the worker's."""
    event_type = topic_types.get(entry.origin_topic)
    if event_type is None:
        return NOT_AN_INPUT
    if entry.original_size is not None:
        return _cut(entry, event_type)
    record = RawRecord(
        entry.origin_topic,
        entry.origin_partition or 0,
        entry.origin_offset or 0,
        entry.key,
        entry.value,
    )
    return decode(record, event_type)


def _cut(entry: DeadLetterEntry, event_type: EventType) -> DeadLetter:
    """What a dead letter that is not the whole record is: never replayed (part of an
    event could read as a whole one); the producer sends it again."""
    size = entry.original_size or 0
    held = len(entry.value or b"")
    reason = RejectReason.TOO_LARGE if size > MAX_MESSAGE_BYTES else _reason(entry.reason)
    record = RawRecord(
        entry.origin_topic, entry.origin_partition or 0, entry.origin_offset or 0, entry.key, None
    )
    return DeadLetter(
        record,
        event_type.value,
        reason,
        "Truncated",
        f"the dead letter holds {held:,} of the record's {size:,} bytes: not replayed; "
        "the producer sends the event again",
    )


def _reason(text: str) -> RejectReason:
    try:
        return RejectReason(text)
    except ValueError:
        return RejectReason.INVALID_EVENT


def entry_document(entry: DeadLetterEntry) -> dict[str, Any]:
    """An entry as JSON for `deadletter show --json`: the value as text where it is UTF-8
    (a JSON event, valid or not), else in `value_base64`."""
    doc: dict[str, Any] = {
        "deadletter": entry.coordinates,
        "topic": entry.origin_topic,
        "partition": entry.origin_partition,
        "offset": entry.origin_offset,
        "reason": entry.reason,
        "error": entry.error,
        "message": entry.message,
        "rejected_at": entry.rejected_at.isoformat() if entry.rejected_at else None,
        "key": entry.key.decode("utf-8", "replace") if entry.key is not None else None,
        "value": None,
    }
    if entry.original_size is not None:
        doc["original_size"] = entry.original_size
    if entry.original_timestamp is not None:
        doc["original_timestamp"] = entry.original_timestamp.isoformat()
    if entry.headers:
        doc["headers"] = [
            [name, raw.decode("utf-8", "replace") if raw is not None else None]
            for name, raw in entry.headers
        ]
    if entry.value is not None:
        try:
            doc["value"] = entry.value.decode("utf-8")
        except UnicodeDecodeError:
            doc["value_base64"] = base64.b64encode(entry.value).decode()
    return doc
