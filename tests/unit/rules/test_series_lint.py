"""A series no rule reads loaded without a word (analyst review): `topups_month` declared
under `series:` and read by no condition kept its windows in every subscriber's record,
and the state store's memory per subscriber, for nothing. `moments rules validate` warns
of it, naming the file and line of its declaration, as it warns of an unused param."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main
from rules.catalog import load_texts
from rules.lint import warnings

TASK = (
    "    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a, ttl: 1d,\n"
    "           description: x}\n"
)
SERIES = (
    "series:\n"
    "  calls_week: {on: [usage], when: {kind: voice}, period: week}\n"
    "  incoming_week: {on: [usage], when: {kind: voice, direction: in}, period: week}\n"
    "  spend_month: {on: [usage], field: charge, period: month}\n"
)


def _rules(condition: str, series: str = SERIES) -> str:
    return (
        f"{series}rules:\n  - id: calls\n    description: d\n    on: [usage]\n"
        f"    condition: {condition}\n" + TASK
    )


class TestUnreadSeriesWarnings:
    def test_a_series_no_rule_reads_is_warned_of_with_its_file_and_line(self) -> None:
        text = _rules(
            "{series: calls_week, agg: count, gte: 2}",
            SERIES + "  topups_month: {on: [topup], field: amount, period: month}\n",
        )
        assert warnings(load_texts([("r.yaml", text)]), read_elsewhere=("spend_month",)) == [
            "r.yaml:3: series 'incoming_week' is read by no rule: every subscriber's record "
            "keeps its windows for nothing; read it in a condition, or take it out",
            "r.yaml:5: series 'topups_month' is read by no rule: every subscriber's record "
            "keeps its windows for nothing; read it in a condition, or take it out",
        ]

    def test_series_read_by_a_series_a_baseline_or_a_share_are_not_warned_of(self) -> None:
        text = _rules(
            "{all: [{share: incoming_week, of: calls_week, gte: 0.8},"
            " {not: {baseline: spend_month, windows: 3, gte: 2}}]}"
        )
        assert warnings(load_texts([("r.yaml", text)])) == []

    def test_one_read_by_code_is_not_warned_of(self) -> None:
        """`spend_month` feeds the churn-risk score (moments.risk) whether a rule reads it
        or not: keeping it is not for nothing."""
        text = _rules("{share: incoming_week, of: calls_week, gte: 0.8}")
        rules = load_texts([("r.yaml", text)])
        assert warnings(rules, read_elsewhere=("spend_month",)) == []
        assert [w.split(": ", 1)[1] for w in warnings(rules)] == [
            "series 'spend_month' is read by no rule: every subscriber's record keeps its "
            "windows for nothing; read it in a condition, or take it out"
        ]


class TestValidateCommand:
    def test_validate_names_the_file_of_the_series_in_a_folder(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "series.yaml").write_text(
            SERIES + "  topups_month: {on: [topup], field: amount, period: month}\n"
        )
        (tmp_path / "rules.yaml").write_text(
            _rules("{share: incoming_week, of: calls_week, gte: 0.8}", series="")
        )
        assert main(["rules", "validate", str(tmp_path)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [
            f"{tmp_path}: 1 rule(s) OK",
            f"{tmp_path}: warning: {tmp_path / 'series.yaml'}:5: series 'topups_month' is "
            "read by no rule: every subscriber's record keeps its windows for nothing; read it "
            "in a condition, or take it out",
        ]
