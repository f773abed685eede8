"""`moments backtest` on small hand-written histories: the report's numbers are checked
against counts the test works out from its own scenario, not from the code under test."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import html
import re
import stat
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from moments.backtest import Backtest, BacktestResult, longest_memory
from moments.backtest_input import EventFile, FileEvent, merged
from moments.backtest_report import (
    build_report,
    chart_png,
    compare,
    html_page,
    markdown,
    partial_days_note,
    report_warnings,
)
from moments.backtest_state import BacktestState
from moments.cli import main
from moments.models import Channel, EventType
from moments.rulecheck import EventFileError
from moments.taskbuilder import task_id
from rules.catalog import load_rules, load_texts
from sinks.policy import DispatchPolicy

from .calls import counted_calls
from .catalogs import default_rules
from .rules.helpers import WELCOME

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
DAY1 = dt.date(2026, 11, 10)
DAY2 = dt.date(2026, 11, 11)
BIG = 100  # big_topup fires at amounts >= BIG (manager call), small_topup below (SMS)
NJ_MANAGER_LIMIT = 2

RULES = """
gating:
  quiet_hours: []
  frequency_cap: null
rules:
  - id: big_topup
    description: A large top-up
    on: [topup]
    condition: {field: amount, gte: $min}
    params: {min: %(big)s}
    task: {family: anomaly, type: big_topup, channel: manager, priority: %(priority)s,
           action: thank_you_call, ttl: 3d, description: "Top-up of {amount}"}
  - id: small_topup
    description: A small top-up
    on: [topup]
    condition: {field: amount, lt: %(big)s}
    task: {family: first_time, type: small_topup, channel: sms, priority: 4,
           action: thanks_sms, ttl: 3d, description: "Top-up of {amount}"}
%(extra)s
"""

LEGACY = """
  - id: legacy_roaming
    description: Any roaming record
    on: [roaming]
    condition: {field: country}
    task: {family: first_time, type: roaming, channel: sms, priority: 4,
           action: roaming_sms, ttl: 1d, description: "Roaming in {country}"}
"""


@dataclass(frozen=True)
class TopUp:
    sub: str
    region: str
    day: dt.date
    minute: int  # minutes after 10:00 local time
    amount: int

    @property
    def at(self) -> dt.datetime:
        return dt.datetime.combine(self.day, dt.time(10), SHANGHAI) + dt.timedelta(
            minutes=self.minute
        )

    def event(self, n: int) -> dict[str, Any]:
        return {
            "type": "topup",
            "event_id": f"t{n}",
            "subscriber_id": self.sub,
            "occurred_at": self.at.isoformat(),
            "region": self.region,
            "amount": self.amount,
            "channel": "app",
        }


SCENARIO = [
    TopUp("13900000001", "NJ", DAY1, 0, 150),
    TopUp("13900000002", "NJ", DAY1, 5, 100),
    TopUp("13900000003", "NJ", DAY1, 10, 200),  # third NJ manager call of the day: no room
    TopUp("13900000004", "NJ", DAY1, 15, 120),  # fourth: no room either
    TopUp("13900000005", "SH", DAY1, 20, 300),  # SH has no manager limit
    TopUp("13900000001", "NJ", DAY1, 60, 30),  # SMS, unlimited
    TopUp("13900000001", "NJ", DAY2, 0, 500),  # a new day: room again
]
ROAMING = {
    "type": "roaming",
    "event_id": "r1",
    "subscriber_id": "13900000006",
    "occurred_at": dt.datetime.combine(DAY1, dt.time(11), SHANGHAI).isoformat(),
    "region": "SH",
    "country": "JP",
    "roaming_type": "international",
}


def write_rules(path: Path, big: int = BIG, priority: int = 3, extra: str = "") -> Path:
    path.write_text(RULES % {"big": big, "priority": priority, "extra": extra})
    return path


def write_history(path: Path, with_roaming: bool = False) -> Path:
    docs = [t.event(n) for n, t in enumerate(SCENARIO)]
    if with_roaming:
        docs.append(ROAMING)
    docs.sort(key=lambda d: dt.datetime.fromisoformat(str(d["occurred_at"])))
    data = b"".join(orjson.dumps(d) + b"\n" for d in docs)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def capacity_policy() -> DispatchPolicy:
    return DispatchPolicy.model_validate(
        {
            "capacity": {"NJ": {"manager": NJ_MANAGER_LIMIT}},
            "reserved_share": 0,
            "overflow": {"big_topup": {"policy": "drop"}},
            "merge": {"window": "30m", "hold_channels": []},
        }
    )


def run(rules: Path, history: Path, policy: DispatchPolicy | None = None) -> BacktestResult:
    bt = Backtest(load_rules(rules), policy or capacity_policy())
    return asyncio.run(bt.run(EventFile(history)))


def expected_from_scenario() -> dict[str, Any]:
    """What the report must say, worked out from SCENARIO with the policy's rules:
    at most NJ_MANAGER_LIMIT manager calls per NJ day, the rest dropped."""
    taken: Counter[tuple[dt.date, str]] = Counter()
    needed: Counter[tuple[dt.date, str, str]] = Counter()
    sent: Counter[tuple[str, str, str]] = Counter()  # (day, family, channel)
    dropped = 0
    for t in SCENARIO:
        big = t.amount >= BIG
        channel = "manager" if big else "sms"
        needed[(t.day, t.region, channel)] += 1
        if big and t.region == "NJ":
            if taken[(t.day, t.region)] >= NJ_MANAGER_LIMIT:
                dropped += 1
                continue
            taken[(t.day, t.region)] += 1
        sent[(t.day.isoformat(), "anomaly" if big else "first_time", channel)] += 1
    return {"needed": needed, "taken": taken, "sent": sent, "dropped": dropped}


class TestReportNumbers:
    def test_tasks_capacity_suppressed_and_top_rules(self, tmp_path: Path) -> None:
        result = run(write_rules(tmp_path / "r.yaml"), write_history(tmp_path / "h.jsonl"))
        report = build_report(result)
        want = expected_from_scenario()

        by_family = Counter(
            {(r["day"], r["family"]): r["tasks"] for r in report["tasks_per_day"]["family"]}
        )
        want_family: Counter[tuple[str, str]] = Counter()
        for (day, family, _), n in want["sent"].items():
            want_family[(day, family)] += n
        assert by_family == want_family
        by_channel = Counter(
            {(r["day"], r["channel"]): r["tasks"] for r in report["tasks_per_day"]["channel"]}
        )
        want_channel: Counter[tuple[str, str]] = Counter()
        for (day, _, channel), n in want["sent"].items():
            want_channel[(day, channel)] += n
        assert by_channel == want_channel
        assert report["summary"]["tasks"] == sum(want["sent"].values())
        assert report["summary"]["events"] == len(SCENARIO)
        subscribers = {e.sub for e in SCENARIO}
        sizes = report["summary"]["state_bytes_per_subscriber"]
        assert sizes["subscribers"] == len(subscribers)
        assert 0 < sizes["mean"] <= sizes["p99"] <= sizes["max"]

        capacity = {(r["day"], r["region"], r["channel"]): r for r in report["capacity"]}
        nj_day1 = capacity[(DAY1.isoformat(), "NJ", "manager")]
        assert nj_day1["needed"] == want["needed"][(DAY1, "NJ", "manager")]
        assert nj_day1["taken"] == NJ_MANAGER_LIMIT
        assert nj_day1["configured"] == NJ_MANAGER_LIMIT
        sh_day1 = capacity[(DAY1.isoformat(), "SH", "manager")]
        assert (sh_day1["needed"], sh_day1["configured"]) == (1, None)
        nj_day2 = capacity[(DAY2.isoformat(), "NJ", "manager")]
        assert (nj_day2["needed"], nj_day2["taken"]) == (1, 1)

        assert report["suppressed"] == {"capacity": want["dropped"]}
        assert report["deferred"] == {}
        big = sum(n for (_, family, _), n in want["sent"].items() if family == "anomaly")
        small = sum(n for (_, family, _), n in want["sent"].items() if family == "first_time")
        assert report["top_rules"] == [
            {"rule_id": "big_topup", "tasks": big, "merged_into_others": 0},
            {"rule_id": "small_topup", "tasks": small, "merged_into_others": 0},
        ]
        assert sorted(result.ledger.values()) == sorted(
            ["sent"] * sum(want["sent"].values()) + ["dropped"] * want["dropped"]
        )

    def test_the_regions_not_listed_are_one_row_of_the_star_pool(self, tmp_path: Path) -> None:
        policy = capacity_policy().model_copy(
            update={"capacity": {"NJ": {"manager": NJ_MANAGER_LIMIT}, "*": {"manager": 1}}}
        )
        result = run(write_rules(tmp_path / "r.yaml"), write_history(tmp_path / "h.jsonl"), policy)
        capacity = {
            (r["day"], r["region"], r["channel"]): r for r in build_report(result)["capacity"]
        }
        pool = capacity[(DAY1.isoformat(), "*", "manager")]
        assert (pool["needed"], pool["taken"], pool["configured"]) == (1, 1, 1)  # SH's call
        assert (DAY1.isoformat(), "SH", "manager") not in capacity  # not "unlimited" beside it

    def test_the_report_counts_overflow_as_the_stream_does(self, tmp_path: Path) -> None:
        """A fallback to SMS, whose pool is full too: the manager tasks over their pool
        never went out on SMS; the Overflow table (the stream's counter) says they wait for
        the next day, as `deferred` does, not `fallback` (3 were)."""
        policy = DispatchPolicy.model_validate(
            {
                "capacity": {"NJ": {"manager": NJ_MANAGER_LIMIT, "sms": 0}},
                "reserved_share": 0,
                "overflow": {"*": {"policy": "fallback", "channel": "sms"}},
                "merge": {"window": "30m", "hold_channels": []},
            }
        )
        result = run(write_rules(tmp_path / "r.yaml"), write_history(tmp_path / "h.jsonl"), policy)
        report = build_report(result)
        assert report["deferred"] == {"capacity": 5}
        assert report["overflow"] == [
            {"moment_type": "big_topup", "policy": "defer", "tasks": 3},
            {"moment_type": "small_topup", "policy": "defer", "tasks": 2},
        ]
        assert "Overflow: moments over their channel's capacity" in markdown(report)

    def test_a_task_waits_for_capacity_and_goes_the_next_morning(self, tmp_path: Path) -> None:
        """Overflow `defer`: the third and fourth NJ calls wait for 09:00 the next day and
        go then, on that day's capacity; the day-2 call at 10:00 then finds no room."""
        policy = DispatchPolicy.model_validate(
            {
                "capacity": {"NJ": {"manager": NJ_MANAGER_LIMIT}},
                "reserved_share": 0,
                "overflow": {"*": {"policy": "defer"}},
                "merge": {"window": "30m", "hold_channels": []},
            }
        )
        result = run(write_rules(tmp_path / "r.yaml"), write_history(tmp_path / "h.jsonl"), policy)
        report = build_report(result)
        assert report["deferred"] == {"capacity": 3}
        released_at = [
            dt.datetime.fromtimestamp(p.at, SHANGHAI)
            for p in result.published
            if orjson.loads(p.payload)["subscriber_id"] in ("13900000003", "13900000004")
        ]
        nine = dt.datetime.combine(DAY2, dt.time(9), SHANGHAI)
        assert released_at == [nine, nine]
        assert result.waiting_at_end == 1  # the day-2 call, until 09:00 on day 3
        assert result.ledger[_task_of(result, "13900000001", DAY2)] == "deferred"
        day2 = {(r["region"], r["channel"]): r for r in report["capacity"] if r["day"] == str(DAY2)}
        assert day2[("NJ", "manager")]["taken"] == NJ_MANAGER_LIMIT
        # Day 2's need holds the two calls deferred from day 1, asking again: only the
        # day-2 call is new demand (the analyst read "needed" as new tasks).
        assert (day2[("NJ", "manager")]["needed"], day2[("NJ", "manager")]["new"]) == (3, 1)

    def test_events_before_from_warm_up_but_are_not_reported(self, tmp_path: Path) -> None:
        start = dt.datetime.combine(DAY2, dt.time(0), SHANGHAI)
        bt = Backtest(
            load_rules(write_rules(tmp_path / "r.yaml")),
            capacity_policy(),
            report_from=start.timestamp(),
        )
        result = asyncio.run(bt.run(EventFile(write_history(tmp_path / "h.jsonl"))))
        report = build_report(result)
        day2 = [t for t in SCENARIO if t.day == DAY2]
        assert report["summary"]["events"] == len(day2)
        assert report["summary"]["warmup_events"] == len(SCENARIO) - len(day2)
        assert report["summary"]["tasks"] == len(day2)
        assert report["suppressed"] == {}  # the capacity drops were on day 1
        assert {r["day"] for r in report["capacity"]} == {DAY2.isoformat()}
        # Day 1's tasks were made but not dispatched: they take no capacity, no contact.
        assert report["summary"]["warmup_tasks"] == len(SCENARIO) - len(day2)
        assert len(result.published) == len(day2)

    def test_the_chart_shows_the_tallest_day_whole_and_the_legend_beside_the_bars(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The y axis ended at the tallest day's total (the family stacked last, with no
        task that day, a bar of height 0 at its top, pinned the axis there), its bar running
        into the frame; and the legend sat over the bars at the top right, hiding the last
        days' tops on a week of similar days (analyst walk, viewing tasks_per_day.png)."""
        from matplotlib.figure import Figure

        rows = [
            ("2026-12-16", "anomaly", 49),
            ("2026-12-16", "first_time", 36),
            ("2026-12-17", "anomaly", 43),
            ("2026-12-17", "first_time", 29),
            ("2026-12-17", "special_day", 1),
            ("2026-12-18", "anomaly", 43),
            ("2026-12-18", "first_time", 27),
        ]
        report = {
            "tasks_per_day": {"family": [{"day": d, "family": f, "tasks": n} for d, f, n in rows]},
            "days": ["2026-12-16", "2026-12-17", "2026-12-18"],
            "partial_days": {},
        }
        drawn: list[Figure] = []
        save = Figure.savefig

        def keep(fig: Figure, *args: Any, **kwargs: Any) -> None:
            drawn.append(fig)
            save(fig, *args, **kwargs)

        monkeypatch.setattr(Figure, "savefig", keep)
        assert chart_png(report).startswith(b"\x89PNG")
        (fig,) = drawn
        (ax,) = fig.axes
        assert ax.get_ylim()[1] > 49 + 36  # room above the tallest day's 85
        legend = ax.get_legend()
        assert legend is not None
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # beside, not on

    def test_outputs_render(self, tmp_path: Path) -> None:
        result = run(write_rules(tmp_path / "r.yaml"), write_history(tmp_path / "h.jsonl"))
        report = build_report(result)
        png = chart_png(report)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        page = html_page(report, png)
        assert "data:image/png;base64," in page
        assert "http://" not in page
        assert "https://" not in page
        assert "<h2>Capacity needed vs configured</h2>" in page
        md = markdown(report)
        # The history begins at 10:00 on day 1: the day is marked as covered in part.
        assert f"| {DAY1.isoformat()} (from 10:00) | NJ | manager | 4 | 4 | 2 | 2 |" in md

    def test_a_shadow_rule_is_reported_and_makes_no_task(self, tmp_path: Path) -> None:
        shadow = LEGACY.replace(
            "description: Any roaming record", "mode: shadow\n    description: Any roaming record"
        )
        rules = write_rules(tmp_path / "r.yaml", extra=shadow)
        history = write_history(tmp_path / "h.jsonl", with_roaming=True)
        result = run(rules, history)
        report = build_report(result)
        assert report["shadow"] == [
            {"rule_id": "legacy_roaming", "outcome": "task", "reason": "", "moments": 1}
        ]
        assert "roaming" not in {t["moment"]["type"] for t in result.tasks()}
        assert "| legacy_roaming | task |  | 1 |" in markdown(report)
        bt = Backtest(load_rules(rules).with_shadows_live(), capacity_policy())
        live = asyncio.run(bt.run(EventFile(history)))
        assert "roaming" in {t["moment"]["type"] for t in live.tasks()}
        assert build_report(live)["shadow"] == []


def _task_of(result: BacktestResult, sub: str, day: dt.date) -> str:
    """The id of the task the backtest made for `sub`'s top-up on `day` (sent or not)."""
    [n] = [n for n, t in enumerate(SCENARIO) if t.sub == sub and t.day == day and t.amount >= BIG]
    return task_id(sub, "big_topup", f"event:t{n}")


class TestComparison:
    def test_added_removed_and_changed_per_rule(self, tmp_path: Path) -> None:
        history = write_history(tmp_path / "h.jsonl", with_roaming=True)
        policy = DispatchPolicy.model_validate({"merge": {"hold_channels": []}})
        baseline = run(
            write_rules(tmp_path / "base.yaml", big=150, priority=2, extra=LEGACY),
            history,
            policy,
        )
        candidate = run(write_rules(tmp_path / "new.yaml"), history, policy)
        diff = compare(
            [p.payload for p in baseline.published], [p.payload for p in candidate.published]
        ).as_dict()
        per_rule = {r["rule_id"]: r for r in diff["per_rule"]}
        # Amounts 100 and 120 become big (added), and leave small_topup (removed); those
        # >= 150 are big in both but with another priority (changed); those below 100
        # are small in both, with another threshold in their params (changed); the
        # roaming rule is gone.
        moved = sum(1 for t in SCENARIO if BIG <= t.amount < 150)
        kept_big = sum(1 for t in SCENARIO if t.amount >= 150)
        kept_small = sum(1 for t in SCENARIO if t.amount < BIG)
        assert per_rule["big_topup"] == {
            "rule_id": "big_topup",
            "added": moved,
            "removed": 0,
            "changed": kept_big,
            "what_changed": {"moment.params": kept_big, "priority": kept_big},
        }
        assert per_rule["small_topup"] == {
            "rule_id": "small_topup",
            "added": 0,
            "removed": moved,
            "changed": kept_small,
            "what_changed": {"moment.params": kept_small},
        }
        assert per_rule["legacy_roaming"]["removed"] == 1
        assert diff["totals"] == {
            "added": moved,
            "removed": moved + 1,
            "changed": kept_big + kept_small,
            "what_changed": {"moment.params": kept_big + kept_small, "priority": kept_big},
            "merged_into_others": [0, 0],
        }

    def test_a_changed_task_says_which_of_its_fields_differ(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A candidate that moves a threshold and a priority read `changed 5` per rule, the
        same as one that only added a quiet-hours window to the gating: the analyst had to
        diff tasks.jsonl against baseline-tasks.jsonl to tell (analyst walk). Each rule now
        names the fields that differ and in how many of its changed tasks."""
        history = write_history(tmp_path / "h.jsonl")
        base = write_rules(tmp_path / "base.yaml", big=150, priority=2)
        candidate = write_rules(tmp_path / "new.yaml")
        kept_big = sum(1 for t in SCENARIO if t.amount >= 150)
        kept_small = sum(1 for t in SCENARIO if t.amount < BIG)
        policy = tmp_path / "policy.yaml"
        policy.write_text("merge: {hold_channels: []}\n")  # as above: no call waits to merge
        out = tmp_path / "out"
        args = ["--events", str(history), "--rules", str(candidate), "--out", str(out)]
        args += ["--policy", str(policy), "--baseline-rules", str(base)]
        assert main(["backtest", *args]) == 0
        comparison = orjson.loads((out / "report.json").read_bytes())["comparison"]
        per_rule = {r["rule_id"]: r for r in comparison["per_rule"]}
        # big_topup's threshold (a param: amount_gte 150 -> 100) and its priority (2 -> 3)
        assert per_rule["big_topup"]["what_changed"] == {
            "moment.params": kept_big,
            "priority": kept_big,
        }
        # small_topup's threshold alone (amount_lt 150 -> 100)
        assert per_rule["small_topup"]["what_changed"] == {"moment.params": kept_small}
        terminal = capsys.readouterr().out
        table = terminal[terminal.index("What changed in the changed tasks") :]
        assert re.search(rf"big_topup\s*│\s*priority\s*│\s*{kept_big}\s*│", table), table
        md = (out / "report.md").read_text()
        assert f"| small_topup | moment.params | {kept_small} |" in md, md


class TestInput:
    def test_csv_gzip_and_jsonl_read_the_same_events(self, tmp_path: Path) -> None:
        jsonl = write_history(tmp_path / "h.jsonl")
        gz = write_history(tmp_path / "h.jsonl.gz")
        csv_path = tmp_path / "h.csv"
        header = "type,event_id,subscriber_id,occurred_at,region,amount,channel\n"
        rows = [
            ",".join(str(v) for v in t.event(n).values()) + "\n" for n, t in enumerate(SCENARIO)
        ]
        csv_path.write_text(header + "".join(rows))

        def key(e: FileEvent) -> tuple[float, EventType, bytes, dict[str, Any]]:
            doc = orjson.loads(e.value)
            doc.pop("type", None)  # a JSON line's own, which a CSV row's value has not
            doc["amount"] = int(doc["amount"])  # money stays text in CSV: a decimal string
            return e.at, e.event_type, e.key, doc

        from_jsonl = [key(e) for e in EventFile(jsonl)]
        assert [key(e) for e in EventFile(gz)] == from_jsonl
        assert [key(e) for e in EventFile(csv_path)] == from_jsonl
        rules = write_rules(tmp_path / "r.yaml")
        assert len(run(rules, csv_path).published) == len(run(rules, jsonl).published)

    def test_csv_reads_counts_and_quantities_as_numbers(self, tmp_path: Path) -> None:
        # Every cell of a CSV is text, and the worker refuses text for a count: the
        # reader takes the columns the contract types as numbers as numbers (a CSV of an
        # analyst's lost three quarters of its events to `invalid_event`, silently).
        rows = [
            "type,event_id,subscriber_id,occurred_at,region,status,complaint_id,category,"
            "severity,kind,quantity,counterparty,star_level,utc_offset_minutes,country,"
            "roaming_type",
            "profile,p1,13800000030,2026-11-02T08:00:00+08:00,NJ,active,,,,,,,5,,,",
            "complaint,c1,13800000030,2026-11-02T10:00:00+08:00,NJ,opened,C9,network,3,,,,,,,",
            "usage,u1,13800000030,2026-11-02T10:30:00+08:00,NJ,,,,,voice,120.5,10010,,,,",
            "roaming,r1,13800000030,2026-11-02T11:00:00+08:00,NJ,,,,,,,,,540,JP,international",
            "complaint,c2,13800000030,2026-11-02T12:00:00+08:00,NJ,opened,C9,network,high,,,,,,,",
        ]
        path = tmp_path / "h.csv"
        path.write_text("\n".join(rows) + "\n")
        docs = [orjson.loads(e.value) for e in EventFile(path)]
        assert [d.get("severity") for d in docs] == [None, 3, None, None, "high"]
        assert docs[1]["complaint_id"] == "C9"
        assert docs[2]["counterparty"] == "10010"
        assert docs[2]["quantity"] == 120.5
        assert docs[0]["star_level"] == 5
        assert docs[3]["utc_offset_minutes"] == 540
        result = run(write_rules(tmp_path / "r.yaml"), path)
        assert result.dead_letters == {"invalid_event": 1}  # the severity of "high" alone

    def test_what_a_worker_refuses_or_a_spreadsheet_writes_is_read_not_a_crash(
        self, tmp_path: Path
    ) -> None:
        """Security re-check: a year-9999 time ended the backtest in its report (the span
        was a year 10000); Excel's byte-order mark read as 'add a type column'; a cell
        over 128 KiB or a byte that is not UTF-8 was a csv traceback."""
        far = tmp_path / "far.jsonl"
        docs = [SCENARIO[0].event(0), SCENARIO[1].event(1)]
        docs[1]["occurred_at"] = "9999-12-31T23:59:59-23:59"
        far.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
        result = run(write_rules(tmp_path / "r.yaml"), far)
        assert result.dead_letters == {"invalid_event": 1}
        build_report(result)  # the span of the events it read
        bom = tmp_path / "bom.csv"
        bom.write_bytes(
            b"\xef\xbb\xbftype,event_id,subscriber_id,occurred_at,amount,channel\n"
            b"topup,t1,13800000031,2026-11-02T10:00:00+08:00,50,app\n"
        )
        assert [e.event_type.value for e in EventFile(bom)] == ["topup"]
        for name, raw, said in (
            ("wide.csv", b"type,note\ntopup," + b"x" * 200_000 + b"\n", "2: cannot read"),
            ("latin.csv", b"type,channel\ntopup,caf\xe9\n", "2: not UTF-8 text"),
        ):
            path = tmp_path / name
            path.write_bytes(raw)
            with pytest.raises(EventFileError, match=f"{name}:{said}"):
                list(EventFile(path))

    def test_files_merge_in_event_time(self, tmp_path: Path) -> None:
        a = tmp_path / "a.jsonl"
        b = tmp_path / "b.jsonl"
        docs = [t.event(n) for n, t in enumerate(SCENARIO)]
        a.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs[0::2]))
        b.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs[1::2]))
        times = [e.at for e in merged([EventFile(a), EventFile(b)])]
        assert times == sorted(times)
        assert len(times) == len(SCENARIO)

    def test_a_line_without_a_type_is_named_by_file_and_line(self, tmp_path: Path) -> None:
        """Left out and named when other lines name theirs (tests/unit/test_untyped_lines.py);
        the file is refused, naming the first, when none of its first lines does."""
        path = tmp_path / "bad.jsonl"
        path.write_text('{"type": "topup"}\n{"no type": 1}\n')
        file = EventFile(path)
        assert len(list(file)) == 1
        assert file.untyped == [2]
        path.write_text('{"no type": 1}\n')
        with pytest.raises(EventFileError, match=r"bad.jsonl:1: no event type: give --type"):
            list(EventFile(path))

    def test_each_line_becomes_the_value_a_producer_writes(self, tmp_path: Path) -> None:
        """The value is the line as written (its `type`, which a worker ignores, too),
        the type its `type` or the file's default; the key is the subscriber id as text;
        an unreadable time is 0 (the detector dead-letters it)."""
        path = tmp_path / "p.jsonl"
        lines: list[dict[str, object]] = [
            {"event_id": "a", "subscriber_id": 139, "occurred_at": "2026-11-10T10:00:00+08:00"},
            {"type": "usage", "event_id": "b", "subscriber_id": "139", "occurred_at": "soon"},
            {"type": "", "event_id": "c", "occurred_at": "2026-11-10T10:00:00Z"},
            {"type": "profile", "event_id": "d", "subscriber_id": 0},
        ]
        path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in lines))
        events = list(EventFile(path, EventType.PROFILE))
        assert [(e.event_type, e.key, e.at) for e in events] == [
            (EventType.PROFILE, b"139", dt.datetime(2026, 11, 10, 2, tzinfo=dt.UTC).timestamp()),
            (EventType.USAGE, b"139", 0.0),
            (EventType.PROFILE, b"", dt.datetime(2026, 11, 10, 10, tzinfo=dt.UTC).timestamp()),
            (EventType.PROFILE, b"0", 0.0),
        ]
        assert [e.value for e in events] == [orjson.dumps(d) for d in lines]


class TestCommand:
    def test_writes_every_output_and_respects_from_to(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        rules = write_rules(tmp_path / "r.yaml")
        history = write_history(tmp_path / "h.jsonl.gz")
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            "capacity: {NJ: {manager: 2}}\nreserved_share: 0\n"
            "overflow: {big_topup: {policy: drop}}\nmerge: {hold_channels: []}\n"
        )
        out = tmp_path / "out"
        code = main(
            [
                "backtest",
                "--events",
                str(history),
                "--rules",
                str(rules),
                "--policy",
                str(policy),
                "--out",
                str(out),
                "--from",
                DAY1.isoformat(),
                "--to",
                DAY2.isoformat(),
                "--baseline-rules",
                str(write_rules(tmp_path / "base.yaml", big=150)),
            ]
        )
        assert code == 0
        names = {p.name for p in out.iterdir()}
        assert names >= {
            "tasks.jsonl",
            "withdrawals.jsonl",
            "baseline-tasks.jsonl",
            "report.json",
            "report.md",
            "tasks_per_day.png",
            "report.html",
        }
        report = orjson.loads((out / "report.json").read_bytes())
        day1 = [t for t in SCENARIO if t.day == DAY1]
        assert report["summary"]["events"] == len(day1)
        tasks = [orjson.loads(line) for line in (out / "tasks.jsonl").read_bytes().splitlines()]
        assert len(tasks) == report["summary"]["tasks"] == len(day1) - 2  # two over capacity
        assert "comparison" in report
        assert "Capacity needed vs configured" in capsys.readouterr().out
        # The task files name subscribers: the owner's only, whatever the umask; the report
        # files, which get shared, hold figures
        for name in ("tasks.jsonl", "baseline-tasks.jsonl", "withdrawals.jsonl"):
            assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
        assert report["summary"]["tasks_withdrawn"] == 0  # no profile change in the history

    def test_a_symbolic_link_in_place_of_the_task_file_is_refused_not_followed(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "out"
        out.mkdir()
        elsewhere = tmp_path / "elsewhere.txt"
        elsewhere.write_text("theirs\n")
        (out / "tasks.jsonl").symlink_to(elsewhere)
        args = ["backtest", "--events", str(write_history(tmp_path / "h.jsonl"))]
        code = main([*args, "--rules", str(write_rules(tmp_path / "r.yaml")), "--out", str(out)])
        assert code == 2  # an output path that cannot be written: set-up
        assert elsewhere.read_text() == "theirs\n"
        assert "tasks.jsonl is a symbolic link; remove it" in capsys.readouterr().err

    def test_refused_events_are_counted_by_reason_and_the_way_to_see_them_named(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        history = write_history(tmp_path / "h.jsonl")
        with history.open("a") as file:
            file.write('{"type": "usage", "event_id": "bad", "subscriber_id": "x"}\n')
        code = main(["backtest", "--events", str(history), "--out", str(tmp_path / "out")])
        assert code == 0
        out, err = capsys.readouterr()
        assert "1 (invalid_event 1)" in out
        said = " ".join(err.split())
        assert "moments events check FILE" in said
        # ... and what was wrong, in the worker's words, most frequent first
        assert "Most often: 1 x usage: subscriber_id: write the subscriber number" in said

    def test_warnings_into_a_log_are_not_wrapped(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Captured stderr is no terminal (a CI log, `2> backtest.log`): rich wrapped the
        refused line at 80 columns, and a log took it as two records."""
        history = write_history(tmp_path / "h.jsonl")
        with history.open("a") as file:
            file.write('{"type": "usage", "event_id": "bad", "subscriber_id": "x"}\n')
        assert main(["backtest", "--events", str(history), "--out", str(tmp_path / "out")]) == 0
        lines = capsys.readouterr().err.splitlines()
        refused = [line for line in lines if "refused as a worker would refuse them" in line]
        assert refused, lines
        assert refused[0].endswith("names each line and what is wrong with it. Most often:")

    def test_refused_csv_rows_are_not_sent_to_events_check(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`moments events check` reads JSON lines only and refuses a CSV file: named as
        the way to see each refused row of a CSV history, it sent the analyst to a command
        that said it does not read CSV (as `rules test` did, 0.1.0). `rules test` lists
        each refused row with its reason."""
        history = tmp_path / "h.csv"
        history.write_text(
            "type,event_id,subscriber_id,occurred_at,amount,channel\n"
            "topup,t1,13800138001,2026-11-02T10:00:00+08:00,50,app\n"
            "topup,bad,x,2026-11-02T10:01:00+08:00,50,app\n"
        )
        code = main(["backtest", "--events", str(history), "--out", str(tmp_path / "out")])
        assert code == 0
        said = " ".join(capsys.readouterr().err.split())
        assert "1 event(s) (50.0%) refused as a worker would refuse them;" in said
        assert "events check" not in said
        assert (
            f"`moments rules test RULES --events {history}` lists the refused rows and what "
            "is wrong with each" in said
        )

    def test_bad_date_names_the_fix(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        history = write_history(tmp_path / "h.jsonl")
        code = main(["backtest", "--events", str(history), "--from", "10/11/2026"])
        assert code == 2
        assert "write a date (2026-12-01)" in capsys.readouterr().err

    def test_missing_file_names_the_fix(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["backtest", "--events", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)])
        assert code == 2  # 2, not 1: a path given wrong is set-up (README, exit codes)
        assert "no such file" in capsys.readouterr().err

    def test_a_pipe_or_a_folder_is_named_for_what_it_is(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`--events <(zcat a.gz)` (a pipe) and `--events exports/` (a folder) were refused
        as "no such file", though both are there; each is named, with what to pass."""
        import os

        pipe = tmp_path / "pipe.jsonl"
        os.mkfifo(pipe)
        code = main(["backtest", "--events", str(pipe), "--out", str(tmp_path / "out")])
        assert code == 2  # 2, not 1: a path given wrong is set-up (README, exit codes)
        err = capsys.readouterr().err.replace("\n", "")
        assert f"{pipe}: not a regular file (a pipe, as <(...) gives, or a device)" in err
        assert "no such file" not in err
        folder = tmp_path / "exports"
        folder.mkdir()
        code = main(["backtest", "--events", str(folder), "--out", str(tmp_path / "out")])
        assert code == 2  # 2, not 1: a path given wrong is set-up (README, exit codes)
        err = capsys.readouterr().err.replace("\n", "")
        assert f"{folder}: a folder; pass the files in it" in err


def test_the_documented_example_policy_loads() -> None:
    """docs/backtest-policy.yaml is what the README's example runs with."""
    from sinks.policy import load_policy

    path = Path(__file__).parents[2] / "docs" / "backtest-policy.yaml"
    policy = load_policy(path)
    assert policy.limit("NJ", Channel.MANAGER) == 4
    assert policy.limit("SH", Channel.MANAGER) == 2


def test_a_policy_path_that_is_not_there_is_named_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's recipe run outside the clone: `--policy docs/backtest-policy.yaml` was
    refused with "write it as UTF-8 YAML", as if the file were broken (new user's walk)."""
    monkeypatch.chdir(tmp_path)
    history = write_history(tmp_path / "h.jsonl")
    args = ["--events", str(history), "--policy", "docs/backtest-policy.yaml"]
    assert main(["backtest", *args, "--out", str(tmp_path / "out")]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert f"docs/backtest-policy.yaml: no such dispatch policy file, read from {tmp_path}" in said
    assert "UTF-8" not in said


def test_a_policy_found_wanting_exits_1_as_rules_refused_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's exit codes: 1 for a file read and found wanting, 2 for a path given
    wrong. A policy with its problems exited 2, rules with theirs 1; now both 1, in the
    backtest and in `rules explain --policy` as in the worker."""
    history = write_history(tmp_path / "h.jsonl")
    policy = tmp_path / "policy.yaml"
    policy.write_text("capacity:\n  bogus: 1\n")
    args = ["--events", str(history), "--policy", str(policy)]
    assert main(["backtest", *args, "--out", str(tmp_path / "out")]) == 1
    assert "invalid dispatch policy" in capsys.readouterr().err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("overflow:\n  no_such_rule: drop\n")  # names no rule: wanting too
    args = ["--events", str(history), "--policy", str(unknown)]
    assert main(["backtest", *args, "--out", str(tmp_path / "out")]) == 1
    assert "no_such_rule" in capsys.readouterr().err
    assert main(["rules", "explain", "--policy", str(policy), "low_balance"]) == 1
    assert "invalid dispatch policy" in capsys.readouterr().err


def test_a_waiting_task_is_released_before_later_facts_are_known(tmp_path: Path) -> None:
    """A big top-up at 07:00 waits for the end of quiet hours (08:00); the customer tops
    up again at 08:00:30. The stream released the task at 08:00, before that top-up,
    so it was sent; the backtest must not let the later top-up cancel it."""
    rules = tmp_path / "r.yaml"
    rules.write_text(
        (RULES % {"big": BIG, "priority": 3, "extra": ""}).replace(
            "quiet_hours: []", 'quiet_hours: ["21:00-08:00"]'
        )
    )
    sub = "13900000009"
    day = dt.datetime.combine(DAY1, dt.time(7), SHANGHAI)
    history = tmp_path / "h.jsonl"
    docs = [
        TopUp(sub, "NJ", DAY1, -180, 150).event(1),  # 07:00
        TopUp(sub, "NJ", DAY1, -120, 50).event(2) | {"occurred_at": _iso(day, 3630)},
    ]
    history.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    policy = DispatchPolicy.model_validate(
        {"relevance": {"big_topup": "topped_up"}, "merge": {"hold_channels": []}}
    )
    result = run(rules, history, policy)
    sent = {orjson.loads(p.payload)["moment"]["rule_id"]: p.at for p in result.published}
    assert sent["big_topup"] == (day + dt.timedelta(hours=1)).timestamp()
    assert build_report(result)["suppressed"] == {}


def _iso(start: dt.datetime, seconds: int) -> str:
    return (start + dt.timedelta(seconds=seconds)).isoformat()


def test_the_deferral_queue_is_looked_up_once_a_run(tmp_path: Path) -> None:
    """The dispatch of a slice steps event time to each task and fact, and looks at the
    deferral queue at every step: it is found once for the run, not at each step."""
    history = write_history(tmp_path / "h.jsonl", with_roaming=True)
    bt = Backtest(load_rules(write_rules(tmp_path / "r.yaml")), capacity_policy())
    result, calls = counted_calls(lambda: asyncio.run(bt.run(EventFile(history))))
    backtest_py = sys.modules[Backtest.__module__].__file__
    assert result.published
    assert calls[f"{backtest_py}:_advance"] > len(result.published)
    assert calls[f"{backtest_py}:_deferrals"] == 1


def test_an_unwritable_out_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    history = write_history(tmp_path / "h.jsonl")
    rules = write_rules(tmp_path / "r.yaml")
    code = main(
        ["backtest", "--events", str(history), "--rules", str(rules), "--out", str(blocker)]
    )
    assert code == 2  # an output path given wrong is set-up, as a missing input
    assert f"cannot write the report to --out {blocker}" in capsys.readouterr().err


def test_the_indexed_sweep_and_kept_records_change_no_result(tmp_path: Path) -> None:
    """BacktestState keeps records as objects and sweeps only the due ones; the same history
    through the plain DictStateStore (bytes, every record swept every hour, as the stream
    does) must give the same tasks, ledger and records. The CHECKED_DAY marker is left out:
    a sweep sets it without saving, so where it stands depends on which records were swept."""
    from moments.simulate import simulate
    from moments.state import SubscriberState
    from moments.store import DictStateStore
    from moments.sweep import CHECKED_DAY

    start = dt.datetime(2026, 11, 1, tzinfo=SHANGHAI)
    stream = simulate(150, 0.02, seed=5, plant_rate=0.2, start=start)  # ~3 days
    path = tmp_path / "h.jsonl"
    path.write_bytes(
        b"".join(e.to_json_line() + b"\n" for _, e in zip(range(5000), stream, strict=False))
    )
    rules = default_rules()
    indexed = Backtest(rules)
    plain = Backtest(rules)
    plain.state = reference = DictStateStore()
    a = asyncio.run(indexed.run(EventFile(path)))
    b = asyncio.run(plain.run(EventFile(path)))
    assert len(a.published) > 20
    assert [(p.at, p.payload) for p in a.published] == [(p.at, p.payload) for p in b.published]
    assert a.ledger == b.ledger

    def unmarked(state: SubscriberState) -> SubscriberState:
        state.closed.pop(CHECKED_DAY, None)
        return state

    kept = indexed.state
    assert isinstance(kept, BacktestState)
    assert list(kept.records) == list(reference.data)
    for sub, raw in reference.data.items():
        assert unmarked(kept.records[sub]) == unmarked(SubscriberState.from_bytes(raw)), sub


def test_a_group_deferred_again_lists_each_merged_moment_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A's hotline call waits in the merge window, its first top-up joins it; the day's
    one manager slot is B's, the next day's C's, and no SMS may go (the top-up's own
    channel: else it goes alone, not refused with the call), so A's group is deferred
    twice. Its task listed the top-up three times (the carrier as merged before, and
    the members it had merged); an analyst review found it."""
    policy = tmp_path / "cap1.yaml"
    policy.write_text(
        "timezone: Asia/Shanghai\ncapacity: {'*': {manager: 1, sms: 0}}\nreserved_share: 0\n"
        "overflow: {'*': {policy: defer}}\nnext_day_at: '09:00'\n"
        "merge: {window: 30m, hold_channels: [manager]}\n"
    )

    def profile(sub: str, at: str) -> dict[str, Any]:
        return {
            "type": "profile",
            "event_id": f"p{sub}",
            "subscriber_id": sub,
            "occurred_at": at,
            "region": "NJ",
            "tier": "gold",
            "status": "active",
        }

    def hotline(sub: str, at: str) -> dict[str, Any]:
        return {
            "type": "usage",
            "event_id": f"u{sub}",
            "subscriber_id": sub,
            "occurred_at": at,
            "region": "NJ",
            "kind": "voice",
            "quantity": 60,
            "counterparty": "10010",
        }

    a, b, c = "13800000010", "13800000011", "13800000012"
    docs = [
        profile(a, "2026-11-02T08:00:00+08:00"),
        profile(b, "2026-11-02T08:00:01+08:00"),
        profile(c, "2026-11-02T08:00:02+08:00"),
        hotline(b, "2026-11-02T09:50:00+08:00"),
        hotline(a, "2026-11-02T10:00:00+08:00"),
        {
            "type": "topup",
            "event_id": "a2",
            "subscriber_id": a,
            "occurred_at": "2026-11-02T10:10:00+08:00",
            "region": "NJ",
            "amount": 50,
            "channel": "app",
            "balance_after": 80,
        },
        hotline(c, "2026-11-03T08:10:00+08:00"),
    ]
    history = tmp_path / "h.jsonl"
    history.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    out = tmp_path / "out"
    args = ["--policy", str(policy), "--to", "2026-11-05", "--out", str(out)]
    assert main(["backtest", "--events", str(history), *args]) == 0
    tasks = [orjson.loads(line) for line in (out / "tasks.jsonl").read_bytes().splitlines()]
    (of_a,) = [t for t in tasks if t["subscriber_id"] == a]
    assert of_a["deliver_after"] == "2026-11-04T09:00:00+08:00"  # deferred twice, as set up
    assert [r["moment"]["rule_id"] for r in of_a["related"]] == ["first_topup_channel"]
    # The top-up reached A in the call: "Top rules" counts it, where by tasks alone
    # first_topup_channel read as making nothing.
    top = {r["rule_id"]: r for r in orjson.loads((out / "report.json").read_bytes())["top_rules"]}
    assert top["first_topup_channel"] == {
        "rule_id": "first_topup_channel",
        "tasks": 0,
        "merged_into_others": 1,
    }
    assert top["competitor_hotline_call"]["tasks"] == 3
    assert "| first_topup_channel | 0 | 1 |" in (out / "report.md").read_text()


def test_the_frequency_cap_counts_the_contacts_made_not_the_moments_found(
    tmp_path: Path,
) -> None:
    """A complaint, a service failure and a competitor-hotline call within minutes are one
    manager call (merged); the catalog's cap (3 a week) counted three contacts for them
    and dropped the first top-up's SMS and the low-balance reminder of the days after
    (analyst review). Then a fourth contact in the week is over the cap."""
    sub = "13800000003"

    def doc(type_: str, n: str, at: str, **fields: Any) -> dict[str, Any]:
        return {
            "type": type_,
            "event_id": n,
            "subscriber_id": sub,
            "occurred_at": f"2026-11-0{at}+08:00",
            "region": "NJ",
            **fields,
        }

    complaint = {"complaint_id": "C1", "category": "network", "severity": 2}
    docs = [
        doc("profile", "p1", "2T08:30:00", tier="standard", status="active"),
        doc("complaint", "c1", "2T10:00:00", status="opened", **complaint),
        doc("usage", "u1", "2T10:05:00", kind="service_failure", service_code="VOLTE"),
        doc("complaint", "c2", "2T10:08:00", status="resolved", **complaint),
        doc("usage", "u2", "2T10:10:00", kind="voice", quantity=60, counterparty="10010"),
        doc("topup", "t1", "4T10:00:00", amount=50, channel="app", balance_after=60),
        doc("usage", "u3", "5T10:00:00", kind="data", quantity=1000, charge=56, balance_after=4),
        doc("usage", "u4", "6T10:00:00", kind="service_failure", service_code="SMS"),
    ]
    history = tmp_path / "h.jsonl"
    history.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    out = tmp_path / "out"
    assert (
        main(["backtest", "--events", str(history), "--to", "2026-11-08", "--out", str(out)]) == 0
    )
    tasks = [orjson.loads(line) for line in (out / "tasks.jsonl").read_bytes().splitlines()]
    assert [t["moment"]["type"] for t in tasks] == [
        "competitor_hotline_call",  # with the complaint and the service failure
        "first_topup",
        "low_balance",
    ]
    assert len(tasks[0]["related"]) == 2
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["suppressed"] == {"frequency_cap": 1}  # the service failure of 11-06


def test_a_warm_up_shorter_than_the_caps_and_cooldowns_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's recipe warmed up two days against a 7-day cap and 14-day cooldowns;
    the first days of its report were mostly first-time moments (analyst review)."""
    history = write_history(tmp_path / "h.jsonl")
    out = tmp_path / "out"
    args = ["--events", str(history), "--from", DAY2.isoformat(), "--out", str(out)]
    assert main(["backtest", *args]) == 0  # the default catalog: a 60-day look-back
    said = " ".join(capsys.readouterr().err.split())
    assert "The warm-up before --from is 0.6 days, shorter than" in said
    assert "cooldown (14 days)" in said
    # Both effects: more tasks (first-time moments, free contacts) and fewer (the
    # warm-up's moments all starting their cooldowns at once); it named the first only.
    assert "first-time moments and free contacts" in said
    assert "cooldowns the warm-up began all at once hold back" in said
    assert "Start --from at least 14 days after the first event" in said
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["run"]["--to"] is None
    assert report["run"]["rules"] == "the default catalog"
    assert report["summary"]["report_from"].startswith(DAY2.isoformat())
    # In the files that are shared too, not only in the terminal (analyst review).
    (warning,) = report["warnings"]
    assert warning.startswith("The warm-up before --from is 0.6 days, shorter than")
    assert warning in said
    markdown = (out / "report.md").read_text()
    assert markdown.startswith(f"# Backtest report\n\n> **Warning:** {warning}\n")
    page = (out / "report.html").read_text()
    assert f'<p class="warning"><strong>Warning:</strong> {html.escape(warning)}</p>' in page
    capsys.readouterr()
    rules = write_rules(tmp_path / "r.yaml")  # no cooldown, no cap: nothing to settle
    assert main(["backtest", *args, "--rules", str(rules)]) == 0
    assert "warm-up before --from" not in capsys.readouterr().err
    assert orjson.loads((out / "report.json").read_bytes())["warnings"] == []
    assert "Warning" not in (out / "report.md").read_text()


def test_the_warm_up_dispatches_only_in_its_last_caps_period(tmp_path: Path) -> None:
    """A cap of one SMS a week; small top-ups on days 0, 6 and 12; the report from
    day 10. Day 0's task is before the caps' period (day 3 on): made, not dispatched, so
    it does not hold back day 6's, which is dispatched (not reported) and holds back
    day 12's. Dispatching the whole warm-up, day 0's contact dropped day 6's and let day
    12's through; dispatching none of it let day 12's through too."""
    rules = tmp_path / "r.yaml"
    rules.write_text(
        (RULES % {"big": BIG, "priority": 3, "extra": ""}).replace(
            "frequency_cap: null", "frequency_cap: {max_contacts: 1, period: 7d, channels: [sms]}"
        )
    )
    sub = "13900000007"
    days = [DAY1 + dt.timedelta(days=d) for d in (0, 6, 12)]
    history = tmp_path / "h.jsonl"
    docs = [TopUp(sub, "SH", day, 0, 20).event(n) for n, day in enumerate(days)]
    history.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    start = dt.datetime.combine(DAY1 + dt.timedelta(days=10), dt.time(0), SHANGHAI)
    bt = Backtest(load_rules(rules), DispatchPolicy(), report_from=start.timestamp())
    result = asyncio.run(bt.run(EventFile(history)))
    assert result.warmup_tasks == 1  # day 0's
    sent_on = [dt.datetime.fromtimestamp(p.at, SHANGHAI).date() for p in result.published]
    assert sent_on == [days[1]]  # day 6's, in the warm-up: not reported
    report = build_report(result)
    assert report["summary"]["tasks"] == 0
    # Day 12's waits until day 6's contact is a week old (its ttl is 3 days).
    assert report["deferred"] == {"frequency_cap": 1}
    assert result.waiting_at_end == 1


def test_small_figures_read_as_they_are() -> None:
    """Two tasks in six days read as 0 a day, and 59741 dead letters without separators
    (analyst review)."""
    from moments.backtest_report import _dead_letters, _per_value

    days = [f"2026-12-0{d}" for d in range(1, 7)]
    counts = {("2026-12-02", "birthday"): 2, **{(d, "low_balance"): 70 for d in days}}
    _, _, rows = _per_value("moment_type", days, ["birthday", "low_balance"], counts)
    assert [(r[0], r[2]) for r in rows] == [("low_balance", 70), ("birthday", 0.3)]
    assert _dead_letters({"invalid_event": 59741}) == "59,741 (invalid_event 59,741)"


def test_a_comparison_counts_the_moments_that_made_no_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An analyst's new rule made 761 moments, every one stopped by the gates, and the
    comparison read `total 0 0 0` (it compared published tasks only)."""
    gated = """
  - id: thanks_once
    description: A thank-you on every top-up, once a month
    on: [topup]
    condition: {field: amount, gte: 1}
    task: {family: anomaly, type: thanks, channel: app_push, priority: 5, action: thanks,
           ttl: 3d, cooldown: 30d, description: "Thanks"}
"""
    base = write_rules(tmp_path / "base.yaml")
    candidate = write_rules(tmp_path / "new.yaml", extra=gated)
    history = write_history(tmp_path / "h.jsonl")
    out = tmp_path / "out"
    args = ["--events", str(history), "--rules", str(candidate), "--out", str(out)]
    assert main(["backtest", *args, "--baseline-rules", str(base)]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    (row,) = report["comparison"]["per_moment_type"]
    # 13900000001 tops up three times: one thank-you, two held back by the cooldown
    assert row == {
        "moment_type": "thanks",
        "detected": [0, len(SCENARIO)],
        "suppressed": [0, 2],
        "published": [0, len(SCENARIO) - 2],
    }
    assert "Moments by type, baseline -> candidate" in capsys.readouterr().out


def test_events_the_detector_failed_on_are_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backtest's state keeps the part of a failed event applied before the fault
    (its store hands out live records): its figures may differ from the stream's, and
    the report said nothing (re-check)."""
    from moments.engine import Detector

    apply = Detector.apply

    def failing(self: Detector, sub: str, *args: Any) -> None:
        apply(self, sub, *args)
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(Detector, "apply", failing)
    history = write_history(tmp_path / "h.jsonl")
    out = tmp_path / "out"
    rules = write_rules(tmp_path / "r.yaml")
    main(["backtest", "--events", str(history), "--rules", str(rules), "--out", str(out)])
    report = orjson.loads((out / "report.json").read_bytes())
    (warning,) = report["warnings"]
    assert warning.startswith(f"{len(SCENARIO):,} event(s) failed in the detector")


def test_a_call_capacity_dropped_leaves_the_next_moment_its_task(tmp_path: Path) -> None:
    """NJ has one manager call a day, taken by A at 10:00; B's at 10:05 is dropped (its
    rule drops on overflow). B's next big top-up, two days later, makes a task: the
    dropped one had started the 30-day cooldown, and the retention backtest showed 61
    subscribers who complained again and got no call for 30 days (`cooldown`)."""
    rules = write_rules(tmp_path / "r.yaml")
    with_cooldown = "ttl: 3d, cooldown: 30d, description"  # big_topup's, the first
    rules.write_text(rules.read_text().replace("ttl: 3d, description", with_cooldown, 1))
    a, b = "13900000001", "13900000002"
    later = dt.date(2026, 11, 12)
    history = [
        TopUp(a, "NJ", DAY1, 0, 150),
        TopUp(b, "NJ", DAY1, 5, 150),  # no room left: dropped
        TopUp(b, "NJ", later, 0, 150),  # a new day's room
    ]
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"".join(orjson.dumps(t.event(n)) + b"\n" for n, t in enumerate(history)))
    policy = capacity_policy().model_copy(update={"capacity": {"NJ": {"manager": 1}}})
    result = run(rules, path, policy)
    calls = [(t["subscriber_id"], t["triggered_at"][:10]) for t in result.tasks()]
    assert sorted(calls) == [(a, "2026-11-10"), (b, "2026-11-12")]
    assert build_report(result)["suppressed"] == {"capacity": 1}


def test_a_manager_task_made_at_night_waits_for_the_managers_hours(tmp_path: Path) -> None:
    """A big top-up at 00:30 makes a manager task; the managers work 09:00-12:00 and
    13:00-18:00 in Shanghai. The backtest's sink is the stream's: it is published at
    09:00, and the report's deferred table says why. One at 12:10 waits for 13:00."""
    sub, other = "13900000011", "13900000012"
    history = tmp_path / "h.jsonl"
    docs = [
        TopUp(sub, "NJ", DAY1, -570, 150).event(1),  # 00:30
        TopUp(other, "NJ", DAY1, 130, 150).event(2),  # 12:10
    ]
    history.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    policy = DispatchPolicy.model_validate(
        {
            "timezone": "Asia/Shanghai",
            "hours": {"manager": ["09:00-12:00", "13:00-18:00"]},
            "merge": {"hold_channels": []},
        }
    )
    bt = Backtest(load_rules(write_rules(tmp_path / "r.yaml")), policy)
    at = dt.datetime.combine
    result = asyncio.run(
        bt.run(EventFile(history), until=at(DAY2, dt.time(0), SHANGHAI).timestamp())
    )
    sent = {orjson.loads(p.payload)["subscriber_id"]: p.at for p in result.published}
    assert sent == {
        sub: at(DAY1, dt.time(9), SHANGHAI).timestamp(),
        other: at(DAY1, dt.time(13), SHANGHAI).timestamp(),
    }
    report = build_report(result)
    assert report["deferred"] == {"channel_hours": 2}
    assert "| channel_hours | 2 |" in markdown(report)


def test_a_cut_over_after_a_short_warm_up_is_said_as_the_prediction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --live-from and no --from, the warm-up before the cut-over is measured
    against the rules' longest memory (here the default catalog's 3-month spend baseline;
    the warm-up's cooldowns hold no live moment, and it takes no contact): a short one is
    the rehearsal's point (its burst is what going live then would send), and nothing was
    said of it."""
    history = write_history(tmp_path / "h.jsonl")
    out = tmp_path / "out"
    args = ["--events", str(history), "--live-from", DAY2.isoformat(), "--out", str(out)]
    assert main(["backtest", *args]) == 0  # the default catalog: a 3-month baseline
    said = " ".join(capsys.readouterr().err.split())
    (warning,) = orjson.loads((out / "report.json").read_bytes())["warnings"]
    assert warning.startswith("The warm-up before --live-from is 0.6 days, shorter than")
    assert (
        "3-month baseline of spend_month and the month it judges, judged at a month's close "
        "after the one the history began in (125 days)"
    ) in warning
    # A baseline waits for its windows (a subscriber with less history makes none): it
    # was said to average fewer windows, which no baseline does (analyst walk).
    assert "averaged over fewer windows" not in warning
    assert (
        "they lack the tasks of baselines, which wait for their windows: a subscriber whose "
        "history does not cover them makes none"
    ) in warning
    assert "prediction for going live after this warm-up" in warning
    assert warning in said
    assert "--from" not in warning.replace("--live-from", "")
    capsys.readouterr()
    early = ["--live-from", DAY1.isoformat()]  # before the first event: no warm-up
    assert main(["backtest", *args, *early]) == 0
    (cold,) = orjson.loads((out / "report.json").read_bytes())["warnings"]
    assert cold.startswith("--live-from is at or before the first event")


SPEND_DROP = """
  - id: spend_drop
    description: Spend well below the usual
    on: [usage]
    condition: {baseline: spend_week, windows: 12, min_baseline: 20, lte: 0.5}
    task: {family: anomaly, type: spend_drop, channel: sms, priority: 3,
           action: review, ttl: 24h, description: "Spend fell"}
"""
COMPLAINTS = """
  - id: complaints
    description: Two complaints in ten days
    on: [complaint]
    condition: {series: complaints_day, agg: count, last: 10, gte: 2}
    task: {family: anomaly, type: complaints, channel: manager, priority: 2,
           action: call, ttl: 24h, description: "Complaints"}
"""
SERIES = """series:
  spend_week: {on: [usage], field: charge, period: week}
  complaints_day: {on: [complaint], period: day}
"""


@pytest.mark.parametrize(
    ("entries", "seconds", "what"),
    [
        ([WELCOME], 0.0, "nothing"),
        ([WELCOME, COMPLAINTS], 10 * 86400.0, "complaints's 10-day series of complaints_day"),
        (
            [COMPLAINTS, SPEND_DROP],
            91 * 86400.0,
            "spend_drop's 12-week baseline of spend_week and the week it judges",
        ),
    ],
)
def test_a_cut_overs_warm_up_is_measured_against_baselines_and_series(
    entries: list[str], seconds: float, what: str
) -> None:
    """A baseline reads the windows it averages and the current one, a series the windows
    it sums, the current one too: a warm-up shorter than them leaves the first live days
    judged on less history (the warning once named first-time look-backs only, while
    docs/operations.md said a warm-up should cover the baselines too)."""
    rules = load_texts([("r.yaml", SERIES + "rules:" + "".join(entries))])
    memory = longest_memory(rules)
    assert (memory.seconds, memory.what) == (seconds, what)
    result = BacktestResult(events=1, first_event=0.0, live_from=86400.0)
    warnings = report_warnings(result, rules)
    assert len(warnings) == (1 if seconds > 86400 else 0)
    if warnings:
        assert f"shorter than {what} ({seconds / 86400:.0f} days)" in warnings[0]


MONTHLY = """
  - id: big_month
    description: A big month
    on: [usage]
    evaluate: monthly
    condition: {series: spend_month, gte: 500}
    task: {family: anomaly, type: big_month, channel: sms, priority: 3,
           action: review, ttl: 24h, description: "Big month"}
"""


@pytest.mark.parametrize(
    ("rules_text", "warm_days", "live_from"),
    [
        # The default catalog's 3-month baseline judged at a month's close, cut over on
        # 2027-01-15: October, the oldest month averaged, began 106 days before. A 100-day
        # warm-up (from 2026-10-07) averaged an October without its first six days, and
        # nothing was said: the warning counted the three months before January (93 days).
        (None, 100, dt.date(2027, 1, 15)),
        # A month's total judged at its close (`last: 1`): a 20-day warm-up before the
        # 21st summed January from the 1st, nothing warned (a series of one window counted
        # for nothing).
        (
            "series:\n  spend_month: {on: [usage], field: charge, period: month}\nrules:" + MONTHLY,
            20,
            dt.date(2027, 1, 21),
        ),
    ],
)
def test_the_window_holding_the_cut_over_counts_from_its_start(
    rules_text: str | None, warm_days: int, live_from: dt.date
) -> None:
    rules = default_rules() if rules_text is None else load_texts([("r.yaml", rules_text)])
    live = dt.datetime.combine(live_from, dt.time(0), SHANGHAI).timestamp()
    first = live - warm_days * 86400
    result = BacktestResult(events=1, first_event=first, live_from=live)
    (warning,) = report_warnings(result, rules)
    assert warning.startswith(f"The warm-up before --live-from is {warm_days:.1f} days")


def test_a_cut_overs_warm_up_is_not_measured_against_the_frequency_cap(tmp_path: Path) -> None:
    """The warm-up takes no contact, however long: only cooldowns settle in it."""
    capped = "gating: {frequency_cap: {max_contacts: 1, period: 30d}}\n"
    rules = load_texts([("r.yaml", capped + "rules:" + WELCOME)])
    result = BacktestResult(events=1, first_event=0.0, live_from=86400.0)
    assert report_warnings(result, rules) == []
    result.report_from, result.live_from = 86400.0, None  # --from: the cap counts
    assert "the frequency cap's period" in report_warnings(result, rules)[0]


def test_a_day_the_history_covers_in_part_is_said_and_marked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two simulated days starting at 09:37 and ending at 10:05 two days later, reported
    from the second: its last day held 8 tasks against 145 the day before, drawn as a
    whole day, and its mean per day counted it as one (analyst walk). SCENARIO's events
    begin at 10:00 on day 1 and end at 10:00 on day 2."""
    rules = write_rules(tmp_path / "r.yaml")
    history = write_history(tmp_path / "h.jsonl")
    policy = tmp_path / "policy.yaml"
    policy.write_text("merge: {hold_channels: []}\n")  # day 2's call goes at 10:00
    out = tmp_path / "out"
    args = ["backtest", "--events", str(history), "--rules", str(rules), "--out", str(out)]
    args += ["--policy", str(policy)]
    assert main(args) == 0
    said = " ".join(capsys.readouterr().err.split())
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["partial_days"] == {DAY1.isoformat(): "from 10:00", DAY2.isoformat(): "to 10:00"}
    (note,) = report["notes"]
    assert f"{DAY1.isoformat()} from 10:00" in note
    assert f"{DAY2.isoformat()} to 10:00" in note
    assert f"--to {DAY2.isoformat()}" in note  # how to leave the partial last day out
    assert note in said
    md = (out / "report.md").read_text()
    assert f"> **Note:** {note}" in md
    assert f"| {DAY2.isoformat()} (to 10:00) | 1 | 0 | 1 |" in md  # the per-day rows
    assert f"<strong>Note:</strong> {html.escape(note)}" in (out / "report.html").read_text()
    # Event time run on to the end of day 2 (--to the next midnight): day 2 is whole.
    assert main([*args, "--to", (DAY2 + dt.timedelta(days=1)).isoformat()]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["partial_days"] == {DAY1.isoformat(): "from 10:00"}
    # Reported from day 2 (a warm-up on day 1), up to 10:00 of it.
    assert main([*args, "--from", DAY2.isoformat()]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["partial_days"] == {DAY2.isoformat(): "to 10:00"}


def test_a_comparison_says_a_rule_put_in_shadow_or_taken_live(tmp_path: Path) -> None:
    """A rule both catalogs hold, put in shadow by the candidate: every task of it read
    as removed, with nothing to tell that from a rule that broke."""
    base = load_rules(write_rules(tmp_path / "base.yaml"))
    shadowed = (
        (tmp_path / "base.yaml")
        .read_text()
        .replace(
            "    description: A large top-up\n",
            "    description: A large top-up\n    mode: shadow\n",
        )
    )
    (tmp_path / "new.yaml").write_text(shadowed)
    candidate = load_rules(tmp_path / "new.yaml")
    task = {"task_id": "a" * 32, "moment": {"rule_id": "big_topup"}}
    comparison = compare([orjson.dumps(task)], [], (base, candidate)).as_dict()
    (row,) = comparison["per_rule"]
    assert row == {
        "rule_id": "big_topup",
        "added": 0,
        "removed": 1,
        "changed": 0,
        "rule": "now shadow",
    }
    back = compare([], [orjson.dumps(task)], (candidate, base)).as_dict()
    assert back["per_rule"][0]["rule"] == "now live"


def test_a_history_of_part_of_one_day_is_not_told_to_leave_that_day_out() -> None:
    """Six simulated hours, 10:27 to 16:33 of one day: the note said "leave that day out
    with --to 2026-12-06", which leaves every event out ("No event was read")."""
    (note,) = partial_days_note({"2026-12-06": "from 10:27 to 16:33"})
    assert "--to 2026-12-06" not in note, note
    assert "Event time stopped at 16:33 on 2026-12-06: " in note
    assert note.endswith("the history is shorter than a day; give it a whole day of events.")
    (two_days,) = partial_days_note({"2026-12-05": "from 10:00", "2026-12-06": "to 10:00"})
    assert "leave that day out with --to 2026-12-06" in two_days


def test_a_report_cut_mid_day_by_from_or_to_says_so_not_the_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SCENARIO's history runs from 10:00 on day 1 to 10:00 on day 2. Reported from 12:00
    of day 1, the note said "The history covers part of a day" (the report began there:
    the hours before were warm-up); cut at 08:00 of day 2 by --to, it advised "give it a
    whole day of events", which no history fixes (reviewers)."""
    rules = write_rules(tmp_path / "r.yaml")
    history = write_history(tmp_path / "h.jsonl")
    out = tmp_path / "out"
    args = ["backtest", "--events", str(history), "--rules", str(rules), "--out", str(out)]
    midday = dt.datetime.combine(DAY1, dt.time(12), SHANGHAI).isoformat()
    assert main([*args, "--from", midday]) == 0
    # A manager call still waits for its merge window at 10:00: a note of its own.
    note, waiting = orjson.loads((out / "report.json").read_bytes())["notes"]
    assert waiting.startswith("1 task(s) were still waiting when event time stopped"), waiting
    assert note.startswith(f"The report covers part of a day: {DAY1.isoformat()} from 12:00")
    assert f"The report starts at --from 12:00 on {DAY1.isoformat()}" in note
    assert f"--from {DAY2.isoformat()}" in note  # a --from at midnight reports whole days
    assert f"leave that day out with --to {DAY2.isoformat()}" in note  # the history's end
    morning = dt.datetime.combine(DAY2, dt.time(8), SHANGHAI).isoformat()
    assert main([*args, "--to", morning]) == 0
    note = orjson.loads((out / "report.json").read_bytes())["notes"][0]
    assert note.startswith("The report covers part of a day:")
    assert f"Event time stopped at --to 08:00 on {DAY2.isoformat()}" in note
    assert "whole day of events" not in note
    after = (DAY2 + dt.timedelta(days=1)).isoformat()
    assert f"--to {DAY2.isoformat()} leaves that day out, --to {after} reports it whole" in note
    capsys.readouterr()


def test_a_partial_days_note_fits_its_advice_to_what_cut_the_day() -> None:
    """The history, --from and --to each cut a day for their own reason; the note's
    advice follows the cause."""
    one = {"2026-12-06": "from 10:27 to 16:33"}
    (history,) = partial_days_note(one)
    assert history.startswith("The history covers part of a day")
    (by_to,) = partial_days_note(one, ends_at="--to")
    assert by_to.startswith("The report covers part of a day"), by_to  # --to cut it too
    assert by_to.endswith("--to 2026-12-07 reports that day whole."), by_to
    assert "--to 2026-12-06" not in by_to  # it would leave every event out
    (by_from,) = partial_days_note(one, starts_at="--from")
    assert by_from.startswith("The report covers part of a day"), by_from
    assert "history is shorter than a day" not in by_from
    assert by_from.endswith("give it the rest of that day's events."), by_from
    assert "--from 2026-12-07" not in by_from  # it would leave every event out
    (live,) = partial_days_note({"2026-12-06": "from 10:27"}, starts_at="--live-from")
    assert "The report starts at --live-from 10:27 on 2026-12-06 (the cut-over" in live


def test_a_comparison_lists_the_rules_added_and_removed_that_made_no_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An analyst's three new rules: one fired (its tasks merged into others'), one
    needed more history, one was in shadow; the comparison listed none of them, so it
    could not tell a rule that made nothing from one that was not loaded (analyst walk)."""
    quiet = LEGACY.replace("legacy_roaming", "roaming_welcome")  # no roaming in the history
    shadow = LEGACY.replace("legacy_roaming", "roaming_trial").replace(
        "description: Any roaming record", "mode: shadow\n    description: Any roaming record"
    )
    base = write_rules(tmp_path / "base.yaml", extra=LEGACY)
    candidate = write_rules(tmp_path / "new.yaml", extra=quiet + shadow)
    history = write_history(tmp_path / "h.jsonl")  # top-ups only: no roaming rule fires
    out = tmp_path / "out"
    args = ["--events", str(history), "--rules", str(candidate), "--out", str(out)]
    assert main(["backtest", *args, "--baseline-rules", str(base)]) == 0
    per_rule = {
        r["rule_id"]: r
        for r in orjson.loads((out / "report.json").read_bytes())["comparison"]["per_rule"]
    }
    zero = {"added": 0, "removed": 0, "changed": 0}
    assert per_rule["roaming_welcome"] == {"rule_id": "roaming_welcome", **zero, "rule": "new"}
    assert per_rule["roaming_trial"] == {"rule_id": "roaming_trial", **zero, "rule": "new, shadow"}
    assert per_rule["legacy_roaming"] == {"rule_id": "legacy_roaming", **zero, "rule": "removed"}
    assert "big_topup" not in per_rule  # in both, its tasks the same
    terminal = capsys.readouterr().out
    assert re.search(r"roaming_welcome \(new\)\s*│\s*0\s*│\s*0\s*│\s*0\s*│", terminal)
    assert "roaming_trial (new, shadow)" in terminal
    assert "legacy_roaming (removed)" in terminal


BIG_DAY = """
  - id: big_topup_day
    description: A top-up day three times the usual
    on: [topup]
    condition: {baseline: topup_day, windows: 7, min_baseline: 10, gte: 3}
    task: {family: anomaly, type: big_topup_day, channel: sms, priority: 3,
           action: thanks_sms, ttl: 1d, description: "Topped up {topup_day}"}
"""


def test_a_new_rule_whose_baseline_the_history_is_too_short_for_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new rule comparing a day with the 7 before, backtested on a history of one day,
    read `big_topup_day (new) 0 0 0` and nothing else, where `rules test` says its
    baseline needs history (analyst walk, a 3-day simulation): the report notes it."""
    series = "series:\n  topup_day: {on: [topup], field: amount, period: day}\n"
    base = write_rules(tmp_path / "base.yaml")
    candidate = tmp_path / "new.yaml"
    candidate.write_text(series + (RULES % {"big": BIG, "priority": 3, "extra": BIG_DAY}))
    out = tmp_path / "out"
    args = ["--events", str(write_history(tmp_path / "h.jsonl")), "--out", str(out)]
    assert main(["backtest", *args, "--rules", str(candidate), "--baseline-rules", str(base)]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    said = [n for n in report["notes"] if n.startswith("big_topup_day (new) made no task")]
    assert said == [
        "big_topup_day (new) made no task: its baseline is 7 earlier days of topup_day, "
        "whole ones after the one a subscriber's history in it begins in, so a first "
        "judgement needs about 8 days of history, and this one holds 1.0: give a longer "
        "history (moments simulate --duration 3w) to see what it makes."
    ]
    assert said[0] in " ".join(capsys.readouterr().err.split())  # where the notes go
    assert said[0] in (out / "report.md").read_text()
    # The rules that are in both, or new and not reading a baseline, get no such note.
    assert len([n for n in report["notes"] if "made no task" in n]) == 1


def test_the_capacity_table_keeps_its_days_and_limits_in_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In an 80-column terminal the busiest days read `2026-12…`, the channels
    `outboun…` and the limits `unlimit…` (analyst walk)."""
    monkeypatch.setenv("COLUMNS", "80")
    policy = tmp_path / "policy.yaml"
    policy.write_text("capacity: {NJ: {manager: 2}, '*': {outbound_call: 10}}\n")
    args = ["--events", str(write_history(tmp_path / "h.jsonl")), "--out", str(tmp_path / "o")]
    rules = write_rules(tmp_path / "r.yaml")
    assert main(["backtest", *args, "--rules", str(rules), "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    table = out[out.index("Capacity needed vs configured") :].split("\n\n")[0]
    table = table[: table.index("Suppressed by reason")]
    assert "…" not in table
    assert max(len(line) for line in table.splitlines()) <= 80
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert any("NJ" in r and "manager" in r and DAY1.isoformat() in r for r in rows)
    assert any("SH" in r and "unlimited" in r for r in rows)


def test_a_cut_overs_events_before_it_are_counted_in_the_summary(tmp_path: Path) -> None:
    """With --live-from the summary said `warm-up events (before --from) 0` and nothing of
    the events before the cut-over, which built the state and made no task (analyst walk:
    15,523 of 52,340)."""
    history = write_history(tmp_path / "h.jsonl")
    out = tmp_path / "out"
    args = ["--events", str(history), "--rules", str(write_rules(tmp_path / "r.yaml"))]
    assert main(["backtest", *args, "--live-from", DAY2.isoformat(), "--out", str(out)]) == 0
    summary = orjson.loads((out / "report.json").read_bytes())["summary"]
    day1 = sum(1 for t in SCENARIO if t.day == DAY1)
    assert summary["events_before_live_from"] == day1
    # Reported: those from the cut-over on, where the report's days and tasks begin (it
    # counted the whole history, and said the report began at the first event).
    assert summary["events"] == len(SCENARIO) - day1
    assert summary["report_start"] == f"{DAY2.isoformat()}T00:00:00+08:00"
    md = (out / "report.md").read_text()  # the terminal's rows, unwrapped
    assert f"| events before --live-from (state built, no task) | {day1} |" in md
    assert f"| events reported (from the report's start) | {len(SCENARIO) - day1} |" in md
    assert f"| report from | {DAY2.isoformat()}T00:00:00+08:00 |" in md
    assert "warm-up events (before --from)" not in md  # no --from
    assert main(["backtest", *args, "--from", DAY2.isoformat(), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "events before --live-from" not in md
    assert f"| warm-up events (before --from) | {day1} |" in md


def test_a_day_with_no_task_is_a_row_of_zeros_and_counts_in_the_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rare rule's report left out the days it made nothing: the per-day tables jumped
    from the 10th to the 12th and the mean per day was that of the days with a task
    (analyst walk)."""
    day3 = DAY2 + dt.timedelta(days=1)
    history = tmp_path / "h.jsonl"
    topups = [TopUp("13900000001", "NJ", DAY1, 0, 30), TopUp("13900000002", "NJ", day3, 0, 30)]
    history.write_bytes(b"".join(orjson.dumps(t.event(n)) + b"\n" for n, t in enumerate(topups)))
    policy = tmp_path / "policy.yaml"
    policy.write_text("merge: {hold_channels: []}\n")
    out = tmp_path / "out"
    args = ["--events", str(history), "--rules", str(write_rules(tmp_path / "r.yaml"))]
    assert main(["backtest", *args, "--policy", str(policy), "--out", str(out)]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["days"] == [DAY1.isoformat(), DAY2.isoformat(), day3.isoformat()]
    md = (out / "report.md").read_text()
    assert f"| {DAY2.isoformat()} | 0 | 0 |" in md  # first_time, total
    terminal = " ".join(capsys.readouterr().out.split())
    assert "(3 day(s)" in terminal
    assert re.search(r"small_topup ?│ ?2 ?│ ?0\.7 ?│", terminal)  # 2 tasks over 3 days


def test_the_capacity_summary_peaks_on_the_demand_a_day_brought() -> None:
    """The summary's `peak` was the busiest day's `needed`, which counts again every task
    refused the day before and deferred: the less capacity, the larger the backlog and the
    larger the 'peak' a manager would hire for (policy walk: 40 manager tasks on a day
    that brought 26). The peak is of `new`; a day the history covers in part is marked."""
    from moments.backtest_report import _capacity_peaks

    rows = [
        {"day": "2026-12-06", "region": "*", "channel": "manager", "needed": 16, "new": 16,
         "taken": 2, "configured": 2},
        {"day": "2026-12-07", "region": "*", "channel": "manager", "needed": 40, "new": 26,
         "taken": 2, "configured": 2},
        {"day": "2026-12-08", "region": "*", "channel": "manager", "needed": 39, "new": 1,
         "taken": 2, "configured": 2},
    ]  # fmt: skip
    title, header, out = _capacity_peaks(rows, {"2026-12-08": "to 11:51"})
    row = dict(zip(header, out[0], strict=True))
    assert row["peak new"] == 26
    assert row["peak day"] == "2026-12-07"
    assert row["over"] == 2  # 16 and 26 new a day for 2; 1 fits in it
    assert row["tasks"] == 43
    assert row["refusals"] == 14 + 38 + 37
    _, _, partial = _capacity_peaks(rows[2:], {"2026-12-08": "to 11:51"})
    assert partial[0][header.index("peak day")] == "2026-12-08*"
    assert "* in part" in title


def test_a_report_with_no_task_names_no_region_of_the_policy_as_unused(tmp_path: Path) -> None:
    """The README's backtest, `--from` 15 days on, run on a 3-day simulation: beside "Every
    event is before --from: nothing to report", a second warning said the policy's NJ was
    a region "no task of this history came from: correct a typo", of a history full of NJ
    (analyst walk). With no task reported, no region could have been tried."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("capacity: {NJ: {manager: 2}}\n")
    out = tmp_path / "o"
    args = ["--events", str(write_history(tmp_path / "h.jsonl")), "--out", str(out)]
    args += ["--rules", str(write_rules(tmp_path / "r.yaml")), "--policy", str(policy)]
    assert main(["backtest", *args, "--from", (DAY2 + dt.timedelta(days=5)).isoformat()]) == 1
    warnings = orjson.loads((out / "report.json").read_bytes())["warnings"]
    assert any("nothing to report" in w for w in warnings), warnings
    assert not [w for w in warnings if "capacity names region" in w], warnings


def test_a_policy_region_no_task_came_from_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A capacity for `NJJ` (a typo of NJ) or for a region the history does not cover
    vanished from the report without a word: the manager read the limit as set (policy
    walk). `nj` is NJ, whose tasks tried it (regions are matched whatever the case)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("capacity: {nj: {manager: 2}, NJJ: {manager: 1}, WX: {sms: 5}}\n")
    out = tmp_path / "o"
    args = ["--events", str(write_history(tmp_path / "h.jsonl")), "--out", str(out)]
    rules = write_rules(tmp_path / "r.yaml")
    assert main(["backtest", *args, "--rules", str(rules), "--policy", str(policy)]) == 0
    warnings = orjson.loads((out / "report.json").read_bytes())["warnings"]
    said = [w for w in warnings if "no task" in w]
    assert len(said) == 1, warnings
    # The city's tasks (from `NJ`) are counted under the name the policy writes, `nj`.
    assert (
        "names region(s) no task of this history came from: NJJ (did you mean nj?), WX."
        in (said[0])
    )
    assert "regions are matched whatever the case" in said[0]
    printed = capsys.readouterr()
    assert "no task" in " ".join((printed.out + printed.err).split())


def test_a_policy_overflow_for_no_rule_of_the_backtest_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`overflow: {big_topp: ...}` named no rule: the backtest ran with the default
    overflow for big_topup and said nothing of the key."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("overflow:\n  big_topp: {policy: drop}\n")
    out = tmp_path / "o"
    args = ["--events", str(write_history(tmp_path / "h.jsonl")), "--out", str(out)]
    rules = write_rules(tmp_path / "r.yaml")
    assert main(["backtest", *args, "--rules", str(rules), "--policy", str(policy)]) != 0
    said = capsys.readouterr().err
    assert f"{policy}:2:3: overflow.big_topp: no rule id 'big_topp' in the rules; did you " in said
    assert not out.exists()


def test_top_rules_counts_a_rule_carried_in_its_own_rules_task_as_no_other_rules() -> None:
    """`merged_into_others` is a rule's moments carried in *another* rule's task: a second
    moment of the task's own rule (a rule with no cooldown firing again while its task
    waited) is not one, nor added again to the rule's volume."""
    from moments.backtest import Published
    from sinks.contact import merge_tasks
    from tests.integration.dispatch.conftest import task

    at = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
    later = at + dt.timedelta(days=1)
    own = task("a" * 32, moment_type="low_balance", triggered=at, expires_at=later)
    again = task("b" * 32, moment_type="low_balance", triggered=at, expires_at=later)
    other = task("c" * 32, moment_type="first_topup", priority=4, triggered=at, expires_at=later)
    sent = merge_tasks(own.task_id, [own, again, other])
    assert sent.moment.rule_id == "low_balance"
    payload = sent.model_dump_json().encode()
    report = build_report(BacktestResult(published=[Published(at.timestamp(), payload)]))
    assert report["top_rules"] == [
        {"rule_id": "first_topup", "tasks": 0, "merged_into_others": 1},
        {"rule_id": "low_balance", "tasks": 1, "merged_into_others": 0},
    ]


def test_the_last_event_is_the_latest_not_the_last_line(tmp_path: Path) -> None:
    """A late event at the end of a file (within the lateness, so applied as on the
    stream) made it the summary's `last event`, and the note said event time stopped
    there while tasks went out after it (recheck of the history files). Event time
    began at the first line: one dated a year back later on is a late event, and does
    not stretch the report over a year of empty days."""
    history = tmp_path / "h.jsonl"
    lines = [t.event(n) for n, t in enumerate(SCENARIO)]
    lines.sort(key=lambda d: str(d["occurred_at"]))
    late = TopUp("13900000007", "SH", DAY2, -30, 30)  # 09:30, after the 10:00 line
    old = TopUp("13900000001", "NJ", DAY1 - dt.timedelta(days=365), 30, 30)  # a year back
    lines.insert(2, old.event(90))
    lines.append(late.event(91))
    history.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in lines))
    policy = tmp_path / "policy.yaml"
    policy.write_text("merge: {hold_channels: []}\n")
    out = tmp_path / "out"
    args = ["--events", str(history), "--rules", str(write_rules(tmp_path / "r.yaml"))]
    assert main(["backtest", *args, "--policy", str(policy), "--out", str(out)]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    times = [dt.datetime.fromisoformat(str(d["occurred_at"])) for d in lines]
    first, last = times[0], max(times)
    assert dt.datetime.fromisoformat(report["summary"]["first_event"]) == first
    assert dt.datetime.fromisoformat(report["summary"]["last_event"]) == last
    assert report["partial_days"] == {
        DAY1.isoformat(): f"from {first:%H:%M}",
        DAY2.isoformat(): f"to {last:%H:%M}",
    }
    assert report["days"] == [DAY1.isoformat(), DAY2.isoformat()]
    assert report["summary"]["dead_letters"] == {"late": 1}  # the one a year back


SILENCE = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: quiet_day
    description: No top-up for a day
    on: [topup]
    evaluate: daily
    condition: {absence: 1d}
    task: {family: anomaly, type: quiet_day, channel: sms, priority: 3,
           action: reactivation_offer, ttl: 3d, description: "Silent {silent_days} days"}
"""


def test_what_falls_due_at_to_is_left_to_the_period_after_it(tmp_path: Path) -> None:
    """`--to` a midnight ends the report before that day, but event time run on to it
    swept the hour it begins, and released what waited until then: a day's close (a
    silence noticed at midnight) and a task waiting for 08:00 in a policy kept in UTC
    (08:00 in Shanghai) were published at `--to`, a day of the report after its end."""
    rules = tmp_path / "r.yaml"
    rules.write_text(SILENCE)
    day3 = DAY2 + dt.timedelta(days=1)
    history = tmp_path / "h.jsonl"
    history.write_bytes(orjson.dumps(TopUp("13900000001", "NJ", DAY1, 0, 30).event(1)) + b"\n")
    out = tmp_path / "out"
    args = ["backtest", "--events", str(history), "--rules", str(rules), "--out", str(out)]
    # The day after the top-up closes at midnight of day 3: a silence of 38 hours.
    assert main([*args, "--to", day3.isoformat()]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["days"] == [DAY1.isoformat(), DAY2.isoformat()]
    assert report["summary"]["tasks"] == 0
    assert (out / "tasks.jsonl").read_bytes() == b""
    # Run on past it, the close is there: the rule fires at midnight of day 3.
    assert main([*args, "--to", (day3 + dt.timedelta(days=1)).isoformat()]) == 0
    (task,) = map(orjson.loads, (out / "tasks.jsonl").read_bytes().splitlines())
    midnight = dt.datetime.combine(day3, dt.time(0), SHANGHAI)
    assert dt.datetime.fromisoformat(task["triggered_at"]) == midnight
    # A task waiting for 08:00 Shanghai, --to 00:00 UTC: it still waits at the end.
    quiet = (
        write_rules(tmp_path / "q.yaml")
        .read_text()
        .replace("quiet_hours: []", 'quiet_hours: ["21:00-08:00"]')
    )
    (tmp_path / "q.yaml").write_text(quiet)
    night = TopUp("13900000002", "SH", DAY1, 12 * 60, 30)  # 22:00: quiet hours
    history.write_bytes(orjson.dumps(night.event(2)) + b"\n")
    policy = tmp_path / "utc.yaml"
    policy.write_text("timezone: UTC\nmerge: {hold_channels: []}\n")
    argv = ["backtest", "--events", str(history), "--rules", str(tmp_path / "q.yaml")]
    argv += ["--policy", str(policy), "--out", str(out), "--to", DAY2.isoformat()]
    assert main(argv) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["summary"]["tasks"] == 0
    assert report["summary"]["waiting_at_end"] == 1
    assert report["days"] == [DAY1.isoformat()]


def test_a_from_before_the_first_event_is_said_as_no_warm_up(tmp_path: Path) -> None:
    """`--from` a week before the history began: the report said the warm-up was -5.7
    days (recheck of the report)."""
    history = write_history(tmp_path / "h.jsonl")
    out = tmp_path / "out"
    early = DAY1 - dt.timedelta(days=6)
    args = ["--events", str(history), "--from", early.isoformat(), "--out", str(out)]
    assert main(["backtest", *args]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    (warning,) = report["warnings"]
    first = report["summary"]["first_event"]
    assert warning.startswith(
        f"--from is at or before the first event ({first}): there is no warm-up, where "
    )
    assert "cooldown (14 days) needs one that long" in warning
    assert not re.search(r"-\d", warning.replace(first, "")), warning  # no negative days


def test_no_event_read_runs_no_sweep_on_to_to(tmp_path: Path) -> None:
    """An empty file, or one all of whose events are from `--to` on, with `--to`: event
    time ran on from 1970, sweeping each of its 495,000 hours (8 s, and nothing found)."""
    bt = Backtest(load_rules(write_rules(tmp_path / "r.yaml")), capacity_policy())
    swept: list[int] = []

    async def sweep(mark: int) -> None:
        swept.append(mark)

    bt._sweep = sweep  # type: ignore[method-assign]
    until = dt.datetime.combine(DAY2, dt.time(0), SHANGHAI).timestamp()
    result = asyncio.run(bt.run([], until=until))
    assert (result.events, swept) == (0, [])
    assert build_report(result)["days"] == []


FEWER_TOPUPS = """series:
  topups_day: {on: [topup], period: day}
rules:
  - id: few_topups
    description: Few top-ups
    on: [topup]
    evaluate: daily
    condition: %s
    task: {family: anomaly, type: few_topups, channel: sms, priority: 3,
           action: review, ttl: 24h, cooldown: 30d, description: "Few top-ups"}
"""


@pytest.mark.parametrize(
    ("condition", "days"),
    [
        ("{series: topups_day, agg: count, last: 3, lt: 1}", 4),
        ("{not: {series: topups_day, agg: count, last: 3, gte: 1}}", 4),
        # An "at least" test is judged at once: the windows it reads are enough.
        ("{series: topups_day, agg: count, last: 3, gte: 1}", 3),
    ],
)
def test_a_close_time_test_waiting_for_the_history_needs_the_window_it_began_in(
    condition: str, days: int
) -> None:
    """A daily "fewer than" over 3 days is judged first at the close of the 4th day after
    a history begun at midnight (the window it began in reads as a partial one): a
    warm-up of 3 days to a midnight --live-from left the first live close unjudged, and
    the warning said 3 days were enough."""
    from .rules.helpers import at, ev, rules_from, run

    rules = rules_from(FEWER_TOPUPS % condition)
    memory = longest_memory(rules)
    assert memory.seconds == days * 86400
    if days == 3:
        return
    assert memory.what.startswith("few_topups's 3-day series of topups_day, judged at a day's")
    # The engine agrees: a subscriber first seen at midnight, a call a day, no top-up.
    calls = [
        ev(EventType.USAGE, at(f"2026-11-0{d}", "00:00"), kind="voice", quantity=60)
        for d in range(1, 7)
    ]
    (task,) = run(rules, calls, until=at("2026-11-07")).tasks
    first = dt.datetime.fromisoformat(at("2026-11-01", "00:00"))
    assert (task.triggered_at - first).total_seconds() == memory.seconds
    live = first.timestamp() + days * 86400
    result = BacktestResult(events=1, first_event=first.timestamp(), live_from=live)
    assert report_warnings(result, rules) == []
    result.live_from = live - 86400
    (warning,) = report_warnings(result, rules)
    assert warning.startswith("The warm-up before --live-from is 3.0 days, shorter than")


def test_a_comparisons_moments_by_type_are_those_the_report_detected(tmp_path: Path) -> None:
    """With --from, the figures per moment type counted a moment of the warm-up dropped or
    published after it (a task that waited across --from) under `suppressed` or
    `published`, with no `detected`: they added up to more than `detected` (a week
    warmed up two days: 456 detected, 475 suppressed, 3 published). They count the
    moments the report period detected, and what became of them."""
    thanks = """
  - id: thanks
    description: A thank-you SMS for a large top-up
    on: [topup]
    condition: {field: amount, gte: 100}
    task: {family: anomaly, type: thanks, channel: sms, priority: 5, action: thanks,
           ttl: 1d, description: "Thanks"}
"""
    night = 13 * 60  # 23:00 on DAY1, when no SMS is sent: each waits for 08:00 on DAY2
    topups = [
        TopUp("13900000001", "NJ", DAY1, night, 150),  # sent at 08:00, NJ's one SMS slot
        TopUp("13900000002", "NJ", DAY1, night + 30, 150),  # no slot left at 08:00: dropped
        TopUp("13900000003", "SH", DAY2, 0, 150),  # the report's own: sent at once
    ]
    history = tmp_path / "h.jsonl"
    history.write_bytes(b"".join(orjson.dumps(t.event(n)) + b"\n" for n, t in enumerate(topups)))
    policy = tmp_path / "policy.yaml"
    policy.write_text(  # a contact cap: the warm-up's last day is dispatched, as its contacts
        "hours: {sms: '08:00-21:00'}\nmerge: {hold_channels: []}\n"
        "contact: {max_contacts: 9, period: 1d}\ncapacity: {NJ: {sms: 1}}\n"
        "reserved_share: 0\noverflow: {thanks: {policy: drop}}\n"
    )
    out = tmp_path / "out"
    argv = [
        "backtest", "--events", str(history), "--rules",
        str(write_rules(tmp_path / "new.yaml", extra=thanks)),
        "--baseline-rules", str(write_rules(tmp_path / "base.yaml")), "--policy", str(policy),
        "--from", DAY2.isoformat(), "--to", (DAY2 + dt.timedelta(days=1)).isoformat(),
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    tasks = [orjson.loads(line) for line in (out / "tasks.jsonl").read_bytes().splitlines()]
    assert sorted(t["subscriber_id"] for t in tasks if t["moment"]["type"] == "thanks") == [
        "13900000001",  # the night's, at 08:00
        "13900000003",
    ]
    assert report["suppressed"] == {"capacity": 1}  # the night's other, at 08:00
    (row,) = report["comparison"]["per_moment_type"]
    assert row == {
        "moment_type": "thanks",
        "detected": [0, 1],
        "suppressed": [0, 0],
        "published": [0, 1],
    }


def test_a_from_within_a_day_leaves_its_warm_up_hours_out_of_that_days_capacity(
    tmp_path: Path,
) -> None:
    """`--from 2026-12-08T12:00:00+08:00`: the first day's capacity rows counted the slots
    the warm-up morning took and was refused (NJ outbound calls: needed 17, taken 15,
    while 2 calls were published in the report), beside tasks per day, unlimited channels'
    rows and the note saying that day's figures "count only those hours" (audit). A
    limited pool's row counts the decisions from --from on, as the tasks do."""
    start = dt.datetime.combine(DAY1, dt.time(10, 12), SHANGHAI)
    policy = DispatchPolicy.model_validate(
        {
            "capacity": {"NJ": {"manager": NJ_MANAGER_LIMIT}},
            "reserved_share": 0,
            "overflow": {"big_topup": {"policy": "drop"}},
            "merge": {"window": "30m", "hold_channels": []},
            "contact": {"max_contacts": 5, "period": "7d"},  # warm-up tasks are dispatched
        }
    )
    rules = load_rules(write_rules(tmp_path / "r.yaml"))
    bt = Backtest(rules, policy, report_from=start.timestamp())
    result = asyncio.run(bt.run(EventFile(write_history(tmp_path / "h.jsonl"))))
    report = build_report(result)
    day1 = {(r["region"], r["channel"]): r for r in report["capacity"] if r["day"] == str(DAY1)}
    # From 10:12 on, one NJ manager call asked (the 10:15 one) and found the pool full:
    # the 10:00 and 10:05 calls took it in the warm-up, the 10:10 one was refused then.
    asked = [t for t in SCENARIO if t.day == DAY1 and t.region == "NJ" and t.amount >= BIG]
    after = [t for t in asked if t.at >= start]
    reported = [
        t
        for t in result.tasks()
        if (t["region"], t["channel"]) == ("NJ", Channel.MANAGER.value)
        and dt.datetime.fromisoformat(t["deliver_after"]).astimezone(SHANGHAI).date() == DAY1
    ]
    assert not reported
    row = day1[("NJ", "manager")]
    assert (row["needed"], row["new"], row["taken"]) == (len(after), len(after), len(reported))
    assert report["partial_days"][DAY1.isoformat()] == "from 10:12"


def test_the_shared_report_says_which_time_zone_its_days_are(tmp_path: Path) -> None:
    """report.md and report.html list tasks per `2026-11-10` and capacity per day, days of
    the dispatch policy's zone, but named the zone nowhere (only report.json's
    `summary.timezone`): a report shared from a run with `timezone: UTC` read as
    Shanghai's days, eight hours off (audit). The Summary says it."""
    policy = DispatchPolicy.model_validate(
        {"timezone": "UTC", "merge": {"window": "30m", "hold_channels": []}}
    )
    result = run(write_rules(tmp_path / "r.yaml"), write_history(tmp_path / "h.jsonl"), policy)
    report = build_report(result)
    assert "| days (tasks, capacity) are local days of | UTC |" in markdown(report)
    page = html_page(report, b"")
    assert "<td>days (tasks, capacity) are local days of</td><td>UTC</td>" in page


def test_a_region_written_in_another_case_is_one_region_in_the_report(tmp_path: Path) -> None:
    """Events from `nj` and `NJ` are one city (moments.placetext: NJ's thresholds, NJ's
    capacity pool), but the report's tasks per region and the unlimited channels' capacity
    rows listed `NJ` and `nj` apart, each with part of the city's load, beside one `NJ`
    row for its limited pool (audit: 131 and 125 tasks a day). They are one region,
    named as the policy writes it."""
    history = tmp_path / "h.jsonl"
    topups = [*SCENARIO, TopUp("13900000007", "nj", DAY1, 30, 40)]  # an SMS, from `nj`
    docs = sorted((t.event(n) for n, t in enumerate(topups)), key=lambda d: d["occurred_at"])
    history.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    result = run(write_rules(tmp_path / "r.yaml"), history)
    report = build_report(result)
    tasks = result.tasks()
    assert {t["region"] for t in tasks} >= {"NJ", "nj"}
    regions = {r["region"] for r in report["tasks_per_day"]["region"]}
    assert "nj" not in regions
    per_day = {(r["day"], r["region"]): r["tasks"] for r in report["tasks_per_day"]["region"]}
    for day in {_day(t) for t in tasks}:
        nj = sum(1 for t in tasks if t["region"].casefold() == "nj" and _day(t) == day)
        assert per_day[(day, "NJ")] == nj
    sms = {
        (r["day"], r["region"]): r["needed"] for r in report["capacity"] if r["channel"] == "sms"
    }
    assert (DAY1.isoformat(), "nj") not in sms
    nj_sms = [t for t in tasks if t["region"].casefold() == "nj" and t["channel"] == "sms"]
    assert sms[(DAY1.isoformat(), "NJ")] == sum(1 for t in nj_sms if _day(t) == DAY1.isoformat())


def _day(task: dict[str, Any]) -> str:
    return dt.datetime.fromisoformat(task["deliver_after"]).astimezone(SHANGHAI).date().isoformat()


def test_a_short_history_note_asks_for_as_long_a_history_as_the_baseline_needs(
    tmp_path: Path,
) -> None:
    """A rule comparing a week with the 4 before needs about 35 days of history; its note
    said to simulate `--duration 3w` whatever the baseline, 21 days, which still makes no
    task."""
    series = "series:\n  topup_week: {on: [topup], field: amount, period: week}\n"
    weekly = BIG_DAY.replace("topup_day", "topup_week").replace("windows: 7", "windows: 4")
    base = write_rules(tmp_path / "base.yaml")
    candidate = tmp_path / "new.yaml"
    candidate.write_text(series + (RULES % {"big": BIG, "priority": 3, "extra": weekly}))
    out = tmp_path / "out"
    args = ["--events", str(write_history(tmp_path / "h.jsonl")), "--out", str(out)]
    assert main(["backtest", *args, "--rules", str(candidate), "--baseline-rules", str(base)]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    (said,) = [n for n in report["notes"] if n.startswith("big_topup_week (new) made no task")]
    assert "needs about 35 days of history" in said
    assert "(moments simulate --duration 6w)" in said


THANKS = """
  - id: thanks_monthly
    description: Thank a customer for a top-up, once a month
    on: [topup]
    condition: {field: amount, gte: 1}
    task: {family: anomaly, type: thanks_monthly, channel: sms, priority: 4,
           action: thanks_sms, ttl: 1d, cooldown: 30d, description: "Thanks for {amount}"}
"""


def test_a_new_rule_whose_moments_were_all_suppressed_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new rule with a 30-day cooldown, backtested after a shorter warm-up, read
    `big_topup (new) 0 0 0` with `detected 0 -> 1,078, suppressed 0 -> 1,078` further
    down, and no word of why (analyst walk): its cooldown ran from its moments of the
    warm-up. The report notes how many were suppressed, for what, and the cooldown."""
    base = write_rules(tmp_path / "base.yaml")
    candidate = write_rules(tmp_path / "new.yaml", extra=THANKS)
    out = tmp_path / "out"
    args = ["--events", str(write_history(tmp_path / "h.jsonl")), "--out", str(out)]
    args += ["--rules", str(candidate), "--baseline-rules", str(base), "--from", str(DAY2)]
    assert main(["backtest", *args]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    said = [n for n in report["notes"] if n.startswith("thanks_monthly (new) made no task")]
    assert said == [
        "thanks_monthly (new) made no task: its 1 moment(s) of the report period were "
        "suppressed (cooldown 1; the table Suppressed by reason). Its cooldown, 30 days, "
        "runs from its moments before --from too (the warm-up's, dispatched or not): a "
        "subscriber it fired for then has no task from it until the cooldown ends. Warm "
        "up for longer than the cooldown, or shorten it, to see what it makes."
    ]
    assert said[0] in " ".join(capsys.readouterr().err.split())
    assert said[0] in (out / "report.md").read_text()
