"""Faust's worker as a service runs it: logs to files or a collector, no terminal."""

from __future__ import annotations

import io
import logging
import signal
import sys

import faust
from mode.utils.logging import cry

from moments.logformat import logs_in_json
from moments.logmask import clean_text
from moments.stopdeadline import StopDeadline

log = logging.getLogger(__name__)

_early_sigterm: list[bool] = []


def note_sigterm(signum: int, frame: object) -> None:
    """SIGTERM's handler from Faust's start until its worker handles the signal (a short
    while: its logging set-up): noted, then acted on by `ServiceWorker`. The default would
    end a plain process at once, mid-start, and be ignored by PID 1 in a container."""
    _early_sigterm.append(True)


class ServiceWorker(faust.Worker):
    """Faust's worker without its terminal progress spinner.

    At `--loglevel warn` or above, Faust keeps the spinner: it puts the root logger at
    DEBUG and adds a handler that turns the spinner on every record. Every debug call
    of Faust, mode and aiokafka then builds a record (through the PII masking factory)
    only for it to be dropped, and the runtime can set the level back only once the
    first table recovery is over: Faust's recovery makes two debug calls per changelog
    record, and a fifth of a restore's CPU went to them (benchmarks/recovery.py)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
        if level:
            logger.setLevel(level)

    def install_signal_handlers(self) -> None:
        """Faust's handlers, then the stop deadline (moments.stopdeadline): they run on the
        event loop, and a stuck loop never ran them, so SIGTERM left the worker running.
        A SIGTERM noted while Faust started (`note_sigterm`) is acted on now."""
        super().install_signal_handlers()
        grace: float | None = getattr(self.app, "stop_grace_s", None)
        deadline = None
        if grace is not None and sys.platform != "win32":
            deadline = StopDeadline(grace)
            deadline.start(self.loop)
        if _early_sigterm:
            _early_sigterm.clear()
            if deadline is not None:
                deadline.asked(signal.SIGTERM)
            self._on_sigterm()

    def _on_sigusr2(self) -> None:
        """Every thread's stack to stderr, as SIGUSR1 gives: Faust's worker starts pdb on
        SIGUSR2, which stops a worker started from a terminal in the debugger with its
        partitions held (no heartbeat, no progress) until someone types `c`."""
        self._on_sigusr1()

    async def _cry(self) -> None:
        """What SIGUSR1 writes (mode's `cry`: every thread's and task's stack with its
        frames' local variables), cleaned as a log record is before it reaches stderr:
        the locals hold the batch in hand, so subscriber numbers are masked (unless
        MOMENTS_LOG_PII) and the configured passwords redacted. With JSON logs it is one
        log record, its text the message: written as it is, its hundreds of plain lines
        broke the one-object-per-line log a collector reads (each line a parse error or
        an entry of its own)."""
        buffer = io.StringIO()
        cry(file=buffer)
        if logs_in_json():
            log.warning(
                "SIGUSR1: every thread's and task's stack, with its frames' local "
                "variables; the worker goes on:\n%s",
                buffer.getvalue().rstrip(),
            )
            return
        self.stderr.write(clean_text(buffer.getvalue()))
        self.stderr.flush()
