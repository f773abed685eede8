"""When silent subscribers' windows are swept, and how a rules reload is decided."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from moments.eventclock import EventClock
from moments.models import Channel
from moments.reload import Reloader, signature, with_also
from rules.catalog import RuleSet, load_rules

from .catalogs import default_rules

HOUR = 3600


class TestEventClock:
    def test_a_partition_is_swept_once_per_hour_of_event_time(self) -> None:
        clock = EventClock(lateness_s=HOUR, idle_after_s=60)
        clock.observe({0: 10 * HOUR + 5}, wall=1000.0)
        assert clock.due([0], wall=1001.0) == {0: 10 * HOUR + 5}
        clock.done({0: 10 * HOUR + 5})
        clock.observe({0: 10 * HOUR + 1800}, wall=1002.0)
        assert clock.due([0], wall=1003.0) == {}
        clock.observe({0: 11 * HOUR}, wall=1004.0)
        assert clock.due([0], wall=1005.0) == {0: 11 * HOUR}

    def test_an_idle_partition_follows_the_wall_clock_minus_lateness(self) -> None:
        clock = EventClock(lateness_s=HOUR, idle_after_s=60)
        clock.observe({1: 5 * HOUR}, wall=100 * HOUR)
        clock.done({1: 5 * HOUR})
        assert clock.due([1], wall=100 * HOUR + 30) == {}  # busy a moment ago: event time rules
        assert clock.due([1], wall=100 * HOUR + 61) == {1: 99 * HOUR + 61}

    def test_a_partition_just_given_waits_for_its_events_before_the_wall_clock(self) -> None:
        """A worker that starts with a backlog sweeps once, at its events' hour, not first
        an hour behind them (the wall clock minus the lateness) and then again."""
        clock = EventClock(lateness_s=HOUR, idle_after_s=60)
        assert clock.due([3], wall=7 * HOUR) == {}  # just given: its events may be coming
        clock.observe({3: 7 * HOUR - 10}, wall=7 * HOUR + 5)  # the backlog's first batch
        assert clock.due([3], wall=7 * HOUR + 6) == {3: 7 * HOUR - 10}
        clock.done({3: 7 * HOUR - 10})
        clock.observe({3: 7 * HOUR - 2}, wall=7 * HOUR + 7)
        assert clock.due([3], wall=7 * HOUR + 8) == {}  # the same hour: swept once

    def test_a_partition_given_and_silent_uses_the_wall_clock(self) -> None:
        clock = EventClock(lateness_s=0, idle_after_s=60)
        assert clock.due([3], wall=7 * HOUR) == {}
        assert clock.due([3], wall=7 * HOUR + 61) == {3: 7 * HOUR + 61}

    def test_a_partition_given_again_waits_again(self) -> None:
        clock = EventClock(lateness_s=0, idle_after_s=60)
        assert clock.due([3], wall=7 * HOUR) == {}
        clock.forget([])
        assert clock.due([3], wall=7 * HOUR + 61) == {}

    def test_partitions_handed_away_are_forgotten(self) -> None:
        clock = EventClock(lateness_s=0, idle_after_s=60)
        clock.observe({0: HOUR, 1: HOUR}, wall=0.0)
        clock.forget([1])
        assert set(clock.watermarks) == {1}


GOOD = """
rules:
  - id: r
    description: d
    on: [usage]
    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a, description: d}
"""


class TestReloader:
    def make(self, path: Path) -> tuple[Reloader, list[RuleSet], list[tuple[str, int | None]]]:
        installed: list[RuleSet] = []
        recorded: list[tuple[str, int | None]] = []
        reloader = Reloader(path, installed.append, lambda r, n: recorded.append((r, n)))
        return reloader, installed, recorded

    def test_nothing_happens_without_a_change(self, tmp_path: Path) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        reloader, installed, _ = self.make(path)
        assert reloader.check() is None
        assert installed == []

    def test_a_bad_file_is_refused_and_a_fixed_one_installed(self, tmp_path: Path) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        reloader, installed, recorded = self.make(path)
        path.write_text(GOOD.replace("on: [usage]", "on: [usage]\n    colour: red"))
        assert reloader.check() is None  # seen once: not settled yet
        assert reloader.check() == "error"
        assert installed == []
        path.write_text(GOOD + "\n")
        assert reloader.check() is None
        assert reloader.check() == "ok"
        assert [len(r) for r in installed] == [1]
        assert recorded == [("error", None), ("ok", 1)]

    def test_a_file_emptied_by_a_half_done_write_keeps_the_rules_in_force(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        reloader, installed, recorded = self.make(path)
        path.write_text("")
        assert reloader.check() is None
        assert reloader.check() == "error"
        assert installed == []
        assert recorded == [("error", None)]

    def test_sighup_reloads_even_when_nothing_changed(self, tmp_path: Path) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        reloader, installed, _ = self.make(path)
        reloader.request()
        assert reloader.check() == "ok"
        assert reloader.check() is None
        assert len(installed) == 1

    def test_the_packaged_catalog_reloads_on_request(self) -> None:
        installed: list[RuleSet] = []
        reloader = Reloader(None, installed.append, lambda r, n: None)
        reloader.request()
        assert reloader.check() == "ok"
        assert len(installed[0]) == len(default_rules())

    def test_a_file_the_loader_chokes_on_keeps_the_rules_in_force(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Any exception while loading is a refusal, logged with its traceback and counted:
        a RecursionError from a deep file crashed the worker."""
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)

        def choke(_: Path | None) -> RuleSet:
            raise RecursionError("maximum recursion depth exceeded")

        installed: list[RuleSet] = []
        recorded: list[tuple[str, int | None]] = []
        reloader = Reloader(path, installed.append, lambda r, n: recorded.append((r, n)), choke)
        path.write_text(GOOD + "\n")
        with caplog.at_level(logging.ERROR, "moments.reload"):
            assert reloader.check() is None
            assert reloader.check() == "error"
        assert installed == []
        assert recorded == [("error", None)]
        (record,) = caplog.records
        assert f"(what is in force stays: the rules from {path}, loaded at " in record.getMessage()
        assert record.exc_info is not None
        assert record.exc_info[0] is RecursionError

    def test_a_deeply_nested_file_is_refused_and_named(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        reloader, installed, recorded = self.make(path)
        path.write_text("rules: " + "[" * 5000 + "]" * 5000)
        with caplog.at_level(logging.ERROR, "moments.reload"):
            assert reloader.check() is None
            assert reloader.check() == "error"
        assert installed == []
        assert recorded == [("error", None)]
        assert f"{path}:1:71: nested more than 64 levels deep" in caplog.text
        # The line on-call reads at 3 a.m. (ops drill): it said "the rules in force stays".
        assert f"rules reload refused (what is in force stays: the rules from {path}, " in (
            caplog.text
        )


class TestRefusalNamesWhatStays:
    """A refused reload said "what is in force stays" without saying what that was: on-call
    could not tell which rules the worker kept (the ones of last week's file, or of the
    good edit an hour ago) without reading metrics by instance."""

    @staticmethod
    def reloader(folder: Path, record: Callable[[str, int | None], None] | None = None) -> Reloader:
        """A reloader of `folder` whose rules in force are those loaded from it now."""
        in_force = [load_rules(folder)]
        return Reloader(
            folder, in_force.append, record or (lambda r, n: None), current=lambda: in_force[-1]
        )

    @staticmethod
    def refused(reloader: Reloader, caplog: pytest.LogCaptureFixture) -> str:
        """The first line of the refusal the next change (two checks: it settles) logs."""
        caplog.clear()
        with caplog.at_level(logging.ERROR, "moments.reload"):
            assert reloader.check() is None
            assert reloader.check() == "error"
        return caplog.records[0].getMessage().splitlines()[0]

    def test_the_rules_kept_are_named_with_their_files_and_versions(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        (tmp_path / "a.yaml").write_text(GOOD)
        (tmp_path / "b.yaml").write_text(
            GOOD.replace("id: r", "id: r2\n    version: 3\n    mode: shadow")
        )
        reloader = self.reloader(tmp_path)
        (tmp_path / "c.yaml").write_text("rules: [{id: broken}]\n")
        said = self.refused(reloader, caplog)
        assert len(caplog.records) == 1
        assert said.startswith(
            f"rules reload refused (what is in force stays: the rules from {tmp_path} "
            "(a.yaml, b.yaml), loaded at "
        )
        assert said.endswith("; 2 rule(s), 1 live and 1 shadow: r v1, r2 v3):")
        assert "c.yaml" not in said  # the file refused is no part of what stays

        # Fixed, then broken again: what stays is the fixed catalog, its three files.
        (tmp_path / "c.yaml").write_text(GOOD.replace("id: r", "id: r3"))
        assert reloader.check() is None
        assert reloader.check() == "ok"
        (tmp_path / "c.yaml").write_text("rules: [{id: broken}]\n")
        said = self.refused(reloader, caplog)
        assert "(a.yaml, b.yaml, c.yaml)" in said
        assert said.endswith("; 3 rule(s), 2 live and 1 shadow: r v1, r2 v3, r3 v1):")

    def test_a_large_catalog_names_its_first_rules_and_counts_the_rest(self) -> None:
        from moments.reload import SHOWN_RULES, rules_in_force

        rules = default_rules()
        said = rules_in_force(rules)
        first = rules.rules[0]
        assert said.startswith(f"{len(rules)} rule(s), ")
        assert f": {first.id} v{first.version}, " in said
        assert said.endswith(f" and {len(rules) - SHOWN_RULES} more (moments_rule_info)")

    def test_a_folder_no_longer_searchable_is_refused_not_raised(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The worker runs as a user of its own (the image's `moments`): a rules folder whose
        parent an operator makes unreadable to it gives EACCES on every stat. The load fails
        and is logged; naming what stays must not stat the folder again, or the refusal
        itself raised out of the reload timer and the failure was never recorded."""
        rules = tmp_path / "rules"
        rules.mkdir()
        (rules / "a.yaml").write_text(GOOD)
        recorded: list[tuple[str, int | None]] = []
        reloader = self.reloader(rules, lambda r, n: recorded.append((r, n)))
        real_stat = os.stat

        def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
            if str(path).startswith(str(rules)):
                raise PermissionError(13, "Permission denied", str(path))
            return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "stat", stat)
        said = self.refused(reloader, caplog)  # the files vanished from sight: settles once
        assert recorded == [("error", None)]
        assert f"the rules from {rules} (a.yaml), loaded at " in said

    def test_a_folder_of_many_files_names_its_first_ones_and_counts_the_rest(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One file per rule (a team's layout): 200 of them made the refusal a line of
        200 names, where the rules themselves are capped at SHOWN_RULES."""
        from moments.reload import SHOWN_FILES

        for i in range(200):
            (tmp_path / f"r{i:03}.yaml").write_text(GOOD.replace("id: r", f"id: r{i}"))
        reloader = self.reloader(tmp_path)
        (tmp_path / "r000.yaml").write_text("rules: [{id: broken}]\n")
        said = self.refused(reloader, caplog)
        shown = ", ".join(f"r{i:03}.yaml" for i in range(SHOWN_FILES))
        assert f"(200 files: {shown} and {200 - SHOWN_FILES} more), loaded at " in said
        assert f"r{SHOWN_FILES:03}.yaml" not in said


class TestReloadSettles:
    """A change is loaded when two checks in a row see the same files: an analyst copying
    files into the rules folder one at a time had a check fall between two copies and the
    catalog in between (a new rule before the gating that caps it) loaded for one check."""

    def make(self, path: Path) -> tuple[Reloader, list[RuleSet]]:
        installed: list[RuleSet] = []
        return Reloader(path, installed.append, lambda r, n: None), installed

    def test_files_copied_one_at_a_time_are_loaded_together(self, tmp_path: Path) -> None:
        (tmp_path / "a.yaml").write_text(GOOD)
        reloader, installed = self.make(tmp_path)
        (tmp_path / "b.yaml").write_text(GOOD.replace("id: r", "id: r2"))
        assert reloader.check() is None  # a check between the two copies loads nothing
        (tmp_path / "gating.yaml").write_text("gating:\n  timezone: Europe/Paris\n")
        assert reloader.check() is None  # changed again since: still copying
        assert reloader.check() == "ok"
        (rules,) = installed
        assert sorted(r.id for r in rules.rules) == ["r", "r2"]
        assert rules.gating.timezone == "Europe/Paris"
        assert reloader.check() is None

    def test_a_copy_that_keeps_the_mtime_and_size_is_seen(self, tmp_path: Path) -> None:
        """`cp -p` (or `rsync -t`) of a file of the same size leaves its mtime as it was:
        only the change time (ctime) says it changed."""
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        before = os.stat(path)
        reloader, installed = self.make(path)
        path.write_text(GOOD.replace("id: r", "id: q"))  # the same size
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert os.stat(path).st_size == before.st_size
        assert reloader.check() is None
        assert reloader.check() == "ok"
        assert [r.id for r in installed[0].rules] == ["q"]

    def test_a_file_still_growing_is_not_loaded(self, tmp_path: Path) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        reloader, installed = self.make(path)
        text = GOOD.replace("id: r", "id: r2")
        path.write_text(text[:-20])
        assert reloader.check() is None
        path.write_text(text)  # the rest of it: a different size
        assert reloader.check() is None
        assert reloader.check() == "ok"
        assert [r.id for r in installed[0].rules] == ["r2"]

    def test_a_change_undone_before_it_settled_loads_nothing(self, tmp_path: Path) -> None:
        (tmp_path / "a.yaml").write_text(GOOD)
        reloader, installed = self.make(tmp_path)
        extra = tmp_path / "b.yaml"
        extra.write_text(GOOD.replace("id: r", "id: r2"))
        assert reloader.check() is None
        extra.unlink()
        assert reloader.check() is None
        assert reloader.check() is None
        assert installed == []

    def test_sighup_loads_at_once_without_waiting_for_the_files_to_settle(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        reloader, installed = self.make(path)
        path.write_text(GOOD.replace("id: r", "id: r2"))
        reloader.request()
        assert reloader.check() == "ok"
        assert reloader.check() is None  # what SIGHUP loaded is not loaded again
        assert [r.id for r in installed[0].rules] == ["r2"]

    def test_a_configmap_update_is_loaded_one_check_later(self, tmp_path: Path) -> None:
        """The kubelet writes a new `..<timestamp>` folder and swaps the `..data` symlink."""
        first = tmp_path / "..2026_12_01_00_00_00.000000001"
        first.mkdir()
        (first / "rules.yaml").write_text(GOOD)
        (tmp_path / "..data").symlink_to(first.name)
        (tmp_path / "rules.yaml").symlink_to("..data/rules.yaml")
        reloader, installed = self.make(tmp_path)
        second = tmp_path / "..2026_12_01_00_01_00.000000002"
        second.mkdir()
        (second / "rules.yaml").write_text(GOOD.replace("id: r", "id: r2"))
        (tmp_path / "..data_tmp").symlink_to(second.name)
        (tmp_path / "..data_tmp").rename(tmp_path / "..data")  # atomic, as the kubelet does
        assert reloader.check() is None
        assert reloader.check() == "ok"
        assert [r.id for r in installed[0].rules] == ["r2"]


class TestACalendarChange:
    """The holiday calendar a rules file names (`special_days: {calendar: days.yaml}`) is
    read with the rules, and a change to it is loaded as a rules file's is: an operator's
    new day of their own was never loaded (no greeting) until a rules file changed or
    SIGHUP, when the rules file was MOMENTS_RULES or the calendar sat outside its folder."""

    RULES = """
special_days: {calendar: ../days/days.yaml}
rules:
  - id: our_day
    description: Greeting on the operator's own day
    on: [profile]
    evaluate: special_day
    condition: {occasion: holiday, holidays: [our_day]}
    task: {family: special_day, type: t, channel: sms, priority: 4, action: greet, ttl: 12h,
           description: d}
"""
    DAYS = "holidays:\n  - key: our_day\n    name: Our day\n    every_year: {}\n"

    @pytest.mark.parametrize("folder", [False, True], ids=["rules file", "rules folder"])
    def test_a_changed_calendar_is_loaded_once_settled(self, tmp_path: Path, folder: bool) -> None:
        (tmp_path / "rules").mkdir()
        (tmp_path / "days").mkdir()
        rules_file = tmp_path / "rules" / "rules.yaml"
        rules_file.write_text(self.RULES)
        calendar = tmp_path / "days" / "days.yaml"
        calendar.write_text(self.DAYS.format("05-17"))
        path = rules_file.parent if folder else rules_file
        installed = [load_rules(path)]
        reloader = Reloader(
            path, installed.append, lambda r, n: None, current=lambda: installed[-1]
        )
        named = installed[0].special.calendar_file
        assert named is not None
        assert with_also(signature(path), (named,)) == reloader.signature()  # as the worker
        assert reloader.check() is None
        calendar.write_text(self.DAYS.format("06-01"))
        assert reloader.check() is None  # seen once: not settled yet
        assert reloader.check() == "ok"
        days = [h.day for h in installed[-1].special.calendar.in_year(2027) if h.key == "our_day"]
        assert days == [dt.date(2027, 6, 1)]
        assert reloader.check() is None
        assert reloader.check() is None  # loaded once


class TestReloadOffTheLoop:
    """The worker's timer and SIGHUP load in a thread and install on the event loop."""

    async def test_the_loop_runs_while_a_file_loads_and_the_rules_go_in_on_it(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        loaded_in: list[threading.Thread] = []
        installed_in: list[threading.Thread] = []
        loop, started, release = asyncio.get_running_loop(), asyncio.Event(), threading.Event()

        def slow_load(where: Path | None) -> RuleSet:
            loaded_in.append(threading.current_thread())
            loop.call_soon_threadsafe(started.set)
            release.wait(5)
            return load_rules(where)

        reloader = Reloader(
            path,
            lambda _: installed_in.append(threading.current_thread()),
            lambda r, n: None,
            slow_load,
        )
        path.write_text(GOOD + "\n")
        assert await reloader.check_off_loop() is None  # not settled yet
        check = asyncio.create_task(reloader.check_off_loop())
        await asyncio.wait_for(started.wait(), 5)  # the loop goes on while the file loads
        assert await reloader.check_off_loop() is None  # one load at a time
        release.set()
        assert await check == "ok"
        assert loaded_in[0] is not threading.current_thread()
        assert installed_in == [threading.current_thread()]

    async def test_a_request_during_a_load_is_served_when_it_ends(self, tmp_path: Path) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        loop, started, release = asyncio.get_running_loop(), asyncio.Event(), threading.Event()

        def slow_load(where: Path | None) -> RuleSet:
            loop.call_soon_threadsafe(started.set)
            release.wait(5)
            return load_rules(where)

        recorded: list[tuple[str, int | None]] = []
        reloader = Reloader(path, lambda _: None, lambda r, n: recorded.append((r, n)), slow_load)
        reloader.request()
        check = asyncio.create_task(reloader.check_off_loop())
        await asyncio.wait_for(started.wait(), 5)
        reloader.request()  # SIGHUP while the first load runs
        release.set()
        assert await check == "ok"
        assert recorded == [("ok", 1), ("ok", 1)]

    async def test_a_refusal_off_the_loop_keeps_the_rules_in_force(self, tmp_path: Path) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(GOOD)
        installed: list[RuleSet] = []
        recorded: list[tuple[str, int | None]] = []
        reloader = Reloader(path, installed.append, lambda r, n: recorded.append((r, n)))
        path.write_text("rules: " + "[" * 5000 + "]" * 5000)
        assert await reloader.check_off_loop() is None
        assert await reloader.check_off_loop() == "error"
        assert installed == []
        assert recorded == [("error", None)]


class TestPolicyReloader:
    """The dispatch policy file is reloaded as the rules are (it was read at start only:
    on-call could not change a capacity without a restart, nor see a broken file before
    the next rollout; ops review)."""

    def test_a_bad_policy_is_refused_and_a_fixed_one_put_in_force(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        from moments.engine import Detector
        from moments.reload import PolicyReloader
        from moments.runtime import Runtime
        from moments.settings import load_settings
        from sinks.dispatch import TaskSink
        from sinks.memory import memory_stores
        from sinks.metrics import Metrics

        caplog.set_level(logging.INFO, "moments.reload")
        path = tmp_path / "policy.yaml"
        path.write_text("capacity: {NJ: {manager: 5}}\n")
        metrics = Metrics()
        runtime = Runtime(load_settings(dispatch_policy=path), metrics, Detector.__new__(Detector))
        sink = TaskSink(None, "tasks", memory_stores(lambda: 0.0), metrics, runtime.policy)  # type: ignore[arg-type]
        runtime.tasks = sink
        reloader = runtime.policy_reloader
        assert isinstance(reloader, PolicyReloader)
        path.write_text("capacity: {NJ: {manager: -1}}\n")
        assert reloader.check() is None  # a policy file settles as a rules file does
        assert reloader.check() == "error"
        assert metrics.policy_refused._value.get() == 1
        assert sink.policy.capacity["NJ"][Channel.MANAGER] == 5  # the one in force stays
        # What stays is named: the limit a manager changed is the one to look for.
        assert (
            f"dispatch policy reload refused (what is in force stays: the dispatch policy "
            f"from {path}, loaded at "
        ) in caplog.text
        assert "; tasks a day: NJ manager 5; no limit otherwise;" in caplog.text
        path.write_text("capacity: {NJ: {manager: 8}}\n")
        assert reloader.check() is None
        assert reloader.check() == "ok"
        assert metrics.policy_refused._value.get() == 0
        assert sink.policy.capacity["NJ"][Channel.MANAGER] == 8
        # the file first, then the policy in words: "... any other all day from FILE" read
        # as hours from a file (policy walk)
        said = f"dispatch policy reloaded from {path}: the new one in force, tasks a day: NJ"
        assert said in caplog.text
        assert sink._judging.fitting.capacity.policy is sink.policy  # the new limits

    def test_a_refused_policy_names_ten_regions_and_counts_the_rest(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A province's policy lists dozens of cities: the refusal's line named every
        one's limits (thousands of characters), where the rules' names ten."""
        from moments.reload import PolicyReloader

        caplog.set_level(logging.INFO, "moments.reload")
        path = tmp_path / "policy.yaml"
        regions = ", ".join(f"C{i:02}: {{manager: {i + 1}}}" for i in range(30))
        path.write_text(f"capacity: {{{regions}}}\n")
        from sinks.policy import load_policy

        installed: list[object] = []
        in_force = load_policy(path)
        reloader = PolicyReloader(path, installed.append, lambda r, n: None)
        reloader.current = lambda: in_force
        path.write_text("capacity: {C00: {manager: -1}}\n")
        assert reloader.check() is None
        assert reloader.check() == "error"
        (line,) = [r.getMessage() for r in caplog.records if "reload refused" in r.getMessage()]
        assert "C00 manager 1; C01 manager 2;" in line
        assert "C09 manager 10;" in line
        assert "C10 manager" not in line
        assert "20 more region(s) (`moments check` lists them)" in line
        assert installed == []

    def test_a_refused_policy_names_five_runs_of_days_off_and_counts_the_rest(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A centre closed every Sunday lists 52 days off (`closed_days:`): the refusal's
        line named every one, 700 characters a channel, as it had named every region."""
        import datetime as dt

        from moments.reload import PolicyReloader
        from sinks.policy import load_policy

        caplog.set_level(logging.INFO, "moments.reload")
        path = tmp_path / "policy.yaml"
        sundays = [dt.date(2027, 1, 3) + dt.timedelta(weeks=n) for n in range(52)]
        days = ", ".join(d.isoformat() for d in sundays)
        path.write_text(
            f"closed_days: {{outbound_call: [{days}], manager: [2027-02-06..2027-02-13]}}\n"
        )
        in_force = load_policy(path)
        reloader = PolicyReloader(path, lambda p: None, lambda r, n: None)
        reloader.current = lambda: in_force
        path.write_text("capacity: {C00: {manager: -1}}\n")
        assert reloader.check() is None
        assert reloader.check() == "error"
        (line,) = [r.getMessage() for r in caplog.records if "reload refused" in r.getMessage()]
        said = "outbound_call all day except on " + ", ".join(d.isoformat() for d in sundays[:5])
        assert said + " and 47 more day(s) (`moments check` lists them)" in line
        assert "manager all day except on 2027-02-06..2027-02-13 (Asia/Shanghai)" in line
        assert sundays[5].isoformat() not in line
        # `moments check` (the policy in words, unbounded) still names every day.
        assert all(d.isoformat() in in_force.describe() for d in sundays)

    def test_a_new_policy_leaves_no_capacity_figure_of_the_old_one(self) -> None:
        from sinks.dispatch import TaskSink
        from sinks.memory import memory_stores
        from sinks.metrics import Metrics
        from sinks.policy import DispatchPolicy

        metrics = Metrics()
        sink = TaskSink(None, "tasks", memory_stores(lambda: 0.0), metrics)  # type: ignore[arg-type]
        sink.dm.capacity_left.labels("NJ", "manager").set(3)
        labels = {"region": "NJ", "channel": "manager"}
        assert metrics.registry.get_sample_value("moments_capacity_left", labels) == 3
        sink.use_policy(DispatchPolicy())
        assert metrics.registry.get_sample_value("moments_capacity_left", labels) is None
