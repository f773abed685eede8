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

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

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
        self._loop_thread: int | None = None
        self._stall_logged = False

    def beat(self) -> None:
        """Called by the event loop, once a second."""
        self._last_beat = self._clock()
        self._beaten = True
        self._loop_thread = threading.get_ident()
        self._stall_logged = False

    def stalled_for(self) -> float:
        """Seconds since the event loop last ran (read at scrape time, from the metrics
        thread: it grows while the loop is stuck, when nothing the loop updates does).
        Past the stall limit it logs where the loop is stuck, as `live` does: where
        nothing probes /livez (systemd, docker compose), Prometheus' scrape still does."""
        age = max(0.0, self._clock() - self._last_beat)
        if age > self.stall_after_s:
            self._log_stall(age)
        return age

    def _log_stall(self, age: float) -> None:
        """Once per stall: where the event loop is stuck, as its thread's stack. A
        thread dump from outside (py-spy) needs ptrace, which a locked-down pod lacks,
        and the restart that follows the failed probe loses the evidence."""
        if self._stall_logged:
            return
        self._stall_logged = True
        frame = sys._current_frames().get(self._loop_thread or -1)
        where = "".join(traceback.format_stack(frame)) if frame is not None else "(not found)\n"
        log.error("the event loop has not run for %.0f s; it is here:\n%s", age, where.rstrip())

    def ready_when(self, not_ready: NotReady) -> None:
        """Install the app's readiness check (called from the metrics thread: it should
        only read flags)."""
        self._not_ready = not_ready

    def live(self) -> Verdict:
        age = self._clock() - self._last_beat
        if age > self.stall_after_s:
            self._log_stall(age)
            return Verdict(
                False,
                f"the event loop has not run for {age:.0f} s (limit "
                f"MOMENTS_HEALTH_STALL_SECONDS={self.stall_after_s:g}); the worker's log "
                "has the stack it is stuck in",
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
