"""A rule comparing a field with a value no event (or profile) can carry is refused at
its line, with the fix the event's own dead letter names.

The events are held to the contract by the models' validators: a roaming `country` is an
ISO 3166 code of tzdata's list (a record saying `UK` is a dead letter: GB), a `timezone`
one of tzdata's zones, an amount above 0, a severity 1 to 3. A rules file saying
`country: UK`, `in: [UK, FR]`, `timezone: Asia/Peking` or `amount: {lt: 0}` loaded
without a word and the test never held (nor, for `ne`/`not_in`, ever failed). The same
validators judge the rules' values now (`rules.contract.Carried`): no second list.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.reload import Reloader
from moments.zones import tzdata_zones
from rules.catalog import RuleSet, load_texts
from rules.exceptions import RulesError

TASK = """\
    task: {family: anomaly, type: t, channel: sms, priority: 2, action: a, ttl: 24h,
           description: d}
"""


def rule(body: str) -> str:
    return "rules:\n  - id: r1\n    description: d\n" + body + TASK


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as err:
        load_texts([("r.yaml", text)])
    return [str(p) for p in err.value.problems]


def loads(text: str) -> int:
    return len(load_texts([("r.yaml", text)]))


GB = "UK is not an ISO 3166-1 alpha-2 code (it is the EU's): write GB"


class TestCountry:
    def test_uk_in_when_is_refused_naming_gb(self) -> None:
        (found,) = problems(rule("    on: [roaming]\n    when: {country: UK}\n"))
        assert found == f"r.yaml:5:12: country of roaming events is never 'UK': {GB}"

    def test_each_code_of_a_list_in_a_condition_is_refused_at_its_place(self) -> None:
        body = "    on: [roaming]\n    condition: {field: country, in: [UK, FR, EL]}\n"
        found = problems(rule(body))
        assert found == [
            f"r.yaml:5:38: country of roaming events is never 'UK': {GB}",
            "r.yaml:5:46: country of roaming events is never 'EL': EL is not an ISO 3166-1 "
            "alpha-2 code (it is the EU's): write GR",
        ]

    def test_a_code_in_lower_case_is_told_its_capitals(self) -> None:
        (found,) = problems(rule("    on: [roaming]\n    when: {country: {ne: jp}}\n"))
        assert found.endswith(
            "country of roaming events is never 'jp': write the ISO 3166-1 alpha-2 code in "
            "capitals: JP"
        )

    def test_a_made_up_code_is_refused(self) -> None:
        (found,) = problems(rule("    on: [roaming]\n    when: {country: [ZZ]}\n"))
        assert "never 'ZZ': ZZ is not an ISO 3166-1 alpha-2 country code" in found

    def test_a_param_holding_uk_is_refused_where_it_is_given(self) -> None:
        body = (
            "    on: [roaming]\n    condition: {field: country, in: $c}\n"
            "    params: {c: 'FR, UK'}\n"
        )
        (found,) = problems(rule(body))
        assert found == f"r.yaml:6:14: country of roaming events is never 'UK': {GB}"

    def test_a_prefix_no_code_starts_with_is_refused(self) -> None:
        (found,) = problems(rule("    on: [roaming]\n    when: {country: {prefix: UK}}\n"))
        assert "no country of roaming events starts with 'UK'" in found

    def test_a_series_filter_is_held_to_it_too(self) -> None:
        text = "series:\n  uk_days: {on: [roaming], when: {country: UK}, period: day}\n" + rule(
            "    on: [roaming]\n    condition: {series: uk_days, gte: 1}\n"
        )
        (found,) = problems(text)
        assert found == f"r.yaml:2:35: country of roaming events is never 'UK': {GB}"

    @pytest.mark.parametrize("codes", ["GB", "[GB, GR, FR]", "{prefix: G}", "XK"])
    def test_codes_events_carry_still_load(self, codes: str) -> None:
        assert loads(rule(f"    on: [roaming]\n    when: {{country: {codes}}}\n")) == 1


class TestTimezone:
    def test_a_zone_tzdata_lacks_is_refused_with_the_closest(self) -> None:
        body = "    on: [roaming]\n    condition: {field: timezone, eq: Europe/Lonon}\n"
        (found,) = problems(rule(body))
        assert found == (
            "r.yaml:5:34: timezone of roaming events is never 'Europe/Lonon': 'Europe/Lonon' "
            "is not an IANA time zone; did you mean 'Europe/London'?"
        )

    def test_a_profile_zone_is_held_to_tzdata_too(self) -> None:
        body = "    on: [usage]\n    condition: {profile: timezone, in: [Asia/Tokyo, UTC+8]}\n"
        (found,) = problems(rule(body))
        assert found.startswith("r.yaml:5:53: profile timezone is never 'UTC+8': ")

    def test_a_zone_tzdata_has_loads(self) -> None:
        assert loads(rule("    on: [roaming]\n    when: {timezone: Asia/Tokyo}\n")) == 1

    def test_a_prefix_no_zone_starts_with_is_refused_at_its_place(self) -> None:
        """`prefix: Europa/` loaded, and the rule never fired: the zone names are tzdata's."""
        body = "    on: [roaming]\n    condition: {field: timezone, prefix: [Asia/, Europa/]}\n"
        (found,) = problems(rule(body))
        assert found == (
            "r.yaml:5:50: no timezone of roaming events starts with 'Europa/': its values are "
            "IANA time zone names (Africa/Abidjan, Africa/Accra, Africa/Addis_Ababa, ... "
            f"{len(tzdata_zones())} in all); write a prefix of one; did you mean 'Europe/'?"
        )

    def test_a_profile_zone_prefix_and_a_when_prefix_are_held_to_it_too(self) -> None:
        body = "    on: [usage]\n    condition: {profile: timezone, prefix: asia/}\n"
        (found,) = problems(rule(body))
        assert found.startswith("r.yaml:5:36: no profile timezone starts with 'asia/'")
        assert found.endswith("did you mean 'Asia/'?")
        (found,) = problems(rule("    on: [roaming]\n    when: {timezone: {prefix: Amerika}}\n"))
        assert "r.yaml:5:23: no timezone of roaming events starts with 'Amerika'" in found

    def test_a_param_holding_a_bad_prefix_is_refused_where_it_is_given(self) -> None:
        body = (
            "    on: [roaming]\n    condition: {field: timezone, prefix: $zones}\n"
            "    params: {zones: 'Europe/, Afrika/'}\n"
        )
        (found,) = problems(rule(body))
        assert found.startswith("r.yaml:6:14: no timezone of roaming events starts with 'Afrika/'")

    @pytest.mark.parametrize("prefix", ["Europe/", "[America/Argentina/, UTC]", "Etc/GMT-", "A"])
    def test_prefixes_of_zones_still_load(self, prefix: str) -> None:
        body = f"    on: [roaming]\n    when: {{timezone: {{prefix: {prefix}}}}}\n"
        assert loads(rule(body)) == 1


class TestNumbers:
    def test_a_negative_amount_is_refused(self) -> None:
        (found,) = problems(rule("    on: [topup]\n    condition: {field: amount, eq: -5}\n"))
        assert found == (
            "r.yaml:5:32: amount of topup events is never -5: it is always at least 0.0001 "
            "in the contract: compare with a value inside that range, or remove the test"
        )

    @pytest.mark.parametrize(
        ("on", "test", "said"),
        [
            ("topup", "amount: {lt: 0}", "amount of topup events is always at least 0.0001"),
            ("topup", "amount: {lte: 0}", "amount of topup events is always at least 0.0001"),
            ("usage", "quantity: {lt: 0}", "quantity of usage events is always at least 0"),
            ("complaint", "severity: {gt: 3}", "severity of complaint events is always at most 3"),
            ("complaint", "severity: {lt: 1}", "severity of complaint events is always at least 1"),
        ],
    )
    def test_a_bound_no_value_passes_is_refused(self, on: str, test: str, said: str) -> None:
        (found,) = problems(rule(f"    on: [{on}]\n    when: {{{test}}}\n"))
        assert said in found
        assert "matches nothing: compare with a value inside that range" in found

    def test_a_profile_level_beyond_seven_is_refused(self) -> None:
        body = "    on: [usage]\n    condition: {profile: star_level, gte: 8}\n"
        (found,) = problems(rule(body))
        assert found.startswith("r.yaml:5:38: profile star_level is always at most 7")

    def test_a_utc_offset_in_hours_is_told_the_minutes(self) -> None:
        body = "    on: [roaming]\n    when: {utc_offset_minutes: 8}\n"
        (found,) = problems(rule(body))
        assert found.endswith("; minutes: 480 for UTC+8")

    def test_a_word_compared_with_a_number_is_refused(self) -> None:
        (found,) = problems(rule("    on: [usage]\n    when: {charge: {in: [5, five]}}\n"))
        assert "charge of usage events is never 'five': it holds a number" in found

    @pytest.mark.parametrize(
        ("on", "test"),
        [
            ("topup", "amount: {gte: 0}"),  # always true, but it can match
            ("topup", "amount: {lt: 0.01}"),
            ("usage", "charge: {lt: 0}"),  # a refund
            ("usage", "quantity: {lte: 0}"),
            ("complaint", "severity: {lte: 1}"),
            ("topup", "amount: '49.90'"),
            ("usage, topup", "balance_after: {lt: 0}"),
        ],
    )
    def test_values_events_carry_still_load(self, on: str, test: str) -> None:
        assert loads(rule(f"    on: [{on}]\n    when: {{{test}}}\n")) == 1


class TestText:
    def test_a_subscriber_number_written_with_a_plus_is_refused(self) -> None:
        body = "    on: [usage]\n    condition: {field: subscriber_id, eq: '+8613800138000'}\n"
        (found,) = problems(rule(body))
        assert "never '+8613800138000': write the subscriber number as 5 to 20 digits" in found

    def test_an_imei_of_too_few_digits_is_refused(self) -> None:
        (found,) = problems(rule("    on: [usage]\n    when: {imei: '12345'}\n"))
        assert "write the IMEI as 14 to 16 digits" in found

    def test_a_blank_text_is_no_value(self) -> None:
        """A blank `operator` is read as none: `eq: ""` matched nothing."""
        (found,) = problems(rule("    on: [roaming]\n    when: {operator: {eq: ''}}\n"))
        assert "a blank text is read as no value" in found

    def test_a_blank_profile_value_is_none_too(self) -> None:
        """A profile's `""` clears the field: no profile holds it."""
        body = "    on: [usage]\n    condition: {profile: manager_id, eq: ''}\n"
        (found,) = problems(rule(body))
        assert found.endswith(
            "profile manager_id is never '': a blank text is read as no value, never as one "
            "(to test for none: not: {profile: manager_id})"
        )

    @pytest.mark.parametrize(
        "test",
        [
            "counterparty: [10010, 10000]",  # compared as text: "10010"
            "channel: bank",  # any channel of the top-up's own
            "region: {in: [nj, SH]}",
            "operator: null",
            "imei: 356938035643809",
        ],
    )
    def test_text_events_carry_still_loads(self, test: str) -> None:
        on = "topup" if "channel" in test else "roaming" if "operator" in test else "usage"
        assert loads(rule(f"    on: [{on}]\n    when: {{{test}}}\n")) == 1


class TestProfileLists:
    """`opt_out` and `quiet_hours` hold lists, compared as a whole with the rule's value:
    `in: [app_push]` matched no subscriber, one who opted out of app push included, and
    `ne:` every one."""

    @pytest.mark.parametrize(
        ("test", "held"),
        [
            ("{profile: opt_out, in: [app_push]}", "in: matches no subscriber"),
            ("{profile: opt_out, eq: sms}", "eq: matches no subscriber"),
            ("{profile: quiet_hours, ne: '22:00-08:00'}", "ne: matches every subscriber"),
        ],
    )
    def test_a_comparison_is_refused(self, test: str, held: str) -> None:
        (found,) = problems(rule(f"    on: [usage]\n    condition: {test}\n"))
        assert held in found
        assert "whatever the list holds; test only whether it is set" in found

    def test_whether_it_is_set_still_loads(self) -> None:
        assert loads(rule("    on: [usage]\n    condition: {profile: opt_out}\n")) == 1


def test_a_reload_so_refused_keeps_the_rules_in_force(tmp_path: Path) -> None:
    """The worker's reload refuses the file, and the rules loaded before stay."""
    path = tmp_path / "r.yaml"
    path.write_text(rule("    on: [roaming]\n    when: {country: GB}\n"))
    installed: list[RuleSet] = []
    recorded: list[tuple[str, int | None]] = []
    reloader = Reloader(path, installed.append, lambda r, n: recorded.append((r, n)))
    path.write_text(rule("    on: [roaming]\n    when: {country: UK}\n"))
    assert reloader.check() is None  # seen once: not settled yet
    assert reloader.check() == "error"
    assert installed == []
    assert recorded == [("error", None)]


def test_a_top_up_channel_in_capitals_is_told_its_lowercase() -> None:
    """A top-up's channel is taken in lowercase (`APP` is `app`): a rule testing `APP`
    would never hold."""
    (found,) = problems(rule("    on: [topup]\n    when: {channel: APP}\n"))
    assert found == (
        "r.yaml:5:12: channel of topup events is never 'APP': it is taken in lowercase: write 'app'"
    )
    assert loads(rule("    on: [topup]\n    when: {channel: app}\n")) == 1
