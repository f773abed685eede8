"""`--to` far past the history: event time runs on over the hours at which no record is
due for its sweep (`BacktestState.next_due`), releasing waiting tasks each at its own
time on the way, so the run takes the work there is, not an hour's work per hour of
event time (one event of 2026 and `backtest --to 2126-11-02` had not finished after
200 s). Rules swept every day (windows closing, special days) have a day's work per
record however long nothing comes, and the backtest's report a row per day: a `--to`
further than `moments.runon.RUN_ON_MAX_DAYS` after the last event is refused, naming the
latest one taken (by `rules test` only with rules swept)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

import rules
from moments.backtest import Backtest, BacktestResult
from moments.backtest_input import EventFile, FileEvent
from moments.cli import main
from moments.exceptions import ConfigError
from moments.models import EventType
from moments.runon import RUN_ON_MAX_DAYS, run_on_refusal
from moments.store import DictStateStore
from rules.catalog import RuleSet

from .catalogs import default_rules
from .rules.helpers import BIRTHDAY, NO_ACTIVITY, NO_GATES, ev, rules_from

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
NIGHT_SMS = """
gating: {quiet_hours: ["22:00-08:00"], frequency_cap: null}
rules:
  - id: topup_thanks
    description: Thanks for a top-up
    on: [topup]
    condition: {field: amount, gte: 1}
    task: {family: anomaly, type: topup_thanks, channel: sms, priority: 4,
           action: thanks, ttl: 3d, description: "Thanks for {amount}"}
"""
"""No rule swept: after the last event only the deferral queue has anything to do."""


def _lines(events: list[tuple[EventType, dict[str, Any]]]) -> list[FileEvent]:
    return [
        FileEvent(
            dt.datetime.fromisoformat(str(value["occurred_at"])).timestamp(),
            event_type,
            str(value["subscriber_id"]).encode(),
            orjson.dumps(value),
        )
        for event_type, value in events
    ]


def _backtest(
    rules: RuleSet,
    events: list[tuple[EventType, dict[str, Any]]] | Path,
    until: str,
    hourly: bool = False,
) -> tuple[BacktestResult, list[int]]:
    """The backtest to `until`, and the event times of its sweeps; `hourly`: over a store
    with no index (`DictStateStore`), every record swept every hour, as on the stream."""
    bt = Backtest(rules)
    if hourly:
        bt.state = DictStateStore()
    swept: list[int] = []
    sweep = bt._sweep

    async def counted(mark: int) -> None:
        swept.append(mark)
        await sweep(mark)

    bt._sweep = counted  # type: ignore[method-assign]  # to count the sweeps
    end = dt.datetime.fromisoformat(until).timestamp()
    lines = EventFile(events) if isinstance(events, Path) else _lines(events)
    return asyncio.run(bt.run(lines, until=end)), swept


def _published(result: BacktestResult) -> list[tuple[float, bytes]]:
    return [(p.at, p.payload) for p in result.published]


class TestNothingSwept:
    def test_a_to_in_9000_gives_the_next_days_tasks_and_sweeps_nothing(self) -> None:
        """A top-up at 22:30 waits for quiet hours to end at 08:00: a `--to` in the year
        9000 publishes it as a `--to` the next noon does, with no sweep after the event."""
        topup = ev(EventType.TOPUP, "2026-11-02T22:30:00+08:00", amount=50, channel="app")
        near, _ = _backtest(rules_from(NIGHT_SMS), [topup], "2026-11-03T12:00:00+08:00")
        far, swept = _backtest(rules_from(NIGHT_SMS), [topup], "9000-01-01T00:00:00+08:00")
        assert [orjson.loads(p.payload)["deferred"]["reason"] for p in near.published] == [
            "quiet_hours"
        ]
        assert _published(far) == _published(near)
        assert far.waiting_at_end == near.waiting_at_end == 0
        assert swept == []

    def test_ten_years_on_sweeps_no_hour(self) -> None:
        """Swept hour by hour, ten years were 87,660 sweeps of nothing."""
        topup = ev(EventType.TOPUP, "2026-11-02T10:00:00+08:00", amount=50, channel="app")
        result, swept = _backtest(rules_from(NIGHT_SMS), [topup], "2036-11-02T00:00:00+08:00")
        assert len(result.published) == 1
        assert swept == []


class TestSweptRules:
    RULES = NO_GATES + "rules:" + BIRTHDAY + NO_ACTIVITY

    def history(self) -> list[tuple[EventType, dict[str, Any]]]:
        return [
            ev(EventType.PROFILE, "2026-11-01T10:00:00+08:00", birthday="03-05"),
            ev(EventType.TOPUP, "2026-11-02T10:00:00+08:00", amount=50, channel="app"),
        ]

    def test_a_year_on_sweeps_the_due_hours_only_with_the_hourly_sweeps_tasks(self) -> None:
        """A year past the last event: the silence told once, the birthday once, the same
        tasks at the same times as sweeping every hour; two sweeps a day (the local
        midnight's closes, the 09:00 look), not 24."""
        rules = rules_from(self.RULES)
        until = "2027-11-02T00:00:00+08:00"
        jumped, swept = _backtest(rules, self.history(), until)
        hourly, every = _backtest(rules, self.history(), until, hourly=True)
        assert _published(jumped) == _published(hourly)
        assert jumped.ledger == hourly.ledger
        made = [orjson.loads(p.payload)["moment"]["type"] for p in jumped.published]
        assert made == ["no_activity", "birthday"]
        assert len(every) > 8700  # the hours of the year
        assert len(swept) <= 2 * 366 + 2

    def test_a_to_more_than_ten_years_on_is_refused_naming_the_latest_taken(self) -> None:
        with pytest.raises(ConfigError) as refused:
            _backtest(rules_from(self.RULES), self.history(), "2126-11-02T00:00:00+08:00")
        said = str(refused.value)
        assert "--to 2126-11-02 is 36,523 days after the last event" in said
        assert "(2036-11-02 at the latest)" in said

    def test_a_from_more_than_ten_years_after_the_history_is_refused(self) -> None:
        bt = Backtest(
            rules_from(self.RULES),
            report_from=dt.datetime(9000, 1, 1, tzinfo=SHANGHAI).timestamp(),
        )
        with pytest.raises(ConfigError, match=r"^--from 9000-01-01 is "):
            asyncio.run(bt.run(_lines(self.history())))


def test_the_limit_is_ten_years_after_the_last_event_and_only_for_swept_rules() -> None:
    last = dt.datetime(2026, 11, 2, 10, tzinfo=SHANGHAI).timestamp()
    limit = last + RUN_ON_MAX_DAYS * 86400
    swept = rules_from(NO_GATES + "rules:" + BIRTHDAY)
    assert run_on_refusal(swept, last, limit) is None
    assert run_on_refusal(swept, last, limit + 1) is not None
    assert run_on_refusal(rules_from(NIGHT_SMS), last, limit + 1) is None
    reported = run_on_refusal(rules_from(NIGHT_SMS), last, limit + 1, every_day_reported=True)
    assert reported is not None
    assert "the report would list every day up to it" in reported


def test_a_simulated_history_run_on_ten_days_is_swept_as_every_hour(
    tmp_path: Path,
) -> None:
    """The default catalog over simulated days, then ten days of event time past them
    (windows close, silences are told, waiting tasks are released, cooldowns given back):
    the same tasks, at the same times, and ledger as sweeping every record every hour."""
    from moments.simulate import simulate

    start = dt.datetime(2026, 11, 1, tzinfo=SHANGHAI)
    stream = simulate(30, 0.01, seed=7, plant_rate=0.2, start=start)
    path = tmp_path / "h.jsonl"
    path.write_bytes(
        b"".join(e.to_json_line() + b"\n" for _, e in zip(range(1000), stream, strict=False))
    )
    until = "2026-11-12T00:00:00+08:00"
    jumped, _ = _backtest(default_rules(), path, until)
    hourly, _ = _backtest(default_rules(), path, until, hourly=True)
    last = jumped.last_event
    assert last is not None
    after = [orjson.loads(p.payload) for p in jumped.published if p.at > last]
    assert {t["moment"]["type"] for t in after} >= {"no_activity", "low_balance"}
    assert any(t["deferred"] for t in after)  # released in the run on
    assert _published(jumped) == _published(hourly)
    assert jumped.ledger == hourly.ledger


class TestCommands:
    def _events(self, tmp_path: Path) -> Path:
        path = tmp_path / "e.jsonl"
        lines = [
            {"type": "profile", **ev(EventType.PROFILE, "2026-11-01T10:00:00+08:00")[1]},
            {
                "type": "topup",
                **ev(EventType.TOPUP, "2026-11-02T10:00:00+08:00", amount=50, channel="app")[1],
            },
        ]
        path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        return path

    def test_rules_test_refuses_a_to_in_9000(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = self._events(tmp_path)
        catalog = Path(rules.__file__).parent / "catalog" / "default.yaml"
        code = main(["rules", "test", str(catalog), "--events", str(events), "--to", "9000-01-01"])
        assert code == 2
        err = capsys.readouterr().err
        assert "--to 9000-01-01 is 2,546,895 days" in err
        assert "Give a --to at most 3,653 days (ten years) after the last event" in err

    def test_backtest_refuses_a_to_in_9000(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = self._events(tmp_path)
        argv = ["backtest", "--events", str(events), "--out", str(tmp_path / "out")]
        assert main([*argv, "--to", "9000-01-01"]) == 2
        assert "(2036-11-02 at the latest)" in capsys.readouterr().err

    def test_backtest_refuses_it_with_no_rule_swept_for_its_report_of_every_day(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The run itself would end at once (`TestNothingSwept`), but the report has a row
        per day up to `--to`: 2.5 million of them were not written after 10 minutes."""
        rules_file = tmp_path / "r.yaml"
        rules_file.write_text(NIGHT_SMS)
        argv = ["backtest", "--events", str(self._events(tmp_path)), "--rules", str(rules_file)]
        assert main([*argv, "--out", str(tmp_path / "out"), "--to", "9000-01-01"]) == 2
        assert "a row per day in its tables" in capsys.readouterr().err

    def test_state_seed_refuses_a_to_in_2126_with_the_default_catalog(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = str(self._events(tmp_path))
        assert main(["state", "seed", "--events", events, "--dry-run", "--to", "2126-11-02"]) == 2
        assert "--to 2126-11-02 is 36,523 days after the last event" in capsys.readouterr().err
