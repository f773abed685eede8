"""The re-drive timer's steps each run whatever an earlier one raised (sinks.steps), and
each error is counted in `moments_timer_errors_total{step}`: what a step not owed raised
still comes out of the tick (a bug is not swallowed), an owed step's error is logged and
the step tried again after a back-off, and a cancellation stops the tick at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from sinks.metrics import Metrics, TimerStep
from sinks.steps import Step, TimerSteps

from .fakes import Clock

NAMES = {
    TimerStep.RELEASE: "first",
    TimerStep.WITHDRAWALS: "second",
    TimerStep.EXPIRY: "third",
}


def errors(metrics: Metrics, step: TimerStep) -> float:
    found = metrics.registry.get_sample_value("moments_timer_errors_total", {"step": step.value})
    assert found is not None, "every step's series is declared at 0"
    return found


def failures_in_a_row(metrics: Metrics, step: TimerStep) -> float:
    """`moments_timer_failures_in_a_row{step}`: what MomentsTimerErrors reads."""
    found = metrics.registry.get_sample_value(
        "moments_timer_failures_in_a_row", {"step": step.value}
    )
    assert found is not None, "every step's series is declared at 0"
    return found


class TestTimerSteps:
    @staticmethod
    def steps(
        ran: list[str], failing: dict[str, BaseException], owed: frozenset[str] = frozenset()
    ) -> list[Step]:
        def step(name: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                ran.append(name)
                if name in failing:
                    raise failing[name]

            return call

        return [
            Step(label, f"doing {name}", step(name), owed=name in owed)
            for label, name in NAMES.items()
        ]

    @staticmethod
    def timer(metrics: Metrics, clock: Clock | None = None) -> TimerSteps:
        return TimerSteps(
            metrics.timer_errors,
            "re-drive timer",
            clock or Clock(0.0),
            failing=metrics.timer_failing,
        )

    async def test_a_bug_in_a_step_is_raised_after_the_others_ran_and_counted(self) -> None:
        """The error itself comes out, its note naming the timer and the step, and its
        step's count rises (the others stay at 0)."""
        ran: list[str] = []
        metrics = Metrics()
        bug = TypeError("Expected list, got tuple")
        with pytest.raises(TypeError) as raised:
            await self.timer(metrics).run(self.steps(ran, {"first": bug}))
        assert ran == ["first", "second", "third"]
        assert raised.value is bug
        assert raised.value.__notes__ == [
            "moments: raised by the re-drive timer while doing first; its other steps ran "
            "all the same"
        ]
        assert errors(metrics, TimerStep.RELEASE) == 1
        assert errors(metrics, TimerStep.WITHDRAWALS) == 0
        assert errors(metrics, TimerStep.EXPIRY) == 0

    async def test_two_failed_steps_are_raised_together(self) -> None:
        ran: list[str] = []
        metrics = Metrics()
        first, third = LookupError("a"), ValueError("b")
        with pytest.raises(ExceptionGroup) as raised:
            await self.timer(metrics).run(self.steps(ran, {"first": first, "third": third}))
        assert ran == ["first", "second", "third"]
        assert raised.value.exceptions == (first, third)
        assert str(raised.value) == "2 steps of the re-drive timer failed (2 sub-exceptions)"
        assert errors(metrics, TimerStep.RELEASE) == errors(metrics, TimerStep.EXPIRY) == 1

    async def test_an_owed_steps_error_is_counted_logged_and_not_raised(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A refused withdrawals topic: the tick raises nothing (the worker goes on), the
        step's count rises, and the log says the step, the fix and when it is tried again."""
        ran: list[str] = []
        metrics = Metrics()
        refused = TopicAuthorizationFailedError()
        refused.add_note("moments: not retried ...; grant it Write on the output topics")
        with caplog.at_level(logging.ERROR, logger="sinks.steps"):
            await self.timer(metrics).run(
                self.steps(ran, {"second": refused}, owed=frozenset({"second"}))
            )
        assert ran == ["first", "second", "third"]
        assert errors(metrics, TimerStep.WITHDRAWALS) == 1
        [line] = caplog.records
        said = line.getMessage()
        assert "the re-drive timer failed while doing second (1 time(s) in a row" in said
        assert "TopicAuthorizationFailedError" in said
        assert "grant it Write on the output topics" in said
        assert "nothing is lost" in said
        assert "tries this step again in 10 s" in said
        assert line.exc_info is not None
        assert line.exc_info[1] is refused

    async def test_an_owed_step_that_keeps_failing_backs_off_and_resumes(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Left out of the ticks until its back-off has passed (10 s, then 20 s, ...); once
        it goes through the log says so, and the next failure waits 10 s again."""
        ran: list[str] = []
        metrics = Metrics()
        clock = Clock(0.0)
        timer = self.timer(metrics, clock)
        failing: dict[str, BaseException] = {"second": TopicAuthorizationFailedError()}
        steps = self.steps(ran, failing, owed=frozenset({"second"}))

        async def tick_at(at: float) -> list[str]:
            clock.now = at
            ran.clear()
            await timer.run(steps)
            return [name for name in ran if name == "second"]

        assert await tick_at(0) == ["second"]  # fails: next at 10
        assert await tick_at(9) == []
        assert await tick_at(10) == ["second"]  # fails again: next at 30
        assert await tick_at(29) == []
        assert await tick_at(30) == ["second"]  # next at 70
        assert errors(metrics, TimerStep.WITHDRAWALS) == 3
        assert failures_in_a_row(metrics, TimerStep.WITHDRAWALS) == 3
        del failing["second"]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sinks.steps"):
            assert await tick_at(70) == ["second"]
        assert [r.getMessage() for r in caplog.records] == [
            "the re-drive timer went through doing second again after 3 failed attempt(s)"
        ]
        assert failures_in_a_row(metrics, TimerStep.WITHDRAWALS) == 0
        assert await tick_at(71) == ["second"]
        failing["second"] = TopicAuthorizationFailedError()
        assert await tick_at(72) == ["second"]
        assert await tick_at(81) == []
        assert await tick_at(82) == ["second"]
        assert errors(metrics, TimerStep.WITHDRAWALS) == 5

    async def test_the_back_off_stops_growing_at_its_longest(self) -> None:
        clock = Clock(0.0)
        metrics = Metrics()
        timer = TimerSteps(metrics.timer_errors, "re-drive timer", clock, max_delay=30.0)
        ran: list[str] = []
        steps = self.steps(
            ran, {"second": TopicAuthorizationFailedError()}, owed=frozenset({"second"})
        )
        for at in (0, 10, 30, 60, 90):  # waits of 10, 20, then 30 and 30
            clock.now = at
            await timer.run(steps)
        clock.now = 119
        ran.clear()
        await timer.run(steps)
        assert "second" not in ran
        assert errors(metrics, TimerStep.WITHDRAWALS) == 5

    async def test_a_cancellation_ends_the_tick_at_once(self) -> None:
        """The worker stopping cancels the timer: the steps after it do not run, and it is
        no error."""
        ran: list[str] = []
        metrics = Metrics()
        cancelled: dict[str, BaseException] = {"second": asyncio.CancelledError()}
        with pytest.raises(asyncio.CancelledError):
            await self.timer(metrics).run(self.steps(ran, cancelled, owed=frozenset({"second"})))
        assert ran == ["first", "second"]
        assert errors(metrics, TimerStep.WITHDRAWALS) == 0

    async def test_steps_that_succeed_raise_nothing_and_count_nothing(self) -> None:
        ran: list[str] = []
        metrics = Metrics()
        await self.timer(metrics).run(self.steps(ran, {}))
        assert ran == ["first", "second", "third"]
        assert all(errors(metrics, step) == 0 for step in TimerStep)


class OwedTopic:
    """Records owed in a store every worker's timer reads, as the ledger's `owed_withdrawals`
    does: a try takes those owed longer than `lease` and moves their time to now (no other
    worker reads them for that long), then publishes them to a topic that refuses while
    `refusing`, or settles them."""

    def __init__(self, clock: Clock, lease: float, ids: list[str]) -> None:
        self.clock = clock
        self.lease = lease
        self.owed = dict.fromkeys(ids, -1000.0)
        self.refusing = True

    def step(self) -> Step:
        async def send() -> int:
            now = self.clock()
            read = [i for i, at in self.owed.items() if at <= now - self.lease]
            for i in read:
                self.owed[i] = now
            if read and self.refusing:
                raise TopicAuthorizationFailedError()
            for i in read:
                del self.owed[i]
            return len(read)

        return Step(
            TimerStep.WITHDRAWALS, "publishing withdrawals owed", send, owed=True, lease=self.lease
        )


class TestSeveralWorkers:
    """Each worker's timer judges its owed step by what its own tries saw: a try that read
    nothing (another worker's try holds the records' lease) is no sign the topic takes them."""

    @staticmethod
    def worker(clock: Clock) -> tuple[TimerSteps, Metrics]:
        metrics = Metrics()
        timer = TimerSteps(
            metrics.timer_errors, "re-drive timer", clock, failing=metrics.timer_failing
        )
        return timer, metrics

    async def test_a_try_that_read_what_another_worker_leased_is_no_recovery(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """B fails; A's try leases the records before B's next one, which reads nothing: B
        logs no "went through again", keeps its count, and its next failure is its second in
        a row (waiting the doubled back-off); once the topic takes them, B says so."""
        clock = Clock(0.0)
        topic = OwedTopic(clock, 30.0, ["t1", "t2"])
        a, _ = self.worker(clock)
        b, b_metrics = self.worker(clock)
        step = topic.step()
        caplog.set_level(logging.INFO, logger="sinks.steps")
        await b.run([step])  # reads both, refused: B's next try at 30
        clock.now = 30.0
        await a.run([step])  # A first: leases them again until 60
        clock.now = 31.0
        caplog.clear()
        await b.run([step])  # reads nothing
        assert not [r for r in caplog.records if "went through" in r.getMessage()]
        assert failures_in_a_row(b_metrics, TimerStep.WITHDRAWALS) == 1
        clock.now = 60.0
        caplog.clear()
        await b.run([step])  # reads them, refused again
        [line] = caplog.records
        assert "(2 time(s) in a row" in line.getMessage()
        assert failures_in_a_row(b_metrics, TimerStep.WITHDRAWALS) == 2
        assert errors(b_metrics, TimerStep.WITHDRAWALS) == 2
        topic.refusing = False
        clock.now = 90.0
        caplog.clear()
        await b.run([step])
        assert [r.getMessage() for r in caplog.records] == [
            "the re-drive timer went through publishing withdrawals owed again after 2 failed "
            "attempt(s)"
        ]
        assert topic.owed == {}
        assert failures_in_a_row(b_metrics, TimerStep.WITHDRAWALS) == 0

    async def test_a_failure_another_worker_cleared_is_let_go_without_a_false_recovery(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """B fails, then A sends everything once the topic is fixed: B's tries read nothing
        for its lease and longest back-off past its failure, and B lets its failure go,
        saying it saw nothing either way; it is no longer counted failing there."""
        clock = Clock(0.0)
        topic = OwedTopic(clock, 30.0, ["t1"])
        a, _ = self.worker(clock)
        b, b_metrics = self.worker(clock)
        step = topic.step()
        caplog.set_level(logging.INFO, logger="sinks.steps")
        await b.run([step])
        topic.refusing = False
        clock.now = 30.0
        await a.run([step])
        assert topic.owed == {}
        caplog.clear()
        for at in range(31, 330, 10):
            clock.now = float(at)
            await b.run([step])
        assert caplog.records == []
        assert failures_in_a_row(b_metrics, TimerStep.WITHDRAWALS) == 1
        clock.now = 330.0
        await b.run([step])
        [line] = caplog.records
        said = line.getMessage()
        assert "went through" not in said
        assert "found nothing to send for 330 s since it last failed" in said
        assert failures_in_a_row(b_metrics, TimerStep.WITHDRAWALS) == 0
