"""A worker whose event loop is stuck in a batch still stops on SIGTERM: its stop
deadline (moments.stopdeadline) ends it after MOMENTS_STOP_GRACE_SECONDS with a log line
saying where the loop was, and the next worker publishes every task once."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import STALL_MARK, first_roamings, stalling_worker
from .kafka_io import produce, read_topic, values
from .test_faults import assert_one_task_each

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAVE = 40
GRACE_S = 5
STOP_OVERDUE_EXIT = 70
"""The exit code the operations guide gives a worker its stop deadline ended."""
UNTIL_STUCK_S = 90.0
"""Longest wait for the worker to join, read and block (Tansu's join takes the
rebalance timeout)."""


async def test_sigterm_ends_a_worker_stuck_in_a_batch_and_its_successor_sends_each_task_once(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """The loop blocks in the rules' evaluation of a batch (a blocking call, an hour
    long); Faust's SIGTERM handler runs on that loop, so the worker ran on until
    SIGKILL. Now it exits `GRACE_S` after SIGTERM with code 70 and the loop's stack in
    its log, and the batch it held is read again by the next worker."""
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    settings = make_settings()
    await topics_for(settings)
    records = first_roamings(0, WAVE, zone)
    key = records[-1][1]
    assert key is not None
    command, env = stalling_worker(key, "detect", tmp_path / "stall")
    # As a variable, not a settings field: a worker that does not know it runs all the same.
    env["MOMENTS_STOP_GRACE_SECONDS"] = str(GRACE_S)
    stuck = WorkerProcess(settings, tmp_path / "stuck.log", command=command, env=env)
    try:
        await produce(settings, records)
        await stuck.wait_for_log(re.escape(STALL_MARK), UNTIL_STUCK_S)
        stuck.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(stuck.proc.wait, GRACE_S + 40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {GRACE_S + 40} s after SIGTERM:\n{stuck.log()[-3000:]}")
    finally:
        stuck.stop()
    log = stuck.log()
    assert code == STOP_OVERDUE_EXIT, log[-3000:]
    assert (
        f"SIGTERM came {GRACE_S} s ago and the worker has not stopped "
        f"(MOMENTS_STOP_GRACE_SECONDS={GRACE_S}): exiting with code {STOP_OVERDUE_EXIT}"
    ) in log, log[-3000:]
    # Where the loop is, and the stack down to the blocking call in the rules' evaluation.
    assert "The event loop is in stall_here (" in log, log[-3000:]
    assert "in stuck_rule_evaluation" in log
    assert "time.sleep(3600)" in log

    worker = start_worker(settings)
    tasks = await read_topic(settings, "tasks", count=WAVE, wait_s=90, settle=3)
    assert_one_task_each(values(tasks), WAVE, worker.log())
