"""A real worker's /readyz says "not yet" until it has joined the group with its state,
then 200; /livez answers 200 throughout; neither needs the /metrics login; the health
check of docker-compose.yml agrees."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from moments.embedded import free_port
from moments.metrics_server import scrape
from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import first_roamings
from .kafka_io import http_get, produce, read_topic

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
READY = (200, "ok: in the consumer group with its state restored\n")


def compose_healthcheck(port: int) -> list[str]:
    """docker-compose.yml's health check of a detector, aimed at `port`."""
    compose = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())
    command = list(compose["services"]["detector-1"]["healthcheck"]["test"])
    assert command[:2] == ["CMD", "python"]
    return [sys.executable, *(c.replace(":9308/", f":{port}/") for c in command[2:])]


async def exit_code(command: list[str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await proc.wait()


async def wait_ready(port: int, worker: WorkerProcess) -> list[tuple[int, str]]:
    """/readyz of a starting worker, polled until 200 (asserting /livez stays 200)."""
    answers: list[tuple[int, str]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = http_get(port, "/readyz")
        if ready is not None:
            answers.append(ready)
            live = http_get(port, "/livez")
            assert live is not None
            assert live[0] == 200, (live, worker.log()[-2000:])
            if ready[0] == 200:
                break
        await asyncio.sleep(0.2)
    assert answers
    assert answers[-1] == READY, (answers[-3:], worker.log()[-2000:])
    return answers


async def test_readyz_turns_ok_once_a_worker_has_joined_and_livez_stays_ok(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    port = free_port()
    login = ("prom", "scrape-pw")
    # One partition: the second worker gets none, and is ready all the same.
    settings = make_settings(
        metrics_port=port, metrics_username=login[0], metrics_password=login[1], partitions=1
    )
    await topics_for(settings)
    healthcheck = compose_healthcheck(port)
    worker = start_worker(settings)
    for _ in range(600):  # until the port answers
        if http_get(port, "/readyz") is not None:
            break
        await asyncio.sleep(0.1)
    assert await exit_code(healthcheck) == 1  # the join alone takes the rebalance timeout
    answers = await wait_ready(port, worker)
    # It answered before it was ready, and said why.
    waiting = [body for status, body in answers if status == 503]
    assert waiting, answers
    assert all(
        body.startswith(
            (
                "fail: starting",
                "fail: creating the output topics",
                "fail: connecting to Redis",
                "fail: joining",
                "fail: the consumer group",
            )
        )
        for body in waiting
    ), waiting
    assert http_get(port, "/metrics") == (401, "authentication required\n")
    assert await exit_code(healthcheck) == 0

    other_port = free_port()
    other = start_worker(settings.model_copy(update={"metrics_port": other_port}))
    await wait_ready(other_port, other)
    assert scrape(other_port, "moments_consumer_assigned_partitions", auth=login) == 0

    roamings = first_roamings(0, 2, daytime_zone(dt.datetime.now(dt.UTC)))
    await produce(settings, roamings)
    await read_topic(settings, "tasks", count=2, wait_s=60)  # ready meant working
    await wait_ready(port, worker)  # back after the second worker's rebalance
    assert http_get(other_port, "/readyz") == READY
    live = http_get(port, "/livez")
    assert live is not None
    assert live[1].startswith("ok: event loop ran"), live  # the heartbeat timer runs
