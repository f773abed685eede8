"""A task dispatch drops gives its rule's cooldown back (moments.batchresult.give_back_cooldowns,
sinks.dispatch.TaskSink.flush): the subscriber's next moment of the rule makes a task.
A retention backtest found 61 subscribers who complained again and got no call for 30
days: their first task, dropped by capacity, had started the cooldown."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from moments.backtest import CollectingProducer, EventTime
from moments.batchresult import BatchResult, give_back_cooldowns
from moments.engine import Detector
from moments.models import EventType, ServiceTask
from moments.pipeline import to_records
from moments.records import RawRecord
from moments.state import mark_id
from moments.store import DictStateStore
from rules.catalog import RuleSet
from rules.rule import state_tag
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from tests.unit.rules.helpers import rules_from

SUB = "13800138001"
RULES = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: big_topup
    description: A large top-up
    on: [topup]
    condition: {field: amount, gte: 100}
    task: {family: anomaly, type: big_topup, channel: outbound_call, priority: 3,
           action: call, ttl: 3d, cooldown: %s, description: "Top-up of {amount}"}
"""


TAG = state_tag("big_topup")


def rules(cooldown: str = "30d") -> RuleSet:
    return rules_from(RULES % cooldown)


def topup(n: int, when: str, sub: str = SUB, region: str = "NJ") -> tuple[EventType, Any]:
    return EventType.TOPUP, {
        "event_id": f"t{n}",
        "subscriber_id": sub,
        "occurred_at": when,
        "region": region,
        "amount": 150,
        "channel": "app",
    }


class Engine:
    """The detector over a dict store, one batch at a time, offsets continued."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.detector = Detector(ruleset, {t.value: t for t in EventType})
        self.store = DictStateStore()
        self.offsets: dict[str, int] = {}

    def records(self, *events: tuple[EventType, Any]) -> list[RawRecord]:
        return to_records(events, None, self.offsets)

    def process(self, records: list[RawRecord]) -> BatchResult:
        return self.detector.process(records, self.store.load, None)

    def batch(self, *events: tuple[EventType, Any]) -> BatchResult:
        return self.process(self.records(*events))

    def fired(self) -> dict[str, int]:
        state = self.store.load(SUB)
        return {} if state is None else dict(state.fired)


def epoch(when: str) -> int:
    return int(dt.datetime.fromisoformat(when).timestamp())


DAY1, DAY2, DAY40 = (
    "2026-11-02T10:00:00+08:00",
    "2026-11-03T10:00:00+08:00",
    "2026-12-12T10:00:00+08:00",
)


class TestGiveBack:
    def test_a_dropped_task_gives_it_back_and_the_next_moment_makes_a_task(self) -> None:
        engine = Engine(rules())
        first = engine.batch(topup(1, DAY1))
        (task,) = first.tasks
        assert give_back_cooldowns(first, {task.task_id}) == 1
        engine.store.save(first.changes)
        assert engine.fired() == {}
        again = engine.batch(topup(2, DAY2))
        assert len(again.tasks) == 1
        assert again.suppressed == {}

    def test_a_task_not_dropped_keeps_it(self) -> None:
        engine = Engine(rules())
        first = engine.batch(topup(1, DAY1))
        assert give_back_cooldowns(first, {"another task"}) == 0
        engine.store.save(first.changes)
        again = engine.batch(topup(2, DAY2))
        assert again.tasks == []
        assert again.suppressed == {("big_topup", "cooldown"): 1}

    def test_the_mark_before_comes_back_not_none(self) -> None:
        """A mark older than the cooldown stays as it was: it no longer holds anything back,
        and `fired` says when the rule last made a task that was not dropped."""
        engine = Engine(rules())
        engine.store.save(engine.batch(topup(1, DAY1)).changes)
        later = engine.batch(topup(2, DAY40))
        (task,) = later.tasks
        give_back_cooldowns(later, {task.task_id})
        engine.store.save(later.changes)
        (tag,) = engine.fired()
        assert engine.fired() == {tag: epoch(DAY1)}

    def test_the_mark_before_comes_back_with_the_task_that_set_it(self) -> None:
        """`fired_by` goes back with `fired`: a return of the first task, read later,
        still finds its mark (moments.cooldowns.holds_mark)."""
        engine = Engine(rules())
        first = engine.batch(topup(1, DAY1))
        engine.store.save(first.changes)
        later = engine.batch(topup(2, DAY40))
        (task,) = later.tasks
        state = later.changes[SUB].state
        assert state is not None
        assert state.fired_by == {TAG: mark_id(task.task_id)}
        give_back_cooldowns(later, {task.task_id})
        assert state.fired_by == {TAG: mark_id(first.tasks[0].task_id)}

    def test_two_tasks_of_a_rule_in_one_batch_each_give_back_only_their_own(self) -> None:
        """Cooldown 1h, moments 2h apart in one batch: the second's `before` is the first's
        mark; put back latest first, dropping both leaves none."""
        at1, at2 = "2026-11-02T10:00:00+08:00", "2026-11-02T12:00:00+08:00"

        def marks(dropped: set[int]) -> dict[str, int]:
            engine = Engine(rules("1h"))
            result = engine.batch(topup(1, at1), topup(2, at2))
            assert len(result.tasks) == 2
            give_back_cooldowns(result, {result.tasks[n].task_id for n in dropped})
            engine.store.save(result.changes)
            return engine.fired()

        tag = next(iter(marks(set())))
        assert marks(set()) == {tag: epoch(at2)}
        assert marks({0}) == {tag: epoch(at2)}  # the mark is the second's: left alone
        assert marks({1}) == {tag: epoch(at1)}
        assert marks({0, 1}) == {}

    def test_a_subscriber_forgotten_later_in_the_batch_has_nothing_given_back(self) -> None:
        engine = Engine(rules())
        (task,) = made(topup(1, DAY1))
        records = engine.records(topup(1, DAY1))
        records += to_records([(EventType.PROFILE, None)], SUB, engine.offsets)
        result = engine.process(records)
        assert result.tasks == []
        assert result.cooldowns == {}
        assert give_back_cooldowns(result, {task.task_id}) == 0


def sink_for(clock: EventTime, policy: DispatchPolicy) -> TaskSink:
    return TaskSink(
        CollectingProducer(clock), "moments.tasks", memory_stores(clock), Metrics(), policy, clock
    )


NO_CALLS_IN_NJ = DispatchPolicy.model_validate(
    {
        "capacity": {"NJ": {"outbound_call": 0}},
        "reserved_share": 0,
        "overflow": {"big_topup": {"policy": "drop"}},
        "merge": {"window": "30m", "hold_channels": []},
    }
)


def made(*events: tuple[EventType, Any]) -> list[ServiceTask]:
    return Engine(rules()).batch(*events).tasks


class TestSinkSaysWhatItDropped:
    def test_flush_returns_the_tasks_capacity_dropped_and_not_the_sent(self) -> None:
        nj, sh = made(topup(1, DAY1), topup(2, DAY1, sub="13800138002", region="SH"))
        clock = EventTime(epoch(DAY1))
        sink = sink_for(clock, NO_CALLS_IN_NJ)

        async def go() -> set[str]:
            sink.add(nj)
            sink.add(sh)
            return await sink.flush()

        assert asyncio.run(go()) == {nj.task_id}

    def test_a_task_made_again_after_a_crash_says_dropped_again(self) -> None:
        """Its state was not written (the crash came first): the ledger knows the task
        id and stops it, and says it was dropped, so its cooldown is given back again."""
        nj, sh = made(topup(1, DAY1), topup(2, DAY1, sub="13800138002", region="SH"))
        clock = EventTime(epoch(DAY1))
        sink = sink_for(clock, NO_CALLS_IN_NJ)

        async def twice() -> tuple[set[str], set[str]]:
            for task in (nj, sh):
                sink.add(task)
            first = await sink.flush()
            for task in (nj, sh):
                sink.add(task)
            return first, await sink.flush()

        first, replayed = asyncio.run(twice())
        assert first == replayed == {nj.task_id}

    def test_outcome_retries_are_not_reported(self) -> None:
        (nj,) = made(topup(1, DAY1))
        sink = sink_for(EventTime(epoch(DAY1)), NO_CALLS_IN_NJ)
        assert asyncio.run(sink.dispatch([nj])) == set()
