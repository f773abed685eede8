"""Values that can never match are refused where they are written (analyst review: the
files said "4 rule(s) OK" and `rules test` made no task): a param a numeric comparison
uses that is no number, and a value the contract never gives a field."""

from __future__ import annotations

import pytest

from rules.catalog import load_texts
from rules.exceptions import RulesError

TASK = """\
    task: {family: anomaly, type: t, channel: sms, priority: 2, action: a, ttl: 24h,
           description: d}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as err:
        load_texts([("r.yaml", text)])
    return [str(p) for p in err.value.problems]


def loads(text: str) -> int:
    return len(load_texts([("r.yaml", text)]))


def rule(body: str) -> str:
    return "rules:\n  - id: r1\n    description: d\n" + body + TASK


COUNT = (
    "series:\n  failures: {on: [usage], period: day}\n"
    "rules:\n  - id: r1\n    description: d\n    on: [usage]\n"
    "    condition: {series: failures, agg: count, gte: $count}\n"
)


class TestNumericParams:
    def test_a_word_in_params_is_refused_where_it_is_written(self) -> None:
        (found,) = problems(COUNT + "    params: {count: three}\n" + TASK)
        assert found == (
            "r.yaml:8:14: param 'count' is compared with gte (as $count), so it must be a "
            "number; got 'three': write a number, e.g. 3 or -0.8 (no words, units or %)"
        )

    def test_a_percentage_in_an_override_is_refused_with_the_fraction(self) -> None:
        text = COUNT + (
            "    params: {count: 3}\n    overrides:\n      - region: NJ\n"
            "        params: {count: -80%}\n"
        )
        (found,) = problems(text + TASK)
        assert found.startswith("r.yaml:11:18: param 'count' is compared with gte")
        assert found.endswith("got '-80%': write -0.8 for -80% (a fraction: % is not read)")

    def test_a_number_written_as_text_still_loads(self) -> None:
        """ "3" compares as 3 (rules.operators), as `gte: "3"` written directly does."""
        assert loads(COUNT + '    params: {count: "3"}\n' + TASK) == 1

    def test_a_word_compared_for_equality_is_no_number_to_check(self) -> None:
        body = "    on: [topup]\n    condition: {field: channel, eq: $ch}\n    params: {ch: app}\n"
        assert loads(rule(body)) == 1

    def test_a_percentage_written_directly_gets_the_fraction_too(self) -> None:
        (found,) = problems(rule("    on: [usage]\n    condition: {field: charge, gt: 5%}\n"))
        assert found.endswith(
            "gt needs a number or $param, got '5%': write 0.05 for 5% (a fraction: % is not read)"
        )


class TestContractValues:
    def test_a_misspelt_status_in_a_series_filter(self) -> None:
        text = "series:\n  opened: {on: [complaint], when: {status: open}, period: day}\n" + rule(
            "    on: [complaint]\n    condition: {series: opened, gte: 1}\n"
        )
        (found,) = problems(text)
        assert found == (
            "r.yaml:2:36: status of complaint events is never 'open': the contract allows "
            "opened, updated, resolved; did you mean 'opened'?"
        )

    def test_in_a_rules_when_each_value_of_a_list_and_of_an_operator(self) -> None:
        body = (
            "    on: [usage]\n    when: {kind: [voice, service_fail], direction: {ne: outgoing}}\n"
        )
        assert problems(rule(body)) == [
            "r.yaml:5:26: kind of usage events is never 'service_fail': the contract allows "
            "voice, sms, data, bill_query, service_order, service_failure; did you mean "
            "'service_failure'?",
            "r.yaml:5:53: direction of usage events is never 'outgoing': the contract allows "
            "in, out; did you mean 'out'?",
        ]

    def test_in_a_field_condition_and_a_profile_condition(self) -> None:
        body = (
            "    on: [roaming]\n"
            "    condition:\n"
            "      all:\n"
            "        - {field: roaming_type, eq: intl}\n"
            "        - not: {profile: status, in: [active, cancelled]}\n"
        )
        found = problems(rule(body))
        assert [f.split(": the contract")[0] for f in found] == [
            "r.yaml:7:33: roaming_type of roaming events is never 'intl'",
            "r.yaml:8:47: profile status is never 'cancelled'",
        ]
        assert found[1].endswith("allows active, suspended, closed; did you mean 'closed'?")

    def test_a_params_value_and_an_overrides(self) -> None:
        body = (
            "    on: [complaint]\n"
            "    condition: {field: category, in: $categories}\n"
            "    params: {categories: 'network,billing'}\n"
            "    overrides:\n      - region: NJ\n        params: {categories: 'network,bill'}\n"
        )
        (found,) = problems(rule(body))
        assert found.startswith(
            "r.yaml:9:18: category of complaint events is never 'bill': the contract allows"
        )

    def test_a_prefix_no_value_starts_with(self) -> None:
        body = "    on: [usage]\n    when: {kind: {prefix: [serv, bill_q, call]}}\n"
        (found,) = problems(rule(body))
        assert found.startswith("r.yaml:5:42: no value of kind of usage events starts with 'call'")

    def test_values_the_contract_allows_load_and_free_text_is_not_judged(self) -> None:
        body = (
            "    on: [complaint, profile]\n"  # status: either's values
            "    when: {status: [resolved, suspended], region: anything}\n"
            "    condition: {profile: tier, eq: platinum}\n"
        )
        assert loads(rule(body)) == 1
        # `eq: null` asks for no value (no value of the contract's): in when: (a condition
        # refuses it, rules.conditions._refuse_null_comparisons).
        assert loads(rule("    on: [usage]\n    when: {direction: {eq: null}}\n")) == 1


class TestOneWordForAList:
    @pytest.mark.parametrize(("op", "value"), [("in", "data"), ("not_in", "hotline")])
    def test_a_word_where_when_wants_a_list_is_refused(self, op: str, value: str) -> None:
        """Taken as its letters (`in: data`: d, a, t), it matched nothing, and the file
        loaded (conditions refuse it; rules helper)."""
        field = "kind" if value == "data" else "counterparty"
        (found,) = problems(rule(f"    on: [usage]\n    when: {{{field}: {{{op}: {value}}}}}\n"))
        assert found.endswith(f"{op} needs a list, got '{value}': write {op}: [{value}]")
        assert loads(rule(f"    on: [usage]\n    when: {{{field}: {{{op}: [{value}]}}}}\n")) == 1


class TestAnEmptyList:
    """`in: []` and `prefix: []` (or a bare `counterparty: []` in `when:`) hold no value, so
    the rule loaded and matched no event; `not_in: []` tested nothing. Refused where written
    (a list whose values were deleted, or a param's list moved out of the condition)."""

    @pytest.mark.parametrize(
        ("test", "says"),
        [
            ("in: []", "in: [] lists no value, so no event's counterparty is in it"),
            ("prefix: []", "prefix: [] lists no value, so no event's counterparty starts with"),
            ("not_in: []", "not_in: [] lists no value, so it lets every event through"),
        ],
    )
    def test_in_a_condition_and_in_when(self, test: str, says: str) -> None:
        (found,) = problems(
            rule(f"    on: [usage]\n    condition: {{field: counterparty, {test}}}\n")
        )
        assert found.startswith("r.yaml:5:")
        assert says in found
        (found,) = problems(rule(f"    on: [usage]\n    when: {{counterparty: {{{test}}}}}\n"))
        assert says in found
        (found,) = problems(rule(f"    on: [usage]\n    condition: {{profile: tier, {test}}}\n"))
        assert says.replace("event's counterparty", "profile's tier") in found

    def test_a_bare_empty_list_in_when(self) -> None:
        (found,) = problems(rule("    on: [usage]\n    when: {counterparty: []}\n"))
        assert "[] lists no value, so no event's counterparty is in it" in found
        (found,) = problems(
            "series:\n  s: {on: [usage], when: {counterparty: []}}\n" + rule("    on: [usage]\n")
        )
        assert "[] lists no value" in found

    @pytest.mark.parametrize("op", ["in", "not_in", "prefix"])
    @pytest.mark.parametrize("held", ['""', '" , "'])
    def test_a_param_holding_no_value_is_refused_where_it_is_given(
        self, op: str, held: str
    ) -> None:
        """`in: $p` with `p: ""` matched only a blank counterparty, `prefix: $p` nothing,
        `not_in: $p` let every event through, and the file loaded: the list emptied in
        its param (or in an override's) is the `in: []` refused above."""
        body = f"    on: [usage]\n    condition: {{field: counterparty, {op}: $p}}\n"
        (found,) = problems(rule(body + f"    params: {{p: {held}}}\n"))
        assert found.startswith("r.yaml:6:14: param 'p' (")
        assert f"for {op}: $p) lists no value" in found
        override = "    overrides:\n      - region: NJ\n        params: {p: " + held + "}\n"
        (found,) = problems(rule(body + "    params: {p: '10010'}\n" + override))
        assert found.startswith("r.yaml:9:")
        assert loads(rule(body + "    params: {p: '10010, 10000'}\n")) == 1


class TestWhenThresholds:
    """A `when:` filter's threshold is judged as a condition's is: a first-day analyst's
    `gte: .nan` loaded and matched no event; a word was refused without the fix."""

    @staticmethod
    def when(value: str) -> str:
        return rule(f"    on: [topup]\n    when:\n      amount: {{gte: {value}}}\n")

    @pytest.mark.parametrize("value", [".nan", ".inf", '"nan"'])
    def test_a_threshold_that_is_no_finite_number_is_refused(self, value: str) -> None:
        (found,) = problems(self.when(value))
        assert found.startswith("r.yaml:6:7: bad test for 'amount': gte needs a finite number")
        assert found.endswith(": write a number, e.g. 100")

    def test_a_threshold_written_with_its_unit_names_the_fix(self) -> None:
        (found,) = problems(self.when('"200 yuan"'))
        assert found == (
            "r.yaml:6:7: bad test for 'amount': gte needs a number, got '200 yuan': "
            "write a number, e.g. 3 or -0.8 (no words, units or %)"
        )

    def test_a_number_still_loads(self) -> None:
        assert loads(self.when("200")) == 1
