"""Waits on the broker during shutdown, each bounded so that a broker that is gone cannot
hold a worker past the orchestrator's grace period (Kubernetes: 60 s)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


BATCH_HELD = (
    "the batch in progress did not finish within %.3g s (its Redis or Kafka writes are "
    "retried: moments_dependency_up says which is down); %s (their tasks are not sent twice)"
)


async def within(
    step: Awaitable[None],
    seconds: float,
    what: str,
    then: str,
    batch_done: Callable[[], bool] = lambda: True,
) -> None:
    """Wait for `step` up to `seconds`; on time-out, warn that the broker did not take
    `what` and what follows (`then`), and go on; or, when `step` was still waiting for the
    batch in progress (`batch_done()` false), that the batch did not finish: a Redis that
    is down holds it as well as a broker, and the warning blamed the broker. Giving up
    loses nothing when the events behind `what` have no committed offset: they are read
    again, and the ledger keeps their tasks from going out twice."""
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        if not batch_done():
            log.warning(BATCH_HELD, seconds, then)
            return
        log.warning(
            "the broker did not take %s within %.3g s; %s (their tasks are not sent twice); "
            "check the broker and MOMENTS_KAFKA_BOOTSTRAP",
            what,
            seconds,
            then,
        )
