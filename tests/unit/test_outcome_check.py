"""`moments events check --type task_outcome`: a dispatch consumer checks the outcomes
it writes offline, with the worker's own verdict (`decode_outcome` and its clock check),
as an upstream producer checks its events.

Found walking as a dispatch consumer: `events check` took only the five input event
types, so the team mapping its dialer's statuses had no way but the live topic to learn
that `DONE`, `+8613800138001` or an `occurred_at` with no offset are dead letters (and
outcomes are not replayed). What needs the ledger (`unknown_task`, `subscriber_mismatch`)
is the worker's alone, and the command says so.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from moments.cli import main
from moments.eventcheck import OUTCOME, check_lines
from moments.records import RejectReason
from moments.schemas import example

NOW = 1795312800.0  # 2026-11-22T10:00:00+08:00, after the example's 09:15


def line(**change: Any) -> bytes:
    value = {**example("TaskOutcome"), **change}
    return orjson.dumps({k: v for k, v in value.items() if v is not None})


def test_each_line_has_the_workers_verdict() -> None:
    lines = [
        line(),
        line(status="DONE"),
        line(subscriber_id="+8613800138000"),
        line(occurred_at="2026-11-22T09:15:00"),
        line(occurred_at="2026-11-22T09:15:00Z"),  # local time written with Z: 8 h ahead
        line(task_id="T-1"),
        line(note=None, agent_id=None),
    ]
    verdicts = list(check_lines(lines, None, NOW, outcomes=True))
    assert [(v.event_type, v.reason) for v in verdicts] == [
        (OUTCOME, None),
        (OUTCOME, RejectReason.INVALID_EVENT),
        (OUTCOME, RejectReason.INVALID_EVENT),
        (OUTCOME, RejectReason.INVALID_EVENT),
        (OUTCOME, RejectReason.FUTURE),
        (OUTCOME, RejectReason.INVALID_EVENT),
        (OUTCOME, None),
    ]
    assert "status: one of in_progress" in verdicts[1].message
    assert "add a UTC offset" in verdicts[3].message


def test_the_command_checks_outcomes_and_says_what_it_cannot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "outcomes.jsonl"
    path.write_bytes(line() + b"\n" + line(status="Declined") + b"\n")
    args = ["events", "check", "--type", "task_outcome", "--now", "2026-11-22T10:00:00+08:00"]
    assert main([*args, str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{path}:2: invalid_event (task_outcome): status: write 'declined' exactly "
        "(lowercase, as the contract spells it)"
    ]
    err = " ".join(err.split())
    assert "2 line(s) checked, 1 refused" in err
    assert "schemas/task-outcome.schema.json" in err
    assert "unknown_task" in err  # what only the worker can tell


def test_stdin_all_taken_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(line() + b"\n")))
    now = "2026-11-22T10:00:00+08:00"
    assert main(["events", "check", "--type", "task_outcome", "--now", now, "-"]) == 0
    assert "1 line(s) checked, 0 refused" in " ".join(capsys.readouterr().err.split())


def test_a_lines_own_type_field_may_name_task_outcome() -> None:
    """`--type task_outcome` was accepted but a line's `"type": "task_outcome"` was refused
    as `no_type`, and the hint listed only the five event types."""
    named = [line(type="task_outcome"), line(type="task_outcome", status="DONE")]
    verdicts = list(check_lines(named, None, NOW))
    assert [(v.event_type, v.reason) for v in verdicts] == [
        (OUTCOME, None),
        (OUTCOME, RejectReason.INVALID_EVENT),
    ]
    (unknown,) = check_lines([line(type="outcome")], None, NOW)
    assert unknown.reason == "no_type"
    assert "task_outcome" in unknown.message


def test_the_command_says_task_outcome_is_a_type_to_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "outcomes.jsonl"
    path.write_bytes(line() + b"\n" + line(type="task_outcome") + b"\n")
    assert main(["events", "check", "--now", "2026-11-22T10:00:00+08:00", str(path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "2 line(s) checked, 1 refused" in err
    assert "1 line(s) with no event type were not checked" in err
    assert "task_outcome" in err.split("were not checked", 1)[1]


def test_outcome_lines_among_events_get_the_outcomes_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lines typed `task_outcome` among events: what the check cannot tell of them (the
    ledger's `unknown_task`) is said, as with `--type task_outcome`, beside the events'."""
    event = orjson.dumps(
        {
            "type": "topup",
            "event_id": "e1",
            "subscriber_id": "13800000001",
            "occurred_at": "2026-11-22T09:30:00+08:00",
            "amount": 0,
            "channel": "app",
        }
    )
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(line(type="task_outcome") + b"\n" + event + b"\n")
    assert main(["events", "check", "--now", "2026-11-22T10:00:00+08:00", str(path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "2 line(s) checked, 1 refused" in err
    assert "schemas/<type>-event.schema.json" in err
    assert "schemas/task-outcome.schema.json" in err
    assert "unknown_task" in err


def test_an_outcome_the_worker_takes_is_taken_with_nan_or_a_lone_surrogate() -> None:
    """docs/consuming-tasks.md: `NaN` in a field of your own does not cost the outcome, and
    a lone surrogate escape in `note` reads as U+FFFD; a worker given such an outcome keyed
    by its subscriber takes it. The check keyed the line by a parse of orjson's alone, which
    refuses both, so it said `missing_key` ("produce with the subscriber id as the record
    key") of an outcome that was keyed and would be taken, with `--type task_outcome` and
    among events; with its `"type"` field the surrogate one was refused as no JSON at all."""
    base = orjson.dumps(example("TaskOutcome"))
    nan = base[:-1] + b',"gateway_cost":NaN}'
    surrogate = base.replace(b'"note":"', b'"note":"\\ud83d ')  # a note cut in an emoji
    assert surrogate != base
    typed = [v[:-1] + b',"type":"task_outcome"}' for v in (nan, surrogate)]
    outcomes = list(check_lines([nan, surrogate], None, NOW, outcomes=True))
    mixed = list(check_lines(typed, None, NOW))
    assert [(v.event_type, v.reason, v.message) for v in outcomes + mixed] == [
        (OUTCOME, None, "")
    ] * 4


def test_an_outcome_without_a_required_field_is_told_the_fix() -> None:
    """`subscriber_id: Field required` and no more, where an input event left without one
    is told what to write and where the fields are (`required_fix`)."""
    value = example("TaskOutcome")
    del value["subscriber_id"], value["occurred_at"]
    (verdict,) = check_lines([orjson.dumps(value)], None, NOW, outcomes=True)
    assert verdict.reason == RejectReason.INVALID_EVENT
    assert "subscriber_id: Field required" in verdict.message
    assert (
        "(an outcome must have subscriber_id, occurred_at: write them; its fields are in "
        "schemas/task-outcome.schema.json" in verdict.message
    )
