"""What a worker's /livez and /readyz answer (Kubernetes probes, `docker compose` health).

/metrics alone cannot say either: it is served from a thread, so it answers while the
event loop is blocked or deadlocked, and it answers at once after a restart, before the
worker has its state back. Here the event loop beats once a second (`beat`); the metrics
thread reads the age of the last beat (`live`) and asks the app whether it can work
(`ready`: started, in the consumer group, not rebalancing, state restored).

Liveness is only the event loop: a worker waiting for Redis or the broker retries with
back-off by design, and a restart would not bring either back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

NotReady = Callable[[], str | None]
"""Why the worker cannot work now (a short phrase), or None when it can."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str

    def text(self) -> str:
        return f"{'ok' if self.ok else 'fail'}: {self.detail}\n"


class Health:
    """The event loop's heartbeat and the app's readiness, for the metrics thread.

    A worker whose loop has not beaten for `stall_after_s` is not live. Creation counts as
    the first beat, so a worker that never starts its loop fails too, after as long."""

    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._last_beat = clock()
        self._beaten = False
        self._not_ready: NotReady = lambda: "starting"

    def beat(self) -> None:
        """Called by the event loop, once a second."""
        self._last_beat = self._clock()
        self._beaten = True

    def ready_when(self, not_ready: NotReady) -> None:
        """Install the app's readiness check (called from the metrics thread: it should
        only read flags)."""
        self._not_ready = not_ready

    def live(self) -> Verdict:
        age = self._clock() - self._last_beat
        if age > self.stall_after_s:
            return Verdict(
                False,
                f"the event loop has not run for {age:.0f} s (limit "
                f"MOMENTS_HEALTH_STALL_SECONDS={self.stall_after_s:g}); a thread dump "
                "(py-spy dump --pid PID) shows where it is stuck",
            )
        if not self._beaten:
            return Verdict(True, f"starting ({age:.1f} s)")
        return Verdict(True, f"event loop ran {age:.1f} s ago")

    def ready(self) -> Verdict:
        live = self.live()
        if not live.ok:
            return live
        reason = self._not_ready()
        if reason is not None:
            return Verdict(False, reason)
        return Verdict(True, "in the consumer group with its state restored")
