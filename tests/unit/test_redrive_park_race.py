"""A re-driven task (its worker published it and died before the confirm) that the
re-drive parks (its channel's hours closed since), its subscriber's tombstone applied
between the decision's look at the facts and the park. On the in-memory stores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
import pytest

from moments.models import Channel
from sinks.dispatch import TaskSink
from sinks.policy import DispatchPolicy
from sinks.stores import Parking
from sinks.withdrawals import WITHDRAWALS_TOPIC

from .test_unanswered import CALL, START, SUB, Scenario, task

if TYPE_CHECKING:  # annotations only: the tests also run against an older src
    from sinks.stores import Held

RULE = "churn_risk"


async def _published_then_dead(s: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    async def dies(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the worker died before the confirm")

    monkeypatch.setattr(s.sink.ledger, "confirm", dies)
    with pytest.raises(RuntimeError):
        await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, RULE, expires_h=12)])
    monkeypatch.undo()
    assert len(s.producer.sent) == 1
    assert await s.sink.ledger.state(CALL) == "pending"


def _hours_closed(s: Scenario) -> TaskSink:
    """The worker re-driving: calls worked 10:00-18:00 UTC (it is 02:00), so it parks."""
    policy = DispatchPolicy.model_validate(
        {
            "merge": {"hold_channels": []},
            "timezone": "UTC",
            "hours": {"outbound_call": "10:00-18:00"},
        }
    )
    return TaskSink(
        s.producer,
        "moments.tasks",
        s.sink.stores,
        s.metrics,
        policy,
        s.clock,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )


def _withdrawals(s: Scenario) -> list[tuple[str, str]]:
    return [
        (n["task_id"], n["reason"]) for n in (orjson.loads(p.payload) for p in s.producer.withdrawn)
    ]


async def test_a_tombstone_before_the_redrive_withdraws_the_task_that_went_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reference: the tombstone applied before the re-drive reads the facts."""
    s = Scenario()
    await _published_then_dead(s, monkeypatch)
    redriving = _hours_closed(s)
    await redriving.subscribers.forget([SUB], [RULE])
    s.clock.advance(START.timestamp() + 600)
    await redriving.redrive(older_than=0)
    assert _withdrawals(s) == [(CALL, "forgotten")]


async def test_a_tombstone_racing_the_redrives_park_withdraws_the_task_that_went_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The park refused for the tombstone marks the entry `unsent:<id>` (as the
    tombstone's take of the queue marks what it takes: it waited, never published), and
    the re-drive's withdrawal of the tasks it drops `forgotten` skips unsent ones: the
    task that went out before its worker died was never withdrawn, the consumer never
    told to erase its copy. With the tombstone a moment earlier (above) it is. A crash
    between the refused park and the decision after it leaves the same mark for the next
    re-drive: the park must not mark a task that may have gone out."""
    s = Scenario()
    await _published_then_dead(s, monkeypatch)
    redriving = _hours_closed(s)
    deferral, applied = redriving.stores.deferral, list[str]()
    park_many = deferral.park_many

    async def tombstone_then_park(
        items: Sequence[Parking], timetable: str = "", held: Held | None = None
    ) -> list[bool]:
        if not applied:
            applied.append(SUB)
            await redriving.subscribers.forget([SUB], [RULE])
        return await park_many(items, timetable, held)

    deferral.park_many = tombstone_then_park  # type: ignore[method-assign]
    s.clock.advance(START.timestamp() + 600)
    await redriving.redrive(older_than=0)
    assert applied == [SUB]
    assert await redriving.ledger.state(CALL) == "dropped"
    assert _withdrawals(s) == [(CALL, "forgotten")]
