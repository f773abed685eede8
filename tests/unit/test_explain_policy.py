"""`moments rules explain` with a dispatch policy says what dispatch does with each rule's
task: its channel's hours, the limits a day and what happens over them (policy walk: the
explanation stopped at the task, and a manager had to read the YAML to know a
complaint call waits for 09:00 on a busy day)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

POLICY = """\
timezone: Asia/Shanghai
capacity:
  NJ: {outbound_call: 20}
  "*": {outbound_call: 10}
overflow:
  complaint_opened: {policy: fallback, channel: sms}
  "*": {policy: defer}
hours:
  outbound_call: 09:00-21:00
"""


def test_each_rule_says_its_dispatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    monkeypatch.delenv("MOMENTS_DISPATCH_POLICY", raising=False)
    monkeypatch.delenv("MOMENTS_RULES", raising=False)
    assert main(["rules", "explain", "--policy", str(policy), "complaint_opened"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "Dispatch: outbound_call worked 09:00-21:00 (Asia/Shanghai); at most a day: NJ 20, "
        "all the rest together 10; over that: sent by sms instead if it has room." in out
    )
    assert main(["rules", "explain", "--policy", str(policy), "low_balance"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Dispatch: sms worked all day; no limit a day." in out


def test_without_a_policy_nothing_is_said_of_dispatch(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOMENTS_DISPATCH_POLICY", raising=False)
    monkeypatch.delenv("MOMENTS_RULES", raising=False)
    assert main(["rules", "explain", "low_balance"]) == 0
    assert "Dispatch:" not in capsys.readouterr().out
