"""A silence judged again every day it lasts makes its task again (the stream's ledger,
whose entries lapse, decides whether it is new), but the pipeline's ledger keeps every
id for good: a task it holds already, made again, is dropped unseen. `rules test --to`
ten years ahead spent most of its time building such tasks (10,938 of 11,301 `emit`
calls for 3 silences), one per silent subscriber a day once the cooldown was over."""

from __future__ import annotations

from typing import Any

import pytest

from moments import taskmaking
from moments.models import EventType
from moments.taskbuilder import build_task

from .rules.helpers import NO_ACTIVITY, NO_GATES, at, ev, rules_from, run


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The id of every task `emit` builds."""
    ids: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        task = build_task(*args, **kwargs)
        ids.append(task.task_id)
        return task

    monkeypatch.setattr(taskmaking, "build_task", counting)
    return ids


def test_a_long_silence_builds_its_task_once(built: list[str]) -> None:
    """Silent from 11-01: the task on 11-09 starts 14 days of cooldown; every close after
    it re-judged the silence and built the same task again (40 builds by 12-31)."""
    used = ev(EventType.USAGE, at("2026-11-01", "10:00"), kind="data", quantity=1000)
    result = run(rules_from(NO_GATES + "rules:" + NO_ACTIVITY), [used], until=at("2026-12-31"))
    assert [t.triggered_at.date().isoformat() for t in result.tasks] == ["2026-11-09"]
    assert built == [result.tasks[0].task_id]


def test_a_new_silence_after_it_still_makes_its_task(built: list[str]) -> None:
    """Skipping the rebuild is for the task the ledger holds: the next silence's is new."""
    rules = rules_from(NO_GATES + "rules:" + NO_ACTIVITY)
    events = [
        ev(EventType.USAGE, at(day, "10:00"), kind="data", quantity=1000)
        for day in ("2026-11-01", "2026-12-10")
    ]
    result = run(rules, events, until=at("2027-01-31"))
    days = [t.triggered_at.date().isoformat() for t in result.tasks]
    assert days == ["2026-11-09", "2026-12-18"]
    assert built == [t.task_id for t in result.tasks]
