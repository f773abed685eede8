"""`moments tasks ack`: write a TaskOutcome to `moments.task-outcomes`, as a dispatch
consumer would after acting on a task."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from pydantic import ValidationError

from moments.connections import (
    REDIS_TIMEOUT_S,
    describe_redis_failure,
    kafka_client_kwargs,
    probe_redis,
    redis_client,
)
from moments.decoding import problem
from moments.exceptions import ConfigError, KafkaWriteError
from moments.models import TASK_ID_PATTERN, OutcomeStatus, TaskOutcome
from moments.pii import mask_msisdn
from moments.producer import STOP_S, WRITE_FAILED_FIX, error_said, stop_within
from moments.redisurl import redacted_url
from moments.settings import Settings
from rules.durations import echoed
from sinks.base import ASK_AFRESH_S, Unanswered, acknowledged
from sinks.ledger import TaskLedger, state_of
from sinks.writewaits import CHECK_BROKER


class AckError(Exception):
    """The outcome cannot be written; the message says what to do."""


def build_outcome(
    task_id: str,
    subscriber_id: str,
    status: OutcomeStatus,
    note: str | None = None,
    agent_id: str | None = None,
    now: dt.datetime | None = None,
) -> TaskOutcome:
    return TaskOutcome(
        task_id=task_id,
        subscriber_id=subscriber_id,
        status=status,
        occurred_at=now or dt.datetime.now(dt.UTC),
        agent_id=agent_id,
        note=note,
    )


TASK_ID_ECHOED = 40
"""The most characters of a refused task id its error repeats: a task id's 32 (in
capitals, say) show whole, a pasted page is cut short (it was repeated whole)."""


def check_task_id(task_id: str) -> str:
    """The id as given, when it has the form of the detector's task ids (the worker
    refuses an outcome with another as a dead letter)."""
    if re.fullmatch(TASK_ID_PATTERN, task_id) is None:
        raise AckError(
            f"{echoed(task_id, TASK_ID_ECHOED)} is not a task id (32 lowercase hex "
            "characters); copy the task's task_id from moments.tasks (moments tasks tail --json)"
        )
    return task_id


_OPTIONS = {"subscriber_id": "--subscriber", "agent_id": "--agent", "note": "--note"}


def check_parts(subscriber_id: str | None, note: str | None, agent_id: str | None) -> None:
    """Refuse (`AckError`) a `--subscriber`, `--agent` or `--note` the outcome cannot hold,
    naming the option and the fix, before any connection: pydantic's traceback ended the
    command (a subscriber written `+8613800138001`, an agent id over 128 characters)."""
    try:  # the parts given, beside valid ones where they are not
        build_outcome(
            "0" * 32, subscriber_id or "13800138001", OutcomeStatus.ACCEPTED, note, agent_id
        )
    except ValidationError as exc:
        said = "; ".join(
            f"{_OPTIONS.get(str(e['loc'][0]), str(e['loc'][0]))}: {problem(e)}"
            for e in exc.errors(include_url=False)
            if e["loc"]
        )
        raise AckError(said) from None


RECORDED_WITHIN_S = 3.0
"""A task is recorded as sent a moment after it is published: one seen on the topic this
very moment is waited for this long before it is called unknown (its entry gone, or sent
with no body kept). An entry that says why it was not published (`_refuse_dropped`,
`_refuse_merged`) is refused at once: waiting changes neither."""


async def subscriber_of(settings: Settings, task_id: str, wait_s: float = RECORDED_WITHIN_S) -> str:
    """The subscriber of a task sent within its expiry, from the ledger's copy."""
    redis = redis_client(settings)
    deadline = time.monotonic() + wait_s
    entry: bytes | None = None
    try:
        ledger = TaskLedger(redis, settings.redis_prefix, settings.ledger_ttl_seconds)
        while not (body := await redis.get(ledger.body_key(task_id))):
            entry = await ledger.get(task_id)
            _refuse_merged(task_id, entry)
            if (body := await _unconfirmed_payload(ledger, task_id, entry)) is not None:
                break
            # Dropped, or waiting unpublished: the wait was for the record of a publish,
            # which neither is about to get (a release or a take-over makes it `P` first).
            _refuse_dropped(task_id, entry)
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    if not body:
        where = f"{redacted_url(settings.redis_url)} (app id {settings.app_id})"
        if entry is None:  # --subscriber would only make it an unknown_task dead letter
            raise AckError(
                f"task {task_id} is not in the ledger in {where}: this detector never "
                "published it, and the worker would refuse its outcome (unknown_task); "
                "check the task id (moments tasks pending lists those waiting for one) and "
                "that MOMENTS_APP_ID and MOMENTS_REDIS_URL are the detector's"
            )
        raise AckError(
            f"task {task_id} expired: {where} no longer keeps its payload (a day after its "
            "expires_at, or at once when a profile tombstone erased its subscriber), so its "
            "subscriber is unknown here; pass --subscriber MSISDN to ack it anyway (counted, "
            "it changes nothing)"
        )
    return str(orjson.loads(body)["subscriber_id"])


async def _unconfirmed_payload(
    ledger: TaskLedger, task_id: str, entry: bytes | None
) -> bytes | None:
    """The task a pending ledger entry holds (claimed; sent, maybe, its worker gone before
    the confirm that keeps the body), or a waiting one a re-drive parked (`redriven:<id>`:
    its worker died after publishing it, maybe), or None: the worker acts on an outcome of
    it as of that task (`moments.outcomes`), so its subscriber is that task's."""
    if entry is None or len(entry) < 2:
        return None
    state = state_of(entry)
    if state == "pending" or (state == "deferred" and await ledger.redriven([task_id])):
        return entry[1:]
    return None


def _refuse_dropped(task_id: str, entry: bytes | None) -> None:
    """`AckError` for a task dispatch dropped (`X<reason>`) or parked (`D<payload>`): it
    was told its payload had expired, for a task not recorded as sent (most likely a wrong
    id), whose outcome the worker counts and acts on nothing with."""
    if entry is not None and state_of(entry) == "deferred":
        raise AckError(
            f"task {task_id} is waiting in the deferral queue, not published yet (quiet "
            "hours, its channel's hours, a cap): check the task id (moments tasks deferred "
            "lists those waiting); if you did receive it (its worker may have published it "
            "and died before recording it, and it waits to be sent again), pass "
            "--subscriber MSISDN to ack it anyway (counted, it changes nothing)"
        )
    if entry is not None and state_of(entry) == "dropped":
        reason = entry[1:].decode(errors="replace") or "no reason kept"
        raise AckError(
            f"task {task_id} was dropped by dispatch ({reason}) and never recorded as sent: "
            "check the task id (moments tasks tail --json lists those published); if you "
            "did receive it (its worker may have published it and died before recording "
            "it), pass --subscriber MSISDN to ack it anyway (counted, it changes nothing)"
        )


def _refuse_merged(task_id: str, entry: bytes | None) -> None:
    """`AckError` naming the published task when `task_id` is a moment merged into it (a
    `moment_id` or a `related` id): the worker refuses an outcome for it (recheck review:
    the command wrote it with no word)."""
    if entry is not None and state_of(entry) == "merged":
        carrier = entry[1:].decode(errors="replace")
        raise AckError(
            f"task {task_id} is a moment merged into task {carrier}, the one published: ack "
            f"{carrier} (the worker refuses an outcome for a merged moment's own id as "
            "unknown_task)"
        )


async def check_subscriber(settings: Settings, task_id: str, given: str) -> str | None:
    """Refuse (`AckError`) a `--subscriber` that is not the task's, while the ledger keeps
    the task: the worker would make the outcome a `subscriber_mismatch` dead letter, and
    the command said nothing (dispatch consumer review). Returns a warning when the ledger
    cannot tell (the task gone, or Redis unreachable), None when the subscriber is the
    task's. A Redis the worker refuses (in cluster mode, a login or rights refused, TLS) is
    refused here too (`ConfigError`, with the fix), as the other Redis commands'
    preflight (`require_redis`) refuses it: it was only a warning, and the outcome was
    written for a worker that cannot run against that Redis."""
    from redis import exceptions as rx

    where = f"{redacted_url(settings.redis_url)} (app id {settings.app_id})"
    redis = redis_client(settings)
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            await probe_redis(redis, settings)  # RedisClusterError: not caught below
        ledger = TaskLedger(redis, settings.redis_prefix, settings.ledger_ttl_seconds)
        body = await redis.get(ledger.body_key(task_id))
        entry = None if body is not None else await ledger.get(task_id)
        known = body is not None or entry is not None
        body = body or await _unconfirmed_payload(ledger, task_id, entry)
    except (rx.RedisError, OSError) as exc:
        refused = describe_redis_failure(settings, exc)
        if refused is not None:
            raise ConfigError(refused) from None
        return (
            f"could not check task {task_id}'s subscriber in {where}: {type(exc).__name__}; "
            "written as given (the worker refuses it as subscriber_mismatch if it is not the "
            "task's)"
        )
    finally:
        await redis.aclose()
    if body is None:
        _refuse_merged(task_id, entry)
        if known:
            return None  # expired: the worker counts it and can check nothing
        return (
            f"task {task_id} is not in the ledger in {where}: the worker refuses an outcome "
            "for a task it never published (unknown_task); check the task id and "
            "MOMENTS_APP_ID"
        )
    stored = str(orjson.loads(body)["subscriber_id"])
    if stored != given:
        shown = (lambda n: n) if settings.log_pii else mask_msisdn
        raise AckError(
            f"task {task_id} is subscriber {shown(stored)}'s, not {shown(given)}'s: the worker "
            "would refuse this outcome (subscriber_mismatch); leave out --subscriber (the "
            "task's is looked up) or pass the task's"
        )
    return None


WRITE_S = 10.0
"""Longest `write_outcome` waits for its producer's start and the topic's metadata its
send needs, and then as long for the outcome's acknowledgement: a broker that answers
acknowledges in milliseconds. The command waited for aiokafka's batch expiry
(`request_timeout_ms`, 40 s) and ended in a traceback. With the broker asked afresh as
the acknowledgement's wait ends (`sinks.base.ASK_AFRESH_S`, 5 s) and the producer's
bounded stop (`producer.STOP_S`, 10 s), a write that fails ends the command within
`WRITE_FAILS_WITHIN_S`."""

WRITE_FAILS_WITHIN_S = 2 * WRITE_S + ASK_AFRESH_S + STOP_S
"""The documented bound of a write that fails, from the producer's start (docs/
consuming-tasks.md): 35 s."""

OUTCOME_UNANSWERED = Unanswered(then=CHECK_BROKER, gone="a worker creates it again at its start")
"""What an outcome not acknowledged in time means to the command: it stops, retrying
nothing (`KafkaWriteError`)."""


async def _queued(producer: AIOKafkaProducer, topic: str, outcome: TaskOutcome) -> Any:
    """The future of the outcome's send, the producer started, within `WRITE_S`: the send
    waits for the topic's metadata (aiokafka's `request_timeout_ms`, 40 s, without it)."""
    try:
        async with asyncio.timeout(WRITE_S):
            await producer.start()
            return await producer.send(
                topic,
                value=outcome.model_dump_json(exclude_none=True).encode(),
                key=outcome.subscriber_id.encode(),
            )
    except TimeoutError:
        raise KafkaTimeoutError(
            f"the broker did not give the producer its start and the metadata of {topic} in "
            f"{WRITE_S:g} s (it is away, or does not have the topic); {CHECK_BROKER}"
        ) from None


async def write_outcome(settings: Settings, outcome: TaskOutcome) -> None:
    """Produce the outcome keyed by subscriber and wait for the broker's ack, at most
    `WRITE_S` (and the producer's start and the topic's metadata before it as long). A
    write that fails, or is not acknowledged in time, is `KafkaWriteError`: what was or may
    have been written, and the fix, in one line (aiokafka's error ended the command in a
    traceback, after its batch expiry). The producer's stop is bounded (`stop_within`):
    stopped (Ctrl-C) while the broker did not answer, the command waited out the batch's
    expiry (about 40 s) with no word."""
    topic = settings.topic("task_outcomes")
    what = f"task {outcome.task_id}'s {outcome.status.value} outcome"
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", **kafka_client_kwargs(settings)
    )
    sent = False
    try:
        try:
            future = await _queued(producer, topic, outcome)
            sent = True
            await acknowledged(producer, [future], (topic,), WRITE_S, unanswered=OUTCOME_UNANSWERED)
        finally:
            await stop_within(producer, unsent=f"{what} to {topic}")
    except KafkaError as exc:
        then = (
            "It may have reached the topic all the same: "
            f"{WRITE_FAILED_FIX}, look for it there before writing it again"
            if sent
            else f"Nothing was sent: {WRITE_FAILED_FIX}, run the command again"
        )
        raise KafkaWriteError(
            f"{what} was not written to {topic}: {error_said(exc)}. {then}"
        ) from None


async def ack_task(
    settings: Settings,
    task_id: str,
    status: OutcomeStatus,
    subscriber_id: str | None = None,
    note: str | None = None,
    agent_id: str | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> TaskOutcome:
    """Write the outcome of a task; `warn` is told what could not be checked."""
    check_task_id(task_id)
    check_parts(subscriber_id, note, agent_id)
    if subscriber_id is not None:
        warning = await check_subscriber(settings, task_id, subscriber_id)
        if warning is not None:
            warn(warning)
    sub = subscriber_id or await subscriber_of(settings, task_id)
    outcome = build_outcome(task_id, sub, status, note, agent_id)
    await write_outcome(settings, outcome)
    return outcome
