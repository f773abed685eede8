"""The worker's release timer (moments.app): deferred tasks go out when due, whatever the
age at which an unconfirmed publish is sent again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.app import MomentsApp, build
from moments.settings import load_settings
from sinks.metrics import Metrics

from .catalogs import default_rules


def timer_intervals(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> dict[str, float]:
    """Each timer the worker's app declares, by its function's name, and its interval."""
    seen: dict[str, float] = {}
    declare = MomentsApp.timer

    def recording(self: MomentsApp, interval: float, **kwargs: Any) -> Callable[[Any], Any]:
        decorate = declare(self, interval, **kwargs)

        def named(fun: Any) -> Any:
            seen[fun.__name__] = float(interval)
            return decorate(fun)

        return named

    monkeypatch.setattr(MomentsApp, "timer", recording)
    build(load_settings(**settings), default_rules(), Metrics())
    return seen


class TestReleaseTimer:
    def test_at_the_default_it_runs_every_10_s(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        assert timer_intervals(monkeypatch, data_dir=tmp_path)["redrive_pending"] == 10.0

    @pytest.mark.parametrize("redrive_s", [300.0, 3600.0])
    def test_a_longer_redrive_age_does_not_hold_back_due_tasks(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redrive_s: float
    ) -> None:
        """The timer that re-drives unconfirmed publishes also releases the deferral queue
        (quiet hours, merge windows, capacity) and counts expired unanswered tasks. It ran
        every MOMENTS_PENDING_REDRIVE_SECONDS / 3: set to an hour, a task due at 08:00 went
        out up to 20 minutes late, at the edge of MomentsDeferredTasksOverdue (15 minutes
        overdue for 5) on a healthy worker. The re-drive still takes only publishes older
        than the setting."""
        intervals = timer_intervals(
            monkeypatch, data_dir=tmp_path, pending_redrive_seconds=redrive_s
        )
        assert intervals["redrive_pending"] == 10.0

    def test_a_shorter_redrive_age_runs_it_more_often(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        intervals = timer_intervals(monkeypatch, data_dir=tmp_path, pending_redrive_seconds=6)
        assert intervals["redrive_pending"] == 2.0
