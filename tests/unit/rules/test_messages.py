"""Messages that say where a key belongs, how to write a list, and which lines to check
for a YAML syntax error (analyst review: `did you mean 'cooldown'?` for `cooldown`)."""

from __future__ import annotations

import pytest

from rules.catalog import load_texts
from rules.exceptions import RulesError

RULE = """\
rules:
  - id: r1
    description: d
    on: [complaint]
    condition: {field: severity, lte: 2}
    task:
      family: anomaly
      type: t
      channel: manager
      priority: 1
      action: a
      ttl: 48h
      cooldown: 30d
      description: d
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as err:
        load_texts([("r.yaml", text)])
    return [str(p) for p in err.value.problems]


class TestKeyOutOfPlace:
    def test_a_task_key_level_with_the_rule_says_it_belongs_under_task(self) -> None:
        text = RULE.replace("      cooldown: 30d\n", "") + "    cooldown: 30d\n"
        assert problems(text) == [
            "r.yaml:14:5: unknown field 'rules.0.cooldown'; 'cooldown' is no key of a rule: it "
            "belongs in the rule's task:, indented under it; move it there"
        ]

    def test_when_under_condition_says_it_belongs_to_the_rule(self) -> None:
        text = RULE.replace(
            "    condition: {field: severity, lte: 2}\n",
            "    condition:\n      field: severity\n      lte: 2\n      when: {status: opened}\n",
        )
        assert problems(text) == [
            "r.yaml:8:7: unknown field 'rules.0.condition.when'; 'when' is no key of a "
            "condition: it belongs in a rule, level with its id: and on:; move it there"
        ]

    def test_a_test_another_kind_of_condition_takes_names_what_this_one_takes(self) -> None:
        text = RULE.replace("{field: severity, lte: 2}", "{first_time: category, gte: 2}")
        (found,) = problems(text)
        assert found.endswith(
            "unknown field 'rules.0.condition.gte'; a first_time: condition takes no 'gte' "
            "(it takes first_time, lookback)"
        )

    def test_a_misspelt_key_of_another_place_says_which(self) -> None:
        text = RULE.replace("      cooldown: 30d\n", "") + "    cooldwn: 30d\n"
        (found,) = problems(text)
        assert found.endswith(
            "unknown field 'rules.0.cooldwn'; did you mean 'cooldown'? (it belongs in the "
            "rule's task:, indented under it)"
        )

    def test_a_gating_key_at_the_top_level(self) -> None:
        (found,) = problems("timezone: Europe/London\n" + RULE)
        assert found == (
            "r.yaml:1:1: unknown field 'timezone'; 'timezone' is no key of the top level of "
            "the file: it belongs in gating:; move it there"
        )

    def test_a_condition_key_in_a_series_has_one_colon_before_the_hint(self) -> None:
        """`agg: sum` in a series (the baseline section reads "aggregated by `agg:`") was
        told "is no key of a series under series:: it belongs in ...", two colons."""
        series = "series:\n  topup_day: {on: [topup], field: amount, period: day, agg: sum}\n"
        (found,) = problems(series + RULE)
        assert found == (
            "r.yaml:2:56: unknown field 'series.topup_day.agg'; 'agg' is no key of a series "
            "under series: it belongs in a condition (under condition:, all:, any: or not:); "
            "move it there"
        )
        (gating,) = problems("gating: {local_hour: 9}\n" + RULE)
        assert "is no key of gating: it belongs in special_days:" in gating, gating
        assert "::" not in gating


@pytest.mark.parametrize(
    ("written", "meant"),
    [("push", "app_push"), ("call", "outbound_call"), ("Outbound", "outbound_call")],
)
def test_a_channel_written_as_one_word_of_its_name_is_told_the_one_meant(
    written: str, meant: str
) -> None:
    """`channel: push` was told the four channels and no one meant: no misspelling
    measure finds `push` close to `app_push` (analyst walk)."""
    (found,) = problems(RULE.replace("channel: manager", f"channel: {written}"))
    assert found == (
        "r.yaml:9:7: rules.0.task.channel: Input should be 'sms', 'outbound_call', 'manager' "
        f"or 'app_push'; did you mean {meant!r}?"
    )


def test_a_word_of_no_value_names_none() -> None:
    (found,) = problems(RULE.replace("channel: manager", "channel: phone"))
    assert "did you mean" not in found


def test_a_single_value_for_a_list_says_how_to_write_the_list() -> None:
    assert problems(RULE.replace("on: [complaint]", "on: complaint")) == [
        "r.yaml:4:5: rules.0.on: Input should be a list: write on: [complaint] (a list, even "
        "of one)"
    ]
    (found,) = problems('gating: {quiet_hours: "21:00-08:00"}\n' + RULE)
    assert found.endswith('write quiet_hours: ["21:00-08:00"] (a list, even of one)')


class TestADurationWithNoUnit:
    """`ttl: 24` or `lookback: 60`, a number where a duration goes, said "Input should be a
    valid string" and no more: now what to write."""

    def test_a_task_s_ttl_and_cooldown(self) -> None:
        text = RULE.replace("ttl: 48h", "ttl: 48").replace("cooldown: 30d", "cooldown: 30")
        assert problems(text) == [
            "r.yaml:12:7: rules.0.task.ttl: 48 has no unit: write 48d for 48 days, 48h for "
            "48 hours (s, m, h, d or w)",
            "r.yaml:13:7: rules.0.task.cooldown: 30 has no unit: write 30d for 30 days, 30h "
            "for 30 hours (s, m, h, d or w)",
        ]

    def test_a_look_back_is_days(self) -> None:
        text = RULE.replace("{field: severity, lte: 2}", "{first_time: category, lookback: 60}")
        assert problems(text) == [
            "r.yaml:5:39: rules.0.condition.lookback: 60 has no unit: write 60d for 60 days"
        ]

    def test_digits_with_a_leading_zero_are_told_the_same(self) -> None:
        """`ttl: 048`, read as text since such digits are (`in: [0086]`), was told the
        form alone ("'048' is not a duration; write a number and a unit")."""
        text = RULE.replace("ttl: 48h", "ttl: 048").replace(
            "{field: severity, lte: 2}", "{first_time: category, lookback: 060}"
        )
        assert problems(text) == [
            "r.yaml:5:39: rules.0.condition.lookback: 60 has no unit: write 60d for 60 days",
            "r.yaml:12:7: rules.0.task.ttl: 48 has no unit: write 48d for 48 days, 48h for "
            "48 hours (s, m, h, d or w)",
        ]

    def test_the_gating_section_s_and_a_fraction(self) -> None:
        gating = (
            "gating: {roaming_lapses_after: 21, frequency_cap: {max_contacts: 2, period: 1.5}}\n"
        )
        found = problems(gating + RULE)
        assert found == [
            "r.yaml:1:69: gating.frequency_cap.period: 1.5 is no duration: write a whole "
            "number and a unit (s, m, h, d or w), a smaller unit for a fraction (90m, not 1.5h)",
            "r.yaml:1:10: gating.roaming_lapses_after: 21 has no unit: write 21d for 21 days, "
            "21h for 21 hours (s, m, h, d or w)",
        ]


class TestAComparisonWithAList:
    """A value that fits no member of a union was said once per member, each named with
    pydantic's tag and none with the fix: `eq: [10010, 10000]` made four lines
    (`condition.eq.str: Input should be a valid string`, `.int`, `.float`, `.bool`)."""

    def test_eq_with_a_list_says_write_in(self) -> None:
        text = RULE.replace("{field: severity, lte: 2}", "{field: severity, eq: [1, 2]}")
        assert problems(text) == [
            "r.yaml:5:34: rules.0.condition.eq: eq compares with one value, not a list or map; "
            "for one of several, write in: [1, 2]"
        ]

    def test_ne_with_a_list_says_write_not_in(self) -> None:
        text = RULE.replace("{field: severity, lte: 2}", "{all: [{field: severity, ne: [3]}]}")
        (found,) = problems(text)
        assert found.endswith(
            "rules.0.condition.all.0.ne: ne compares with one value, not a "
            "list or map; for one of several, write not_in: [3]"
        )

    def test_a_bound_with_a_list_says_one_number(self) -> None:
        text = RULE.replace("{field: severity, lte: 2}", "{field: severity, lte: [2]}")
        assert problems(text) == [
            "r.yaml:5:34: rules.0.condition.lte: lte compares with one number or $param, "
            "e.g. lte: 5"
        ]


class TestAnOccasionUnderAnyOrNot:
    """A special-day rule's `occasion:` under `any:` or `not:` was told "a special_day rule
    needs an occasion: condition", which it had: now where it goes, and the list to write."""

    RULE = """\
rules:
  - id: greet
    description: d
    on: [profile]
    evaluate: special_day
    condition: CONDITION
    task: {family: special_day, type: t, channel: sms, priority: 4, action: a, ttl: 12h,
           description: d}
"""

    def test_any_of_two_occasions_is_one_occasion_of_both(self) -> None:
        text = self.RULE.replace(
            "CONDITION", "{any: [{occasion: birthday}, {occasion: join_anniversary}]}"
        )
        assert problems(text) == [
            "r.yaml:6:5: a special_day rule's occasion: is its condition or one of all:'s, not "
            "under any: or not:; for the days meant write occasion: [birthday, join_anniversary]"
        ]
        fixed = self.RULE.replace("CONDITION", "{occasion: [birthday, join_anniversary]}")
        assert load_texts([("r.yaml", fixed)]).rules[0].id == "greet"

    def test_not_an_occasion_is_every_other(self) -> None:
        text = self.RULE.replace("CONDITION", "{not: {occasion: birthday}}")
        (found,) = problems(text)
        assert found.endswith("write occasion: [join_anniversary, contract_expiry, holiday]")

    def test_none_at_all_is_told_as_before(self) -> None:
        text = self.RULE.replace("CONDITION", "{profile: tier, eq: gold}")
        assert problems(text) == [
            "r.yaml:6:5: a special_day rule needs an occasion: condition, e.g. birthday"
        ]


class TestAParamInAFilter:
    """A `$param` in `when:` was compared as the text "$hot": the rule loaded and matched no
    event (a field the contract lists was told its value was never "$k", not why)."""

    def test_a_rule_s_filter_says_to_test_it_in_the_condition(self) -> None:
        text = RULE.replace(
            "    on: [complaint]\n",
            "    on: [complaint]\n    when: {complaint_id: {prefix: $ids}, category: [$c]}\n",
        )
        assert problems(text) == [
            "r.yaml:5:27: $ids: when: compares with values written in it, not params (a filter "
            "is the same for every region and tier); to use a param, test it in the condition: "
            "{field: complaint_id, prefix: $ids}",
            "r.yaml:5:53: $c: when: compares with values written in it, not params (a filter is "
            "the same for every region and tier); to use a param, test it in the condition: "
            "{field: category, in: $c}",
        ]

    def test_a_param_in_a_list_is_told_in(self) -> None:
        """`counterparty: [$hot]` (one of) was told `eq: $hot`, which with `hot: "10010,
        10000"` compares with the whole text and matches no event; `in: $hot` reads the
        list, and a param of one value too."""
        text = RULE.replace(
            "    on: [complaint]\n",
            "    on: [complaint]\n    when: {category: [$c, billing], complaint_id: $i}\n",
        )
        found = problems(text)
        assert [p.rsplit("condition: ", 1)[-1] for p in found] == [
            "{field: category, in: $c}",
            "{field: complaint_id, eq: $i}",
        ]

    def test_a_param_holding_a_list_is_told_in(self) -> None:
        """A scalar `counterparty: $hot` (or `{eq: $d}`) was told `eq: $hot`, which with `hot:
        "10010, 10000"` compares with the whole text and matches no event: a param whose
        value, the rule's or an override's, holds a comma is told `in:`; one that holds no
        comma `eq:`."""
        text = (
            RULE.replace("on: [complaint]", "on: [usage]")
            .replace("{field: severity, lte: 2}", "{field: charge, gte: 1}")
            .replace(
                "    on: [usage]\n",
                "    on: [usage]\n"
                "    when: {counterparty: $hot, kind: $k, direction: {eq: $d}, imei: {ne: $x}}\n"
                '    params: {hot: "10010, 10000", k: voice, d: in, x: "1, 2"}\n'
                '    overrides: [{region: NJ, params: {d: "in, out"}}]\n',
            )
        )
        found = problems(text)
        assert [p.rsplit("condition: ", 1)[-1] for p in found] == [
            "{field: counterparty, in: $hot}",
            "{field: kind, eq: $k}",
            "{field: direction, in: $d}",
            "{field: imei, not_in: $x}",  # `ne:` a whole list's text let every event through
        ]

    def test_a_series_filter_says_to_write_the_value(self) -> None:
        series = "series:\n  s: {on: [usage], when: {counterparty: $hot}, period: day}\n"
        assert problems(series + RULE) == [
            "r.yaml:2:27: $hot: when: compares with values written in it, not params (a series "
            "has none: write the value)"
        ]


def test_a_list_param_says_to_write_it_as_text() -> None:
    """`params: {hot: [10010, 10000]}` was told "Input should be a valid number"."""
    text = RULE.replace(
        "{field: severity, lte: 2}", "{field: complaint_id, in: $hot}\n    params: {hot: [a, b]}"
    )
    assert problems(text) == [
        "r.yaml:6:14: rules.0.params.hot: a param holds one value; for in:, not_in: or prefix: "
        'write its list as text: hot: "a, b"'
    ]


def test_an_id_or_type_that_is_no_name_says_what_to_write() -> None:
    """They showed the pattern alone, `String should match pattern '^[a-z][a-z0-9_.-]*$'`."""
    text = RULE.replace("id: r1", "id: Low-Balance").replace("type: t", "type: Low Balance!")
    assert problems(text) == [
        "r.yaml:2:5: rules.0.id: 'Low-Balance' is no id: write lower-case letters, digits and "
        "_, ., -, starting with a letter, e.g. 'low-balance'",
        "r.yaml:8:7: rules.0.task.type: 'Low Balance!' is no type: write lower-case letters, "
        "digits and _, starting with a letter, e.g. 'low_balance'",
    ]
    (found,) = problems(RULE.replace("id: r1", "id: 1st_rule"))
    assert found.endswith(
        "'1st_rule' is no id: write lower-case letters, digits and _, ., -, starting with a letter"
    )


class TestYamlSyntax:
    def test_a_key_indented_less_names_the_line_above_the_one_the_parser_stopped_at(
        self,
    ) -> None:
        text = RULE.replace("      cooldown: 30d", "    cooldown: 30d")
        assert problems(text) == [
            "r.yaml:14:18: YAML syntax: mapping values are not allowed here; YAML read line 14 "
            "as more of the value on line 13, as line 14 is indented further, 6 spaces against 4: "
            "keys "
            "of one map line up, so check the indentation of lines 13 and 14, or quote a "
            "value holding ': '"
        ]

    def test_a_key_indented_one_space_too_far_does_not_blame_the_line_above(self) -> None:
        """The message called the correct line 13 "indented less", sending the analyst to
        move it, when line 14 was one space too far."""
        text = RULE.replace("      description: d\n", "       description: d\n")
        (found,) = problems(text)
        assert "which is indented less" not in found
        assert "line 13, as line 14 is indented further, 7 spaces against 6: " in found

    @pytest.mark.parametrize(("rule_line", "key_at"), [("  - id: r1", 4), ("- id: r1", 2)])
    def test_a_key_off_from_a_list_items_keys_is_measured_from_the_key_after_the_dash(
        self, rule_line: str, key_at: int
    ) -> None:
        """`  - id: r1` then `     version: 1`: the item's keys start at 4, after the dash.
        "2 spaces against 5" had the analyst move `version:` to 2, another mistake (journey
        review)."""
        text = RULE.replace("  - id: r1\n", f"{rule_line}\n     version: 1\n")
        (found,) = problems(text)
        assert found.endswith(
            f"YAML read line 3 as more of the value on line 2, whose key after '- ' starts "
            f"{key_at} characters in, against 5 here: keys of one map line up, so check the "
            "indentation of lines 2 and 3, or quote a value holding ': '"
        )

    def test_a_value_starting_with_a_placeholder_says_to_quote_it(self) -> None:
        """`description: {country} welcome` was told to check the indentation, which was
        right, and `description: {country}` that it "should be a valid string" (journey
        review): YAML reads a value starting with `{` as a map."""
        (found,) = problems(RULE.replace("      description: d", "      description: {x} left"))
        assert found == (
            "r.yaml:14:24: YAML syntax: expected <block end>, but found '<scalar>'; a value "
            "starting with { is read as a YAML map, and the text after its } is left over: "
            'quote the whole value, description: "{x} left"'
        )
        (found,) = problems(RULE.replace("      description: d", "      description: {x}"))
        assert found == (
            "r.yaml:14:7: rules.0.task.description: {x} at the start of a value is read as a "
            'YAML map, not text: quote the whole value, description: "{x}"'
        )

    def test_a_colon_in_a_value(self) -> None:
        (found,) = problems(RULE.replace("description: d\n    on", "description: Note: d\n    on"))
        assert found == (
            "r.yaml:3:22: YAML syntax: mapping values are not allowed here; a value holding "
            "': ' must be quoted, e.g. description: \"Note: text\""
        )

    def test_a_colon_in_a_value_inside_braces(self) -> None:
        """`task: {..., description: Thanks: {amount}}` was told "the [ or { opened on line
        6 is not closed where it should be", and it is closed: the ': ' in the text is
        read as a second key's (analyst walk). It says to quote the value, naming its key."""
        (found,) = problems(
            "rules:\n  - id: x\n    description: d\n    on: [topup]\n"
            "    condition: {field: amount, gte: 200}\n"
            "    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a, "
            "ttl: 1d, description: Thanks: {amount}}\n"
        )
        assert found == (
            "r.yaml:6:104: YAML syntax: expected ',' or '}', but got ':'; inside { } a value "
            "holding ': ' must be quoted: description: \"Thanks: ...\" (the ': ' at column "
            "104 of line 6 was read as a second key's)"
        )

    def test_a_key_indented_more(self) -> None:
        (found,) = problems(RULE.replace("    task:", "      task:"))
        assert found.startswith(
            "r.yaml:6:7: YAML syntax: expected <block end>, but found '<block mapping start>'; "
            "check the indentation of line 6 against the lines above it, in the block from "
            "line 2:"
        )

    def test_a_key_written_twice_names_both_lines(self) -> None:
        """A task with two `priority:` lines was told "a second rule starts with its own
        '- '", which is the fix for a rule pasted without its dash only (analyst walk)."""
        (found,) = problems(
            RULE.replace("      priority: 1\n", "      priority: 1\n      priority: 3\n")
        )
        assert found == (
            'r.yaml:11:7: YAML syntax: found duplicate key "priority" with value "3" (original '
            "value: \"1\"); 'priority' is written twice in one map, here and on line 10: keep one"
        )

    def test_a_task_key_indented_as_the_rules_says_where_it_belongs(self) -> None:
        """The task's `description:` written level with the rule's keys, after the task's
        block: it is the rule's `description:` written twice, and "keep one" had the
        analyst delete one of the two texts, when the line only wanted indenting under
        `task:` (analyst walk)."""
        text = RULE.replace("      description: d\n", "    description: the task's\n")
        (found,) = problems(text)
        assert found == (
            'r.yaml:14:5: YAML syntax: found duplicate key "description" with value "the '
            "task's\" (original value: \"d\"); 'description' is written twice in one map, here "
            "and on line 3: if this one is task:'s (line 6), indent it as that block's keys are, "
            "6 spaces; else keep one"
        )

    def test_a_task_without_its_description_names_the_rules_below_it(self) -> None:
        """The task's `description:` written level with the rule's keys, after the task's
        block, the rule having none of its own: read as the rule's, it left the task
        without one, told "required field is missing" at `task:` (analyst walk)."""
        text = RULE.replace("    description: d\n", "", 1).replace(
            "      description: d\n", "    description: d\n"
        )
        assert problems(text) == [
            "r.yaml:5:5: rules.0.task.description: required field is missing; the "
            "description: on line 13 is the rule's, level with task:; if it is the task's "
            "text, indent it under task: as that block's keys are"
        ]

    def test_a_key_first_written_quoted_names_no_line_of_another_rule(self) -> None:
        """The first `priority` of the second rule written `"priority":`: the line named
        was the first rule's `priority:`, at the same column in another map."""
        second = RULE.removeprefix("rules:\n").replace("id: r1", "id: r2")
        second = second.replace("      priority: 1\n", '      "priority": 1\n      priority: 3\n')
        (found,) = problems(RULE + second)
        assert found.startswith('r.yaml:24:7: YAML syntax: found duplicate key "priority"')
        assert found.endswith("'priority' is written twice in one map: keep one"), found

    def test_a_rule_pasted_without_its_dash_says_so(self) -> None:
        pasted = RULE + RULE.removeprefix("rules:\n").replace("  - id: r1", "    id: r2")
        (found,) = problems(pasted)
        assert found.startswith('r.yaml:15:5: YAML syntax: found duplicate key "id"')
        assert found.endswith(
            "'id' is written twice in one map, here and on line 2: a second rule starts with "
            "its own '- '"
        )

    @pytest.mark.parametrize(
        ("written", "opener", "closer"),
        [("on: [", "[", "]"), ("on: [complaint, {a: ", "{", "}")],
    )
    def test_a_bracket_left_open_at_the_end_names_its_line(
        self, written: str, opener: str, closer: str
    ) -> None:
        """A file saved half-written, `on: [` its last line, was told only "expected the
        node content, but found '<stream end>'", with no hint of the bracket, though an
        unclosed bracket is one of the errors the hints name (journey review)."""
        text = RULE.split("    condition:")[0].replace("on: [complaint]", written)
        (found,) = problems(text)
        assert found == (
            "r.yaml:5:1: YAML syntax: expected the node content, but found '<stream end>'; "
            f"the {opener} opened on line 4 is never closed: close it with {closer}"
        )

    def test_a_tab(self) -> None:
        (found,) = problems(RULE.replace("      priority: 1", "\tpriority: 1"))
        assert found == (
            "r.yaml:10:1: YAML syntax: found character '\\t' that cannot start any token; YAML "
            "indents with spaces only: replace the tab on line 10 with spaces"
        )


@pytest.mark.parametrize("written", [".nan", ".inf", "-.inf", '"nan"'])
def test_a_threshold_that_is_no_finite_number_is_refused(written: str) -> None:
    """`lte: .nan` compared false with every value: the rule loaded without a word and
    never fired (`.inf` held every value)."""
    found = problems(RULE.replace("lte: 2}", f"lte: {written}}}"))
    assert len(found) == 1
    assert found[0].startswith("r.yaml:5:")
    assert "lte needs a finite number" in found[0]
    assert "write a number" in found[0]


@pytest.mark.parametrize("written", [".nan", ".inf", "-.inf", '"nan"'])
def test_a_param_compared_as_a_number_that_is_no_finite_number_is_refused(written: str) -> None:
    """`lte: $most` with `most: .nan` loaded and the rule never fired (`.inf`: always
    held), while `lte: .nan` written in the condition was refused; in an override too."""
    text = RULE.replace("lte: 2}", "lte: $most}\n    params: {most: 2}").replace(
        "    task:\n", f"    overrides: [{{region: NJ, params: {{most: {written}}}}}]\n    task:\n"
    )
    (found,) = problems(text)
    assert found.startswith("r.yaml:7:")
    assert "param 'most' is compared with lte (as $most), so it must be a finite number" in found
    assert found.endswith("write a number, e.g. 100")
    (found,) = problems(RULE.replace("lte: 2}", f"lte: $most}}\n    params: {{most: {written}}}"))
    assert found.startswith("r.yaml:6:")
    assert "must be a finite number" in found


@pytest.mark.parametrize(
    ("condition", "key"),
    [
        ("{baseline: spend, windows: 3, min_baseline: .inf, gte: 2}", "min_baseline"),
        ("{share: spend, of: spend, min_total: .inf, gte: 0.5}", "min_total"),
    ],
)
def test_a_floor_that_is_no_finite_number_is_refused(condition: str, key: str) -> None:
    """`min_baseline: .inf` loaded and no baseline was ever judged (the rule never fired)."""
    text = "series:\n  spend: {on: [usage], field: charge, period: month}\n" + RULE.replace(
        "on: [complaint]", "on: [usage]\n    evaluate: monthly"
    ).replace("{field: severity, lte: 2}", condition)
    (found,) = problems(text)
    assert f"rules.0.condition.{key}: Input should be a finite number" in found


class TestShapes:
    """A file, a section or a rule of the wrong shape was told pydantic's words, naming its
    classes: `: Input should be a valid dictionary or instance of RulesFile` (a list of
    rules with no `rules:` above it), `rules.0: ... instance of RuleSpec`, `rules: Input
    should be a valid list` for a `rules:` left empty (analyst walk)."""

    def test_a_list_of_rules_with_no_rules_key_is_told_to_put_it_under_rules(self) -> None:
        text = "\n".join(line[2:] for line in RULE.splitlines()[1:]) + "\n"
        assert problems(text) == [
            "r.yaml:1:1: the file is a list, not a mapping: rules files write their sections "
            "as keys (rules:, series:, gating:, special_days:); put the list under rules:, "
            "indented"
        ]

    def test_a_rule_that_is_no_mapping_is_told_the_form(self) -> None:
        assert problems("rules: [1, low_balance]\n") == [
            "r.yaml:1:9: rules.0: 1 is not a rule: write each rule as a mapping, its first "
            "line `- id: my_rule`, its keys indented under it",
            "r.yaml:1:12: rules.1: 'low_balance' is not a rule: write each rule as a mapping, "
            "its first line `- id: my_rule`, its keys indented under it",
        ]

    @pytest.mark.parametrize("written", ["rules:\n", "rules: {}\n"])
    def test_empty_rules_are_told_to_write_them_as_a_list(self, written: str) -> None:
        (said,) = problems(written)
        assert said.startswith("r.yaml:1:1: rules: ")
        assert said.endswith("write each rule under it, on a line starting with '- '")
        assert "Input should be" not in said

    def test_a_task_that_is_no_mapping_is_told_the_form(self) -> None:
        text = RULE.split("    task:\n")[0] + "    task: sms\n"
        (said,) = problems(text)
        assert said == (
            "r.yaml:6:5: rules.0.task: 'sms' is not a mapping: write its keys under it, one "
            "`name: value` a line indented below, or in braces, {name: value}"
        )


@pytest.mark.parametrize("key", ["id", "type"])
def test_a_number_for_a_name_is_told_the_form(key: str) -> None:
    """`id: 123` was told "Input should be a valid string" (analyst walk)."""
    text = (
        RULE.replace("  - id: r1", "  - id: 123")
        if key == "id"
        else RULE.replace("      type: t", "      type: 123")
    )
    (said,) = problems(text)
    assert said.endswith(
        f"'123' is no {key}: write lower-case letters, digits and "
        f"{', '.join('_.-' if key == 'id' else '_')}, starting with a letter"
    ), said
