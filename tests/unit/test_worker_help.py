"""`moments worker --help` says what each of the worker's exit codes means: the code is
what `kubectl describe pod` (Last State: Terminated, Exit Code), `docker ps -a` and
`systemctl status` show of a stopped worker, and the help said nothing of them. The
codes it gives for a start refused are the ones a worker exits with."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from moments.cli import main
from moments.stopdeadline import STOP_OVERDUE_EXIT


def worker_help(capsys: pytest.CaptureFixture[str]) -> dict[int, str]:
    """The help's exit codes -> what it says of each."""
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    text = capsys.readouterr().out
    assert "\nexit codes:\n" in text, "moments worker --help names no exit code"
    listed = text.split("\nexit codes:\n", 1)[1]
    said: dict[int, str] = {}
    for code, words in re.findall(r"^  (\d+) +(.*(?:\n {6}.*)*)", listed, re.M):
        said[int(code)] = " ".join(words.split())
    return said


def start(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`moments worker` with these settings alone, against no broker."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    return subprocess.run(
        [sys.executable, "-m", "moments", "worker"],
        env={**clean, "MOMENTS_KAFKA_BOOTSTRAP": "127.0.0.1:1", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_help_names_every_exit_code_of_the_worker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    said = worker_help(capsys)
    assert sorted(said) == [0, 1, 2, STOP_OVERDUE_EXIT]
    assert "SIGTERM" in said[0]
    assert "MOMENTS_STOP_GRACE_SECONDS" in said[STOP_OVERDUE_EXIT]


def test_a_start_refused_exits_with_the_code_the_help_gives(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    said = worker_help(capsys)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: x\n    bogus: 1\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("bogus: 1\n")
    missing = str(tmp_path / "nowhere.yaml")
    refused = {
        "the rules": start({"MOMENTS_RULES": str(rules)}, tmp_path),
        "a setting": start({"MOMENTS_STORE": "bogus"}, tmp_path),
        "the dispatch policy": start({"MOMENTS_DISPATCH_POLICY": str(policy)}, tmp_path),
        "a rules or policy path": start({"MOMENTS_RULES": missing}, tmp_path),
        "policy path": start({"MOMENTS_DISPATCH_POLICY": missing}, tmp_path),
    }
    for what, run in refused.items():
        assert run.returncode in said, (what, run.returncode, run.stderr[-2000:])
        assert what in said[run.returncode], (what, run.returncode, said[run.returncode])
    # The README's rule: a file read and found wanting is 1, a path or setting given
    # wrong 2. A policy refused exited 2 where rules refused exited 1.
    codes = {what: run.returncode for what, run in refused.items()}
    assert codes == {
        "the rules": 1,
        "the dispatch policy": 1,
        "a setting": 2,
        "a rules or policy path": 2,
        "policy path": 2,
    }
