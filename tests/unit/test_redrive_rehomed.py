"""A merged task whose worker died after its publish and before its confirm, withdrawn by
its re-drive (the customer opted out of the channel it went out on): the moments merged
into it go on under their lead's new id (docs/architecture.md, "Cooldown returns"). They
may have gone out inside the carrier's copy, so that new task keeps their rules'
cooldowns when it is dropped later, as the carrier's own drop does: given back, a rule
fired again for the next event and the customer the first copy reached was contacted a
second time. On the memory stores the backtest uses; tests/integration/dispatch/
test_batch_stores.py (`TestLeave`) checks the mark on Redis."""

from __future__ import annotations

import datetime as dt
from typing import Any

from moments.models import Channel
from sinks.cooldowns import CollectedCooldownReturns
from sinks.dispatch import TaskSink
from sinks.stores import DispatchStores

from .fakes import Clock
from .test_redriven_content import (
    CALL,
    SMS,
    merged_then_dead,
    opt_out,
    producer_of,
    published,
    withdrawn,
)
from .test_redriven_groups import GRACE_S, START, SUB, crashing, moment

SMS_CLOSES: dict[str, Any] = {"timezone": "UTC", "hours": {"sms": "03:00-11:32"}}
"""SMS goes out 03:00-11:32 UTC: open when the call is published at 11:31, closed at its
re-drive a minute later."""
OPENS = dt.datetime(2026, 12, 4, 3, 0, 1, tzinfo=dt.UTC)


Rehomed = tuple[Clock, DispatchStores, TaskSink, CollectedCooldownReturns]


async def withdrawn_and_rehomed() -> Rehomed:
    """The call (rule `a`) and the SMS moment (rule `b`) merged into it, published at 11:31
    under the call's id by a worker that died before its confirm; the customer opts out
    of calls; the re-drive at 11:32 withdraws the call, and the SMS moment goes on under
    its own id, waiting for the SMS hours' opening at 03:00."""
    member = moment(SMS, Channel.SMS, "b", START + dt.timedelta(minutes=5), 72)
    clock, stores, sink = await merged_then_dead(SMS_CLOSES, member)
    returns = CollectedCooldownReturns(lambda: {"a", "b"})
    sink.returns = returns
    await opt_out(sink, clock.now + 5, ["outbound_call"])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert withdrawn(producer_of(sink)) == [(CALL, "opt_out")]
    assert await stores.ledger.state(CALL) == "dropped"
    assert await stores.ledger.state(SMS) == "deferred"
    assert returns.pending == []
    return clock, stores, sink, returns


async def test_a_moment_rehomed_after_a_withdrawn_carrier_keeps_its_cooldown() -> None:
    """Its rule declined while it waited: its release drops it `declined`, rule `b`'s
    cooldown kept. Before: its new id carried no mark, and the cooldown was returned."""
    clock, stores, sink, returns = await withdrawn_and_rehomed()
    await stores.declines.suppress(SUB, "b", 86400)
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(SMS) == "dropped"
    assert returns.pending == []
    assert await stores.ledger.owed_returns(clock.now) == []


async def test_a_moment_rehomed_after_a_withdrawn_carrier_is_sent_when_due() -> None:
    """The control: nothing happened while it waited, so it goes out at 03:00 under its
    own id, once."""
    clock, stores, sink, returns = await withdrawn_and_rehomed()
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(SMS) == "sent"
    assert [p for p in published(producer_of(sink)) if p[0] == SMS] == [(SMS, "sms", [])]
    assert returns.pending == []


async def test_a_second_redrive_after_the_first_died_at_its_claim_decides_once() -> None:
    """The first re-drive, at 11:32, dies after its claim (`claim_stale`), before deciding:
    nothing of its decision is written. The second, a grace period later, takes the
    decision the first would have: the call withdrawn once, the SMS moment on under its
    own id, marked, its cooldown kept when its release drops it."""
    member = moment(SMS, Channel.SMS, "b", START + dt.timedelta(minutes=5), 72)
    clock, stores, sink = await merged_then_dead(SMS_CLOSES, member)
    returns = CollectedCooldownReturns(lambda: {"a", "b"})
    sink.returns = returns
    await opt_out(sink, clock.now + 5, ["outbound_call"])
    clock.now += GRACE_S + 10
    with crashing(stores.ledger, "group_many"):
        await sink.redrive(GRACE_S)
    assert await stores.ledger.state(CALL) == "pending"
    assert withdrawn(producer_of(sink)) == []
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert withdrawn(producer_of(sink)) == [(CALL, "opt_out")]
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "deferred"]
    assert await stores.ledger.redriven([CALL, SMS]) == {CALL, SMS}
    await stores.declines.suppress(SUB, "b", 86400)
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(SMS) == "dropped"
    assert [p for p in published(producer_of(sink)) if p[0] == SMS] == []
    assert returns.pending == []
