"""The re-drive timer's steps, each run whatever an earlier one raised, each error counted.

A step waits out a dependency away or busy inside itself (`sinks.retry`: retried with
back-off), so what comes out of one is an error waiting cannot fix: a Kafka refusal (an
ACL, a topic deleted) or a bug. Raised at once, it skipped the steps after it on every
tick: a withdrawals topic refused for good left every unanswered task unexpired and
uncounted. Every such error is counted in `moments_timer_errors_total{step}`.

What comes of it depends on whether the step's work is owed in Redis (`Step.owed`): the
cooldown returns and the withdrawals owed stay in the ledger until they are published, and
the expired tasks in the unanswered index until the expiry takes them, so their step
failing loses nothing, and the worker goes on detecting and publishing tasks while the
step is tried again at later ticks, after a back-off (10 s doubling to 5 min, or the
step's `lease` when longer: the owed records a try read are not read again before),
logged each time. It used to be raised like the others, out of the timer, which stopped
the worker, at its start too (the timer runs once there): a side topic refused stopped
detection. The
other steps publish tasks or hold them (releasing the deferral queue, re-driving pending
publishes): their errors are still raised, once every step has run, and still stop the
worker (docs/operations.md, "The worker stops: not an outage"), as a tasks topic refused
in a batch does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from moments.logthrottle import RepeatThrottle
from sinks.metrics import Metrics, RefusalReason, TimerStep

log = logging.getLogger(__name__)
refusals_log = logging.getLogger("sinks.refusals")
REFUSALS_THROTTLE = RepeatThrottle(by_first_arg=True)
"""Each kind of refusal (`note_owed_refusal`'s `what`) once per 30 s, with a count of the
lines held back: a side topic refused under load refuses every batch's notices."""
refusals_log.addFilter(REFUSALS_THROTTLE)

FIRST_DELAY_S = 10.0
"""The first wait of an owed step after it failed: about one tick of the timer."""
MAX_DELAY_S = 300.0
"""The longest: a refusal fixed (a grant, the topic created) is found within 5 minutes."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a timer's tick."""

    step: TimerStep
    what: str
    """What it does, for its log line and note: "publishing withdrawals owed"."""
    call: Callable[[], Awaitable[object]]
    owed: bool = False
    """Its work stays owed in Redis until it is done: an error is counted, logged and
    tried again at a later tick, after a back-off, and not raised."""
    kept: str = "what it sends stays owed in Redis"
    """Where an owed step's work waits meanwhile, for its log line."""
    lease: float = 0.0
    """How long what a try read is not read again (the ledger's `owed_withdrawals` and
    `owed_returns` move an owed record's time to now as they read it): an owed step is not
    tried again sooner, whatever its back-off. Tried within the lease, the step read nothing,
    seemed to go through (logged so) and began its back-off again at each failure. A step
    with a lease returns how many it sent: a try that sent none (`0`) is no recovery of a
    failing step (another worker's try may hold the lease: `TimerSteps`)."""


def refusal_reason(exc: BaseException) -> RefusalReason:
    """The `reason` label of a refusal (`RefusalReason`)."""
    from aiokafka.errors import (
        ClusterAuthorizationFailedError,
        TopicAuthorizationFailedError,
    )

    from sinks.retry import unknown_topic

    if isinstance(exc, TopicAuthorizationFailedError | ClusterAuthorizationFailedError):
        return RefusalReason.AUTHORIZATION
    if unknown_topic(exc):
        return RefusalReason.UNKNOWN_TOPIC
    return RefusalReason.OTHER


def note_owed_refusal(
    what: str, count: int, exc: Exception, step: TimerStep, metrics: Metrics
) -> None:
    """A publish Kafka refused outside the timer (a batch's or a decision's withdrawals or
    cooldown returns), whose `count` records were left owed in Redis for the timer's
    `step`: counted in `moments_owed_refused_total{step,reason}`, and its one line, with
    the fix `sinks.retry` noted (it logs none for these calls: `log_refusal=False`),
    throttled per `what` (`REFUSALS_THROTTLE`)."""
    metrics.owed_refused.labels(step.value, refusal_reason(exc).value).inc(count)
    notes = "; ".join(n.removeprefix("moments: ") for n in getattr(exc, "__notes__", ()))
    refusals_log.error(
        "%s refused by Kafka (%d this time; %s: %s%s); owed in Redis, the re-drive timer "
        'sends them once the topic takes them (moments_timer_errors_total{step="%s"} counts '
        "its tries, moments_owed_refused_total what was left owed); the worker goes on",
        what,
        count,
        type(exc).__name__,
        exc,
        f"; {notes}" if notes else "",
        step.value,
    )


@dataclass(slots=True)
class _Failing:
    """An owed step failing on this worker, as its own tries saw it."""

    count: int
    """Its failures in a row."""
    delay: float
    """Its back-off now."""
    due: float
    """When it is tried again."""
    failed_at: float
    """When it last failed."""


class TimerSteps:
    """Runs a timer's steps (`run`) and keeps the back-off of its owed steps between
    ticks. `errors`: `Metrics.timer_errors`; `clock`: the sink's (wall clock on the stream,
    event time in a backtest, where nothing refuses); `failing`: `Metrics.timer_failing`,
    each owed step's failures in a row, held between its tries (0: not failing).

    Each worker's timer judges its steps by what its own tries saw. A try of a failing
    owed step with a `lease` that sent nothing (`0`) read nothing it could send: with
    several workers, another worker's try may hold the records' lease, its topic still
    refusing. It is no recovery: the step keeps its failures in a row and its back-off, and
    is tried at each tick until a try sends something (it went through: logged so) or fails
    again (its back-off doubles). One whose tries found nothing to send for its lease and
    longest back-off past its last failure lets the failure go (another worker sent what
    was owed, or it was settled), logged as that, not as a recovery."""

    def __init__(
        self,
        errors: Counter,
        timer: str,
        clock: Callable[[], float] = time.time,
        first_delay: float | None = None,
        max_delay: float | None = None,
        failing: Gauge | None = None,
    ) -> None:
        self.errors = errors
        self.failing = failing
        self.timer = timer
        self.clock = clock
        self.first_delay = FIRST_DELAY_S if first_delay is None else first_delay
        """(`FIRST_DELAY_S` read as the sink is made: a test's worker shortens it.)"""
        self.max_delay = MAX_DELAY_S if max_delay is None else max_delay
        self._failed: dict[TimerStep, _Failing] = {}
        """Per owed step failing now, on this worker."""

    async def run(self, steps: Sequence[Step]) -> None:
        """Await each of `steps` in turn, whatever an earlier one raised (an owed step
        backing off is left out of this tick); count each error; then raise what the steps
        not owed raised: the one error itself (its notes, the fix `sinks.retry` named,
        kept), or several in an ExceptionGroup, each with a note naming the timer and its
        step. Only `Exception`: a cancellation (the worker stopping) ends the tick at once."""
        failed: list[Exception] = []
        for step in steps:
            if step.owed and not self._due(step.step):
                continue
            try:
                done = await step.call()
            except Exception as exc:  # counted; raised below unless owed
                self.errors.labels(step.step.value).inc()
                if step.owed:
                    self._back_off(step, exc)
                    continue
                exc.add_note(
                    f"moments: raised by the {self.timer} while {step.what}; its other "
                    "steps ran all the same"
                )
                failed.append(exc)
            else:
                self._went(step, done)
        if len(failed) == 1:
            raise failed[0]
        if failed:
            raise ExceptionGroup(f"{len(failed)} steps of the {self.timer} failed", failed)

    def _due(self, step: TimerStep) -> bool:
        failing = self._failed.get(step)
        return failing is None or self.clock() >= failing.due

    def _back_off(self, step: Step, exc: Exception) -> None:
        now = self.clock()
        failing = self._failed.get(step.step)
        count = 1 if failing is None else failing.count + 1
        delay = self.first_delay if failing is None else min(self.max_delay, failing.delay * 2)
        wait = max(delay, step.lease)
        self._failed[step.step] = _Failing(count, delay, now + wait, now)
        self._show(step.step, count)
        notes = "; ".join(getattr(exc, "__notes__", ()))
        log.error(
            "the %s failed while %s (%d time(s) in a row; moments_timer_errors_total"
            '{step="%s"}): %s: %s%s; %s, nothing is lost; the worker goes on detecting and '
            "publishing tasks, and tries this step again in %.0f s",
            self.timer,
            step.what,
            count,
            step.step.value,
            type(exc).__name__,
            exc,
            f" ({notes})" if notes else "",
            step.kept,
            wait,
            exc_info=exc if count == 1 else None,  # the traceback once, not every tick
        )

    def _went(self, step: Step, done: object) -> None:
        """`step` raised nothing, `done` what its call returned: a recovery unless it is a
        leased step's try that sent nothing (`TimerSteps`)."""
        failing = self._failed.get(step.step)
        if failing is None:
            return
        if step.lease and done == 0:
            quiet = self.clock() - failing.failed_at
            if quiet < step.lease + self.max_delay:
                return  # no sign either way: the failure stands, tried again next tick
            del self._failed[step.step]
            self._show(step.step, 0)
            log.info(
                "the %s found nothing to send for %.0f s since it last failed while %s "
                "(another worker's timer sent or holds what was owed): this worker saw it "
                "neither fail nor go through since, and no longer counts it failing",
                self.timer,
                quiet,
                step.what,
            )
            return
        del self._failed[step.step]
        self._show(step.step, 0)
        log.warning(
            "the %s went through %s again after %d failed attempt(s)",
            self.timer,
            step.what,
            failing.count,
        )

    def _show(self, step: TimerStep, count: int) -> None:
        if self.failing is not None:
            self.failing.labels(step.value).set(count)
