"""Going live with no history (`MOMENTS_LIVE_FROM`, the backtest's `--live-from`): every
rule is a shadow rule for moments dated before the instant, by their own event time; the
state they build carries over, so going live makes no burst of first-time tasks."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from moments.app import live_from_of
from moments.backtest import Backtest
from moments.backtest_input import EventFile
from moments.batchresult import BatchResult
from moments.engine import Detector
from moments.livefrom import parse_live_from
from moments.models import Channel, EventType
from moments.pipeline import run_pipeline, to_records
from moments.runtime import Runtime
from moments.settings import Settings, load_settings
from moments.store import DictStateStore
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy

from .helpers import CALL_TRIAL, NO_GATES, SUB, WELCOME, at, ev, rules_from, types

OTHER = "13900139002"
ROAMING = {"roaming_type": "international"}
SILENCE = """
  - id: silent
    description: No usage for 3 days
    on: [usage]
    evaluate: daily
    condition: {absence: 3d}
    task: {family: anomaly, type: silent, channel: sms, priority: 3, action: nudge,
           ttl: 3d, cooldown: 5d, description: "Silent"}
"""
"""With a cooldown, as the default catalog's `no_activity` (14 days). A silence judged in
the warm-up sets the rule's mark as a shadow judgement's: it holds back the warm-up's
later judgements, not the first live one (the warm-up contacted nobody)."""
RULES = NO_GATES + "rules:" + WELCOME + SILENCE
LIVE = dt.datetime.fromisoformat(at("2026-12-10", "00:00"))
DAY = dt.timedelta(days=1)


def _roam(day: str, country: str, sub: str = SUB) -> tuple[EventType, dict[str, object]]:
    return ev(EventType.ROAMING, at(day, "10:00"), sub, country=country, **ROAMING)


def _use(day: str, sub: str = SUB) -> tuple[EventType, dict[str, object]]:
    return ev(EventType.USAGE, at(day, "10:00"), sub, kind="data", quantity=1000)


def test_moments_before_it_make_no_task_and_are_counted_as_shadow() -> None:
    result = run_pipeline([_roam("2026-12-01", "JP")], rules_from(RULES), live_from=LIVE)
    assert result.tasks == []
    assert result.shadow == Counter({("welcome", "task", ""): 1})
    # Without the setting the same history makes the task: the case above is its doing.
    assert types(run_pipeline([_roam("2026-12-01", "JP")], rules_from(RULES)).tasks) == [
        "roaming_welcome"
    ]


def test_after_it_what_the_warm_up_saw_is_not_first_again_and_the_rest_is_live() -> None:
    events = [
        _roam("2026-12-01", "JP"),  # the warm-up: Japan seen
        _roam("2026-12-11", "JP"),  # live: not a first any more
        _roam("2026-12-11", "KR"),  # live: a real first
        _roam("2026-12-12", "JP", OTHER),  # live: a subscriber new to the system
    ]
    result = run_pipeline(events, rules_from(RULES), live_from=LIVE)
    made = sorted((t.subscriber_id, t.moment.params["country"]) for t in result.tasks)
    assert made == [(SUB, "KR"), (OTHER, "JP")]
    assert result.shadow == Counter({("welcome", "task", ""): 1})


def test_a_silence_closed_before_it_is_shadow_and_one_after_it_is_live() -> None:
    events = [_use("2026-12-01"), _use("2026-12-04", OTHER)]
    until = dt.datetime.fromisoformat(at("2026-12-09", "12:00"))
    warm = run_pipeline(events, rules_from(RULES), live_from=LIVE, until=until)
    assert warm.tasks == []
    assert warm.shadow[("silent", "task", "")] == 2
    # The same silences, live from the start, make two tasks.
    cold = run_pipeline(events, rules_from(RULES), until=until)
    assert types(cold.tasks) == ["silent", "silent"]
    # A silence that ends after the instant is live: used on the 8th, silent by the 12th.
    # The other's, judged in the warm-up and still going, makes its task at the first
    # live judgement (the close of the 9th), once: the warm-up's mark holds no live one.
    later = run_pipeline(
        [_use("2026-12-08")],
        rules_from(RULES),
        live_from=LIVE,
        until=dt.datetime.fromisoformat(at("2026-12-12", "12:00")),
        result=warm,
    )
    made = [(t.subscriber_id, t.triggered_at) for t in later.tasks]
    assert made == [(OTHER, LIVE), (SUB, dt.datetime.fromisoformat(at("2026-12-12", "00:00")))]


CALL = CALL_TRIAL.replace("    mode: shadow\n", "")
"""`CALL_TRIAL` live: a call on a first arrival, with a 30-day cooldown."""


def test_a_late_warm_up_moment_leaves_a_live_tasks_cooldown_in_place() -> None:
    """Japan, just after the instant, made a call and its 30-day mark. Kenya, dated
    before the instant and read after (within the lateness), is a shadow judgement:
    it must not replace the live mark with its own shadow one, which holds no live
    moment back, so France two hours later was called about again."""
    events = [
        ev(EventType.ROAMING, at("2026-12-10", "00:20"), country="JP", **ROAMING),
        ev(EventType.ROAMING, at("2026-12-09", "23:50"), country="KE", **ROAMING),
        ev(EventType.ROAMING, at("2026-12-10", "02:00"), country="FR", **ROAMING),
    ]
    result = run_pipeline(events, rules_from(NO_GATES + "rules:" + CALL), live_from=LIVE)
    assert [t.moment.params["country"] for t in result.tasks] == ["JP"]
    # Kenya is held by Japan's cooldown too: a moment 30 minutes before a contact is as
    # close to it as one after (counted as the shadow judgement's suppression).
    assert result.shadow[("call_trial", "suppressed", "cooldown")] == 1
    assert result.suppressed[("roaming_call", "cooldown")] == 1


def test_the_detector_judges_the_moments_event_time_not_the_wall_clock() -> None:
    """A history read after the instant (a topic's retention read by a new consumer
    group) is still a warm-up: the instant is in event time, as in a backtest."""
    read_late = dt.datetime.fromisoformat(at("2026-12-10", "10:05"))
    detector = Detector(rules_from(RULES), {t.value: t for t in EventType}, live_from=LIVE)
    store = DictStateStore()
    offsets: dict[str, int] = {}
    old = detector.process(
        to_records([_roam("2026-12-09", "JP")], None, offsets), store.load, read_late
    )
    assert old.tasks == []
    assert sum(old.shadow.values()) == 1
    store.save(old.changes)
    later = dt.datetime.fromisoformat(at("2026-12-11", "10:05"))
    new = detector.process(
        to_records([_roam("2026-12-11", "KR")], None, offsets), store.load, later
    )
    assert types(new.tasks) == ["roaming_welcome"]


def test_the_backtest_rehearses_the_cut_over_through_dispatch(tmp_path: Path) -> None:
    events = [_roam("2026-12-01", "JP"), _roam("2026-12-11", "JP"), _roam("2026-12-11", "KR")]
    history = tmp_path / "h.jsonl"
    history.write_bytes(b"".join(orjson.dumps({"type": t.value, **v}) + b"\n" for t, v in events))
    result = asyncio.run(Backtest(rules_from(RULES), live_from=LIVE).run(EventFile(history)))
    sent = [orjson.loads(p.payload)["moment"]["params"]["country"] for p in result.published]
    assert sent == ["KR"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-20", "2026-12-20T00:00:00+08:00"),
        ("2026-12-20T08:30:00+00:00", "2026-12-20T16:30:00+08:00"),
        (" 2026-12-20T08:30+08:00 ", "2026-12-20T08:30:00+08:00"),
    ],
)
def test_a_date_is_midnight_in_the_dispatch_policys_zone(text: str, expected: str) -> None:
    settings = Settings(live_from=text)
    assert live_from_of(settings, DispatchPolicy()) == dt.datetime.fromisoformat(expected)


def test_unset_is_live_at_once() -> None:
    assert live_from_of(Settings(), DispatchPolicy()) is None
    assert Settings(live_from="").live_from is None


@pytest.mark.parametrize(
    ("text", "said"),
    [("2026-12-20T08:00:00", "add its offset"), ("20 Dec", "write a date"), ("2026-13-01", "")],
)
def test_a_bad_value_is_refused_naming_what_to_write(text: str, said: str) -> None:
    with pytest.raises(ValidationError, match="live_from") as raised:
        Settings(live_from=text)
    assert said in str(raised.value)
    with pytest.raises(ValueError, match="2026-12-20"):
        parse_live_from(text, dt.UTC)


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Europe/London", "2026-12-20T00:00:00+00:00"),
        ("America/Santiago", "2026-09-06T01:00:00-03:00"),  # midnight skipped: 01:00
    ],
)
def test_a_date_in_another_policy_zone_is_that_zones_midnight(zone: str, expected: str) -> None:
    """Re-check: the date is the policy's midnight, also where the clocks skip it."""
    day = expected[:10] if zone == "Europe/London" else "2026-09-06"
    settings = Settings(live_from=day)
    got = live_from_of(settings, DispatchPolicy(timezone=zone))
    assert got is not None
    assert got.timestamp() == dt.datetime.fromisoformat(expected).timestamp()


def test_a_window_closing_at_the_instant_is_live_and_one_before_it_shadow() -> None:
    """Close-time rules are dated at their window's end: a month ending at the go-live
    instant is live (its whole history was the warm-up's), one ending a moment before
    is shadow, whenever the sweep that closes it runs (re-check: the sweep boundary)."""
    rules = rules_from(NO_GATES + "rules:" + SILENCE)
    events = [_use("2026-12-01")]
    until = dt.datetime.fromisoformat(at("2026-12-06", "12:00"))
    # The 3-day silence is judged at the daily close of Dec 5 00:00 (the end of Dec 4).
    judged = dt.datetime.fromisoformat(at("2026-12-05", "00:00"))
    at_it = run_pipeline(events, rules, live_from=judged, until=until)
    assert types(at_it.tasks) == ["silent"]
    after = run_pipeline(events, rules, live_from=judged + dt.timedelta(seconds=1), until=until)
    assert after.shadow[("silent", "task", "")] == 1
    # The silence goes on: the next close, live, makes its task (the shadow judgement's
    # mark holds back no live one).
    next_close = judged + dt.timedelta(days=1)
    assert [t.triggered_at for t in after.tasks] == [next_close]


def _declared(live_from: dt.datetime | None, started: dt.datetime = LIVE - DAY) -> set[str]:
    """The rules whose `moments_shadow_moments_total{outcome="task"}` a worker started at
    `started` (the wall clock) declares at 0 when its rules load (here, on a reload)."""
    metrics = Metrics()
    rules = rules_from(RULES + CALL_TRIAL)
    detector = Detector(rules, {}, live_from=live_from)
    runtime = Runtime(load_settings(), metrics, detector, now=started.timestamp())
    runtime.install_rules(rules)
    return {
        s.labels["rule_id"]
        for family in metrics.registry.collect()
        if family.name == "moments_shadow_moments"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["outcome"] == "task" and s.value == 0
    }


def test_before_it_every_rules_would_be_tasks_are_declared_at_0() -> None:
    """The dashboard's shadow panel and rate() need each series before its first moment:
    during the warm-up every rule is a shadow rule, not only those in `mode: shadow`."""
    assert _declared(LIVE) == {"welcome", "silent", "call_trial"}
    assert _declared(None) == {"call_trial"}


def test_a_worker_started_after_it_declares_the_shadow_rules_series_only() -> None:
    """A worker restarted once the instant had passed declared every rule's shadow series
    at 0, as in the warm-up, and served them, standing still, until its next rules reload:
    the setting alone, not whether its instant had passed, made every rule a shadow one."""
    assert _declared(LIVE, started=LIVE + DAY) == {"call_trial"}
    assert _declared(LIVE, started=LIVE) == {"call_trial"}


def _shadow_series(metrics: Metrics) -> set[str]:
    """The rules `moments_shadow_moments_total{outcome="task"}` is served for."""
    return {
        s.labels["rule_id"]
        for family in metrics.registry.collect()
        if family.name == "moments_shadow_moments"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["outcome"] == "task"
    }


def test_once_live_a_reload_drops_the_warm_ups_shadow_series_of_live_rules() -> None:
    """The warm-up over (a batch's events reached the instant), a reload keeps the shadow
    series of the rules in `mode: shadow` only, as a worker started without the setting
    serves: every rule's stayed, standing still on `/metrics` for as long as the worker
    ran, since the setting alone (not whether its instant had passed) kept them."""
    metrics = Metrics()
    rules = rules_from(RULES + CALL_TRIAL)
    detector = Detector(rules, {}, live_from=LIVE)
    runtime = Runtime(load_settings(), metrics, detector, now=(LIVE - DAY).timestamp())
    runtime.install_rules(rules)
    assert _shadow_series(metrics) == {"welcome", "silent", "call_trial"}  # warming up
    runtime.record(BatchResult(watermarks={0: int(LIVE.timestamp()) + 60}))
    runtime.install_rules(rules)
    assert _shadow_series(metrics) == {"call_trial"}


RENEWAL = """
  - id: renewal
    description: The contract ends within 30 days
    on: [profile]
    evaluate: special_day
    condition: {occasion: contract_expiry}
    task: {family: special_day, type: renewal, channel: manager, priority: 2,
           action: renewal_offer, ttl: 7d, description: "Renewal"}
"""
"""As the catalog's `contract_expiry_near`: no cooldown, due on each day of the lead."""


def test_a_contract_still_ending_at_the_instant_gets_its_renewal_offer_once() -> None:
    """docs/operations.md (Going live): a situation still true at the date is judged
    again and makes its task then, once: the warm-up contacted nobody, and a renewal
    offer held back for good would lose the customer the operator is trying to keep."""
    rules = rules_from(NO_GATES + "rules:" + RENEWAL)
    profile = ev(EventType.PROFILE, at("2026-12-01", "10:00"), contract_end="2026-12-20")
    until = dt.datetime.fromisoformat(at("2026-12-14", "12:00"))
    result = run_pipeline([profile], rules, live_from=LIVE, until=until)
    # Dec 1 to 9, in the warm-up: one moment, counted once (it was counted each day, 9)
    assert result.shadow[("renewal", "task", "")] == 1
    (task,) = result.tasks  # Dec 10 to 14 judge one occurrence: one task
    assert task.triggered_at >= LIVE
    assert task.triggered_at.date() == dt.date(2026, 12, 10)


def test_each_rules_detections_and_tasks_are_declared_at_0() -> None:
    """MomentsNothingDetectedWhileEventsFlow reads `increase(moments_detected_total)` and
    MomentsTasksExpireUnanswered `increase(moments_tasks_published_total)`: a series born
    at its first moment or task hid that one from them (a night of rare moments, each the
    first of its type since the worker started, read as none detected)."""
    metrics = Metrics()
    rules = rules_from(RULES + CALL_TRIAL)
    runtime = Runtime(load_settings(), metrics, Detector(rules, {}))
    runtime.install_rules(rules)
    declared = {
        (family.name, tuple(sorted(s.labels.items())))
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name.endswith("_total") and s.value == 0
    }
    for rule in rules.rules:
        spec = rule.task
        detected = (("family", spec.family.value), ("moment_type", spec.moment_type))
        assert ("moments_detected", detected) in declared
        for channel in Channel:
            published = (("channel", channel.value), ("moment_type", spec.moment_type))
            assert ("moments_tasks_published", published) in declared
