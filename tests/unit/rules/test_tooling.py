"""`moments rules explain` and `moments rules test`: plain words, and offline runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
import pytest

import rules
from moments.cli import main
from rules.catalog import load_rules
from rules.explain import explain
from tests.unit.catalogs import default_rules

DEFAULT = Path(rules.__file__).parent / "catalog" / "default.yaml"


def test_explain_says_thresholds_overrides_and_task() -> None:
    (text,) = explain(default_rules(), "low_balance")
    assert "balance_after is below 10 (param threshold)" in text
    assert "For tier diamond or gold: threshold = 30." in text
    assert "at most once per subscriber every 3d" in text


def test_explain_shows_a_whole_minimum_as_written() -> None:
    """`min_baseline: 20` and `min_total: 10` were said "at least 20.0" and "at least 10.0
    in all", read as floats, beside thresholds shown as written (analyst walk)."""
    (spike,) = explain(load_rules(), "bill_spike")
    assert "judged only when that average is at least 20." in spike, spike
    (share,) = explain(load_rules(), "incoming_calls_share_high")
    assert "(with at least 10 in all)" in share, share


def test_explain_shows_digits_with_a_leading_zero_as_they_are_read(tmp_path: Path) -> None:
    """Digits written with a leading zero are text (`counterparty: 05`, `in: [0086]`, a
    param `code: 007` compared with eq) but a bound or a param a bound reads is the number
    (`gte: 010` is 10, `q: 08` is 8): explain showed "at least 010" and "above 08"."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n  - id: zero\n    description: zero\n    on: [usage]\n"
        "    when: {counterparty: 05, quantity: {gte: 010}}\n"
        "    condition:\n      all:\n"
        "        - {field: counterparty, in: [0086, 10010]}\n"
        "        - {field: service_code, eq: $code}\n"
        "        - {field: quantity, gt: $q, lte: 0500}\n"
        "    params: {code: 007, q: 08}\n"
        '    overrides: [{region: "010", params: {code: 0099, q: 09}}]\n'
        "    task: {family: anomaly, type: z, channel: sms, priority: 3, action: a, ttl: 24h,\n"
        "           description: zero}\n"
    )
    (text,) = explain(load_rules(path), "zero")
    assert "where counterparty is 05 and quantity is at least 10." in text
    assert "counterparty is one of 0086, 10010;" in text
    assert "service_code is 007 (param code);" in text
    assert "quantity is above 8 (param q) and is at most 500)" in text
    assert "For region 010: code = 0099, q = 9." in text


def test_explain_says_a_missing_value_passes_ne_and_not_in(tmp_path: Path) -> None:
    """A value that is not there passes `ne` and `not_in` (docs/rules.md): explain said
    only "is none of A1", and an analyst read it as firing on events with an operator."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n  - id: others\n    description: others\n    on: [roaming]\n"
        "    condition:\n      all:\n"
        "        - {field: operator, not_in: [A1, B2]}\n"
        "        - {profile: tier, ne: gold}\n"
        "        - {field: country, in: [US, JP]}\n"
        "    task: {family: anomaly, type: o, channel: sms, priority: 3, action: a, ttl: 24h,\n"
        "           description: others}\n"
    )
    (text,) = explain(load_rules(path), "others")
    assert "operator is none of A1, B2, or has none" in text
    assert "tier is not gold, or has none" in text
    assert "country is one of US, JP)" in text  # in: needs the value


@pytest.mark.parametrize(
    ("condition", "waits"),
    [
        ("{series: calls_week, agg: count, last: 4, lt: 3}", True),
        ("{series: calls_week, agg: count, last: 4, gte: 3}", False),
        ("{not: {series: calls_week, agg: count, last: 4, gte: 3}}", True),
        ("{not: {any: [{series: calls_week, agg: count, last: 4, gte: 3}]}}", True),
        ("{not: {not: {series: calls_week, agg: count, last: 4, gte: 3}}}", False),
    ],
)
def test_explain_says_when_a_series_test_waits_for_the_history(
    tmp_path: Path, condition: str, waits: bool
) -> None:
    """A series test under `not:` waits for the history whatever its operators, as the
    rule does; explain said so only of `lt`, `eq`, ... It says where the history begins
    (the subscriber's first event of any kind): read as their first event in the series,
    "fewer than 3 calls" looked never judged for one who had made none, as it was."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "series:\n  calls_week: {on: [usage], when: {kind: voice}, period: week}\n"
        "rules:\n  - id: few\n    description: few\n    on: [usage]\n"
        f"    evaluate: weekly\n    condition: {condition}\n"
        "    task: {family: anomaly, type: z, channel: sms, priority: 3, action: a, ttl: 7d,\n"
        "           description: few}\n"
    )
    (text,) = explain(load_rules(path), "few")
    assert ("judged once the subscriber's history covers those windows" in text) == waits
    begins = "it begins at their first event of any kind, so one with no event in calls_week"
    assert (begins in text) == waits


def test_explain_every_default_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "explain"]) == 0
    out = capsys.readouterr().out
    for rule in default_rules().rules:
        assert f"{rule.id} (version {rule.version}): {rule.description}" in out
    assert main(["rules", "explain", "no_such_rule"]) == 1


def test_explain_takes_the_rules_as_validate_and_test_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`explain my.yaml` answered "no rule '/tmp/my.yaml'" (analyst review)."""
    path = tmp_path / "my.yaml"
    path.write_text(
        "rules:\n  - id: mine\n    description: Mine\n    on: [usage]\n"
        "    task: {family: anomaly, type: t, channel: sms, priority: 2, action: a,\n"
        "           description: d}\n"
    )
    for args in ([str(path)], [str(path), "mine"], ["--rules", str(path), "mine"]):
        assert main(["rules", "explain", *args]) == 0
        assert capsys.readouterr().out.startswith("mine (version 1): Mine")
    assert main(["rules", "explain", str(path), "low_balance"]) == 1
    assert capsys.readouterr().err == (
        f"moments: no rule 'low_balance' in {path} (known: mine); `moments rules explain "
        "PATH` lists them all\n"
    )
    assert main(["rules", "explain", str(path), str(path)]) == 2
    assert "give one rules file or folder" in capsys.readouterr().err


def test_explain_of_an_unknown_rule_says_the_one_meant_and_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`moments rules explain big_topup`, the analyst's new rule with its file left out,
    was told "no rule 'big_topup' in the packaged catalog (known: ...)" and a misspelt id
    the whole list to read against it (analyst walk): now the close id, and, for the
    packaged catalog, how to name one's own file."""
    monkeypatch.delenv("MOMENTS_RULES", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env to read
    assert main(["rules", "explain", "big_topup"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "moments: no rule 'big_topup' in the packaged catalog (MOMENTS_RULES is unset); for "
        "a rule of your own file or folder, name it first: moments rules explain my-rules/ "
        "big_topup (known here: "
    ), err
    assert main(["rules", "explain", "low_balanse"]) == 1
    # "did you mean 'low_balance'?; for a rule of your own ...": a question mark and a
    # semicolon together (journey review)
    assert (
        "(MOMENTS_RULES is unset); did you mean 'low_balance'? For a rule of your own file or "
        "folder, name it first"
    ) in capsys.readouterr().err
    path = tmp_path / "my.yaml"
    path.write_text(
        "rules:\n  - id: big_topup\n    description: Mine\n    on: [usage]\n"
        "    task: {family: anomaly, type: t, channel: sms, priority: 2, action: a,\n"
        "           description: d}\n"
    )
    assert main(["rules", "explain", str(path), "big_topp"]) == 1
    assert capsys.readouterr().err == (
        f"moments: no rule 'big_topp' in {path}; did you mean 'big_topup'? (known: big_topup); "
        "`moments rules explain PATH` lists them all\n"
    )


def write_events(path: Path, events: Sequence[Mapping[str, object]]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    return path


def test_rules_test_prints_what_fires_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(
        tmp_path / "events.jsonl",
        [
            {
                "type": "usage",
                "event_id": "u1",
                "subscriber_id": "13800138001",
                "occurred_at": "2026-11-02T10:00:00+08:00",
                "kind": "data",
                "balance_after": 25,
            },
            {
                "type": "usage",
                "event_id": "u2",
                "subscriber_id": "13900139002",
                "occurred_at": "2026-11-02T10:00:00+08:00",
                "kind": "data",
                "balance_after": 25,
            },
        ],
    )
    profiles = write_events(
        tmp_path / "crm.jsonl",
        [
            {
                "event_id": "p1",
                "subscriber_id": "13800138001",
                "occurred_at": "2026-11-01T10:00:00+08:00",
                "tier": "gold",
            }
        ],
    )
    args = ["rules", "test", str(DEFAULT), "--events", str(events)]
    assert main([*args, "--profiles", str(profiles)]) == 0
    out = capsys.readouterr().out
    assert "138****8001 low_balance -> low_balance" in out
    assert "balance_after=25, balance_after_lt=30" in out  # the gold threshold
    assert "139****9002" not in out  # standard tier: 25 is above 10
    assert "1 task(s)" in out


def test_rules_test_names_the_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"event_id": "x"}\n')
    assert main(["rules", "test", str(DEFAULT), "--events", str(events)]) == 1
    assert f"{events}:1: no event type: give --type (topup, " in capsys.readouterr().err


def test_a_rules_path_that_is_not_there_says_so_and_from_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moments rules test rules/ ...` of a recipe said "rules:1:1: cannot read: No such
    file or directory" (new user's walk): it names the directory the path was read from."""
    monkeypatch.chdir(tmp_path)
    # 2, not 1: a path given wrong is set-up (README, exit codes)
    assert main(["rules", "validate", "rules/"]) == 2
    said = capsys.readouterr()
    assert f"rules:1:1: cannot read: no such rules file or folder (a path from {tmp_path})" in (
        said.out + said.err
    )


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("my-rules/low-balance.yml", "my-rules/low-balance.yaml"),
        ("my-rule/", "my-rules"),
        ("my-rules/low_balance.yaml", "my-rules/low-balance.yaml"),
    ],
)
def test_a_rules_path_misspelt_is_told_the_close_one(
    given: str,
    meant: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A new user's first hour (review): `moments rules validate my-rules/low-balance.yml`
    of a file saved as `.yaml` said "no such rules file or folder; check the path", where
    a misspelt rule id or field is told the close one."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-rules").mkdir()
    (tmp_path / "my-rules" / "low-balance.yaml").write_text(DEFAULT.read_text())
    (tmp_path / "notes.txt").write_text("")
    assert main(["rules", "validate", given]) == 2
    said = capsys.readouterr()
    assert f"no such rules file or folder (a path from {tmp_path}); did you mean {meant!r}?" in (
        said.out + said.err
    )


def test_a_rules_path_with_nothing_close_is_told_to_check_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "campaigns").mkdir()
    assert main(["rules", "validate", "retention.yaml", "nowhere/rules.yaml"]) == 2
    said = capsys.readouterr()
    assert "did you mean" not in said.out + said.err
    assert "; check the path, give a rules .yaml file or a folder of them" in said.out + said.err


def test_the_shipped_calendar_file_is_what_export_writes(tmp_path: Path) -> None:
    shipped = DEFAULT.parent.parent / "calendars" / "holidays-2026-2028.yaml"
    out = tmp_path / "h.yaml"
    assert main(["calendar", "export", "--years", "2026-2028", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == shipped.read_text(encoding="utf-8"), (
        "run: moments calendar export --years 2026-2028 --out "
        "src/rules/calendars/holidays-2026-2028.yaml"
    )
    assert "2027-02-06" in out.read_text(encoding="utf-8")  # Spring Festival 2027


def test_an_exported_calendar_says_how_rules_load_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its header said "load it as the operator calendar file" and no more: no setting or
    option takes one, a rules file names it (`special_days: {calendar: ...}`)."""
    assert main(["calendar", "export", "--years", "2027"]) == 0
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]
    assert "special_days: {calendar: FILE}" in " ".join(header)


def test_calendar_export_to_a_path_it_cannot_write_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder that does not exist (a typo in --out): the path and why, exit 2 (a path
    given wrong is set-up); it was a FileNotFoundError traceback."""
    out = tmp_path / "nowhere" / "h.yaml"
    assert main(["calendar", "export", "--years", "2027", "--out", str(out)]) == 2
    assert f"moments: cannot write {out}: No such file or directory" in capsys.readouterr().err


def test_calendar_export_refuses_bad_years(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calendar", "export", "--years", "26-28"]) == 2
    assert "write YYYY or YYYY-YYYY" in capsys.readouterr().err


def test_rules_test_reads_csv_and_takes_a_date_for_until(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the backtest does: CSV (with a type column) and --until as a plain date."""
    events = tmp_path / "events.csv"
    events.write_text(
        "type,event_id,subscriber_id,occurred_at,kind,balance_after,tier\n"
        "profile,p1,13800138001,2026-11-01T10:00:00+08:00,,,gold\n"
        "usage,u1,13800138001,2026-11-02T10:00:00+08:00,data,25,\n"
    )
    args = ["rules", "test", str(DEFAULT), "--events", str(events), "--until", "2026-11-03"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "balance_after=25, balance_after_lt=30" in out  # the profile's gold threshold
    assert "1 task(s)" in out
    assert main([*args[:-1], "2026-11-03T00:00:00"]) == 2
    assert "add an offset" in capsys.readouterr().err


def test_rules_test_takes_to_as_backtest_and_simulate_do_and_until_still(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`backtest` and `state seed` take `--to`; `rules test` took only `--until`, and a
    `--to` copied from a backtest line was refused ("unrecognized arguments"). Both work,
    and --help names both."""
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "series:\n  calls: {on: [usage], period: day}\n"
        "rules:\n  - id: busy_day\n    description: Two events in a day\n"
        "    on: [usage]\n    evaluate: daily\n    condition: {series: calls, gte: 2}\n"
        "    task: {family: anomaly, type: busy_day, channel: sms, priority: 3, action: a,\n"
        "           ttl: 30d, description: busy}\n"
    )
    usage = {"type": "usage", "subscriber_id": "13800138001", "kind": "data"}
    events = write_events(
        tmp_path / "events.jsonl",
        [
            {**usage, "event_id": "u1", "occurred_at": "2026-11-02T10:00:00+08:00"},
            {**usage, "event_id": "u2", "occurred_at": "2026-11-02T11:00:00+08:00"},
        ],
    )
    args = ["rules", "test", str(rules_file), "--events", str(events), "--json"]
    for flag in ("--to", "--until"):
        assert main([*args, flag, "2026-11-03"]) == 0
        (line,) = capsys.readouterr().out.splitlines()
        assert orjson.loads(line)["triggered_at"] == "2026-11-03T00:00:00+08:00"
    assert main([*args, "--to", "2026-11-03T00:00:00"]) == 2
    assert "--to '2026-11-03T00:00:00': add an offset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["rules", "test", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--to TIME, --until TIME" in shown
    assert "--until is the same (its older name)" in shown


def test_rules_test_takes_a_date_for_until_as_midnight_in_the_rules_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was midnight in Asia/Shanghai whatever the rules' gating.timezone: with
    Europe/London, event time stopped at 16:00 in London, before the day closed."""
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "gating: {timezone: Europe/London, quiet_hours: [], frequency_cap: null}\n"
        "series:\n  calls: {on: [usage], period: day}\n"
        "rules:\n  - id: busy_day\n    description: Two events in a day\n"
        "    on: [usage]\n    evaluate: daily\n    condition: {series: calls, gte: 2}\n"
        "    task: {family: anomaly, type: busy_day, channel: sms, priority: 3, action: a,\n"
        "           ttl: 30d, description: busy}\n"
    )
    usage = {"type": "usage", "subscriber_id": "13800138001", "kind": "data"}
    events = write_events(
        tmp_path / "events.jsonl",
        [
            {**usage, "event_id": "u1", "occurred_at": "2026-11-02T10:00:00+00:00"},
            {**usage, "event_id": "u2", "occurred_at": "2026-11-02T11:00:00+00:00"},
        ],
    )
    args = ["rules", "test", str(rules_file), "--events", str(events), "--json"]
    assert main([*args, "--until", "2026-11-03"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert orjson.loads(line)["triggered_at"] == "2026-11-03T00:00:00Z"


def test_rules_test_counts_what_the_gates_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "gating: {quiet_hours: []}\n"
        "rules:\n"
        "  - id: data_use\n"
        "    description: any data use\n"
        "    on: [usage]\n"
        "    condition: {field: kind, eq: data}\n"
        "    task: {family: anomaly, type: data_use, channel: sms, priority: 3, action: a,\n"
        "           ttl: 24h, cooldown: 7d, description: data}\n"
    )
    events = write_events(
        tmp_path / "events.jsonl",
        [
            {
                "type": "usage",
                "event_id": f"u{n}",
                "subscriber_id": "13800138001",
                "occurred_at": f"2026-11-0{n}T10:00:00+08:00",
                "kind": "data",
            }
            for n in (2, 3, 4)
        ],
    )
    assert main(["rules", "test", str(rules_file), "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert "1 task(s)" in out
    assert "2 moment(s) dropped by the gates, no task:\n  data_use: 2 cooldown" in out


def test_a_bad_calendar_file_is_refused_as_a_calendar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calendar = tmp_path / "calendar.yaml"
    calendar.write_text("enable: [easter]\n")
    assert main(["calendar", "export", "--years", "2026", "--from", str(calendar)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("moments: holiday calendar refused:\n")
    assert f"{calendar}:1:10: enable: unknown holiday 'easter'" in err


def _low_balance_events(tmp_path: Path) -> Path:
    usage = {"type": "usage", "occurred_at": "2026-11-02T10:00:00+08:00", "kind": "data"}
    return write_events(
        tmp_path / "cases.jsonl",
        [
            {**usage, "event_id": "u1", "subscriber_id": "13800138001", "balance_after": 5},
            {**usage, "event_id": "u2", "subscriber_id": "13900139002", "balance_after": 50},
        ],
    )


def test_rules_test_holds_the_rules_to_what_is_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An analyst's test of a rule can fail: --expect RULE=N, exit 1 otherwise (it
    printed 0 tasks and exited 0 whatever the rules did; analyst review)."""
    args = ["rules", "test", str(DEFAULT), "--events", str(_low_balance_events(tmp_path))]
    assert main([*args, "--expect", "low_balance=1", "--expect", "first_topup_channel=0"]) == 0
    assert "as expected: low_balance=1, first_topup_channel=0" in capsys.readouterr().err
    assert main([*args, "--expect", "low_balance=2"]) == 1
    assert "FAILED low_balance: expected 2 task(s), got 1" in capsys.readouterr().err
    assert main([*args, "--expect", "low_balanse=1"]) == 1
    said = capsys.readouterr().err  # the rule meant named, as `rules explain` names it
    assert "FAILED low_balanse: no such rule in these rules; did you mean 'low_balance'? " in said
    assert main([*args, "--expect", "zzz=1"]) == 1
    assert "FAILED zzz: no such rule in these rules; known: " in capsys.readouterr().err
    assert main([*args, "--expect", "low_balance"]) == 2
    assert "write RULE_ID=COUNT" in capsys.readouterr().err


def test_an_expectation_fails_on_a_refused_event_unless_it_allows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _low_balance_events(tmp_path)
    with events.open("a") as file:
        file.write('{"type": "usage", "event_id": "bad", "subscriber_id": "x"}\n')
    args = ["rules", "test", str(DEFAULT), "--events", str(events), "--expect", "low_balance=1"]
    assert main(args) == 1
    assert "FAILED refused: expected 0 event(s) refused, got 1" in capsys.readouterr().err
    assert main([*args, "--expect", "refused=1"]) == 0
    assert main(args[:-2]) == 0  # no expectation: a report, as before


def test_rules_test_says_why_a_special_day_made_no_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = {
        "type": "profile",
        "event_id": "p1",
        "subscriber_id": "13800138001",
        "occurred_at": "2026-11-01T08:00:00+08:00",
        "birthday": "11-02",
    }
    events = write_events(tmp_path / "p.jsonl", [profile])
    args = ["rules", "test", str(DEFAULT), "--events", str(events)]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "event time ran to 2026-11-01 08:00 (Asia/Shanghai)" in said  # before 09:00
    assert "pass --to with a later time" in said
    assert main([*args, "--until", "2026-11-03", "--expect", "birthday_greeting=1"]) == 0
    assert "pass --to" not in capsys.readouterr().out


def _listed_params(rule_id: str) -> set[str]:
    (text,) = explain(default_rules(), rule_id)
    marker = "Its task's params (what a description or a consumer's template may use): "
    (line,) = [line for line in text.splitlines() if marker in line]
    return set(line.split(marker)[1].rstrip(".").split(", "))


def test_explain_lists_the_params_a_task_carries() -> None:
    """Consumers building templates had no list of an action's params but the YAML
    (dispatch consumer review)."""
    assert _listed_params("low_balance") == {"balance_after", "balance_after_lt"}
    assert _listed_params("birthday_greeting") == {"birthday"}  # not every occasion's
    assert "lookback_days" not in _listed_params("first_topup_channel")  # no lookback
    assert "lookback_days" in _listed_params("first_bill_query_60d")


def test_the_sample_streams_tasks_carry_only_params_explain_lists() -> None:
    from moments.pipeline import run_pipeline
    from moments.records import RawRecord
    from moments.sample import sample_stream

    records = [
        RawRecord(r.event_type.value, 0, n, r.key, r.value) for n, r in enumerate(sample_stream())
    ]
    tasks = run_pipeline(records, default_rules()).tasks
    assert len({t.moment.rule_id for t in tasks}) >= 5
    for task in tasks:
        assert set(task.moment.params) <= _listed_params(task.moment.rule_id), task.moment.rule_id


def test_rules_test_lists_each_live_rule_that_made_no_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three new rules over two simulated days: the summary listed the one that fired and
    was silent on the others, so a rule that made nothing looked like one never loaded;
    and it told a special-day rule that had been looked at twice, on days that were no
    holiday, to pass --until as if it had not (analyst walk)."""
    path = tmp_path / "mine.yaml"
    path.write_text(
        "rules:\n"
        "  - id: low\n    description: Low\n    on: [usage]\n"
        "    condition: {field: balance_after, lt: 30}\n"
        "    task: {family: anomaly, type: low, channel: sms, priority: 2, action: a,\n"
        "           ttl: 1d, description: low}\n"
        "  - id: never\n    description: Never\n    on: [usage]\n"
        "    condition: {field: balance_after, lt: 0}\n"
        "    task: {family: anomaly, type: never, channel: sms, priority: 2, action: a,\n"
        "           ttl: 1d, description: never}\n"
        "  - id: new_year\n    description: New year\n    on: [profile]\n"
        "    evaluate: special_day\n    condition: {occasion: holiday, holidays: [new_year]}\n"
        "    task: {family: special_day, type: ny, channel: sms, priority: 4, action: a,\n"
        "           ttl: 12h, description: ny}\n"
    )
    usage = {"type": "usage", "subscriber_id": "13800138001", "kind": "data", "balance_after": 25}
    events = write_events(
        tmp_path / "events.jsonl",
        [
            {**usage, "event_id": "u1", "occurred_at": "2026-12-06T10:00:00+08:00"},
            {**usage, "event_id": "u2", "occurred_at": "2026-12-08T10:00:00+08:00"},
        ],
    )
    assert main(["rules", "test", str(path), "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert "2 task(s)\n  low: 2\n  never: 0\n  new_year: 0\n" in out
    (note,) = [line for line in out.splitlines() if line.startswith("no task of the special-day")]
    assert "event time ran to 2026-12-08 10:00" in note
    assert "pass --to with a later time" in note


def test_rules_test_tells_no_special_day_note_for_a_shadow_rule_or_no_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A special-day rule in shadow makes no task however far event time runs: the note
    advised --until for it whatever the events; with no event read it said event time
    ran to 1970-01-01 08:00."""
    path = tmp_path / "mine.yaml"
    path.write_text(
        "rules:\n"
        "  - id: new_year\n    description: New year\n    on: [profile]\n    mode: shadow\n"
        "    evaluate: special_day\n    condition: {occasion: holiday, holidays: [new_year]}\n"
        "    task: {family: special_day, type: ny, channel: sms, priority: 4, action: a,\n"
        "           ttl: 12h, description: ny}\n"
    )
    profile = {
        "type": "profile",
        "event_id": "p1",
        "subscriber_id": "13800138001",
        "occurred_at": "2026-12-06T10:00:00+08:00",
        "region": "SH",
    }
    events = write_events(tmp_path / "p.jsonl", [profile])
    assert main(["rules", "test", str(path), "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert "no task of the special-day" not in out, out
    assert "1 shadow rule(s), no task made" in out
    live = path.read_text().replace("    mode: shadow\n", "")
    path.write_text(live)
    empty = write_events(tmp_path / "none.jsonl", [])
    # No event: nothing was tested (exit 1), and the report still says so in its words.
    assert main(["rules", "test", str(path), "--events", str(empty)]) == 1
    out = capsys.readouterr().out
    assert "1970" not in out, out


def test_rules_test_says_a_baseline_rule_with_no_task_needs_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new anomaly rule against 7 days of the subscriber's own top-ups made nothing on
    two simulated days, and nothing said it could not have (analyst walk)."""
    path = tmp_path / "mine.yaml"
    path.write_text(
        "series:\n  topup_day: {on: [topup], field: amount, period: day}\n"
        "rules:\n"
        "  - id: big_topup\n    description: Big\n    on: [topup]\n"
        "    condition: {baseline: topup_day, agg: avg, windows: 7, gte: 3}\n"
        "    task: {family: anomaly, type: big, channel: sms, priority: 2, action: a,\n"
        "           ttl: 1d, description: big}\n"
    )
    events = write_events(
        tmp_path / "events.jsonl",
        [
            {
                "type": "topup",
                "event_id": "t1",
                "subscriber_id": "13800138001",
                "occurred_at": "2026-12-06T10:00:00+08:00",
                "amount": 50,
                "channel": "app",
            }
        ],
    )
    assert main(["rules", "test", str(path), "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert (
        "  big_topup: 0 (its baseline is 7 earlier days of topup_day: a subscriber with "
        "less history makes none)\n"
    ) in out


def test_explain_says_a_description_may_name_the_fields_of_the_event() -> None:
    """An analyst's first rule wrote `{amount}` in a top-up's description, which the event
    fills, but explain listed only `channel` as what a description may use (review)."""
    (text,) = explain(default_rules(), "low_balance")
    assert (
        "  Its description may also name the fields of the usage or topup event it fires on: "
        "balance_after, event_id, occurred_at, region, subscriber_id.\n"
    ) in text + "\n"
    (special,) = explain(default_rules(), "birthday_greeting")  # no event: a day's look
    assert "fields of the" not in special
