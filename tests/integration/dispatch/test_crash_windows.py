"""A worker that dies between the steps of a decision: a fresh worker's re-drive sends
what the crashed one would have, once. On Redis and in memory alike (the crash is a
store call that raises)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from sinks.stores import DispatchStores

from .conftest import HOUR, NOW, MakeWorker, published, task

pytestmark = pytest.mark.integration

SUB = "13900000601"


class CrashError(Exception):
    """The worker dies here."""


def crashing(stores: DispatchStores, store: str, method: str) -> DispatchStores:
    """`stores` whose `store.method` raises: the writes before it are made, none after."""
    real = getattr(stores, store)

    class Dies:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    async def dies(*args: Any, **kwargs: Any) -> Any:
        raise CrashError(f"{store}.{method}")

    broken = Dies()
    broken.__dict__[method] = dies
    return dataclasses.replace(stores, **{store: broken})


class TestSplitGroupAfterACrash:
    async def test_the_moment_that_goes_on_says_what_the_group_waited_for_after_a_crash(
        self, make_worker: MakeWorker
    ) -> None:
        """The waiting task lapses when its quiet hours end; the moment that joined it goes
        on under its own id. The worker dies after it left the group (pending, its own
        id), before the waiting task's drop was written: the re-drive published it with
        its payload as it joined (no deferral, `deliver_after` inside the quiet hours)."""
        w = make_worker()
        opens = NOW + HOUR
        waits = task("g1", sub=SUB, deliver_after=opens, deferred="quiet_hours")
        await w.send(waits.model_copy(update={"expires_at": opens + dt.timedelta(minutes=3)}))
        await w.send(task("g2", sub=SUB, moment_type="low_balance"))
        assert await w.ledger.state("g2") == "merged"
        dying = make_worker()
        dying.sink.stores = stores = crashing(dying.sink.stores, "ledger", "drop_many")
        dying.sink.ledger = stores.ledger
        with pytest.raises(CrashError):
            await dying.sink.release_due(now=opens.timestamp() + 1)
        assert [await w.ledger.state(i) for i in ("g1", "g2")] == ["pending", "pending"]
        fresh = make_worker()
        fresh.sink.clock = lambda: opens.timestamp() + 2  # as the crashed release's
        # g2 pending since it left the group; g1 since the release, an hour ahead
        assert await fresh.sink.redrive(older_than=0) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["deferred"]["reason"]) == ("g2", "quiet_hours")
        assert dt.datetime.fromisoformat(out["deliver_after"]) == opens
        assert await w.ledger.state("g2") == "sent"
