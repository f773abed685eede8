"""The detector: a batch of raw records in, tasks, dead letters and new state out.

Pure and synchronous: no broker, no Redis, no Faust. The Faust agent, the
in-memory pipeline and the tests all drive this same code.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moments.batchresult import BatchResult, StateChange, erasure_time, forget, unmake
from moments.cooldowns import CooldownReturn, MalformedReturnError, give_back_returned
from moments.decoding import SUBSCRIBER_KEY, TOMBSTONE, decode, deletion_form
from moments.enums import ReturnResult
from moments.models import EventType, InputEvent, ProfileEvent, unknown_opt_outs
from moments.records import DeadLetter, RawRecord
from moments.refusals import LATENESS, allowed_ahead, failed, stale_profile, too_far_ahead, too_late
from moments.risk import note_hotline_call
from moments.sources import SOURCE_CODES
from moments.state import (
    ERASED_KEPT_S,
    FRAME_DICTIONARY,
    UNREADABLE,
    DamagedRecordError,
    SubscriberState,
    event_digest,
)
from moments.statezip import NewerRecordError
from moments.sweep import CHECKED_DAY, close_windows, special_days
from moments.taskmaking import emit
from moments.tracking import profile_update, track
from moments.zones import subscriber_zone
from rules.base import EvalContext
from rules.catalog import RuleSet
from rules.windows import local_date, window_index

StateLoader = Callable[[str], SubscriberState | None]

COMPETITOR_HOTLINE = "competitor_hotline_call"
"""The moment type whose live rules say what a call to a competitor's hotline is: each
event that fires one counts as a call (moments.risk.note_hotline_call), whether or not
it makes a task."""


@dataclass(slots=True)
class _Rebuilds:
    """What putting states back after failures in a batch needs; made at its first."""

    records: Sequence[RawRecord]
    positions: dict[bytes | None, list[int]] = field(default_factory=dict)
    """Each record key's indexes in the batch."""
    last: dict[str, tuple[int, bytes, tuple[int, ...] | None]] = field(default_factory=dict)
    """Subscriber -> the index of their last failed record and their state once its
    offset was noted, as JSON and its stamp: the JSON keeps no "nothing held" (a stamp of
    None reads back as `()`, unstamped), and a new subscriber's record rebuilt from it went
    out stamped as over a record, not as begun (moments.fence)."""

    def __post_init__(self) -> None:
        for n, record in enumerate(self.records):
            self.positions.setdefault(record.key, []).append(n)

    def theirs(self, sub: str, before: int) -> tuple[list[RawRecord], StateLoader | None]:
        """The subscriber's records since their last failure up to index `before`, and
        their state after that failure (None: none in this batch), each call a copy."""
        last = self.last.get(sub)
        start = 0 if last is None else last[0] + 1
        mine = self.positions.get(sub.encode(), [])
        found = mine[bisect_left(mine, start) : bisect_left(mine, before)]
        return [self.records[n] for n in found], None if last is None else _reader(*last[1:])


def _reader(json: bytes, stamp: tuple[int, ...] | None) -> StateLoader:
    """A loader giving a fresh copy of a state noted in a batch, its stamp as it was."""

    def read(_: str) -> SubscriberState:
        state = SubscriberState.from_bytes(json)
        state.stamp = stamp
        return state

    return read


class _DamagedRecordFoundError(Exception):
    """An event failed on a damaged record (`_unsound`): `Detector.process` mends it."""


def _unsound(sub: str, load: StateLoader) -> bool:
    """Whether the subscriber's record as stored is damaged (`SubscriberState.faults`)."""
    try:
        saved = load(sub)
    except DamagedRecordError:
        return True
    return saved is not None and bool(saved.faults())


def _mended(
    records: Sequence[RawRecord], load: StateLoader
) -> dict[str, tuple[bytes, str, RawRecord]]:
    """Subscriber -> (their record mended, as JSON; what was reset; their first record),
    for each subscriber keyed in `records` whose stored record is damaged: the fields
    `SubscriberState.mend` resets, or `UNREADABLE`, begun afresh."""
    mended: dict[str, tuple[bytes, str, RawRecord]] = {}
    checked: set[bytes] = set()
    for record in records:
        key = record.key
        if not key or key in checked:
            continue
        checked.add(key)
        sub = key.decode("utf-8", "replace")
        misnamed = []
        try:
            saved = load(sub)
        except DamagedRecordError as exc:
            saved = exc.record  # read whole, its frame's dictionary id damaged
            if saved is None:
                mended[sub] = (SubscriberState().to_json(), UNREADABLE, record)
                continue
            misnamed = [FRAME_DICTIONARY]
        if saved is not None and (reset := misnamed + saved.mend()):
            mended[sub] = (saved.to_json(), ", ".join(reset), record)
    return mended


class Detector:
    """Evaluates the rules over batches; holds no state of its own between batches."""

    live_from: dt.datetime | None = None
    """Moments dated before this make no task: every rule is a shadow rule for them
    (`MOMENTS_LIVE_FROM`, moments.livefrom); None: live from the start."""
    live_at: int = -(2**62)
    """`live_from` in epoch seconds, what each moment's event time is compared with."""
    kept: Container[str] | None = None
    """Ids of the tasks a ledger holds for good, whose copies it drops unseen (the
    pipeline's); a moment judged again does not build such a task again (`emit`). None
    (the stream, the backtest: their ledger's entries expire) builds every one."""

    def __init__(
        self,
        rules: RuleSet,
        topic_types: Mapping[str, EventType],
        lateness: dt.timedelta = LATENESS,
        returns_topic: str | None = None,
        live_from: dt.datetime | None = None,
    ) -> None:
        self.rules = rules
        self.topic_types = dict(topic_types)
        self.lateness = int(lateness.total_seconds())
        self.returns_topic = returns_topic
        """The topic of cooldown returns (moments.cooldowns), read with the events."""
        self.live_from = live_from
        self.live_at = int(live_from.timestamp()) if live_from is not None else -(2**62)

    def unrecorded(self, records: Sequence[RawRecord], has: Callable[[str], bool]) -> list[str]:
        """The subscribers keyed in `records` (input topics) that have no record (`has`
        says which do): only those can be erased subscribers whose events are read late,
        so only their erasures are looked up (`Subscribers.erasures`) for `process`."""
        keys = {r.key for r in records if r.key and r.topic != self.returns_topic}
        subs = (k.decode("utf-8", "replace") for k in keys if SUBSCRIBER_KEY.fullmatch(k))
        return [sub for sub in subs if not has(sub)]

    def swap_rules(self, rules: RuleSet) -> None:
        """Install new rules; the caller does it between batches."""
        self.rules = rules

    def cooled_rules(self) -> frozenset[str]:
        """The ids of the rules in force that have a cooldown: only their dropped tasks
        return one (moments.cooldowns)."""
        return frozenset(r.id for r in self.rules.rules if r.task.cooldown is not None)

    def zone_of(self, state: SubscriberState) -> dt.tzinfo:
        """The subscriber's zone: their profile's, else the rules' `gating.timezone`. Days,
        weeks and months, special days and quiet hours are all judged in it."""
        return subscriber_zone(state.profile.get("timezone"), self.rules.gating.zone)

    def process(
        self,
        records: Sequence[RawRecord],
        load: StateLoader,
        now: dt.datetime | None,
        erased: Mapping[str, float] | None = None,
    ) -> BatchResult:
        """`now` is the wall clock; None replays history with event time as the clock.

        `erased`: when the batch's subscribers that have no record were erased by a profile
        tombstone, if they were (the dispatch stores' `forgotten` mark: `Subscribers.erasures`).
        Their events dated at or before it are dropped (`erased_events`), and a record
        begun by a later one remembers it (`SubscriberState.erased`).

        A damaged record (bytes that hold none, or fields of shapes the detector never
        writes) made the whole batch fail, and the worker stop, at each read of it. Now,
        where the batch fails, the records of its subscribers are checked
        (`SubscriberState.faults`: only then, never a sound record on every read) and the
        damaged ones mended (the bad fields reset; one that cannot be read begun afresh);
        the batch is processed again on them, and says so (`BatchResult.damaged`). A
        record a newer version wrote (`NewerRecordError`) still fails the batch
        (docs/operations.md, "Rolling back")."""
        try:
            return self._process(records, load, now, erased)
        except NewerRecordError:
            raise
        except Exception:
            mended = _mended(records, load)
            if not mended:
                raise  # no record is damaged: the fault is the detector's

        def mended_load(sub: str) -> SubscriberState | None:
            found = mended.get(sub)
            return load(sub) if found is None else SubscriberState.from_bytes(found[0])

        result = self._process(records, mended_load, now, erased)
        for sub, (json, what, met) in mended.items():
            result.damaged[sub] = what
            result.damaged_at[sub] = (met.topic, met.partition, met.offset)
            if sub not in result.changes:  # written back mended: it is reset once
                result.changes[sub] = StateChange(SubscriberState.from_bytes(json), met.partition)
        return result

    def _process(
        self,
        records: Sequence[RawRecord],
        load: StateLoader,
        now: dt.datetime | None,
        erased: Mapping[str, float] | None,
    ) -> BatchResult:
        result = BatchResult()
        known_erased = erased or {}
        states: dict[str, SubscriberState] = {}
        changes = result.changes
        ctx = EvalContext(now=now)
        ahead = allowed_ahead(self.lateness)
        horizon = int(now.timestamp()) + ahead if now is not None else 2**62
        marks = result.watermarks
        topic_types = self.topic_types
        lateness = self.lateness
        counts: dict[EventType, int] = {}
        erasures: dict[str, tuple[int, int]] = {}  # tombstoned -> tasks, facts made by then
        rebuilds: _Rebuilds | None = None
        returns_topic = self.returns_topic
        for index, record in enumerate(records):
            if record.topic == returns_topic:
                self._returned(record, states, load, result)
                continue
            event_type = topic_types[record.topic]
            counts[event_type] = counts.get(event_type, 0) + 1
            decoded = decode(record, event_type)
            if isinstance(decoded, DeadLetter):
                result.dead_letters.append(decoded)
                continue
            if decoded is None:  # profile deletion: forget the subscriber, state included
                result.deletions[deletion_form(record.value) or TOMBSTONE] += 1
                sub = (record.key or b"").decode("utf-8", "replace")
                gone = states.pop(sub, None)
                if gone is None and now is None and sub not in changes:
                    gone = load(sub)  # a replay may need its latest event time
                changes[sub] = StateChange(None, record.partition)
                erasures[sub] = (len(result.tasks), len(result.facts))
                result.erased_at[sub] = erasure_time(record, now, marks, gone)
                continue
            sub = decoded.subscriber_id
            partition = record.partition
            at = int(decoded.occurred_at.timestamp())
            state = states.get(sub)
            if state is None:
                loaded = None if sub in changes else load(sub)
                if loaded is None:
                    # No record: erased earlier in this batch, or before (the stores' mark)?
                    when = result.erased_at.get(sub) if sub in changes else known_erased.get(sub)
                    mark = int(when) if when is not None else 0
                    if mark and at <= mark:
                        result.erased_events[event_type.value] += 1
                        continue
                    loaded = SubscriberState(erased=mark)
                state = states[sub] = loaded
                changes[sub] = StateChange(state, partition)
            elif changes[sub].partition != partition:
                changes[sub] = StateChange(state, partition)
            if state.erased and state.erased_by(at):
                result.erased_events[event_type.value] += 1
                continue
            source = SOURCE_CODES[event_type]
            offset = record.offset
            digest = event_digest(decoded.event_id)
            if state.is_replay(source, partition, offset, digest):
                result.replayed += 1
                result.replays.append(record)
                continue
            made = len(result.tasks), len(result.facts)
            failed_here = False
            behind = False
            looked: dict[str, Any] | None = None
            try:
                latest = state.seen.get(source, at)  # this topic's latest event applied
                behind = at < latest
                refused: DeadLetter | None = None
                if at > horizon:
                    result.future += 1
                    refused = too_far_ahead(record, event_type, at, horizon - ahead, ahead)
                elif isinstance(decoded, ProfileEvent):
                    if state.special_day and self.rules.special.rules:
                        looked = dict(state.profile)  # as the day's last look read it
                    update = profile_update(state, decoded, at)
                    if update is None:
                        result.late += 1
                        refused = stale_profile(record, at, state)
                    else:
                        decoded = update  # without the fields newer updates set
                elif at < latest - lateness:
                    # Late against its own topic only: topics are read side by side, and
                    # one far ahead of another (a backlog read after an outage) is no
                    # lateness of the other's events (it made 7% of a soak's events late).
                    result.late += 1
                    refused = too_late(record, event_type, at, state, lateness)
                if refused is None:
                    if event_type is EventType.PROFILE and at < state.watermark - lateness:
                        # A profile that old is applied, but its rules' time is past; dispatch
                        # still learns of it (a task held for a suspended line is released
                        # when the line is active again).
                        result.facts.append(decoded)
                    else:
                        if at > marks.get(partition, 0):
                            marks[partition] = at
                        self.apply(sub, decoded, event_type, state, at, ctx, result, looked)
            except Exception as exc:  # one record must not stop the stream
                if _unsound(sub, load):  # the record's fault, not the rules': `process`
                    raise _DamagedRecordFoundError(sub) from exc
                unmake(result, made[0])
                del result.facts[made[1] :]
                result.failures.append(exc)
                refused = failed(record, event_type, exc)
                # Half-applied (series folded, times moved): its replay once fixed would
                # count it twice. The state goes back to what it was before the event.
                rebuilds = rebuilds or _Rebuilds(records)
                failed_here = True
                state = states[sub] = self._state_before(
                    sub, index, rebuilds, load, now, result, erased
                )
                changes[sub] = StateChange(state, partition)
            # An event refused for its time (or failed) notes its offset, not its id: sent
            # back once due (`deadletter replay`) or again corrected, it is applied then.
            if refused is None and isinstance(decoded, ProfileEvent):
                result.unknown_opt_outs.update(unknown_opt_outs(decoded))
            state.applied(source, partition, offset, None if refused else digest)
            if behind and refused is None:
                result.out_of_order[str(event_type)] += 1
            if refused is not None:
                result.dead_letters.append(refused)
                if failed_here and rebuilds is not None:
                    # with its offset noted
                    rebuilds.last[sub] = (index, state.to_json(), state.stamp)
        for event_type, n in counts.items():
            result.events[str(event_type)] += n
        if erasures:
            forget(erasures, result)
        return result

    def _returned(
        self,
        record: RawRecord,
        states: dict[str, SubscriberState],
        load: StateLoader,
        result: BatchResult,
    ) -> None:
        """Apply a cooldown return (`give_back_returned`) in its place among the
        subscriber's events. Its record is written only when the mark was removed; a
        subscriber with no record (forgotten, or never seen here) gets none."""
        try:
            returned = CooldownReturn.from_bytes(record.value)
        except MalformedReturnError:
            result.returns[ReturnResult.MALFORMED.value] += 1
            return
        sub = returned.subscriber_id
        changes = result.changes
        change = changes.get(sub)
        state = change.state if change is not None else load(sub)
        if state is None or not give_back_returned(state, returned):
            result.returns[ReturnResult.STALE.value] += 1
            return
        result.returns[ReturnResult.GIVEN_BACK.value] += 1
        if change is None:
            states[sub] = state
            changes[sub] = StateChange(state, record.partition)

    def _state_before(
        self,
        sub: str,
        index: int,
        rebuilds: _Rebuilds,
        load: StateLoader,
        now: dt.datetime | None,
        result: BatchResult,
        erased: Mapping[str, float] | None,
    ) -> SubscriberState:
        """The subscriber's state as the batch's records before `index` (which failed) left
        it: their records processed again, from the state as saved or as their last failure
        in the batch left it (their tasks were made already; these are dropped). Each
        failure processes again only the records since the one before, so a subscriber
        whose every event fails costs the batch twice over, not its square.

        `load` gives the saved state again when called a second time in a batch (the stores'
        cache lends a record to one batch); a store that hands out its live objects (the
        backtest's) gives the state as changed, the failed event's part included, and the
        earlier records are then replays that change nothing."""
        theirs, rebuilt = rebuilds.theirs(sub, index)
        base: StateLoader = load if rebuilt is None else rebuilt
        again = self.process(theirs, base, now, erased)
        # An earlier record that fails only when applied again (a fault that depends on
        # more than the event) is lost from the state: it is said with the batch's faults.
        result.failures.extend(again.failures)
        change = again.changes.get(sub)
        if change is not None:
            state = change.state if change.state is not None else SubscriberState()
        else:
            state = base(sub) or SubscriberState()
        return state

    def apply(
        self,
        sub: str,
        event: InputEvent,
        event_type: EventType,
        state: SubscriberState,
        at: int,
        ctx: EvalContext,
        result: BatchResult,
        looked: Mapping[str, Any] | None = None,
    ) -> None:
        """Fold one new event into the state and evaluate the rules it can fire.
        `looked`: a profile update's profile before it (None: not kept), what the special
        days' last look read (`moments.sweep.special_days`)."""
        track(event, state, at, self.rules.gating.open_complaint_lapse, self.lateness)
        if event_type is not EventType.USAGE and event_type is not EventType.COMPLAINT:
            result.facts.append(event)
        tz = self.zone_of(state)
        local_day = local_date(at, tz)
        rules = self.rules
        if rules.by_period and state.closed.get(CHECKED_DAY) != local_day.toordinal():
            close_windows(self, sub, state, at, tz, ctx, result, local_day, active=event_type)
        source = SOURCE_CODES[event_type]
        if at > state.seen.get(source, 0) and event_type is not EventType.PROFILE:
            state.seen[source] = at  # a profile's: `profile_update`, when it carries a field
        if at > state.watermark:
            state.watermark = at
            if state.erased and at - state.erased > ERASED_KEPT_S:
                state.erased = 0  # no event that old comes any more
        groups = rules.series_routes[event_type].candidates(event)
        indexes: dict[str, int] = {}
        rings = state.series
        for when, members in groups:
            if not when(event):
                continue
            for series in members:
                amount = series.value_of(event)
                if amount is None:
                    continue
                # `in`, not `get`: no call a series an event (~7 calls an event)
                period, tag = series.period, series.tag
                if period in indexes:
                    index = indexes[period]
                else:
                    index = indexes[period] = window_index(period, local_day)
                ring = rings[tag] if tag in rings else None  # noqa: SIM401  # no call, as above
                ring = series.fold(ring, index, amount)
                if ring is not None:
                    rings[tag] = ring
        for series in rules.history_series:
            # Read as "fewer than": the subscriber's history in it begins with any event,
            # so that one with none in it is judged once known long enough. Beside the
            # ring, which a baseline reads from the series' first event on.
            if series.tag not in rings:
                if series.begun_tag not in rings:
                    rings[series.begun_tag] = series.begin(window_index(series.period, local_day))
            elif series.begun_tag in rings:
                series.settle(rings)
        counted = False
        for rule in rules.routes[event_type].candidates(event):
            if not rule.when(event):
                continue
            fired = rule.check(event, state, at, tz)
            if fired is not None:
                if not counted and rule.tag in rules.tags_by_moment_type.get(
                    COMPETITOR_HOTLINE, ()
                ):  # before the task is scored: this call is one of the last 30 days'
                    counted = True
                    note_hotline_call(rings, local_day.toordinal())
                emit(self, rule, fired, sub, event, state, at, ctx, result)
        if event_type is EventType.PROFILE:
            # A birthday or contract end set later in the day still counts that day.
            special_days(self, sub, state, at, tz, ctx, result, profile_changed=True, looked=looked)
