"""What changed between two rule sets (rules.changes): for `moments rules diff` and the
log of a reload, with a warning for a rule changed under the same version."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from moments.cli import main
from moments.engine import Detector
from moments.runtime import Runtime
from moments.settings import load_settings
from rules.catalog import load_rules
from rules.changes import compare_rules, differences
from sinks.metrics import Metrics

from .helpers import rules_from

BASE = """
series:
  spend_daily: {on: [usage], field: charge, period: day}
rules:
  - id: low_balance
    version: 2
    description: Balance below a threshold
    on: [usage, topup]
    condition: {field: balance_after, lt: $threshold}
    params: {threshold: 10}
    task: {family: anomaly, type: low_balance, channel: sms, priority: 2, action: top_up,
           ttl: 24h, description: "Balance {balance_after}"}
  - id: old_rule
    description: Any complaint
    on: [complaint]
    task: {family: anomaly, type: complaint, channel: manager, priority: 1, action: call,
           ttl: 24h, description: "Complaint"}
  - id: trial
    mode: shadow
    description: Any roaming
    on: [roaming]
    task: {family: first_time, type: roaming, channel: sms, priority: 3, action: hi,
           ttl: 24h, description: "Roaming"}
"""


def _edit(*pairs: tuple[str, str]) -> str:
    text = BASE
    for old, new in pairs:
        assert old in text
        text = text.replace(old, new)
    return text


def test_the_same_rules_loaded_twice_change_nothing() -> None:
    changes = compare_rules(rules_from(BASE), rules_from(BASE))
    assert not changes
    assert changes.describe() == "no rule changed"


def test_added_removed_changed_versions_and_modes() -> None:
    new = _edit(
        ("threshold: 10}", "threshold: 20}"),  # changed, version kept
        ("  - id: old_rule", "  - id: new_rule"),
        ("    mode: shadow\n", ""),  # the trial goes live
    )
    changes = compare_rules(rules_from(BASE), rules_from(new))
    assert changes.added == ["new_rule (version 1)"]
    assert changes.removed == ["old_rule"]
    assert changes.changed == ["low_balance", "trial (now live)"]
    assert changes.same_version == ["low_balance"]  # going live needs no new version
    bumped = compare_rules(
        rules_from(BASE),
        rules_from(_edit(("threshold: 10}", "threshold: 20}"), ("version: 2", "version: 3"))),
    )
    assert bumped.changed == ["low_balance (version 2 -> 3)"]
    assert bumped.same_version == []
    assert bumped.describe() == "changed low_balance (version 2 -> 3)"


def test_catalog_sections_are_compared_too() -> None:
    gated = "gating: {quiet_hours: ['22:00-08:00']}\n" + BASE
    assert compare_rules(rules_from(BASE), rules_from(gated)).others == ["gating"]
    weekly = _edit(("period: day", "period: week"))
    assert compare_rules(rules_from(BASE), rules_from(weekly)).others == ["series"]


def test_a_series_change_says_which_and_that_its_history_starts_again() -> None:
    """`catalog sections changed: series` said nothing of which series, where gating had
    each value; and a changed series drops the windows stored under it, so the baselines
    that read it start again (analyst walk)."""
    new = _edit(("period: day}", "period: week}")).replace(
        "series:\n", "series:\n  topup_day: {on: [topup], field: amount, period: day}\n"
    )
    changes = compare_rules(rules_from(BASE), rules_from(new))
    assert changes.others == ["series"]
    assert changes.details["series"] == [
        "spend_daily: changed; the windows stored under it are dropped, so the baselines and "
        "windows that read it start again",
        "topup_day: added",
    ]


def test_a_series_keep_change_is_said_and_keeps_the_stored_windows() -> None:
    """`keep` (how many windows a series holds) is no part of its tag, so a changed keep
    keeps the stored windows, and `rules diff` said nothing of it (analyst walk)."""
    kept = _edit(("period: day}", "period: day, keep: 5}"))
    longer = _edit(("period: day}", "period: day, keep: 8}"))
    old, new = rules_from(kept), rules_from(longer)
    assert old.series["spend_daily"].tag == new.series["spend_daily"].tag  # nothing dropped
    raised = compare_rules(old, new)
    assert raised.others == ["series"]
    assert raised.details["series"] == [
        "spend_daily: keeps 8 windows, was 5; its stored windows stay, but the 3 before "
        "them were not kept: they count as no history, so a baseline over them makes none "
        "until 3 more days have passed (a ring last written before 0.1.0 reads them as "
        "empty, a low baseline, until they pass)"
    ]
    lowered = compare_rules(new, old)
    assert lowered.details["series"] == [
        "spend_daily: keeps 5 windows, was 8; its stored windows stay, the 3 oldest no "
        "longer read (dropped as new ones come)"
    ]


def test_a_keep_the_rules_need_is_compared_too() -> None:
    """Without `keep:`, a series keeps what its rules read: a baseline over more weeks
    changes it."""
    rule = """  - id: spend_spike
    description: Spend twice the usual
    on: [usage]
    condition: {baseline: spend_weekly, windows: WINDOWS, gte: 2}
    task: {family: anomaly, type: spend, channel: sms, priority: 3, action: a, ttl: 24h,
           description: "Spend"}
"""
    base = _edit(
        (
            "period: day}",
            "period: day}\n  spend_weekly: {on: [usage], field: charge, period: week}",
        ),
        ("rules:\n", "rules:\n" + rule),
    )
    old, new = rules_from(base.replace("WINDOWS", "4")), rules_from(base.replace("WINDOWS", "6"))
    changes = compare_rules(old, new)
    assert changes.others == ["series"]
    (said,) = changes.details["series"]
    assert said.startswith("spend_weekly: keeps 8 windows, was 6; its stored windows stay")
    assert "until 2 more weeks have passed" in said


def test_rules_diff_prints_a_keep_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(_edit(("period: day}", "period: day, keep: 5}")))
    new.write_text(_edit(("period: day}", "period: day, keep: 4}")))
    assert main(["rules", "diff", str(old), str(new)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "catalog sections changed: series",
        "    spend_daily: keeps 4 windows, was 5; its stored windows stay, the 1 oldest no "
        "longer read (dropped as new ones come)",
    ]


def test_rules_diff_says_what_a_calendar_change_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two rules folders that differ only in the holiday calendar their rules name: "no
    rule changed" hid an operator's day moved and a festival turned off."""
    rules = BASE.replace("series:", "special_days: {calendar: days.yaml}\nseries:")
    day = "holidays:\n  - key: our_day\n    name: Our day\n    every_year: {}\n"
    for name, days in (
        ("old", day.format("05-17")),
        ("new", "disable: [new_year]\n" + day.format("06-01")),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rules.yaml").write_text(rules)
        (tmp_path / name / "days.yaml").write_text(days)
    assert main(["rules", "diff", str(tmp_path / "old"), str(tmp_path / "new")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "catalog sections changed: holidays",
        "    our_day: its days changed",
        "    new_year: removed",
    ]
    same = compare_rules(*(load_rules(tmp_path / "old") for _ in range(2)))
    assert not same


def test_rules_diff_says_a_renamed_holiday_is_renamed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator's day given another name (what its greeting shows), on the same day,
    was said to have its days changed: a reviewer looked for a date that had not moved."""
    rules = BASE.replace("series:", "special_days: {calendar: days.yaml}\nseries:")
    day = "holidays:\n  - key: our_day\n    name: {}\n    every_year: 05-17\n"
    for name, called in (("old", "Our day"), ("new", "Our birthday")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rules.yaml").write_text(rules)
        (tmp_path / name / "days.yaml").write_text(day.format(called))
    assert main(["rules", "diff", str(tmp_path / "old"), str(tmp_path / "new")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "catalog sections changed: holidays",
        "    our_day: its name changed",
    ]


def test_rules_diff_says_holidays_of_one_day_reordered_and_no_other_reorder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A greeting goes to the first of a day's holidays: two operator days on 05-17
    swapped in the file greeted the other one (its name, its task id) while the diff said
    "no rule changed". Days that share no date, swapped, change nothing: nothing is said."""
    rules = BASE.replace("series:", "special_days: {calendar: days.yaml}\nseries:")
    ours = "  - {key: our_day, name: Our day, every_year: 05-17}\n"
    for name, days in (
        ("old", "holidays:\n" + ours + "  - {key: telecom_day, name: Telecom, every_year: %s}\n"),
        ("new", "holidays:\n  - {key: telecom_day, name: Telecom, every_year: %s}\n" + ours),
    ):
        for shared, date in (("same", "05-17"), ("apart", "06-01")):
            folder = tmp_path / shared / name
            folder.mkdir(parents=True)
            (folder / "rules.yaml").write_text(rules)
            (folder / "days.yaml").write_text(days % date)
    assert main(["rules", "diff", str(tmp_path / "same/old"), str(tmp_path / "same/new")]) == 0
    head, said = capsys.readouterr().out.splitlines()
    assert head == "catalog sections changed: holidays"
    assert said.startswith(
        "    our_day, telecom_day: their order changed, and a rule greets the first of a "
        "day's holidays it greets: on the days they share (e.g. "
    )
    assert said.endswith("-05-17) it is now telecom_day, our_day (was our_day, telecom_day)")
    assert main(["rules", "diff", str(tmp_path / "apart/old"), str(tmp_path / "apart/new")]) == 0
    assert capsys.readouterr().out == "no rule changed\n"


def test_each_change_says_what_differs() -> None:
    new = _edit(
        ("threshold: 10}", "threshold: 20}"),
        ("channel: sms, priority: 2", "channel: outbound_call, priority: 2"),
        ("    mode: shadow\n", ""),
    )
    gated = "gating: {quiet_hours: ['22:00-08:00']}\n" + new
    changes = compare_rules(rules_from(BASE), rules_from(gated))
    assert changes.details == {
        "low_balance": ["params.threshold: 10 -> 20", "task.channel: sms -> outbound_call"],
        "trial": ["mode: shadow -> live"],
        "gating": ["quiet_hours[0]: 21:00-08:00 -> 22:00-08:00"],
    }


def test_differences_of_plain_documents() -> None:
    old = {"a": 1, "b": [1, 2], "c": {"d": "x"}, "gone": True}
    new = {"a": 1, "b": [1, 2, 3], "c": {"d": "y"}, "new": {"k": 1}}
    assert differences(old, new) == [
        "b: [1, 2] -> [1, 2, 3]",
        "c.d: x -> y",
        "gone: True removed",
        "new: {k: 1} added",
    ]


def test_rules_diff_prints_the_changes_and_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(BASE)
    new.write_text(_edit(("threshold: 10}", "threshold: 20}")))
    assert main(["rules", "diff", str(old), str(new)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["changed: low_balance", "    params.threshold: 10 -> 20"]
    assert "low_balance changed but kept its version" in err
    assert main(["rules", "diff", str(old), str(old)]) == 0
    assert capsys.readouterr().out == "no rule changed\n"


def test_a_reload_logs_what_changed(caplog: pytest.LogCaptureFixture) -> None:
    runtime = Runtime(load_settings(), Metrics(), Detector(rules_from(BASE), {}))
    with caplog.at_level(logging.INFO, logger="moments.runtime"):
        runtime.install_rules(rules_from(_edit(("threshold: 10}", "threshold: 20}"))))
    messages = [r.getMessage() for r in caplog.records]
    assert "rules change: changed low_balance" in messages
    assert any("low_balance changed but kept their version" in m for m in messages)


def test_the_rules_in_force_are_reported_and_replaced_on_a_reload() -> None:
    metrics = Metrics()
    runtime = Runtime(load_settings(), metrics, Detector(rules_from(BASE), {}))
    bumped = _edit(("version: 2", "version: 3"), ("    mode: shadow\n", ""))
    runtime.install_rules(rules_from(bumped))

    def info() -> set[tuple[str, str, str]]:
        return {
            (s.labels["rule_id"], s.labels["version"], s.labels["mode"])
            for family in metrics.registry.collect()
            if family.name == "moments_rule_info"
            for s in family.samples
            if s.value == 1
        }

    assert info() == {
        ("low_balance", "3", "live"),
        ("old_rule", "1", "live"),
        ("trial", "1", "live"),
    }
    runtime.install_rules(rules_from(BASE))
    assert info() == {
        ("low_balance", "2", "live"),
        ("old_rule", "1", "live"),
        ("trial", "1", "shadow"),
    }


def test_a_reload_that_removes_a_rule_says_its_tasks_made_still_go_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Removing a misfiring rule stops its moments, not its tasks already made: those
    waiting in the deferral queue (a night's quiet hours) go out when due. The log said
    only "rules change: removed old_rule", and nothing told ops where to look."""
    runtime = Runtime(load_settings(), Metrics(), Detector(rules_from(BASE), {}))
    without = BASE[: BASE.index("  - id: old_rule")] + BASE[BASE.index("  - id: trial") :]
    with caplog.at_level(logging.WARNING, logger="moments.runtime"):
        runtime.install_rules(rules_from(without))
    (said,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == (
        "rule(s) old_rule removed: their tasks already made still go out, those waiting "
        "in the deferral queue when due (moments tasks deferred --moment-type complaint "
        "lists them)"
    )


def _series_of(metrics: Metrics, label: str, value: str) -> set[tuple[str, str]]:
    """(family, sample name) of every series on the registry whose `label` is `value`."""
    return {
        (family.name, s.name)
        for family in metrics.registry.collect()
        for s in family.samples
        if s.labels.get(label) == value
    }


def test_a_removed_rules_series_are_no_longer_served_and_start_at_0_when_it_returns() -> None:
    """A reload that removed a rule left its moment type's series on `/metrics` until the
    worker restarted (`moments_tasks_suppressed_total{moment_type="complaint",...}` and the
    rest, each standing still), and a rule gone live its shadow series. Removing a counter's
    series is what Prometheus expects of a label value gone; the rule put back starts at 0
    (a restart's view of the same rules)."""
    metrics = Metrics()
    runtime = Runtime(load_settings(), metrics, Detector(rules_from(BASE), {}))
    runtime.install_rules(rules_from(BASE))
    metrics.suppressed.labels("complaint", "cooldown").inc(3)
    metrics.outcomes.labels("complaint", "done_no_change").inc()
    metrics.detected.labels("anomaly", "complaint").inc(4)
    metrics.shadow.labels("trial", "task", "").inc()
    assert ("moments_tasks_suppressed", "moments_tasks_suppressed_total") in _series_of(
        metrics, "moment_type", "complaint"
    )
    without = BASE[: BASE.index("  - id: old_rule")] + BASE[BASE.index("  - id: trial") :]
    live = without.replace("    mode: shadow\n", "")
    runtime.install_rules(rules_from(live))
    assert _series_of(metrics, "moment_type", "complaint") == set()
    trial = _series_of(metrics, "rule_id", "trial")  # live now: only its rule_info
    assert trial == {("moments_rule_info", "moments_rule_info")}
    assert _series_of(metrics, "moment_type", "low_balance")  # the rules in force keep theirs
    assert (
        metrics.registry.get_sample_value(
            "moments_tasks_published_total", {"moment_type": "roaming", "channel": "sms"}
        )
        == 0
    )
    runtime.install_rules(rules_from(BASE))
    labels = {"moment_type": "complaint", "reason": "cooldown"}
    assert metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) == 0
    detected = {"family": "anomaly", "moment_type": "complaint"}
    assert metrics.registry.get_sample_value("moments_detected_total", detected) == 0
    shadow = {"rule_id": "trial", "outcome": "task", "reason": ""}
    assert metrics.registry.get_sample_value("moments_shadow_moments_total", shadow) == 0


def test_a_policy_reload_naming_no_rule_is_refused_and_a_rules_reload_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At start a policy naming no rule stops the worker; a reload took one in without a
    word (its overflow applied to no rule), and rules reloaded without a rule the policy
    names left the key dangling, unsaid."""
    from moments.exceptions import ConfigError
    from sinks.policy import load_policy

    policy = tmp_path / "policy.yaml"
    policy.write_text("overflow:\n  old_rule: {policy: drop}\n")
    settings = load_settings().model_copy(update={"dispatch_policy": policy})
    runtime = Runtime(settings, Metrics(), Detector(rules_from(BASE), {}), load_policy(policy))
    assert runtime.policy_reloader.load(policy).overflow_for("old_rule").policy == "drop"
    policy.write_text("overflow:\n  old_rul: {policy: drop}\n")
    with pytest.raises(ConfigError, match=r"policy\.yaml:2:3: overflow\.old_rul: no rule id"):
        runtime.policy_reloader.load(policy)
    policy.write_text("overflow:\n  old_rule: {policy: drop}\n")
    without = BASE[: BASE.index("  - id: old_rule")] + BASE[BASE.index("  - id: trial") :]
    with caplog.at_level(logging.WARNING, logger="moments.runtime"):
        runtime.install_rules(rules_from(without))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (said,) = [m for m in warned if not m.startswith("rule(s) old_rule removed")]
    assert said.startswith("the dispatch policy names what the reloaded rules do not hold")
    assert "overflow.old_rule: no rule id 'old_rule' in the rules" in said
    assert [r.id for r in runtime.detector.rules.rules] == ["low_balance", "trial"]


def test_a_policy_refused_for_a_rule_not_yet_loaded_is_loaded_with_that_rule(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rule renamed in the rules and in the policy's overflow:, the policy's file seen
    first (two ConfigMaps, two copies): the policy was refused, its rule not in force yet,
    and never read again once the rules came: the old overflow stayed, the renamed rule
    got the default, and the warning said to fix a policy that was fixed. A policy refused
    is read again when rules are put in force."""
    from sinks.policy import load_policy

    policy = tmp_path / "policy.yaml"
    policy.write_text("overflow:\n  old_rule: {policy: drop}\n")
    settings = load_settings().model_copy(update={"dispatch_policy": policy})
    runtime = Runtime(settings, Metrics(), Detector(rules_from(BASE), {}), load_policy(policy))
    policy.write_text("overflow:\n  new_rule: {policy: drop}\n")
    runtime.policy_reloader.request()
    assert runtime.policy_reloader.check() == "error"  # new_rule is not in force yet
    runtime.install_rules(rules_from(BASE.replace("id: old_rule", "id: new_rule")))
    assert runtime.policy_reloader.check() == "ok"
    assert runtime.policy.overflow_for("new_rule").policy == "drop"
    # A policy in force is not read again for nothing.
    runtime.install_rules(rules_from(BASE.replace("id: old_rule", "id: new_rule")))
    assert runtime.policy_reloader.check() is None


def test_lists_and_maps_are_shown_as_yaml_flow() -> None:
    """`rules diff` showed a list or map as compact JSON (`["sms","manager"]`), unlike the
    rules file it came from: they are shown as the file writes them, `[sms, manager]`."""
    assert differences(
        {"on": ["usage", "topup"], "params": {"threshold": 10}},
        {"on": ["usage"], "params": {"threshold": 10, "limits": {"z": [1, 2], "a": None}}},
    ) == [
        "on: [usage, topup] -> [usage]",
        "params.limits: {z: [1, 2], a: null} added",
    ]
    assert differences({"x": ["a, b", "true"]}, {"x": []}) == ["x: ['a, b', 'true'] -> []"]


def test_rules_diff_prints_a_list_change_as_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(BASE)
    new.write_text(_edit(("on: [usage, topup]", "on: [usage]"), ("version: 2", "version: 3")))
    assert main(["rules", "diff", str(old), str(new)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "changed: low_balance (version 2 -> 3)",
        "    version: 2 -> 3",
        "    on: [usage, topup] -> [usage]",
    ]
