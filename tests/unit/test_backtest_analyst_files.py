"""Input files an analyst gave `moments backtest`, `moments rules test` and `moments state
seed`, and what each was told:

- a `--profiles` file that is not there was told "pass an events file (.jsonl, .csv,
  .gz)", the events files given and read: the message names `--profiles` and its fix;
- a file saved by Excel as "Unicode Text" or by Notepad as "Unicode" (UTF-16, a
  byte-order mark first) was told "not UTF-8 (byte 0xff)" as CSV, and as JSON lines a
  dump of its bytes and "no JSON lines file"; one without the mark "add a `type`
  column", beside one. Each is named UTF-16, with the way to save or convert it;
- a rule whose moments only join other rules' tasks read `0 0 0` in the comparison.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from moments.cli import main

from .test_unreadable_lines import CATALOG, topup

JSONL = b"".join(topup(n) + b"\n" for n in range(1, 4))


def _refused_file(
    tmp_path: Path,
    name: str,
    data: bytes,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
) -> tuple[Path, str]:
    """`command` (`{tmp}`: `tmp_path`) run on `data` saved as `name`: exit 1 asserted; the
    file's path and what was said on stderr, on one line."""
    path = tmp_path / name
    path.write_bytes(data)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command] + ["--events", str(path)]
    assert main(argv) == 1
    return path, " ".join(capsys.readouterr().err.split())


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
        assert main(argv) == 2  # 2, not 1: a path given wrong is set-up (README, exit codes)
        said = " ".join(capsys.readouterr().err.split())
        assert f"{missing}: no such file; pass an events file" in said


CSV_TEXT = "type\tevent_id\tsubscriber_id\toccurred_at\tamount\tchannel\r\n" + "".join(
    f"topup\tt{n}\t1380000000{n}\t2026-11-10T1{n}:00:00+08:00\t50\tapp\r\n" for n in range(1, 4)
)


class TestUtf16:
    @pytest.mark.parametrize(
        ("name", "data", "convert"),
        [
            # Excel's "Unicode Text": UTF-16 LE with its mark, tab-separated, named .txt
            (
                "export.txt",
                CSV_TEXT.encode("utf-16"),
                "iconv -f UTF-16 -t UTF-8 {path} > export-utf8.csv",
            ),
            (
                "export.csv",
                CSV_TEXT.encode("utf-16"),
                "iconv -f UTF-16 -t UTF-8 {path} > export-utf8.csv",
            ),
            (
                "export.csv",
                CSV_TEXT.encode("utf-16-le"),
                "iconv -f UTF-16LE -t UTF-8 {path} > export-utf8.csv",
            ),
            (
                "events.jsonl",
                JSONL.decode().encode("utf-16"),
                "iconv -f UTF-16 -t UTF-8 {path} > events-utf8.jsonl",
            ),
            (
                "events.jsonl",
                JSONL.decode().encode("utf-16-be"),
                "iconv -f UTF-16BE -t UTF-8 {path} > events-utf8.jsonl",
            ),
            (
                "export.csv.gz",
                gzip.compress(CSV_TEXT.encode("utf-16")),
                "zcat {path} | iconv -f UTF-16 -t UTF-8 | gzip > export-utf8.csv.gz",
            ),
        ],
    )
    @pytest.mark.parametrize(
        "command", [["backtest", "--out", "{tmp}/o"], ["rules", "test", str(CATALOG)]]
    )
    def test_utf16_is_named_with_the_way_to_save_or_convert_it(
        self,
        tmp_path: Path,
        name: str,
        data: bytes,
        convert: str,
        command: list[str],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        path, said = _refused_file(tmp_path, name, data, command, capsys)
        assert f"{path}: UTF-16 text" in said
        assert convert.format(path=path) in said
        assert "not UTF-8 (byte" not in said  # the old words
        assert "add a `type` column" not in said

    def test_the_converted_file_is_read(self, tmp_path: Path) -> None:
        """What the message tells to run (Python's codecs for iconv) makes a file that
        is read: the Unicode Text export as CSV, its tabs between cells."""
        from moments.backtest_input import EventFile

        converted = tmp_path / "export-utf8.csv"
        converted.write_bytes(CSV_TEXT.encode("utf-16").decode("utf-16").encode())
        events = list(EventFile(converted))
        assert [e.event_type.value for e in events] == ["topup"] * 3

    @pytest.mark.parametrize(
        ("name", "data"),
        [
            ("bom.csv", b"\xef\xbb\xbf" + CSV_TEXT.encode()),  # Excel's "CSV UTF-8"
            ("semi.csv", CSV_TEXT.replace("\t", ";").encode()),  # a European locale
            ("crlf.jsonl", JSONL.replace(b"\n", b"\r\n")),
            ("bom.jsonl", b"\xef\xbb\xbf" + JSONL),
        ],
    )
    def test_the_other_ways_excel_saves_are_read(
        self, tmp_path: Path, name: str, data: bytes
    ) -> None:
        """UTF-8 with its mark, `;` between cells, CRLF line ends: read, as before (the
        UTF-16 check looks at the first bytes only)."""
        from moments.backtest_input import EventFile

        path = tmp_path / name
        path.write_bytes(data)
        assert len(list(EventFile(path))) == 3


class TestARuleThatOnlyJoins:
    """A rule whose moments only ever join other rules' waiting tasks leads none: the
    comparison's per-rule table showed it `first_topup_channel (new) 0 0 0`, as a rule
    that did nothing, where its top-up was said in a call. It shows the moments carried
    in other rules' tasks, baseline -> candidate."""

    def test_the_comparison_shows_what_it_carries(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import orjson

        policy = tmp_path / "policy.yaml"
        policy.write_text("merge: {window: 30m, hold_channels: [manager]}\n")
        sub = "13800000010"
        docs = [
            {
                "type": "profile", "event_id": "p1", "subscriber_id": sub,
                "occurred_at": "2026-11-02T08:00:00+08:00", "region": "NJ", "tier": "gold",
                "status": "active",
            },
            {  # a competitor's hotline: a manager call, held 30 minutes for others to join
                "type": "usage", "event_id": "u1", "subscriber_id": sub,
                "occurred_at": "2026-11-02T10:00:00+08:00", "region": "NJ", "kind": "voice",
                "quantity": 60, "counterparty": "10010",
            },
            {  # the first top-up: its moment joins the call
                "type": "topup", "event_id": "t1", "subscriber_id": sub,
                "occurred_at": "2026-11-02T10:10:00+08:00", "region": "NJ", "amount": 50,
                "channel": "app", "balance_after": 80,
            },
        ]  # fmt: skip
        history = tmp_path / "h.jsonl"
        history.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
        text = CATALOG.read_text()  # the default catalog without first_topup_channel
        start = text.index("  - id: first_topup_channel\n")
        end = text.index("  - id: ", start + 1)
        baseline = tmp_path / "baseline.yaml"
        baseline.write_text(text[:start] + text[end:])
        out = tmp_path / "out"
        argv = [
            "backtest", "--events", str(history), "--rules", str(CATALOG),
            "--baseline-rules", str(baseline), "--policy", str(policy),
            "--to", "2026-11-03", "--out", str(out),
        ]  # fmt: skip
        assert main(argv) == 0
        tasks = [orjson.loads(line) for line in (out / "tasks.jsonl").read_bytes().splitlines()]
        (call,) = tasks
        assert [r["moment"]["rule_id"] for r in call["related"]] == ["first_topup_channel"]
        comparison = orjson.loads((out / "report.json").read_bytes())["comparison"]
        per_rule = {r["rule_id"]: r for r in comparison["per_rule"]}
        assert per_rule["first_topup_channel"] == {
            "rule_id": "first_topup_channel",
            "added": 0,
            "removed": 0,
            "changed": 0,
            "rule": "new",
            "merged_into_others": [0, 1],
        }
        assert per_rule["competitor_hotline_call"]["changed"] == 1  # the call says both
        assert comparison["totals"]["merged_into_others"] == [0, 1]
        md = (out / "report.md").read_text()
        assert "| first_topup_channel (new) | 0 | 0 | 0 | 0 -> 1 |" in md
        terminal = " ".join(capsys.readouterr().out.split())
        assert "merged into others" in terminal


class TestCrOnlyLineEndings:
    """JSON lines ending in CR alone (old Mac OS text) read as one line, which the history
    readers called "no JSON lines file" ("unexpected content after document"), pointing
    to `events check`, which said "more than one JSON value". The line endings are named
    with the fix; CSV reads such lines as it reads CRLF ones."""

    @pytest.mark.parametrize(
        ("name", "data", "convert"),
        [
            ("old.jsonl", JSONL.replace(b"\n", b"\r"), "tr '\\r' '\\n' < {path} > old-lf.jsonl"),
            (
                "old.jsonl.gz",
                gzip.compress(JSONL.replace(b"\n", b"\r")),
                "zcat {path} | tr '\\r' '\\n' | gzip > old-lf.jsonl.gz",
            ),
        ],
    )
    @pytest.mark.parametrize(
        "command", [["backtest", "--out", "{tmp}/o"], ["rules", "test", str(CATALOG)]]
    )
    def test_the_line_endings_are_named_with_the_fix(
        self,
        tmp_path: Path,
        name: str,
        data: bytes,
        convert: str,
        command: list[str],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        path, said = _refused_file(tmp_path, name, data, command, capsys)
        assert f"{path}: its lines end in CR alone" in said
        assert convert.format(path=path) in said
        assert "no JSON lines file" not in said

    def test_a_csv_with_cr_line_endings_is_read(self, tmp_path: Path) -> None:
        from moments.backtest_input import EventFile

        path = tmp_path / "old.csv"
        path.write_bytes(CSV_TEXT.replace("\r\n", "\r").encode())
        assert [e.event_type.value for e in EventFile(path)] == ["topup"] * 3


ARRAY_EVENT = {
    "type": "topup",
    "event_id": "t1",
    "subscriber_id": "13900000001",
    "occurred_at": "2026-11-10T10:00:00+08:00",
    "amount": 150,
    "channel": "app",
}


class TestJsonArray:
    """A JSON export of one array (`[{...}, {...}]`, written across lines or on one) or of
    pretty-printed objects was told "none of its first 20 line(s) is a JSON object ... it is
    no JSON lines file: name a CSV file .csv, a gzip file .gz, or export the events as
    JSON lines", which named neither what the file is nor how to convert it."""

    @pytest.mark.parametrize(
        ("text", "what", "jq"),
        [
            (json.dumps([ARRAY_EVENT, ARRAY_EVENT], indent=2), "a JSON array", "jq -c '.[]'"),
            (json.dumps([ARRAY_EVENT, ARRAY_EVENT]), "a JSON array", "jq -c '.[]'"),
            (json.dumps(ARRAY_EVENT, indent=2), "pretty-printed JSON", "jq -c ."),
        ],
    )
    def test_it_is_named_with_the_conversion(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        text: str,
        what: str,
        jq: str,
    ) -> None:
        path = tmp_path / "export.json"
        path.write_text(text + "\n")
        assert main(["backtest", "--events", str(path), "--out", str(tmp_path / "o")]) == 1
        said = " ".join(capsys.readouterr().err.split())
        assert f"{path}: {what}, not JSON lines (one event object a line)" in said, said
        assert f"{jq} {path} > {tmp_path / 'export.jsonl'}" in said


def test_events_check_of_a_json_array_names_it_with_the_conversion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`events check export.json` refused every line (`invalid_json: 301, invalid_event:
    22`) and said nothing of the file being one JSON array, as the backtest now does."""
    path = tmp_path / "export.json"
    path.write_text(json.dumps([ARRAY_EVENT, ARRAY_EVENT], indent=2) + "\n")
    assert main(["events", "check", str(path)]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert f"{path}: a JSON array, not JSON lines (one event object a line)" in said, said
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(ARRAY_EVENT) + "\n" + "[1, 2]\n")
    main(["events", "check", str(good)])
    assert "not JSON lines" not in capsys.readouterr().err
