"""A dispatch policy reloaded while a decision awaits its stores: the decision goes on by
the policy it began with, every step of it, and the next decision takes the new one.

A reload is installed from the event loop (`Runtime.install_policy`), so it lands whenever
the batch loop or the release timer awaits Redis; a decision that read `self.policy` at
each step judged its first steps by one policy and its last by another."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from moments.backtest import CollectingProducer, EventTime
from moments.models import Channel
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from tests.integration.dispatch.conftest import task

AT = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
OPEN = DispatchPolicy()
FULL = DispatchPolicy.model_validate(
    {"capacity": {"*": {"sms": 0}}, "overflow": {"*": {"policy": "drop"}}}
)
"""No SMS a day, and a task over it dropped: what a decision taken under `OPEN` never
does."""


class During:
    """A store whose `method` runs `meanwhile` (awaited) before it answers, once: what the
    event loop does while a decision awaits that call."""

    def __init__(self, inner: Any, method: str, meanwhile: Callable[[], Any]) -> None:
        self._inner = inner
        self._method = method
        self._meanwhile: Callable[[], Any] | None = meanwhile

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name != self._method:
            return found

        async def first_meanwhile(*args: Any, **kwargs: Any) -> Any:
            if self._meanwhile is not None:
                meanwhile = self._meanwhile
                self._meanwhile = None
                await meanwhile()
            return await found(*args, **kwargs)

        return first_meanwhile


class ReloadDuring(During):
    """A store whose `method` installs `policy` in the sink before it answers, once: a
    reload landing while the decision awaits that call."""

    def __init__(self, inner: Any, method: str, reload: Callable[[], None]) -> None:
        async def meanwhile() -> None:
            reload()

        super().__init__(inner, method, meanwhile)


def dispatched(store: str, method: str) -> list[list[str]]:
    """Two decisions of one SMS each, the policy going from `OPEN` to `FULL` during the
    first one's `store.method` call: the ids each published."""
    clock = EventTime(AT.timestamp())
    producer = CollectingProducer(clock)
    stores = memory_stores(clock)
    sink: TaskSink | None = None

    def reload() -> None:
        assert sink is not None
        sink.use_policy(FULL)

    wrapped = ReloadDuring(getattr(stores, store), method, reload)
    stores = dataclasses.replace(stores, **{store: wrapped})
    sink = TaskSink(producer, "moments.tasks", stores, Metrics(), OPEN, clock)
    out: list[list[str]] = []

    async def go() -> None:
        for name in ("a", "b"):
            before = len(producer.sent)
            one = task(
                name * 32,
                sub=f"1380013800{name == 'b':d}",
                channel=Channel.SMS,
                triggered=AT,
                deliver_after=AT,
                expires_at=AT + dt.timedelta(days=1),
            )
            await sink.dispatch([one])
            out.append([orjson.loads(s.payload)["task_id"] for s in producer.sent[before:]])

    asyncio.run(go())
    return out


@pytest.mark.parametrize(
    ("store", "method"),
    [
        ("declines", "suppressed_many"),  # the decision's first read
        ("deferral", "join_many"),  # the merge, before the gates, caps and capacity
    ],
)
def test_a_reload_mid_decision_leaves_it_on_the_policy_it_began_with(
    store: str, method: str
) -> None:
    """Begun under `OPEN`, the first task is published though `FULL` came in meanwhile
    (decided by `self.policy` at each step, its capacity step read `FULL`'s and dropped
    it); the second decision, begun under `FULL`, drops its task."""
    assert dispatched(store, method) == [["a" * 32], []]


def _sms(name: str) -> Any:
    return task(
        name * 32,
        channel=Channel.SMS,
        triggered=AT,
        deliver_after=AT,
        expires_at=AT + dt.timedelta(days=1),
    )


def test_a_decision_begun_before_a_reload_leaves_no_capacity_figure_of_the_old_policy() -> None:
    """`use_policy` clears `moments_capacity_left`, as a pool the new policy has not is never
    set again (and a raised one showed its old figure); a decision begun under the old
    policy and taking its capacity after the reload set the old pool's figure again, left
    for good."""
    pooled = DispatchPolicy.model_validate({"capacity": {"*": {"sms": 10}}})
    clock = EventTime(AT.timestamp())
    producer = CollectingProducer(clock)
    stores = memory_stores(clock)
    metrics = Metrics()
    sink: TaskSink | None = None

    async def reload() -> None:
        assert sink is not None
        sink.use_policy(OPEN)  # no pools: no capacity figure at all

    stores = dataclasses.replace(stores, deferral=During(stores.deferral, "join_many", reload))
    sink = TaskSink(producer, "moments.tasks", stores, metrics, pooled, clock)
    asyncio.run(sink.dispatch([_sms("a")]))
    assert len(producer.sent) == 1  # taken under the policy it began with
    samples = [s for m in metrics.registry.collect() for s in m.samples]
    assert [s for s in samples if s.name == "moments_capacity_left"] == []


class ParkedThenFailed:
    """A deferral queue whose `park_many` writes the parks, then fails once: a decision
    that dies after its wave's parks got through (a later write of the wave, the
    cooldown returns' send, a reply lost and the retries cancelled)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name != "park_many" or self.failed:
            return found

        async def parked_then_failed(*args: Any, **kwargs: Any) -> Any:
            await found(*args, **kwargs)
            self.failed = True
            raise RuntimeError("after the parks were written")

        return parked_then_failed


@pytest.mark.parametrize("fails", [False, True], ids=["parked", "failed after parking"])
def test_a_task_parked_by_the_old_hours_after_the_new_ones_were_judged_is_judged_again(
    fails: bool,
) -> None:
    """A reload lands while a decision awaits Redis and the release timer runs meanwhile:
    it judges the waiting tasks by the new hours (`Deferrals.rejudge`) and notes the queue
    judged. The decision then parks its task by the old hours it began with, which marks
    the queue as parked by two timetables; the next release asks the queue again and the
    task is judged by the hours in force, not kept waiting for the old opening.

    `fails`: the decision fails in the wave that parked its task, after the park was
    written: the wave never said it parked, and the next release, taking the queue as
    judged by the new hours, left the task waiting for the old opening."""
    later = DispatchPolicy.model_validate({"timezone": "UTC", "hours": {"sms": "13:00-14:00"}})
    now_open = DispatchPolicy.model_validate({"timezone": "UTC", "hours": {"sms": "12:00-18:00"}})
    clock = EventTime(AT.timestamp())
    producer = CollectingProducer(clock)
    stores = memory_stores(clock)
    sink: TaskSink | None = None

    async def reload_and_release() -> None:
        assert sink is not None
        sink.use_policy(now_open)
        await sink.release_due()  # the timer's tick: judges the queue by the new hours

    failing = ParkedThenFailed(stores.deferral)
    deferral = failing if fails else stores.deferral
    stores = dataclasses.replace(stores, deferral=During(deferral, "join_many", reload_and_release))
    sink = TaskSink(producer, "moments.tasks", stores, Metrics(), later, clock)

    async def go() -> None:
        assert sink is not None
        await sink.release_due()  # this sink's first release: the queue judged by `later`
        if fails:
            with pytest.raises(RuntimeError):
                await sink.dispatch([_sms("a")])
            assert failing.failed
        else:
            await sink.dispatch([_sms("a")])
        assert producer.sent == []  # decided by `later`, it begun with: parked to 13:00
        clock.advance((AT + dt.timedelta(minutes=1)).timestamp())
        await sink.release_due()

    asyncio.run(go())
    assert [orjson.loads(s.payload)["task_id"] for s in producer.sent] == ["a" * 32]


def test_a_changed_timetable_says_so_in_the_words_the_operations_guide_quotes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """docs/operations.md tells ops to look for `channel hours changed (...): N waiting
    task(s) judged again now`; the line said "the policy's channel hours, next_day_at or
    timezone are not those ...", so a search for the quoted words found nothing, and it
    did not name closed days, whose change wakes the waiting tasks too."""
    later = DispatchPolicy.model_validate({"timezone": "UTC", "hours": {"sms": "13:00-14:00"}})
    closed = DispatchPolicy.model_validate(
        {
            "timezone": "UTC",
            "hours": {"sms": "13:00-14:00"},
            "closed_days": {"sms": [AT.date().isoformat()]},
        }
    )
    clock = EventTime(AT.timestamp())
    sink = TaskSink(
        CollectingProducer(clock), "moments.tasks", memory_stores(clock), Metrics(), later, clock
    )

    async def go() -> None:
        await sink.release_due()
        await sink.dispatch([_sms("a")])  # parked to 13:00
        sink.use_policy(closed)
        with caplog.at_level("INFO", logger="sinks.dispatch"):
            await sink.release_due()

    asyncio.run(go())
    [said] = [r.getMessage() for r in caplog.records if "judged again now" in r.getMessage()]
    assert said.startswith("channel hours changed (")
    assert "closed days" in said
    assert said.endswith("): 1 waiting task(s) judged again now")
    guide = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    assert "`channel hours changed (...): N waiting task(s)\njudged again now`" in guide
