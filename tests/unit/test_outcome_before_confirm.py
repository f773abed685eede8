"""An outcome read while its task's ledger entry is still pending: the task went out, and
its worker has not confirmed it yet (it died after the broker's ack, or its Redis was away
for the confirm, or the dispatch consumer answered within the confirm's round trip). The
task's body is written at the confirm only, so the outcome found no task: a `declined` was
counted under `moment_type="unknown"` and suppressed nothing (the re-drive then sent the
task again to the customer who had just declined it), an `unreachable` queued no retry. The
pending entry holds the task as claimed: the outcome acts on it. On the in-memory stores."""

from __future__ import annotations

import datetime as dt

from moments.models import Channel, OutcomeStatus
from moments.outcomes import handle_outcomes, retry_id
from sinks.payloads import task_bytes

from .test_unanswered import CALL, START, SUB, Scenario, outcome_record, task

MINUTE = dt.timedelta(minutes=1)
RULE = "churn_risk"


async def _published_unconfirmed(s: Scenario) -> None:
    """The call task claimed (its entry `P<payload>`), sent, its confirm not written."""
    call = task(CALL, Channel.OUTBOUND_CALL, RULE, expires_h=12)
    assert await s.sink.ledger.claim([(CALL, task_bytes(call))]) == [1]


async def test_a_decline_before_the_confirm_suppresses_the_rule() -> None:
    s = Scenario()
    await _published_unconfirmed(s)
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    result = await handle_outcomes(
        [outcome_record(CALL, OutcomeStatus.DECLINED, START + 5 * MINUTE)], s.sink, now=now
    )
    assert result.declined == 1
    assert await s.sink.declines.suppressed(SUB, RULE)
    labels = {"moment_type": RULE, "status": "declined"}
    assert s.metrics.registry.get_sample_value("moments_task_outcomes_total", labels) == 1


async def test_an_unreachable_before_the_confirm_queues_its_retry() -> None:
    s = Scenario()
    await _published_unconfirmed(s)
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    result = await handle_outcomes(
        [outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 5 * MINUTE)], s.sink, now=now
    )
    assert result.retries == [retry_id(CALL, 1)]
