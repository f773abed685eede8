"""A duration written in words is refused with the one to write (analyst walk: `3
months`, `7days`, `12 hours` were told "write a number and a unit, e.g. 30m, 24h, 60d",
and `3m`, the nearest to the example, is three minutes)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rules.durations import parse_duration


@pytest.mark.parametrize(
    ("written", "write"),
    [
        ("7days", "write 7d"),
        ("7 days", "write 7d"),
        ("1 day", "write 1d"),
        ("12 hours", "write 12h"),
        ("24H", "write 24h"),
        ("30 mins", "write 30m"),
        ("2 weeks", "write 2w"),
        ("90 seconds", "write 90s"),
        ("3 months", "write 90d (a month is no unit: 30 days each)"),
        ("1 year", "write 365d (a year is no unit: 365 days each)"),
    ],
)
def test_a_duration_in_words_names_the_one_to_write(written: str, write: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as err:
        parse_duration(written)
    assert str(err.value) == f"{written!r} is not a duration; {write}"


def test_what_is_no_duration_at_all_still_shows_the_form() -> None:
    for text in ("fortnight", "-1d", "soon", "0.3s"):  # 1.5d: write 36h, below
        with pytest.raises(ValueError, match=r"write a number and a unit, e\.g\. 30m, 24h, 60d$"):
            parse_duration(text)


def test_the_written_forms_still_parse() -> None:
    assert parse_duration("90d") == dt.timedelta(days=90)
    assert parse_duration(" 2w ") == dt.timedelta(weeks=2)


def test_a_capital_m_is_not_told_to_be_minutes() -> None:
    """`3M` is months in ISO 8601 (P3M) and in many a spreadsheet: it was told "write 3m",
    three minutes, the very mistake the words' hints are there to stop."""
    with pytest.raises(ValueError, match="is not a duration") as err:
        parse_duration("3M")
    assert str(err.value) == (
        "'3M' is not a duration; write 3m for minutes, 90d for months (a month is no unit: "
        "30 days each)"
    )


@pytest.mark.parametrize(
    "written", ["36501d", "5215w", "3000000d", "99999999999d", "9" * 5000 + "s"]
)
def test_a_duration_beyond_a_hundred_years_is_refused(written: str) -> None:
    """`ttl: 3000000d` loaded, and every event of its rule was a `detector_error` dead
    letter (the task's expiry fell past the year 9999); `99999999999d` stopped `rules
    validate` with a traceback (OverflowError)."""
    with pytest.raises(ValueError, match="is longer than 36500d") as err:
        parse_duration(written)
    shown = written if len(written) <= 20 else written[:17] + "..."
    assert str(err.value) == (
        f"{shown!r} is longer than 36500d (100 years), which no rule or setting needs; "
        "write a shorter duration, 36500d at most"
    )
    assert parse_duration("36500d") == dt.timedelta(days=36500)


def test_a_ttl_beyond_a_hundred_years_is_refused_at_its_line() -> None:
    from rules.catalog import load_texts
    from rules.exceptions import RulesError

    text = (
        "rules:\n  - id: r\n    description: t\n    on: [usage]\n"
        "    task: {family: anomaly, type: hit, channel: sms, priority: 3, action: a,\n"
        "           ttl: 3000000d, cooldown: 99999999999d, description: d}\n"
    )
    with pytest.raises(RulesError) as refused:
        load_texts([("r.yaml", text)])
    found = [str(p) for p in refused.value.problems]
    assert len(found) == 2
    assert all("is longer than 36500d (100 years)" in p and p.startswith("r.yaml:") for p in found)
    assert all(p.endswith("; write a shorter duration, 36500d at most") for p in found), found


def test_a_duration_beyond_a_hundred_years_says_its_fix_after_the_semicolon() -> None:
    """Every other refusal reads `problem; fix`, and a caller that shows the fix alone
    (`moments simulate --duration` takes the hint after "; ") took none from this one:
    it read `...: write a shorter duration`, with no "; "."""
    for written in ("36501d", "not a duration", "7 days"):
        with pytest.raises(ValueError, match=" is ") as err:
            parse_duration(written)
        problem, _, fix = str(err.value).partition("; ")
        assert problem.startswith(repr(written)), str(err.value)
        assert fix.startswith("write "), str(err.value)


def test_every_caller_shows_the_fix_for_a_duration_beyond_a_hundred_years(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The time options (`--since 36501d`), `tasks pending --older-than` and a dispatch
    policy print the fix whole; `simulate --duration` its own, which names its range."""
    from moments.cli import main
    from moments.cliparts import parse_when
    from moments.exceptions import ConfigError
    from sinks.policy import load_policy

    fix = "write a shorter duration, 36500d at most"
    with pytest.raises(ConfigError, match=f"^--since '36501d' is longer .*; {fix}$"):
        parse_when("36501d", dt.UTC, "--since")
    with pytest.raises(SystemExit):
        main(["tasks", "pending", "--older-than", "36501d"])
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"--older-than: '36501d' is longer than "
            f"36500d (100 years), which no rule or setting needs; {fix}"
        )
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text("outcomes:\n  declined_suppress: 36501d\n")
    with pytest.raises(ConfigError, match=fix):
        load_policy(policy)
    with pytest.raises(SystemExit):
        main(["simulate", "--subscribers", "1", "--rate", "1", "--duration", "36501d"])
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "--duration: '36501d': write seconds (3600) or a duration (1h, 2d, 3w), above 0 and "
            "at most 36500d (100 years)"
        )
    )


@pytest.mark.parametrize(
    ("written", "write"),
    [
        ("7 dayz", "write 7d"),
        ("7dayz", "write 7d"),
        ("2 weks", "write 2w"),
        ("24 hourz", "write 24h"),
        ("3 monts", "write 90d (a month is no unit: 30 days each)"),
    ],
)
def test_a_misspelt_unit_word_names_the_one_to_write(written: str, write: str) -> None:
    """`absence: 7 dayz` was told the form alone (`write a number and a unit, e.g. 30m`),
    where `7 days` was told `write 7d` (journey review)."""
    with pytest.raises(ValueError, match="is not a duration") as err:
        parse_duration(written)
    assert str(err.value) == f"{written!r} is not a duration; {write}"


@pytest.mark.parametrize(
    ("written", "write"),
    [("1.5d", "36h"), ("0.5h", "30m"), ("2.5w", "420h"), ("1.1d", "1584m"), (".5m", "30s")],
)
def test_a_fraction_names_the_same_time_in_a_whole_unit(written: str, write: str) -> None:
    """`ttl: 1.5d` was told the form alone; the same time in whole units is named."""
    with pytest.raises(ValueError, match="is not a duration") as err:
        parse_duration(written)
    assert str(err.value) == (
        f"{written!r} is not a duration; write {write} (a duration is a whole number of its unit)"
    )


@pytest.mark.parametrize("written", ["0.3s", "1.5x", "7 dayzzzz", "10 zz"])
def test_what_is_close_to_no_duration_still_shows_the_form(written: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as err:
        parse_duration(written)
    assert str(err.value).endswith("write a number and a unit, e.g. 30m, 24h, 60d")


@pytest.mark.parametrize(
    ("written", "write"),
    [
        ("1w2d", "write 9d"),
        ("1h30m", "write 90m"),
        ("1d 12h", "write 36h"),
        ("1w7d", "write 2w"),
        ("2m30s", "write 150s"),
    ],
)
def test_a_duration_in_several_units_names_the_one_to_write(written: str, write: str) -> None:
    """`cooldown: 1w2d` was told "write a number and a unit, e.g. 30m, 24h, 60d", leaving
    the analyst to work out that it is 9d."""
    with pytest.raises(ValueError, match="is not a duration") as err:
        parse_duration(written)
    assert str(err.value) == (
        f"{written!r} is not a duration; {write} (a duration is one number and one unit)"
    )


def test_several_units_beyond_a_hundred_years_show_the_form() -> None:
    for text in ("36500d1s", "9" * 5000 + "d1s"):
        with pytest.raises(ValueError, match=r"write a number and a unit, e\.g\. 30m, 24h, 60d$"):
            parse_duration(text)


@pytest.mark.parametrize(
    ("written", "write"),
    [
        ("1 week 2 days", "write 9d (a duration is one number and one unit)"),
        ("1 hour 30 minutes", "write 90m (a duration is one number and one unit)"),
        ("1 week, 2 days", "write 9d (a duration is one number and one unit)"),
        ("1 week and 2 days", "write 9d (a duration is one number and one unit)"),
        ("1 hr 30 min", "write 90m (a duration is one number and one unit)"),
        ("1 day 12 hours", "write 36h (a duration is one number and one unit)"),
        ("2 weeks 7 days", "write 3w (a duration is one number and one unit)"),
        ("1 wek 2 dayz", "write 9d (a duration is one number and one unit)"),
        ("1.5 days", "write 36h (a duration is a whole number of its unit)"),
        (
            "1 month 2 days",
            "write 32d (a duration is one number and one unit; a month is no unit: 30 days each)",
        ),
    ],
)
def test_a_spelled_out_sum_names_the_one_to_write(written: str, write: str) -> None:
    """`ttl: 1 week 2 days` was told the form alone ("write a number and a unit, e.g. 30m,
    24h, 60d") where `1w2d` was told `write 9d` (analyst brief): units spelled out, with
    spaces, commas or `and` between them, name the same time in one unit."""
    with pytest.raises(ValueError, match="is not a duration") as err:
        parse_duration(written)
    assert str(err.value) == f"{written!r} is not a duration; {write}"


@pytest.mark.parametrize(
    "written", ["1 week 2 dayzzzz", "1 week 2", "1 M 2 d", "1 week 0.3 s", "9" * 5000 + " days"]
)
def test_a_spelled_out_sum_with_no_one_unit_shows_the_form(written: str) -> None:
    """A part that is no unit (or `M`, minutes or months) leaves no time to name; a number
    of 5,000 digits in words was told Python's own "Exceeds the limit (4300 digits)"."""
    with pytest.raises(ValueError, match="is not a duration") as err:
        parse_duration(written)
    assert str(err.value).endswith("write a number and a unit, e.g. 30m, 24h, 60d")


def test_a_spelled_out_sum_in_a_rules_file_names_the_one_to_write_at_its_line() -> None:
    from rules.catalog import load_texts
    from rules.exceptions import RulesError

    text = (
        "rules:\n  - id: r\n    description: t\n    on: [usage]\n"
        "    task: {family: anomaly, type: hit, channel: sms, priority: 3, action: a,\n"
        "           ttl: 1 week 2 days, description: d}\n"
    )
    with pytest.raises(RulesError) as err:
        load_texts([("r.yaml", text)])
    assert "'1 week 2 days' is not a duration; write 9d" in str(err.value)


@pytest.mark.parametrize(
    "written", ["9" * 5000 + "x", "9" * 5000 + " days", "1." + "5" * 5000 + "d", "x" * 3000]
)
def test_a_long_text_is_echoed_cut_short(written: str) -> None:
    """A duration written with thousands of digits was echoed whole in its error, pages
    of digits before the fix: the echo keeps its first 17 characters, as the one past a
    hundred years does."""
    with pytest.raises(ValueError, match="is not a duration") as err:
        parse_duration(written)
    assert str(err.value).startswith(f"{written[:17] + '...'!r} is not a duration; ")
    assert len(str(err.value)) < 120, str(err.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("ttl", "0" * 5000 + "d"), ("period", "0" * 5000 + "d"), ("lookback", "0" * 5000 + "1m")],
)
def test_a_rules_file_duration_of_thousands_of_digits_is_echoed_cut_short(
    field: str, value: str
) -> None:
    """A ttl of nothing, a look-back under a day, a cap's period of none: each error
    repeated the value whole, pages of zeros before the fix (a ttl of 5,000 zeros was
    told Python's "Exceeds the limit (4300 digits)")."""
    from rules.catalog import load_texts
    from rules.exceptions import RulesError

    task = "{family: anomaly, type: hit, channel: sms, priority: 3, action: a, ttl: %s, %s}"
    extra = "cooldown: 1d, description: d"
    condition = "    condition: {field: country}\n"
    if field == "ttl":
        task = task % (value, extra)
    elif field == "period":
        task = task % ("1d", extra)
    else:
        task = task % ("1d", extra)
        condition = f"    condition: {{first_time: country, lookback: {value}}}\n"
    cap = f"{{max_contacts: 1, period: {value}, channels: [sms]}}"
    gating = f"gating:\n  frequency_cap: {cap}\n" if field == "period" else ""
    text = (
        f"{gating}rules:\n  - id: r\n    description: t\n    on: [roaming]\n{condition}"
        f"    task: {task}\n"
    )
    with pytest.raises(RulesError) as refused:
        load_texts([("r.yaml", text)])
    said = " ".join(str(p) for p in refused.value.problems)
    assert "0" * 17 + "..." in said, said[:300]
    assert len(said) < 600, said[:300]
