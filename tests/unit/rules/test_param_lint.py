"""A param written without its `$` in a condition, or read by no condition at all,
loaded without a word (journey review): `prefix: hot` beside `params: {hot: "10010"}`
matched counterparties starting with the letters "hot", none, and the rule never fired.
`moments rules validate` warns of both, and refuses a threshold written so."""

from __future__ import annotations

import pytest

from rules.catalog import load_texts
from rules.exceptions import RulesError
from rules.lint import warnings

TASK = (
    "    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a, ttl: 1d,\n"
    "           description: x}\n"
)


def _rules(condition: str, params: str) -> str:
    return (
        "rules:\n  - id: calls\n    description: d\n    on: [usage]\n"
        f"    condition: {condition}\n    params: {params}\n" + TASK
    )


class TestParamWarnings:
    def test_a_param_compared_as_text_is_warned_of(self) -> None:
        text = _rules("{field: counterparty, prefix: hot}", '{hot: "10010, 10086"}')
        assert warnings(load_texts([("r.yaml", text)])) == [
            "r.yaml:5: calls: the condition's prefix: 'hot' is compared as written, and 'hot' "
            "is a param of this rule; write prefix: $hot for its value"
        ]

    def test_one_in_a_list_under_all_is_warned_of_too(self) -> None:
        text = _rules(
            "{all: [{field: kind, eq: voice}, {field: counterparty, in: [hot, '10000']}]}",
            '{hot: "10010"}',
        )
        (warned,) = warnings(load_texts([("r.yaml", text)]))
        assert warned.startswith(
            "r.yaml:5: calls: the condition's in: 'hot' is compared as written"
        )

    def test_a_param_no_condition_reads_is_warned_of(self) -> None:
        text = _rules("{field: counterparty, prefix: '10010'}", '{hot: "10010"}')
        assert warnings(load_texts([("r.yaml", text)])) == [
            "r.yaml:6: calls: param 'hot' is read by no condition (write $hot where its value "
            "goes): its value and its overrides change nothing"
        ]

    def test_params_read_with_their_dollar_are_not_warned_of(self) -> None:
        text = _rules(
            "{all: [{field: counterparty, prefix: $hot}, {field: charge, gt: $least}]}",
            '{hot: "10010", least: 5}',
        )
        assert warnings(load_texts([("r.yaml", text)])) == []


def test_a_threshold_written_as_a_params_name_says_to_add_the_dollar() -> None:
    text = _rules("{field: charge, lt: threshold}", "{threshold: 10}")
    with pytest.raises(RulesError) as err:
        load_texts([("r.yaml", text)])
    assert [str(p) for p in err.value.problems] == [
        "r.yaml:5:32: lt needs a number or $param, got 'threshold': 'threshold' is a param of "
        "this rule: write lt: $threshold for its value"
    ]
