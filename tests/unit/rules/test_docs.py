"""Every YAML example in docs/rules.md is a rules file that loads and validates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from moments.cli import main
from moments.models import EventType
from rules.catalog import load_texts
from rules.exceptions import RulesError
from rules.templates import fill

from .helpers import NO_GATES, at, rules_from, run, usage

DOC = Path(__file__).resolve().parents[3] / "docs" / "rules.md"
EXAMPLES = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_page_has_examples() -> None:
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_loads(index: int) -> None:
    text = EXAMPLES[index]
    files = [(f"{DOC.name} example {index + 1}", text)]
    if "rules:" not in text:  # a file of a rules folder (gating.yaml): loaded with the first
        files.append((f"{DOC.name} example 1", EXAMPLES[0]))
    rules = load_texts(files)
    assert len(rules) >= 1
    if "gating:" in text:
        assert rules.gating.quiet_hours != ("21:00-08:00",)  # the section was read


def test_the_gating_example_alone_is_refused_saying_it_is_a_file_of_a_folder() -> None:
    """The page said each block is a complete rules file; validated alone, the
    gating.yaml one said only "no rules in this rule set" (analyst review)."""
    (gating,) = [e for e in EXAMPLES if "rules:" not in e]
    with pytest.raises(RulesError) as err:
        load_texts([("gating.yaml", gating)])
    assert "one file of a rules folder: check the folder, or the files together" in str(err.value)
    assert "but the `gating.yaml` one" in DOC.read_text(encoding="utf-8")


def test_a_profile_condition_names_its_value_profile_field() -> None:
    """`{profile_tier}` is what the page now says a profile condition puts on the task."""
    (example,) = [e for e in EXAMPLES if "{profile_tier}" in e]
    rules = load_texts([("example", example)])
    (rule,) = [r for r in rules.special.rules if r.id == "lunar_festivals_gold"]
    assert "{profile_tier}" in rule.task.description


def test_the_expect_example_runs_as_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The `--expect` example named a rule the page does not have (big_topup): it is the
    page's low_balance rule now, and says what running it says."""
    text = DOC.read_text(encoding="utf-8")
    found = re.search(
        r"```\n(moments rules test low-balance\.yaml [^\n]*)\n(FAILED [^\n]*)\n```", text
    )
    assert found is not None
    command, said = found.groups()
    (low_balance,) = [e for e in EXAMPLES if "id: low_balance" in e]
    (tmp_path / "low-balance.yaml").write_text(low_balance)
    (tmp_path / "cases").mkdir()
    usage = {"type": "usage", "subscriber_id": "13800138001", "kind": "data", "charge": 1}
    (tmp_path / "cases" / "low-balance.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    **usage,
                    "event_id": f"u{day}",
                    "balance_after": 5,
                    "occurred_at": f"2026-11-0{day}T12:00:00+08:00",
                }
            )
            + "\n"
            for day in (2, 3)
        )
    )
    monkeypatch.chdir(tmp_path)
    assert main(command.split()[1:]) == 1
    assert capsys.readouterr().err.splitlines() == [said]


class TestNumbersInADescription:
    """The section "Numbers in a description" shows what a format makes and what is refused:
    both are what the code does."""

    SECTION = DOC.read_text(encoding="utf-8").split("### Numbers in a description")[1]
    SECTION = SECTION.split("\n### ")[0]

    def test_each_row_of_the_table_shows_what_fill_makes(self) -> None:
        rows = re.findall(r"\| `(\{\w+:[^`]*\})` \| ([-0-9.]+) \| `([^`]*)` \|", self.SECTION)
        assert len(rows) == 4
        for template, value, shown in rows:
            name = template[1:].split(":")[0]
            assert fill(template, {name: float(value)}) == shown

    def test_the_example_rule_formats_its_task(self) -> None:
        (example,) = [e for e in EXAMPLES if "id: bill_spike_formatted" in e]
        events = [
            usage(at(day), kind="data", charge=charge)
            for day, charge in [
                ("2026-08-25", 10),  # the month the history begins in is no part of it
                ("2026-09-10", 100),
                ("2026-10-10", 100),
                ("2026-11-10", 100),
                ("2026-12-10", 1234.5),
            ]
        ]
        (task,) = run(rules_from(example), events, until="2027-01-01T01:00:00+08:00").tasks
        assert task.moment.description == "Spend 1,234.50 yuan, 1234% of the usual 100.00"

    def test_the_refusal_shown_is_what_validation_says(self) -> None:
        said = re.search(r"```\n(rules\.yaml:\d+:\d+: \{country:\.2f\}[^\n]*)\n```", self.SECTION)
        assert said is not None
        (example,) = [e for e in EXAMPLES if "id: first_international_roaming" in e]
        text = example.replace('"Welcome to {country}:', '"Welcome to {country:.2f}:')
        with pytest.raises(RulesError) as err:
            load_texts([("rules.yaml", text)])
        assert [str(p) for p in err.value.problems] == [said.group(1)]


def test_the_contract_expiry_example_calls_at_its_own_lead() -> None:
    """The special-days example: an SMS 30 days ahead (special_days.lead_days), a manager's
    call 7 days ahead (the rule's own lead_days), each once, with ids of their own."""
    (example,) = [e for e in EXAMPLES if "id: renewal_call" in e]
    assert "lead_days: 30" in example
    profile = (
        EventType.PROFILE,
        {
            "event_id": "p1",
            "subscriber_id": "13800138001",
            "occurred_at": at("2026-11-01"),
            "contract_end": "2026-12-20",
        },
    )
    rules = load_texts([("rules.yaml", NO_GATES + example)])
    tasks = run(rules, [profile], until=at("2026-12-21")).tasks
    days = {t.moment.rule_id: t.triggered_at.date().isoformat() for t in tasks}
    renewals = {k: v for k, v in days.items() if k.startswith("renewal")}
    assert renewals == {"renewal_sms": "2026-11-20", "renewal_call": "2026-12-13"}
    assert len({t.task_id for t in tasks}) == len(tasks)
