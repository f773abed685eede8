"""MOMENTS_LOG_FORMAT=json: an exception nothing caught is one JSON record, its traceback
in the `exception` field. Python printed it as plain lines, which a log collector split
into one entry per line, none of them JSON, the first without the traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, sys, threading
    from moments import worker
    from moments.cli import main

    async def fail() -> None:
        raise ValueError("a task failed for 13800138000")

    async def forget() -> None:
        asyncio.ensure_future(fail())
        await asyncio.sleep(0.01)

    def boom(environ, dotenv=None):
        # Inside the worker's start, after its log is set up: a thread's exception, an
        # asyncio task's never retrieved, then the main thread's.
        thread = threading.Thread(target=lambda: 1 / 0, name="metrics-thread")
        thread.start()
        thread.join()
        asyncio.run(forget())
        gc.collect()
        raise RuntimeError("Redis refused subscriber 13800138000")

    worker.unknown_variables = boom
    sys.exit(main(["worker"]))
    """
)


def run_worker(
    tmp_path: Path, log_format: str, script: str = SCRIPT
) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MOMENTS_") and key != "PYTHONWARNINGS"
    }
    env |= {"MOMENTS_LOG_FORMAT": log_format, "MOMENTS_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_uncaught_exceptions_are_one_json_record_each(tmp_path: Path) -> None:
    done = run_worker(tmp_path, "json")
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on any line that is no JSON
    failed = {r["exception"].splitlines()[-1]: r for r in records if "exception" in r}
    main = failed["RuntimeError: Redis refused subscriber 138****8000"]
    assert main["level"] == "CRITICAL", main
    assert main["message"] == (
        "uncaught RuntimeError in the main thread: Redis refused subscriber 138****8000; "
        "the process stops"
    ), main
    assert main["exception"].startswith("Traceback (most recent call last):"), main
    thread = failed["ZeroDivisionError: division by zero"]
    assert thread["level"] == "CRITICAL", thread
    assert thread["message"] == (
        "uncaught ZeroDivisionError in thread metrics-thread: division by zero"
    ), thread
    task = failed["ValueError: a task failed for 138****8000"]
    assert task["logger"] == "asyncio", task
    assert "13800138000" not in done.stderr


@pytest.mark.parametrize("log_format", ["text"])
def test_a_text_log_keeps_pythons_traceback(tmp_path: Path, log_format: str) -> None:
    done = run_worker(tmp_path, log_format)
    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last):" in done.stderr
    assert done.stderr.rstrip().endswith("RuntimeError: Redis refused subscriber 138****8000")
    assert "13800138000" not in done.stderr


READING = textwrap.dedent(
    """
    import sys
    import moments.settings
    from moments.cli import main

    def unreadable():
        raise RuntimeError("the settings could not be read for 13800138000")

    moments.settings.load_settings = unreadable  # fails as the worker reads its settings
    sys.exit(main(["worker"]))
    """
)


def test_an_exception_while_the_settings_are_read_is_json_too(tmp_path: Path) -> None:
    """Before the worker had read its settings, its log was the CLI's text one: an
    exception then (not a refusal, which is said as one record) was Python's plain
    lines, though MOMENTS_LOG_FORMAT said json."""
    done = run_worker(tmp_path, "json", READING)
    assert done.returncode == 1, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    record = json.loads(line)
    assert record["level"] == "CRITICAL", record
    assert record["message"] == (
        "uncaught RuntimeError in the main thread: the settings could not be read for "
        "138****8000; the process stops"
    ), record
    assert record["exception"].startswith("Traceback (most recent call last):"), record
