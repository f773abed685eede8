"""A rule in `mode: shadow` on a real worker: its would-be task is counted in
`moments_shadow_moments_total` (declared at 0 when the rules load), and only the live
rule's task reaches the dispatch topic."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.embedded import free_port
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import metric_value, produce, read_topic, values, wait_for_metric

pytestmark = [pytest.mark.integration]

SUB = "13800138007"
RULES = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: welcome
    description: First international roaming in a country
    on: [roaming]
    when: {roaming_type: international}
    condition: {first_time: country}
    task: {family: first_time, type: roaming_welcome, channel: sms, priority: 3,
           action: welcome, ttl: 24h, description: "Welcome to {country}"}
  - id: call_trial
    mode: shadow
    description: A call on every arrival, on trial
    on: [roaming]
    when: {roaming_type: international}
    condition: {first_time: country}
    task: {family: first_time, type: roaming_call, channel: outbound_call, priority: 2,
           action: call, ttl: 24h, description: "Call about {country}"}
"""
SHADOW = "moments_shadow_moments_total"


async def _served(port: int, line: str, wait_s: float = 60.0) -> bool:
    """Whether the worker's /metrics shows `line` within `wait_s`."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            text = await asyncio.to_thread(
                lambda: (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    .read()
                    .decode()
                )
            )
        except OSError:
            text = ""
        if line in text.splitlines():
            return True
        await asyncio.sleep(0.3)
    return False


async def test_a_shadow_rule_is_counted_and_sends_nothing(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    port = free_port()
    settings = make_settings(metrics_port=port, rules=rules)
    await topics_for(settings)
    worker = start_worker(settings)
    declared = {"rule_id": "call_trial", "outcome": "task", "reason": ""}
    # Declared at 0 once the worker is ready, before any moment: rate() sees the first.
    line = f'{SHADOW}{{outcome="task",reason="",rule_id="call_trial"}} 0.0'
    assert await _served(port, line), worker.log()[-3000:]

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
