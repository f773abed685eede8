"""What a command prints to stdout while its read progress bar is drawn on a terminal's
stderr goes to stdout (`moments deadletter show --json | jq` got nothing: rich sent it
through the bar's console, stderr)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

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
