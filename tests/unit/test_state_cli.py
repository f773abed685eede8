"""`moments state decode`: one stored record (compressed or plain JSON) made readable;
bytes that are no record get a message, not a traceback."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from moments.cli import main
from moments.state import SubscriberState
from moments.state_cli import subscribers_given

STATE = SubscriberState(watermark=1_796_400_000, profile={"tier": "gold"}, fired={"ab12": 5})


@pytest.mark.parametrize("stored", [STATE.to_bytes(), STATE.to_json()], ids=["zstd", "plain"])
def test_a_record_is_printed_with_field_names(
    stored: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "record.bin"
    path.write_bytes(stored)
    assert main(["state", "decode", str(path), "--json"]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["profile"] == {"tier": "gold"}
    assert shown["fired"] == {"ab12": 5}
    assert shown["watermark"] == 1_796_400_000
    assert shown["_stored_bytes"] == len(stored)
    assert shown["_json_bytes"] == len(STATE.to_json())


def test_bytes_that_are_no_record_are_refused_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.bin"
    path.write_bytes(b"\x00\x01 not a record")
    assert main(["state", "decode", str(path)]) == 1
    assert "is not a subscriber record" in capsys.readouterr().err
    # 2, not 1: a path given wrong is set-up (README, exit codes)
    assert main(["state", "decode", str(tmp_path / "missing.bin")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_record_whose_frame_names_a_dictionary_it_lacks_is_printed_said_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its id damaged, a record the workers read whole (and mend) is printed too, with what
    is wrong with it; it was refused as a newer version's."""
    stored = STATE.to_bytes()
    at = 5 if stored[4] & 0x20 else 6
    path = tmp_path / "record.bin"
    path.write_bytes(stored[:at] + bytes((9,)) + stored[at + 1 :])
    assert main(["state", "decode", str(path), "--json"]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["fired"] == {"ab12": 5}
    assert "names dictionary 9" in shown["_damaged"]


def test_an_empty_value_is_said_to_be_a_deletion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tombstone saved by kcat is an empty file: it was called "not a subscriber record"
    with exit 1, as if the changelog held another program's bytes."""
    path = tmp_path / "tombstone.bin"
    path.write_bytes(b"")
    assert main(["state", "decode", str(path)]) == 0
    out, err = capsys.readouterr()
    assert orjson.loads(out) is None
    assert "a deletion" in err
    assert "not a subscriber record" not in err


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["state", "show", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "moments state show 13800138000" in out


def test_show_reads_ids_from_stdin_in_order_each_once() -> None:
    stdin = io.StringIO("13800138000\n13900139000 13800138000\n\n")
    given = subscribers_given(["13700137000", "-"], stdin)
    assert given == ["13700137000", "13800138000", "13900139000"]


def test_show_checks_ids_from_stdin_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("13800138000\nnot-a-number\n"))
    assert main(["state", "show", "-"]) != 0
    assert "not a subscriber id: not-a-number" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["state", "show", "-"]) != 0
    assert "no subscriber id on stdin" in capsys.readouterr().err


def test_bytes_that_are_no_record_are_told_what_to_give_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Garbage on stdin read "- is not a subscriber record: not a subscriber record ...
    check MOMENTS_APP_ID": the phrase twice, and a worker's advice no pipe can follow. It
    says once what it is not, and how kcat saves a changelog value."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"hello world\n")))
    assert main(["state", "decode", "-"]) == 1
    err = capsys.readouterr().err
    assert err.count("not a subscriber record") == 1
    assert "standard input is not a subscriber record" in err
    assert "MOMENTS_APP_ID" not in err
    assert "kcat -C" in err


def test_a_record_reads_with_times_dates_and_its_tags_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Called readable, the record printed epoch seconds, day ordinals (`closed.day:
    739957`) and hashed keys (`"3595a3:app"`). Without --json its times are RFC 3339 in
    UTC, its days dates, and `_tags` names the rule of each tag; --json stays as stored."""
    from rules.catalog import load_rules
    from rules.rule import state_tag

    rule = load_rules(None).rules[0].id
    tag = state_tag(rule)
    state = SubscriberState(
        watermark=1_796_400_000,
        first_seen={f"{tag}:app": 1_796_400_000, "abcdef:x": 1_796_300_000},
        closed={"checked": 739_957, "day": 739_957},
        special_day=739_957,
        complaints={"c1": -1_796_300_000},
    )
    path = tmp_path / "record.bin"
    path.write_bytes(state.to_bytes())
    assert main(["state", "decode", str(path)]) == 0
    said, _, document = capsys.readouterr().out.partition("\n")
    assert said.startswith("# times RFC 3339 in UTC")
    shown = orjson.loads(document)
    assert shown["watermark"] == "2026-12-04T16:00:00Z"
    assert shown["first_seen"][f"{tag}:app"] == "2026-12-04T16:00:00Z"
    assert shown["closed"] == {"checked": "2026-12-07", "day": "2026-12-07"}
    assert shown["special_day"] == "2026-12-07"
    assert shown["complaints"] == {"c1": "resolved 2026-12-03T12:13:20Z"}
    assert shown["_tags"][tag] == f"rule {rule}"
    assert "removed or changed since" in shown["_tags"]["abcdef"]
    assert main(["state", "decode", str(path), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["closed"]["day"] == 739_957


def test_a_record_of_a_shape_never_written_is_shown_as_stored() -> None:
    """A hand-edited field (a time as text) made the readable form raise: it is shown as
    stored, said so."""
    from moments.stateview import for_people, readable

    stored = b'{"w": "yesterday", "f": {"ab12cd:x": 5}}'
    shown = for_people(readable(stored), {})
    assert shown["watermark"] == "yesterday"
    assert "a field of a shape never written" in shown["_as_stored"]


def test_show_prints_the_record_for_people_and_json_as_stored(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`state show` reads as `decode` does: times RFC 3339 in UTC, said on its first line;
    --json keeps the numbers stored (the broker's read replaced by the record)."""
    from moments.stateview import Stored

    async def latest(settings: object, subs: list[str], bar: object) -> dict[str, Stored]:
        return {sub: Stored(STATE.to_bytes(), 0, 0) for sub in subs}

    monkeypatch.setattr("moments.connections.require_kafka", lambda settings: None)
    monkeypatch.setattr("moments.stateview.latest_records", latest)
    assert main(["state", "show", "13800138000"]) == 0
    said, _, document = capsys.readouterr().out.partition("\n")
    assert said.startswith("# 13800138000: partition 0,")
    assert "times RFC 3339 in UTC" in said
    assert orjson.loads(document)["watermark"] == "2026-12-04T16:00:00Z"
    assert main(["state", "show", "13800138000", "--json"]) == 0
    line = orjson.loads(capsys.readouterr().out)
    assert line["record"]["watermark"] == 1_796_400_000


def test_decode_prints_the_record_when_the_rules_cannot_be_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Decode reads a file and needs no setting: rules it cannot load leave the tags
    unnamed, said in `_tags`, not the record unprinted."""
    monkeypatch.setenv("MOMENTS_RULES", str(tmp_path / "gone.yaml"))
    path = tmp_path / "record.bin"
    path.write_bytes(STATE.to_bytes())
    assert main(["state", "decode", str(path)]) == 0
    shown = orjson.loads(capsys.readouterr().out.partition("\n")[2])
    assert shown["fired"] == {"ab12": "1970-01-01T00:00:05Z"}
    assert shown["_tags"].startswith("not named: the rules could not be loaded")


def test_series_rings_and_offsets_read_as_windows_and_partitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`state decode` (and `show`) left the series rings as stored, `[24323, 24322, 3, 1,
    3, 12.5, 1, 12.5]`, and the offsets and `seen` under source codes (`u3`): numbers no
    one could read. A ring reads as its windows' first local days with their values,
    and where its history begins; offsets and `seen` by source name and partition."""
    import datetime as dt

    from moments.risk import HOTLINE_CALLS
    from rules.catalog import load_rules
    from rules.windows import window_index

    spend = load_rules(None).series["spend_month"]
    november = window_index("month", dt.date(2026, 11, 5))
    ring = spend.fold(None, november, 12.5)
    ring = spend.fold(ring, window_index("month", dt.date(2026, 12, 1)), 3)
    hotline = HOTLINE_CALLS.fold(None, dt.date(2026, 12, 7).toordinal(), 1.0)
    assert ring is not None
    assert hotline is not None
    state = SubscriberState(
        series={spend.tag: ring, spend.begun_tag: spend.begin(november), "hotline": hotline},
        offsets={"u3": 1234, "p0": 7},
        seen={"u": 1_796_400_000},
    )
    path = tmp_path / "record.bin"
    path.write_bytes(state.to_bytes())
    assert main(["state", "decode", str(path)]) == 0
    shown = orjson.loads(capsys.readouterr().out.partition("\n")[2])
    assert shown["series"][spend.tag] == {
        "per": "month",
        "history from": "month from 2026-11-01",
        "windows": {
            "month from 2026-12-01": {"sum": 3, "count": 1, "max": 3},
            "month from 2026-11-01": {"sum": 12.5, "count": 1, "max": 12.5},
        },
    }
    assert shown["series"][spend.begun_tag] == {"history began": "month from 2026-11-01"}
    assert shown["series"]["hotline"] == {
        "per": "day",
        "history from": "2026-12-07",
        "windows": {"2026-12-07": {"count": 1}},
    }
    assert shown["offsets"] == {"usage partition 3": 1234, "profile partition 0": 7}
    assert shown["seen"] == {"usage": "2026-12-04T16:00:00Z"}
    assert main(["state", "decode", str(path), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["series"][spend.tag] == ring


@pytest.mark.parametrize(
    "given",
    [
        b'{"subscriber_id": "13800138000", "record": {"first_seen": {}, "watermark": 1}}\n',
        b'{\n  "first_seen": {},\n  "watermark": "2026-12-08T03:41:00Z"\n}\n',
    ],
    ids=["state show --json", "the record part of it"],
)
def test_what_state_show_prints_is_told_apart_from_a_stored_record(
    given: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user's first hour (review): the line `moments state show --json` prints, saved
    and given to `state decode`, starts with `{` as a plain record does, and was printed as
    an empty record, exit 0: the subscriber's state looked empty. Its field names are
    `state show`'s, none of which a stored record has; it is refused with what to give."""
    path = tmp_path / "shown.json"
    path.write_bytes(given)
    assert main(["state", "decode", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    said = " ".join(err.split())
    assert f"{path} holds what `moments state show` prints (first_seen, ...), not a record" in said
    assert "kcat -C" in said


class TestKeysOfTheFormat:
    """`state decode` took any JSON object for a record: `{"z": 1}` printed as an empty
    record and `{"a": 1}` as one of region 1, exit 0 (new user's run). Keys the state
    format does not have are refused, named; a known key of a shape never written is
    printed, said on stderr."""

    def test_the_stored_keys_are_those_the_record_writes_and_reads(self) -> None:
        import inspect
        import re

        from moments.state import STORED_KEYS

        written = set(re.findall(r'doc\["(\w)"\]', inspect.getsource(SubscriberState.to_json)))
        written |= set(re.findall(r'"(\w)": ', inspect.getsource(SubscriberState.to_json)))
        read = set(re.findall(r'doc\.get\("(\w)"', inspect.getsource(SubscriberState.from_bytes)))
        assert written == read == STORED_KEYS

    def test_unknown_keys_are_refused_and_named(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "record.json"
        path.write_bytes(b'{"z": 1, "o": {}, "q2": 3}')
        assert main(["state", "decode", str(path)]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        said = " ".join(err.split())
        assert f"moments: {path} is not a subscriber record: its keys q2, z are none" in said
        assert (
            "a record's keys are one letter each: a b c d e f g h j k l n o p q r s t w x y G"
            in said
        )

    def test_a_known_key_of_a_shape_never_written_is_printed_and_said(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "record.json"
        path.write_bytes(b'{"a": 1}')
        assert main(["state", "decode", str(path), "--json"]) == 0
        out, err = capsys.readouterr()
        assert orjson.loads(out)["region"] == 1
        assert "region: a shape the detector never writes" in " ".join(err.split())

    def test_a_sound_record_says_nothing_on_stderr(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "record.bin"
        path.write_bytes(SubscriberState(region="NJ", watermark=1_796_400_000).to_bytes())
        assert main(["state", "decode", str(path), "--json"]) == 0
        assert capsys.readouterr().err == ""
