"""`moments state decode`: one stored record (compressed or plain JSON) made readable;
bytes that are no record get a message, not a traceback."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from moments.cli import main
from moments.state import SubscriberState

STATE = SubscriberState(watermark=1_796_400_000, profile={"tier": "gold"}, fired={"ab12": 5})


@pytest.mark.parametrize("stored", [STATE.to_bytes(), STATE.to_json()], ids=["zstd", "plain"])
def test_a_record_is_printed_with_field_names(
    stored: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "record.bin"
    path.write_bytes(stored)
    assert main(["state", "decode", str(path)]) == 0
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
    assert main(["state", "decode", str(tmp_path / "missing.bin")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["state", "show", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "moments state show 13800138000" in out
