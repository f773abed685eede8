"""Progress in a log: long commands whose output is no terminal (CI, `nohup`, `docker
logs`) say how far they are every few seconds; a rich bar there printed once, at the end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moments.cli import main
from moments.progresslines import ProgressLines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_with_the_rate_and_what_is_left() -> None:
    clock, said = Clock(), list[str]()
    lines = ProgressLines("backtest", said.append, every_s=10.0, clock=clock)
    clock.now += 4
    lines.update(40_000, 0.1)
    assert said == []  # not yet 10 s
    clock.now += 6
    lines.update(100_000, 0.25)
    assert said == ["backtest: 100,000 events in 10 s (10,000/s), 25% done, about 30s left"]
    clock.now += 5
    lines.update(150_000, 0.4)
    assert len(said) == 1  # the next one 10 s after the last
    clock.now += 75
    lines.update(900_000, 0.9)
    assert said[-1] == "backtest: 900,000 events in 90 s (10,000/s), 90% done, about 10s left"
    lines.finish(1_000_000)
    assert said[-1] == "backtest: 1,000,000 events in 90 s (11,111/s)"


def test_minutes_left_and_no_share_when_it_is_unknown() -> None:
    clock, said = Clock(), list[str]()
    lines = ProgressLines("history", said.append, every_s=1.0, clock=clock)
    clock.now += 60
    lines.update(1_000, 0.25)
    lines.update(1_000, None)
    clock.now += 1
    lines.update(2_000, None)
    assert said == [
        "history: 1,000 events in 60 s (17/s), 25% done, about 3m00s left",
        "history: 2,000 events in 61 s (33/s)",
    ]


def test_a_backtest_into_a_log_says_how_far_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Captured stderr is no terminal: lines as it reads (the interval at 0 here), the
    last with every event, and no bar."""
    history = tmp_path / "history.jsonl.gz"
    argv = ["simulate", "--subscribers", "20", "--rate", "5", "--seed", "2"]
    assert main([*argv, "--duration", "2400", "--to-file", str(history)]) == 0
    # From Python 3.12 GzipFile reads the file 128 KiB at a time (8 KiB before): a file
    # smaller than that is read whole with its first line, and no line says how far it is.
    assert history.stat().st_size > 2 * 128 * 1024
    capsys.readouterr()
    monkeypatch.setattr("moments.progresslines.PROGRESS_EVERY_S", 0.0)
    assert main(["backtest", "--events", str(history), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "% done, about " in err
    last = re.findall(r"^backtest: ([\d,]+) events in \d+ s \([\d,]+/s\)$", err, re.M)
    assert last, err
    assert f"\n{last[-1]} event(s) in " in err  # the summary's count: every event read
    assert "\u2501" not in err  # rich's bar


def test_the_last_line_is_not_said_twice() -> None:
    """A slow backtest's progress call after its run-on made a line due: `finish` then said
    the same count again a second later (`231 s`, then `232 s`)."""
    clock, said = Clock(), list[str]()
    lines = ProgressLines("backtest", said.append, every_s=10.0, clock=clock)
    clock.now += 231
    lines.update(1_000_000, 1.0)
    clock.now += 1
    lines.finish(1_000_000)
    assert said == ["backtest: 1,000,000 events in 231 s (4,329/s)"]


def test_the_last_line_is_said_when_a_due_line_still_had_a_share_left() -> None:
    clock, said = Clock(), list[str]()
    lines = ProgressLines("backtest", said.append, every_s=10.0, clock=clock)
    clock.now += 90
    lines.update(1_000_000, 0.9)
    clock.now += 1
    lines.finish(1_000_000)
    assert said[-1] == "backtest: 1,000,000 events in 91 s (10,989/s)"


def test_one_event_is_one_event() -> None:
    """A one-line history ended its progress with `backtest: 1 events in 0 s` (new user's
    run); one record likewise."""
    clock, said = Clock(), list[str]()
    ProgressLines("backtest", said.append, every_s=10.0, clock=clock).finish(1)
    ProgressLines("reading t", said.append, clock=clock, unit="records").finish(1)
    assert said == ["backtest: 1 event in 0 s (0/s)", "reading t: 1 record in 0 s (0/s)"]
