"""The number options' argparse types (`moments.cliparts`): a value that is none, however
long or odd, is shown cut short and quoted, and the error names the range to write in."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from moments.cli import main
from moments.cliparts import port_or_off, positive_int

PASTED = "7" * 5000
"""A page of digits: more than Python reads as an int (4,300), so int() refuses it."""
ODD = ["abc", "1.5", PASTED, "z" * 200, "\x1b[2J5", ""]


class TestPositiveInt:
    @pytest.mark.parametrize("text", ODD)
    def test_a_value_that_is_no_whole_number_is_shown_cut_with_the_range(self, text: str) -> None:
        """Argparse's own `invalid positive_int value: '777...'` echoed all 5,000 digits
        and named no range; an escape sequence went to the terminal as it was."""
        with pytest.raises(argparse.ArgumentTypeError) as refused:
            positive_int(text)
        said = str(refused.value)
        assert said.endswith(": write a whole number of 1 or more"), said
        assert len(said) < 80, said
        assert "\x1b" not in said, said

    def test_a_whole_number_below_1_is_refused_and_1_taken(self) -> None:
        with pytest.raises(argparse.ArgumentTypeError, match="'0': write a whole number of 1"):
            positive_int("0")
        assert positive_int("1") == 1


@pytest.mark.parametrize("port", ["abc", PASTED, "70000"])
def test_a_port_that_is_none_is_shown_cut_with_the_range(port: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        port_or_off(port)
    said = str(refused.value)
    assert said.endswith(": write a port number from 1 to 65535, or 0 to turn /metrics off")
    assert len(said) < 100, said


@pytest.mark.parametrize("rate", ["inf", "-1", "nan", "abc", PASTED + "x", "\x1b[2J5"])
def test_a_rate_that_is_none_is_shown_cut_with_the_range(
    rate: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--rate abc` (and a long paste) got argparse's `invalid _positive_float value:`
    with the whole value; `--rate inf` its value unquoted."""
    argv = ["simulate", "--subscribers", "5", "--duration", "10", "--rate", rate]
    with pytest.raises(SystemExit):
        main([*argv, "--to-file", str(tmp_path / "o.jsonl")])
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.endswith(": write a finite number above 0"), said
    assert len(said) < 160, said
    assert "\x1b" not in said, said
    assert "_positive_float" not in said, said
