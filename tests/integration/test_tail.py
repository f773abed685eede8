"""`moments tasks tail` over a real topic: the live table, readable lines and JSON lines."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from moments.settings import Settings
from moments.tail import tail_tasks

from .conftest import MakeSettings
from .dispatch.conftest import task
from .kafka_io import produce

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["live", "lines", "json"])
async def test_tail_shows_the_published_tasks(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: the table's rows on one line each
    settings = make_settings()
    await topics_for(settings)
    tasks = [task(f"t{i}", sub=f"1380013800{i}") for i in range(3)]
    await produce(
        settings,
        [("tasks", t.subscriber_id, orjson.loads(t.model_dump_json())) for t in tasks],
    )
    out = io.StringIO()
    shown = await tail_tasks(
        settings,
        json_lines=mode == "json",
        from_beginning=True,
        exit_after=3,
        out=out,
        live=mode == "live",
    )
    assert shown == 3
    text = out.getvalue()
    if mode == "json":
        assert sorted(orjson.loads(line)["task_id"] for line in text.splitlines()) == [
            "t0",
            "t1",
            "t2",
        ]
    else:
        assert text.count("first_international_roaming") >= 3
        assert "138****8000" in text
        assert "13800138000" not in text


async def test_tail_withdrawals_shows_the_withdrawals_topic_only(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    """`--withdrawals`: the withdrawals topic's records as lines, even where a table was
    asked for (a withdrawal is no task); the tasks topic is not read."""
    settings = make_settings()
    await topics_for(settings)
    t = task("t9", sub="13800138009")
    notice = {
        "task_id": "t9",
        "subscriber_id": t.subscriber_id,
        "channel": "sms",
        "moment_type": "first_international_roaming",
        "reason": "closed",
        "occurred_at": "2026-12-05T09:10:00+08:00",
        "withdrawn_at": "2026-12-05T09:10:01+08:00",
        "expires_at": "2026-12-06T09:10:00+08:00",
    }
    await produce(
        settings,
        [
            ("tasks", t.subscriber_id, orjson.loads(t.model_dump_json())),
            ("task_withdrawals", t.subscriber_id, notice),
        ],
    )
    out = io.StringIO()
    shown = await tail_tasks(
        settings, from_beginning=True, exit_after=1, out=out, live=True, withdrawals=True
    )
    assert shown == 1
    (line,) = out.getvalue().splitlines()
    assert "WITHDRAWN (closed)" in line
    assert line.endswith("138****8009  sms  [t9]")
