"""The re-drive timer's steps each run whatever an earlier one raised (sinks.steps), and
what they raised still comes out of the tick: a bug is not swallowed, a cancellation
stops the tick at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sinks.steps import Step, run_each


class TestRunEach:
    @staticmethod
    def steps(ran: list[str], failing: dict[str, BaseException]) -> list[Step]:
        def step(name: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                ran.append(name)
                if name in failing:
                    raise failing[name]

            return call

        return [(f"doing {name}", step(name)) for name in ("first", "second", "third")]

    async def test_a_bug_in_a_step_is_raised_after_the_others_ran(self) -> None:
        """The error itself comes out, its note naming the timer and the step."""
        ran: list[str] = []
        bug = TypeError("Expected list, got tuple")
        with pytest.raises(TypeError) as raised:
            await run_each(self.steps(ran, {"first": bug}), "re-drive timer")
        assert ran == ["first", "second", "third"]
        assert raised.value is bug
        assert raised.value.__notes__ == [
            "moments: raised by the re-drive timer while doing first; its other steps ran "
            "all the same"
        ]

    async def test_two_failed_steps_are_raised_together(self) -> None:
        ran: list[str] = []
        first, third = LookupError("a"), ValueError("b")
        with pytest.raises(ExceptionGroup) as raised:
            await run_each(self.steps(ran, {"first": first, "third": third}), "re-drive timer")
        assert ran == ["first", "second", "third"]
        assert raised.value.exceptions == (first, third)
        assert str(raised.value) == "2 steps of the re-drive timer failed (2 sub-exceptions)"

    async def test_a_cancellation_ends_the_tick_at_once(self) -> None:
        """The worker stopping cancels the timer: the steps after it do not run."""
        ran: list[str] = []
        with pytest.raises(asyncio.CancelledError):
            await run_each(self.steps(ran, {"second": asyncio.CancelledError()}), "re-drive timer")
        assert ran == ["first", "second"]

    async def test_steps_that_succeed_raise_nothing(self) -> None:
        ran: list[str] = []
        await run_each(self.steps(ran, {}), "re-drive timer")
        assert ran == ["first", "second", "third"]
