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


def test_a_rule_on_several_event_types_reads_as_one_or_the_other() -> None:
    """ "Looks at each usage, topup event." read as a list (journey review): each usage or
    topup event, each usage, topup or roaming event."""
    from rules.catalog import load_texts
    from rules.explain import explain_rule

    def looks(on: str) -> str:
        text = (
            "rules:\n  - id: r\n    description: d\n"
            f"    on: [{on}]\n    condition: {{field: region, eq: NJ}}\n"
            "    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a,\n"
            "           ttl: 1d, description: x}\n"
        )
        (rule,) = load_texts([("r.yaml", text)]).rules
        return explain_rule(rule).splitlines()[1]

    assert looks("usage") == "  Looks at each usage event."
    assert looks("usage, topup") == "  Looks at each usage or topup event."
    assert looks("usage, topup, roaming") == "  Looks at each usage, topup or roaming event."
