"""The waiting gauge is read from the deferral queue only when a decision changed the
queue: a batch of tasks sent at once costs no extra store call for it."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from sinks.deferral import DeferralQueue
from sinks.policy import DispatchPolicy
from sinks.stores import Parking

from .conftest import HOUR, NOW, Worker, task

pytestmark = pytest.mark.integration


async def test_waiting_is_counted_when_the_queue_changes_only(
    make_worker: Callable[..., Worker],
) -> None:
    w = make_worker(DispatchPolicy.model_validate({"merge": {"hold_channels": []}}))
    counted = 0
    count_waiting = w.sink.deferral.waiting_and_due

    async def counting() -> tuple[int, float | None]:
        nonlocal counted
        counted += 1
        return await count_waiting()

    w.sink.deferral.waiting_and_due = counting  # type: ignore[method-assign]
    await w.send(task("now1", sub="13300000001"), task("now2", sub="13300000002"))
    assert counted == 0  # both sent at once: the queue is as it was
    assert (
        w.sample(
            "moments_tasks_published_total",
            moment_type="first_international_roaming",
            channel="sms",
        )
        == 2
    )

    later = NOW + HOUR
    await w.send(task("later", sub="13300000003", deliver_after=later, deferred="quiet_hours"))
    assert counted == 1
    assert w.sample("moments_tasks_waiting") == 1
    # When the first waiting task is due: MomentsDeferredTasksOverdue compares it with now.
    assert w.sample("moments_tasks_earliest_due_timestamp_seconds") == later.timestamp()

    assert await w.sink.release_due(now=(later + HOUR / 60).timestamp()) == 1
    assert counted == 2
    assert w.sample("moments_tasks_waiting") == 0
    assert w.sample("moments_tasks_earliest_due_timestamp_seconds") == 0


async def test_a_tick_releases_batch_after_batch_while_they_come_full(
    make_worker: Callable[..., Worker],
) -> None:
    """One batch a tick (500 by default, every 10 s) left a night's queue, all due at
    08:00, at 50 tasks/s a worker (SRE re-check: 200,000 tasks took over an hour)."""
    policy = DispatchPolicy.model_validate({"merge": {"hold_channels": []}, "release_batch": 2})
    w = make_worker(policy)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    subs = [f"133000001{n:02d}" for n in range(7)]
    await w.send(
        *(
            task(f"n{n}", sub=s, deliver_after=soon, deferred="quiet_hours")
            for n, s in enumerate(subs)
        )
    )
    assert w.sample("moments_tasks_waiting") == 7
    await asyncio.sleep(1.5)
    await w.sink.redrive(older_than=3600)  # the timer's tick
    assert w.sample("moments_tasks_waiting") == 0
    assert w.sample("moments_tasks_released_total") == 7


async def test_every_waiting_task_is_listed_with_its_due_time(
    make_worker: Callable[..., Worker],
) -> None:
    """`waiting_tasks` on both stores: every task `waiting` counts, by its due time, one
    due and ranked but not released yet (a negative score in Redis) included. Read a
    chunk a call (ZSCAN), never the whole queue in one command: 2,500 tasks take
    several calls."""
    w = make_worker()
    base = (NOW + HOUR).timestamp()
    due = {f"w{n:04d}": base + n for n in range(2500)}
    assert all(await w.ledger.claim([(i, b"{}") for i in due]))
    items = [Parking(i, f"1330{n:07d}", b"", at, 0.0) for n, (i, at) in enumerate(due.items())]
    assert all(await w.sink.deferral.park_many(items))
    [released] = await w.sink.deferral.release(now=base + 1, limit=1)  # w0001 ranked only
    del due[released.task_id]
    assert await w.sink.deferral.waiting() == len(due) == 2499
    queue, calls = w.sink.deferral, list[int]()
    if isinstance(queue, DeferralQueue):  # the Redis store: a ZSCAN page a call
        scan = queue.redis.zscan

        async def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return await scan(*args, **kwargs)

        queue.redis.zscan = counted  # type: ignore[method-assign]
    assert await queue.waiting_tasks() == due
    assert len(calls) >= 2 or not isinstance(queue, DeferralQueue)
