"""Subscriber records read back from the state's changelog, for people.

The records are compressed (moments.statezip), so a Kafka console tool shows only
binary: `moments state show` finds a subscriber's latest record in the changelog and
prints it with the field names of `SubscriberState`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from moments.cooldowns import RETURNS_TOPIC_SUFFIX
from moments.fence import Fold, header_value
from moments.partitioning import partition_of
from moments.risk import HOTLINE_CALLS
from moments.settings import Settings
from moments.sources import SOURCE_CODES
from moments.state import SubscriberState
from moments.statezip import MisnamedRecordError, unpack
from moments.topicread import Progress, TopicReader, topic_consumer
from rules.series import BEGUN
from rules.windows import window_start_day

if TYPE_CHECKING:
    from rules.catalog import RuleSet
    from rules.series import Series

STATE_TABLE = "subscribers"
"""The Faust table's name (moments.app), hence its changelog `<app id>-subscribers-changelog`."""


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-{STATE_TABLE}-changelog"


def returns_topic(settings: Settings) -> str:
    """The internal topic of cooldown returns (moments.cooldowns), read with the input
    topics and co-partitioned with them: `<app id>-cooldown-returns`."""
    return f"{settings.app_id}-{RETURNS_TOPIC_SUFFIX}"


class Stored(NamedTuple):
    """A subscriber's latest record and the changelog partition that holds it."""

    value: bytes
    partition: int
    hashed: int
    """The partition murmur2 of the key names: another one means its events arrived
    misplaced (see moments.partitioning)."""


async def latest_records(
    settings: Settings, subscribers: Iterable[str], progress: Progress | None = None
) -> dict[str, Stored | None]:
    """Each subscriber's latest stored record in the changelog (None: none, or deleted).

    Reads the partitions murmur2 names for them, from their start to their end as of now,
    without a consumer group (a viewer takes nothing from the workers); a subscriber found
    there neither as a record nor as a tombstone is looked for in the other partitions,
    where events from a producer with another partitioner put it."""
    topic = changelog_topic(settings)
    wanted = {s.encode(): s for s in subscribers}
    missing = (
        f"no worker of app {settings.app_id!r} has run against this broker; check "
        "MOMENTS_APP_ID and MOMENTS_KAFKA_BOOTSTRAP"
    )
    async with topic_consumer(settings, topic, "state-show", missing) as (consumer, partitions):
        count = len(partitions)
        hashed = {key: partition_of(key, count) for key in wanted}
        reader = _LatestReader(consumer, topic, progress)
        latest = await reader.read(set(hashed.values()), set(wanted))
        unseen = set(wanted) - latest.keys()
        if unseen:
            latest |= await reader.read(set(partitions) - set(hashed.values()), unseen)
        found: dict[str, Stored | None] = {}
        for key, sub in wanted.items():
            value, partition = latest.get(key, (None, -1))
            found[sub] = None if value is None else Stored(value, partition, hashed[key])
        return found


class _LatestReader(TopicReader):
    """Keeps the value (None: a tombstone) of the wanted keys a restore would keep (the
    last, unless a stale record came after it: moments.fence), and its partition."""

    async def read(
        self, partitions: set[int], keys: set[bytes]
    ) -> dict[bytes, tuple[bytes | None, int]]:
        kept = Fold()
        where: dict[bytes, int] = {}
        async for records in self.batches(partitions):
            for record in records:
                if record.key in keys:
                    skipped = kept.skipped
                    kept.offer(record.key, record.value, header_value(record.headers))
                    if kept.skipped == skipped:
                        where[record.key] = record.partition
        return {key: (value, where[key]) for key, value in kept.values.items()}


def readable(stored: bytes) -> dict[str, Any]:
    """A stored record as a document with `SubscriberState`'s field names, and its sizes;
    `_damaged` says what is wrong with a record the workers read whole and mend (its
    frame naming a dictionary it was not written with)."""
    damaged: dict[str, str] = {}
    try:
        json = unpack(stored)  # once: from_bytes takes the JSON as it is
    except MisnamedRecordError as exc:
        json, damaged["_damaged"] = exc.json, str(exc)
    fields = dataclasses.asdict(SubscriberState.from_bytes(json))
    del fields["damaged"]  # what a read by the detector reset: none here (a read is not mended)
    return {
        **fields,
        "_stored_bytes": len(stored),
        "_json_bytes": len(json),
        **damaged,
    }


READ_AS = (
    "times RFC 3339 in UTC; days (closed, special_day, leads) and series windows the "
    "subscriber's local dates; offsets, seen and recent by source and partition; "
    "_tags names the rule or series behind each hashed key (--json: as stored)"
)
"""How `for_people` writes a record, said above it."""

_TIMES = ("first_seen", "profile_at", "last_at", "fired", "seen")
"""Fields of name -> event time (epoch seconds)."""
_TAGGED = ("first_seen", "series", "last", "last_at", "fired", "fired_by", "shadowed", "leads")
"""Fields whose keys begin with a rule's or series' tag (`rules.rule.state_tag`)."""


def for_people(
    record: dict[str, Any],
    names: dict[str, str] | None,
    series: Mapping[str, Series] | None = None,
) -> dict[str, Any]:
    """A `readable` record with its epoch seconds as RFC 3339 times (UTC), its day
    ordinals and window indices as dates, and `_tags`: what each hashed key of the
    record is (`names`: tag -> "rule <id>" or "series <name>" of the rules loaded; None:
    the rules could not be loaded, said in `_tags`). Stored
    as numbers for size, they read as `first_seen: {"3595a3:app": 1796400000}`. The
    series rings of `series` (tag -> its definition, `series_by_tag`; the risk score's
    `hotline` always) read as their windows' local dates and values, the offsets, `seen`
    and `recent` by source name and partition. A record
    with a field of a shape the detector never writes (damaged, hand-edited) is shown as
    stored, said so: its numbers are the evidence."""
    try:
        return _for_people(record, names, {HOTLINE_CALLS.tag: HOTLINE_CALLS, **(series or {})})
    except (TypeError, ValueError, AttributeError, OverflowError, IndexError) as exc:
        return {**record, "_as_stored": f"a field of a shape never written ({exc!r})"}


def _for_people(
    record: dict[str, Any], names: dict[str, str] | None, series: Mapping[str, Series]
) -> dict[str, Any]:
    out = dict(record)
    for name in _TIMES:
        out[name] = {key: _time(at) for key, at in record.get(name, {}).items()}
    out["seen"] = {_SOURCES.get(key, key): at for key, at in out.get("seen", {}).items()}
    out["recent"] = {_SOURCES.get(key, key): ids for key, ids in record.get("recent", {}).items()}
    out["offsets"] = {_source_partition(key): at for key, at in record.get("offsets", {}).items()}
    out["series"] = {
        key: _ring(key, ring, series) for key, ring in record.get("series", {}).items()
    }
    out["complaints"] = {
        key: _time(at) if at >= 0 else f"resolved {_time(-at)}"
        for key, at in record.get("complaints", {}).items()
    }
    for name in ("watermark", "erased"):
        out[name] = _time(record[name]) if record.get(name) else None
    for name in ("special_day", "changed_after_look"):
        out[name] = _day(record[name]) if record.get(name) else None
    out["closed"] = {key: _window(key, index) for key, index in record.get("closed", {}).items()}
    out["leads"] = {
        tag: [lead[0], _day(lead[1])] if isinstance(lead, list) and len(lead) == 2 else lead
        for tag, lead in record.get("leads", {}).items()
    }
    tags = sorted(
        {re.split(r"[:.]", key)[0] for field in _TAGGED for key in record.get(field, {})}
        - {"hotline"}  # moments.risk's own series, no rule's
    )
    if names is None:
        if tags:
            out["_tags"] = "not named: the rules could not be loaded (`moments rules validate`)"
        return out
    out["_tags"] = {
        tag: names.get(tag, "no rule or series of the rules loaded: removed or changed since")
        for tag in tags
    }
    return out


def tag_names(rules: RuleSet) -> dict[str, str]:
    """Each rule's and series' tag -> what it is, for `for_people`."""
    named = {rule.tag: f"rule {rule.id}" for rule in rules.rules}
    named |= {series.tag: f"series {series.name}" for series in rules.series.values()}
    return named


def series_by_tag(rules: RuleSet) -> dict[str, Series]:
    """Each series' tag -> its definition, for `for_people` to read its ring."""
    return {series.tag: series for series in rules.series.values()}


_SOURCES = {code: event_type.value for event_type, code in SOURCE_CODES.items()}
"""Source code of the record's keys (`u`) -> the event type it stands for (`usage`)."""


def _source_partition(key: str) -> str:
    """An `offsets` key, `u3`, as `usage partition 3`; another as stored."""
    source, partition = key[:1], key[1:]
    if source in _SOURCES and partition.isdigit():
        return f"{_SOURCES[source]} partition {partition}"
    return key


def _ring(key: str, ring: list[float], series: Mapping[str, Series]) -> Any:
    """A series ring (rules.series: `[newest, first, slots of each window, newest
    first]`) as its windows' first local days and their values, and where its history
    begins; a begin (`<tag>.b`: `[window]`) as that window. The ring of a series not in
    the rules loaded is shown as stored: its period and width are theirs to say."""
    begun = key.endswith(BEGUN)
    found = series.get(key[: -len(BEGUN)] if begun else key)
    if found is None:
        return ring
    period = found.period
    if begun:
        return {"history began": _window_day(period, int(ring[0]))}
    newest, first = int(ring[0]), int(ring[1])
    width = found.width
    names = ("sum", "count", "max") if width == 3 else ("count",)
    windows = {}
    for pos, at in enumerate(range(2, len(ring), width)):
        values = ring[at : at + width] + [0.0] * (width - len(ring[at : at + width]))
        windows[_window_day(period, newest - pos)] = {
            name: int(value) if float(value).is_integer() else value
            for name, value in zip(names, values, strict=True)
        }
    return {
        "per": period,
        "history from": _window_day(period, first),
        "windows": windows,
    }


def _window_day(period: str, index: int) -> str:
    """A window index as its first local day: `2026-12-07`, `week from 2026-12-07`."""
    start = window_start_day(period, index).isoformat()
    return start if period == "day" else f"{period} from {start}"


def _time(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


def _day(ordinal: int) -> str:
    return dt.date.fromordinal(ordinal).isoformat()


def _window(key: str, index: int) -> str | int:
    """`closed`: the local day checked (`checked`), or a period's first window not yet
    closed, as the day it starts; another key as stored."""
    if key == "checked":
        return _day(index)
    if key in ("day", "week", "month"):
        return _window_day(key, index)
    return index
