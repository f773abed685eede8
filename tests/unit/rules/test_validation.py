"""A bad rules file is refused with file:line:column and what to write instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main
from rules.catalog import load_rules, load_texts
from rules.exceptions import RulesError

GOOD_TASK = """\
    task:
      family: anomaly
      type: low_balance
      channel: sms
      priority: 2
      action: quick_topup
      description: low
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as err:
        load_texts([("r.yaml", text)])
    return [str(p) for p in err.value.problems]


def rule(body: str, task: str = GOOD_TASK) -> str:
    return "rules:\n  - id: r1\n    description: d\n" + body + task


class TestRefused:
    def test_yaml_syntax(self) -> None:
        assert problems("rules:\n  - id: [unclosed\n")[0].startswith("r.yaml:3:1: YAML syntax")

    def test_unknown_field_in_a_rule(self) -> None:
        found = problems(rule("    on: [usage]\n    colour: red\n"))
        assert found == [
            "r.yaml:5:5: unknown field 'rules.0.colour'; check the spelling against docs/rules.md"
        ]

    def test_a_misspelt_key_gets_the_one_meant_and_a_misnamed_test_the_tests(self) -> None:
        # "unknown field" alone, with no suggestion or list (analyst review)
        (found,) = problems(rule("    on: [usage]\n    conditon: {field: kind, eq: voice}\n"))
        assert found == "r.yaml:5:5: unknown field 'rules.0.conditon'; did you mean 'condition'?"
        (found,) = problems(
            rule("    on: [usage]\n    condition: {field: quantity, greater_than: 3}\n")
        )
        assert found.endswith(
            "unknown field 'rules.0.condition.greater_than'; a test is one of eq, gt, gte, in, "
            "lt, lte, ne, not_in, prefix (docs/rules.md)"
        )

    def test_wrong_type(self) -> None:
        text = rule("    on: [usage]\n", GOOD_TASK.replace("priority: 2", "priority: high"))
        (found,) = problems(text)
        assert found.startswith("r.yaml:9:7: rules.0.task.priority:")
        assert "integer" in found

    def test_bad_duration(self) -> None:
        text = rule("    on: [usage]\n", GOOD_TASK + "      ttl: 2 days\n")
        (found,) = problems(text)
        assert found.startswith("r.yaml:12:7: rules.0.task.ttl:")
        assert found.endswith("'2 days' is not a duration; write 2d")

    def test_field_unknown_for_the_event_type(self) -> None:
        text = rule("    on: [topup]\n    condition: {field: country, eq: JP}\n")
        (found,) = problems(text)
        assert found.startswith("r.yaml:5:17: 'country' is not a field of these events; known:")
        assert "balance_after" in found

    def test_unknown_field_in_when_names_the_event_type(self) -> None:
        (found,) = problems(rule("    on: [roaming]\n    when: {kind: voice}\n"))
        assert found.startswith("r.yaml:5:12: 'kind' is not a field of roaming events")

    def test_duplicate_id(self) -> None:
        one = "  - id: r1\n    description: d\n    on: [usage]\n" + GOOD_TASK
        found = problems("rules:\n" + one + one)
        assert found == [
            "r.yaml:12:5: duplicate rule id 'r1' (first in r.yaml:2); give each rule its own id"
        ]

    def test_override_of_an_unknown_threshold(self) -> None:
        body = (
            "    on: [usage]\n"
            "    condition: {field: balance_after, lt: $threshold}\n"
            "    params: {threshold: 10}\n"
            "    overrides:\n"
            "      - region: NJ\n"
            "        params: {treshold: 20}\n"
        )
        (found,) = problems(rule(body))
        assert found == (
            "r.yaml:9:18: override of unknown param 'treshold'; "
            "declare it under params: (known: threshold)"
        )

    def test_reference_to_an_undeclared_param(self) -> None:
        (found,) = problems(rule("    on: [usage]\n    condition: {field: charge, gt: $limit}\n"))
        assert "unknown param '$limit'; declare it under params: (known: none)" in found

    def test_condition_with_no_kind(self) -> None:
        (found,) = problems(rule("    on: [usage]\n    condition: {gt: 3}\n"))
        assert found.startswith("r.yaml:5:5: rules.0.condition: a condition needs exactly one of:")

    def test_nested_condition_errors_point_inside_the_tree(self) -> None:
        body = (
            "    on: [usage]\n"
            "    condition:\n"
            "      all:\n"
            "        - {field: kind, eq: voice}\n"
            "        - {field: charge, gt: 1, colour: red}\n"
        )
        (found,) = problems(rule(body))
        assert found.startswith("r.yaml:8:34: unknown field 'rules.0.condition.all.1.colour'")
        assert "colour" in found

    def test_unknown_series(self) -> None:
        (found,) = problems(rule("    on: [usage]\n    condition: {series: spend, gt: 100}\n"))
        assert "unknown series 'spend'; declare it under series:" in found

    def test_event_condition_in_a_close_rule(self) -> None:
        body = "    on: [usage]\n    evaluate: daily\n    condition: {field: charge, gt: 1}\n"
        (found,) = problems(rule(body))
        assert "runs when a window closes; use evaluate: event" in found

    def test_series_of_another_period_in_a_close_rule(self) -> None:
        text = "series:\n  s: {on: [usage], period: month}\n" + rule(
            "    on: [usage]\n    evaluate: weekly\n    condition: {series: s, gt: 1}\n"
        )
        (found,) = problems(text)
        assert "has period month but the rule closes week windows" in found

    def test_summing_a_field_that_is_not_a_number(self) -> None:
        (found,) = problems("series:\n  s: {on: [usage], field: kind}\nrules: []\n")
        assert found.startswith("r.yaml:2:20: 'kind' is not a number")

    def test_a_yaml_tag_that_would_build_an_object(self) -> None:
        text = rule("    on: [usage]\n    condition: !!python/object/apply:os.system [echo hi]\n")
        (found,) = problems(text)
        assert found.startswith("r.yaml:5:5: YAML tag !!python/object/apply:os.system is")
        assert "not allowed; rules files hold plain data" in found

    @pytest.mark.parametrize("text", ["", "\n", "# all commented out\n", "{}\n"])
    def test_an_empty_file(self, text: str) -> None:
        """What a half-written file looks like: it would have switched detection off."""
        assert problems(text) == [
            "r.yaml:1:1: empty file (a half-written one?): write its rules:, series:, "
            "gating: or special_days:, or remove it"
        ]

    def test_a_rule_set_with_no_rules(self) -> None:
        assert problems("series:\n  s: {on: [usage]}\nrules: []\n") == [
            "r.yaml:3:1: no rules in this rule set: it would detect nothing; write at least "
            "one (`mode: shadow` keeps a rule from making tasks)"
        ]

    def test_a_bad_lapse_of_trips_names_its_line(self) -> None:
        text = "gating:\n  quiet_hours: ['22:00-07:00']\n  roaming_lapses_after: 2 weeks\n"
        (found,) = problems(text + rule("    on: [usage]\n"))
        assert found.startswith("r.yaml:3:3: gating.roaming_lapses_after: ")
        assert "'2 weeks' is not a duration; write 2w" in found

    def test_a_quiet_window_listed_twice_is_refused_naming_it(self) -> None:
        """As a channel or a purpose listed twice is: the repeat was dropped silently."""
        text = "gating:\n  quiet_hours:\n    - 22:00-08:00\n    - 12:00-13:30\n    - 22:00-8:00\n"
        assert problems(text + rule("    on: [usage]\n")) == [
            "r.yaml:2:3: gating.quiet_hours: quiet_hours[2] '22:00-08:00' repeats "
            "quiet_hours[0]; write each window once"
        ]

    def test_every_problem_is_reported_not_just_the_first(self) -> None:
        text = rule("    on: [usage]\n    condition: {field: nope}\n") + (
            "  - id: r2\n    description: d\n    on: [roaming]\n    when: {kind: voice}\n"
            + GOOD_TASK
        )
        assert len(problems(text)) == 2


class TestCommand:
    def test_validate_exits_1_with_positions_and_0_when_fixed(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        bad = tmp_path / "bad.yaml"
        bad.write_text(rule("    on: [usage]\n    colour: red\n"))
        assert main(["rules", "validate", str(bad)]) == 1
        assert f"{bad}:5:5: unknown field" in capsys.readouterr().out
        bad.write_text(rule("    on: [usage]\n"))
        assert main(["rules", "validate", str(bad)]) == 0
        assert "1 rule(s) OK" in capsys.readouterr().out

    def test_a_folder_is_one_catalog(self, tmp_path: Path) -> None:
        (tmp_path / "a.yaml").write_text("series:\n  s: {on: [usage]}\nrules: []\n")
        (tmp_path / "b.yaml").write_text(
            rule("    on: [usage]\n    condition: {series: s, gte: 2}\n")
        )
        assert len(load_rules(tmp_path)) == 1

    def test_a_file_of_a_folder_may_hold_no_rules(self, tmp_path: Path) -> None:
        (tmp_path / "gating.yaml").write_text("gating:\n  quiet_hours: ['22:00-07:00']\n")
        (tmp_path / "rules.yaml").write_text(rule("    on: [usage]\n"))
        catalog = load_rules(tmp_path)
        assert len(catalog) == 1
        assert catalog.gating is not None
        assert catalog.gating.quiet_hours == ("22:00-07:00",)

    def test_several_paths_are_catalogs_of_their_own_and_what_breaks_as_one_is_said(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`validate a.yaml b.yaml` passed a rule id in both, unnoticed (analyst review):
        a note says so, and `--together` refuses it as a folder would."""
        a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
        a.write_text(rule("    on: [usage]\n"))
        b.write_text(rule("    on: [topup]\n"))
        assert main(["rules", "validate", str(a), str(b)]) == 0
        out = capsys.readouterr().out
        assert f"{b}: 1 rule(s) OK" in out
        assert "as one catalog, in one rules folder, they would be refused (1 problem(s), " in out
        assert f"the first: {b}:2:5: duplicate rule id 'r1' (first in {a}:2)" in out
        assert main(["rules", "validate", "--together", str(a), str(b)]) == 1
        assert capsys.readouterr().out.startswith(f"{b}:2:5: duplicate rule id 'r1'")
        b.write_text(rule("    on: [topup]\n").replace("id: r1", "id: r2"))
        assert main(["rules", "validate", str(a), str(b)]) == 0
        assert "note:" not in capsys.readouterr().out

    def test_together_a_file_of_gating_alone_is_checked_with_the_rules(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        gating = tmp_path / "gating.yaml"
        gating.write_text("gating:\n  quiet_hours: ['22:00-07:00']\n")
        rules = tmp_path / "rules.yaml"
        rules.write_text(rule("    on: [usage]\n"))
        assert main(["rules", "validate", str(gating)]) == 1
        assert "one file of a rules folder" in capsys.readouterr().out
        assert main(["rules", "validate", "--together", str(gating), str(rules)]) == 0
        assert capsys.readouterr().out == f"{gating} {rules}: 1 rule(s) OK as one catalog\n"


def test_a_description_placeholder_nobody_fills_is_refused() -> None:
    text = rule(
        "    on: [usage]\n    condition: {field: charge, gt: 1}\n",
        GOOD_TASK.replace("description: low", "description: 'spent {xyzzy}'"),
    )
    (found,) = problems(text)
    assert found.startswith("r.yaml:12:7: {xyzzy} is not known when this rule fires; use one of:")
    assert "charge_gt" in found


class TestPlaceholdersThatMayHaveNoValue:
    """A description naming an event field the contract makes optional reached the
    customer or the agent as written: "Welcome to JP on {operator}, region {region}" for a
    roaming event naming no operator or region; a test that a missing value passes (`ne:`)
    showed "None". Refused at load with the fix the catalog itself uses (`{field: X}`)."""

    ROAM = "    on: [roaming]\n    condition: {first_time: country}\n"

    def task(self, description: str) -> str:
        return GOOD_TASK.replace("description: low", f"description: '{description}'")

    def test_an_optional_event_field_is_refused_with_the_fix(self) -> None:
        found = problems(
            rule(self.ROAM, self.task("Welcome to {country} on {operator} ({region})"))
        )
        assert [f.split(" may have")[0] for f in found] == [
            "r.yaml:12:7: {operator}",
            "r.yaml:12:7: {region}",
        ]
        assert found[0].endswith(
            "may have no value when this rule fires, and the text would show it as written "
            "('{operator}' or 'None'): operator is optional on roaming events, so the rule "
            "fires on events without it too; to fire only on those that carry it, add "
            "{field: operator} to the condition (under all:), or leave it out of the description"
        )

    @pytest.mark.parametrize(
        "body",
        [
            "    on: [roaming]\n    condition: {all: [{first_time: country}, {field: operator}]}\n",
            "    on: [roaming]\n    when: {operator: [A1, Vodafone]}\n"
            "    condition: {first_time: country}\n",
            "    on: [roaming]\n    condition: {field: operator, prefix: V}\n",
            "    on: [roaming]\n    condition: {first_time: operator}\n",
        ],
    )
    def test_one_the_rule_fires_only_with_loads(self, body: str) -> None:
        load_texts([("r.yaml", rule(body, self.task("{country} on {operator}")))])

    SERIES = "series:\n  app_topups: {on: [topup], when: {channel: app}, field: amount}\n"

    @pytest.mark.parametrize("agg", ["avg", "max"])
    def test_an_average_or_peak_of_no_event_is_no_guard(self, agg: str) -> None:
        """The avg or max of windows without events is no value (a bank top-up, none by
        app today): a branch of any: that does not read it fired the rule, and the text
        showed 'average app top-up None'."""
        test = f"{{series: app_topups, agg: {agg}, lt: 20}}"
        either = f"    on: [topup]\n    condition: {{any: [{test}, {{field: amount, gte: 100}}]}}\n"
        (found,) = problems(self.SERIES + rule(either, self.task("app top-up {app_topups}")))
        assert found.startswith("r.yaml:14:7: {app_topups} may have no value when this rule")
        assert f"the {agg} of app_topups over windows without events is no value" in found
        for guarded in (test, f"{{not: {test}}}", f"{{all: [{test}, {{field: amount, gte: 1}}]}}"):
            body = f"    on: [topup]\n    condition: {guarded}\n"
            load_texts([("r.yaml", self.SERIES + rule(body, self.task("{app_topups}")))])

    @pytest.mark.parametrize(
        "body",
        [
            "    on: [roaming]\n    condition: {field: operator, ne: A1}\n",
            "    on: [roaming]\n    when: {operator: {ne: A1}}\n",
            "    on: [roaming]\n    condition:\n      any: [{field: operator, eq: A1}, "
            "{field: country, eq: JP}]\n",
            "    on: [roaming]\n    condition: {not: {field: operator, eq: A1}}\n",
        ],
    )
    def test_a_test_a_missing_value_may_pass_is_no_guard(self, body: str) -> None:
        (found,) = problems(rule(body, self.task("on {operator}")))
        assert "{operator} may have no value when this rule fires" in found

    @pytest.mark.parametrize(
        "body",
        [
            "    on: [roaming]\n    condition:\n      any: [{field: operator, eq: A1}, "
            "{field: operator, eq: Vodafone}]\n",
            "    on: [roaming]\n    condition:\n      any: [{all: [{field: operator}, "
            "{field: country, eq: JP}]}, {field: operator, prefix: V}]\n",
            "    on: [roaming]\n    condition: {not: {field: operator, ne: A1}}\n",
            "    on: [roaming]\n    condition: {not: {not: {field: operator}}}\n",
            "    on: [roaming]\n    condition:\n      not: {any: [{field: country, eq: JP}, "
            "{field: operator, not_in: [A1]}]}\n",
            "    on: [roaming]\n    condition:\n      all: [{first_time: country}, {not: {all: "
            "[{field: operator, ne: A1}, {field: operator, ne: Vodafone}]}}]\n",
            "    on: [roaming]\n    condition: {not: {changed: operator}}\n",
            "    on: [roaming]\n    condition: {not: {first_time: operator}}\n",
        ],
    )
    def test_a_guard_under_any_or_not_that_always_needs_it_loads(self, body: str) -> None:
        """Every branch of an `any:` needing the field, or a `not:` of a test only a value
        fails (`not: {ne: A1}` is `eq: A1`), fires only with it: such rules were refused
        as if the field might be missing."""
        load_texts([("r.yaml", rule(body, self.task("{country} on {operator}")))])

    @pytest.mark.parametrize(
        "body",
        [
            "    on: [roaming]\n    condition:\n      any: [{field: operator, eq: A1}, "
            "{all: [{field: country, eq: JP}, {field: region}]}]\n",
            "    on: [roaming]\n    condition: {not: {not: {field: operator, ne: A1}}}\n",
            "    on: [roaming]\n    condition: {not: {all: [{field: operator, ne: A1}, "
            "{field: country, eq: JP}]}}\n",
            "    on: [roaming]\n    when: {operator: {eq: null}}\n"
            "    condition: {first_time: country}\n",
        ],
    )
    def test_a_branch_or_negation_without_it_is_no_guard(self, body: str) -> None:
        (found,) = problems(rule(body, self.task("on {operator}")))
        assert "{operator} may have no value when this rule fires" in found

    def test_a_profile_field_is_refused_unless_the_rule_needs_it(self) -> None:
        body = (
            "    on: [usage]\n    condition:\n      any: [{profile: tier, eq: gold}, "
            "{field: charge, gt: 100}]\n"
        )
        (found,) = problems(rule(body, self.task("a {profile_tier} customer")))
        assert "{profile_tier} may have no value when this rule fires" in found
        assert "add {profile: tier} to the condition (under all:)" in found
        sure = "    on: [usage]\n    condition: {profile: tier, in: [gold, diamond]}\n"
        load_texts([("r.yaml", rule(sure, self.task("a {profile_tier} customer")))])

    def test_a_required_field_needs_no_guard(self) -> None:
        body = (
            "    on: [usage]\n"
            "    condition: {any: [{field: kind, ne: sms}, {field: charge, gt: 1}]}\n"
        )
        load_texts([("r.yaml", rule(body, self.task("{kind} for {charge}")))])


class TestNullComparisonsInACondition:
    """`when: {operator: {eq: null}}` lets only events without an operator through; `{field:
    operator, eq: null}` in a condition was read as a bare field test, "is present", and
    fired on every event with one, as was any other comparison written null (`gte: null`,
    `in: null`, ...). Each is refused with the fix; `ne: null` means what it says."""

    def test_eq_null_is_refused_with_the_fix(self) -> None:
        body = "    on: [roaming]\n    condition: {field: operator, eq: null}\n"
        assert problems(rule(body)) == [
            "r.yaml:5:34: eq: null compares with nothing in a condition: for one without "
            "operator write not: {field: operator}; for one with it, {field: operator}"
        ]
        body = "    on: [usage]\n    condition: {all: [{profile: tier, eq: null}]}\n"
        (found,) = problems(rule(body))
        assert "for one without tier write not: {profile: tier}" in found

    @pytest.mark.parametrize(
        ("condition", "op"),
        [
            ("{field: operator, in: null}", "in"),
            ("{field: operator, not_in: null}", "not_in"),
            ("{field: operator, prefix: null}", "prefix"),
            ("{field: balance_after, gte: null}", "gte"),
            ("{profile: tier, lt: null}", "lt"),
        ],
    )
    def test_any_other_comparison_with_null_is_refused(self, condition: str, op: str) -> None:
        """`gte: null` and the like were read as the bare test too: the rule fired on
        every event with the value."""
        on = (
            "usage" if "profile" in condition else "roaming" if "operator" in condition else "topup"
        )
        (found,) = problems(rule(f"    on: [{on}]\n    condition: {condition}\n"))
        assert f"{op}: null compares with nothing in a condition: give it a value" in found
        assert (
            f"give it a value (a number, a text, a list or a $param), or leave {op}: out" in found
        )

    @pytest.mark.parametrize(
        "condition",
        [
            "{field: operator, ne: null}",
            "{not: {field: operator}}",
            "{field: operator}",
        ],
    )
    def test_the_ways_to_say_it_load(self, condition: str) -> None:
        load_texts([("r.yaml", rule(f"    on: [roaming]\n    condition: {condition}\n"))])


class TestHolidayKeys:
    """A `holidays:` key outside the calendar in force left the rule silent for ever."""

    FESTIVALS = """\
rules:
  - id: festivals
    description: greetings
    on: [profile]
    evaluate: special_day
    condition:
      all:
        - {occasion: holiday, holidays: [spring_festival, mid_autum]}
        - {profile: tier, eq: gold}
    task: {family: special_day, type: fest, channel: sms, priority: 4,
           action: greet, ttl: 12h, description: "Happy holiday"}
"""

    def test_a_misspelt_key_is_refused_where_it_stands(self) -> None:
        (found,) = problems(self.FESTIVALS)
        assert found.startswith(
            "r.yaml:8:59: holiday 'mid_autum' is not in the calendar in force; did you mean "
            "'mid_autumn'? known ones: "
        )
        assert "mid_autumn" in found
        assert "moments calendar export" in found

    @pytest.mark.parametrize(
        ("written", "meant"),
        [("mid_autum", "mid_autumn"), ("midautumn", "mid_autumn"), ("new_years_day", "new_year")],
    )
    def test_a_misspelt_key_names_the_closest(self, written: str, meant: str) -> None:
        """Every other misspelt name of a rules file had its `did you mean` (analyst
        walk: `new_years_day`, `midautumn`)."""
        (found,) = problems(self.FESTIVALS.replace("mid_autum]", f"{written}]"))
        assert f"holiday {written!r} is not in the calendar in force; did you mean {meant!r}?" in (
            found
        )

    def test_a_key_the_operators_calendar_turns_off_is_refused_saying_so(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "calendar.yaml").write_text("disable: [mid_autumn]\n")
        (tmp_path / "rules.yaml").write_text(
            "special_days: {calendar: calendar.yaml}\n"
            + self.FESTIVALS.replace("mid_autum]", "mid_autumn]")
        )
        with pytest.raises(RulesError) as err:
            load_rules(tmp_path)
        (found,) = [str(p) for p in err.value.problems]
        assert "holiday 'mid_autumn' is not in the calendar in force (the calendar file " in found

    def test_a_key_of_the_operators_own_days_is_known(self, tmp_path: Path) -> None:
        (tmp_path / "calendar.yaml").write_text(
            "holidays:\n  - {key: mid_autum, name: Our own, every_year: '09-01'}\n"
        )
        (tmp_path / "rules.yaml").write_text(
            "special_days: {calendar: calendar.yaml}\n" + self.FESTIVALS
        )
        assert [r.id for r in load_rules(tmp_path).rules] == ["festivals"]


@pytest.mark.parametrize(
    "odd",
    ["{charge.__class__}", "{0}", "{}", "{charge!r}", "{region[0]}", "{charge:{charge_gt}}"],
)
def test_braces_that_are_no_placeholder_are_refused_not_sent_as_written(odd: str) -> None:
    text = rule(
        "    on: [usage]\n    condition: {field: charge, gt: 1}\n",
        GOOD_TASK.replace("description: low", f"description: 'spent {odd}'"),
    )
    (found,) = problems(text)
    assert found == (
        f"r.yaml:12:7: {odd} is not a placeholder (only {{name}} and {{name:format}} are "
        "filled: no attribute, index, position, conversion or nested field) and would be sent "
        "as written; write {name}, or a number's format, e.g. {x:.2f}, {x:,.0f}, {x:.0%}"
    )


@pytest.mark.parametrize(
    ("description", "shown"),
    [
        ("spent {charge", "spent {charge"),
        ("spent charge}", "spent charge}"),
        ("spent {charge} }", "spent {charge} }"),
        ("{ spent {charge}", "{ spent {charge}"),
        (
            "a long description that spent {charge yuan today, more than usual",
            "...cription that spent {charge yuan today, m...",
        ),
    ],
)
def test_a_brace_that_closes_no_placeholder_is_refused_not_sent_as_written(
    description: str, shown: str
) -> None:
    """`description: "Welcome to {country"` loaded, and every customer read "Welcome to
    {country" (journey review): a brace that opens or closes no placeholder is refused at
    the description's line, with the text around it."""
    text = rule(
        "    on: [usage]\n    condition: {field: charge, gt: 1}\n",
        GOOD_TASK.replace("description: low", f"description: '{description}'"),
    )
    (found,) = problems(text)
    assert found == (
        f"r.yaml:12:7: a brace that opens or closes no placeholder, in {shown!r}, would be sent "
        "as written; write a placeholder whole, {name}, or leave the brace out"
    )


def test_braces_around_placeholders_and_formats_still_load() -> None:
    text = rule(
        "    on: [usage]\n    condition: {field: charge, gt: 1}\n",
        GOOD_TASK.replace("description: low", "description: 'spent {charge:,.2f} ({charge})'"),
    )
    assert [r.id for r in load_texts([("r.yaml", text)]).rules] == ["r1"]


class TestFormats:
    """A number format in a description is checked when the file loads, at its line."""

    def task(self, description: str) -> str:
        return GOOD_TASK.replace("description: low", f"description: '{description}'")

    @pytest.mark.parametrize(
        "description",
        [
            "{charge:.2f} {charge_gt:,.0f} {charge:.0%} {charge:+.1%} {charge:,} {charge:_.2f}",
            "{balance_after:.2f} {quantity:,.0f}",  # the event's fields that are numbers
            "{charge:}",  # an empty format is a bare placeholder
        ],
    )
    def test_formats_of_numbers_load(self, description: str) -> None:
        # balance_after and quantity are optional: the rule fires only on events with them
        condition = "all: [{field: charge, gt: 1}, {field: balance_after}, {field: quantity}]"
        text = rule(f"    on: [usage]\n    condition: {{{condition}}}\n", self.task(description))
        load_texts([("r.yaml", text)])

    @pytest.mark.parametrize(
        ("fmt", "said"),
        [
            (">10", "format ':>10' is not filled (no alignment or width: a text message is not"),
            ("d", "format ':d' is not filled: for a whole number write :,.0f or :.0f"),
            (".2", "format ':.2' gives decimals but no type; write :.2f for a number or :.2% "),
            (".40f", "format ':.40f' asks for 40 decimals; at most 6"),
            ("x", "format ':x' is not filled (no type 'x': only f and %): a format is an optional"),
            ("s", "format ':s' is not filled (no type 's': only f and %)"),
            # a right type in a spec off for another reason is not called a wrong type
            ("08.2f", "format ':08.2f' is not filled (no width or zero padding: a text"),
            ("10,.0%", "format ':10,.0%' is not filled (no width or zero padding: a text"),
            (",_.2f", "format ':,_.2f' is not filled (one thousands separator, , or _, not"),
            ("+-.1f", "format ':+-.1f' is not filled (not in the subset moments fills)"),
        ],
    )
    def test_a_format_outside_the_subset_is_refused(self, fmt: str, said: str) -> None:
        text = rule(
            "    on: [usage]\n    condition: {field: charge, gt: 1}\n",
            self.task(f"spent {{charge:{fmt}}}"),
        )
        (found,) = problems(text)
        assert found.startswith(f"r.yaml:12:7: {{charge:{fmt}}}: {said}")

    @pytest.mark.parametrize(
        ("body", "name"),
        [
            ("    on: [roaming]\n    condition: {first_time: country}\n", "country"),
            ("    on: [usage]\n    condition: {changed: imei}\n", "previous_imei"),
            (
                "    on: [usage]\n    condition: {field: counterparty, prefix: '1'}\n",
                "counterparty",
            ),
            ("    on: [usage]\n    condition: {profile: tier, eq: gold}\n", "profile_tier"),
            (
                "    on: [usage]\n    evaluate: daily\n    condition: {absence: 7d}\n",
                "last_seen",
            ),
        ],
    )
    def test_a_format_on_a_param_holding_text_is_refused(self, body: str, name: str) -> None:
        (found,) = problems(rule(body, self.task(f"{{{name}:.2f}}")))
        line = 10 + body.count("\n")  # the description's
        assert found == (
            f"r.yaml:{line}:7: {{{name}:.2f}}: {name!r} may hold text (a name, a date, a code), "
            f"and a format applies to numbers only; write {{{name}}}"
        )

    def test_numbers_of_profiles_and_special_days_take_a_format(self) -> None:
        text = """\
rules:
  - id: r1
    description: d
    on: [profile]
    evaluate: special_day
    condition:
      all:
        - {occasion: contract_expiry}
        - {profile: star_level, gte: 5}
    task: {family: special_day, type: expiry, channel: sms, priority: 3, action: a,
           description: "{days_left:.0f} days, level {profile_star_level:.0f}"}
"""
        assert len(load_texts([("r.yaml", text)])) == 1
        (found,) = problems(text.replace("{days_left:.0f}", "{contract_end:.0f}"))
        assert "{contract_end:.0f}: 'contract_end' may hold text" in found


@pytest.mark.parametrize(
    ("body", "task_extra", "expected"),
    [
        (
            "    on: [usage]\n    condition: {first_time: kind, lookback: 2m}\n",
            "",
            "'2m' is less than a day (m is minutes); write days or weeks, e.g. 60d",
        ),
        (
            "    on: [usage]\n    evaluate: daily\n    condition: {absence: 12h}\n",
            "",
            "'12h' is less than a day",
        ),
        ("    on: [usage]\n", "      ttl: 0s\n", "'0s' is no time at all; give it some, e.g. 24h"),
    ],
)
def test_durations_that_cannot_be_meant_are_refused(
    body: str, task_extra: str, expected: str
) -> None:
    (found,) = problems(rule(body, GOOD_TASK + task_extra))
    assert expected in found


def test_a_misspelt_occasion_is_one_error_naming_the_occasions() -> None:
    text = """\
rules:
  - id: bday
    description: d
    on: [profile]
    evaluate: special_day
    condition: {occasion: birthdya}
    task: {family: special_day, type: b, channel: sms, priority: 4, action: a, ttl: 12h,
           description: x}
"""
    assert problems(text) == [
        "r.yaml:6:17: rules.0.condition.occasion: Input should be 'birthday', "
        "'join_anniversary', 'contract_expiry' or 'holiday'; did you mean 'birthday'?"
    ]


def test_validate_warns_of_a_tier_no_contract_profile_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tier: [glod]` loaded and matched nobody, silently (analyst review): a warning, not
    a refusal, since an operator may use tiers of its own."""
    path = tmp_path / "r.yaml"
    path.write_text(
        rule(
            "    on: [usage]\n    condition: {field: balance_after, lt: $t}\n"
            "    params: {t: 10}\n    overrides:\n      - tier: [glod, Diamond]\n"
            "        params: {t: 30}\n"
        )
    )
    assert main(["rules", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    # At the tier's line (the list's), not the rule's `- id:` (line 2)
    assert f"warning: {path}:8: r1: overrides[0] tier 'glod' is none of the contract's tiers" in out
    assert "did you mean 'gold'?" in out
    assert "'diamond'" not in out.split("warning")[-1]  # Diamond is one, whatever the case


def test_validate_warns_of_previous_at_a_first_moment_has_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first-time rule with a look-back fires on the first time ever and again after the
    look-back; only the second has `previous_at`, and the first's description kept
    "{previous_at}" as written, sent to an agent or a customer."""
    task = (
        "    task: {family: first_time, type: t, channel: sms, priority: 3, action: a, "
        "ttl: 24h,\n"
        '           description: "Back after {lookback_days} days, last {previous_at}"}\n'
    )
    path = tmp_path / "r.yaml"
    path.write_text(
        rule("    on: [roaming]\n    condition: {first_time: country, lookback: 60d}\n", task)
    )
    assert main(["rules", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {path}:7: r1: the task description uses {{previous_at}}" in out
    assert "first time ever" in out
    quiet = tmp_path / "q.yaml"
    quiet.write_text(
        rule(
            "    on: [roaming]\n    condition: {first_time: country, lookback: 60d}\n",
            task.replace(", last {previous_at}", ""),
        )
    )
    assert main(["rules", "validate", str(quiet)]) == 0
    assert "previous_at" not in capsys.readouterr().out


class TestContractExpiryLead:
    TEXT = """\
rules:
  - id: r1
    description: d
    on: [profile]
    evaluate: special_day
    condition: {occasion: OCCASION, lead_days: LEAD}
    task: {family: special_day, type: t, channel: sms, priority: 3, action: a,
           description: d}
"""

    def test_a_lead_of_a_rule_with_no_contract_expiry_is_refused(self) -> None:
        text = self.TEXT.replace("OCCASION", "birthday").replace("LEAD", "7")
        assert problems(text) == [
            "r.yaml:6:37: lead_days is how early a contract_expiry is due, and this condition "
            "has no contract_expiry occasion: remove lead_days, or add contract_expiry"
        ]

    @pytest.mark.parametrize(
        ("text", "where", "fix"),
        [
            (
                "series: {s: {on: [usage], period: week}}\nrules:\n  - id: r1\n"
                "    description: d\n    on: [usage]\n"
                "    condition: {series: s, last: 4w, gte: 3}\n"
                "    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a,\n"
                "           ttl: 1d, description: d}\n",
                "r.yaml:6:28: rules.0.condition.last: ",
                "; write a whole number of windows from 1 to 60, the current one included, "
                "e.g. 4 (no unit: the series' period is the unit, 4 weeks of a weekly one)",
            ),
            (
                "series: {s: {on: [usage], period: day, keep: 30d}}\nrules:\n  - id: r1\n"
                "    description: d\n    on: [usage]\n"
                "    condition: {series: s, last: 3, gte: 3}\n"
                "    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a,\n"
                "           ttl: 1d, description: d}\n",
                "r.yaml:1:40: series.s.keep: ",
                "; write a whole number of windows from 1 to 60, e.g. 30 (no unit: the "
                "series' period is the unit, 30 days of a daily one)",
            ),
        ],
    )
    def test_a_number_of_windows_with_a_unit_names_what_to_write(
        self, text: str, where: str, fix: str
    ) -> None:
        """`last: 4w` read "Input should be a valid integer, unable to parse string as an
        integer" and no more, where `windows: 4w` named the fix (analyst walk)."""
        (found,) = problems(text)
        assert found.startswith(where + "Input should be ")
        assert found.endswith(fix)

    @pytest.mark.parametrize("lead", ["-1", "400", "a week", "7d"])
    def test_a_lead_that_is_no_number_of_days_is_refused(self, lead: str) -> None:
        """Naming what to write: pydantic's words alone ("Input should be a valid
        integer") left an analyst who wrote `7d`, as every other duration is written,
        guessing."""
        text = self.TEXT.replace("OCCASION", "contract_expiry").replace("LEAD", lead)
        (found,) = problems(text)
        assert found.startswith("r.yaml:6:44: rules.0.condition.lead_days: Input should be ")
        assert found.endswith(
            "; write a whole number of days from 0 to 366, e.g. 7 (no unit: not 7d)"
        )

    def test_a_lead_with_contract_expiry_among_the_occasions_loads(self) -> None:
        text = self.TEXT.replace("OCCASION", "[birthday, contract_expiry]").replace("LEAD", "0")
        assert len(load_texts([("r.yaml", text)])) == 1


@pytest.mark.parametrize("field", ["counterparty", "imei", "region"])
def test_a_series_cannot_sum_a_text_field(field: str) -> None:
    """A field of text passed as a number: its type's name holds "int" (StringConstraints),
    which the check looked for in the text of the annotation."""
    text = f"series:\n  s: {{on: [usage], field: {field}}}\n" + rule(
        "    on: [usage]\n    condition: {series: s, gte: 1}\n"
    )
    assert problems(text) == [
        f"r.yaml:2:20: {field!r} is not a number; sum a numeric field, or leave field out to "
        "count events"
    ]


class TestFolderFiles:
    """What a rules folder holds besides its rules while an analyst edits them."""

    RULE = """\
rules:
  - id: r1
    description: d
    on: [complaint]
    task: {family: anomaly, type: t, channel: manager, priority: 1, action: a, ttl: 48h,
           description: d}
"""

    def test_an_editors_lock_and_hidden_files_are_skipped(self, tmp_path: Path) -> None:
        """Emacs links `.#retention.yaml` to nothing while a buffer is modified: the whole
        folder was refused as `no such rules file or folder` (a worker starting then would
        stop), and a hidden copy `.retention.yaml` was loaded as a second catalog file,
        every rule a duplicate (analyst walk)."""
        (tmp_path / "retention.yaml").write_text(self.RULE)
        (tmp_path / ".#retention.yaml").symlink_to("analyst@host.4242:1765000000")
        (tmp_path / ".retention.yaml").write_text(self.RULE)
        assert [r.id for r in load_rules(tmp_path).rules] == ["r1"]

    def test_a_link_to_nothing_is_named_itself(self, tmp_path: Path) -> None:
        (tmp_path / "retention.yaml").write_text(self.RULE)
        (tmp_path / "campaigns.yaml").symlink_to(tmp_path / "gone" / "campaigns.yaml")
        with pytest.raises(RulesError) as err:
            load_rules(tmp_path)
        (found,) = [str(p) for p in err.value.problems]
        assert found.startswith(f"{tmp_path / 'campaigns.yaml'}:1:1: cannot read: ")
        assert "a link to a file that is not there" in found

    def test_an_extension_in_capitals_is_a_rules_file(self, tmp_path: Path) -> None:
        """`CAMPAIGN.YAML` (a Windows tool's name) was left out of the folder without a word,
        its rules never loaded; alone, the folder was told it held "no .yaml rules files"
        (analyst walk). The extension is read whatever its case, as an events file's."""
        (tmp_path / "retention.yaml").write_text(self.RULE)
        (tmp_path / "CAMPAIGN.YML").write_text(self.RULE.replace("r1", "r2"))
        (tmp_path / ".HIDDEN.YAML").write_text(self.RULE.replace("r1", "r3"))
        assert [r.id for r in load_rules(tmp_path).rules] == ["r2", "r1"]
        (tmp_path / "retention.yaml").unlink()
        assert [r.id for r in load_rules(tmp_path).rules] == ["r2"]

    def test_validate_names_a_file_that_looks_meant_as_rules_but_is_left_out(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Notepad saves `campaign.yaml` as `campaign.yaml.txt` where extensions are
        hidden: the folder loaded without it and `rules validate` said "1 rule(s) OK", the
        campaign's rules never loaded, without a word (analyst walk). A README is no
        rules file, and is not named."""
        from moments.cli import main

        (tmp_path / "retention.yaml").write_text(self.RULE)
        (tmp_path / "campaign.yaml.txt").write_text(self.RULE.replace("r1", "r2"))
        (tmp_path / "README.md").write_text("# notes\n")
        assert main(["rules", "validate", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert f"{tmp_path}: 1 rule(s) OK" in out
        assert (
            f"{tmp_path}: note: campaign.yaml.txt is left out: a rules file's name ends in "
            ".yaml or .yml; rename it to load it"
        ) in out
        assert "README" not in out

    def test_a_folder_of_hidden_files_only_says_they_are_left_out(self, tmp_path: Path) -> None:
        """A folder holding only `.default.yaml` was told it held no .yaml rules files,
        with the file in plain sight of `ls -a`."""
        (tmp_path / ".default.yaml").write_text(self.RULE)
        with pytest.raises(RulesError) as err:
            load_rules(tmp_path)
        (found,) = [str(p) for p in err.value.problems]
        assert found == (
            f"{tmp_path}:1:1: no .yaml or .yml rules files in this folder (1 hidden file left out: "
            ".default.yaml; a name starting with '.' is an editor's or a copy's, rename it "
            "to load it)"
        )


MEANT_RULE = """\
series:
  topups: {on: [topup], field: amount, period: PERIOD}
rules:
  - id: r
    description: d
    on: [roaming]
    evaluate: EVALUATE
    when: {roaming_type: international}
    condition: {first_time: FIELD}
    task: {family: first_time, type: t, channel: CHANNEL, priority: 3, action: a, ttl: 24h,
           description: x}
"""


def _meant_rule(**values: str) -> str:
    text = MEANT_RULE
    for key, value in {
        "PERIOD": "day",
        "EVALUATE": "event",
        "FIELD": "country",
        "CHANNEL": "sms",
        **values,
    }.items():
        text = text.replace(key, value)
    return text


class TestDidYouMean:
    """A misspelt field name or value was answered with the list of those allowed alone
    (journey review: `first_time: contry`, `channel: SMS`, `period: daily`): the one meant
    is named first when one is close, and none when none is (`channel: wechat`)."""

    def test_a_misspelt_field_names_the_field_meant(self) -> None:
        assert problems(_meant_rule(FIELD="contry")) == [
            "r.yaml:9:17: 'contry' is not a field of these events; did you mean 'country'? "
            "(known: country, event_id, occurred_at, operator, region, roaming_type, "
            "subscriber_id, timezone, utc_offset_minutes)"
        ]

    def test_a_misspelt_when_field_names_the_field_meant(self) -> None:
        text = _meant_rule().replace("roaming_type: international", "roming_type: international")
        (problem,) = problems(text)
        assert "'roming_type' is not a field of roaming events; did you mean 'roaming_type'?" in (
            problem
        )

    @pytest.mark.parametrize(
        ("values", "said"),
        [
            (
                {"CHANNEL": "SMS"},
                "task.channel: Input should be 'sms', 'outbound_call', "
                "'manager' or 'app_push'; did you mean 'sms'?",
            ),
            ({"CHANNEL": "smss"}, "; did you mean 'sms'?"),
            (
                {"PERIOD": "daily"},
                "series.topups.period: Input should be 'day', 'week' or "
                "'month'; did you mean 'day'?",
            ),
            ({"EVALUATE": "day"}, "; did you mean 'daily'?"),
        ],
    )
    def test_a_misspelt_value_names_the_value_meant(
        self, values: dict[str, str], said: str
    ) -> None:
        (problem,) = problems(_meant_rule(**values))
        assert problem.endswith(said)

    def test_a_value_close_to_none_is_given_the_list_alone(self) -> None:
        (problem,) = problems(_meant_rule(CHANNEL="wechat"))
        assert problem.endswith("Input should be 'sms', 'outbound_call', 'manager' or 'app_push'")


@pytest.mark.parametrize("written", ["Charge", "chrage"])
def test_a_misspelt_placeholder_names_the_one_meant(written: str) -> None:
    """`{Country}` in a description was told the dozen names a rule offers, to read
    against the one written (journey review): the close one is named."""
    text = rule(
        "    on: [usage]\n    condition: {field: charge, gt: 1}\n",
        GOOD_TASK.replace("description: low", f"description: 'spent {{{written}}}'"),
    )
    (found,) = problems(text)
    assert found.startswith(
        f"r.yaml:12:7: {{{written}}} is not known when this rule fires; did you mean {{charge}}? "
        "(known: "
    )


def test_a_series_misnamed_in_the_condition_is_not_offered_for_the_description() -> None:
    """`baseline: topup_dy` in the condition: the description's `{topup_day}` is right, and
    offering `{topup_dy}` for it would lead the analyst to the wrong fix."""
    text = (
        "series:\n  topup_day: {on: [topup], field: amount, period: day}\n"
        "rules:\n  - id: r\n    description: d\n    on: [topup]\n    evaluate: daily\n"
        "    condition: {baseline: topup_dy, windows: 7, gte: 3}\n"
        "    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a, ttl: 1d,\n"
        "           description: '{topup_day}'}\n"
    )
    found = problems(text)
    assert (
        found[0]
        == "r.yaml:8:17: unknown series 'topup_dy'; declare it under series: (known: topup_day)"
    )
    assert "did you mean" not in found[1]


class TestCalendarNamedButMissing:
    """`special_days: {calendar: our_days.yaml}` beside `our-days.yaml` was told as
    `our_days.yaml:1:1: cannot read: No such file or directory`, a file the analyst never
    wrote (journey review): the line naming it is the mistake, and the file meant is named."""

    RULES = (
        "special_days: {calendar: CAL}\n"
        "rules:\n  - id: bday\n    description: d\n    on: [profile]\n"
        "    evaluate: special_day\n    condition: {occasion: birthday}\n"
        "    task: {family: special_day, type: b, channel: sms, priority: 4, action: a,\n"
        "           ttl: 12h, description: x}\n"
    )

    def test_the_line_naming_it_and_the_file_meant(self, tmp_path: Path) -> None:
        (tmp_path / "our-days.yaml").write_text(
            "holidays:\n  - {key: telecom_day, name: Telecom Day, every_year: '05-17'}\n"
        )
        rules = tmp_path / "rules.yaml"
        rules.write_text(self.RULES.replace("CAL", "our_days.yaml"))
        with pytest.raises(RulesError) as err:
            load_rules(rules)
        assert [str(p) for p in err.value.problems] == [
            f"{rules}:1:16: calendar file 'our_days.yaml' does not exist "
            f"({tmp_path / 'our_days.yaml'}; a path is read from this file's folder); "
            "did you mean 'our-days.yaml'?"
        ]

    def test_none_near_it_says_to_check_the_name(self, tmp_path: Path) -> None:
        rules = tmp_path / "rules.yaml"
        rules.write_text(self.RULES.replace("CAL", "days.yaml"))
        with pytest.raises(RulesError) as err:
            load_rules(rules)
        (found,) = [str(p) for p in err.value.problems]
        assert found.startswith(f"{rules}:1:16: calendar file 'days.yaml' does not exist")
        assert found.endswith("check the name, or write the calendar there (docs/special-days.md)")


class TestDispatchPolicyInTheRulesFolder:
    """The dispatch policy copied into the rules folder was refused key by key (`'timezone'
    ... belongs in gating:; move it there`, `unknown field 'capacity'`, five more): an
    analyst moving `timezone:` under `gating:` made it worse (journey review)."""

    def test_it_is_named_as_a_policy_file_once(self, tmp_path: Path) -> None:
        (tmp_path / "rules.yaml").write_text(rule("    on: [usage]\n"))
        policy = tmp_path / "dispatch-policy.yaml"
        policy.write_text(
            "timezone: Asia/Shanghai\ncapacity:\n  NJ: {outbound_call: 10}\nmerge: {window: 30m}\n"
        )
        with pytest.raises(RulesError) as err:
            load_rules(tmp_path)
        assert [str(p) for p in err.value.problems] == [
            f"{policy}:1:1: a dispatch policy file, not rules: name it in "
            "MOMENTS_DISPATCH_POLICY (or --policy), and keep it out of the rules folder"
        ]

    def test_a_gating_key_alone_at_the_top_is_still_told_to_move(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text("timezone: Asia/Shanghai\n" + rule("    on: [usage]\n"))
        with pytest.raises(RulesError) as err:
            load_rules(path)
        (found,) = [str(p) for p in err.value.problems]
        assert "it belongs in gating:; move it there" in found


@pytest.mark.parametrize("written", ["v2", "1.5", "0"])
def test_a_version_that_is_no_whole_number_says_what_to_write(written: str) -> None:
    """`version: v2` was told pydantic's words alone ("unable to parse string as an
    integer"), unlike `priority:` and `windows:` (journey review)."""
    text = rule(f"    version: {written}\n    on: [usage]\n")
    (found,) = problems(text)
    assert found.startswith("r.yaml:4:5: rules.0.version: ")
    assert found.endswith(
        "; write a whole number from 1, e.g. 2 (no v; raise it by one with each change)"
    )


def test_a_field_misnamed_in_the_condition_is_not_offered_for_the_description() -> None:
    """`{field: ammount, gte: 200}` and `{amont}` in the description: the condition is told
    `did you mean 'amount'?`, and the description was offered `known: ammount, ammount_gte,
    amount, ...`, the misspelt field among the names a task carries (analyst walk)."""
    text = rule(
        "    on: [topup]\n    condition: {field: ammount, gte: 200}\n",
        GOOD_TASK.replace("description: low", "description: 'thanks for {amont}'"),
    )
    found = problems(text)
    assert "'ammount' is not a field of these events; did you mean 'amount'?" in found[0]
    assert "did you mean {amount}?" in found[1]
    assert "ammount" not in found[1]
