"""A manager's mistakes in a dispatch policy file: each error names the file, the line,
what is wrong and what to write (policy walk: the messages named a field path only,
and pydantic's words, 'unable to parse string as an integer', named no fix)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from moments.exceptions import ConfigError
from sinks.policy import load_policy

POLICY = """\
timezone: Asia/Shanghai
capacity:
  NJ: {manager: 40, outbound_call: 200}
  SZ: {manager: forty, outbound_call: 150}
  WX: {managers: 10}
reserved_share: -0.2
overflow:
hours:
  outbound_call: 09:00-21:00
"""


def _refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    return str(err.value)


@pytest.mark.parametrize(
    ("where", "says"),
    [
        (":4:17: capacity.SZ.manager: ", "'forty' is not a count: write a whole number"),
        (":5:8: capacity.WX.managers: ", "'managers' is not a channel; did you mean 'manager'?"),
        (":6:17: reserved_share: ", "-0.2 is too small: write a number >= 0"),
        (":7:1: overflow: ", "empty: write its entries under it, or remove the line"),
    ],
)
def test_each_mistake_names_its_line_and_the_fix(tmp_path: Path, where: str, says: str) -> None:
    said = _refused(tmp_path, POLICY)
    assert f"{tmp_path / 'policy.yaml'}{where}{says}" in said


def test_a_channel_that_is_not_one_lists_those_there_are(tmp_path: Path) -> None:
    said = _refused(tmp_path, "capacity: {NJ: {fax: 3}}\n")
    assert "'fax' is not a channel: write one of sms, outbound_call, manager, app_push" in said


def test_a_fraction_of_a_task_is_not_a_count(tmp_path: Path) -> None:
    said = _refused(tmp_path, "capacity:\n  NJ: {manager: 1.5}\n")
    assert ":2:17: capacity.NJ.manager: 1.5 is not a count: write a whole number" in said


def test_an_hour_past_the_day_is_not_a_time(tmp_path: Path) -> None:
    said = _refused(tmp_path, 'next_day_at: "25:00"\n')
    assert ":1:14: next_day_at: '25:00' is not a time of day: write HH:MM, e.g. \"09:00\"" in said


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "capacity:\n  010: {manager: forty}\n",
            ":2:18: capacity.010.manager: 'forty' is not a count: write a whole number",
        ),
        (
            "capacity:\n  true: {manager: 4}\n",
            ":2:3: capacity.true: true is read as yes or no, not a name: write it in quotes, "
            '"true"',
        ),
    ],
)
def test_a_region_key_is_refused_as_written_and_told_the_fix(
    tmp_path: Path, text: str, says: str
) -> None:
    """A region of digits is read as written (`010`), its errors named so; a key YAML reads
    as yes or no is told to quote it: both said "Input should be a valid string" alone,
    the first as capacity.10."""
    assert says in _refused(tmp_path, text)


@pytest.mark.parametrize("written", ["0900", "900", "32400", "9.5"])
def test_a_time_of_day_written_as_a_number_is_refused(tmp_path: Path, written: str) -> None:
    """Read as seconds after midnight UTC, `next_day_at: 0900` (or 900) loaded as 00:15:
    tasks deferred to the next day went out a quarter past midnight, without a word."""
    said = _refused(tmp_path, f"next_day_at: {written}\n")
    assert f":1:14: next_day_at: '{written}' is not a time of day: write HH:MM" in said


@pytest.mark.parametrize(
    ("text", "written", "zone"),
    [
        ('next_day_at: "09:00+08:00"\n', "09:00+08:00", "Asia/Shanghai"),
        ('timezone: UTC\nnext_day_at: "09:00+08:00"\n', "09:00+08:00", "UTC"),
        ('timezone: UTC\nnext_day_at: "09:00Z"\n', "09:00Z", "UTC"),
        ("next_day_at: 9:00 Asia/Shanghai\n", "9:00 Asia/Shanghai", "Asia/Shanghai"),
    ],
)
def test_a_time_of_day_with_an_offset_or_zone_is_refused(
    tmp_path: Path, text: str, written: str, zone: str
) -> None:
    """`next_day_at` is local time in the policy's timezone: `"09:00+08:00"` loaded, the
    offset dropped without a word (under a UTC policy it released at 09:00 UTC), and a
    zone's name was told only to write HH:MM."""
    said = _refused(tmp_path, text)
    line = text.count("\n")
    assert (
        f":{line}:14: next_day_at: '{written}' names an offset or zone, which is not used: "
        f'next_day_at is local time in the policy\'s timezone ({zone}): write "09:00", '
        "and set timezone: if another zone was meant"
    ) in said


class TestNamesOfRulesRegionsAndChannels:
    """`overflow:` and `relevance:` keys naming no rule loaded without a word (the rule got
    the default overflow, or no relevance check); `SMS` was told the list of channels, not
    the one meant."""

    TEXT = """\
capacity:
  nj: {manager: 1}
overflow:
  low_balanse: {policy: drop}
  "*": {policy: defer}
relevance:
  lowbalance: topped_up
  first_topup: came_home
"""

    def test_explain_with_the_policy_refuses_a_key_no_rule_has(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from moments.cli import main

        path = tmp_path / "policy.yaml"
        path.write_text(self.TEXT)
        assert main(["rules", "explain", "--policy", str(path), "low_balance"]) != 0
        said = capsys.readouterr().err
        assert (
            f"{path}:4:3: overflow.low_balanse: no rule id 'low_balanse' in the rules; did you "
            "mean 'low_balance'? write a rule id (bill_drop, " in said
        )
        assert 'spend_and_call_time_drop), or "*" for every other rule' in said
        assert (
            f"{path}:7:3: relevance.lowbalance: no rule id or moment type 'lowbalance' in the "
            "rules; did you mean 'low_balance'?" in said
        )
        assert "relevance.first_topup" not in said  # a moment type (of first_topup_channel)
        assert "overflow.*" not in said
        path.write_text(self.TEXT.replace("low_balanse", "low_balance").replace("lowb", "low_b"))
        assert main(["rules", "explain", "--policy", str(path), "low_balance"]) == 0

    def test_the_check_is_of_what_the_file_writes(self, tmp_path: Path) -> None:
        """The default relevance checks name the packaged catalog's rules: a catalog of
        other rules with a file that writes no `relevance:` is fine."""
        from sinks.policy import check_rule_ids

        path = tmp_path / "policy.yaml"
        path.write_text("capacity: {'*': {sms: 5}}\n")
        check_rule_ids(path, load_policy(path), ["my_rule"], ["my_type"])
        path.write_text("relevance: {my_type: topped_up}\noverflow: {my_rule: {policy: drop}}\n")
        check_rule_ids(path, load_policy(path), ["my_rule"], ["my_type"])
        path.write_text("relevance: {my_typo: topped_up}\n")
        typo = load_policy(path)
        with pytest.raises(ConfigError, match=r"policy.yaml:1:13: relevance.my_typo: "):
            check_rule_ids(path, typo, ["my_rule"], ["my_type"])

    def test_a_channel_in_capitals_is_told_the_one_meant(self, tmp_path: Path) -> None:
        said = _refused(tmp_path, "capacity:\n  '*': {SMS: 5}\n")
        assert (
            "policy.yaml:2:9: capacity.*.SMS: 'SMS' is not a channel; did you mean 'sms'?" in said
        )


def test_a_yaml_syntax_error_is_placed_at_its_line_with_the_fix(tmp_path: Path) -> None:
    # A value left on its key's line above an indented map: it was ruamel's parser dump,
    # '<unicode string>' and '(line: 1)' included, and told to "write it as UTF-8 YAML".
    said = _refused(tmp_path, "timezone: Asia/Shanghai\ncapacity: 3\n  NJ: {manager: 4}\n")
    first = said.splitlines()[0]
    assert first.startswith(f"invalid dispatch policy: {tmp_path / 'policy.yaml'}:3:")
    assert "YAML syntax: mapping values are not allowed here" in first
    assert "<unicode string>" not in said
    assert "UTF-8" not in said


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("outcomes: true\n", ":1:11: outcomes: ", "true is not a mapping: write its settings"),
        ("merge: 0\n", ":1:8: merge: ", "0 is not a mapping: write its settings"),
        ("capacity:\n  NJ: 5\n", ":2:7: capacity.NJ: ", "5 is not a mapping: write its settings"),
    ],
)
def test_a_value_where_a_mapping_belongs_says_what_to_write(
    tmp_path: Path, text: str, where: str, says: str
) -> None:
    said = _refused(tmp_path, text)
    assert f"{tmp_path / 'policy.yaml'}{where}{says}" in said
    assert "instance of" not in said
    assert "valid dictionary" not in said


@pytest.mark.parametrize(
    ("text", "shown"),
    [("- NJ\n- SZ\n", "['NJ', 'SZ']"), ("Asia/Shanghai\n", "'Asia/Shanghai'"), ("true\n", "true")],
)
def test_a_policy_that_is_no_mapping_says_so_of_the_file(
    tmp_path: Path, text: str, shown: str
) -> None:
    """A whole file of a list or a word was told ': ... is not a mapping: write its
    settings under it, one `name: value` a line indented below': an empty field name, and
    'under it' of a file, which is under nothing."""
    said = _refused(tmp_path, text)
    assert f"{tmp_path / 'policy.yaml'}:1:1: the dispatch policy is {shown}" in said
    assert "not a mapping: write its settings as `name: value` lines" in said
    assert ": : " not in said
    assert "indented below" not in said


def test_a_section_left_empty_is_told_so_as_any_other(tmp_path: Path) -> None:
    """`outcomes:` with nothing under it was 'null is not a mapping', where an empty
    `overflow:` is told it is empty and that the line can go for the default."""
    said = _refused(tmp_path, "outcomes:\n")
    assert "outcomes: empty: write its entries under it, or remove the line" in said
    assert "null" not in said


def test_an_anchor_defined_again_is_one_warning_at_its_line_not_a_library_dump(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A policy whose anchor was defined twice loaded, with ruamel's `ReusedAnchorWarning`
    on stderr at every start: `<unicode string>`, its own source line, as rules files
    had before they said it as a lint warning."""
    path = tmp_path / "policy.yaml"
    path.write_text("timezone: &z Asia/Shanghai\ncapacity:\n  NJ: &z {manager: 4}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the loader fails the test
        with caplog.at_level(logging.WARNING):
            policy = load_policy(path)
    assert policy.timezone == "Asia/Shanghai"
    said = [r.getMessage() for r in caplog.records if "anchor" in r.getMessage()]
    assert said == [
        f"dispatch policy: {path}:3:7: anchor &z is defined again (first at line 1): an "
        "alias *z after this line stands for this one, before it for the first; give each "
        "anchor its own name"
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "capcity:\n  NJ: {manager: 3}\n",
            ":1:1: capcity: no such setting; did you mean 'capacity'?",
        ),
        ("merge: {windw: 30m}\n", ":1:16: merge.windw: no such setting; did you mean 'window'?"),
        ("contact: {maxx: 3}\n", ":1:17: contact.maxx: no such setting; known: max_contacts, "),
        (
            "overflow: {big_topup: {polcy: drop}}\n",
            ":1:31: overflow.big_topup.polcy: no such setting; did you mean 'policy'?",
        ),
    ],
)
def test_a_setting_that_is_none_names_the_one_meant(tmp_path: Path, text: str, says: str) -> None:
    """`capcity:` was told "Extra inputs are not permitted" (policy walk): the key meant,
    or those the mapping takes, as a rules file's unknown key is told."""
    said = _refused(tmp_path, text)
    assert f"{tmp_path / 'policy.yaml'}{says}" in said, said
    assert "Extra inputs" not in said
