"""Outcome feedback from `moments.task-outcomes`: metrics, `declined` suppression and
`unreachable` retries.

`handle_outcomes(records, sink)` is what the worker's outcomes agent calls per batch;
it returns only when everything it decided is durable in Redis (and retries are
parked), so committing the batch's offsets afterwards is safe. Per outcome:
- `moments_task_outcomes_total{moment_type,status}`: the moment type is read from the
  ledger entry the sink wrote when it published the task (`unknown` once forgotten);
- `declined`: the same rule is not sent to that subscriber for
  `outcomes.declined_suppress` (a Redis key read at dispatch);
- `unreachable`: a retry with a deterministic id (so a re-read outcome re-queues
  nothing new) waits `outcomes.unreachable_retry_after` in the deferral queue, unless
  it would be later than the task's expiry or `outcomes.max_retries` is reached.

A `task_id` that is not one the detector makes (32 lowercase hex) is an `invalid_event`
dead letter, so what the log quotes of an outcome is a hex id, never its free text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from moments.decoding import MAX_MESSAGE_BYTES
from moments.models import Deferral, OutcomeStatus, ServiceTask, TaskOutcome
from moments.records import DeadLetter, RawRecord, RejectReason
from sinks.dispatch import TaskSink
from sinks.metrics import Dependency
from sinks.retry import with_retry

log = logging.getLogger(__name__)
EVENT_TYPE = "task_outcome"
UNKNOWN = "unknown"


@dataclass
class OutcomeResult:
    handled: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)
    """Ids of the retry tasks queued for `unreachable` outcomes."""
    declined: int = 0


def decode_outcome(record: RawRecord) -> TaskOutcome | DeadLetter:
    """The outcome, or a dead letter: empty, over `MAX_MESSAGE_BYTES` (not parsed), or
    invalid (the reason names the fields, never their values)."""
    if not record.value:
        return DeadLetter(record, EVENT_TYPE, RejectReason.EMPTY_VALUE, "EmptyValue", "no value")
    if len(record.value) > MAX_MESSAGE_BYTES:
        return DeadLetter(
            record,
            EVENT_TYPE,
            RejectReason.TOO_LARGE,
            "TooLarge",
            f"{len(record.value)} bytes; outcomes are limited to {MAX_MESSAGE_BYTES}",
        )
    try:
        return TaskOutcome.model_validate_json(record.value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        reason = (
            RejectReason.INVALID_JSON
            if any(e["type"] == "json_invalid" for e in errors)
            else RejectReason.INVALID_EVENT
        )
        detail = "; ".join(_problem(e) for e in errors[:5])
        return DeadLetter(record, EVENT_TYPE, reason, type(exc).__name__, detail[:500])


NOT_A_TASK_ID = (
    "not a task id of this detector (32 lowercase hex characters); "
    "copy the task's task_id as published on moments.tasks"
)


def _problem(error: ErrorDetails) -> str:
    """`field: message` for one validation error, the fix named for a bad task id."""
    where = ".".join(str(p) for p in error["loc"]) or "value"
    if where == "task_id" and error["type"] in ("string_pattern_mismatch", "string_too_long"):
        return f"task_id: {NOT_A_TASK_ID}"
    return f"{where}: {error['msg']}"


def retry_id(root_task_id: str, attempt: int) -> str:
    """The id of the n-th retry of a task: the same outcome re-read makes the same id."""
    digest = hashlib.blake2b(f"{root_task_id}|retry|{attempt}".encode(), digest_size=16)
    return digest.hexdigest()


def retry_task(
    task: ServiceTask,
    outcome_at: dt.datetime,
    now: dt.datetime,
    after: dt.timedelta,
    max_retries: int,
) -> ServiceTask | None:
    """The retry of an unreachable task, or None when it has had its retries or would
    come after its expiry."""
    attempt = task.attempt + 1
    at = max(now, outcome_at) + after
    if attempt > max_retries or at >= task.expires_at:
        return None
    root = task.retry_of or task.task_id
    return task.model_copy(
        update={
            "task_id": retry_id(root, attempt),
            "attempt": attempt,
            "retry_of": root,
            "created_at": now,
            "deliver_after": at,
            "deferred": Deferral(reason="unreachable_retry", until=at),
        }
    )


async def handle_outcomes(
    records: Sequence[RawRecord], sink: TaskSink, now: dt.datetime | None = None
) -> OutcomeResult:
    """Count, suppress and retry per outcome; dead letters are returned for the caller's
    dead-letter sink."""
    result = OutcomeResult()
    retries: list[ServiceTask] = []
    metrics = sink.metrics
    at = now or dt.datetime.now(dt.UTC)
    for record in records:
        decoded = decode_outcome(record)
        if isinstance(decoded, DeadLetter):
            result.dead_letters.append(decoded)
            continue
        outcome = decoded
        meta = await _sent_meta(sink, outcome.task_id)
        moment_type = str(meta.get("moment_type") or UNKNOWN)
        metrics.outcomes.labels(moment_type, outcome.status.value).inc()
        result.handled += 1
        if outcome.status is OutcomeStatus.DECLINED and meta.get("rule_id"):
            await _decline(sink, outcome.subscriber_id, str(meta["rule_id"]))
            result.declined += 1
        elif outcome.status is OutcomeStatus.UNREACHABLE:
            retry = await _retry_for(sink, outcome, at)
            if retry is not None:
                retries.append(retry)
                result.retries.append(retry.task_id)
    await sink.dispatch(retries)
    return result


async def _sent_meta(sink: TaskSink, task_id: str) -> dict[str, object]:
    raw = await with_retry(
        lambda: sink.ledger.sent_meta(task_id),
        Dependency.REDIS,
        sink.metrics,
        "reading a task's moment type",
    )
    meta = orjson.loads(raw) if raw else {}
    return meta if isinstance(meta, dict) else {}


async def _decline(sink: TaskSink, subscriber_id: str, rule_id: str) -> None:
    seconds = sink.policy.outcomes.declined_suppress.total_seconds()
    await with_retry(
        lambda: sink.declines.suppress(subscriber_id, rule_id, seconds),
        Dependency.REDIS,
        sink.metrics,
        "recording a decline",
    )


async def _retry_for(sink: TaskSink, outcome: TaskOutcome, now: dt.datetime) -> ServiceTask | None:
    body = await with_retry(
        lambda: sink.ledger.body(outcome.task_id),
        Dependency.REDIS,
        sink.metrics,
        "reading a sent task",
    )
    if not body:
        log.info("no retry for %r: its payload is gone (expired or unknown)", outcome.task_id)
        return None
    task = ServiceTask.model_validate_json(body)
    policy = sink.policy.outcomes
    return retry_task(
        task, outcome.occurred_at, now, policy.unreachable_retry_after, policy.max_retries
    )
