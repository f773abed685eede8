"""Withdrawals over a real broker and Redis: a task published, then the customer's opt-out of
its channel, and the withdrawal is on `moments.task-withdrawals` once, also after the
worker is killed and a new one reads the profile update again (the ledger's published
index, not the worker, says what was withdrawn); and the sink's own repeat after a crash
between the notice and its record carries the same task id (docs/consuming-tasks.md,
"Withdrawn tasks")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from moments.backtest import Backtest
from moments.backtest_input import EventFile
from moments.embedded import free_port
from moments.enums import WithdrawReason
from moments.models import ServiceTask
from moments.producer import start_producer
from moments.settings import Settings
from rules.catalog import load_rules
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.metrics import Metrics
from sinks.stores import redis_stores
from sinks.withdrawals import ProfileChange

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import metric_value, produce, read_topic, read_written, wait_for_metric

pytestmark = [pytest.mark.integration]

SUB = "13800138021"
RULES = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: roaming_sms
    description: A text on the first arrival in a country
    on: [roaming]
    when: {roaming_type: international}
    condition: {first_time: country}
    task: {family: first_time, type: roaming_sms, channel: sms, priority: 3,
           action: welcome, ttl: 24h, description: "Welcome to {country}"}
"""


def _profile(event_id: str, when: dt.datetime, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "subscriber_id": SUB, "occurred_at": when.isoformat(), **fields}


async def test_an_opt_out_after_publishing_withdraws_the_task_once_across_a_restart(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = make_settings(metrics_port=free_port(), rules=rules)
    await topics_for(settings)
    first = start_worker(settings)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    roaming = {
        "event_id": "r-1",
        "subscriber_id": SUB,
        "occurred_at": now.isoformat(),
        "country": "JP",
        "roaming_type": "international",
    }
    await produce(settings, [("roaming", SUB, roaming)])
    (task_record,) = await read_topic(settings, "tasks", 1, wait_s=90)
    task = orjson.loads(task_record.value)

    # An opt-out of another channel withdraws nothing; the SMS opt-out withdraws the task.
    later = now + dt.timedelta(seconds=1)
    await produce(settings, [("profile", SUB, _profile("p-1", later, opt_out=["manager"]))])
    await wait_for_metric(
        settings.metrics_port, "moments_events_total", {"event_type": "profile"}, 1
    )
    opt_out = _profile("p-2", later + dt.timedelta(seconds=1), opt_out=["sms"])
    await produce(settings, [("profile", SUB, opt_out)])
    (record,) = await read_topic(settings, "task_withdrawals", 1, wait_s=60)
    assert record.key == SUB.encode()
    assert dict(record.headers) == {"content-type": b"application/json"}
    notice = orjson.loads(record.value)
    assert notice["task_id"] == task["task_id"]
    assert (notice["reason"], notice["channel"], notice["moment_type"]) == (
        "opt_out",
        "sms",
        "roaming_sms",
    )
    occurred = dt.datetime.fromisoformat(notice["occurred_at"])
    assert occurred == dt.datetime.fromisoformat(opt_out["occurred_at"])
    assert notice["expires_at"] == task["expires_at"]
    counted = {"moment_type": "roaming_sms", "reason": "opt_out"}
    assert (
        await wait_for_metric(settings.metrics_port, "moments_tasks_withdrawn_total", counted, 1)
        == 1
    )

    # KilledError at once (its last offsets maybe not committed), a new worker reads the profile
    # update again, delivered twice upstream, and another opt-out of SMS: nothing more.
    first.kill()
    again = _profile("p-3", later + dt.timedelta(seconds=2), opt_out=["sms", "outbound_call"])
    await produce(settings, [("profile", SUB, opt_out), ("profile", SUB, again)])
    second_settings = make_settings(metrics_port=free_port(), rules=rules)
    second = start_worker(second_settings)
    await second.wait_for_log(r"runtime ready", wait_s=90)
    port = second_settings.metrics_port
    await wait_for_metric(port, "moments_events_total", {"event_type": "profile"}, 1, wait_s=90)
    withdrawals = await read_topic(settings, "task_withdrawals", 2, wait_s=5, settle=2)
    assert [orjson.loads(r.value)["task_id"] for r in withdrawals] == [task["task_id"]], (
        second.log()[-3000:]
    )
    assert not await metric_value(port, "moments_tasks_withdrawn_total")

    # Nothing more is expected of it: it left the unanswered index, and the published one
    # names it only as withdrawn (for a tombstone to erase its body).
    redis = Redis.from_url(settings.redis_url)
    try:
        prefix = f"moments:{settings.app_id}:"
        assert await redis.zscore(f"{prefix}unanswered:sms", task["task_id"]) is None
        members = await redis.zrange(f"{prefix}published:{SUB}", 0, -1)
        assert members == [f"withdrawn:{task['task_id']}".encode()]
    finally:
        await redis.aclose()


async def test_a_crash_before_the_record_sends_the_same_notice_again(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    """The sink over the worker's stores: a task confirmed, then a tombstone. The first
    withdrawal is published and the worker dies before the ledger records it (the index
    still holds the task); the re-read batch publishes the notice again with the same task
    id and reason, then records it; a third reading finds nothing."""
    settings = make_settings()
    await topics_for(settings)
    redis = Redis.from_url(settings.redis_url)
    producer = await start_producer(settings)
    try:
        prefix = f"moments:{settings.app_id}:"
        ledger = TaskLedger(redis, prefix, settings.ledger_ttl_seconds)
        sink = TaskSink(
            producer,
            settings.topic("tasks"),
            redis_stores(ledger),
            Metrics(),
            withdrawals_topic=settings.topic("task_withdrawals"),
        )
        now = dt.datetime.now(dt.UTC)
        task = _task(now)
        await ledger.claim([(task["task_id"], orjson.dumps(task))])
        await sink._send([ServiceTask.model_validate(task)])
        closed = [ProfileChange(SUB, WithdrawReason.CLOSED, now)]

        async def dies(items: object) -> None:
            raise KilledError

        real = ledger.withdrawn
        ledger.withdrawn = dies  # type: ignore[method-assign]
        with pytest.raises(KilledError):
            await sink.withdrawals.withdraw(closed)
        ledger.withdrawn = real  # type: ignore[method-assign]
        assert [w.task_id for w in await sink.withdrawals.withdraw(closed)] == [task["task_id"]]
        assert await sink.withdrawals.withdraw(closed) == []
        # A tombstone later finds nothing to withdraw.
        gone = [ProfileChange(SUB, WithdrawReason.FORGOTTEN, now)]
        assert await sink.withdrawals.withdraw(gone) == []
        assert not await redis.exists(f"{prefix}published:{SUB}")
    finally:
        await producer.stop()
        await redis.aclose()
    records = await read_written(settings, "task_withdrawals", at_least=2)
    notices = [orjson.loads(r.value) for r in records]
    assert [n["task_id"] for n in notices] == [task["task_id"]] * 2
    assert notices[0] == {**notices[1], "withdrawn_at": notices[0]["withdrawn_at"]}
    assert notices[0]["reason"] == "closed"


class KilledError(Exception):
    """The worker dying (no error the sink retries)."""


def _task(now: dt.datetime) -> dict[str, Any]:
    return {
        "task_id": "c" * 32,
        "subscriber_id": SUB,
        "moment": {
            "family": "first_time",
            "type": "roaming_sms",
            "rule_id": "roaming_sms",
            "rule_version": "1",
            "description": "Welcome",
            "params": {},
        },
        "priority": 3,
        "channel": "sms",
        "action": "welcome",
        "triggered_at": now.isoformat(),
        "created_at": now.isoformat(),
        "deliver_after": now.isoformat(),
        "expires_at": (now + dt.timedelta(hours=24)).isoformat(),
        "evidence": ["r-1"],
    }


async def test_a_tombstone_withdraws_the_erased_subscribers_tasks(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """Through a real worker: the SMS published, then a tombstone (a null value) on the
    profile topic; the withdrawal says `forgotten`, dated by the tombstone's record, and
    the ledger keeps no index of the subscriber's tasks."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = make_settings(metrics_port=free_port(), rules=rules)
    await topics_for(settings)
    worker = start_worker(settings)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    roaming = {
        "event_id": "r-1",
        "subscriber_id": SUB,
        "occurred_at": now.isoformat(),
        "country": "KR",
        "roaming_type": "international",
    }
    await produce(settings, [("roaming", SUB, roaming)])
    (task_record,) = await read_topic(settings, "tasks", 1, wait_s=90)
    task = orjson.loads(task_record.value)
    await produce(settings, [("profile", SUB, None)])
    records = await read_topic(settings, "task_withdrawals", 1, wait_s=60, settle=1)
    assert len(records) == 1, worker.log()[-3000:]
    notice = orjson.loads(records[0].value)
    assert (notice["task_id"], notice["reason"]) == (task["task_id"], "forgotten")
    (tombstone,) = await read_topic(settings, "profile", 1, wait_s=10)
    erased = dt.datetime.fromisoformat(notice["occurred_at"]).timestamp()
    assert abs(erased - tombstone.timestamp / 1000) < 1  # the tombstone's own time
    redis = Redis.from_url(settings.redis_url)
    try:
        assert not await redis.exists(f"moments:{settings.app_id}:published:{SUB}")
    finally:
        await redis.aclose()


async def test_the_backtest_withdraws_what_the_stream_withdraws(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """The same events through `moments backtest`'s code path and through a worker: the
    same withdrawals (task id and reason), and the backtest's are apart from its tasks."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    other = "13900139022"
    events: list[tuple[str, str, dict[str, Any]]] = []
    for sub in (SUB, other):
        events.append(
            (
                "roaming",
                sub,
                {
                    "event_id": f"r-{sub}",
                    "subscriber_id": sub,
                    "occurred_at": start.isoformat(),
                    "country": "JP",
                    "roaming_type": "international",
                },
            )
        )
    later = start + dt.timedelta(minutes=1)
    events.append(("profile", SUB, _profile("p-sms", later, opt_out=["sms"])))
    # The other subscriber opts out of calls only: their SMS stands.
    events.append(
        (
            "profile",
            other,
            {**_profile("p-call", later, opt_out=["outbound_call"]), "subscriber_id": other},
        )
    )
    history = tmp_path / "history.jsonl"
    history.write_bytes(
        b"".join(orjson.dumps({"type": kind, **value}) + b"\n" for kind, _, value in events)
    )
    result = await Backtest(load_rules(rules)).run(EventFile(history))
    assert len(result.published) == 2
    backtest = {
        (n["task_id"], n["reason"]) for n in (orjson.loads(p.payload) for p in result.withdrawn)
    }
    assert len(backtest) == 1

    settings = make_settings(metrics_port=free_port(), rules=rules)
    await topics_for(settings)
    worker = start_worker(settings)
    await produce(settings, events[:2])
    assert len(await read_topic(settings, "tasks", 2, wait_s=90)) == 2
    await produce(settings, events[2:])
    records = await read_topic(settings, "task_withdrawals", 1, wait_s=60, settle=2)
    stream = {(n["task_id"], n["reason"]) for n in (orjson.loads(r.value) for r in records)}
    assert stream == backtest, worker.log()[-3000:]
