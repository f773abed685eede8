"""`moments rules test` names each refused event by its file and the line it begins on
(a CSV row's line counts the header), not by its count among the events of its type:
`usage #2` sent the analyst who opened the file at line 2 to another row."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

from .test_unreadable_lines import CATALOG

SUB = "13800138001"


def _json(n: int, event_type: str, sub: str = SUB, **fields: object) -> str:
    more = "".join(f', "{k}": {v!r}'.replace("'", '"') for k, v in fields.items())
    return (
        f'{{"type": "{event_type}", "event_id": "e{n}", "subscriber_id": "{sub}", '
        f'"occurred_at": "2026-12-01T09:0{n}:00+08:00"{more}}}\n'
    )


def _refused(capsys: pytest.CaptureFixture[str]) -> list[str]:
    out = capsys.readouterr().out
    return out.split(" refused:\n", 1)[1].splitlines()


class TestRefusedLines:
    def test_a_json_line_is_named_by_its_line_in_the_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = tmp_path / "e.jsonl"
        events.write_text(
            _json(1, "topup", amount=50, channel="app")
            + _json(2, "usage", kind="voice", quantity=60)
            + "\n"  # a blank line counts as a line of the file
            + _json(3, "usage", kind="bogus")
            + _json(4, "topup", amount=-5, channel="app")
        )
        assert main(["rules", "test", str(CATALOG), "--events", str(events)]) == 0
        refused = _refused(capsys)
        assert refused[0].startswith(f"  {events}:4: usage (event_id e3): kind: ")
        assert refused[1].startswith(f"  {events}:5: topup (event_id e4): amount: ")

    def test_a_csv_row_is_named_by_its_line_the_header_counted(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = tmp_path / "e.csv"
        events.write_text(
            "type,event_id,subscriber_id,occurred_at,amount,channel,kind,service_code\n"
            f"usage,e1,{SUB},2026-12-01T09:01:00+08:00,,,voice,\n"
            f'usage,e2,{SUB},2026-12-01T09:02:00+08:00,,,service_order,"two\nlines"\n'
            f"topup,e3,{SUB},2026-12-01T09:03:00+08:00,-5,app,,\n"
        )
        assert main(["rules", "test", str(CATALOG), "--events", str(events)]) == 0
        refused = _refused(capsys)
        assert refused[0].startswith(f"  {events}:3: usage (event_id e2): service_code: ")
        assert refused[1].startswith(f"  {events}:5: topup (event_id e3): amount: ")

    def test_a_profile_is_named_in_the_file_it_came_from(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        profiles = tmp_path / "crm.jsonl"
        profiles.write_text(_json(0, "profile", tier="gold") + _json(0, "profile", "1"))
        events = tmp_path / "e.jsonl"
        events.write_text(_json(1, "topup", amount=50, channel="app") + _json(2, "profile", "2"))
        argv = ["--events", str(events), "--profiles", str(profiles)]
        assert main(["rules", "test", str(CATALOG), *argv]) == 0
        refused = _refused(capsys)
        assert refused[0].startswith(f"  {profiles}:2: profile (event_id e0): subscriber_id: ")
        assert refused[1].startswith(f"  {events}:2: profile (event_id e2): subscriber_id: ")
