"""On the real worker: a task dispatch drops (no capacity) gives its rule's cooldown back
in the state the worker writes, so the subscriber's next moment makes a task again.
The backtest shares the decision code; this is the worker's wiring (sink, then the state
and its changelog) that the unit tests do not run."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.embedded import free_port
from moments.settings import Settings
from moments.stateview import returns_topic

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import metric_value, produce, wait_committed, wait_for_metric

pytestmark = pytest.mark.integration

RULES = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: big_topup
    description: A large top-up
    on: [topup]
    condition: {field: amount, gte: 100}
    task: {family: anomaly, type: big_topup, channel: sms, priority: 3,
           action: thanks, ttl: 3d, cooldown: 30d, description: "Top-up of {amount}"}
"""
POLICY = """
capacity: {"*": {sms: 0}}
reserved_share: 0
overflow: {big_topup: {policy: drop}}
merge: {hold_channels: []}
"""
SUB = "13800138077"


def topup(n: int, at: dt.datetime) -> tuple[str, str, dict[str, object]]:
    event = {
        "event_id": f"cool-{n}",
        "subscriber_id": SUB,
        "occurred_at": at.isoformat(),
        "region": "NJ",
        "amount": 150,
        "channel": "app",
    }
    return "topup", SUB, event


async def counts(port: int) -> dict[str, float]:
    return {
        reason: await metric_value(
            port, "moments_tasks_suppressed_total", {"moment_type": "big_topup", "reason": reason}
        )
        for reason in ("capacity", "cooldown")
    }


async def until_counted(port: int, total: float, wait_s: float = 90.0) -> dict[str, float]:
    """The big_topup moments dropped by capacity or held back by the cooldown, once they
    add up to `total` (raises when they do not within `wait_s`)."""
    deadline = time.monotonic() + wait_s
    got: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            got = await counts(port)
        except OSError:  # the worker is not serving /metrics yet
            got = {}
        if sum(got.values()) >= total:
            return got
        await asyncio.sleep(0.3)
    raise AssertionError(f"big_topup moments counted {got}, not {total}, in {wait_s} s")


async def test_a_task_dropped_for_capacity_leaves_the_next_moment_its_task(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    rules, policy = tmp_path / "rules.yaml", tmp_path / "policy.yaml"
    rules.write_text(RULES)
    policy.write_text(POLICY)
    port = free_port()
    settings = make_settings(metrics_port=port, rules=rules, dispatch_policy=policy)
    await topics_for(settings)
    worker = start_worker(settings)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    await produce(settings, [topup(1, now - dt.timedelta(minutes=10))])
    assert await until_counted(port, 1) == {"capacity": 1, "cooldown": 0}, worker.log()[-3000:]
    # Its batch is done (the state written): the next top-up is another batch's.
    await produce(settings, [topup(2, now - dt.timedelta(minutes=1))])
    got = await until_counted(port, 2)
    assert got == {"capacity": 2, "cooldown": 0}, worker.log()[-3000:]


HELD_POLICY = """
capacity: {"*": {sms: 0}}
reserved_share: 0
overflow: {big_topup: {policy: drop}}
merge: {window: 2s, hold_channels: [sms]}
"""


async def test_a_task_dropped_when_released_gives_it_back_too(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """The SMS waits for the merge window, and the release timer drops it (no capacity)
    outside any batch: its cooldown return, read by the batch loop from
    `<app id>-cooldown-returns` (which the worker creates), removes the mark, and the
    next top-up makes a task again (it waited and was dropped too). Before, it was held
    back by the cooldown for 30 days."""
    rules, policy = tmp_path / "rules.yaml", tmp_path / "policy.yaml"
    rules.write_text(RULES)
    policy.write_text(HELD_POLICY)
    port = free_port()
    settings = make_settings(metrics_port=port, rules=rules, dispatch_policy=policy)
    await topics_for(settings)
    worker = start_worker(settings)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    given = {"result": "given_back"}
    await produce(settings, [topup(1, now - dt.timedelta(minutes=10))])
    await wait_for_metric(port, "moments_cooldown_returns_total", given, 1, wait_s=90)
    await produce(settings, [topup(2, now - dt.timedelta(minutes=1))])
    got = await until_counted(port, 2)
    assert got == {"capacity": 2, "cooldown": 0}, worker.log()[-3000:]
    assert await wait_for_metric(port, "moments_cooldown_returns_total", given, 2) == 2
    # The returns topic's partitions are in the consumer figures as the input's are: a
    # batch loop that stopped reading them shows as lag (MomentsPartitionNotProgressing).
    returns = returns_topic(settings)
    await wait_committed(port, returns, 2)
    assert await metric_value(port, "moments_consumer_lag", {"topic": returns}) == 0
    assert await metric_value(port, "moments_consumer_end_offset", {"topic": returns}) == 2
