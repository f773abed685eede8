"""Edges an analyst met running `moments backtest` on their own files:

- `--top 0` printed an empty "Top rules" table and `--top -1` one without its last rule
  (a slice `[:-1]`), without a word: a number of rules below 1 is refused with the fix;
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

from .test_unreadable_lines import topup


class TestTop:
    @pytest.mark.parametrize("top", ["0", "-1"])
    def test_a_top_below_one_is_refused_with_the_fix(
        self, tmp_path: Path, top: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Not a table short of rules: argparse's exit 2, saying what to write."""
        events = tmp_path / "e.jsonl"
        events.write_bytes(topup(1) + b"\n")
        argv = ["backtest", "--events", str(events), "--top", top, "--out", str(tmp_path / "o")]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "--top" in capsys.readouterr().err
        assert not (tmp_path / "o").exists()
