"""The app's `retry_failed_seeks` timer: a seek back that failed is made again once its
back-off is over, by the consumer, never during a rebalance nor after a new assignment;
a retry that fails again is counted and raises nothing (the timer goes on)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from faust.types import TP

from moments import app as app_module
from moments.app import create_app, register_agents
from moments.engine import Detector
from moments.records import RawRecord
from moments.rewind import SEEK_RETRY_FIRST_S, RewindGuard
from moments.runtime import Runtime
from moments.settings import load_settings
from rules.catalog import RuleSet
from sinks.metrics import Metrics

from .fakes import Clock

T = "telecom.roaming"


class _Consumer:
    """The consumer's `seek`: refuses while `refuse` is set, as aiokafka does for a
    partition a rebalance took away."""

    def __init__(self) -> None:
        self.refuse = True
        self.made: list[tuple[TP, int]] = []

    async def seek(self, tp: TP, offset: int) -> None:
        if self.refuse:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        self.made.append((tp, offset))


class _Wired:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock = Clock(100.0)
        self.guard = RewindGuard(self.clock)
        monkeypatch.setattr(app_module, "RewindGuard", lambda: self.guard)
        settings = load_settings()
        self.app = create_app(settings)
        self.metrics = Metrics()
        runtime = Runtime(settings, self.metrics, Detector(RuleSet.of([]), {}))
        register_agents(self.app, settings, runtime)
        self.consumer = _Consumer()
        self.app.consumer = self.consumer  # type: ignore[assignment]
        self.timer = self._task("retry_failed_seeks")

    def _task(self, name: str) -> Callable[[], Awaitable[Any]]:
        found = [t for t in self.app._app_tasks if inspect.unwrap(t).__name__ == name]
        assert len(found) == 1, name
        timer: Callable[[], Awaitable[Any]] = inspect.unwrap(found[0])
        return timer

    async def fail_a_seek(self) -> None:
        """As the silent-partition check's or the batch loop's seek, refused."""
        await self.timer()  # the generation followed, as the app's timers do first
        seeks = self.guard.silent([(T, 0)], lambda tp: 4)
        assert await self.guard.seek(seeks, app_module_seek(self), lambda *_: None) == []
        assert self.guard.due() == {}

    def errors(self) -> float:
        value: float = self.metrics.dependency_errors.labels("kafka")._value.get()
        return value


def app_module_seek(wired: _Wired) -> Callable[[tuple[str, int], int], Awaitable[None]]:
    async def seek_one(tp: tuple[str, int], offset: int) -> None:
        await wired.consumer.seek(TP(*tp), offset)

    return seek_one


class TestRetryFailedSeeks:
    async def test_a_failed_seek_is_made_by_the_timer_once_its_back_off_is_over(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        wired = _Wired(monkeypatch)
        await wired.fail_a_seek()
        await wired.timer()
        assert wired.consumer.made == []  # not before its back-off
        wired.clock.now += SEEK_RETRY_FIRST_S
        await wired.timer()  # refused again: counted, held, nothing raised
        assert wired.errors() == 1
        # Still held: its records fetched meanwhile are read again only by the seek.
        assert wired.guard.filter([RawRecord(T, 0, 9, b"k", b"{}")], lambda tp: 4) == ([], {})
        wired.consumer.refuse = False
        wired.clock.now += 2 * SEEK_RETRY_FIRST_S
        await wired.timer()
        assert wired.consumer.made == [(TP(T, 0), 4)]
        assert wired.guard.due() == {}
        await wired.timer()
        assert wired.consumer.made == [(TP(T, 0), 4)]  # made once

    async def test_not_during_a_rebalance(self, monkeypatch: pytest.MonkeyPatch) -> None:
        wired = _Wired(monkeypatch)
        await wired.fail_a_seek()
        wired.consumer.refuse = False
        wired.clock.now += SEEK_RETRY_FIRST_S
        wired.app.rebalancing = True
        await wired.timer()
        assert wired.consumer.made == []
        wired.app.rebalancing = False
        await wired.timer()
        assert wired.consumer.made == [(TP(T, 0), 4)]

    async def test_a_new_assignment_forgets_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The assignment's own seek to the committed offsets reads the partition again."""
        wired = _Wired(monkeypatch)
        await wired.fail_a_seek()
        wired.consumer.refuse = False
        wired.clock.now += SEEK_RETRY_FIRST_S
        wired.app.consumer_generation_id += 1
        await wired.timer()
        assert wired.consumer.made == []
        assert wired.guard.due() == {}
