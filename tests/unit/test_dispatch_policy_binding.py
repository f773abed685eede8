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


class ReloadDuring:
    """A store whose `method` installs `policy` in the sink before it answers, once: a
    reload landing while the decision awaits that call."""

    def __init__(self, inner: Any, method: str, reload: Callable[[], None]) -> None:
        self._inner = inner
        self._method = method
        self._reload: Callable[[], None] | None = reload

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name != self._method:
            return found

        async def reloading(*args: Any, **kwargs: Any) -> Any:
            if self._reload is not None:
                self._reload, reload = None, self._reload
                reload()
            return await found(*args, **kwargs)

        return reloading


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
