"""MOMENTS_LOG_FORMAT=json: every line a worker writes is one JSON object, Faust's and
aiokafka's records included, and subscriber ids stay masked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from moments.embedded import free_port
from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import first_roamings
from .kafka_io import produce, read_topic

pytestmark = pytest.mark.integration


async def test_a_worker_logs_one_json_object_per_line(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    tmp_path: Path,
) -> None:
    settings = make_settings(metrics_port=free_port(), log_format="json")
    await topics_for(settings)
    stdout = tmp_path / "stdout"
    worker = WorkerProcess(settings, tmp_path / "stderr", stdout_path=stdout)
    try:
        roamings = first_roamings(0, 3, daytime_zone(dt.datetime.now(dt.UTC)))
        await produce(settings, roamings)
        await read_topic(settings, "tasks", count=3, wait_s=60)
    finally:
        worker.stop()
    text = worker.log()
    assert stdout.read_text() == ""  # the whole log on stderr, as the text log is
    lines = [line for line in text.splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]  # fails on any line that is not JSON
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records), lines[:5]
    loggers = {r["logger"] for r in records}
    assert "moments.worker" in loggers, loggers
    assert any(name.startswith(("faust", "mode")) for name in loggers), loggers
    assert any(r["message"].startswith("runtime ready") for r in records)
    for _, sub, _ in roamings:
        assert sub is not None
        assert sub not in text  # masked as in text logs
