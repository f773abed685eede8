"""What a command prints to stdout while its read progress bar is drawn on a terminal's
stderr goes to stdout (`moments deadletter show --json | jq` got nothing: rich sent it
through the bar's console, stderr)."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

import pytest

PROGRAM = """
from rich.console import Console
from moments.topicread import ReadBar
bar = ReadBar(Console(stderr=True), "moments.deadletter")
with bar.progress:
    bar(1, 2)
    print('{"record": 1}')
"""


def test_stdout_printed_during_the_bar_reaches_a_pipe_when_stderr_is_a_terminal() -> None:
    main, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", PROGRAM],
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=30,
            check=True,
        )
    finally:
        os.close(terminal)
        os.close(main)
    assert proc.stdout.decode().splitlines() == ['{"record": 1}']


def test_in_a_log_the_read_says_how_far_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new user's first hour (review): `kubectl -n moments exec moments-worker-0 -- moments
    deadletter show`, as the docs run it, has no terminal, and the bar is drawn on one only:
    a dead-letter topic of a spike read for minutes without a word. With stderr no
    terminal, it says how far it is every 10 s (`ProgressLines`), as the backtest does."""
    from rich.console import Console

    from moments.progresslines import PROGRESS_EVERY_S
    from moments.topicread import ReadBar

    readings: list[float] = []

    def clock() -> float:
        readings.append(len(readings) * PROGRESS_EVERY_S)  # each reading: a line is due
        return readings[-1]

    monkeypatch.setattr("moments.progresslines.CLOCK", clock)
    log = io.StringIO()
    bar = ReadBar(Console(file=log), "moments.deadletter")
    with bar.progress:
        bar(250_000, 1_000_000)
        bar(1_000_000, 1_000_000)
    said = log.getvalue().splitlines()
    assert said[0] == (
        "reading moments.deadletter: 250,000 records in 10 s (25,000/s), 25% done, about 30s left"
    )
    assert said[1].startswith("reading moments.deadletter: 1,000,000 records in 20 s")


def test_on_a_terminal_it_is_the_bar_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from moments.topicread import ReadBar

    monkeypatch.setattr("moments.progresslines.CLOCK", lambda: 1e9)
    log = io.StringIO()
    bar = ReadBar(Console(file=log, force_terminal=True), "moments.deadletter")
    with bar.progress:
        bar(250_000, 1_000_000)
    assert "records in" not in log.getvalue()
