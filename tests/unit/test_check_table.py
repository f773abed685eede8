"""`moments check` prints its findings whole in a narrow terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

import moments.check
from moments.check import Finding, Verdict
from moments.cli import main
from moments.settings import Settings

WHERE = "/srv/moments/rules/retention-campaigns.yaml:26:27"


async def _findings(*_: object) -> list[Finding]:
    return [
        Finding("rules", Verdict.FAIL, f"{WHERE}: unknown field 'gtee'; did you mean 'gte'?"),
        Finding("Kafka 127.0.0.1:9092", Verdict.OK, "answered"),
    ]


def test_a_refused_rules_files_location_is_not_cut_in_80_columns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In an 80-column terminal the rules row showed `/srv/moments/rules/r…`: the line
    and column of the problem, what the check is for, were cut off (analyst walk)."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(moments.check, "run_checks", _findings)
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    assert "…" not in out
    details = "".join(
        line.split("│")[3].strip() for line in out.splitlines() if line.count("│") == 4
    )
    assert WHERE in details
    assert "did you mean 'gte'?" in " ".join(out.split())


PATH = "/etc/moments/policies/region-jiangsu/dispatch-policy-2026-12-06-candidate.yaml"
DETAIL = f"invalid dispatch policy: {PATH}: merge.window: 'ten' is not a duration"

STEP = "Redis rediss://redis-master.redis-production.svc.cluster.local:6379/0"


def column(out: str, index: int) -> str:
    """One column's cells, read back as one text (wrapped lines joined, spaces dropped)."""
    rows = [line.split("│") for line in out.splitlines() if line.count("│") == 4]
    return "".join(row[index].strip() for row in rows).replace(" ", "")


def test_a_long_detail_is_wrapped_not_cut(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def findings(settings: Settings, timeout_s: float = 10.0) -> list[Finding]:
        return [Finding(STEP, Verdict.FAIL, DETAIL)]

    monkeypatch.setattr(moments.check, "run_checks", findings)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    assert "…" not in out, out
    assert column(out, 1) == STEP.replace(" ", ""), out
    assert column(out, 3) == DETAIL.replace(" ", ""), out


RULE = """\
  - id: r{n}
    moment_type: typo
    when: topup.balance_after < 5
"""


@pytest.mark.parametrize("count", [1, 3])
def test_refused_rules_name_the_command_that_says_them_all(tmp_path: Path, count: int) -> None:
    """The rules row shows five problems, then said "... and N more" with nothing of
    where to read them; it names `moments rules validate` with the file."""
    from moments.check import _rules

    path = tmp_path / "retention.yaml"
    path.write_text("rules:\n" + "".join(RULE.format(n=n) for n in range(count)))
    finding, rules = _rules(Settings(rules=path))
    assert rules is None
    assert finding.verdict is Verdict.FAIL
    last = finding.detail.splitlines()[-1]
    assert f"`moments rules validate {path}`" in last
    if count > 1:  # more than five problems: cut, and said where to read them all
        assert last.startswith("... and ")
        assert last.endswith("lists them all")
    else:
        assert last.endswith("checks the rules again as you fix them")
