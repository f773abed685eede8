"""Faust's worker as a service runs it: logs to files or a collector, no terminal."""

from __future__ import annotations

import logging
import sys

import faust

from moments.stopdeadline import StopDeadline


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
        event loop, and a stuck loop never ran them, so SIGTERM left the worker running."""
        super().install_signal_handlers()
        grace: float | None = getattr(self.app, "stop_grace_s", None)
        if grace is not None and sys.platform != "win32":
            StopDeadline(grace).start(self.loop)

    def _on_sigusr2(self) -> None:
        """Every thread's stack to stderr, as SIGUSR1 gives: Faust's worker starts pdb on
        SIGUSR2, which stops a worker started from a terminal in the debugger with its
        partitions held (no heartbeat, no progress) until someone types `c`."""
        self._on_sigusr1()
