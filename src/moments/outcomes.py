"""Outcome feedback from `moments.task-outcomes`: metrics, `declined` suppression and
`unreachable` retries.

`handle_outcomes(records, sink)` is what the worker's outcomes agent calls per batch;
it returns only when everything it decided is durable in Redis (and retries are
parked), so committing the batch's offsets afterwards is safe. Per outcome:
- `moments_task_outcomes_total{moment_type,status}`: the moment type is read from the
  task's payload, or once it is gone from the ledger entry the sink wrote when it
  published the task (`unknown` once that is gone too); a status is counted once per
  task, however often it is read, and once when Redis noted it but its reply was lost
  (the retried call reads its own token back, `Ledger.first_outcome`);
- `declined`: the same rule is not sent to that subscriber for
  `outcomes.declined_suppress` (a Redis key read at dispatch);
- `unreachable`: a retry with a deterministic id (so a re-read outcome re-queues
  nothing new) waits `outcomes.unreachable_retry_after` from the outcome's
  `occurred_at` (from when it is read when that is earlier: the consumer's clock may be
  ahead; at once when an outcome read late has waited that long already; from the
  task's `deliver_after` when it is dated before the task went out) in the
  deferral queue, unless it would be later than the task's expiry or
  `outcomes.max_retries` is reached, or another outcome of the task says it is done
  with (`ENDS_RETRIES`: the customer was reached, or the task `failed`), read before
  it or in the same batch (outcomes come out of order); a retry already waiting when
  such an outcome comes is dropped by the dispatch sink when due (`reached`, `failed`).
  The retry of a task a newer version wrote (a channel or moment family this version
  does not know) is parked as that version wrote it, for one of its workers to send
  (`_park_newer`; docs/operations.md, "Rolling upgrades");
- `unreachable` and `failed`: the attempt reached no one, so the contact the task took
  goes back to the frequency cap and the contact cap (they count contacts really made;
  the unanswered call held its week's contact and its own retry was dropped
  `frequency_cap`), unless an outcome saying the customer was reached (`REACHED`) was
  read before or in the same batch: the contact was made. Giving back removes the task's
  own id from the subscriber's contacts, so an outcome read again gives back nothing more;
- a `REACHED` outcome read after one that gave the contact back: the contact was made
  after all, counted again at the time the task was sent (`_take_back`; once, and past
  the cap).

Both act on the task as the ledger keeps it (its payload, until a day after it
expires): its subscriber, never the one the outcome names, so a known task id and
another number cannot suppress a rule for someone else. An outcome whose subscriber
is not its task's is a dead letter (`subscriber_mismatch`), whatever its status; one
whose task's payload is gone is counted and changes nothing (one read before the task's
confirm, which keeps the payload, acts on the task as its pending entry holds it: sent,
its worker died before the confirm, a `declined` then wrote nothing, and the re-drive
sent it again), and one whose task id the
ledger never had (it keeps every id it claimed for `MOMENTS_LEDGER_TTL_SECONDS`, 400
days: a task is claimed before it is published) is a dead letter (`unknown_task`;
counted `moment_type="unknown"`, it told the consumer nothing), as is one for a moment
merged into another task (its entry `M<carrier>`: a `moment_id` or a `related` task id,
never published under its own id; its decline was taken and acted on nothing). A
`task_id` that is not one the detector makes (32 lowercase hex) is an `invalid_event`
dead letter, so what is logged of an outcome is a hex id, never its free text. An
outcome dated further ahead of the worker's clock than an input event may be
(`moments.refusals.allowed_ahead`) is a `future` dead letter: local time written with `Z`
queued a retry 10 hours out, and a `2099` outcome was counted.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from moments.decoding import (
    MAX_MESSAGE_BYTES,
    NULL_REQUIRED,
    REQUIRED,
    deletion_form,
    duplicate_message,
    duplicated_name,
    enveloped,
    key_problem,
    not_json_said,
    null_required,
    problem,
    too_large_said,
    whole_characters,
    with_names_note,
)
from moments.enums import ENDS_RETRIES, REACHED
from moments.models import (
    AGENT_NUMBER_MAX,
    Channel,
    Deferral,
    OutcomeStatus,
    ServiceTask,
    TaskOutcome,
)
from moments.models import (
    retry_id as retry_id,
)
from moments.records import (
    OUTCOME_EVENT_TYPE,
    DeadLetter,
    RawRecord,
    RejectReason,
    SuppressReason,
)
from moments.refusals import LATENESS, allowed_ahead, too_far_ahead
from sinks.contact import merge_tasks
from sinks.dispatch import TaskSink
from sinks.ledger import sent_meta_fields, state_of
from sinks.metrics import Dependency, NewerRead
from sinks.payloads import newer_retry, newer_task
from sinks.relevance import made_at
from sinks.retry import with_retry
from sinks.stores import ClaimCall, ContactBook, Parking

log = logging.getLogger(__name__)
EVENT_TYPE = OUTCOME_EVENT_TYPE
UNKNOWN = "unknown"
_ACTS = {
    OutcomeStatus.DECLINED: "decline",
    OutcomeStatus.UNREACHABLE: "retry",
    OutcomeStatus.FAILED: "contact given back",
}
REACHED_NO_ONE = frozenset({OutcomeStatus.UNREACHABLE, OutcomeStatus.FAILED})
"""Outcomes of an attempt that made no contact: the task's contact is given back."""


@dataclass
class OutcomeResult:
    handled: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)
    """Ids of the retry tasks queued for `unreachable` outcomes, each once; not one dispatch
    dropped as it was queued (`retries_dropped`, or `forgotten`)."""
    retries_dropped: dict[str, str] = field(default_factory=dict)
    """Retry id -> why dispatch dropped it at once (its subscriber's opt-out, its rule
    declined meanwhile...); one dropped `forgotten` (a tombstone applied meanwhile) counts
    its task in `forgotten` instead."""
    declined: int = 0
    """Tasks `declined`, each once (the batch may hold its outcome twice)."""
    forgotten: int = 0
    """Tasks made before a tombstone erased their subscriber, each once (the batch may
    hold several outcomes of one): their outcomes are counted, and act on nothing (no
    decline, retry or contact given back)."""
    not_retried: list[str] = field(default_factory=list)
    """Ids of the tasks answered `unreachable` that another outcome of theirs says were
    done with (`ENDS_RETRIES`: the customer was reached, or the task `failed`): no retry.
    Each once."""


OUTCOME_IDENTITY = ("task_id", "subscriber_id", "status", "occurred_at")
"""Which task, whose, what happened and when: an outcome naming one twice is refused
(`duplicate_key`), not read as its last one (a second `task_id` acted on another task; a
second `occurred_at` moved when an unreachable task's retry is due)."""
_QUOTED = tuple(f'"{name}"'.encode() for name in OUTCOME_IDENTITY)


def decode_outcome(record: RawRecord) -> TaskOutcome | DeadLetter:
    """The outcome, or a dead letter: empty, over `MAX_MESSAGE_BYTES` (not parsed),
    invalid (the reason names the fields, never their values), or not keyed by its
    subscriber id (`missing_key`, `key_mismatch`, as an input event: a subscriber's
    outcomes belong on one partition, in order)."""
    if record.value is None or deletion_form(record.value) is not None:
        return DeadLetter(
            record, EVENT_TYPE, RejectReason.EMPTY_VALUE, "EmptyValue", _empty_said(record.value)
        )
    if len(record.value) > MAX_MESSAGE_BYTES:
        return DeadLetter(
            record,
            EVENT_TYPE,
            RejectReason.TOO_LARGE,
            "TooLarge",
            too_large_said(record.value, "outcome"),
        )
    if (twice := duplicated_name(record.value, OUTCOME_IDENTITY, _QUOTED)) is not None:
        return DeadLetter(
            record,
            EVENT_TYPE,
            RejectReason.DUPLICATE_KEY,
            "DuplicateKey",
            duplicate_message(twice, "outcome"),
        )
    try:
        outcome = TaskOutcome.model_validate_json(record.value)
    except ValidationError as first:
        # A lone surrogate in free text (a note cut in the middle of an emoji) must not
        # cost the outcome: the schema takes it there; where a pattern refuses it (the
        # task id), its replacement is refused too.
        repaired = whole_characters(record.value)
        if repaired is None:
            return _invalid(record, first)
        try:
            outcome = TaskOutcome.model_validate_json(repaired)
        except ValidationError as exc:
            return _invalid(record, exc)
    return (
        keyed_by_task(record, outcome)
        or key_problem(record, outcome.subscriber_id, EVENT_TYPE)
        or with_note_cut(outcome)
    )


_TASK_ID = re.compile(rb"[0-9a-f]{32}")


def keyed_by_task(record: RawRecord, outcome: TaskOutcome) -> DeadLetter | None:
    """The dead letter of an outcome keyed by a task id (its own `task_id`, most likely:
    the task is what it reports on) instead of its subscriber id, or None. It was told
    only that its key "differs from subscriber_id" (`key_mismatch`); the reason stays, the
    message names the slip and the fix. A subscriber id is digits, never a task id."""
    key = record.key
    if key is None or _TASK_ID.fullmatch(key) is None:
        return None
    which = "its own task_id" if key.decode() == outcome.task_id else "a task_id"
    return DeadLetter(
        record,
        EVENT_TYPE,
        RejectReason.KEY_MISMATCH,
        "KeyMismatch",
        f"the record key is a task id, not the subscriber's: {which}; key outcomes by "
        "subscriber_id (the record key is the outcome's subscriber_id as UTF-8 text, the "
        "key its task had on moments.tasks), so that a subscriber's outcomes share a "
        'partition, in order (docs/consuming-tasks.md, "Reporting back")',
    )


def _empty_said(value: bytes | None) -> str:
    """What an outcome with nothing in it is told: the forms an input event's `empty_value`
    names (a null value, no bytes or whitespace, JSON null: a serializer given None), in its
    words, with the fix. It was "no value", the parser's "cut short?" or, for JSON null,
    an `invalid_event`."""
    shown = "null value" if value is None else f"an empty value ({value[:8]!r})"
    return (
        f"{shown}; an outcome is one JSON object "
        '(docs/consuming-tasks.md, "Reporting back"): send it, or nothing'
    )


def _invalid(record: RawRecord, exc: ValidationError) -> DeadLetter:
    """The dead letter of an outcome the model refused: the fields, never their values.
    One that is no JSON is told what it is instead, as an input event is (`not_json_said`):
    a note in GBK was told "invalid unicode code point", a Confluent frame or a
    byte-order mark "expected value at line 1 column 1", and outcomes are not replayed."""
    errors = exc.errors(include_url=False)
    unparsed = next((e for e in errors if e["type"] == "json_invalid"), None)
    if unparsed is not None:
        said = not_json_said(record.value or b"", str(unparsed["msg"]))
        return DeadLetter(record, EVENT_TYPE, RejectReason.INVALID_JSON, type(exc).__name__, said)
    problems = [_problem(e) for e in errors[:5]]
    detail = with_names_note("; ".join(problems))
    wrapped = enveloped(record.value or b"", ("task_id", "status"), "outcome")
    # The fix of a field left out, where "Field required" is all that was said of it: one
    # in another spelling (`taskId`) is told the name to write already.
    left_out = [p.removesuffix(f": {REQUIRED}") for p in problems if p.endswith(f": {REQUIRED}")]
    if wrapped is not None:
        detail += f" ({wrapped})"
    elif left_out:
        detail += f" ({_required_fix(left_out)})"
    return DeadLetter(
        record, EVENT_TYPE, RejectReason.INVALID_EVENT, type(exc).__name__, detail[:500]
    )


def _required_fix(fields: list[str]) -> str:
    """The fix for required fields left out, as an input event's (`required_fix`):
    "subscriber_id: Field required" named none."""
    them = "it" if len(fields) == 1 else "them"
    return (
        f"an outcome must have {', '.join(fields)}: write {them}; its fields are in "
        'schemas/task-outcome.schema.json and docs/consuming-tasks.md, "Reporting back"'
    )


NOTE_MAX_CHARS = 2000
"""The longest note kept; the rest of a longer one is cut, not refused."""


def with_note_cut(outcome: TaskOutcome) -> TaskOutcome:
    """The outcome with a note over `NOTE_MAX_CHARS` cut to them, ending in a marker that
    says how long it was (logged: the task id and the lengths, never the text). A long
    note made the whole outcome a dead letter, and outcomes are not replayed: a decline
    or an unanswered call was lost for a remark."""
    note = outcome.note
    if note is None or len(note) <= NOTE_MAX_CHARS:
        return outcome
    marker = f" [cut from {len(note):,} characters]"
    log.info(
        "outcome of task %s: its note of %d characters is cut to %d",
        outcome.task_id,
        len(note),
        NOTE_MAX_CHARS,
    )
    return outcome.model_copy(update={"note": note[: NOTE_MAX_CHARS - len(marker)] + marker})


NOT_A_TASK_ID = (
    "not a task id of this detector (32 lowercase hex characters); "
    "copy the task's task_id as published on moments.tasks"
)


AGENT_FIX = (
    "write text (at most 128 characters) or a whole number from 0 to "
    f"{AGENT_NUMBER_MAX}; leave it out if there is none"
)


def _problem(error: ErrorDetails) -> str:
    """`field: message` for one validation error, the fix named for a bad task id."""
    where = ".".join(str(p) for p in error["loc"]) or "value"
    if null_required(error):
        return f"{where}: {NULL_REQUIRED}"
    if where == "task_id" and error["type"] in ("string_pattern_mismatch", "string_too_long"):
        return f"task_id: {NOT_A_TASK_ID}"
    if where == "status" and error["type"] == "enum":
        return f"status: {_status_fix(error.get('input'))}"
    if where == "agent_id" and error["type"] == "string_type":
        return f"agent_id: {AGENT_FIX}"
    return f"{where}: {problem(error)}"


_STATUSES = ", ".join(OutcomeStatus)


def _status_fix(written: object) -> str:
    """What to write instead of a status outside the contract's seven: its spelling, when
    it is one of them written otherwise (`DONE_NO_CHANGE`), else where the mapping is."""
    if isinstance(written, str):
        known = written.strip().casefold().replace("-", "_").replace(" ", "_")
        if known in OutcomeStatus.__members__.values():
            return f"write {known!r} exactly (lowercase, as the contract spells it)"
    return (
        f"one of {_STATUSES}: map your SMS gateway's or dialer's own statuses onto them "
        '(docs/consuming-tasks.md, "Which status": a delivery receipt is done_no_change, '
        "a failed delivery failed, no answer unreachable)"
    )


def subscriber_mismatch(record: RawRecord, outcome: TaskOutcome) -> DeadLetter:
    """The dead letter of an outcome naming another subscriber than its task's (the
    message names neither number)."""
    return DeadLetter(
        record,
        EVENT_TYPE,
        RejectReason.SUBSCRIBER_MISMATCH,
        "SubscriberMismatch",
        f"subscriber_id is not the subscriber of task {outcome.task_id}; write the "
        "subscriber_id published with the task on moments.tasks",
    )


def unknown_task(record: RawRecord, outcome: TaskOutcome, ledger_ttl_s: int) -> DeadLetter:
    """The dead letter of an outcome for a task id the ledger has no entry for: every task
    published is claimed there first and its entry kept `ledger_ttl_s` (400 days by
    default), so it is no task of this detector (another app id's, a test's, made up)."""
    return DeadLetter(
        record,
        EVENT_TYPE,
        RejectReason.UNKNOWN_TASK,
        "UnknownTask",
        f"task {outcome.task_id} was never published by this detector (its ledger keeps "
        f"every task id for {ledger_ttl_s // 86400} days): copy task_id from the task on "
        "moments.tasks of the detector (MOMENTS_APP_ID) whose outcomes topic this is",
    )


def merged_task(record: RawRecord, outcome: TaskOutcome, carrier_id: str) -> DeadLetter:
    """The dead letter of an outcome for a moment that went out merged into another task:
    its id names the moment (a task's `moment_id`, or one in `related`), never a task the
    consumer was sent, so its decline, retry or contact would act on nothing."""
    return DeadLetter(
        record,
        EVENT_TYPE,
        RejectReason.UNKNOWN_TASK,
        "UnknownTask",
        f"task {outcome.task_id} was merged into task {carrier_id} and never published "
        f"under its own id (it is a moment_id or a related task_id): report the outcome "
        f"for task_id {carrier_id}, the task as published",
    )


def declined_rules(task: ServiceTask) -> list[str]:
    """The rules a `declined` suppresses: the task's and, for a merged task, those of its
    related moments (the customer turned the whole contact down; only the leading rule
    was suppressed, and the next moment of the others called them again)."""
    rules = [task.moment.rule_id, *(r.moment.rule_id for r in task.related or [])]
    return list(dict.fromkeys(rules))


def retry_task(
    task: ServiceTask,
    now: dt.datetime,
    after: dt.timedelta,
    max_retries: int,
    occurred_at: dt.datetime | None = None,
) -> ServiceTask | None:
    """The retry of an unreachable task, `after` from the attempt (`occurred_at`, the
    outcome's own time) but never before `now` (when the outcome is read), or None when it
    has had its retries or would come after its expiry.

    The outcome's time counts only when it is not ahead of `now`: it is the consumer's
    clock, and one ahead pushed the retry out. Counted from `now` always, an outcome read
    late (consumer or worker lag, a backlog after an outage) had its retry wait the lag
    on top of `after`: read 90 minutes late, a 2-hour retry came 3.5 hours after the
    unanswered call.

    Nor does it count from before the task was published (its `deliver_after`): no
    attempt came before it, so an outcome dated earlier is a clock behind or an offset
    wrong (UTC written with +08:00), and counted from its time the retry went out at
    once, the customer called again minutes after the unanswered call."""
    attempt = task.attempt + 1
    since = now if occurred_at is None else min(max(occurred_at, task.deliver_after), now)
    at = max(since + after, now)
    if attempt > max_retries or at >= task.expires_at:
        return None
    root = task.retry_of or task.task_id
    return task.model_copy(
        update={
            # An attempt of its own: its drop counts as any retry's, though the task it
            # follows (made again for a moment counted at its first task's drop, its body
            # kept as dispatch judged it) counted nothing at its own.
            "counted": False,
            "task_id": retry_id(root, attempt),
            "attempt": attempt,
            "retry_of": root,
            "created_at": now,
            "deliver_after": at,
            "deferred": Deferral(reason="unreachable_retry", until=at),
        }
    )


async def handle_outcomes(
    records: Sequence[RawRecord],
    sink: TaskSink,
    now: dt.datetime | None = None,
    ahead_s: int = allowed_ahead(int(LATENESS.total_seconds())),
) -> OutcomeResult:
    """Count, suppress and retry per outcome; dead letters are returned for the caller's
    dead-letter sink. `ahead_s`: how far ahead of `now` an outcome may be dated (as an
    input event: `allowed_ahead(MOMENTS_LATENESS_SECONDS)`)."""
    result = OutcomeResult()
    retries: list[ServiceTask] = []
    given_back: list[tuple[str, str]] = []
    acting: list[tuple[TaskOutcome, ServiceTask]] = []
    newer: dict[str, bytes] = {}
    newer_retries: list[tuple[ServiceTask, bytes]] = []
    metrics = sink.metrics
    at = now or dt.datetime.now(dt.UTC)
    for record in records:
        decoded = decode_outcome(record)
        if isinstance(decoded, DeadLetter):
            result.dead_letters.append(decoded)
            continue
        outcome = decoded
        if outcome.occurred_at > at + dt.timedelta(seconds=ahead_s):
            dated, clock = int(outcome.occurred_at.timestamp()), int(at.timestamp())
            result.dead_letters.append(too_far_ahead(record, EVENT_TYPE, dated, clock, ahead_s))
            continue
        task = await _sent_task(sink, outcome.task_id, newer)
        confirmed = task is not None
        entry = None if confirmed else await _entry(sink, outcome.task_id)
        if entry is not None and await _published_unconfirmed(sink, outcome.task_id, entry):
            # Sent, its confirm (which keeps the body) not written yet: the task as claimed.
            task = await _pending_task(sink, entry[1:], outcome.task_id, newer)
        if task is not None and task.subscriber_id != outcome.subscriber_id:
            result.dead_letters.append(subscriber_mismatch(record, outcome))
            continue
        if task is not None:
            moment_type = task.moment.type
        else:
            if entry is None:
                result.dead_letters.append(unknown_task(record, outcome, sink.ledger.ttl))
                continue
            if state_of(entry) == "merged":
                carrier = entry[1:].decode(errors="replace")
                result.dead_letters.append(merged_task(record, outcome, carrier))
                continue
            moment_type = str(sent_meta_fields(entry).get("moment_type") or UNKNOWN)
        # Of a task not confirmed, the mark tells its confirm to keep it out of the
        # unanswered index (`_first`, no channel).
        channel = str(task.channel) if task is not None and confirmed else None
        if await _first(sink, outcome, channel):
            metrics.outcomes.labels(moment_type, outcome.status.value).inc()
        result.handled += 1
        if task is None:
            if outcome.status in _ACTS:
                log.info(
                    "no %s for %r: its payload is gone (expired, or its subscriber erased)",
                    _ACTS[outcome.status],
                    outcome.task_id,
                )
            continue
        if outcome.status in _ACTS or outcome.status in REACHED:
            acting.append((outcome, task))
    # A task made before its subscriber was erased: a decline would write their number
    # into Redis again for 30 days (and hold the rule from the number's next holder), a
    # retry would queue their payload again. One read of the marks for the batch.
    erased = await sink.subscribers.forgotten_tasks([task for _, task in acting])
    ended = await _noted(
        sink, [t.task_id for o, t in acting if o.status is OutcomeStatus.UNREACHABLE], ENDS_RETRIES
    )
    reached = await _noted(
        sink, [t.task_id for o, t in acting if o.status in REACHED_NO_ONE], REACHED
    )
    missed = await _noted(
        sink, [t.task_id for o, t in acting if o.status in REACHED], REACHED_NO_ONE
    )
    taken_back: dict[str, ServiceTask] = {}
    declined: set[str] = set()
    forgotten: set[str] = set()
    for outcome, task in acting:
        if task.task_id in erased:
            if task.task_id not in forgotten:  # each once, as the declines below
                forgotten.add(task.task_id)
                result.forgotten += 1
            continue
        # Each once, though the batch holds the outcome twice (a producer's retry of its
        # send), as the retries below.
        if outcome.status is OutcomeStatus.DECLINED and task.task_id not in declined:
            declined.add(task.task_id)
            for rule_id in declined_rules(task):
                await _decline(sink, task.subscriber_id, rule_id)
            result.declined += 1
        if outcome.status in REACHED and task.task_id in missed:
            # The customer was reached, read after (or beside) a `failed` or an earlier
            # attempt's `unreachable` that gave the contact back: it was made; counted again.
            taken_back[task.task_id] = task
        if outcome.status in REACHED_NO_ONE and task.task_id not in reached:
            # A `failed` or an earlier attempt's `unreachable` read after (or beside) an
            # outcome saying the customer was reached: the contact was made; it stays.
            given_back.append((task.subscriber_id, task.task_id))
        if outcome.status is OutcomeStatus.UNREACHABLE and task.task_id in ended:
            # An earlier attempt's report read after (or beside) the one that got through:
            # a retry would call a customer already served, who may have taken the offer;
            # or after the task `failed` for good (a number not in service), which is not
            # sent again.
            if task.task_id not in result.not_retried:
                result.not_retried.append(task.task_id)
        elif outcome.status is OutcomeStatus.UNREACHABLE:
            policy = sink.policy.outcomes
            retry = retry_task(
                task, at, policy.unreachable_retry_after, policy.max_retries, outcome.occurred_at
            )
            # Once, though the batch holds the outcome twice (a producer's retry of its send).
            if retry is not None and retry.task_id not in result.retries:
                if task.task_id in newer:
                    newer_retries.append((retry, newer[task.task_id]))
                else:
                    retries.append(retry)
                result.retries.append(retry.task_id)
    if result.not_retried:
        log.info(
            "%d task(s) answered unreachable that another outcome says reached the "
            "customer or failed: no retry (first: %r)",
            len(result.not_retried),
            result.not_retried[0],
        )
    await _give_back(sink, given_back)
    await _take_back(sink, list(taken_back.values()), at)
    once = {t.task_id: t for _, t in acting if t.task_id in declined}
    await _undo_raced(sink, list(once.values()), list(taken_back.values()), result)
    why: dict[str, str] = {}
    await sink.dispatch(retries, why=why)
    await _park_newer(sink, newer_retries, why)
    _count_dropped(result, why)
    if result.forgotten:
        log.info(
            "outcomes of %d task(s) of erased subscribers: counted, acted on nothing",
            result.forgotten,
        )
    if result.retries_dropped:
        first, reason = next(iter(result.retries_dropped.items()))
        log.info(
            "%d retry task(s) dropped as they were queued (first: %r, %s)",
            len(result.retries_dropped),
            first,
            reason,
        )
    return result


def _count_dropped(result: OutcomeResult, why: dict[str, str]) -> None:
    """The retries dispatch (or `_park_newer`) dropped at once (`why`: id -> reason) taken
    out of `result.retries`: one dropped `forgotten` (a tombstone recorded after the
    batch's look at the marks, before dispatch or the park read them) counts its task as
    of an erased subscriber,
    the others are listed with why. Each was listed as queued, and the log said so."""
    for retry_id_ in [r for r in result.retries if r in why]:
        result.retries.remove(retry_id_)
        if why[retry_id_] == SuppressReason.FORGOTTEN.value:
            result.forgotten += 1  # one retry per task: its task once
        else:
            result.retries_dropped[retry_id_] = why[retry_id_]


async def _undo_raced(
    sink: TaskSink,
    declined: Sequence[ServiceTask],
    taken_back: Sequence[ServiceTask],
    result: OutcomeResult,
) -> None:
    """What the batch just wrote of its subscribers, for those of the tasks it `declined`
    (each once) or whose contact it counted again (`taken_back`) whose subscriber a
    tombstone erased meanwhile, erased again: their declines, and the contacts counted
    again (given back, the task's own id, in both caps' books). The tombstone, read by
    another agent, may have recorded its mark after the batch's look and erased the
    declines and the contact books before they were written (`Subscribers.forget` records
    the mark first, so this second look sees it). The tasks are counted as of an erased
    subscriber, each once; a decline among them not as declined."""
    tasks = {t.task_id: t for t in (*declined, *taken_back)}
    raced = await sink.subscribers.forgotten_tasks(list(tasks.values()))
    if not raced:
        return
    erased = [t for t in declined if t.task_id in raced]
    if erased:
        subs = list(dict.fromkeys(t.subscriber_id for t in erased))
        rules = list(dict.fromkeys(r for t in erased for r in declined_rules(t)))
        await with_retry(
            lambda: sink.declines.forget(subs, rules),
            Dependency.REDIS,
            sink.metrics,
            "erasing declines of erased subscribers",
        )
    await _give_back(sink, [(t.subscriber_id, t.task_id) for t in taken_back if t.task_id in raced])
    result.declined -= len(erased)
    result.forgotten += len(raced)


async def _park_newer(
    sink: TaskSink, retries: Sequence[tuple[ServiceTask, bytes]], why: dict[str, str]
) -> None:
    """The retries of tasks a newer version wrote (each with its task's stored body), made
    as that version wrote the task (`newer_retry`: its channel, fields this version does
    not know) and parked until due, as a retry this version makes is: claimed, then moved
    into the deferral queue, counted `unreachable_retry`. Not routed, gated nor merged
    here (this version cannot send on its channel, nor judge its family): a worker of the
    newer version releases it and sends it; one of this version leaves it to such a
    worker (`sinks.readback.NEWER_WAIT_S`). A retry already claimed (the outcome read
    again) is not parked again; a crash between the two leaves it pending, re-driven by
    a worker of the newer version likewise.

    The park compares the subscriber's erasure mark in the same step (`Parking.made`): a
    tombstone applied since the batch's look took the subscriber's waiting tasks out of
    the queue before this park, which left the erased subscriber's payload waiting until
    its release time (as dispatch drops a retry of this version's, `forgotten`). Such a
    retry is dropped `forgotten` instead, and named in `why` (id -> reason)."""
    if not retries:
        return
    items = [(retry.task_id, newer_retry(body, retry)) for retry, body in retries]
    call = ClaimCall()  # a retry (its first reply lost) takes what that try wrote
    owned = await with_retry(
        lambda: sink.ledger.claim(items, (), call),
        Dependency.REDIS,
        sink.metrics,
        "claiming retries of a newer version's tasks",
    )
    mine = [retry for (retry, _), ok in zip(retries, owned, strict=True) if ok]
    parks = [
        # Opens no merge group (1 ms): this version would merge its own tasks into it.
        Parking(
            task_id,
            retry.subscriber_id,
            payload,
            retry.deliver_after.timestamp(),
            0.0,
            made=made_at(retry),
        )
        for (retry, _), (task_id, payload), ok in zip(retries, items, owned, strict=True)
        if ok
    ]
    parked = await with_retry(
        lambda: sink.deferral.park_many(parks),
        Dependency.REDIS,
        sink.metrics,
        "deferring retries of a newer version's tasks",
    )
    for p, ok in zip(parks, parked, strict=True):
        if ok:
            sink.metrics.deferred.labels("unreachable_retry").inc()
            log.info(
                "task %s: a retry of a task a newer version wrote (a channel or moment "
                "family this version does not know), parked as it wrote it until %s; a "
                "worker of that version sends it",
                p.task_id,
                dt.datetime.fromtimestamp(p.release_at, dt.UTC).isoformat(),
            )
    left = [retry for retry, ok in zip(mine, parked, strict=True) if not ok]
    await _drop_forgotten(sink, left, why)


async def _drop_forgotten(
    sink: TaskSink, retries: Sequence[ServiceTask], why: dict[str, str]
) -> None:
    """Those of `retries` (claimed, their park refused) whose subscriber a tombstone erased
    after their moment dropped `forgotten` (`is_forgotten`, looked up again: the park
    refuses for nothing else but an entry no longer ours), counted, and named in `why`."""
    raced = await sink.subscribers.forgotten_tasks(retries)
    gone = [r for r in retries if r.task_id in raced]
    if not gone:
        return
    reason = SuppressReason.FORGOTTEN.value
    await with_retry(
        lambda: sink.ledger.drop_many(
            [(r.task_id, reason) for r in gone], {r.task_id: r.expires_at.timestamp() for r in gone}
        ),
        Dependency.REDIS,
        sink.metrics,
        "dropping retries of erased subscribers",
    )
    for r in gone:
        sink.metrics.suppressed.labels(r.moment.type, reason).inc()
        why[r.task_id] = reason


async def _noted(
    sink: TaskSink, task_ids: Sequence[str], among: Collection[OutcomeStatus]
) -> set[str]:
    """The tasks among these with an outcome of a status `among` (`ENDS_RETRIES`: not sent
    again; `REACHED`: the contact was made): one read for the batch, after its outcomes
    were noted (`_first`)."""
    if not task_ids:
        return set()
    statuses = [s.value for s in among]
    return await with_retry(
        lambda: sink.ledger.noted_any(task_ids, statuses),
        Dependency.REDIS,
        sink.metrics,
        "reading a task's outcomes",
    )


async def _give_back(sink: TaskSink, items: Sequence[tuple[str, str]]) -> None:
    """The contacts these (subscriber id, task id) took, back to both caps' books (a book
    whose cap is off, or that the task's channel does not count, holds no such id)."""
    if not items:
        return
    for book, what in (
        (sink.stores.frequency, "frequency cap"),
        (sink.stores.contacts, "contact policy"),
    ):
        await with_retry(
            functools.partial(book.give_back_many, items),
            Dependency.REDIS,
            sink.metrics,
            f"giving a contact back ({what})",
        )


async def _take_back(sink: TaskSink, tasks: Sequence[ServiceTask], now: dt.datetime) -> None:
    """The contacts these tasks made, counted again in the books of the caps that count
    them (the contact cap: every channel; the frequency cap: its channels), at the time
    each was sent (`sent_at` of its ledger entry; its `deliver_after` without one): a
    contact given back for an attempt that reached no one, then an outcome saying the
    customer was reached. Not refused by a cap (the contact was made), and once: a
    contact counted is not counted again."""
    if not tasks:
        return
    entries = await with_retry(
        lambda: sink.ledger.get_many([t.task_id for t in tasks]),
        Dependency.REDIS,
        sink.metrics,
        "reading when tasks were sent",
    )
    made: list[tuple[str, str, float, Channel]] = []
    for task, entry in zip(tasks, entries, strict=True):
        sent_at = sent_meta_fields(entry).get("sent_at")
        at = sent_at if isinstance(sent_at, int | float) else task.deliver_after.timestamp()
        made.append((task.subscriber_id, task.task_id, float(at), task.channel))
    books: list[tuple[ContactBook, dt.timedelta, frozenset[Channel] | None, str]] = []
    if (contact := sink.policy.contact).max_contacts > 0:
        books.append((sink.stores.contacts, contact.period, None, "contact policy"))
    if (cap := sink.frequency_cap()) is not None:
        books.append((sink.stores.frequency, cap.span, frozenset(cap.channels), "frequency cap"))
    for book, period, channels, what in books:
        items = [(s, t, at) for s, t, at, c in made if channels is None or c in channels]
        if items:
            await with_retry(
                functools.partial(
                    book.take_back_many, items, period.total_seconds(), now.timestamp()
                ),
                Dependency.REDIS,
                sink.metrics,
                f"counting a contact again ({what})",
            )


async def _first(sink: TaskSink, outcome: TaskOutcome, channel: str | None) -> bool:
    """Whether this status is new for the task: an outcome read again (a restart before
    its offset was committed) or sent twice is counted once; what it does is idempotent
    (a decline sets the same key, a retry has a deterministic id). Any outcome answers
    the task: it leaves the unanswered index (of `channel`, the task's; of every channel
    when its payload is gone), in the same round trip. The call's token makes it so for
    a retry of the call as well, whose first try Redis answered and the reply was lost."""
    token = secrets.token_hex(8)
    return await with_retry(
        lambda: sink.ledger.first_outcome(outcome.task_id, outcome.status.value, channel, token),
        Dependency.REDIS,
        sink.metrics,
        "noting an outcome",
    )


async def _entry(sink: TaskSink, task_id: str) -> bytes | None:
    """The task's ledger entry (None: never claimed, or forgotten after the ledger's TTL)."""
    return await with_retry(
        lambda: sink.ledger.get(task_id),
        Dependency.REDIS,
        sink.metrics,
        "reading a task's ledger entry",
    )


async def _sent_task(sink: TaskSink, task_id: str, newer: dict[str, bytes]) -> ServiceTask | None:
    """The task as it was sent, while the ledger keeps its payload (None when gone, or
    unreadable: an outcome is then counted and applied to nobody). One a newer version
    wrote is read as far as this version can (`newer_task`), its payload kept in `newer`
    by its id: counted, declined and its contact given back or taken as any, its retry
    made from that payload (`_park_newer`)."""
    body = await with_retry(
        lambda: sink.ledger.body(task_id),
        Dependency.REDIS,
        sink.metrics,
        "reading a sent task",
    )
    return _read_task(sink, body, task_id, newer) if body else None


async def _published_unconfirmed(sink: TaskSink, task_id: str, entry: bytes) -> bool:
    """The entry holds a task that may have been published, its confirm never written:
    pending, or waiting where a re-drive parked it (`Ledger.redriven`: its worker died
    after publishing it). Not one waiting that its first decision parked: it never went
    out, so an outcome of its id (a wrong id) acts on nothing."""
    state = state_of(entry)
    if state == "pending":
        return True
    if state != "deferred":
        return False
    marked = await with_retry(
        lambda: sink.ledger.redriven([task_id]),
        Dependency.REDIS,
        sink.metrics,
        "reading a waiting task's re-drive mark",
    )
    return bool(marked)


async def _pending_task(
    sink: TaskSink, payload: bytes, task_id: str, newer: dict[str, bytes]
) -> ServiceTask | None:
    """The task a pending entry holds (`payload`), as dispatch published it: merged with
    the moments that joined it while it waited (its group, `merge_tasks`). Read alone, a
    `declined` of a merged task suppressed its own rule only, and the re-drive, which
    merges the group again, sent the joined moments to the customer who had declined the
    whole contact. A member this version cannot read is left out (logged)."""
    task = _read_task(sink, payload, task_id, newer)
    if task is None:
        return None
    group = await with_retry(
        lambda: sink.ledger.group(task_id),
        Dependency.REDIS,
        sink.metrics,
        "reading a pending task's merge group",
    )
    members = [m for raw in group if (m := _read_member(raw, task_id)) is not None]
    return merge_tasks(task_id, [task, *members]) if members else task


def _read_member(body: bytes, carrier_id: str) -> ServiceTask | None:
    """A moment merged into `carrier_id` as its group stores it; None when unreadable."""
    try:
        return ServiceTask.model_validate_json(body)
    except ValidationError as exc:
        log.warning(
            "task %r: a moment merged into it is not a task this version reads (%d errors);"
            " an outcome read before its confirm acts on the others (run the version that"
            " wrote it to read it)",
            carrier_id,
            exc.error_count(),
        )
        return None


def _read_task(
    sink: TaskSink, body: bytes, task_id: str, newer: dict[str, bytes]
) -> ServiceTask | None:
    """The task stored as `body` (its body kept at the confirm, or the payload of its
    pending entry), as `_sent_task` reads it; None when unreadable."""
    try:
        return ServiceTask.model_validate_json(body)
    except ValidationError as exc:
        if (task := newer_task(body, exc)) is not None:
            sink.metrics.newer_tasks.labels(NewerRead.OUTCOME.value).inc()
            newer[task_id] = body
            return task
        log.warning(
            "task %r: its stored payload is not a task this version reads (%d errors)",
            task_id,
            exc.error_count(),
        )
        return None


async def _decline(sink: TaskSink, subscriber_id: str, rule_id: str) -> None:
    seconds = sink.policy.outcomes.declined_suppress.total_seconds()
    await with_retry(
        lambda: sink.declines.suppress(subscriber_id, rule_id, seconds),
        Dependency.REDIS,
        sink.metrics,
        "recording a decline",
    )
