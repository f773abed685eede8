"""`moments simulate` produces to a real broker: every event arrives on its type's topic,
keyed by subscriber id, valid against the contract."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from moments.models import EVENT_MODELS, EventType
from moments.settings import Settings
from moments.simulate import produce_stream, simulate

from .conftest import MakeSettings, settings_env
from .kafka_io import read_topic, read_written

pytestmark = pytest.mark.integration


async def read_all(settings: Settings, counts: Counter[str]) -> dict[str, list[Any]]:
    return {
        name: await read_written(settings, name, at_least=count) for name, count in counts.items()
    }


async def test_produced_events_are_read_back_from_their_topics(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    settings = make_settings()
    await topics_for(settings)
    shown: list[int] = []
    stats = await produce_stream(
        settings,
        iter(simulate(40, 1000, seed=4, plant_rate=0.1)),
        rate=1000,
        count=600,
        progress=lambda s: shown.append(sum(s.events.values())),
    )
    assert sum(stats.events.values()) == 600
    assert shown[-1] == 600

    expected = list(itertools.islice(simulate(40, 1000, seed=4, plant_rate=0.1), 600))
    records = await read_all(settings, stats.events)
    for name, got in records.items():
        model = EVENT_MODELS[EventType(name)]
        values = [orjson.loads(r.value) for r in got]
        assert len(values) == stats.events[name]
        for record, value in zip(got, values, strict=True):
            assert record.key == value["subscriber_id"].encode()
            model.model_validate(value)
        want = {e.value["event_id"] for e in expected if e.event_type.value == name}
        assert {v["event_id"] for v in values} == want


async def test_the_cli_produces_for_a_duration_and_prints_what_it_sent(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    settings = make_settings()
    await topics_for(settings)
    argv = [sys.executable, "-m", "moments", "simulate", "--subscribers", "20", "--rate", "200"]
    done = await asyncio.to_thread(
        subprocess.run,
        [*argv, "--duration", "1", "--seed", "5"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "produced 220 events" in done.stderr
    profiles = await read_topic(settings, "profile", 20, wait_s=60)
    assert len({r.key for r in profiles}) == 20
