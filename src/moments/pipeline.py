"""`run_pipeline`: the streaming engine over an in-memory list, with no broker and no Redis.

The same `Detector` the Faust agent drives, with a dict for state and a set for the
dedup ledger: for tests and `moments rules test` (the backtest drives the `Detector`
and the stream's dispatch sink itself, see moments.backtest).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from moments.engine import Detector
from moments.eventclock import SWEEP_BUCKET_S
from moments.exceptions import ConfigError
from moments.models import EventType, ServiceTask
from moments.records import DeadLetter, RawRecord
from moments.runon import run_on_refusal
from moments.store import DictStateStore
from moments.sweep import next_sweep, sweep
from rules.catalog import RuleSet

if TYPE_CHECKING:
    from moments.backtest_input import Cut

Input = tuple[EventType, dict[str, object] | bytes | None]
"""An event type and its value: a dict (sent as JSON), raw bytes, or None (a tombstone)."""


@dataclass
class PipelineResult:
    tasks: list[ServiceTask] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    unreadable_count: int = 0
    """Lines of the files that were no JSON object (`moments rules test`): among the
    dead letters, as the stream would refuse them."""
    unreadable: list[str] = field(default_factory=list)
    """The first of them, as `file:line`."""
    untyped_count: int = 0
    """JSON objects of the files naming no event type (and none given): left out."""
    untyped: list[str] = field(default_factory=list)
    """The first of them, as `file:line` (`backtest_input.untyped_lines`)."""
    cuts: list[Cut] = field(default_factory=list)
    """Files whose gzip data ended early: read up to the cut (`moments rules test`)."""
    out_of_order: list[str] = field(default_factory=list)
    """A warning per file not in event-time order (`backtest_input.order_said`)."""
    first_event: float = 0.0
    """The first event time of the files read, where event time began
    (`rulecheck.check_rules`; 0: none)."""
    last_event: float = 0.0
    """The latest event time of the files read (`rulecheck.check_rules`; 0: none)."""
    events_read: int = 0
    events_refused: int = 0
    """The events of the `--events` file run through the rules, and how many of them were
    refused (`rulecheck.check_rules`)."""
    refused_at: list[str] = field(default_factory=list)
    """`file:line` of each dead letter, in their order (`rulecheck.check_rules`; empty for
    records given directly, named by their count per event type)."""
    profiles_read: int = 0
    """The events of the `--profiles` snapshot, read before them (`rulecheck.check_rules`)."""
    store: DictStateStore = field(default_factory=DictStateStore)
    watermark: int = 0
    """Latest event time seen (epoch seconds): where a later `until` sweep starts."""
    offsets: dict[str, int] = field(default_factory=dict)
    """Next offset per topic, so a continued run reads on rather than replaying."""
    shadow: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Shadow rules' moments by (rule id, outcome, reason), as `BatchResult.shadow`."""
    suppressed: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Live rules' moments the gates dropped, by (moment type, reason)."""
    detected: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Live rules' moments that fired, before gating, by (family, moment type): what
    `moments_detected_total` counts."""
    late: int = 0
    future: int = 0
    """Events not applied: older than the lateness allows, or dated in the future."""
    erased: dict[str, float] = field(default_factory=dict)
    """Subscriber -> when a tombstone erased them: the dispatch stores' `forgotten` mark
    of the stream, so that their events dated before it and read later are dropped."""
    erased_events: Counter[str] = field(default_factory=Counter)
    """Such events, by event type (`BatchResult.erased_events`)."""


def to_records(
    events: Iterable[Input], key: str | None = None, offsets: dict[str, int] | None = None
) -> list[RawRecord]:
    """Records as a producer keyed by subscriber id would write them (one partition each).

    `offsets` (next offset per topic) is read and advanced, to continue a topic."""
    records: list[RawRecord] = []
    offsets = {} if offsets is None else offsets
    for event_type, value in events:
        if isinstance(value, dict):
            raw: bytes | None = orjson.dumps(value)
            sub = key if key is not None else str(value.get("subscriber_id", ""))
        else:
            raw, sub = value, key or ""
        topic = event_type.value
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        records.append(RawRecord(topic, 0, offset, sub.encode() if sub else None, raw))
    return records


def run_pipeline(
    events: Iterable[Input] | Iterable[RawRecord],
    rules: RuleSet,
    now: dt.datetime | None = None,
    batch_size: int = 5000,
    result: PipelineResult | None = None,
    until: dt.datetime | None = None,
    live_from: dt.datetime | None = None,
    begins: float | None = None,
    progress: Callable[[int], None] | None = None,
    sweeping: Callable[[int], None] | None = None,
) -> PipelineResult:
    """Run events through the detector in batches; tasks deduplicated by id, as on the stream.

    `now` is the wall clock for created_at and expiry; None (the default) replays with
    event time as the clock, as if each event were read when it happened.
    Pass the `result` of an earlier run to continue with its state and ledger. `until`
    lets event time run on to that instant after the last event (as the stream's
    watermark does), closing windows for subscribers who went silent. Moments dated before
    `live_from` make no task (`MOMENTS_LIVE_FROM`): they are counted in `shadow`.
    `begins` (epoch seconds): where event time begins; records dated before it (the
    `--profiles` snapshot, each profile dated when it last changed) are applied in its hour,
    as the backtest applies them (`backtest_input.history`), not swept from their dates.
    `progress` is called after each batch with the number of records done so far;
    `sweeping`, once they are all done, with the event time (epoch seconds) each sweep of
    the run on to `until` reached: a far `until` sweeps long after the last record."""
    items: list[Input | RawRecord] = list(events)
    out = result if result is not None else PipelineResult()
    records = [r for r in items if isinstance(r, RawRecord)]
    if len(records) != len(items):
        records = to_records((i for i in items if not isinstance(i, RawRecord)), None, out.offsets)
    detector = Detector(rules, {t.value: t for t in EventType}, live_from=live_from)
    seen = {t.task_id for t in out.tasks}
    detector.kept = seen  # `_collect` drops every later copy of these

    def sweep_to(mark: int) -> float:
        """Sweep every record to `mark`; the next time a record is due (inf: never)."""
        states = [(sub, out.store.load(sub), 0) for sub in list(out.store.data)]
        live = [(sub, st, p) for sub, st, p in states if st is not None]
        swept = sweep(detector, live, _constant(mark), now, out.store.reread)
        out.shadow.update(swept.shadow)
        out.suppressed.update(swept.suppressed)
        out.detected.update(swept.detected)
        _collect(out, swept.tasks, seen, swept.rejudged)
        out.store.save(swept.changes)
        # A record mended and swept again is the store's copy (`sweep`), not the one loaded.
        changes = swept.changes
        after = ((changes[s].state or st) if s in changes else st for s, st, _ in live)
        return min((next_sweep(detector, st, mark) for st in after), default=math.inf)

    def sweep_hours(first: int, last: int, told: Callable[[int], None] | None = None) -> None:
        """The sweeps at the start of each hour from `first` to `last` (hour numbers),
        those at which a record is due (`moments.sweep.next_sweep`; at the others a sweep
        changes nothing, so they are skipped); `told` the time of each."""
        if not rules.by_period and not rules.special.rules:
            return
        hour = first
        while hour <= last:
            due = sweep_to(hour * SWEEP_BUCKET_S)
            if told is not None:
                told(hour * SWEEP_BUCKET_S)
            hour = max(hour + 1, math.ceil(due / SWEEP_BUCKET_S)) if due < math.inf else last + 1

    # As on the stream, each hour of event time begins with a sweep that closes the
    # windows of silent subscribers and looks at special days (an absence, a birthday at
    # 09:00). It runs before any event of that hour (or a later one) is applied: a sweep
    # run after the first event of a new hour saw that event (a 15:00 top-up counted in
    # the 09:00 look when nothing came between) and was dated at it, so what `rules test`
    # found depended on other subscribers' events.
    swept_bucket = out.watermark // SWEEP_BUCKET_S if out.watermark else -1
    first = int(begins) // SWEEP_BUCKET_S if begins else -1
    done = 0
    for hour, batch_records in _hourly_batches(records, batch_size, first):
        if hour > swept_bucket:
            if swept_bucket >= 0:
                sweep_hours(swept_bucket + 1, hour)
            swept_bucket = hour
        batch = detector.process(batch_records, out.store.load, now, out.erased)
        out.erased.update(batch.erased_at)
        out.erased_events.update(batch.erased_events)
        out.dead_letters.extend(batch.dead_letters)
        out.shadow.update(batch.shadow)
        out.suppressed.update(batch.suppressed)
        out.detected.update(batch.detected)
        out.late += batch.late
        out.future += batch.future
        _collect(out, batch.tasks, seen, batch.rejudged)
        out.store.save(batch.changes)
        out.watermark = max(out.watermark, *batch.watermarks.values(), 0)
        done += len(batch_records)
        if progress is not None:
            progress(done)
    if until is not None:
        if out.watermark and (
            said := run_on_refusal(rules, out.watermark, until.timestamp(), zone=rules.gating.zone)
        ):
            raise ConfigError(said)
        # As the stream's timer does: sweep every hour of event time up to `until` (those
        # at which a record is due), then `until` itself. The whole way, as the backtest's
        # `--to` runs on: only the last 120 days were swept, so a birthday or a silence
        # due before them made no task.
        end = int(until.timestamp())
        if end > out.watermark:
            sweep_hours(out.watermark // SWEEP_BUCKET_S + 1, (end - 1) // SWEEP_BUCKET_S, sweeping)
        sweep_to(end)
        out.watermark = max(out.watermark, end)
    return out


def _hourly_batches(
    records: list[RawRecord], size: int, first: int = -1
) -> Iterator[tuple[int, list[RawRecord]]]:
    """`records` in batches of at most `size`, a new one whenever a record's event time
    enters a later hour than the batch's first (the stream's batches span milliseconds),
    each with that hour (epoch hours; -1 when no record before it had a readable time).
    A record dated before hour `first` is taken as of that hour."""
    batch: list[RawRecord] = []
    bucket = -1
    for record in records:
        at = _event_time(record)
        hour = max(first, int(at) // SWEEP_BUCKET_S) if at is not None else bucket
        if batch and (len(batch) >= size or hour > bucket):
            yield bucket, batch
            batch = []
        if not batch:
            bucket = hour
        batch.append(record)
    if batch:
        yield bucket, batch


def _event_time(record: RawRecord) -> float | None:
    """`occurred_at` of a record's value, epoch seconds; None when it has none readable
    (the detector then says what is wrong)."""
    try:
        value = orjson.loads(record.value) if record.value else None
        return dt.datetime.fromisoformat(value["occurred_at"]).timestamp()  # type: ignore[index]
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        return None


def _constant(mark: int) -> Callable[[int], int | None]:
    return lambda _partition: mark


def _collect(
    out: PipelineResult, tasks: list[ServiceTask], seen: set[str], rejudged: set[str]
) -> None:
    """Keep the tasks not seen before; count the others as duplicates, as the ledger's
    `dedup`, except those of a moment judged again (`BatchResult.rejudged`)."""
    for task in tasks:
        if task.task_id in seen:
            if task.task_id not in rejudged:
                out.duplicates += 1
            continue
        seen.add(task.task_id)
        out.tasks.append(task)
