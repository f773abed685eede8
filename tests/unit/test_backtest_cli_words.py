"""What `moments backtest` says of its counts and of a stop: "1 tasks reported" read as a
slip (new user's run); the project's lines count with "(s)" (`1 task(s) were still
waiting`, `1 day(s)`)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from moments.backtest_cli import stopped_reading
from moments.cli import main

from .test_backtest import write_history, write_rules


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(capsys.readouterr().err.split())


class TestSummaryCounts:
    """The summary line counts events and tasks as the other lines do: "(s)"."""

    def test_one_event_and_one_task(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        history = write_history(tmp_path / "h.jsonl")  # 7 top-ups, 2026-11-10 and 11
        one = tmp_path / "one.jsonl"
        one.write_text(history.read_text().splitlines()[0] + "\n")  # a big top-up
        rules = write_rules(tmp_path / "r.yaml")
        argv = ["backtest", "--events", str(one), "--rules", str(rules)]
        assert main([*argv, "--to", "2026-11-11", "--out", str(tmp_path / "out")]) == 0
        said = _said(capsys)
        assert "1 event(s) in " in said, said
        assert ", 1 task(s) reported; wrote " in said, said
        # "1 events" alone, not the rate's "441 events/s" (a count that ends in 1)
        assert not re.search(r"\b1 tasks\b", said), said
        assert not re.search(r"\b1 events\b", said), said  # the progress line's too


def _stopped_after(events: int) -> Any:
    """`run_backtest` stopped by Ctrl-C once `events` were read (said through `progress`,
    as the engine says them after each batch)."""

    def run(rules: Any, history: Any, policy: Any, progress: Any, **kwargs: Any) -> Any:
        for _ in zip(range(events), history, strict=False):  # read, as the engine reads
            pass
        progress(events)
        raise KeyboardInterrupt

    return run


class TestInterrupted:
    """`moments backtest` stopped with Ctrl-C exited 130 without a word (new user's run):
    it says how far it had read and that the report was not written."""

    def _argv(self, tmp_path: Path) -> list[str]:
        history = write_history(tmp_path / "h.jsonl")  # 7 top-ups
        rules = write_rules(tmp_path / "r.yaml")
        out = tmp_path / "out"
        return ["backtest", "--events", str(history), "--rules", str(rules), "--out", str(out)]

    def test_says_the_events_read_and_that_nothing_was_written(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr("moments.backtest.run_backtest", _stopped_after(3))
        assert main(self._argv(tmp_path)) == 130
        said = _said(capsys)
        assert "moments: backtest stopped (Ctrl-C) after 3 event(s)" in said, said
        assert f"nothing was written to {tmp_path / 'out'}/" in said, said
        assert list((tmp_path / "out").iterdir()) == []

    def test_an_earlier_report_in_out_is_said_to_be_left_as_it_was(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        assert main(self._argv(tmp_path)) == 0
        before = (tmp_path / "out" / "report.json").read_bytes()
        capsys.readouterr()
        monkeypatch.setattr("moments.backtest.run_backtest", _stopped_after(2))
        assert main(self._argv(tmp_path)) == 130
        said = _said(capsys)
        assert "after 2 event(s)" in said, said
        assert "the report already there, from an earlier run, is as it was" in said, said
        assert (tmp_path / "out" / "report.json").read_bytes() == before

    def test_a_stop_while_writing_says_the_files_may_be_mixed(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        def stopped(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr("moments.backtest_cli._write", stopped)
        assert main(self._argv(tmp_path)) == 130
        said = _said(capsys)
        assert "moments: backtest stopped (Ctrl-C) while writing the report" in said, said
        assert "run it again" in said


def _busy_run_interrupted(rules: Any, history: Any, policy: Any, progress: Any, **_: Any) -> Any:
    """`run_backtest` as it is: `asyncio.run` of an engine that computes without giving
    the loop a turn, here interrupted (SIGINT) a moment into it."""

    async def engine() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        events = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # never suspends: no turn for the loop
            events += 1
            if events % 1000 == 0:
                progress(events)
        raise AssertionError("Ctrl-C did not stop the run")

    return asyncio.run(engine())


class TestCtrlCStopsTheRun:
    """The first Ctrl-C of a backtest did nothing: `asyncio.run` takes SIGINT to cancel its
    task, which never gives the loop a turn, so the run went on to write its report; a
    second one left with no word (new user's run)."""

    def test_the_first_ctrl_c_stops_the_run_and_says_so(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("moments.backtest.run_backtest", _busy_run_interrupted)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's
        try:
            history = write_history(tmp_path / "h.jsonl")
            out = tmp_path / "out"
            assert main(["backtest", "--events", str(history), "--out", str(out)]) == 130
            after = signal.getsignal(signal.SIGINT)
        finally:
            signal.signal(signal.SIGINT, previous)
        said = _said(capsys)
        assert "moments: backtest stopped (Ctrl-C) after " in said, said
        assert after is signal.default_int_handler  # as it was before the command


class _Bar:
    """What `stopped_reading` reads of a progress bar: the events, the bytes read."""

    events = 1200

    def read(self) -> tuple[int, int]:
        return 250, 1000


def test_a_stop_in_the_baseline_run_names_it() -> None:
    said = stopped_reading("baseline", _Bar(), Path("out"), had_report=False)  # type: ignore[arg-type]  # a stand-in bar
    assert said == (
        "moments: backtest stopped (Ctrl-C) in the baseline rules' run after 1,200 event(s) "
        "read (25% of the history's bytes): nothing was written to out/ (the report needs "
        "the whole run). Run it again (an earlier --to makes a shorter run)"
    )
