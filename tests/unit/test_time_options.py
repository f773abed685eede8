"""The commands' time options read one way (`cliparts.parse_when`): `deadletter show
--since 2h` was refused ("not a date or time"), while an on-call asks for the last hours
far more often than from a date; `--from`/`--to` of the backtest, `rules test` and
`state seed` take a time ago too, and every one keeps its dates and RFC 3339 times."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from moments.cliparts import parse_when
from moments.deadletters import Selection
from moments.exceptions import ConfigError

ZONE = ZoneInfo("Asia/Shanghai")
CATALOG = Path(__file__).parents[2] / "src" / "rules" / "catalog" / "default.yaml"
NOW = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)


class TestParseWhen:
    @pytest.mark.parametrize(
        ("text", "ago"),
        [
            ("2h", dt.timedelta(hours=2)),
            ("30m", dt.timedelta(minutes=30)),
            ("1d", dt.timedelta(days=1)),
            ("2w", dt.timedelta(weeks=2)),
            (" 45 s ", dt.timedelta(seconds=45)),
        ],
    )
    def test_a_time_ago_is_before_now(self, text: str, ago: dt.timedelta) -> None:
        when = parse_when(text, ZONE, "--since", now=NOW)
        assert when == NOW - ago
        assert when.tzinfo == ZONE  # shown in the zone dates are read in

    def test_dates_and_instants_read_as_before(self) -> None:
        assert parse_when("2026-12-04", ZONE, "--from") == dt.datetime(2026, 12, 4, tzinfo=ZONE)
        instant = parse_when("2026-12-04T10:00+08:00", ZONE, "--from")
        assert instant == dt.datetime(2026, 12, 4, 2, tzinfo=dt.UTC)

    def test_a_naive_time_is_in_the_zone_only_where_taken(self) -> None:
        naive = parse_when("2026-12-04T10:00", dt.UTC, "--since", naive=True)
        assert naive == dt.datetime(2026, 12, 4, 10, tzinfo=dt.UTC)
        with pytest.raises(ConfigError, match="add an offset"):
            parse_when("2026-12-04T10:00", ZONE, "--from")

    def test_a_wrong_unit_names_the_fix(self) -> None:
        with pytest.raises(ConfigError, match=r"^--since '2 hours' is not a duration; write 2h"):
            parse_when("2 hours", ZONE, "--since")

    @pytest.mark.parametrize(("text", "write"), [("1.5h", "90m"), ("0.5d", "12h"), (".5h", "30m")])
    def test_a_fraction_is_told_it_is_not_taken_and_what_to_write(
        self, text: str, write: str
    ) -> None:
        """`--since 1.5h` was told every form (a date, RFC 3339, a time ago), as junk is,
        where a rule's `window: 1.5h` is told to write 90m."""
        with pytest.raises(ConfigError) as caught:
            parse_when(text, ZONE, "--since", now=NOW)
        said = str(caught.value)
        assert said.startswith(f"--since {text!r} is not a duration; write {write} ")
        assert "a whole number of its unit" in said
        assert "RFC 3339" not in said

    def test_junk_names_every_form(self) -> None:
        with pytest.raises(ConfigError) as caught:
            parse_when("yesterday", ZONE, "--since")
        said = str(caught.value)
        assert said.startswith("--since 'yesterday': write a date (2026-12-01), RFC 3339")
        assert "or a time ago (30m, 2h, 1d, 2w)" in said

    @pytest.mark.parametrize(
        "text", ["9999-12-31", "0001-01-01", "9899-01-02T00:00:00+00:00", "1969-12-31", "36500d"]
    )
    def test_a_time_no_event_carries_is_refused(self, text: str) -> None:
        """`--to 9999-12-31` (for "no end") ran the backtest's clock day by day towards
        the year 9999, and `rules test` and a `--from 0001-01-01` ended in a traceback
        (year 0 or 10000 is out of range)."""
        with pytest.raises(ConfigError) as caught:
            parse_when(text, ZONE, "--to", now=NOW)
        said = str(caught.value)
        assert said.startswith(f"--to {text!r}: ")
        assert "leave --to out" in said

    @pytest.mark.parametrize(
        "text", ["1970-01-01T00:00:00+00:00", "2099-12-31", "2150-01-05", "9898-12-31", "2w"]
    )
    def test_the_span_of_event_times_is_taken(self, text: str) -> None:
        assert parse_when(text, dt.UTC, "--from", now=NOW) is not None

    @pytest.mark.parametrize(
        ("text", "said"),
        [
            ("2026-13-01", "2026-13-01 is no date: there is no month 13 (months run 01 to 12)"),
            ("2026-00-10", "2026-00-10 is no date: there is no month 00 (months run 01 to 12)"),
            ("2026-11-31", "2026-11-31 is no date: November has 30 days"),
            ("2026-02-29", "2026-02-29 is no date: February 2026 has 28 days"),
            ("2026-12-00", "2026-12-00 is no date: days run from 01"),
            ("20261301", "20261301 is no date: there is no month 13 (months run 01 to 12)"),
            ("2026-11-31T08:00:00+08:00", "2026-11-31 is no date: November has 30 days"),
            ("2026-12-01T25:00:00+08:00", "25:00 is no time of day: hours run 00 to 23"),
            ("2026-12-01T08:61:00+08:00", "08:61 is no time of day: minutes run 00 to 59"),
        ],
    )
    def test_a_date_of_the_form_that_does_not_exist_says_what_is_wrong(
        self, text: str, said: str
    ) -> None:
        """`--from 2026-13-01` was told the general form ("write a date (2026-12-01), RFC
        3339 ..."), which it matches: what is wrong is the month, or a day November has
        not; every time option reads through `parse_when`."""
        for flag in ("--from", "--to", "--live-from"):
            with pytest.raises(ConfigError) as caught:
                parse_when(text, ZONE, flag, ago=flag != "--live-from")
            assert str(caught.value) == f"{flag} {text!r}: {said}", str(caught.value)

    def test_junk_thousands_of_characters_long_is_echoed_cut_short(self) -> None:
        with pytest.raises(ConfigError) as caught:
            parse_when("9" * 5000, ZONE, "--from")
        said = str(caught.value)
        assert said.startswith(f"--from {'9' * 37 + '...'!r}: write a date"), said[:200]
        assert len(said) < 300
        with pytest.raises(ConfigError) as caught:
            parse_when("9" * 5000 + "h", ZONE, "--from")
        assert len(str(caught.value)) < 300, str(caught.value)[:200]

    def test_an_option_standing_for_a_setting_takes_no_time_ago(self) -> None:
        """`--live-from` rehearses MOMENTS_LIVE_FROM, which is a date or an instant."""
        with pytest.raises(ConfigError) as caught:
            parse_when("2d", ZONE, "--live-from", ago=False)
        assert "time ago" not in str(caught.value)


class TestDeadletterSince:
    @staticmethod
    def selection(monkeypatch: pytest.MonkeyPatch, *args: str) -> Selection:
        import moments.deadletter_cli as cli_module
        import moments.deadletter_replay as replay_module
        from moments.cli import main
        from moments.deadletters import Summary

        chosen: list[Selection] = []

        async def nothing(_settings: object, selection: Selection, *_rest: object) -> Summary:
            chosen.append(selection)
            return Summary()

        monkeypatch.setattr(cli_module, "_require", lambda _settings, redis: None)
        monkeypatch.setattr(replay_module, "summarize", nothing)
        assert main(["deadletter", "show", *args]) == 0
        return chosen[0]

    def test_since_takes_a_time_ago(self, monkeypatch: pytest.MonkeyPatch) -> None:
        before = dt.datetime.now(dt.UTC)
        chosen = self.selection(monkeypatch, "--since", "2h", "--until", "30m")
        after = dt.datetime.now(dt.UTC)
        assert chosen.since is not None
        assert chosen.until is not None
        assert before - dt.timedelta(hours=2) <= chosen.since <= after - dt.timedelta(hours=2)
        assert chosen.until - chosen.since == dt.timedelta(minutes=90)

    def test_since_keeps_dates_and_times_in_utc(self, monkeypatch: pytest.MonkeyPatch) -> None:
        chosen = self.selection(monkeypatch, "--since", "2026-12-04", "--until", "2026-12-05T10:00")
        assert chosen.since == dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
        assert chosen.until == dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC)

    @pytest.mark.parametrize(
        ("since", "until"),
        [("30m", "2h"), ("2026-12-05", "2026-12-04"), ("2026-12-04", "2026-12-04")],
    )
    @pytest.mark.parametrize("command", ["show", "replay"])
    def test_an_until_not_after_since_is_refused(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        command: str,
        since: str,
        until: str,
    ) -> None:
        """`--since 30m --until 2h` (the two swapped) selected nothing, and show said "no
        dead letters match", replay sent none, as if there were none; the backtest refuses
        its --to not after --from."""
        import moments.deadletter_cli as cli_module
        import moments.deadletter_replay as replay_module
        from moments.cli import main

        async def never(*_args: object, **_kwargs: object) -> object:
            raise AssertionError("no dead letter is read for an empty time range")

        monkeypatch.setattr(cli_module, "_require", lambda _settings, redis: None)
        monkeypatch.setattr(replay_module, "summarize", never)
        monkeypatch.setattr(replay_module, "replay", never)
        assert main(["deadletter", command, "--since", since, "--until", until]) == 2
        said = capsys.readouterr().err
        assert f"--until {until}" in said
        assert f"must be after --since {since}" in said

    @pytest.mark.parametrize("command", ["show", "replay"])
    def test_a_since_after_now_is_refused(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        command: str,
    ) -> None:
        """`--since` today's date typed in Shanghai before 08:00 is a midnight hours ahead of
        the clock in UTC: show said "no dead letters match", replay sent none, as if none
        had come today."""
        import moments.deadletter_cli as cli_module
        import moments.deadletter_replay as replay_module
        from moments.cli import main

        async def never(*_args: object, **_kwargs: object) -> object:
            raise AssertionError("no dead letter is read for a time range after now")

        monkeypatch.setattr(cli_module, "_require", lambda _settings, redis: None)
        monkeypatch.setattr(replay_module, "summarize", never)
        monkeypatch.setattr(replay_module, "replay", never)
        tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
        assert main(["deadletter", command, "--since", tomorrow]) == 2
        said = " ".join(capsys.readouterr().err.split())
        assert f"--since {tomorrow} ({tomorrow}T00:00:00+00:00) is after now" in said
        assert "a date is its midnight in UTC" in said
        assert "or RFC 3339 with your offset" in said

    @pytest.mark.parametrize("since", ["0h", "0m", "00d"])
    @pytest.mark.parametrize("command", ["show", "replay"])
    def test_a_since_of_no_time_ago_is_refused(
        self, capsys: pytest.CaptureFixture[str], command: str, since: str
    ) -> None:
        """`--since 0h` is now: no dead letter is rejected at or after it, and show said
        "no dead letters match", replay sent none, as if there were none."""
        from moments.cli import main

        with pytest.raises(SystemExit) as caught:
            main(["deadletter", command, "--since", since])
        assert caught.value.code == 2
        said = " ".join(capsys.readouterr().err.split())
        assert f"'{since}' is no time ago: it is now, and nothing was rejected after it" in said
        assert "give a span (2h, 1d), or leave --since out for every dead letter" in said

    def test_an_until_of_no_time_ago_is_refused_naming_the_time_to_write(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`--until 0h` was taken while `--since 0h` was refused: a time ago of none is
        refused for every option alike, with the time itself to write for "now"."""
        from moments.cli import main

        with pytest.raises(SystemExit) as caught:
            main(["deadletter", "show", "--since", "1d", "--until", "0h"])
        assert caught.value.code == 2
        said = " ".join(capsys.readouterr().err.split())
        assert "argument --until: '0h' is no time ago: it is now; give a span (30m, 2h, 1d)" in said
        assert "or the time itself (20" in said

    def test_a_bad_since_is_a_usage_error_naming_the_forms(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from moments.cli import main

        with pytest.raises(SystemExit) as caught:
            main(["deadletter", "show", "--since", "2 hours"])
        assert caught.value.code == 2
        assert "'2 hours' is not a duration; write 2h" in capsys.readouterr().err


class TestEventTimeOptions:
    """The backtest's `--from`, and `rules test`'s `--to`, read by the same reader."""

    EVENT = (
        '{"type":"usage","event_id":"u1","subscriber_id":"13800138001","kind":"data",'
        '"occurred_at":"2026-11-02T10:00:00+08:00","balance_after":5}\n'
    )

    @pytest.mark.parametrize(
        "argv",
        [
            ["rules", "test", str(CATALOG), "--to", "9999-12-31"],
            ["backtest", "--from", "0001-01-01"],
        ],
    )
    def test_a_time_out_of_the_events_span_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
    ) -> None:
        """They ended in a traceback: ValueError: year 10000 (or 0) is out of range."""
        from moments.cli import main

        events = tmp_path / "e.jsonl"
        events.write_text(self.EVENT)
        out = ["--out", str(tmp_path / "out")] if argv[0] == "backtest" else []
        assert main([*argv, "--events", str(events), *out]) == 2
        assert f"{argv[-2]} '{argv[-1]}': " in capsys.readouterr().err

    @pytest.mark.parametrize(
        "argv",
        [
            ["rules", "test", str(CATALOG), "--to", "0h"],
            ["backtest", "--from", "0h"],
            ["backtest", "--to", "0d"],
            ["state", "seed", "--dry-run", "--to", "00m"],
        ],
    )
    def test_a_time_ago_of_none_is_refused_as_deadletter_since_is(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
    ) -> None:
        """`backtest --from 0h` ran (with a warning) while `deadletter --since 0h` was
        refused; `0h` is now, and the fix is a span or the time itself."""
        from moments.cli import main

        events = tmp_path / "e.jsonl"
        events.write_text(self.EVENT)
        out = ["--out", str(tmp_path / "out")] if argv[0] == "backtest" else []
        assert main([*argv, "--events", str(events), *out]) == 2
        said = " ".join(capsys.readouterr().err.split())
        flag, text = argv[-2:]
        assert f"{flag} '{text}' is no time ago: it is now; give a span (30m, 2h, 1d), or " in said
        assert not (tmp_path / "out").exists()

    def test_tasks_pending_older_than_none_is_refused(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from moments.cli import main

        with pytest.raises(SystemExit) as caught:
            main(["tasks", "pending", "--older-than", "0h"])
        assert caught.value.code == 2
        said = " ".join(capsys.readouterr().err.split())
        assert "--older-than: '0h' is no span: every task is published at least that long " in said
        assert "leave --older-than out for every task" in said

    def test_rules_test_and_backtest_take_a_time_ago(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from moments.cli import main

        events = tmp_path / "e.jsonl"
        events.write_text(self.EVENT)
        assert main(["rules", "test", str(CATALOG), "--events", str(events), "--to", "1h"]) == 0
        out = tmp_path / "out"
        argv = ["backtest", "--events", str(events), "--out", str(out), "--from", "1000d"]
        assert main(argv) == 0
        assert main([*argv[:-2], "--from", "2 hours"]) == 2
        assert "--from '2 hours' is not a duration; write 2h" in capsys.readouterr().err
