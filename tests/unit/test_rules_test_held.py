"""`moments rules test` says when the do-not-disturb gates hold a task back: its line
gave the moment's time alone, so an analyst testing quiet hours saw a task at 22:30 and
could not tell it would wait until 08:00 (journey review)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

RULES = """\
gating:
  timezone: Asia/Shanghai
  quiet_hours: ["21:00-08:00"]
rules:
  - id: low_balance
    description: Balance below 10
    on: [topup]
    condition: {field: balance_after, lt: 10}
    task: {family: anomaly, type: low_balance, channel: sms, priority: 2,
           action: quick_topup, ttl: 12h, description: "Balance {balance_after}"}
"""


def _topup(n: int, at: str) -> str:
    return (
        f'{{"type":"topup","event_id":"t{n}","subscriber_id":"1380000000{n}",'
        f'"occurred_at":"{at}","amount":"5","channel":"app","balance_after":"5"}}\n'
    )


def test_a_task_held_by_quiet_hours_says_until_when(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    events = tmp_path / "events.jsonl"
    events.write_text(
        _topup(1, "2026-12-01T12:30:00+08:00") + _topup(2, "2026-12-01T22:30:00+08:00")
    )
    assert main(["rules", "test", str(rules), "--events", str(events)]) == 0
    day, night = capsys.readouterr().out.splitlines()[:2]
    assert day.endswith(": Balance 5")  # sent as it is made: nothing said
    assert night.startswith("2026-12-01T22:30:00+08:00 138****0002 low_balance")
    assert night.endswith(": Balance 5 [held until 2026-12-02T08:00:00+08:00: quiet_hours]")


def test_a_whole_threshold_shows_as_the_description_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lt: 10` is read as 10.0: the line said `balance_after_lt=10.0` where the
    description would say 10 (journey review)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace('"Balance {balance_after}"', '"Below {balance_after_lt}"'))
    events = tmp_path / "events.jsonl"
    events.write_text(_topup(1, "2026-12-01T12:30:00+08:00"))
    assert main(["rules", "test", str(rules), "--events", str(events)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.endswith("because balance_after=5, balance_after_lt=10: Below 10")
