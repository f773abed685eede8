"""A task that waits and is dropped when the release timer decides it again gives its
rule's cooldown back too (moments.cooldowns): dispatch sends a return, which the engine
applies to the subscriber's record among their events. The retention analyst's case:
with docs/backtest-policy.yaml every manager task waits first (merge window), so a
complaint callback dropped at release held its 30-day cooldown, and the customer who
complained again got no call for a month."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from ruamel.yaml import YAML

from moments.backtest import Backtest, CollectingProducer, EventTime
from moments.backtest_input import EventFile
from moments.batchresult import BatchResult, give_back_cooldowns, take_over_cooldowns
from moments.cooldowns import CooldownReturn, give_back_returned
from moments.engine import Detector
from moments.models import EventType, OutcomeStatus, ServiceTask, TaskOutcome
from moments.outcomes import handle_outcomes, retry_id, retry_task
from moments.pipeline import to_records
from moments.records import RawRecord
from moments.state import SubscriberState, mark_id
from moments.store import DictStateStore
from rules.catalog import RuleSet
from rules.rule import state_tag
from sinks.contact import merge_tasks
from sinks.cooldowns import CollectedCooldownReturns
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy, MergePolicy
from sinks.stores import DispatchStores
from tests.unit.rules.helpers import rules_from

T = TypeVar("T")
RETURNS = "returns"
SUB = "13800138001"
RULES = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: callback
    description: A complaint was opened
    on: [complaint]
    when: {status: opened}
    condition: {field: severity, lte: 3}
    task: {family: anomaly, type: complaint, channel: %s, priority: 2,
           action: complaint_callback, ttl: 24h, cooldown: 30d, description: "Call back"}
  - id: thanks
    description: A top-up
    on: [topup]
    condition: {field: amount, gte: 1}
    task: {family: anomaly, type: thanks, channel: sms, priority: 5,
           action: thanks, ttl: 20m, cooldown: 7d, description: "Thanks"}
"""
TAG = state_tag("callback")
DAY1, DAY1_LATER, DAY3 = (
    "2026-11-02T10:00:00+08:00",
    "2026-11-02T10:10:00+08:00",
    "2026-11-05T10:00:00+08:00",
)


def rules(channel: str = "manager") -> RuleSet:
    return rules_from(RULES % channel)


def epoch(when: str) -> int:
    return int(dt.datetime.fromisoformat(when).timestamp())


def complaint(n: int, when: str, sub: str = SUB) -> tuple[EventType, Any]:
    return EventType.COMPLAINT, {
        "event_id": f"c{n}",
        "subscriber_id": sub,
        "occurred_at": when,
        "region": "NJ",
        "complaint_id": f"k{n}",
        "category": "network",
        "severity": 2,
        "status": "opened",
    }


def topup(n: int, when: str, sub: str = SUB) -> tuple[EventType, Any]:
    return EventType.TOPUP, {
        "event_id": f"t{n}",
        "subscriber_id": sub,
        "occurred_at": when,
        "region": "NJ",
        "amount": 10,
        "channel": "app",
    }


class Engine:
    """The detector with a returns topic, over a dict store, one batch at a time."""

    def __init__(self, ruleset: RuleSet | None = None) -> None:
        self.detector = Detector(
            ruleset or rules(), {t.value: t for t in EventType}, returns_topic=RETURNS
        )
        self.store = DictStateStore()
        self.offsets: dict[str, int] = {}

    def returned(self, *returns: CooldownReturn) -> list[RawRecord]:
        offset = self.offsets.get(RETURNS, 0)
        self.offsets[RETURNS] = offset + len(returns)
        return [
            RawRecord(RETURNS, 0, offset + n, r.key, r.to_bytes()) for n, r in enumerate(returns)
        ]

    def batch(self, *items: tuple[EventType, Any] | list[RawRecord]) -> BatchResult:
        records: list[RawRecord] = []
        for item in items:
            records += item if isinstance(item, list) else to_records([item], None, self.offsets)
        result = self.detector.process(records, self.store.load, None)
        self.store.save(result.changes)
        return result

    def fired(self) -> dict[str, int]:
        state = self.store.load(SUB)
        return {} if state is None else dict(state.fired)


def back(task: ServiceTask) -> CooldownReturn:
    return CooldownReturn.of(task)


class TestTheEngineApplies:
    def test_a_return_removes_the_mark_and_the_next_complaint_makes_a_task(self) -> None:
        engine = Engine()
        (task,) = engine.batch(complaint(1, DAY1)).tasks
        assert engine.fired() == {TAG: epoch(DAY1)}
        result = engine.batch(engine.returned(back(task)))
        assert result.returns == {"given_back": 1}
        assert engine.fired() == {}
        again = engine.batch(complaint(2, DAY3))
        assert len(again.tasks) == 1
        assert again.suppressed == {}

    def test_in_its_place_among_the_events_of_one_batch(self) -> None:
        engine = Engine()
        (task,) = engine.batch(complaint(1, DAY1)).tasks
        result = engine.batch(engine.returned(back(task)), complaint(2, DAY3))
        assert len(result.tasks) == 1
        assert engine.fired() == {TAG: epoch(DAY3)}

    def test_a_later_tasks_mark_stays(self) -> None:
        """The first task was given back in its batch (or by an earlier return), and a
        later complaint made a task: the first's return, late, leaves that mark."""
        engine = Engine()
        (first,) = engine.batch(complaint(1, DAY1)).tasks
        engine.batch(engine.returned(back(first)))
        (second,) = engine.batch(complaint(2, DAY3)).tasks
        result = engine.batch(engine.returned(back(first)))
        assert result.returns == {"stale": 1}
        assert result.changes == {}  # nothing written
        assert engine.fired() == {TAG: epoch(DAY3)}
        assert second.triggered_at.timestamp() == epoch(DAY3)

    def test_read_again_after_a_crash_it_changes_nothing(self) -> None:
        """The batch that applied it wrote the state; a crash before its offsets were
        committed reads it again: the mark is gone already (or a later task's)."""
        engine = Engine()
        (task,) = engine.batch(complaint(1, DAY1)).tasks
        records = engine.returned(back(task))
        assert engine.batch(records).returns == {"given_back": 1}
        again = engine.batch(records)
        assert again.returns == {"stale": 1}
        assert again.changes == {}
        assert engine.fired() == {}

    def test_read_again_it_leaves_a_later_tasks_mark_of_the_same_second(self) -> None:
        """Marks are kept to the second. The return removed the first complaint's mark and
        a second complaint of the same second made a task; the worker died before the
        batch's offsets were committed, and the batch is read again: the return, applied
        again, removed the second task's mark (its complaint is a replay, not applied
        again), and a complaint three days later made a third task inside the cooldown."""
        engine = Engine()
        (first,) = engine.batch(complaint(1, DAY1)).tasks
        records = engine.returned(back(first)) + to_records(
            [complaint(2, DAY1)], None, engine.offsets
        )
        (second,) = engine.batch(records).tasks
        assert second.task_id != first.task_id
        assert engine.fired() == {TAG: epoch(DAY1)}
        again = engine.batch(records)
        assert (again.returns, again.replayed, again.tasks) == ({"stale": 1}, 1, [])
        assert engine.fired() == {TAG: epoch(DAY1)}
        third = engine.batch(complaint(3, DAY3))
        assert (third.tasks, third.suppressed) == ([], {("complaint", "cooldown"): 1})

    def test_a_dropped_retry_gives_back_its_originals_mark(self) -> None:
        """A retry has an id of its own; the mark is its original's (`moment_id`)."""
        engine = Engine()
        (task,) = engine.batch(complaint(1, DAY1)).tasks
        retry = retry_task(task, task.triggered_at, dt.timedelta(hours=2), max_retries=2)
        assert retry is not None
        assert retry.task_id != task.task_id
        returned = CooldownReturn.from_bytes(back(retry).to_bytes())
        assert (returned.task_id, returned.moment_id) == (retry.task_id, task.task_id)
        assert engine.batch(engine.returned(returned)).returns == {"given_back": 1}
        assert engine.fired() == {}

    def test_a_mark_from_before_fired_by_was_kept_is_told_by_its_time(self) -> None:
        """A record written by an earlier version has no `fired_by`."""
        state = SubscriberState(fired={TAG: 100})
        assert give_back_returned(state, CooldownReturn(SUB, "callback", 100, "t"))
        assert state.fired == {}

    def test_a_subscriber_without_a_record_gets_none(self) -> None:
        """Forgotten since (a profile tombstone), or never seen by this store: the return
        makes no record."""
        engine = Engine()
        (task,) = Engine().batch(complaint(1, DAY1)).tasks
        result = engine.batch(engine.returned(back(task)))
        assert result.returns == {"stale": 1}
        assert result.changes == {}
        assert engine.store.load(SUB) is None

    def test_after_a_tombstone_in_the_same_batch_nothing_comes_back(self) -> None:
        engine = Engine()
        (task,) = engine.batch(complaint(1, DAY1)).tasks
        tombstone = to_records([(EventType.PROFILE, None)], SUB, engine.offsets)
        result = engine.batch(tombstone, engine.returned(back(task)))
        assert result.returns == {"stale": 1}
        assert engine.store.load(SUB) is None

    def test_a_malformed_record_is_counted_and_skipped(self) -> None:
        engine = Engine()
        engine.batch(complaint(1, DAY1))
        bad = [RawRecord(RETURNS, 0, 0, SUB.encode(), b'{"subscriber_id": "1"}')]
        result = engine.batch(bad, complaint(2, DAY3))
        assert result.returns == {"malformed": 1}
        assert result.suppressed == {("complaint", "cooldown"): 1}

    def test_give_back_returned_is_the_mark_check(self) -> None:
        state = SubscriberState()
        returned = CooldownReturn(SUB, "callback", 100, "t" * 32)
        state.fired[TAG] = 200
        state.fired_by[TAG] = mark_id("t" * 32)
        assert not give_back_returned(state, returned)
        assert state.fired == {TAG: 200}
        state.fired[TAG] = 100
        state.fired_by[TAG] = mark_id("u" * 32)  # another task's, the same second
        assert not give_back_returned(state, returned)
        state.fired_by[TAG] = mark_id("t" * 32)
        assert give_back_returned(state, returned)
        assert (state.fired, state.fired_by) == ({}, {})

    def test_the_record_round_trips(self) -> None:
        returned = CooldownReturn(SUB, "callback", 1_700_000_000, "abc")
        assert CooldownReturn.from_bytes(returned.to_bytes()) == returned
        assert returned.key == SUB.encode()
        retried = CooldownReturn(SUB, "callback", 1_700_000_000, "abc", "def")
        assert CooldownReturn.from_bytes(retried.to_bytes()) == retried


POLICY = Path(__file__).parents[2] / "docs" / "backtest-policy.yaml"


def analyst_policy(**changes: Any) -> DispatchPolicy:
    """docs/backtest-policy.yaml (manager held 30 minutes for merging, every rule deferred
    to the next day on overflow) with no manager capacity at all."""
    doc = YAML(typ="safe").load(POLICY.read_text())
    doc["capacity"] = {"*": {"manager": 0}, "NJ": {"manager": 0}}
    doc.update(changes)
    return DispatchPolicy.model_validate(doc)


class Sink:
    """The sink over memory stores in event time, with collected returns."""

    def __init__(self, policy: DispatchPolicy, at: str) -> None:
        self.clock = EventTime(epoch(at))
        self.returns = CollectedCooldownReturns(lambda: {"callback", "thanks"})
        self.sink = TaskSink(
            CollectingProducer(self.clock),
            "moments.tasks",
            memory_stores(self.clock),
            Metrics(),
            policy,
            self.clock,
            returns=self.returns,
        )

    def run(self, *steps: Any) -> None:
        async def go() -> None:
            for step in steps:
                await step

        asyncio.run(go())

    def run_value(self, step: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(step)

    async def flush(self, *tasks: ServiceTask) -> set[str]:
        for task in tasks:
            self.sink.add(task)
        return await self.sink.flush()

    async def release_at(self, when: float) -> int:
        self.clock.advance(when)
        return await self.sink.release_due()


def made(*events: tuple[EventType, Any], channel: str = "manager") -> list[ServiceTask]:
    return Engine(rules(channel)).batch(*events).tasks


def merged_retry(*tasks: ServiceTask) -> ServiceTask:
    """The retry of the task `tasks` were merged into (published, then `unreachable`),
    due at once."""
    merged = merge_tasks(tasks[0].task_id, tasks)
    retry = retry_task(merged, merged.triggered_at, dt.timedelta(0), max_retries=2)
    assert retry is not None
    assert [r.task_id for r in retry.related or []] == [t.task_id for t in tasks[1:]]
    return retry


class TestDispatchReturns:
    def test_a_call_held_for_merging_and_dropped_at_release(self) -> None:
        (task,) = made(complaint(1, DAY1))
        sink = Sink(analyst_policy(overflow={"*": {"policy": "drop"}}), DAY1)
        dropped: set[str] = set()

        async def go() -> None:
            dropped.update(await sink.flush(task))
            assert sink.returns.pending == []  # it waits: nothing yet
            assert await sink.release_at(epoch(DAY1) + 1800) == 1

        sink.run(go())
        assert dropped == set()  # not in its batch: the return gives it back
        assert sink.returns.take() == [CooldownReturn(SUB, "callback", epoch(DAY1), task.task_id)]

    def test_deferred_to_the_next_day_and_dropped_when_it_expires(self) -> None:
        (task,) = made(complaint(1, DAY1))
        sink = Sink(analyst_policy(), DAY1)
        released = [epoch(DAY1) + 1800, epoch("2026-11-03T09:00:00+08:00")]

        async def go() -> None:
            await sink.flush(task)
            for at in released:
                assert await sink.release_at(at) == 1

        sink.run(go())
        assert [r.task_id for r in sink.returns.take()] == [task.task_id]

    def test_a_merged_moment_dropped_at_release_returns_its_own(self) -> None:
        """A top-up's SMS (20 minutes to live) joined the waiting callback; at release
        the SMS has expired (leaving the group) and the callback finds no room: each
        returns its own rule's mark."""
        call, sms = made(complaint(1, DAY1), topup(2, DAY1_LATER))
        sink = Sink(analyst_policy(overflow={"*": {"policy": "drop"}}), DAY1)

        async def go() -> None:
            await sink.flush(call)
            sink.clock.advance(epoch(DAY1_LATER))
            await sink.flush(sms)
            assert await sink.release_at(epoch(DAY1) + 1800) == 1

        sink.run(go())
        got = sorted((r.rule_id, r.mark, r.task_id) for r in sink.returns.take())
        assert got == [
            ("callback", epoch(DAY1), call.task_id),
            ("thanks", epoch(DAY1_LATER), sms.task_id),
        ]

    def test_a_task_dropped_in_its_own_batch_sends_none(self) -> None:
        """`give_back_cooldowns` puts that one back in the batch's own state."""
        (task,) = made(complaint(1, DAY1))
        sink = Sink(
            analyst_policy(overflow={"*": {"policy": "drop"}}, merge={"hold_channels": []}), DAY1
        )
        got: set[str] = set()

        async def go() -> None:
            got.update(await sink.flush(task))

        sink.run(go())
        assert got == {task.task_id}
        assert sink.returns.pending == []

    def test_a_retry_dropped_returns_its_cooldown(self) -> None:
        """A retry exists only after `unreachable`: the first attempt reached no one (its
        contact is given back too), so when the retry is dropped as well the customer was
        never contacted, and the cooldown goes back (re-check review: it stayed)."""
        (task,) = made(complaint(1, DAY1))
        retry = task.model_copy(update={"attempt": 1, "retry_of": task.task_id})
        sink = Sink(
            analyst_policy(overflow={"*": {"policy": "drop"}}, merge={"hold_channels": []}), DAY1
        )
        sink.run(sink.sink.dispatch([retry]))
        assert [r.mark for r in sink.returns.pending] == [int(task.triggered_at.timestamp())]

    def test_a_merged_tasks_retry_dropped_returns_every_moments_cooldown(self) -> None:
        """The unanswered call carried the top-up's moment (`related`): its retry, dropped,
        gives back both rules' cooldowns, each the mark its own task set. Only the
        lead's came back: the customer never reached stayed in the `thanks` rule's
        7-day cooldown."""
        engine = Engine()
        call, sms = engine.batch(complaint(1, DAY1), topup(2, DAY1_LATER)).tasks
        retry = merged_retry(call, sms)
        sink = Sink(
            analyst_policy(overflow={"*": {"policy": "drop"}}, merge={"hold_channels": []}), DAY1
        )
        sink.run(sink.sink.dispatch([retry]))
        returns = sink.returns.take()
        assert sorted((r.rule_id, r.mark) for r in returns) == [
            ("callback", epoch(DAY1)),
            ("thanks", epoch(DAY1_LATER)),
        ]
        assert engine.batch(engine.returned(*returns)).returns == {"given_back": 2}
        assert engine.fired() == {}
        assert sink.run_value(sink.sink.stores.ledger.owed_returns(0)) == []


def write(path: Path, events: list[tuple[EventType, Any]]) -> Path:
    docs = [{"type": t.value, **e} for t, e in events]
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    return path


@pytest.mark.parametrize("overflow", ["defer", "drop"])
def test_backtest_the_second_complaint_gets_its_call(tmp_path: Path, overflow: str) -> None:
    """docs/backtest-policy.yaml with no manager room: the first callback waits 30
    minutes for merging, then (defer) for the next day, and is dropped when it comes up
    (refused again, or expiring); or (drop) is dropped when it comes up. The customer's
    complaint three days later makes a task, not a cooldown."""
    history = write(tmp_path / "h.jsonl", [complaint(1, DAY1), complaint(2, DAY3)])
    policy = analyst_policy(overflow={"*": {"policy": overflow}})
    bt = Backtest(rules(), policy)
    until = epoch(DAY3) + 2 * 86400  # the second one waits and is decided too
    result = asyncio.run(bt.run(EventFile(history), until=until))
    suppressed = {labels["reason"]: n for labels, n in result.counter("moments_tasks_suppressed")}
    assert suppressed == {"capacity": 2}
    returns = {labels["result"]: n for labels, n in result.counter("moments_cooldown_returns")}
    assert returns == {"given_back": 2}
    assert result.published == []


ROOM = {"*": {"manager": 5}, "NJ": {"manager": 5}}
"""A manager pool raised after the crash: the re-drive finds room."""


class CrashError(Exception):
    """The worker dies here."""


def dying(stores: DispatchStores, method: str) -> DispatchStores:
    """`stores` whose ledger's `method` raises: the writes before it are made, none after."""
    real = stores.ledger

    class Dies:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    async def dies(*args: Any, **kwargs: Any) -> Any:
        raise CrashError(method)

    broken = Dies()
    broken.__dict__[method] = dies
    return dataclasses.replace(stores, ledger=broken)


class FailingReturns(CollectedCooldownReturns):
    """The broker takes nothing: the worker dies sending the returns."""

    async def send(self, returns: Sequence[CooldownReturn]) -> None:
        raise CrashError("returns.send")


class RefusingReturns(CollectedCooldownReturns):
    """The broker refuses the returns topic (an ACL without Write on it)."""

    async def send(self, returns: Sequence[CooldownReturn]) -> None:
        raise TopicAuthorizationFailedError()


class TestCrashWindows:
    """A worker dies between the steps of a drop at release; another's re-drive timer
    finishes the decision. Whatever happens to the task, a dropped one gives its
    cooldown back once, a published one keeps it (the engine applies what was sent)."""

    @staticmethod
    def worker(sink: Sink, stores: DispatchStores, policy: DispatchPolicy) -> TaskSink:
        return TaskSink(
            CollectingProducer(sink.clock),
            "moments.tasks",
            stores,
            Metrics(),
            policy,
            sink.clock,
            returns=sink.returns,
        )

    @staticmethod
    def crash_at_release(sink: Sink, died: TaskSink) -> None:
        """Half an hour on, the merge window over: the dying worker releases the callback
        and stops at the step its stores (or returns) fail at."""
        sink.clock.advance(epoch(DAY1) + 1800)
        with pytest.raises(CrashError):
            sink.run(died.release_due())

    @staticmethod
    def waiting_callback() -> tuple[Engine, ServiceTask, DispatchPolicy, Sink]:
        """A complaint callback waiting for the merge window, under a policy that drops
        what has no room when it is released (the manager pool is empty)."""
        engine = Engine()
        (task,) = engine.batch(complaint(1, DAY1)).tasks
        policy = analyst_policy(overflow={"*": {"policy": "drop"}})
        sink = Sink(policy, DAY1)
        sink.run(sink.flush(task))
        return engine, task, policy, sink

    def test_died_before_the_drop_was_written_and_published_after_all(self) -> None:
        """The callback waited for the merge window and had no room when released: its
        worker died before the drop was written. The manager pool was raised meanwhile,
        and the re-drive published it. The return was sent before the drop, the engine
        removed the mark, and the complaint three days later made a second call inside
        the 30-day cooldown."""
        engine, task, policy, sink = self.waiting_callback()
        stores = sink.sink.stores
        died = self.worker(sink, dying(stores, "drop_many"), policy)
        self.crash_at_release(sink, died)
        engine.batch(engine.returned(*sink.returns.take()))
        fresh = self.worker(sink, stores, analyst_policy(capacity=ROOM))
        assert sink.run_value(fresh.redrive(older_than=0)) == 1
        assert sink.run_value(stores.ledger.state(task.task_id)) == "sent"
        engine.batch(engine.returned(*sink.returns.take()))
        assert engine.fired() == {TAG: epoch(DAY1)}
        later = engine.batch(complaint(2, DAY3))
        assert (later.tasks, later.suppressed) == ([], {("complaint", "cooldown"): 1})
        assert sink.run_value(stores.ledger.owed_returns(0)) == []

    def test_died_before_the_drop_was_written_and_dropped_again(self) -> None:
        engine, task, policy, sink = self.waiting_callback()
        stores = sink.sink.stores
        died = self.worker(sink, dying(stores, "drop_many"), policy)
        self.crash_at_release(sink, died)
        assert sink.returns.pending == []
        fresh = self.worker(sink, stores, policy)
        assert sink.run_value(fresh.redrive(older_than=0)) == 1
        assert sink.run_value(stores.ledger.state(task.task_id)) == "dropped"
        result = engine.batch(engine.returned(*sink.returns.take()))
        assert result.returns == {"given_back": 1}
        assert len(engine.batch(complaint(2, DAY3)).tasks) == 1

    def test_died_after_the_drop_before_the_return_was_sent(self) -> None:
        """The drop is durable and the return owed: the next worker's timer sends it."""
        engine, task, policy, sink = self.waiting_callback()
        stores = sink.sink.stores
        died = self.worker(sink, stores, policy)
        died.returns = FailingReturns(lambda: {"callback"})
        self.crash_at_release(sink, died)
        assert sink.run_value(stores.ledger.state(task.task_id)) == "dropped"
        fresh = self.worker(sink, stores, policy)
        sink.run(fresh.redrive(older_than=0))
        assert [r.task_id for r in sink.returns.pending] == [task.task_id]
        assert engine.batch(engine.returned(*sink.returns.take())).returns == {"given_back": 1}
        assert sink.run_value(stores.ledger.owed_returns(0)) == []
        sink.run(fresh.redrive(older_than=0))
        assert sink.returns.pending == []  # settled: sent once

    def test_a_refused_return_stays_owed_and_the_release_goes_on(self) -> None:
        """The returns topic refuses the return after the drop: the release logs it and
        raises nothing (it stopped the worker), the drop durable and the return owed; a
        worker's timer sends it, once."""
        engine, task, policy, sink = self.waiting_callback()
        stores = sink.sink.stores
        refused = self.worker(sink, stores, policy)
        refused.returns = RefusingReturns(lambda: {"callback"})
        sink.clock.advance(epoch(DAY1) + 1800)
        sink.run(refused.release_due())
        assert sink.run_value(stores.ledger.state(task.task_id)) == "dropped"
        assert len(sink.run_value(stores.ledger.owed_returns(0))) == 1
        sink.run(self.worker(sink, stores, policy).redrive(older_than=0))
        assert engine.batch(engine.returned(*sink.returns.take())).returns == {"given_back": 1}
        assert sink.run_value(stores.ledger.owed_returns(0)) == []

    def test_a_merged_tasks_retry_owes_each_moments_return_until_it_is_sent(self) -> None:
        """Each moment's return is owed under its own key (one under the retry's id held
        one of them): the next worker's timer sends them all, once."""
        engine = Engine()
        call, sms = engine.batch(complaint(1, DAY1), topup(2, DAY1_LATER)).tasks
        policy = analyst_policy(overflow={"*": {"policy": "drop"}}, merge={"hold_channels": []})
        sink = Sink(policy, DAY1)
        stores = sink.sink.stores
        died = self.worker(sink, stores, policy)
        died.returns = FailingReturns(lambda: {"callback", "thanks"})
        with pytest.raises(CrashError):
            sink.run(died.dispatch([merged_retry(call, sms)]))
        assert len(sink.run_value(stores.ledger.owed_returns(0))) == 2
        fresh = self.worker(sink, stores, policy)
        sink.clock.advance(epoch(DAY1) + 60)
        sink.run(fresh.redrive(older_than=0))
        returns = sink.returns.take()
        assert sorted(r.rule_id for r in returns) == ["callback", "thanks"]
        assert engine.batch(engine.returned(*returns)).returns == {"given_back": 2}
        assert sink.run_value(stores.ledger.owed_returns(0)) == []

    def test_died_after_the_send_before_the_settle_it_is_given_back_once(self) -> None:
        engine, task, policy, sink = self.waiting_callback()
        stores = sink.sink.stores
        died = self.worker(sink, dying(stores, "settle_returns"), policy)
        self.crash_at_release(sink, died)
        fresh = self.worker(sink, stores, policy)
        sink.run(fresh.redrive(older_than=0))
        sent = sink.returns.take()
        assert [r.task_id for r in sent] == [task.task_id] * 2
        result = engine.batch(engine.returned(*sent))
        assert result.returns == {"given_back": 1, "stale": 1}
        assert sink.run_value(stores.ledger.owed_returns(0)) == []

    def test_owed_longer_than_its_dropped_entry_is_kept_it_is_sent(self) -> None:
        """The broker was away for days after the worker died: the dropped entry expired
        (a day past the task), and the return still goes (a sent entry outlives it)."""
        engine, task, policy, sink = self.waiting_callback()
        stores = sink.sink.stores
        died = self.worker(sink, stores, policy)
        died.returns = FailingReturns(lambda: {"callback"})
        self.crash_at_release(sink, died)
        sink.clock.advance(epoch(DAY3) + 86400)
        assert sink.run_value(stores.ledger.state(task.task_id)) is None
        sink.run(self.worker(sink, stores, policy).redrive(older_than=0))
        assert engine.batch(engine.returned(*sink.returns.take())).returns == {"given_back": 1}


@pytest.mark.parametrize(
    "later", [OutcomeStatus.ACCEPTED, OutcomeStatus.DECLINED, OutcomeStatus.FAILED]
)
def test_a_retry_dropped_for_an_earlier_attempts_outcome_keeps_the_cooldown(
    later: OutcomeStatus,
) -> None:
    """`unreachable` queued a retry; then the dialer's redial reached the customer
    (`accepted`, `declined`) or found the number out of service (`failed`), and the retry
    is dropped when due. The customer was reached (or the task failed, which keeps its
    cooldown as any published task's outcome does): the callback's 30-day cooldown was
    given back all the same, and the customer's next complaint called them again (a
    decline holds the rule 30 days: a rule of a longer cooldown fired after those)."""
    (task,) = made(complaint(1, DAY1), channel="outbound_call")
    sink = Sink(DispatchPolicy(merge=MergePolicy(hold_channels=[])), DAY1)
    attempt = dt.datetime.fromisoformat(DAY1) + dt.timedelta(minutes=5)

    def record(status: OutcomeStatus, minutes: int) -> RawRecord:
        at = attempt + dt.timedelta(minutes=minutes)
        value = TaskOutcome(task_id=task.task_id, subscriber_id=SUB, status=status, occurred_at=at)
        return RawRecord("outcomes", 0, 0, SUB.encode(), value.model_dump_json().encode())

    async def go() -> None:
        await sink.sink.dispatch([task])
        now = attempt + dt.timedelta(minutes=10)
        sink.clock.advance(now.timestamp())
        queued = await handle_outcomes([record(OutcomeStatus.UNREACHABLE, 0)], sink.sink, now=now)
        assert queued.retries == [retry_id(task.task_id, 1)]
        await handle_outcomes([record(later, 5)], sink.sink, now=now)
        assert await sink.release_at(epoch(DAY1) + 3 * 3600) == 1

    sink.run(go())
    assert sink.run_value(sink.sink.stores.ledger.state(retry_id(task.task_id, 1))) == "dropped"
    assert sink.returns.take() == []


RENEWAL = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: renewal
    description: A renewal offer within the contract's lead
    on: [profile]
    evaluate: special_day
    condition: {occasion: contract_expiry}
    task: {family: special_day, type: renewal, channel: manager, priority: 3,
           action: renewal_offer, ttl: 72h, cooldown: 1d, description: "Renew"}
"""


def test_backtest_a_contract_end_judged_again_gives_its_cooldown_back(tmp_path: Path) -> None:
    """A contract's end is judged again at every day's look of its lead, its task made
    again for the ledger to stand down once the rule's cooldown (a day) is over. Its
    first task (a manager call, no manager room: it waits for the next day, and again)
    is dropped at a release two days on. The task made again moved the cooldown mark to
    its day's look, so the drop's return, carrying the first task's time, no longer named
    the mark (counted `stale`): the cooldown stayed taken, though the customer was never
    called. Keeping the mark where the first task set it (the several-occasions commit)
    gives it back; a guard of that commit, which had no test of this path."""
    profile = {
        "event_id": "p1",
        "subscriber_id": SUB,
        "occurred_at": "2026-11-02T08:00:00+08:00",
        "region": "NJ",
        "contract_end": "2026-11-20",
    }
    history = write(tmp_path / "h.jsonl", [(EventType.PROFILE, profile)])
    bt = Backtest(rules_from(RENEWAL), analyst_policy())
    result = asyncio.run(bt.run(EventFile(history), until=epoch("2026-11-04T12:00:00+08:00")))
    suppressed = {labels["reason"]: n for labels, n in result.counter("moments_tasks_suppressed")}
    assert suppressed == {"capacity": 1}
    returns = {labels["result"]: n for labels, n in result.counter("moments_cooldown_returns")}
    assert returns == {"given_back": 1}
    assert result.published == []


def test_a_task_made_again_that_takes_a_dropped_entry_over_keeps_the_cooldown() -> None:
    """The first task of a contract's end (a manager call, no room) was dropped at its
    expiry by the release timer, its return sent; the day's look (a sweep holding the
    partition) made the task again before that return was read, and the task made again
    took the dropped entry over, to go out in its place (a manager free now): a contact.
    The look left the mark where the first task set it, so the first task's return, read
    next, found it and removed it: the rule's next moment within the cooldown was not
    held back by the call just made. The mark is now the task's that took over."""
    renewal = RENEWAL.replace("ttl: 72h", "ttl: 48h")
    engine = Engine(rules_from(renewal))
    tag = state_tag("renewal")

    def update(n: int, day: str, **more: Any) -> tuple[EventType, Any]:
        return EventType.PROFILE, {
            "event_id": f"p{n}",
            "subscriber_id": SUB,
            "occurred_at": f"{day}T10:00:00+08:00",
            "region": "NJ",
            **more,
        }

    (first,) = engine.batch(update(1, "2026-11-02", contract_end="2026-11-20")).tasks
    engine.batch(update(2, "2026-11-03", tier="gold"))  # made again; the first one waits
    assert engine.fired() == {tag: epoch("2026-11-02T10:00:00+08:00")}

    sink = Sink(DispatchPolicy(), "2026-11-04T10:00:00+08:00")
    ledger = sink.sink.stores.ledger
    sink.run(  # the first task, dropped at its expiry
        ledger.claim([(first.task_id, b"{}")]),
        ledger.drop_many(
            [(first.task_id, "capacity")], keep_until={first.task_id: first.expires_at.timestamp()}
        ),
    )
    records = to_records([update(3, "2026-11-04", tier="silver")], None, engine.offsets)
    result = engine.detector.process(records, engine.store.load, None)
    (again,) = result.tasks
    assert again.task_id == first.task_id
    assert again.task_id in result.rejudged
    for task in result.tasks:
        sink.sink.add(task, rejudged=task.task_id in result.rejudged)
    dropped = sink.run_value(sink.sink.flush())
    assert dropped == set()
    assert sink.run_value(ledger.state(first.task_id)) == "deferred"  # in its place
    give_back_cooldowns(result, dropped)
    take_over_cooldowns(result, sink.sink.took_over())
    engine.store.save(result.changes)
    assert engine.fired() == {tag: epoch("2026-11-04T10:00:00+08:00")}

    late = engine.batch(engine.returned(back(first)))  # the first task's return, read now
    assert late.returns == {"stale": 1}
    assert engine.fired() == {tag: epoch("2026-11-04T10:00:00+08:00")}
