"""The stop deadline (moments.stopdeadline): SIGTERM or SIGINT still reach the event
loop's handlers, and a process whose loop is stuck ends `grace` after them with code 70
and a log line saying where the loop is. In child processes: signals and wakeup fds are
the whole process's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from moments.stopdeadline import STOP_OVERDUE_EXIT

PROBE = """
import asyncio, logging, os, signal, sys, time
from moments.stopdeadline import StopDeadline

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
mode, signame = sys.argv[1], sys.argv[2]
signum = signal.Signals[signame]


def stuck_in_a_batch():
    print("STUCK", file=sys.stderr, flush=True)
    time.sleep(60)


async def main():
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    loop.add_signal_handler(signum, stopped.set)  # as Faust's worker does
    StopDeadline(float(sys.argv[3])).start(loop)
    # A handler added later (the runtime's SIGHUP) sets asyncio's wakeup fd again.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    os.kill(os.getpid(), signum)
    if mode == "stuck":
        stuck_in_a_batch()
    await asyncio.wait_for(stopped.wait(), 30)
    print("STOPPED BY THE LOOP'S HANDLER", file=sys.stderr, flush=True)

asyncio.run(main())
"""


def run(mode: str, signame: str, grace: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, mode, signame, str(grace)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_the_event_loop_still_handles_the_signal(signame: str) -> None:
    """The wakeup fd is the deadline's now: each byte must be passed on to asyncio's."""
    done = run("running", signame, 30)
    assert done.returncode == 0, done.stderr
    assert "STOPPED BY THE LOOP'S HANDLER" in done.stderr
    assert "has not stopped" not in done.stderr


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_stuck_loop_ends_after_the_grace_saying_where_it_is(signame: str) -> None:
    done = run("stuck", signame, 0.5)
    assert done.returncode == STOP_OVERDUE_EXIT, done.stderr
    assert "STUCK" in done.stderr
    assert "STOPPED" not in done.stderr
    assert f"{signame} came " in done.stderr
    assert "has not stopped (MOMENTS_STOP_GRACE_SECONDS=0.5): exiting with code 70" in done.stderr
    assert "The event loop is in stuck_in_a_batch (<string>:" in done.stderr


LOCKED_LOG_PROBE = """
import asyncio, logging, os, signal, sys, time
from moments.stopdeadline import StopDeadline

logging.basicConfig(level=logging.INFO, stream=sys.stderr)


async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: None)
    StopDeadline(0.5).start(loop)
    os.kill(os.getpid(), signal.SIGTERM)
    # The loop is stuck inside the log handler (a write to a full stderr pipe, say),
    # holding its lock: the deadline's own line cannot be written.
    logging.getLogger().handlers[0].acquire()
    print("HOLDING THE LOG LOCK", file=sys.__stderr__, flush=True)
    time.sleep(60)

asyncio.run(main())
"""


def test_a_loop_stuck_holding_the_log_handler_lock_still_ends() -> None:
    """The exit waits for its log line only `SAY_WAIT_S`: a handler whose lock the stuck
    thread holds must not hold the exit too (the process would run until SIGKILL)."""
    done = subprocess.run(
        [sys.executable, "-c", LOCKED_LOG_PROBE], capture_output=True, text=True, timeout=60
    )
    assert "HOLDING THE LOG LOCK" in done.stderr
    assert done.returncode == STOP_OVERDUE_EXIT, done.stderr
    assert "has not stopped" not in done.stderr  # the line never got through
