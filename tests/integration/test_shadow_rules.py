"""A rule in `mode: shadow` on a real worker: its would-be task is counted in
`moments_shadow_moments_total` (declared at 0 when the rules load), and only the live
rule's task reaches the dispatch topic."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.embedded import free_port
from moments.settings import Settings
from tests.unit.rules.helpers import CALL_TRIAL, NO_GATES, WELCOME

from .conftest import MakeSettings, RulesWorker, WorkerProcess
from .kafka_io import metric_value, produce, read_topic, served_line, values, wait_for_metric

pytestmark = [pytest.mark.integration]

SUB = "13800138007"
RULES = NO_GATES + "rules:" + WELCOME + CALL_TRIAL
SHADOW = "moments_shadow_moments_total"


async def test_a_shadow_rule_is_counted_and_sends_nothing(worker_on_rules: RulesWorker) -> None:
    settings, worker = await worker_on_rules(RULES)
    port = settings.metrics_port
    declared = {"rule_id": "call_trial", "outcome": "task", "reason": ""}
    # Declared at 0 once the worker is ready, before any moment: rate() sees the first.
    line = f'{SHADOW}{{outcome="task",reason="",rule_id="call_trial"}} 0.0'
    assert await served_line(port, line), worker.log()[-3000:]

    event = {
        "event_id": "r-1",
        "subscriber_id": SUB,
        "occurred_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "country": "JP",
        "roaming_type": "international",
    }
    await produce(settings, [("roaming", SUB, event)])
    await wait_for_metric(port, SHADOW, declared, 1)
    await wait_for_metric(port, "moments_tasks_published_total", {}, 1)
    tasks = values(await read_topic(settings, "tasks", 1, settle=2.0))
    assert [t["moment"]["rule_id"] for t in tasks] == ["welcome"], worker.log()[-3000:]
    assert await metric_value(port, "moments_detected_total") == 1


async def test_before_moments_live_from_every_rule_is_counted_and_nothing_is_sent(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """A worker going live tomorrow: its events build state and are counted as shadow."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(NO_GATES + "rules:" + WELCOME)
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    settings = make_settings(
        metrics_port=free_port(), rules=rules, live_from=tomorrow.isoformat(timespec="seconds")
    )
    await topics_for(settings)
    worker = start_worker(settings)
    port = settings.metrics_port
    event = {
        "event_id": "r-1",
        "subscriber_id": SUB,
        "occurred_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "country": "JP",
        "roaming_type": "international",
    }
    await produce(settings, [("roaming", SUB, event)])
    shadow = {"rule_id": "welcome", "outcome": "task", "reason": ""}
    await wait_for_metric(port, SHADOW, shadow, 1)
    assert await read_topic(settings, "tasks", 1, wait_s=3) == [], worker.log()[-3000:]
    assert await metric_value(port, "moments_detected_total") == 0
    live_from = await metric_value(port, "moments_live_from_timestamp_seconds")
    assert live_from == int(tomorrow.timestamp())
    assert "MOMENTS_LIVE_FROM" in worker.log()
