"""What a batch of the detector makes (`BatchResult`): tasks, dead letters, new states
and counts; and what changes it after the rules ran: tasks taken back when their event
failed or a tombstone erased their subscriber, cooldowns given back when dispatch drops
their task."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import get_args

from moments.cooldowns import holds_mark
from moments.models import InputEvent, ServiceTask
from moments.records import DeadLetter, RawRecord, SuppressReason
from moments.state import SubscriberState, mark_id
from rules.gating import Deferring, Suppressing
from rules.rule import state_tag

SHADOW_REASONS: Mapping[str, tuple[str, ...]] = {
    "suppressed": tuple(
        dict.fromkeys(
            SuppressReason(r).value
            for r in (SuppressReason.COOLDOWN, SuppressReason.EXPIRED, *get_args(Suppressing))
        )
    ),
    "deferred": get_args(Deferring),
}
"""Outcome -> the reasons a shadow judgement can be counted under besides `task`
(`moments_shadow_moments_total`): the engine's cooldown and expiry, then the gates'. A
shadow task stops before dispatch, so no dispatch reason; the runtime declares each at 0."""


@dataclass(slots=True)
class StateChange:
    """The new state of one subscriber (None: forget it) and where its changelog belongs."""

    state: SubscriberState | None
    partition: int


@dataclass(frozen=True, slots=True)
class CooldownMark:
    """Where a task started its rule's cooldown: the subscriber's `fired[tag]` set to `at`
    (the moment's event time) by the task `by` (`fired_by`, `mark_id`), and what both held
    before (None: nothing)."""

    subscriber: str
    tag: str
    at: int
    before: int | None
    by: str
    before_by: str | None


@dataclass(slots=True)
class BatchResult:
    tasks: list[ServiceTask] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    changes: dict[str, StateChange] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    """Records consumed (valid or not), by event type."""
    detected: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Moments fired, by (family, moment type)."""
    replayed: int = 0
    """Events skipped because this subscriber had applied them already."""
    replays: list[RawRecord] = field(default_factory=list)
    """Their records (the runtime leaves them out of the misplaced count)."""
    misplaced: Counter[str] = field(default_factory=Counter)
    """Records on another partition than their key's, by event type, less the replays
    (set by the runtime, `moments.partitioning`)."""
    suppressed: Counter[tuple[str, SuppressReason]] = field(default_factory=Counter)
    """Moments that made no task, by (moment type, reason): `cooldown`, `expired`, a gate's
    reason (quiet hours past the task's life, opt-out, an open complaint...) and
    `forgotten` (a tombstone later in the batch)."""
    unknown_opt_outs: Counter[str] = field(default_factory=Counter)
    """Opt-out channels of applied profile updates that moments does not send on (`email`),
    ignored: by name, for the runtime's count and its one log line per name."""
    out_of_order: Counter[str] = field(default_factory=Counter)
    """Events applied though older than their subscriber's newest of the same topic and not
    among its recent ids, by event type: late events, or events re-sent after the ring
    forgot them (applied twice); see `SubscriberState.applied`."""
    late: int = 0
    """Events older than the subscriber's latest of their topic minus the lateness (not applied)."""
    future: int = 0
    """Events dated further ahead of the wall clock than refusals.MAX_FUTURE (not applied)."""
    watermarks: dict[int, int] = field(default_factory=dict)
    """Partition -> latest event time seen in this batch (epoch seconds)."""
    deferred: Counter[str] = field(default_factory=Counter)
    """Tasks do-not-disturb moved later, by reason."""
    facts: list[InputEvent] = field(default_factory=list)
    """Top-ups, roaming and profile events: what dispatch re-checks a waiting task against
    (a top-up cancels a low-balance task, coming home a roaming welcome)."""
    forgotten: list[str] = field(default_factory=list)
    """Subscribers a profile tombstone erased: the dispatch stores forget them too."""
    erased_at: dict[str, float] = field(default_factory=dict)
    """Subscriber -> when this batch's tombstone erased them (`erasure_time`): a
    later batch passes it back as `erased` when the stores keep no `forgotten` mark (the
    pipeline)."""
    erased_events: Counter[str] = field(default_factory=Counter)
    """Events of erased subscribers dated at or before their erasure and read after it (a
    topic read behind the profile topic), by event type: dropped, not dead-lettered (the
    payload is the erased subscriber's data)."""
    deletions: Counter[str] = field(default_factory=Counter)
    """Profile deletions applied, by their form on the wire (`decoding.deletion_form`):
    `tombstone`, or `json_null` and `empty`, which compaction does not remove."""
    damaged: dict[str, str] = field(default_factory=dict)
    """Subscriber -> what of their stored record was reset, damaged (`UNREADABLE`: all of
    it, or the fields `SubscriberState.mend` reset): the runtime counts and logs each."""
    damaged_at: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    """Subscriber -> the event that met their damaged record (topic, partition, offset: the
    subscriber's first in the batch), for the log to name; none for a window sweep's."""
    failures: list[Exception] = field(default_factory=list)
    """What failed while applying an event (a fault of the detector or the rules, not of
    the event): each such event is a dead letter `detector_error`; the runtime logs these
    with their traceback."""
    shadow: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Shadow rules' moments by (rule id, outcome, reason): outcome `task` (one would be
    made now), `deferred` or `suppressed`, as the gates decided; none made a task."""
    cooldowns: dict[str, CooldownMark] = field(default_factory=dict)
    """Task id -> the cooldown mark it set, in the order made: what `give_back_cooldowns`
    puts back when dispatch drops the task."""
    rejudged: set[str] = field(default_factory=set)
    """Ids of the tasks made by a moment judged again (a silence on its next day, a
    contract's end on each day of its lead: `emit`'s `again`), counted at its first
    judgement: dispatch counts one only when it is new to the ledger (its first task,
    once a cooldown or an opt-out is over), not as a `dedup` suppression every day."""
    task_ids: set[str] = field(default_factory=set)
    """Ids of `tasks`: a moment judged again whose task this batch made already (its
    first judgement, or an earlier re-judgement: a look and a profile update read in one
    batch, the closes of a catch-up) is not made twice (`emit`)."""
    returns: Counter[str] = field(default_factory=Counter)
    """Cooldown returns read (moments.cooldowns) by result (`moments.enums.ReturnResult`'s
    values)."""


def unmake(result: BatchResult, made: int) -> None:
    """Take back the tasks from index `made` on (their event or sweep failed), and their
    cooldown marks (the state they were set in is rebuilt, or not written)."""
    for task in result.tasks[made:]:
        result.cooldowns.pop(task.task_id, None)
        result.rejudged.discard(task.task_id)
    del result.tasks[made:]
    result.task_ids = {t.task_id for t in result.tasks}


def give_back_cooldowns(result: BatchResult, dropped: Collection[str]) -> int:
    """Put back the cooldown marks of the batch's tasks that dispatch dropped (`dropped`:
    task ids; capacity, a contact or frequency cap, expired...), so that the
    subscriber's next moment of the rule can make a task: a dropped task never reached
    the customer (61 subscribers who complained again got no call for 30 days). Called
    before the states are written, so the changelog, the backtest and a replay agree.

    A mark is put back only while it is still that task's (its time and `fired_by`),
    latest first, so that of two tasks of a rule in one batch either, or both, can be
    dropped. Returns how many were put back."""
    given = 0
    if not dropped:
        return given
    for task_id, mark in reversed(result.cooldowns.items()):
        if task_id not in dropped:
            continue
        change = result.changes.get(mark.subscriber)
        state = change.state if change is not None else None
        if state is None or not holds_mark(state, mark.tag, mark.at, mark.by):
            continue  # forgotten since, or a later task's mark
        if mark.before is None:
            del state.fired[mark.tag]
        else:
            state.fired[mark.tag] = mark.before
        if mark.before_by is None:
            state.fired_by.pop(mark.tag, None)
        else:
            state.fired_by[mark.tag] = mark.before_by
        given += 1
    return given


def take_over_cooldowns(result: BatchResult, taken: Collection[str]) -> int:
    """Move the cooldown marks of the batch's tasks made again that took their first
    task's dropped entry over (`taken`: dispatch's `TAKEN_OVER`, not dropped since) to
    their own time. Called before the states are written, after `give_back_cooldowns`.

    A task made again leaves its rule's mark where its first task set it (`emit`: the
    first one may still wait, and the mark spaces contacts, not judgements). One that took
    a dropped entry over is a contact of its own, though: and the first task's return
    (moments.cooldowns), sent when it was dropped, still named the mark when it was read
    after the look that made the task again (a sweep holding the partition while the
    release timer dropped the first task at its expiry): it removed it, and the task sent
    in its place held no cooldown. Moved, the mark is this task's (its time, the same
    `fired_by`), which that return no longer names, and this task's own return, if it is
    dropped in its turn, does. A mark that is no longer the task's (given back already, or
    a later task's) is left alone; returns how many moved."""
    moved = 0
    if not taken:
        return moved
    for task in result.tasks:
        if task.task_id not in taken or task.task_id in result.cooldowns:
            continue  # its making set the mark already (none was held: given back)
        change = result.changes.get(task.subscriber_id)
        state = change.state if change is not None else None
        tag = state_tag(task.moment.rule_id)
        by = mark_id(task.task_id)
        if state is None or state.fired_by.get(tag) != by:
            continue
        at = int(task.triggered_at.timestamp())
        before = state.fired.get(tag)
        state.fired[tag] = at
        result.cooldowns[task.task_id] = CooldownMark(task.subscriber_id, tag, at, before, by, by)
        moved += 1
    return moved


def erasure_time(
    record: RawRecord,
    now: dt.datetime | None,
    marks: Mapping[int, int],
    gone: SubscriberState | None,
) -> float:
    """When a tombstone erased its subscriber: its own time, the record's Kafka timestamp
    (the CRM's CreateTime, or the broker's LogAppendTime), but no later than the worker's
    clock (a producer's clock ahead must not swallow a new subscriber's events); without
    one, when the worker read it. In a replay with no timestamp: the latest event time
    read by then (the batch's, or the erased record's)."""
    stamp = record.timestamp_ms / 1000 if record.timestamp_ms and record.timestamp_ms > 0 else None
    if now is not None:
        return min(stamp, now.timestamp()) if stamp is not None else now.timestamp()
    if stamp is not None:
        return stamp
    return float(max(max(marks.values(), default=0), gone.watermark if gone is not None else 0))


def forget(erased: Mapping[str, tuple[int, int]], result: BatchResult) -> None:
    """Tombstones also take back what the batch made of those subscribers' events before
    them (`erased`: subscriber -> tasks and facts the batch had at its last tombstone):
    those tasks (counted as suppressed, `forgotten`) and facts. Events after a tombstone
    are new, and stay."""
    kept: list[ServiceTask] = []
    for n, task in enumerate(result.tasks):
        mark = erased.get(task.subscriber_id)
        if mark is not None and n < mark[0]:
            result.suppressed[(task.moment.type, SuppressReason.FORGOTTEN)] += 1
            result.cooldowns.pop(task.task_id, None)
        else:
            kept.append(task)
    result.tasks = kept
    result.facts = [
        e
        for n, e in enumerate(result.facts)
        if (mark := erased.get(e.subscriber_id)) is None or n >= mark[1]
    ]
    result.forgotten.extend(erased)


def made_after(result: BatchResult) -> dict[str, float]:
    """Per subscriber a tombstone of the batch erased (`forgotten`), the earliest
    `created_at` (epoch seconds) of its tasks the batch kept: made after the tombstone
    (`forget` took back those before), the number's new holder's. Their erasure is marked
    before it (`sinks.subscribers.Subscribers.forget`)."""
    gone = set(result.forgotten)
    out: dict[str, float] = {}
    for task in result.tasks:
        if task.subscriber_id in gone:
            at = task.created_at.timestamp()
            out[task.subscriber_id] = min(at, out.get(task.subscriber_id, at))
    return out


def mend_unwritable(result: BatchResult) -> None:
    """Mend each changed record that cannot be written (`SubscriberState.to_json` raised on
    a damaged field no rule read: a ring of recent ids of no digests, profile times of no
    numbers), noting it in `result.damaged`; what is sound stays as it is. Called only
    where writing the batch's records failed: a record that fails once mended raises."""
    for sub, change in result.changes.items():
        state = change.state
        if state is None:
            continue
        try:
            state.to_json()
        except Exception:
            reset = state.mend()
            if not reset:
                raise
            noted = result.damaged.get(sub)
            result.damaged[sub] = ", ".join([noted, *reset] if noted else reset)
            state.to_json()  # written now, or the fault is not the record's: raised
