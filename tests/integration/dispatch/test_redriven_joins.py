"""The merge (`Deferrals.join_many`) on Redis (`_JOIN`) and in memory: a task the re-drive
decides again (`redriven:<id>`, written by its claim, `Ledger.claim_stale`) may have gone
out under its id, so
it joins no waiting task and no task joins it (tests/unit/test_redrive_merges.py has the
dispatch scenarios). Before, `_JOIN` merged either way."""

from __future__ import annotations

import pytest

from sinks.stores import DispatchStores, Joining, Parking

pytestmark = pytest.mark.integration

SUB = "13800000001"
WAITING, FRESH = "w" * 32, "f" * 32


async def waiting_and_fresh(stores: DispatchStores, redriven: str | None = None) -> None:
    """`WAITING` parked for the merge window (it opens the subscriber's group); `FRESH`
    claimed, about to join it. `redriven`: the one of them a re-drive claimed first
    (`claim_stale`, which marks it): `WAITING` before it was parked, `FRESH` after its
    claim."""
    await stores.ledger.claim([(WAITING, b"p-w")])
    if redriven == WAITING:
        assert [i for i, _ in await stores.ledger.claim_stale(-1.0)] == [WAITING]
    await stores.ledger.claim([(FRESH, b"p-f")])
    parking = Parking(WAITING, SUB, b"", 4_000_000_000.0, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    if redriven == FRESH:
        assert [i for i, _ in await stores.ledger.claim_stale(-1.0)] == [FRESH]
    marked = {redriven} if redriven else set()
    assert await stores.ledger.redriven([WAITING, FRESH]) == marked


async def test_a_fresh_task_joins_the_waiting_one(stores: DispatchStores) -> None:
    await waiting_and_fresh(stores)
    assert await stores.deferral.join_many([Joining(FRESH, SUB, b"")]) == [WAITING]
    assert await stores.ledger.group(WAITING) == [b"p-f"]


@pytest.mark.parametrize("marked", [WAITING, FRESH])
async def test_a_redriven_task_neither_joins_nor_is_joined(
    stores: DispatchStores, marked: str
) -> None:
    await waiting_and_fresh(stores, marked)
    assert await stores.deferral.join_many([Joining(FRESH, SUB, b"")]) == [None]
    assert await stores.ledger.state(FRESH) == "pending"
    assert await stores.ledger.group(WAITING) == []


async def test_a_task_a_redrive_claimed_is_marked_and_joins_nothing(
    stores: DispatchStores,
) -> None:
    """The re-drive's claim (`claim_stale`) marks the entry in its own step: a stalled
    worker's join landing before the decision's first writes finds the mark. Before, the
    mark came after the decision's reads, and such a join merged the task."""
    await waiting_and_fresh(stores)
    assert [i for i, _ in await stores.ledger.claim_stale(-1.0)] == [FRESH]
    assert await stores.ledger.redriven([FRESH, WAITING]) == {FRESH}
    assert await stores.deferral.join_many([Joining(FRESH, SUB, b"")]) == [None]
    assert await stores.ledger.state(FRESH) == "pending"


async def test_a_redriven_carriers_group_closes_and_the_next_park_opens_one(
    stores: DispatchStores,
) -> None:
    """The join a re-driven carrier refuses closes its group: the refused task's park
    opens the subscriber's group, and the next moment joins it. Before, the re-driven
    park kept the group for the window, and every moment of it waited apart."""
    await waiting_and_fresh(stores, WAITING)
    assert await stores.deferral.join_many([Joining(FRESH, SUB, b"")]) == [None]
    parking = Parking(FRESH, SUB, b"", 4_000_000_000.0, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    later = "a" * 32
    await stores.ledger.claim([(later, b"p-a")])
    assert await stores.deferral.join_many([Joining(later, SUB, b"")]) == [FRESH]
    assert await stores.ledger.group(FRESH) == [b"p-a"]
    assert await stores.ledger.group(WAITING) == []
