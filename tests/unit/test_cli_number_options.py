"""The number options that had argparse's own `type=int`/`type=float`, or a type of their
own that echoed the value whole: a value that is none, however long, is quoted, cut
short, and told the range to write in."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

PASTED = "x" + "5" * 300
"""A pasted value argparse repeated in full (`invalid float value: 'x555...'`)."""


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


SIMULATE = ["simulate", "--subscribers", "5", "--rate", "1", "--duration", "10"]


class TestSimulate:
    @pytest.mark.parametrize("value", [PASTED, "1.5", "seven", "\x1b[2J7"])
    def test_a_seed_that_is_no_whole_number_is_quoted_cut_and_told_the_form(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
    ) -> None:
        said = _refused(
            [*SIMULATE, "--seed", value, "--to-file", str(tmp_path / "o.jsonl")], capsys
        )
        assert "5" * 20 not in said, said
        assert "\x1b" not in said, said
        assert said.endswith(": write a whole number, e.g. 7 (the same seed, the same stream)")

    def test_a_seed_of_any_whole_number_is_taken(self, tmp_path: Path) -> None:
        for seed in ("0", "-3", "7"):
            path = tmp_path / f"{seed}.jsonl"
            assert main([*SIMULATE, "--seed", seed, "--to-file", str(path)]) == 0
            assert path.stat().st_size > 0

    @pytest.mark.parametrize(
        ("value", "quoted"),
        [
            (PASTED, "'x5555555555555555...'"),
            ("5", "'5'"),
            ("-0.1", "'-0.1'"),
            ("nan", "'nan'"),
            ("inf", "'inf'"),
            ("a lot", "'a lot'"),
        ],
    )
    def test_a_plant_rate_that_is_no_share_is_quoted_cut_and_told_the_range(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, quoted: str
    ) -> None:
        """`--plant-rate 5` was refused only after the arguments were read, and one of
        300 characters was repeated in full with no range."""
        path = tmp_path / "o.jsonl"
        said = _refused([*SIMULATE, "--plant-rate", value, "--to-file", str(path)], capsys)
        assert said.endswith(f"--plant-rate: {quoted}: write a share of events from 0 to 1")
        assert not path.exists()

    @pytest.mark.parametrize("value", ["0", "1", "0.05"])
    def test_a_plant_rate_from_0_to_1_is_taken(self, tmp_path: Path, value: str) -> None:
        path = tmp_path / "o.jsonl"
        assert main([*SIMULATE, "--plant-rate", value, "--to-file", str(path)]) == 0
        assert path.stat().st_size > 0


@pytest.mark.parametrize(
    ("value", "quoted"), [(PASTED, "'x5555555555555555...'"), ("9" * 300, "'" + "9" * 17 + "...'")]
)
def test_a_check_timeout_out_of_range_is_quoted_cut_and_told_the_range(
    capsys: pytest.CaptureFixture[str], value: str, quoted: str
) -> None:
    """`--timeout` repeated 300 digits whole (as its repr) before the range."""
    said = _refused(["check", "--timeout", value], capsys)
    assert said.endswith(f"--timeout: {quoted}: give seconds above 0 and below 3600"), said


@pytest.mark.parametrize(("value", "quoted"), [(PASTED, "'x5555555555555555...'"), ("-1", "'-1'")])
def test_an_events_check_max_shown_that_is_none_is_quoted_cut_and_told_the_range(
    capsys: pytest.CaptureFixture[str], value: str, quoted: str
) -> None:
    """`--max-shown` repeated the value whole and unquoted, with no range."""
    said = _refused(["events", "check", "--max-shown", value, "events.jsonl"], capsys)
    assert said.endswith(
        f"--max-shown: {quoted}: write a whole number of 0 or more, 0 to print no refused "
        "line (all are counted)"
    ), said
