"""A task line of `moments tasks tail` and `moments run`: times to the second with their
offset, a deferral in the moment's offset (it mixed +08:00 without the offset and UTC)."""

from __future__ import annotations

import orjson
import pytest

from moments.tail import _json_printable, _read_task, format_task

TASK = {
    "task_id": "t-1",
    "subscriber_id": "13800138001",
    "priority": 3,
    "channel": "sms",
    "action": "roaming_welcome",
    "triggered_at": "2026-12-05T08:30:44.123+08:00",
    "moment": {"type": "first_international_roaming", "description": "Welcome to JP"},
    "deferred": {"reason": "quiet_hours", "until": "2026-12-05T00:50:59.016384Z"},
}


def test_times_carry_their_offset_and_a_deferral_reads_in_the_moments_offset() -> None:
    line = format_task(TASK)
    assert line.startswith("2026-12-05 08:30:44+08:00  P3  first_international_roaming")
    assert line.endswith("[t-1]  deferred until 2026-12-05 08:50:59+08:00 (quiet_hours)")
    assert "138****8001" in line


def test_an_unreadable_time_is_shown_as_written() -> None:
    line = format_task({**TASK, "triggered_at": "soon", "deferred": None})
    assert line.startswith("soon  P3")


def test_control_characters_are_shown_escaped_not_sent_to_the_terminal() -> None:
    """A record anyone may write to the task topic: an OSC 52 sequence set the reader's
    clipboard, `ESC [2J` cleared the screen (security review)."""
    moment = {"type": "x", "description": "Welcome\x1b]52;c;ZXZpbA==\x07 to\r\nJP\x9b2J"}
    line = format_task({**TASK, "moment": moment, "deferred": None})
    assert "Welcome\\x1b]52;c;ZXZpbA==\\x07 to\\x0d\\x0aJP\\x9b2J" in line
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in line)


def test_a_right_to_left_override_is_shown_escaped() -> None:
    moment = {"type": "x", "description": "Pay at \u202eppa.evil\u2028now\u200b"}
    line = format_task({**TASK, "moment": moment, "deferred": None})
    assert "Pay at \\u202eppa.evil\\u2028now\\u200b" in line


@pytest.mark.parametrize(
    "value",
    [
        b"\x1b]52;c;ZXZpbA==\x07 not json",
        b"[]",
        b"1",
        b'{"moment": "x"}',
        b'{"deferred": {"until": 5}}',
    ],
)
def test_a_record_that_is_no_task_is_skipped(value: bytes) -> None:
    """Each of these ended `tasks tail` in every mode (security re-check)."""
    assert _read_task(value) is None


def test_json_lines_keep_their_json_with_invisible_characters_escaped() -> None:
    value = orjson.dumps({**TASK, "moment": {"type": "x", "description": "a\u202eb\x85c"}})
    line = _json_printable(value)
    assert "\u202e" not in line
    assert "\x85" not in line
    assert orjson.loads(line)["moment"]["description"] == "a\u202eb\x85c"


@pytest.mark.parametrize("indent", [orjson.OPT_INDENT_2, 0])
def test_a_task_written_over_several_lines_is_one_json_line(indent: int) -> None:
    """A task record pretty-printed by its producer (valid JSON, line breaks and tabs
    between its tokens) is written as one line of the same JSON: its breaks came out as
    `\\u000a` between tokens, which no JSON reader takes."""
    task = {**TASK, "moment": {"type": "x", "description": "a\u202eb\u2028c\x1b[2J"}}
    value = orjson.dumps(task, option=indent).replace(b'":', b'":\t')
    line = _json_printable(value)
    assert "\n" not in line
    assert "\t" not in line
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u202e\u2028" for c in line)
    assert orjson.loads(line) == task


WITHDRAWAL = {
    "task_id": "90bd947c9fdac044a8b53075800c7701",
    "subscriber_id": "13800138001",
    "channel": "sms",
    "moment_type": "first_international_roaming",
    "reason": "opt_out",
    "occurred_at": "2026-12-05T09:10:00.5+08:00",
    "withdrawn_at": "2026-12-05T09:10:01+08:00",
    "expires_at": "2026-12-06T08:30:44+08:00",
}


def test_a_withdrawal_line_says_withdrawn_why_and_which_task() -> None:
    """`moments tasks tail --withdrawals`: the profile change's time with its offset, the
    reason, the task id; the subscriber masked as on a task line."""
    read = _read_task(orjson.dumps(WITHDRAWAL), withdrawals=True)
    assert read is not None
    line = read[1]
    assert line.startswith("2026-12-05 09:10:00+08:00  WITHDRAWN (opt_out)  first_intern")
    assert line.endswith("138****8001  sms  [90bd947c9fdac044a8b53075800c7701]")


def test_a_record_of_the_withdrawals_topic_that_is_no_withdrawal_is_skipped() -> None:
    assert _read_task(orjson.dumps({"task_id": "x"}), withdrawals=True) is None
    assert _read_task(b"[1]", withdrawals=True) is None


def test_a_withdrawal_reason_added_later_is_shown_as_written() -> None:
    """The schema lets a later version add reasons (an open string): the withdrawal line
    and `--json` read the record as JSON, not through `TaskWithdrawal`'s closed enum, so an
    older `moments tasks tail --withdrawals` shows a new reason instead of skipping it."""
    notice = {**WITHDRAWAL, "reason": "number_recycled"}
    read = _read_task(orjson.dumps(notice), withdrawals=True)
    assert read is not None
    assert "  WITHDRAWN (number_recycled)  first_intern" in read[1]
    assert orjson.loads(_json_printable(orjson.dumps(notice))) == notice
