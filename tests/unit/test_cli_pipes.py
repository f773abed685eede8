"""`moments ... | head`: a reader that stops early ends the command quietly (a
BrokenPipeError traceback before), and `state show` refuses what is no subscriber id."""

from __future__ import annotations

import subprocess
import sys

import pytest

from moments.cli import main


def test_a_closed_pipe_ends_the_command_without_a_traceback() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "moments", "rules", "explain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the first line
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    assert b"BrokenPipe" not in err


def test_state_show_refuses_what_is_no_subscriber_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["state", "show", "abc", "13800138001"]) == 2
    assert "not a subscriber id: abc; give the MSISDN, 5 to 20 digits" in capsys.readouterr().err
