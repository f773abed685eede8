"""The simulator's pure generators: valid events, a realistic mix, planted moments the
default catalog finds, and the same stream for the same seed."""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
import random
import time
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from moments.cli import main
from moments.engine import Detector
from moments.models import EventType
from moments.pipeline import run_pipeline, to_records
from moments.simulate import (
    COMPETITOR_HOTLINES,
    EventGenerator,
    Plant,
    SimEvent,
    limit,
    make_profiles,
    simulate,
    validate,
    write_jsonl,
)
from moments.store import DictStateStore

from .catalogs import default_rules

DURATION_RANGE = (
    "write seconds (3600) or a duration (1h, 2d, 3w), above 0 and at most 36500d (100 years)"
)
"""What `--duration` is told for a value outside its range."""


START = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)


def take(events: EventGenerator, n: int) -> list[SimEvent]:
    return list(itertools.islice(events, n))


class TestProfiles:
    def test_profiles_have_distinct_numbers_and_valid_fields(self) -> None:
        profiles = make_profiles(500, random.Random(1), START.date())
        assert len({p.subscriber_id for p in profiles}) == 500
        assert all(p.subscriber_id.isdigit() and len(p.subscriber_id) == 11 for p in profiles)
        assert len({p.timezone for p in profiles}) > 1, "more than one time zone"
        assert len({p.birthday for p in profiles}) > 100, "birthdays spread over the year"
        for p in profiles:
            ZoneInfo(p.timezone)
            assert p.quiet_hours
            assert p.joined_on < START.date()

    def test_contracts_opt_outs_and_suspended_lines_occur(self) -> None:
        """A simulated history had none, so contract-expiry rules never fired in a
        backtest of one, nor opt-outs or suspended lines held anything (analyst review)."""
        events = take(simulate(1000, 100, seed=7, start=START), 60_000)
        profiles = [e.value for e in events if e.event_type is EventType.PROFILE]
        first = profiles[:1000]
        with_contract = [p for p in first if "contract_end" in p]
        assert 300 < len(with_contract) < 500  # 40%
        assert all(dt.date.fromisoformat(p["contract_end"]) >= START.date() for p in with_contract)
        assert 40 < sum(1 for p in first if p.get("opt_out")) < 130  # 8%
        updates = [p.get("status") for p in profiles[1000:] if "status" in p]
        assert "suspended" in updates
        assert "active" in updates  # and back
        # The renewal offer fires on a first profile (the first 1,000 events): the
        # detector runs over the first 5,000, not the 60,000 that bring the status changes.
        result = run_pipeline([(e.event_type, e.value) for e in events[:5_000]], default_rules())
        assert "contract_expiry_near" in {t.moment.type for t in result.tasks}


class TestLaterProfileChanges:
    """Some customers opt out of a channel or close their line after their tasks went out,
    so that a backtest of a simulated history withdraws some (`moments.task-withdrawals`),
    and its parity test with the stream compares them."""

    def test_opt_outs_and_closed_lines_come_after_the_first_profiles(self) -> None:
        events = take(
            simulate(300, 100, seed=12, start=START, opt_out_share=0.01, close_share=0.01), 60_300
        )
        later = [e.value for e in events[300:] if e.event_type is EventType.PROFILE]
        first = {str(e.key): e.value.get("opt_out") or [] for e in events[:300]}
        opt_outs = [p for p in later if "opt_out" in p]
        assert 0 < len(opt_outs) < 0.02 * len(later)
        for p in opt_outs:  # the whole list, the first profile's opt-out too
            assert set(first[str(p["subscriber_id"])]) <= set(p["opt_out"])
        closed = {str(p["subscriber_id"]) for p in later if p.get("status") == "closed"}
        assert closed
        after = set()
        for p in later:
            sub = str(p["subscriber_id"])
            if sub in after:
                assert "status" not in p, "a closed line is neither suspended nor reactivated"
            if p.get("status") == "closed":
                after.add(sub)

    def test_they_take_the_place_of_tier_updates_and_the_rest_is_drawn_as_before(
        self,
    ) -> None:
        """The same stream with and without them, but for the updates that opt out or
        close, and a closed line's status updates (tier updates instead): a default
        history makes the same tasks but for those customers'."""
        with_ = take(simulate(200, 100, seed=13, start=START, close_share=0.01), 40_200)
        without = take(
            simulate(200, 100, seed=13, start=START, opt_out_share=0, close_share=0), 40_200
        )
        closed: set[str] = set()
        changed = 0
        for new, old in zip(with_, without, strict=True):
            assert new.value["event_id"] == old.value["event_id"]
            if new.value == old.value:
                continue
            changed += 1
            assert new.event_type is old.event_type is EventType.PROFILE
            assert "tier" in old.value or new.key in closed
            assert (
                "opt_out" in new.value
                or new.value.get("status") == "closed"
                or (new.key in closed and "tier" in new.value)
            )
            if new.value.get("status") == "closed":
                closed.add(new.key)
        assert changed > 0


class TestEventGenerator:
    def test_same_seed_same_stream_other_seed_other_stream(self) -> None:
        def lines(seed: int) -> list[bytes]:
            return [e.to_json_line() for e in take(simulate(50, 10, seed=seed, start=START), 300)]

        assert lines(3) == lines(3)
        assert lines(3) != lines(4)

    def test_every_event_is_valid_against_the_contract_models(self) -> None:
        for event in take(simulate(200, 100, seed=5, plant_rate=0.05, start=START), 5000):
            validate(event)
            assert event.key == event.value["subscriber_id"]

    def test_profiles_come_first_then_the_mix_is_mostly_usage(self) -> None:
        events = take(simulate(100, 100, seed=6, start=START), 20_100)
        assert {e.event_type for e in events[:100]} == {EventType.PROFILE}
        counts = Counter(e.event_type for e in events[100:])
        total = sum(counts.values())
        assert counts[EventType.USAGE] / total > 0.7
        assert counts[EventType.USAGE] > counts[EventType.TOPUP] > counts[EventType.ROAMING]
        assert counts[EventType.TOPUP] > counts[EventType.COMPLAINT] > 0
        assert counts[EventType.ROAMING] / total < 0.05
        assert counts[EventType.COMPLAINT] / total < 0.05

    def test_event_time_advances_by_the_rate_in_the_subscribers_time_zone(self) -> None:
        events = take(simulate(10, 4, seed=7, start=START), 50)
        times = [dt.datetime.fromisoformat(str(e.value["occurred_at"])) for e in events]
        assert times[0] == START
        assert times[49] - times[0] == dt.timedelta(seconds=49 / 4)
        assert all(t.utcoffset() is not None for t in times)

    def test_planted_moments_arrive_at_the_planted_rate(self) -> None:
        events = take(simulate(1000, 100, seed=8, plant_rate=0.02, start=START), 51_000)
        planted = Counter(e.planted for e in events[1000:] if e.planted)
        share = sum(planted.values()) / 50_000
        assert 0.015 < share < 0.025
        assert set(planted) == set(Plant.ALL)

    def test_planted_events_carry_what_makes_the_moment(self) -> None:
        events = take(simulate(300, 100, seed=9, plant_rate=0.2, start=START), 5000)
        visited: dict[str, set[str]] = {}
        for e in events:
            if e.event_type is EventType.ROAMING and e.value["roaming_type"] == "international":
                country = str(e.value["country"])
                seen = visited.setdefault(e.key, set())
                assert (e.planted == Plant.ROAMING) == (country not in seen)
                seen.add(country)
            if e.planted == Plant.HOTLINE:
                assert e.value["counterparty"] in COMPETITOR_HOTLINES
            if e.planted == Plant.LOW_BALANCE:
                assert float(e.value["balance_after"]) < 5
            if e.planted == Plant.COMPLAINT:
                assert e.value["status"] == "opened"
            if e.planted is None and "balance_after" in e.value:
                assert float(e.value["balance_after"]) >= 30, "only planted events run low"

    def test_the_default_catalog_detects_every_planted_moment(self) -> None:
        """Before gating, each planted moment fires exactly once; do-not-disturb (quiet
        hours, frequency cap, cooldowns) may then hold some back, never add any."""
        events = take(simulate(400, 50, seed=10, plant_rate=0.02, start=START), 8400)
        planted = Counter(e.planted for e in events if e.planted)
        records = to_records((e.event_type, e.value) for e in events)
        detector = Detector(default_rules(), {t.value: t for t in EventType})
        store = DictStateStore()
        detected: Counter[str] = Counter()
        for start in range(0, len(records), 5000):
            batch = detector.process(records[start : start + 5000], store.load, None)
            store.save(batch.changes)
            detected.update({moment_type: n for (_, moment_type), n in batch.detected.items()})
            assert not batch.dead_letters
        assert {kind: detected[kind] for kind in Plant.ALL} == dict(planted)
        tasks = Counter(
            t.moment.type
            for t in run_pipeline(((e.event_type, e.value) for e in events), default_rules()).tasks
        )
        for kind in Plant.ALL:
            assert 0 < tasks[kind] <= planted[kind], kind

    def test_bad_arguments_are_refused_with_the_fix(self) -> None:
        with pytest.raises(ValueError, match="--rate"):
            simulate(10, 0)
        with pytest.raises(ValueError, match="--subscribers"):
            simulate(0, 10)


class TestOutputs:
    def test_limit_is_profiles_plus_rate_times_duration(self) -> None:
        events = simulate(30, 20, seed=1, start=START)
        assert limit(events, 20, 10) == 30 + 200
        assert limit(events, 20, None) is None

    @pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
    def test_jsonl_file_has_one_typed_event_per_line(self, tmp_path: Path, name: str) -> None:
        path = tmp_path / name
        stats = write_jsonl(path, iter(simulate(20, 10, seed=2, start=START)), 120)
        raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
        docs = [orjson.loads(line) for line in raw.splitlines()]
        assert len(docs) == 120 == sum(stats.events.values())
        assert Counter(d["type"] for d in docs) == stats.events
        assert {d["type"] for d in docs} <= {t.value for t in EventType}

    def test_writing_a_file_reports_its_progress(self, tmp_path: Path) -> None:
        """Three weeks of 2,000 subscribers took over a minute to write with nothing on
        the screen (new user's walk): `progress` is told the events written."""
        told: list[int] = []
        events = iter(simulate(20, 10, seed=2, start=START))
        write_jsonl(tmp_path / "e.jsonl", events, 25_000, told.append)
        assert told == [10_000, 20_000, 25_000]

    def test_cli_says_how_far_it_is_while_it_writes_a_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Captured, stderr is no terminal: progress lines (moments.progresslines), the
        last with every event written."""
        argv = ["simulate", "--subscribers", "5", "--rate", "10", "--seed", "1"]
        assert main([*argv, "--duration", "2", "--to-file", str(tmp_path / "o.jsonl")]) == 0
        assert "simulate: 25 events in " in capsys.readouterr().err

    def test_cli_without_a_rate_is_told_one_that_fits_the_subscribers(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`moments simulate --subscribers 200 --duration 3d --to-file ...` was told only
        "the following arguments are required: --rate", with `events/s` in the help: no
        word of whether 0.1 or 1,000 made a history of 200 subscribers (analyst walk)."""
        path = tmp_path / "o.jsonl"
        argv = ["simulate", "--subscribers", "200", "--duration", "3d", "--to-file", str(path)]
        assert main(argv) == 2
        assert capsys.readouterr().err == (
            "moments: --rate R is needed: events a second, all subscribers together (of event "
            "time with --to-file); --rate 0.083 gives 200 subscribers about 36 events each a "
            "day, as the README's history (2,000 at 0.83)\n"
        )
        assert not path.exists()
        assert main(["simulate", "--subscribers", "2000", "--duration", "1"]) == 2
        assert "--rate 0.83 gives 2,000 subscribers" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            main(["simulate", "--help"])
        assert "--subscribers N --rate R [--duration T]" in capsys.readouterr().out

    def test_cli_takes_a_duration_as_the_rules_write_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Two days of history were `--duration 172800`, three weeks `1814400`, where
        every other duration of the project is written `2d`, `3w` (analyst walk)."""
        path = tmp_path / "out.jsonl"
        argv = ["simulate", "--subscribers", "5", "--rate", "1", "--seed", "1"]
        assert main([*argv, "--duration", "1m", "--to-file", str(path)]) == 0
        assert len(path.read_bytes().splitlines()) == 5 + 60
        with pytest.raises(SystemExit):
            main([*argv, "--duration", "two days", "--to-file", str(path)])
        assert "write seconds (3600) or a duration (1h, 2d, 3w)" in capsys.readouterr().err
        with pytest.raises(SystemExit):  # words get the hint a rules file's duration gets
            main([*argv, "--duration", "2 days", "--to-file", str(path)])
        assert "--duration: '2 days': write 2d" in capsys.readouterr().err

    @pytest.mark.parametrize("value", ["9" * 5000, "9" * 5000 + "x", "9" * 5000 + " days"])
    def test_cli_echoes_a_duration_of_thousands_of_digits_cut_short(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
    ) -> None:
        """The error repeated the value whole: pages of digits before the fix."""
        argv = ["simulate", "--subscribers", "5", "--rate", "1", "--duration", value]
        with pytest.raises(SystemExit):
            main([*argv, "--to-file", str(tmp_path / "o.jsonl")])
        said = capsys.readouterr().err
        assert "9" * 17 + "..." in said, said[-300:]
        assert len(said) < 1500, said[-300:]

    @pytest.mark.parametrize(
        ("option", "value", "fix"),
        [
            ("--duration", "inf", DURATION_RANGE),
            ("--duration", "nan", DURATION_RANGE),
            ("--rate", "inf", "write a finite number above 0"),
            ("--rate", "nan", "write a finite number above 0"),
        ],
    )
    def test_cli_refuses_a_number_that_is_no_amount(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        option: str,
        value: str,
        fix: str,
    ) -> None:
        """`inf` and `nan` passed as numbers above 0 (nan is not <= 0) and ended in a
        traceback (OverflowError, ValueError) once the events were counted."""
        argv = ["simulate", "--subscribers", "5", "--rate", "1", "--duration", "10"]
        with pytest.raises(SystemExit):
            main([*argv, option, value, "--to-file", str(tmp_path / "o.jsonl")])
        assert fix in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("value", "quoted"),
        [
            ("0s", "'0s'"),
            ("0", "'0'"),
            ("-5", "'-5'"),
            ("0" * 40 + "h", "'00000000000000000...'"),
            ("\x1b[2J0d", "'\\x1b[2J0d'"),
            ("36501d", "'36501d'"),
            ("3153600001", "'3153600001'"),
            ("two days", "'two days'"),
        ],
    )
    def test_cli_refuses_a_duration_out_of_range_quoted_cut_and_told_the_range(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, quoted: str
    ) -> None:
        """`--duration 0s` was echoed whole and unquoted (`0s: write a duration above 0`,
        forty zeros and an escape sequence alike), and no message named the longest
        duration taken; `36501d` was told only the forms to write."""
        argv = ["simulate", "--subscribers", "5", "--rate", "1", "--duration", value]
        with pytest.raises(SystemExit):
            main([*argv, "--to-file", str(tmp_path / "o.jsonl")])
        said = capsys.readouterr().err.strip().splitlines()[-1]
        assert said.endswith(f"--duration: {quoted}: {DURATION_RANGE}"), said
        assert "\x1b" not in said, said
        assert not (tmp_path / "o.jsonl").exists()

    def test_cli_takes_the_longest_duration_it_names(self) -> None:
        from moments.simulate_cli import _seconds

        assert _seconds("36500d") == _seconds("3153600000") == 36500 * 86400

    def test_cli_writes_the_file_and_refuses_to_file_without_a_duration(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "out.jsonl"
        argv = ["simulate", "--subscribers", "5", "--rate", "10", "--seed", "1"]
        assert main([*argv, "--duration", "2", "--to-file", str(path)]) == 0
        assert len(path.read_bytes().splitlines()) == 5 + 20
        assert main([*argv, "--to-file", str(path)]) == 2
        said = capsys.readouterr().err
        assert "--to-file needs --duration" in said
        # A new user's first hour (review): it said "(seconds of traffic to write)", and
        # the histories the docs simulate are written 2d or 3w.
        assert "in seconds or as 2d, 3w" in said


@pytest.mark.parametrize("folder", ["out/", "existing"])
def test_a_to_file_naming_a_folder_is_told_to_name_a_file_in_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    """`--to-file out/` wrote the history to a file named `out` (the path's last slash
    dropped), which `--out out/` of the backtest then could not make; an existing folder
    was told "Is a directory" with no fix (analyst walk)."""
    (tmp_path / "existing").mkdir()
    given = f"{tmp_path}/{folder}"
    argv = ["simulate", "--subscribers", "5", "--rate", "10", "--duration", "2"]
    assert main([*argv, "--to-file", given]) == 2
    said = capsys.readouterr().err
    assert f"--to-file {given} names a folder: name the file to write in it, e.g. " in said
    assert str(Path(given) / "events.jsonl.gz") in said
    assert not (tmp_path / "out").exists()


def test_a_to_file_that_cannot_be_written_is_said_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder that does not exist ended in FileNotFoundError's traceback (recheck)."""
    path = tmp_path / "no-such-folder" / "h.jsonl.gz"
    argv = ["simulate", "--subscribers", "5", "--rate", "10", "--duration", "2"]
    assert main([*argv, "--to-file", str(path)]) == 2  # set-up, as a missing input
    err = " ".join(capsys.readouterr().err.split())
    assert f"moments: cannot write --to-file {path}: No such file or directory" in err


class TestStart:
    """`--start`: the simulated history dated from a fixed time, not the wall clock, so
    the same seed and start write the same bytes on any day (the docs' figures were
    comparable within a day only)."""

    ARGV = ("simulate", "--subscribers", "20", "--rate", "2", "--duration", "1h", "--seed", "3")

    @pytest.mark.parametrize("name", ["week.jsonl.gz", "week.jsonl"])
    def test_the_same_seed_and_start_write_the_same_bytes_on_another_day(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
    ) -> None:
        written = []
        for day, prefix in enumerate(("monday", "tuesday")):
            # gzip dates its header by time.time(): a day later, another header
            monkeypatch.setattr(time, "time", lambda day=day: 1_800_000_000.0 + day * 86400)
            path = tmp_path / f"{prefix}-{name}"  # and names the file in it
            assert main([*self.ARGV, "--start", "2026-01-05", "--to-file", str(path)]) == 0
            written.append(path.read_bytes())
        assert written[0] == written[1]
        raw = gzip.decompress(written[0]) if name.endswith(".gz") else written[0]
        first = orjson.loads(raw.splitlines()[0])
        # a date is midnight in the default zone (Asia/Shanghai), as the backtest's days
        assert dt.datetime.fromisoformat(first["occurred_at"]) == dt.datetime(
            2026, 1, 5, tzinfo=ZoneInfo("Asia/Shanghai")
        )

    def test_another_start_another_history_and_an_instant_is_taken(self, tmp_path: Path) -> None:
        paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
        starts = ("2026-01-05", "2026-01-05T09:30:00+08:00")
        for start, path in zip(starts, paths, strict=True):
            assert main([*self.ARGV, "--start", start, "--to-file", str(path)]) == 0
        first = orjson.loads(paths[1].read_bytes().splitlines()[0])
        assert first["occurred_at"].startswith("2026-01-05T09:30:00")
        assert paths[0].read_bytes() != paths[1].read_bytes()

    @pytest.mark.parametrize(
        ("start", "said"),
        [
            ("next monday", "--start 'next monday': write a date (2026-12-01) or RFC 3339"),
            ("2026-02-30", "2026-02-30 is no date: February 2026 has 28 days"),
            ("2026-01-05T08:00:00", "add an offset, e.g. 2026-01-05T08:00:00+08:00"),
            ("2d", "--start '2d': write a date (2026-12-01) or RFC 3339"),
            ("9999-01-01", "--start '9999-01-01': events carry times from 1969-12-31"),
            ("1969-12-31T20:00:00+00:00", "events carry times of the years 1970-9898"),
            ("9898-12-30", "events carry times of the years 1970-9898"),
        ],
    )
    def test_a_start_that_makes_no_valid_history_is_refused_naming_the_fix(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], start: str, said: str
    ) -> None:
        path = tmp_path / "o.jsonl"
        assert main([*self.ARGV, "--start", start, "--to-file", str(path)]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert said in err, err
        assert not path.exists()
