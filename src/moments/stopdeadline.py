"""A stop asked for by SIGTERM or SIGINT that does not finish in time ends the process.

Faust's worker handles those signals on the event loop (`loop.add_signal_handler`): a
loop stuck in a batch (a blocking call in a rule, a wedged client) never runs the
handler, and the worker ran until SIGKILL. `StopDeadline` sees the signal from a thread
of its own. Python's C-level signal handler writes each signal's number to the wakeup
fd (`signal.set_wakeup_fd`) whatever the main thread is doing; this module makes that fd
one of its sockets and passes every byte on to the fd asyncio had set, so the event
loop handles its signals as before. `grace_s` after the first SIGTERM or SIGINT, a
process still running logs where its event loop is and exits with `STOP_OVERDUE_EXIT`.

Ending hard loses nothing and sends nothing twice: offsets are committed only once a
batch's tasks, dead letters and state are durable, so the next worker reads the
uncommitted events again, the state's offsets skip those already applied, and the
ledger keeps their tasks from going out twice (docs/architecture.md, "Exactly once
out": the same crash points as `kill -9`).
Beyond it: a stall inside C code that holds the GIL (no Python runs in any thread
then); SIGKILL remains for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)

STOP_OVERDUE_EXIT = 70
"""The exit code of a worker this ended (EX_SOFTWARE): not 0, so systemd and docker count
the stop as failed; not 2, which names a setting to fix."""

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

SAY_WAIT_S = 2.0
"""How long the exit waits for its log line: a log handler whose lock the stuck thread
holds (a write to a full stderr pipe) must not hold the exit too."""


class StopDeadline:
    """Ends the process `grace_s` after the first SIGTERM or SIGINT if it still runs."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)  # set_wakeup_fd requires it
        self._forward: int | None = None
        """A duplicate of the wakeup fd asyncio had set (its self-pipe), or None."""
        self._lock = threading.Lock()
        self._asked: tuple[signal.Signals, float] | None = None
        self._loop_thread: int | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take the wakeup fd and watch it. Call from the main thread, on which `loop`
        runs, after its signal handlers are added: a handler added later sets asyncio's
        fd again, so `loop.add_signal_handler` is wrapped to take it back after."""
        self._loop_thread = threading.get_ident()
        self._take()
        add = loop.add_signal_handler

        def add_then_take(sig: int, callback: Callable[..., object], *args: object) -> None:
            add(sig, callback, *args)
            self._take()

        loop.add_signal_handler = add_then_take  # type: ignore[method-assign]
        threading.Thread(target=self._watch, name="moments-stop-deadline", daemon=True).start()

    def _take(self) -> None:
        ours = self._write.fileno()
        previous = signal.set_wakeup_fd(ours, warn_on_full_buffer=False)
        if previous in (-1, ours):
            return
        with self._lock:
            if self._forward is not None:
                os.close(self._forward)
            # A duplicate: asyncio closing its own at the end leaves no fd number of ours
            # that a later file could take.
            self._forward = os.dup(previous)

    def _watch(self) -> None:
        while data := self._read.recv(512):
            with self._lock:
                if self._forward is not None:
                    # Full (the loop is stuck) or closed (it is gone): asyncio's own
                    # handler drops the byte then too.
                    with contextlib.suppress(OSError):
                        os.write(self._forward, data)
            for number in data:
                if number in STOP_SIGNALS:
                    self.asked(signal.Signals(number))

    def asked(self, signum: signal.Signals) -> None:
        """A stop was asked for: start the deadline (once)."""
        with self._lock:
            if self._asked is not None:
                return
            self._asked = (signum, time.monotonic())
        timer = threading.Timer(self.grace_s, self._overdue)
        timer.daemon = True  # a process that stops in time is not held by it
        timer.start()

    def _overdue(self) -> None:
        said = threading.Thread(target=self._say, name="moments-stop-overdue", daemon=True)
        said.start()
        said.join(SAY_WAIT_S)
        os._exit(STOP_OVERDUE_EXIT)

    def _say(self) -> None:
        signum, at = self._asked or (signal.SIGTERM, time.monotonic())
        log.error(
            "%s came %.0f s ago and the worker has not stopped "
            "(MOMENTS_STOP_GRACE_SECONDS=%g): exiting with code %d without the last commit; "
            "the next worker reads the uncommitted events again and the ledger sends none "
            "of their tasks twice. %s",
            signum.name,
            time.monotonic() - at,
            self.grace_s,
            STOP_OVERDUE_EXIT,
            where(self._loop_thread),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()


def where(thread_id: int | None) -> str:
    """Where a thread is: its innermost Python frame, then its stack."""
    frame = sys._current_frames().get(thread_id if thread_id is not None else -1)
    if frame is None:
        return "The event loop's thread was not found."
    code = frame.f_code
    stack = "".join(traceback.format_stack(frame)).rstrip()
    return (
        f"The event loop is in {code.co_qualname} ({code.co_filename}:{frame.f_lineno}):\n{stack}"
    )
