"""The dispatch tests' memory stores keep time by the sinks' clock (`make_worker`): a test
that pins the clock and moves it has the stores see the same instant as the sinks."""

from __future__ import annotations

import pytest

from tests.unit.fakes import Clock as FakeClock

from .conftest import MakeWorker, pinned_clock

pytestmark = pytest.mark.integration


@pytest.fixture
def sink_clock() -> FakeClock:
    return pinned_clock()


async def test_a_decline_over_by_the_pinned_clock_is_over_for_the_stores(
    make_worker: MakeWorker, sink_clock: FakeClock, store_kind: str
) -> None:
    """A decline holds the rule back from the subscriber for an hour; two hours later by
    the test's clock it holds nothing. On the wall clock beside the pinned sinks, the
    memory stores still held it (seconds had passed): a test judged the sinks' decisions
    at one instant and the stores' at another."""
    if store_kind == "redis":
        pytest.skip("Redis expires a decline on its own clock, the wall clock")
    declines = make_worker().sink.declines
    await declines.suppress("13100000091", "low_balance", 3600)
    assert await declines.suppressed("13100000091", "low_balance")
    sink_clock.now += 2 * 3600
    assert not await declines.suppressed("13100000091", "low_balance")
