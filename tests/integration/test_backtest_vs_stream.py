"""The backtest and the stream make the same tasks from the same events.

A small simulated history (the last few minutes, so the worker's wall clock and the
backtest's event time agree on what is current) goes once through a real worker over
Tansu and Redis and once through `moments backtest`'s code path. The task ids the
dispatch ledger claimed, and the ones published, must be the same sets, and so must the
withdrawals (customers of the history opt out of a channel or close their line after
their tasks went out); a line cut off (a truncated export) is the same dead letter in
both, and the backtest goes on past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from moments.backtest import Backtest
from moments.backtest_input import EventFile
from moments.embedded import free_port
from moments.models import EventType
from moments.sample import daytime_zone
from moments.settings import Settings
from moments.simulate import Mix, SimEvent, simulate
from rules.catalog import load_rules
from sinks.ledger import TaskLedger

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import metric_value, produce, read_topic, values, wait_for_metric

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUBSCRIBERS = 25
EVENTS = 400
SPAN = dt.timedelta(minutes=8)
PROFILE_UPDATES = Mix(usage=0.60, topup=0.12, roaming=0.02, complaint=0.01, profile=0.25)
"""More profile updates than the default mix, of which many opt out or close the line, so
that a history this short withdraws some tasks."""


async def test_stream_and_backtest_make_the_same_task_ids(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    redis_url: str,
    tmp_path: Path,
) -> None:
    start = dt.datetime.now(dt.UTC) - SPAN
    stream = simulate(
        SUBSCRIBERS,
        EVENTS / SPAN.total_seconds(),
        seed=11,
        plant_rate=0.3,
        start=start,
        mix=PROFILE_UPDATES,
        opt_out_share=0.4,
        close_share=0.1,
    )
    events = [e for _, e in zip(range(SUBSCRIBERS + EVENTS), stream, strict=False)]
    # The stream gates a task at its wall clock, the backtest at its event time: up to
    # SPAN apart. No quiet-hours edge may fall in between, or the two rightly differ
    # (seen twice: a roaming zone's 08:00, a customer's 12:30-13:30). So every local
    # clock involved is in a zone where it is daytime, and only night windows apply.
    zone = daytime_zone(start)
    for e in events:
        if "timezone" in e.value and e.event_type in (EventType.PROFILE, EventType.ROAMING):
            e.value["timezone"] = zone
        if "quiet_hours" in e.value:
            e.value["quiet_hours"] = [w for w in e.value["quiet_hours"] if int(w[:2]) >= 18]
    lines = [e.to_json_line() for e in events]
    cut = next(e for e in events if e.event_type is EventType.TOPUP).to_json_line()[:60]
    lines.insert(len(lines) // 2, cut)
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(line + b"\n" for line in lines))

    backtest = await Backtest(load_rules(None)).run(EventFile(history))
    assert backtest.dead_letters == {"invalid_json": 1}
    published = {str(t["task_id"]) for t in backtest.tasks()}
    assert len(published) >= 10, "the history should make a fair number of tasks"
    assert set(backtest.ledger) >= published
    withdrawn = sorted(_withdrawal(orjson.loads(p.payload)) for p in backtest.withdrawn)
    assert len(withdrawn) >= 3, "the history should withdraw some tasks"

    port = free_port()
    settings = make_settings(metrics_port=port)
    await topics_for(settings)
    worker = start_worker(settings)
    done = 0
    for chunk in _chunks(events):
        await produce(settings, [(e.event_type.value, e.key, e.value) for e in chunk])
        done += len(chunk)
        await _processed(port, done)
    await produce(settings, [(EventType.TOPUP.value, None, cut)])
    rejected = {"event_type": "topup", "reason": "invalid_json"}
    assert await wait_for_metric(port, "moments_events_rejected_total", rejected, 1) == 1
    records = await read_topic(settings, "tasks", count=len(published), wait_s=60, settle=3)
    streamed = {str(t["task_id"]) for t in values(records)}
    claimed = await _ledger_states(redis_url, f"moments:{settings.app_id}:")

    differ = {
        i: (i in streamed, backtest.ledger.get(i), claimed.get(i)) for i in streamed ^ published
    }
    assert not differ, (
        f"(streamed, backtest ledger, stream ledger): {differ}\n{worker.log()[-2000:]}"
    )
    assert claimed == backtest.ledger  # the same ids, each sent, merged, deferred or dropped
    notices = await read_topic(
        settings, "task_withdrawals", count=len(withdrawn), wait_s=30, settle=3
    )
    assert sorted(_withdrawal(v) for v in values(notices)) == withdrawn


def _withdrawal(notice: dict[str, Any]) -> tuple[str, ...]:
    """What a withdrawal says of the task and the change, the same in both: not
    `withdrawn_at` (the worker's wall clock, the backtest's event time)."""
    keys = ("task_id", "subscriber_id", "channel", "moment_type", "reason", "expires_at")
    at = dt.datetime.fromisoformat(str(notice["occurred_at"])).timestamp()
    return (*(str(notice[k]) for k in keys), repr(at))


def _chunks(events: list[SimEvent]) -> list[list[SimEvent]]:
    """Runs of events with no subscriber twice: the stream reads its five topics side by
    side, so one subscriber's events are produced a chunk at a time, each processed
    before the next, and reach the worker in event-time order as they do the backtest."""
    chunks: list[list[SimEvent]] = [[]]
    subs: set[str] = set()
    for e in events:
        if e.key in subs:
            chunks.append([])
            subs.clear()
        chunks[-1].append(e)
        subs.add(e.key)
    return chunks


async def _processed(port: int, count: int, wait_s: float = 60) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(OSError):  # /metrics is not up yet
            if await metric_value(port, "moments_events_total") >= count:
                return
        assert time.monotonic() < deadline, f"the worker did not process {count} events"
        await asyncio.sleep(0.05)


async def _ledger_states(redis_url: str, prefix: str) -> dict[str, str]:
    client = Redis.from_url(redis_url)
    ledger = TaskLedger(client, prefix, 3600)
    try:
        keys = [k.decode() async for k in client.scan_iter(match=f"{prefix}task:*")]
        ids = [k.removeprefix(f"{prefix}task:") for k in keys]
        return {i: await ledger.state(i) or "gone" for i in ids}
    finally:
        await client.aclose()
