"""moments.latency.offer: the bench's load, and the warm-up it leaves out of the count."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from moments.latency import offer
from moments.settings import Settings
from tests.integration.conftest import MakeSettings
from tests.integration.kafka_io import read_written

pytestmark = pytest.mark.integration


async def test_only_task_events_sent_after_the_warm_up_are_counted(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    settings = make_settings()
    await topics_for(settings)
    warmed: list[dt.datetime] = []
    offered = await offer(
        settings, 400, 1.0, warmup=0.5, on_warm=lambda: warmed.append(dt.datetime.now(dt.UTC))
    )
    counted = offered.tasks
    assert (offered.unacknowledged, offered.first_error, offered.said()) == (0, "", "")
    assert len(warmed) == 1
    roaming = await read_written(settings, "roaming", at_least=1)
    times = [dt.datetime.fromisoformat(orjson.loads(r.value)["occurred_at"]) for r in roaming]
    after = [t for t in times if t >= warmed[0]]
    assert 0 < counted == len(after) < len(times)  # some were sent during the warm-up
