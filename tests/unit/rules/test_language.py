"""Each construct of the rule language, on small rules written for the test."""

from __future__ import annotations

from typing import Any

import pytest

from moments.models import EventType

from .helpers import NO_GATES, SUB, at, ev, rules_from, run, types, usage

Events = list[tuple[EventType, dict[str, Any]]]

TASK = """
    task:
      family: anomaly
      type: {type}
      channel: sms
      priority: 3
      action: a
      ttl: 30d
      description: "{description}"
"""


def one_rule(body: str, series: str = "", type_: str = "hit", description: str = "d") -> str:
    head = f"series:\n{series}" if series else ""
    return (
        head
        + "rules:\n  - id: r\n    description: test\n"
        + body
        + TASK.format(type=type_, description=description)
    )


def fired(text: str, events: Events, until: str | None = None) -> int:
    return len(run(rules_from(text), events, until=until).tasks)


class TestFieldPredicates:
    @pytest.mark.parametrize(
        ("test", "value", "fires"),
        [
            ("eq: voice", "voice", True),
            ("eq: voice", "sms", False),
            ("ne: voice", "sms", True),
            ("in: [voice, sms]", "sms", True),
            ("not_in: [voice, sms]", "data", True),
            ("not_in: [voice, sms]", "sms", False),
            ("prefix: vo", "voice", True),
            ("prefix: [da, sm]", "voice", False),
        ],
    )
    def test_text(self, test: str, value: str, fires: bool) -> None:
        text = one_rule(f"    on: [usage]\n    condition: {{field: kind, {test}}}\n")
        assert fired(text, [usage(at("2026-11-02"), kind=value)]) == int(fires)

    @pytest.mark.parametrize(
        ("test", "charge", "fires"),
        [
            ("gt: 5", 5, False),
            ("gte: 5", 5, True),
            ("lt: 5", 4.99, True),
            ("lte: 5", 5.01, False),
            ("gte: 1, lt: 10", 9, True),
            ("gte: 1, lt: 10", 10, False),
        ],
    )
    def test_ranges(self, test: str, charge: float, fires: bool) -> None:
        text = one_rule(f"    on: [usage]\n    condition: {{field: charge, {test}}}\n")
        assert fired(text, [usage(at("2026-11-02"), kind="data", charge=charge)]) == int(fires)

    @pytest.mark.parametrize(
        ("test", "charge", "fires"),
        [
            ("gt: 5", 5, False),
            ("gte: 5", 5, True),
            ("lt: 5", 4.99, True),
            ("eq: 5", 5.0, True),  # numbers compare as numbers
            ("eq: '5'", 5.0, True),
            ("ne: 5", 5.0, False),
            ("in: [5, 6]", 5.0, True),  # a listed number matches whatever its spelling
            ("in: ['5.0']", 5, True),
            ("not_in: [5.0]", 5, False),
            ("in: [6, '7']", 5, False),  # (`seven` is refused: a charge is a number)
        ],
    )
    def test_when_and_condition_compare_alike(self, test: str, charge: float, fires: bool) -> None:
        """One set of operators (rules.operators) for `when:` and `condition:`."""
        events = [usage(at("2026-11-02"), kind="data", charge=charge)]
        as_condition = one_rule(f"    on: [usage]\n    condition: {{field: charge, {test}}}\n")
        as_filter = one_rule(f"    on: [usage]\n    when: {{charge: {{{test}}}}}\n")
        assert fired(as_condition, events) == fired(as_filter, events) == int(fires)

    @pytest.mark.parametrize(
        ("test", "fires"),
        [
            ("ne: '10000'", True),
            ("not_in: ['10000', '10010']", True),
            ("eq: '10000'", False),
            ("in: ['10000', '10010']", False),
            ("prefix: '100'", False),
            ("gte: 1", False),
        ],
    )
    def test_a_missing_value_passes_only_ne_and_not_in(self, test: str, fires: bool) -> None:
        """A value that is not there is in no list: `not_in:` passes it as `ne:` does
        (docs/rules.md; `ne: [a, b]` is told to write `not_in: [a, b]`), in `when:` and
        in a condition alike. Both failed `not_in:` for an event without the field, so
        `not_in: [10000]` and `ne: 10000` differed on a call without a counterparty."""
        events = [usage(at("2026-11-02"), kind="voice")]  # no counterparty
        as_condition = one_rule(
            f"    on: [usage]\n    condition: {{field: counterparty, {test}}}\n"
        )
        as_filter = one_rule(f"    on: [usage]\n    when: {{counterparty: {{{test}}}}}\n")
        assert (fired(as_condition, events), fired(as_filter, events)) == (fires, fires)

    def test_number_lists_match_numbers_and_strings(self) -> None:
        text = one_rule(
            "    on: [usage]\n    condition: {field: counterparty, in: [10010, 10000, 10001]}\n"
        )
        events = [
            usage(at("2026-11-02"), kind="voice", counterparty="10000"),
            usage(at("2026-11-03"), kind="voice", counterparty="100100"),
        ]
        assert fired(text, events) == 1

    @pytest.mark.parametrize(
        "test",
        [
            "condition: {field: counterparty, in: [01012345, 0086]}",
            "condition: {field: counterparty, eq: 01012345}",
            "condition: {field: counterparty, prefix: [010, 025]}",
            "when: {counterparty: 01012345}",
            "when: {counterparty: [0086, 01012345]}",
        ],
    )
    def test_digits_with_a_leading_zero_match_as_written(self, test: str) -> None:
        """A Beijing landline (010...) or China's calling code (0086) written unquoted was
        read as a number, its zeros dropped (1012345, 86): the rule matched no event's
        counterparty and loaded without a word; a `prefix:` of them was refused with
        "Input should be a valid string" three times."""
        text = one_rule(f"    on: [usage]\n    {test}\n")
        assert fired(text, [usage(at("2026-11-02"), kind="voice", counterparty="01012345")]) == 1
        assert fired(text, [usage(at("2026-11-02"), kind="voice", counterparty="1012345")]) == 0

    def test_a_number_with_a_leading_zero_is_still_a_number(self) -> None:
        """`priority: 03`, `local_hour: 09`, `gte: 05` mean what they say."""
        rules = rules_from(
            "special_days: {local_hour: 09}\n"
            + one_rule("    on: [usage]\n    condition: {field: charge, gte: 05}\n").replace(
                "priority: 3", "priority: 03"
            )
        )
        assert rules.special.local_hour == 9
        assert rules.rules[0].task.priority == 3
        events = [usage(at("2026-11-02"), kind="data", charge=c) for c in (4.99, 5)]
        assert len(run(rules, events).tasks) == 1

    @pytest.mark.parametrize("test", ["prefix: [1380, 1390]", "prefix: 1380", "prefix: [13800]"])
    def test_digits_of_a_prefix_written_unquoted(self, test: str) -> None:
        """`prefix: [1380, 1390]` was refused three times over ("Input should be a valid
        string", at each number and at the list) with no fix; `prefix: 1380` was told to
        write a list, which was refused in turn."""
        text = one_rule(f"    on: [usage]\n    condition: {{field: subscriber_id, {test}}}\n")
        assert fired(text, [usage(at("2026-11-02"), kind="data")]) == 1  # SUB is 13800138001
        other = usage(at("2026-11-02"), kind="data")
        other[1]["subscriber_id"] = "13900139000"
        assert fired(text, [other]) == int("1390" in test)

    @pytest.mark.parametrize(
        ("condition", "params"),
        [
            ("{field: charge, gte: 05}", ""),
            ("{field: charge, gte: $least}", "    params: {least: 05}\n"),
        ],
    )
    def test_a_threshold_with_a_leading_zero_reaches_the_task_as_a_number(
        self, condition: str, params: str
    ) -> None:
        """Read as text since digits with a leading zero are, the threshold went out in
        the task's params as "05" (a consumer reading a number got text) and `{charge_gte}`
        showed 05."""
        text = one_rule(
            f"    on: [usage]\n{params}    condition: {condition}\n", description="{charge_gte}"
        )
        tasks = run(rules_from(text), [usage(at("2026-11-02"), kind="data", charge=6)]).tasks
        assert [t.moment.params["charge_gte"] for t in tasks] == [5]
        assert not isinstance(tasks[0].moment.params["charge_gte"], str)
        assert tasks[0].moment.description == "5"

    def test_when_filters_before_the_condition(self) -> None:
        text = one_rule("    on: [usage]\n    when: {kind: [voice]}\n")
        events = [usage(at("2026-11-02"), kind="voice"), usage(at("2026-11-02"), kind="sms")]
        assert fired(text, events) == 1

    def test_profile_condition(self) -> None:
        text = one_rule("    on: [usage]\n    condition: {profile: tier, in: [gold, diamond]}\n")
        events = [
            usage(at("2026-11-02", "10:00"), kind="data"),
            ev(EventType.PROFILE, at("2026-11-02", "11:00"), tier="gold"),
            usage(at("2026-11-02", "12:00"), kind="data"),
        ]
        assert fired(text, events) == 1


class TestComposition:
    BODY = "    on: [usage]\n    condition:\n{tree}"

    def test_all_any_not(self) -> None:
        tree = (
            "      all:\n"
            "        - {field: kind, eq: voice}\n"
            "        - any:\n"
            "            - {field: quantity, gte: 600}\n"
            "            - {field: counterparty, prefix: '100'}\n"
            "        - not: {field: direction, eq: in}\n"
        )
        text = one_rule(self.BODY.format(tree=tree))
        cases = [
            ({"kind": "voice", "quantity": 700, "direction": "out"}, 1),
            ({"kind": "voice", "quantity": 60, "counterparty": "10086"}, 1),
            ({"kind": "voice", "quantity": 700, "direction": "in"}, 0),
            ({"kind": "sms", "quantity": 700}, 0),
            ({"kind": "voice", "quantity": 60, "counterparty": "139"}, 0),
        ]
        for fields, expected in cases:
            assert fired(text, [usage(at("2026-11-02"), **fields)]) == expected, fields

    def test_first_time_inside_all_remembers_even_when_another_part_fails(self) -> None:
        tree = "      all:\n        - {profile: tier, eq: gold}\n        - {first_time: country}\n"
        text = one_rule("    on: [roaming]\n    condition:\n" + tree)
        trip = {"country": "JP", "roaming_type": "international"}
        events = [
            ev(EventType.ROAMING, at("2026-11-02"), **trip),  # silver: no task, JP seen
            ev(EventType.PROFILE, at("2026-11-03"), tier="gold"),
            ev(EventType.ROAMING, at("2026-11-04"), **trip),  # gold, but JP is not new
        ]
        assert fired(text, events) == 0


class TestWindows:
    SERIES = "  spend: {on: [usage], field: charge, period: day}\n"

    @pytest.mark.parametrize(
        ("agg", "limit", "fires"),
        [
            ("sum", 30, True),
            ("count", 3, True),
            ("avg", 10, True),
            ("max", 20, True),
            ("max", 21, False),
            ("avg", 10.5, False),
        ],
    )
    def test_aggregates_of_the_current_day(self, agg: str, limit: float, fires: bool) -> None:
        body = f"    on: [usage]\n    condition: {{series: spend, agg: {agg}, gte: {limit}}}\n"
        text = one_rule(body, self.SERIES)
        events = [
            usage(at("2026-11-02", f"1{i}:00"), kind="data", charge=c)
            for i, c in enumerate((5, 5, 20))
        ]
        assert fired(text, events) == int(fires)

    def test_count_over_the_last_seven_days(self) -> None:
        series = "  c: {on: [complaint], period: day}\n"
        body = "    on: [complaint]\n    condition: {series: c, agg: count, last: 7, gte: 2}\n"
        text = one_rule(body, series)

        def complaint(day: str) -> tuple[EventType, dict[str, Any]]:
            return ev(
                EventType.COMPLAINT,
                at(day),
                complaint_id=day,
                category="billing",
                severity=3,
                status="opened",
            )

        assert fired(text, [complaint("2026-11-01"), complaint("2026-11-07")]) == 1
        assert fired(text, [complaint("2026-11-01"), complaint("2026-11-08")]) == 0

    def test_weeks_start_on_monday_and_months_on_the_first(self) -> None:
        series = (
            "  w: {on: [usage], field: charge, period: week}\n"
            "  m: {on: [usage], field: charge, period: month}\n"
        )
        week = one_rule("    on: [usage]\n    condition: {series: w, gte: 20}\n", series)
        month = one_rule("    on: [usage]\n    condition: {series: m, gte: 20}\n", series)
        sunday_monday = [
            usage(at("2026-11-01"), kind="data", charge=10),
            usage(at("2026-11-02"), kind="data", charge=10),
        ]
        assert fired(week, sunday_monday) == 0
        assert fired(month, sunday_monday) == 1
        month_end = [
            usage(at("2026-10-31"), kind="data", charge=10),
            usage(at("2026-11-01"), kind="data", charge=10),
        ]
        assert fired(week, month_end) == 1
        assert fired(month, month_end) == 0

    def test_days_follow_the_subscribers_time_zone(self) -> None:
        text = one_rule("    on: [usage]\n    condition: {series: spend, gte: 20}\n", self.SERIES)
        # 23:30 and 00:30 in Shanghai are one UTC day but two local days.
        events = [
            usage("2026-11-02T23:30:00+08:00", kind="data", charge=10),
            usage("2026-11-03T00:30:00+08:00", kind="data", charge=10),
        ]
        assert fired(text, events) == 0
        london = [
            ev(EventType.PROFILE, "2026-11-02T00:00:00+08:00", timezone="Europe/London"),
            *events,
        ]
        assert fired(text, london) == 1


class TestBaseline:
    SERIES = "  spend: {on: [usage], field: charge, period: month}\n"

    def history(self, *charges: float) -> Events:
        """Monthly charges from January, after a December 2025 the history began in."""
        events = [usage(at("2025-12-20"), kind="data", charge=charges[0] / 3)]
        events += [
            usage(at(f"2026-{m + 1:02d}-15"), kind="data", charge=c) for m, c in enumerate(charges)
        ]
        return [*events, usage(at(f"2026-{len(charges) + 1:02d}-02"), kind="data")]

    def test_ratio_to_own_past(self) -> None:
        body = (
            "    on: [usage]\n    evaluate: monthly\n"
            "    condition: {baseline: spend, windows: 3, gte: 1.5}\n"
        )
        text = one_rule(body, self.SERIES)
        assert fired(text, self.history(100, 100, 100, 150)) == 1
        assert fired(text, self.history(100, 100, 100, 149)) == 0

    def test_one_window_of_baseline_needs_the_one_after_the_history_began(self) -> None:
        """`windows: 1` (re-check): the month before is the baseline only when it is not
        the month the history began in; then it compares as any other."""
        body = (
            "    on: [usage]\n    evaluate: monthly\n"
            "    condition: {baseline: spend, windows: 1, gte: 1.5}\n"
        )
        text = one_rule(body, self.SERIES)
        # December 2025 (begun on the 20th), January 100, February 150.
        assert fired(text, self.history(100, 150)) == 1
        assert fired(text, self.history(100, 149)) == 0
        # January alone against the 20th-31st of December: no baseline.
        assert fired(text, self.history(300)) == 0

    def test_change_measure_and_minimum_baseline(self) -> None:
        body = (
            "    on: [usage]\n    evaluate: monthly\n"
            "    condition: {baseline: spend, windows: 2, min_baseline: 50,"
            " measure: change, lte: -0.5}\n"
        )
        text = one_rule(body, self.SERIES)
        assert fired(text, self.history(100, 100, 50)) == 1
        assert fired(text, self.history(100, 100, 51)) == 0
        assert fired(text, self.history(40, 40, 0)) == 0  # baseline under min_baseline

    def test_an_average_is_over_the_windows_that_had_events(self) -> None:
        # "More than 3 times the usual top-up": top-ups of 50 on the 1st and 60 on the
        # 4th. Summed per day, the quiet 2nd and 3rd count 0 and the usual *daily* top-up
        # is 16.67 (it fires); averaged, they have no value and the usual top-up is 50
        # (it does not). `avg` counted them as 0 too (analyst review).
        series = "  topup_day: {on: [topup], field: amount, period: day}\n"

        def rule(agg: str) -> str:
            return one_rule(
                "    on: [topup]\n"
                f"    condition: {{baseline: topup_day, windows: 3, agg: {agg}, gt: 3}}\n",
                series,
            )

        def topup(day: str, amount: int) -> tuple[EventType, dict[str, object]]:
            return ev(EventType.TOPUP, at(day), amount=amount, channel="app")

        # The 31st is the day the history began in: no usual day for a sum.
        topups = [topup("2026-10-31", 50), topup("2026-11-01", 50), topup("2026-11-04", 60)]
        assert fired(rule("sum"), topups) == 1
        assert fired(rule("avg"), topups) == 0
        assert fired(rule("avg"), [*topups[:2], topup("2026-11-04", 151)]) == 1
        assert fired(rule("max"), [*topups[:2], topup("2026-11-04", 151)]) == 1
        # No event in any earlier window: no usual amount to compare with.
        assert fired(rule("avg"), [topup("2026-11-01", 50), topup("2026-11-08", 500)]) == 0


class TestThresholdsAndOverrides:
    def test_a_prefix_param_is_its_prefixes_per_region(self) -> None:
        """`prefix: $ranges` was taken as the text "$ranges", which no number starts with:
        the rule loaded, its overrides too, and never fired. It holds a comma-separated
        list, as `in: $x` does."""
        text = one_rule(
            "    on: [usage]\n"
            "    condition: {field: counterparty, prefix: $ranges}\n"
            '    params: {ranges: "010, 021"}\n'
            '    overrides:\n      - region: NJ\n        params: {ranges: "025"}\n'
        )

        def call(counterparty: str, region: str) -> tuple[EventType, dict[str, object]]:
            return usage(at("2026-11-02"), kind="voice", counterparty=counterparty, region=region)

        assert fired(text, [call("01012345", "BJ")]) == 1
        assert fired(text, [call("02112345", "SH")]) == 1
        assert fired(text, [call("02512345", "BJ")]) == 0
        assert fired(text, [call("02512345", "NJ")]) == 1
        assert fired(text, [call("01012345", "NJ")]) == 0

    @pytest.mark.parametrize("op", ["in", "not_in"])
    def test_a_list_param_written_with_spaces(self, op: str) -> None:
        """`hotlines: "10010, 10000"`: the space after a comma was part of the second
        value, so `in: $hotlines` missed 10000 (and `not_in:` let it through)."""
        text = one_rule(
            f"    on: [usage]\n    condition: {{field: counterparty, {op}: $hotlines}}\n"
            '    params: {hotlines: "10010, 10000"}\n'
        )
        calls = [usage(at("2026-11-02"), kind="voice", counterparty=n) for n in ("10000", "95555")]
        assert fired(text, calls[:1]) == (op == "in")
        assert fired(text, calls[1:]) == (op == "not_in")

    @pytest.mark.parametrize(
        ("condition", "value", "fires"),
        [
            ("{field: quantity, in: $p}", {"quantity": 0}, True),
            ("{field: quantity, not_in: $p}", {"quantity": 0}, False),
            ("{field: counterparty, prefix: $p}", {"counterparty": "01012345"}, True),
        ],
    )
    def test_a_list_param_of_zero_holds_zero(
        self, condition: str, value: dict[str, object], fires: bool
    ) -> None:
        """`p: 0` (a number, as YAML reads it) held no value for `in:`, `not_in:` and
        `prefix:`: `in: $p` matched nothing, `not_in: $p` let 0 through, and `prefix: $p`
        ("numbers beginning with 0", a landline) never fired; `in: [0]` and `prefix: 0`
        written in the condition did."""
        text = one_rule(f"    on: [usage]\n    condition: {condition}\n    params: {{p: 0}}\n")
        call = usage(at("2026-11-02"), kind="voice", **value)
        assert fired(text, [call]) == int(fires)

    def test_a_prefix_param_not_declared_is_refused(self) -> None:
        from rules.exceptions import RulesError

        text = one_rule("    on: [usage]\n    condition: {field: counterparty, prefix: $ranges}\n")
        with pytest.raises(RulesError) as refused:
            rules_from(text)
        assert [p.message for p in refused.value.problems] == [
            "unknown param '$ranges'; declare it under params: (known: none)"
        ]

    def test_a_rule_remembers_the_params_of_a_bounded_number_of_regions(self) -> None:
        """Each (region, tier) seen was remembered for the worker's life: a producer writing
        a cell id as the region grew every rule by one entry per cell."""
        from rules.rule import MAX_PARAM_SETS

        (rule,) = rules_from(one_rule(self.BODY)).rules
        for n in range(MAX_PARAM_SETS + 10):
            assert rule.params_for(f"cell{n}", None)["threshold"] == 10
        assert len(rule._cache) <= MAX_PARAM_SETS
        assert rule.params_for("nj", None)["threshold"] == 20  # as before, once cleared

    MONTHLY_BY_CITY = (
        "    on: [usage]\n    evaluate: monthly\n"
        "    condition: {baseline: spend, windows: 3, lte: $ratio}\n"
        "    params: {ratio: 0.5}\n"
        "    overrides:\n      - region: SH\n        params: {ratio: 0.7}\n"
    )
    """A monthly fall to half (0.7 of it in SH): close-time rules by the subscriber's city."""
    BODY = (
        "    on: [topup, usage]\n"
        "    condition: {field: balance_after, lt: $threshold}\n"
        "    params: {threshold: 10}\n"
        "    overrides:\n"
        "      - region: [NJ, SZ]\n"
        "        params: {threshold: 20}\n"
        "      - tier: diamond\n"
        "        params: {threshold: 50}\n"
    )

    @pytest.mark.parametrize(
        ("region", "tier", "balance", "fires"),
        [
            (None, None, 9, True),
            (None, None, 15, False),
            ("NJ", None, 15, True),
            ("SH", None, 15, False),
            ("SZ", "diamond", 45, True),
            (None, "diamond", 55, False),
            ("nj", None, 15, True),  # whatever the case: nj in events or NJ in the file
            (None, "Diamond", 45, True),
        ],
    )
    def test_threshold_per_region_and_tier(
        self, region: str | None, tier: str | None, balance: float, fires: bool
    ) -> None:
        events = []
        if tier:
            events.append(ev(EventType.PROFILE, at("2026-11-02", "09:00"), tier=tier))
        extra = {"region": region} if region else {}
        events.append(usage(at("2026-11-02"), kind="data", balance_after=balance, **extra))
        assert fired(one_rule(self.BODY), events) == int(fires)

    @pytest.mark.parametrize(("written", "regions"), [("10", ["10"]), ("[10, 025]", ["10", "025"])])
    def test_a_region_of_digits_is_the_text_written(self, written: str, regions: list[str]) -> None:
        """`region: 10` is the region "10", as the dispatch policy's `capacity: {10: ...}`
        is (and `025` "025", digits with a leading zero being text): it was refused
        "Input should be a valid string" and no more."""
        text = one_rule(self.BODY.replace("[NJ, SZ]", written))
        for region in [*regions, "010"]:
            events = [usage(at("2026-11-02"), kind="data", balance_after=15, region=region)]
            assert fired(text, events) == int(region in regions)

    def test_a_close_time_rule_takes_the_city_its_events_name(self) -> None:
        """A monthly rule has no event: the city is the profile's, else the one the
        subscriber's events named. A CRM feed without `region` left every SH customer
        on the default threshold, and their task with no region (analyst review)."""
        text = one_rule(self.MONTHLY_BY_CITY, TestBaseline.SERIES)

        def history(region: str) -> Events:
            months = [(7, 30), (8, 100), (9, 100), (10, 100), (11, 60), (12, 1)]
            return [
                usage(at(f"2026-{m:02d}-10"), kind="data", charge=c, region=region)
                for m, c in months
            ]

        (task,) = run(rules_from(text), history("SH")).tasks
        assert task.region == "SH"
        assert task.moment.params["spend_ratio_lte"] == 0.7
        assert fired(text, history("NJ")) == 0  # 0.6 is no fall to half
        crm = ev(EventType.PROFILE, at("2026-08-01"), region="NJ")
        assert fired(text, [crm, *history("SH")]) == 0  # the profile's city comes first

    def test_the_record_keeps_the_events_region_only_while_the_profile_names_none(
        self,
    ) -> None:
        """The profile's region comes first, so the events' copy of it was never read: it
        cost every record ~9 of its 512 bytes (a simulated week: all 5,000)."""
        text = one_rule("    on: [usage]\n    when: {kind: data}\n")
        crm = ev(EventType.PROFILE, at("2026-08-01"), region="SH")
        used = usage(at("2026-08-02"), kind="data", region="SH")
        result = run(rules_from(text), [crm, used])
        state = result.store.load(SUB)
        assert state is not None
        assert (state.profile["region"], state.region) == ("SH", "")
        alone = run(rules_from(text), [used]).store.load(SUB)
        assert alone is not None
        assert alone.region == "SH"

    def test_a_close_time_rule_takes_the_city_of_the_latest_event(self) -> None:
        """The region changes between events (re-check): the month's close takes the
        city the latest event named, the task carries it."""
        text = one_rule(self.MONTHLY_BY_CITY, TestBaseline.SERIES)
        months = [(7, 30, "NJ"), (8, 100, "NJ"), (9, 100, "NJ"), (10, 100, "NJ"), (11, 60, "SH")]
        events = [
            usage(at(f"2026-{m:02d}-10"), kind="data", charge=c, region=r) for m, c, r in months
        ]
        (task,) = run(rules_from(text), [*events, usage(at("2026-12-01"), kind="data")]).tasks
        assert (task.region, task.moment.params["spend_ratio_lte"]) == ("SH", 0.7)
        back = usage(at("2026-11-30"), kind="data", region="NJ")
        assert fired(text, [*events, back, usage(at("2026-12-01"), kind="data")]) == 0

    def test_a_padded_or_blank_region_is_the_city_or_none(self) -> None:
        """CRM exports pad CHAR columns: the profile's `"SH  "` is SH, and a blank one
        (`"    "`, U+3000) names no city, so the events' city applies. Kept as sent,
        "SH  " matched no override, and a blank region stood first and hid the city the
        events named: the SH threshold never applied (re-check of the region fallback)."""
        text = one_rule(self.MONTHLY_BY_CITY, TestBaseline.SERIES)
        months = [(7, 30), (8, 100), (9, 100), (10, 100), (11, 60), (12, 1)]

        def history(region: str | None, *crm: str) -> Events:
            named = {"region": region} if region else {}
            profiles = [ev(EventType.PROFILE, at("2026-07-01"), region=r) for r in crm]
            return profiles + [
                usage(at(f"2026-{m:02d}-10"), kind="data", charge=c, **named) for m, c in months
            ]

        (task,) = run(rules_from(text), history(None, "SH  ")).tasks
        assert task.region == "SH"
        assert task.moment.params["spend_ratio_lte"] == 0.7
        for crm in (("    ",), ("\u3000",), ("NJ", " ")):  # blank: none, or cleared
            (task,) = run(rules_from(text), history("SH", *crm)).tasks
            assert task.region == "SH", crm
        assert fired(text, history(" SH ")) == 1


class TestNotOverWhatIsNotJudged:
    """Under `not:`, a first_time or changed test that judged nothing (no value on the
    event, a record read late, the first value seen) counted false, so the `not:` held:
    "the same handset" fired on every record naming no IMEI and on the first."""

    @staticmethod
    def hours(condition: str, events: Events) -> list[int]:
        text = one_rule(f"    on: [usage]\n    condition: {condition}\n")
        return [t.triggered_at.hour for t in run(rules_from(text), events).tasks]

    def test_not_changed_is_the_same_value_seen_before(self) -> None:
        events = [
            usage(at("2026-11-02", "10:00"), kind="data"),  # no IMEI
            usage(at("2026-11-02", "11:00"), kind="data", imei="35209900176148"),  # first
            usage(at("2026-11-02", "12:00"), kind="data", imei="35209900176148"),  # same
            usage(at("2026-11-02", "13:00"), kind="data", imei="35209900176149"),  # new
            usage(at("2026-11-02", "12:30"), kind="data", imei="35209900176149"),  # late
        ]
        assert self.hours("{not: {changed: imei}}", events) == [12]
        assert self.hours("{changed: imei}", events) == [13]

    def test_not_first_time_is_a_value_seen_before(self) -> None:
        events = [
            usage(at("2026-11-02", "10:00"), kind="data"),  # no service_code
            usage(at("2026-11-02", "11:00"), kind="data", service_code="5g"),
            usage(at("2026-11-02", "12:00"), kind="data", service_code="5g"),
        ]
        assert self.hours("{not: {first_time: service_code}}", events) == [12]


class TestAbsenceAndPeriods:
    def test_absence_fires_once_per_silence(self) -> None:
        body = "    on: [usage]\n    evaluate: daily\n    condition: {absence: 3d}\n"
        text = one_rule(body, description="quiet {silent_days} days")
        events = [usage(at("2026-11-02", "10:00"), kind="data")]
        result = run(rules_from(text), events, until=at("2026-11-09"))
        assert types(result.tasks) == ["hit"]
        assert result.tasks[0].moment.description.startswith("quiet 3.")
        # Active again, then silent again: a new silence, a new task.
        more = run(
            rules_from(text),
            [usage(at("2026-11-10"), kind="data")],
            until=at("2026-11-20"),
            result=result,
        )
        assert len(more.tasks) == 2

    def test_absence_of_a_subscriber_never_seen_on_its_sources_is_no_moment(self) -> None:
        """Seen only on the profile topic: nothing has stopped, every daily close says so."""
        body = "    on: [usage]\n    evaluate: daily\n    condition: {absence: 3d}\n"
        events = [ev(EventType.PROFILE, at("2026-11-02", "10:00"), tier="gold")]
        result = run(rules_from(one_rule(body)), events, until=at("2026-11-20"))
        assert result.tasks == []

    def test_not_absence_of_a_subscriber_never_seen_is_no_moment_either(self) -> None:
        """`not: {absence: 7d}` ("used in the last 7 days") held for a subscriber seen only
        on the profile topic: the absence, not judged, counted false and the `not:` made
        it true at every daily close. A subscriber who used it is judged as before."""
        body = "    on: [usage]\n    evaluate: daily\n    condition: {not: {absence: 7d}}\n"
        text = one_rule(body)
        events = [ev(EventType.PROFILE, at("2026-11-02", "10:00"), tier="gold")]
        assert run(rules_from(text), events, until=at("2026-11-05")).tasks == []
        used = [usage(at("2026-11-02", "10:00"), kind="data")]
        assert len(run(rules_from(text), used, until=at("2026-11-05")).tasks) == 3

    def test_a_close_rule_fires_once_per_window(self) -> None:
        series = "  calls: {on: [usage], when: {kind: voice}, period: day}\n"
        body = "    on: [usage]\n    evaluate: daily\n    condition: {series: calls, gte: 2}\n"
        text = one_rule(body, series)
        events = [usage(at("2026-11-02", f"1{i}:00"), kind="voice") for i in range(4)]
        # No task during the day: the rule waits for the day to close.
        assert fired(text, events) == 0
        assert fired(text, events, until=at("2026-11-03", "01:00")) == 1


class TestCooldownAndTemplates:
    def test_cooldown_in_event_time(self) -> None:
        text = one_rule("    on: [usage]\n    condition: {field: kind, eq: data}\n").replace(
            "ttl: 30d", "ttl: 30d\n      cooldown: 2d"
        )
        events = [
            usage(at(day), kind="data")
            for day in ("2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05")
        ]
        assert fired(text, events) == 2

    def test_a_moment_read_after_a_later_one_is_held_by_its_cooldown(self) -> None:
        """Feeds are read side by side: a moment dated 10:00 read after one dated 10:30 (within
        the lateness) is as close to that contact as a moment after it. It was not held
        (only later moments were), made a second contact within the cooldown, and moved
        the mark back to 10:00, shortening the hold of the 10:30 task."""
        text = one_rule("    on: [usage]\n    condition: {field: kind, eq: data}\n").replace(
            "ttl: 30d", "ttl: 30d\n      cooldown: 2d"
        )
        events = [
            usage(at("2026-11-02", "10:30"), kind="data"),
            usage(at("2026-11-02", "10:00"), kind="data"),  # read late
            usage(at("2026-11-04", "10:15"), kind="data"),  # 2 days after 10:00, not 10:30
            usage(at("2026-11-04", "10:45"), kind="data"),
        ]
        made = run(rules_from(text), events).tasks
        assert [t.triggered_at.strftime("%d %H:%M") for t in made] == ["02 10:30", "04 10:45"]

    def test_description_is_filled_from_the_values_only(self) -> None:
        text = one_rule(
            "    on: [usage]\n    condition: {field: charge, gt: 1}\n",
            description="charge {charge} over {charge_gt}",
        )
        (task,) = run(rules_from(text), [usage(at("2026-11-02"), kind="data", charge=3)]).tasks
        assert task.moment.description == "charge 3 over 1"  # a whole number without .0

    def test_number_formats_in_a_description(self) -> None:
        """`{name:spec}` formats a number (analysts asked for money with two decimals,
        thousands separators and percentages); a bare `{name}` shows it as before."""
        text = one_rule(
            "    on: [usage]\n    when: {balance_after: {gte: 0}, quantity: {gte: 0}}\n"
            "    condition: {field: charge, gt: 1}\n",
            description="{charge:,.2f} over {charge_gt:.1f}, balance {balance_after:,.0f} "
            "({balance_after}), {quantity:+.0%} {charge}",
        )
        event = usage(
            at("2026-11-02"), kind="data", charge=1234.5, balance_after=12345.67, quantity=0.25
        )
        (task,) = run(rules_from(text), [event]).tasks
        assert (
            task.moment.description == "1,234.50 over 1.0, balance 12,346 (12345.67), +25% 1234.5"
        )


class TestContractExpiryLeads:
    """A contract-expiry rule may give its own `lead_days` (an SMS 30 days ahead, a
    manager's call 7 days ahead); the catalog's `special_days.lead_days` stays the default."""

    @staticmethod
    def rules(lead: str, call_lead: str = "lead_days: 7") -> str:
        return (
            NO_GATES
            + f"special_days: {{{lead}}}\n"
            + "rules:\n"
            + "".join(
                f"""
  - id: {rule_id}
    description: The contract ends soon
    on: [profile]
    evaluate: special_day
    condition: {{occasion: contract_expiry{(", " + own) if own else ""}}}
    task: {{family: special_day, type: renewal, channel: {channel}, priority: 2,
           action: renewal_offer, ttl: 7d, description: "{{days_left}} days left"}}
"""
                for rule_id, channel, own in (
                    ("renewal_sms", "sms", ""),
                    ("renewal_call", "manager", call_lead),
                )
            )
        )

    @staticmethod
    def tasks(text: str, known: str = "2026-11-01") -> dict[str, list[tuple[str, str]]]:
        profile = ev(EventType.PROFILE, at(known, "10:00"), contract_end="2026-12-20")
        result = run(rules_from(text), [profile], until=at("2026-12-21"))
        found: dict[str, list[tuple[str, str]]] = {}
        for task in result.tasks:
            day = task.triggered_at.date().isoformat()
            found.setdefault(task.moment.rule_id, []).append((day, task.task_id))
        return found

    def test_each_rule_is_due_at_its_own_lead(self) -> None:
        found = self.tasks(self.rules("lead_days: 30"))
        assert [day for day, _ in found["renewal_sms"]] == ["2026-11-20"]  # the catalog's 30
        assert [day for day, _ in found["renewal_call"]] == ["2026-12-13"]  # its own 7
        assert found["renewal_sms"][0][1] != found["renewal_call"][0][1]
        assert found == self.tasks(self.rules("lead_days: 30"))  # the same ids again

    def test_a_rule_may_look_further_ahead_than_the_catalog(self) -> None:
        found = self.tasks(self.rules("lead_days: 7", call_lead="lead_days: 40"))
        assert [day for day, _ in found["renewal_sms"]] == ["2026-12-13"]
        assert [day for day, _ in found["renewal_call"]] == ["2026-11-10"]
        no_section = self.rules("", call_lead="lead_days: 45").replace("special_days: {}\n", "")
        found = self.tasks(no_section)  # the default 30 days, and the rule's 45
        assert [day for day, _ in found["renewal_sms"]] == ["2026-11-20"]
        assert [day for day, _ in found["renewal_call"]] == ["2026-11-05"]

    def test_a_contract_learned_late_is_caught_up_by_each_rule(self) -> None:
        found = self.tasks(self.rules("lead_days: 30"), known="2026-12-18")
        assert [day for day, _ in found["renewal_sms"]] == ["2026-12-18"]
        assert [day for day, _ in found["renewal_call"]] == ["2026-12-18"]

    def test_without_a_lead_of_its_own_a_rule_keeps_the_catalogs(self) -> None:
        found = self.tasks(self.rules("lead_days: 30", call_lead=""))
        assert [day for day, _ in found["renewal_call"]] == ["2026-11-20"]
