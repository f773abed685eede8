"""The Makefile's set-up says what it does: `make run` on a fresh clone installs the
project before anything else, and pip runs with --quiet; and how `make pytest` runs the
suite."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MAKE = shutil.which("make")


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_the_install_says_it_is_installing_before_pip_goes_quiet() -> None:
    """A new user's `make run` printed `pip install --quiet ...` and nothing else for three
    minutes (measured 3 min 24 s on a fresh clone on a busy 2-core machine)."""
    assert MAKE is not None
    recipe = subprocess.run(
        [MAKE, "-n", "-B", ".venv/.installed"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    quiet = next(i for i, line in enumerate(recipe) if "pip install --quiet" in line)
    said = [line for line in recipe[:quiet] if line.startswith("echo ")]
    assert said, recipe
    assert "a few minutes" in said[0]


@pytest.mark.skipif(MAKE is None or shutil.which("redis-server") is None, reason="no make or redis")
def test_make_run_writes_only_what_moments_run_writes_to_stdout() -> None:
    """`make run ARGS=--json | jq .` failed at its first line: make echoed the command
    (`.venv/bin/moments run --json`) onto the stdout that holds the JSON lines."""
    assert MAKE is not None
    installed = subprocess.run([MAKE, "-q", ".venv/.installed"], cwd=ROOT, check=False)
    if installed.returncode != 0:
        pytest.skip("the virtualenv is not up to date: make run would install first")
    shown = subprocess.run(
        [MAKE, "--no-print-directory", "run", "ARGS=--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.startswith("usage: moments run"), shown[:200]


def test_pytest_may_keep_the_test_files_it_rewrote() -> None:
    """Each xdist worker collects every test file, and pytest keeps a file with its asserts
    rewritten only where Python may write bytecode: where the environment sets
    PYTHONDONTWRITEBYTECODE, each worker rewrote every file again on every run (~12 CPU-s
    of collection a worker). The suite's command unsets it for pytest alone."""
    (line,) = [
        line.strip()
        for line in (ROOT / "Makefile").read_text().splitlines()
        if line.startswith("\t") and " -m pytest -n " in line
    ]
    assert line.startswith("PYTHONDONTWRITEBYTECODE= "), line


def _make_run_ending_with(code: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`make run` in a copy of the Makefile whose `moments` only exits with `code`."""
    assert MAKE is not None
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("pyproject.toml", "constraints.txt"):
        (tmp_path / name).write_text("")
    fake = tmp_path / ".venv" / "bin" / "moments"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!/bin/sh\nexit {code}\n")
    fake.chmod(0o755)
    (tmp_path / ".venv" / ".installed").touch()  # newer than what it depends on
    return subprocess.run(
        [MAKE, "--no-print-directory", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(MAKE is None or shutil.which("redis-server") is None, reason="no make or redis")
class TestMakeRunExit:
    """`make run` stopped with Ctrl-C ended with `make: *** [Makefile:81: run] Error 130`,
    which reads as a failure, where 130 is `moments run`'s documented exit after Ctrl-C
    (new user's run). Any other code still fails the target, and make says so."""

    def test_an_interrupted_run_ends_quietly(self, tmp_path: Path) -> None:
        done = _make_run_ending_with(130, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "Error" not in done.stderr

    def test_a_failed_run_still_fails(self, tmp_path: Path) -> None:
        done = _make_run_ending_with(1, tmp_path)
        assert done.returncode == 2
        assert "run] Error 1" in done.stderr
