"""Input files an analyst gave `moments backtest`, `moments rules test` and `moments state
seed`, and what each was told:

- a `--profiles` file that is not there was told "pass an events file (.jsonl, .csv,
  .gz)", the events files given and read: the message names `--profiles` and its fix;
- a file saved by Excel as "Unicode Text" or "CSV UTF-16" (UTF-16, a byte-order mark
  first) was told "not UTF-8 (byte 0xff)" as CSV, and as JSON lines a dump of its bytes
  and "no JSON lines file"; one without the mark "add a `type` column", beside one. Each
  is named UTF-16, with the way to save or convert it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

from .test_unreadable_lines import CATALOG, topup

JSONL = b"".join(topup(n) + b"\n" for n in range(1, 4))


class TestMissingProfiles:
    @pytest.mark.parametrize(
        "command",
        [
            ["backtest", "--out", "{tmp}/o"],
            ["rules", "test", str(CATALOG)],
            ["state", "seed", "--dry-run"],
        ],
    )
    def test_a_missing_profiles_file_is_named_as_the_profiles(
        self, tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = tmp_path / "e.jsonl"
        events.write_bytes(JSONL)
        missing = tmp_path / "crm.jsonl"
        argv = [a.replace("{tmp}", str(tmp_path)) for a in command]
        argv += ["--events", str(events), "--profiles", str(missing)]
        assert main(argv) != 0
        said = " ".join(capsys.readouterr().err.split())
        assert f"{missing}: no such file, given to --profiles" in said
        assert "leave --profiles out when the --events files hold the profiles" in said
        assert "pass an events file" not in said

    def test_a_missing_events_file_is_still_an_events_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        missing = tmp_path / "nope.jsonl"
        argv = ["backtest", "--events", str(missing), "--out", str(tmp_path / "o")]
        assert main(argv) == 1
        said = " ".join(capsys.readouterr().err.split())
        assert f"{missing}: no such file; pass an events file" in said
