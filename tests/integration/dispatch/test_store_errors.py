"""A store call that fails once in the middle of a decision is made again (`with_retry`),
and the decision ends as it does without the failure: the waiting group of
test_merged_groups, released again and again (its payloads read back from `Decoded`),
with each store call it makes failing the first time. On Redis and in memory alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from sinks.policy import DispatchPolicy, MergePolicy

from .conftest import HOUR, NOW, MakeWorker, Worker, lose_claims_first_reply, published, task
from .test_merged_groups import held_for_a_suspended_line, the_member_goes_on

pytestmark = pytest.mark.integration

STORE_CALLS = {
    "deferral": ("release", "park_many", "join_many", "waiting_and_due"),
    "ledger": ("claim", "leave_many", "drop_many", "confirm", "get_many"),
    "facts": ("get_many",),
    "declines": ("suppressed_many",),
}


def fail_once(w: Worker) -> list[str]:
    """Make each of the sink's `STORE_CALLS` raise a Redis connection error the first
    time; returns the names of those that did (filled in as they fail)."""
    failed: list[str] = []
    for store_name, names in STORE_CALLS.items():
        store = getattr(w.sink, store_name)
        for name in names:
            real: Callable[..., Awaitable[Any]] = getattr(store, name)

            async def failing(
                *args: Any, _real: Any = real, _name: str = f"{store_name}.{name}", **kwargs: Any
            ) -> Any:
                if _name not in failed:  # raised where the reply is awaited, as Redis does
                    failed.append(_name)
                    raise RedisConnectionError(f"{_name}: cut")
                return await _real(*args, **kwargs)

            setattr(store, name, failing)
    return failed


async def test_a_store_call_failing_once_mid_decision_changes_nothing(
    make_worker: MakeWorker,
) -> None:
    w = make_worker()
    await held_for_a_suspended_line(w, NOW + 2 * HOUR, NOW + 48 * HOUR)
    failed = fail_once(w)
    await the_member_goes_on(w)
    assert {"deferral.release", "deferral.park_many", "deferral.waiting_and_due"} <= set(failed)
    assert w.sample("moments_dependency_errors_total", dependency="redis") == len(failed)


async def test_a_claim_whose_reply_was_lost_after_it_ran_sends_the_task(
    make_worker: MakeWorker,
) -> None:
    """The claim runs, then its reply is lost (raised where the reply is awaited); the
    retry (`with_retry`) must find the entry this caller's own and send the task once."""
    w = make_worker(DispatchPolicy(merge=MergePolicy(hold_channels=[])))
    lost = lose_claims_first_reply(w)
    sent = task("lost-claim-reply", sub="13300000077", expires_at=NOW + 2 * HOUR)
    await w.send(sent)
    assert lost
    assert await w.ledger.state(sent.task_id) == "sent"
    assert len(await published(w.settings, 1)) == 1
    assert not w.sample(
        "moments_tasks_suppressed_total", moment_type="first_international_roaming", reason="dedup"
    )
