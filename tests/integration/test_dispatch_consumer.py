"""A dispatch consumer written from the docs alone (docs/consuming-tasks.md, schemas/,
the contract), against a real worker: it reads `moments.tasks` as a consumer group,
validates every task and withdrawal against `schemas/` with `jsonschema`, reads
`moments.task-withdrawals` to its end before deciding on each task, answers on
`moments.task-outcomes` keyed by subscriber id, and commits each task after answering it
(restarted, it takes up after them and reads the withdrawals from the start). Then it
checks that the detector acted on what it was told: a `declined` task's rule makes no task
for that subscriber again (a subscriber who answered `done_no_change` gets the next one),
an `unreachable` call comes back as a retry (`attempt` 1, then 2, each with the first
task's id in `retry_of`, `deferred` reason `unreachable_retry`), a task withdrawn before it
was read (an opt-out of its channel, a subscriber erased) is not acted on and needs no
outcome, a customer who opts out of calls after an
unanswered one is not called again (the call made is withdrawn: nothing to undo), and in
the end `moments tasks pending` lists nothing: every task was answered or withdrawn. The
consumer imports nothing of `moments`: what it knows is what the docs say."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from jsonschema import Draft202012Validator, FormatChecker
from redis.asyncio import Redis
from ruamel.yaml import YAML

from moments.embedded import free_port
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess, tasks_command
from .kafka_io import metric_value, produce, read_topic, wait_for_metric

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
DECLINER, CONTROL, CALLER, OPTED, QUITTER, GONE = (f"1380013810{n}" for n in range(1, 7))

RULES = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: failure_sms
    description: an apology for each failing service
    on: [usage]
    when: {kind: service_failure}
    condition: {field: service_code}
    task: {family: anomaly, type: failure_sms, channel: sms, priority: 2, action: apology,
           ttl: 24h, description: "Sorry about {service_code}"}
  - id: complaint_call
    description: a call back for each complaint opened
    on: [complaint]
    when: {status: opened}
    condition: {field: complaint_id}
    task: {family: anomaly, type: complaint_call, channel: outbound_call, priority: 1,
           action: call_back, ttl: 24h, description: "Call back about {complaint_id}"}
"""
# Calls go at once (no merge window) and an unanswered one is tried again 2 s later.
POLICY = "merge: {window: 0s}\noutcomes: {unreachable_retry_after: 2s, max_retries: 2}\n"


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def headers_validator(message: str) -> Draft202012Validator:
    """The headers a message of schemas/asyncapi.yaml says its records carry."""
    document = YAML(typ="safe").load((SCHEMAS / "asyncapi.yaml").read_text(encoding="utf-8"))
    return Draft202012Validator(document["components"]["messages"][message]["headers"])


def aware(text: str) -> dt.datetime:
    """An RFC 3339 time as the docs promise (with an offset); `FormatChecker` checks
    `date-time` only where rfc3339-validator is installed, so read it here too."""
    when = dt.datetime.fromisoformat(text)
    assert when.utcoffset() is not None, f"{text!r} has no UTC offset"
    return when


class DispatchConsumer:
    """What a dispatch team writes from docs/consuming-tasks.md: `answer` says what the
    contact with a task came to (its outcome's status). It decides per task id once, in a
    shared store, as the page says for several consumers or a restart: `SET
    dispatch:done:<task_id> 1 NX EXAT <expires_at>` before acting, `... withdrawn NX ...`
    on a withdrawal; whichever is set first stands."""

    def __init__(
        self, settings: Settings, answer: Callable[[Mapping[str, Any]], Awaitable[str]]
    ) -> None:
        self.answer = answer
        self.tasks_topic = settings.topic("tasks")
        self.outcomes_topic = settings.topic("task_outcomes")
        self.withdrawals_topic = settings.topic("task_withdrawals")
        bootstrap = settings.kafka_bootstrap
        self.consumer = AIOKafkaConsumer(
            self.tasks_topic,
            bootstrap_servers=bootstrap,
            group_id=f"{settings.app_id}-dispatch",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            rebalance_timeout_ms=3000,  # Tansu completes a join only after all of it
        )
        self.reader = AIOKafkaConsumer(
            self.withdrawals_topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.redis = Redis.from_url(settings.redis_url)
        self.done_key = f"dispatch:{settings.app_id}:done:"  # the test's own keys
        self.task_schema = (validator("service-task.schema.json"), headers_validator("ServiceTask"))
        self.withdrawal_schema = (
            validator("task-withdrawal.schema.json"),
            headers_validator("TaskWithdrawal"),
        )
        self.outcome_schema = validator("task-outcome.schema.json")
        self.withdrawn: dict[str, dt.datetime] = {}  # as read, for the test to see
        self.acted: list[dict[str, Any]] = []  # the tasks acted on, in order
        self.skipped: list[str] = []  # task ids read but withdrawn before
        self.outcomes: list[dict[str, Any]] = []

    async def __aenter__(self) -> DispatchConsumer:
        await self.consumer.start()
        await self.reader.start()
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.reader.stop()
        await self.producer.stop()
        await self.redis.aclose()

    async def claim(self, task_id: str, value: str, expires: dt.datetime) -> bool:
        """Whether this call decided the task (`value`): EXAT takes Unix seconds."""
        key = self.done_key + task_id
        return bool(await self.redis.set(key, value, nx=True, exat=int(expires.timestamp())))

    async def read_withdrawals(self) -> None:
        ends = await self.reader.end_offsets(list(self.reader.assignment()))
        for partition, end in ends.items():
            while await self.reader.position(partition) < end:
                batch = await self.reader.getmany(partition, timeout_ms=500)
                for record in batch.get(partition, []):
                    notice = self.checked(record, self.withdrawal_schema)
                    expires = aware(notice["expires_at"])
                    self.withdrawn[notice["task_id"]] = expires
                    # Not set: acted on already, nothing to undo.
                    await self.claim(notice["task_id"], "withdrawn", expires)

    def checked(
        self,
        record: ConsumerRecord[bytes, bytes],
        schemas: tuple[Draft202012Validator, Draft202012Validator],
    ) -> Any:
        """The record's value, once its key, headers and value are what the docs say."""
        schema, headers = schemas
        assert headers.is_valid({k: v.decode() for k, v in record.headers}), record
        assert record.value is not None, record
        assert record.key is not None, record
        value = json.loads(record.value)
        errors = sorted(schema.iter_errors(value), key=str)
        assert not errors, f"{record.topic} against schemas/: {errors}"
        assert record.key.decode() == value["subscriber_id"], record
        times = [v for k, v in value.items() if k.endswith("_at") and v is not None]
        if value.get("deferred"):
            # "`until` the time it was released, as `deliver_after`"
            assert value["deferred"]["until"] == value["deliver_after"], value
            times.append(value["deferred"]["until"])
        times += [r["triggered_at"] for r in value.get("related") or []]
        times += [r["expires_at"] for r in value.get("related") or [] if r.get("expires_at")]
        if "triggered_at" in value:
            # A task's every time is on the clock of its `triggered_at`.
            offset = aware(value["triggered_at"]).utcoffset()
            assert {aware(t).utcoffset() for t in times} == {offset}, value
        for text in times:
            aware(text)
        return value

    async def handle(self, count: int, wait_s: float = 90.0) -> None:
        """Read tasks until `count` more were decided on (acted on or skipped)."""
        deadline = time.monotonic() + wait_s
        goal = len(self.acted) + len(self.skipped) + count
        while len(self.acted) + len(self.skipped) < goal:
            assert time.monotonic() < deadline, f"decided on {self.acted}, {self.skipped}"
            batches = await self.consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    await self.decide(record)
                    # Acted and answered: then acknowledged, this record only (a bare
                    # commit() would take the rest of the batch, not acted on yet, too).
                    done = {TopicPartition(record.topic, record.partition): record.offset + 1}
                    await self.consumer.commit(done)

    async def decide(self, record: ConsumerRecord[bytes, bytes]) -> None:
        task = self.checked(record, self.task_schema)
        task_id, expires = task["task_id"], aware(task["expires_at"])
        await self.read_withdrawals()  # just before deciding, every time
        if not await self.claim(task_id, "1", expires):
            if await self.redis.get(self.done_key + task_id) == b"withdrawn":
                self.skipped.append(task_id)
            return  # or a repeat (re-driven after a worker died): acted on once
        now = dt.datetime.now(dt.UTC)
        assert aware(task["deliver_after"]) <= now < expires, task
        outcome = {
            "task_id": task_id,
            "subscriber_id": task["subscriber_id"],
            "status": await self.answer(task),
            "occurred_at": now.isoformat(),
        }
        assert not list(self.outcome_schema.iter_errors(outcome)), outcome
        for _ in range(2):  # twice, as a producer retrying a send whose ack it lost
            await self.producer.send_and_wait(
                self.outcomes_topic, json.dumps(outcome).encode(), key=record.key
            )
        self.acted.append(task)
        self.outcomes.append(outcome)


def _at(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone(dt.timedelta(hours=8))).replace(microsecond=0).isoformat()


def failure(sub: str, n: int, now: dt.datetime) -> tuple[str, str, dict[str, Any]]:
    event = {"event_id": f"u-{sub}-{n}", "subscriber_id": sub, "occurred_at": _at(now)}
    return "usage", sub, {**event, "kind": "service_failure", "service_code": f"svc-{n}"}


def complaint(sub: str, now: dt.datetime) -> tuple[str, str, dict[str, Any]]:
    event = {"event_id": f"c-{sub}", "subscriber_id": sub, "occurred_at": _at(now)}
    fields = {"complaint_id": f"CMP-{sub}", "category": "network", "severity": 1}
    return "complaint", sub, {**event, **fields, "status": "opened"}


def opt_out(sub: str, channel: str, now: dt.datetime) -> tuple[str, str, dict[str, Any]]:
    event = {"event_id": f"p-{sub}", "subscriber_id": sub, "occurred_at": _at(now)}
    return "profile", sub, {**event, "opt_out": [channel]}


# What each contact came to: by subscriber, by attempt.
ANSWERS = {
    DECLINER: ["declined"],
    CONTROL: ["done_no_change"],
    CALLER: ["unreachable", "unreachable", "done_no_change"],
    QUITTER: ["unreachable"],
}


async def test_a_consumer_from_the_docs_is_heard(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "policy.yaml").write_text(POLICY)
    settings = make_settings(
        metrics_port=free_port(),
        rules=tmp_path / "rules.yaml",
        dispatch_policy=tmp_path / "policy.yaml",
    )
    await topics_for(settings)
    worker = start_worker(settings)
    port = settings.metrics_port
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    firsts = [
        failure(DECLINER, 1, now),
        failure(CONTROL, 1, now),
        complaint(CALLER, now),
        failure(OPTED, 1, now),
        complaint(QUITTER, now),
        failure(GONE, 1, now),
    ]
    await produce(settings, firsts)
    published = await read_topic(settings, "tasks", 6, wait_s=90)
    assert len(published) == 6, worker.log()[-3000:]
    # After the tasks went out, before the consumer reads them, a customer opts out of SMS
    # and another is erased (a profile tombstone).
    later = now + dt.timedelta(seconds=1)
    await produce(settings, [opt_out(OPTED, "sms", later), ("profile", GONE, None)])
    withdrawals = await read_topic(settings, "task_withdrawals", 2, wait_s=60)
    notices = [json.loads(r.value) for r in withdrawals]
    assert {n["subscriber_id"]: n["reason"] for n in notices} == {
        OPTED: "opt_out",
        GONE: "forgotten",
    }
    # Its times: the change's clock (the update's offset; UTC for a tombstone, whose record
    # timestamp has none), and the task's `expires_at` as published.
    expiry = {json.loads(r.value)["task_id"]: json.loads(r.value)["expires_at"] for r in published}
    for n in notices:
        offset = dt.timedelta(hours=8) if n["subscriber_id"] == OPTED else dt.timedelta(0)
        assert aware(n["occurred_at"]).utcoffset() == offset, n
        assert aware(n["withdrawn_at"]).utcoffset() == offset, n
        assert n["expires_at"] == expiry[n["task_id"]], n

    async def answer(task: Mapping[str, Any]) -> str:
        """What the contact came to. The customer whose call goes unanswered opts out of
        calls meanwhile (on the broker before the outcome, so read with it): the call
        made is withdrawn (nothing to undo), and no retry calls them again."""
        if task["subscriber_id"] == QUITTER:
            await produce(settings, [opt_out(QUITTER, "outbound_call", later)])
        return ANSWERS[str(task["subscriber_id"])][int(task["attempt"])]

    async with DispatchConsumer(settings, answer) as dispatch:
        await dispatch.handle(6)
        called = {t["subscriber_id"]: t for t in dispatch.acted}
        assert sorted(called) == [DECLINER, CONTROL, CALLER, QUITTER]
        opted = dispatch.skipped  # OPTED's and GONE's, not acted on
        assert sorted(opted) == sorted(n["task_id"] for n in notices)

    # The worker read the four outcomes (declines are written as they are counted: the
    # call's first retry, 2 s after, comes well after them); then two subscribers' rule
    # fires again, and the unanswered call is tried a second time. The consumer restarted
    # meanwhile: it takes up after the tasks it answered (committed), and reads the
    # withdrawals from the start again.
    await wait_for_metric(port, "moments_task_outcomes_total", {}, 4)
    async with DispatchConsumer(settings, answer) as dispatch:
        await dispatch.handle(1)
        await produce(settings, [failure(DECLINER, 2, now), failure(CONTROL, 2, now)])
        declined = {"moment_type": "failure_sms", "reason": "declined"}
        assert await wait_for_metric(port, "moments_tasks_suppressed_total", declined, 1) == 1
        await dispatch.handle(2)
        assert not dispatch.skipped
        assert set(opted) <= set(dispatch.withdrawn)

        # The control subscriber got the second apology, the declining one none.
        second, *retries = sorted(dispatch.acted, key=lambda t: t["attempt"])
        assert (second["subscriber_id"], second["moment"]["params"]["service_code"]) == (
            CONTROL,
            "svc-2",
        )
        first_call = called[CALLER]
        assert [(t["subscriber_id"], t["attempt"], t["retry_of"]) for t in retries] == [
            (CALLER, 1, first_call["task_id"]),
            (CALLER, 2, first_call["task_id"]),  # the first task's id, not attempt 1's
        ]
        for made in [*called.values(), *dispatch.acted]:  # "a retry keeps its original's"
            assert made["moment_id"] == (made["retry_of"] or made["task_id"]), made
        ids = {first_call["task_id"], *(t["task_id"] for t in retries)}
        assert len(ids) == 3  # a retry is a task of its own, answered under its id
        assert {t["deferred"]["reason"] for t in retries} == {"unreachable_retry"}
        await wait_for_metric(port, "moments_task_outcomes_total", {}, 7)
        await dispatch.read_withdrawals()
        assert set(dispatch.withdrawn) == {*opted, called[QUITTER]["task_id"]}
        # The store says which came first: the withdrawals of the two never acted on, the
        # call made before its customer opted out.
        decided = {t: await dispatch.redis.get(dispatch.done_key + t) for t in dispatch.withdrawn}
        assert decided == {
            **dict.fromkeys(opted, b"withdrawn"),
            called[QUITTER]["task_id"]: b"1",
        }
        # The opted-out customer's retry was made and dropped, not sent.
        dropped = {"moment_type": "complaint_call", "reason": "opt_out"}
        assert await wait_for_metric(port, "moments_tasks_suppressed_total", dropped, 1) == 1

    # Nothing is left for the consumer to answer: the withdrawn task is not waited for.
    pending = tasks_command(settings, "pending", "--json")
    assert pending.returncode == 0, pending.stderr
    assert pending.stdout.strip() == "", pending.stdout
    # And nobody was contacted again: no retry for the customer who opted out, no second
    # apology for the one who declined.
    tasks = await read_topic(settings, "tasks", 9, wait_s=10, settle=3)
    assert sorted(json.loads(r.value)["subscriber_id"] for r in tasks) == sorted(
        [DECLINER, CONTROL, CONTROL, CALLER, CALLER, CALLER, OPTED, QUITTER, GONE]
    )
    # A withdrawal is written after its task went out, never before it.
    sent = {json.loads(r.value)["task_id"]: r.timestamp for r in tasks}
    for record in await read_topic(settings, "task_withdrawals", 3, wait_s=10):
        assert record.timestamp >= sent[json.loads(record.value)["task_id"]]
    # Each outcome counted once, though sent twice (the repeats read by now, a few
    # seconds after the last).
    assert await metric_value(port, "moments_task_outcomes_total") == 7
