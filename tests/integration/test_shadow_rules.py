"""A rule in `mode: shadow` on a real worker: its would-be task is counted in
`moments_shadow_moments_total` (declared at 0 when the rules load), and only the live
rule's task reaches the dispatch topic."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.unit.rules.helpers import CALL_TRIAL, NO_GATES, WELCOME

from .conftest import RulesWorker
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
