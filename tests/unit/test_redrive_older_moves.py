"""Rolling upgrade: a task an earlier build's decision moved to its rule's fallback and
published, its worker dying before the confirm, carries no `moved:<id>` mark (that build
wrote none), and this build's re-drive cannot tell it from a task no decision moved
(docs/operations.md, "Upgrading over waiting tasks"). What it does with each, on the
memory stores the backtest uses (the earlier build is this one with the mark taken away):

- moved for a full pool: fitted as of its first decision (`CapacityFitting.within`), it
  meets the same refusal and the same overflow, and goes out again as the fallback;
- moved for its channel's hours: it goes on its own channel (`as_it_went`), the limit the
  operations page names."""

from __future__ import annotations

import datetime as dt

from sinks.memory import MemoryLedger

from .test_redriven_content import (
    CALL,
    HOURS,
    NO_HOLD,
    fell_back_for_a_full_pool_then_died,
    producer_of,
    published,
    sent_then_dead,
)
from .test_redriven_groups import GRACE_S, START


def unmark(ledger: object) -> None:
    """The decision's `moved:<id>` mark taken away, as an earlier build wrote none."""
    assert isinstance(ledger, MemoryLedger)
    assert ledger.moved_marks.pop(CALL, None) is not None


async def test_a_call_an_earlier_build_moved_for_a_full_pool_goes_again_as_it() -> None:
    """The 3rd's one call slot taken, the call went out as its fallback SMS; re-driven on the
    4th, fitted as of the 3rd, the pool refuses it again and it goes out as the SMS."""
    clock, sink = await fell_back_for_a_full_pool_then_died()
    unmark(sink.ledger)
    clock.now = dt.datetime(2026, 12, 4, 0, 1, tzinfo=dt.UTC).timestamp()
    assert await sink.redrive(GRACE_S) == 1
    assert published(producer_of(sink)) == [(CALL, "sms", [])] * 2


async def test_a_call_an_earlier_build_moved_for_the_hours_goes_as_the_call() -> None:
    """Decided at 12:30 (the centre closed until after the call expires), it went out as its
    fallback SMS; re-driven, it goes out as the call under the same id: nothing tells it
    from a call no decision moved (a worker that died before its decision, or a call
    published before a reload shortened the hours), which went out as the call if at all."""
    clock, sink = await sent_then_dead({**HOURS, **NO_HOLD}, START + dt.timedelta(minutes=90))
    assert published(producer_of(sink)) == [(CALL, "sms", [])]
    unmark(sink.ledger)
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert published(producer_of(sink)) == [(CALL, "sms", []), (CALL, "outbound_call", [])]
