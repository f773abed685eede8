"""`moments tasks ack`: write a TaskOutcome to `moments.task-outcomes`, as a dispatch
consumer would after acting on a task."""

from __future__ import annotations

import datetime as dt

import orjson
from aiokafka import AIOKafkaProducer

from moments.connections import kafka_client_kwargs, redis_client
from moments.models import OutcomeStatus, TaskOutcome
from moments.settings import Settings
from sinks.ledger import TaskLedger


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


async def subscriber_of(settings: Settings, task_id: str) -> str:
    """The subscriber of a task sent within its expiry, from the ledger's copy."""
    redis = redis_client(settings)
    try:
        ledger = TaskLedger(redis, f"moments:{settings.app_id}:", settings.ledger_ttl_seconds)
        body = await redis.get(ledger.body_key(task_id))
    finally:
        await redis.aclose()
    if not body:
        raise AckError(
            f"task {task_id} is unknown or expired in {settings.redis_url} "
            f"(app id {settings.app_id}); pass --subscriber MSISDN to ack it anyway"
        )
    return str(orjson.loads(body)["subscriber_id"])


async def write_outcome(settings: Settings, outcome: TaskOutcome) -> None:
    """Produce the outcome keyed by subscriber and wait for the broker's ack."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", **kafka_client_kwargs(settings)
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic("task_outcomes"),
            value=outcome.model_dump_json(exclude_none=True).encode(),
            key=outcome.subscriber_id.encode(),
        )
    finally:
        await producer.stop()


async def ack_task(
    settings: Settings,
    task_id: str,
    status: OutcomeStatus,
    subscriber_id: str | None = None,
    note: str | None = None,
    agent_id: str | None = None,
) -> TaskOutcome:
    sub = subscriber_id or await subscriber_of(settings, task_id)
    outcome = build_outcome(task_id, sub, status, note, agent_id)
    await write_outcome(settings, outcome)
    return outcome
