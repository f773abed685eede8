"""Workers join and leave under load: every task exactly once.

Eight partitions, a steady stream of first international roamings for distinct
subscribers (each makes exactly one task; the visited place is where it is
daytime, so quiet hours hold nothing back). A second worker joins mid-stream, a
third joins, then the first leaves: each change is a rebalance with records in
flight. At the end the dispatch topic holds one task per subscriber, no more.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from moments.embedded import free_port
from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import produce, read_topic, values, wait_for_metric

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUBSCRIBERS = 600
WAVES = 6


def wave(index: int, zone: str) -> list[tuple[str, str, dict[str, Any]]]:
    per = SUBSCRIBERS // WAVES
    out = []
    for n in range(index * per, (index + 1) * per):
        sub = str(15_000_000_000 + n)
        out.append(
            (
                "roaming",
                sub,
                {
                    "event_id": f"scale-{n}",
                    "subscriber_id": sub,
                    "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
                    "country": "FR",
                    "roaming_type": "international",
                    "timezone": zone,
                },
            )
        )
    return out


def short_read(per_subscriber: Counter[str], workers: dict[str, WorkerProcess]) -> str:
    """What a reader needs when tasks are missing: which waves lost them, and what each
    worker's group membership and warnings were (a plain string: pytest shortens reprs)."""
    per = SUBSCRIBERS // WAVES
    missing = Counter(
        (n // per) for n in range(SUBSCRIBERS) if str(15_000_000_000 + n) not in per_subscriber
    )
    got = len(per_subscriber)
    lines = [f"{got} of {SUBSCRIBERS} subscribers got a task; missing by wave {dict(missing)}"]
    pattern = re.compile(r"Joined group|Successfully synced|Revoking|WARNING|ERROR")
    for name, worker in workers.items():
        notable = [line[:300] for line in worker.log().splitlines() if pattern.search(line)]
        exit_code = worker.proc.poll()
        lines.append(f"--- {name} worker (exit {exit_code}): {len(notable)} notable, last 25:")
        lines.extend(notable[-25:])
    return "\n".join(lines)


async def joined(port: int) -> None:
    """Until the worker serving /metrics on `port` has joined the group (its first
    rebalance done)."""
    await wait_for_metric(port, "moments_consumer_rebalance_seconds_count", {}, 1, wait_s=120)


async def test_rebalances_under_load_lose_and_duplicate_nothing(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    ports = [free_port() for _ in range(3)]
    base = make_settings(partitions=8, metrics_port=ports[0])
    await topics_for(base)
    first = start_worker(base)
    await produce(base, wave(0, zone))
    await wait_for_metric(ports[0], "moments_events_total", {"event_type": "roaming"}, 1)
    await produce(base, wave(1, zone))
    second = start_worker(make_settings(partitions=8, metrics_port=ports[1]))  # joins
    await produce(base, wave(2, zone))
    await joined(ports[1])
    await produce(base, wave(3, zone))
    third = start_worker(make_settings(partitions=8, metrics_port=ports[2]))  # joins
    await produce(base, wave(4, zone))
    # In the group before the first leaves: a fixed 2 s here let the first stop before the
    # third had even asked to join, on a loaded machine (a leave in mid-join is
    # test_group_leave's).
    await joined(ports[2])
    first.stop()  # leaves (SIGTERM): its partitions move to the others
    await produce(base, wave(5, zone))

    records = await read_topic(base, "tasks", count=SUBSCRIBERS, wait_s=180, settle=8)
    tasks = values(records)
    per_subscriber = Counter(str(t["subscriber_id"]) for t in tasks)
    workers = {"first": first, "second": second, "third": third}
    if len(per_subscriber) < SUBSCRIBERS:
        print(short_read(per_subscriber, workers))  # in full under "Captured stdout call"
    assert len(per_subscriber) == SUBSCRIBERS, short_read(per_subscriber, workers)
    assert max(per_subscriber.values()) == 1, per_subscriber.most_common(3)
    assert len({t["task_id"] for t in tasks}) == len(tasks) == SUBSCRIBERS
