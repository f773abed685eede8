"""Waits on the broker during shutdown, each bounded so that a broker that is gone cannot
hold a worker past the orchestrator's grace period (Kubernetes: 60 s)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

log = logging.getLogger(__name__)


async def within(step: Awaitable[None], seconds: float, what: str, then: str) -> None:
    """Wait for `step` up to `seconds`; on time-out, warn that the broker did not take
    `what` and what follows (`then`), and go on. Giving up loses nothing when
    the events behind `what` have no committed offset: they are read again, and the
    ledger keeps their tasks from going out twice."""
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        log.warning(
            "the broker did not take %s within %g s; %s (their tasks are not sent twice); "
            "check the broker and MOMENTS_KAFKA_BOOTSTRAP",
            what,
            seconds,
            then,
        )
