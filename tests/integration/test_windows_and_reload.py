"""A real worker closes windows for a silent subscriber, and swaps rules without a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.embedded import free_port
from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import metric_value, metrics_text, produce, read_topic, values, wait_for_metric

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
LI = "13800138001"


def daytime() -> str:
    """A zone where it is daytime now, so quiet hours (21:00-08:00 local) hold no task back
    whenever the test runs. Chosen once at collection, it could be 17:59 there then, and a
    test run three hours later in the session found quiet hours (flakes)."""
    return daytime_zone(dt.datetime.now(dt.UTC))


RULE = """
rules:
  - id: {id}
    description: first roaming per country
    on: [roaming]
    condition: {{first_time: country}}
    task: {{family: first_time, type: {type}, channel: sms, priority: 3, action: a,
           ttl: 24h, description: "hello {{country}}"}}
"""


def ago(**delta: float) -> str:
    return (dt.datetime.now(SHANGHAI) - dt.timedelta(**delta)).replace(microsecond=0).isoformat()


def roaming(event_id: str, country: str) -> tuple[str, str, dict[str, Any]]:
    value = {
        "event_id": event_id,
        "subscriber_id": LI,
        "occurred_at": ago(minutes=5),
        "country": country,
        "roaming_type": "international",
        "timezone": daytime(),  # the visited place's time: quiet hours hold nothing back
    }
    return ("roaming", LI, value)


async def test_a_silent_subscriber_gets_the_absence_task_from_the_wall_clock(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    settings = make_settings(metrics_port=free_port(), idle_after_seconds=1.0)
    await topics_for(settings)
    worker = start_worker(settings)
    last_seen = ago(days=8)
    usage = {"event_id": "u1", "subscriber_id": LI, "occurred_at": last_seen, "kind": "data"}
    home = {"event_id": "p1", "subscriber_id": LI, "occurred_at": last_seen, "timezone": daytime()}
    await produce(settings, [("profile", LI, home), ("usage", LI, usage)])
    # No more events: only the quiet partition's wall clock can close the days since.
    records = await read_topic(settings, "tasks", count=1, wait_s=60, settle=3)
    tasks = values(records)
    assert [t["moment"]["type"] for t in tasks] == ["no_activity"], worker.log()[-3000:]
    assert tasks[0]["moment"]["params"]["silent_days"] >= 7
    assert tasks[0]["evidence"] == []


async def test_a_broken_rules_file_is_refused_and_a_good_one_swapped_in(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(id="old", type="old_welcome"))
    port = free_port()
    settings = make_settings(metrics_port=port, rules=rules, rules_reload_seconds=0.5)
    await topics_for(settings)
    worker = start_worker(settings)
    await wait_for_metric(port, "moments_rules_loaded", {}, 1, wait_s=60)

    assert await metric_value(port, "moments_rules_reload_total", {"result": "error"}) == 0
    assert await metric_value(port, "moments_rules_refused") == 0
    assert "_created" not in await metrics_text(port)  # half the exposition, read by nothing
    rules.write_text("rules:\n  - id: [broken\n")
    await wait_for_metric(port, "moments_rules_reload_total", {"result": "error"}, 1, wait_s=30)
    assert await metric_value(port, "moments_rules_refused") == 1  # MomentsRulesRefused
    await produce(settings, [roaming("r1", "JP")])
    first = values(await read_topic(settings, "tasks", count=1, wait_s=60))
    assert [t["moment"]["type"] for t in first] == ["old_welcome"]  # the old rules stayed
    assert "rules reload refused" in worker.log()

    rules.write_text(RULE.format(id="new", type="new_welcome"))
    await wait_for_metric(port, "moments_rules_reload_total", {"result": "ok"}, 1, wait_s=30)
    assert await metric_value(port, "moments_rules_refused") == 0
    await produce(settings, [roaming("r2", "TH")])
    records = await read_topic(settings, "tasks", count=2, wait_s=60, settle=2)
    assert [t["moment"]["type"] for t in values(records)] == ["old_welcome", "new_welcome"]


async def test_sighup_reloads_when_polling_is_off(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(id="old", type="old_welcome"))
    port = free_port()
    settings = make_settings(metrics_port=port, rules=rules, rules_reload_seconds=0)
    await topics_for(settings)
    worker = start_worker(settings)
    await wait_for_metric(port, "moments_rules_loaded", {}, 1, wait_s=60)
    rules.write_text(RULE.format(id="new", type="new_welcome"))
    worker.proc.send_signal(signal.SIGHUP)
    await wait_for_metric(port, "moments_rules_reload_total", {"result": "ok"}, 1, wait_s=30)
    await produce(settings, [roaming("r1", "JP")])
    records = await read_topic(settings, "tasks", count=1, wait_s=60, settle=1)
    assert [t["moment"]["type"] for t in values(records)] == ["new_welcome"]


async def test_a_broken_dispatch_policy_is_refused_and_a_good_one_swapped_in(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """Read at start-up only, a broken policy file showed at the next rollout, as a worker
    that would not start (ops review)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("merge: {window: 30m}\n")
    port = free_port()
    settings = make_settings(metrics_port=port, dispatch_policy=policy, rules_reload_seconds=0.5)
    await topics_for(settings)
    worker = start_worker(settings)
    await wait_for_metric(port, "moments_rules_loaded", {}, 1, wait_s=60)
    assert await metric_value(port, "moments_dispatch_policy_refused") == 0
    policy.write_text("merge: {window: 30x}\n")
    await wait_for_metric(port, "moments_dispatch_policy_refused", {}, 1, wait_s=30)
    assert "dispatch policy reload refused" in worker.log()
    assert "merge.window" in worker.log()
    policy.write_text("merge: {window: 10m}\n")
    deadline = time.monotonic() + 30
    while await metric_value(port, "moments_dispatch_policy_refused") != 0:
        assert time.monotonic() < deadline, worker.log()[-3000:]
        await asyncio.sleep(0.5)
    assert "dispatch policy reloaded" in worker.log()
