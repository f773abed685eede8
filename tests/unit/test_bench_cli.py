"""`moments bench` arguments it refuses before starting anything."""

from __future__ import annotations

import pytest


def test_bench_refuses_too_few_events_naming_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    from moments.cli import main

    assert main(["bench", "--events", "5000"]) == 2
    err = capsys.readouterr().err
    assert "too few to time a worker" in err
    assert "--events 50,000 or more" in err
