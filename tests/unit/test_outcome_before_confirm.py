"""An outcome read while its task's ledger entry is still pending: the task went out, and
its worker has not confirmed it yet (it died after the broker's ack, or its Redis was away
for the confirm, or the dispatch consumer answered within the confirm's round trip). The
task's body is written at the confirm only, so the outcome found no task: a `declined` was
counted under `moment_type="unknown"` and suppressed nothing (the re-drive then sent the
task again to the customer who had just declined it), an `unreachable` queued no retry. The
pending entry holds the task as claimed: the outcome acts on it. On the in-memory stores."""

from __future__ import annotations

import datetime as dt

import pytest

from moments.models import Channel, OutcomeStatus, ServiceTask
from moments.outcomes import handle_outcomes, retry_id
from sinks.cooldowns import CollectedCooldownReturns
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy

from .test_unanswered import CALL, SMS_1, START, SUB, Scenario, outcome_record, task

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


async def test_a_decline_before_the_confirm_of_a_merged_task_holds_back_every_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The customer declines a merged call (an SMS moment joined it in the merge window)
    and the outcome is read before the confirm (its worker died after the publish). The
    pending entry holds the call's own payload, the joined moment in its group: read
    alone, the decline suppressed the call's rule only, and the re-drive, which merges
    the group again, dropped the call and sent the SMS moment to the customer who had
    just declined the whole contact."""
    s = Scenario()
    s.sink = TaskSink(  # calls held for the merge window
        s.producer, "moments.tasks", memory_stores(s.clock), s.metrics, DispatchPolicy(), s.clock
    )
    call = task(CALL, Channel.OUTBOUND_CALL, RULE, expires_h=12)
    sms = task(SMS_1, Channel.SMS, "low_balance", expires_h=12)
    await s.sink.dispatch([call])
    await s.sink.dispatch([sms])
    assert await s.sink.ledger.state(SMS_1) == "merged"

    async def dies(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the worker died before the confirm")

    ledger = s.sink.ledger
    monkeypatch.setattr(ledger, "confirm", dies)
    s.clock.advance(START.timestamp() + 31 * 60)
    with pytest.raises(RuntimeError):
        await s.sink.release_due()
    monkeypatch.undo()
    [sent] = [ServiceTask.model_validate_json(m.payload) for m in s.producer.sent]
    assert [r.moment.rule_id for r in sent.related or []] == ["low_balance"]
    assert await ledger.state(CALL) == "pending"

    now = s.at()
    record = outcome_record(CALL, OutcomeStatus.DECLINED, now)
    assert (await handle_outcomes([record], s.sink, now=now)).declined == 1
    assert await s.sink.declines.suppressed(SUB, "low_balance")

    await s.sink.redrive(older_than=0)
    assert len(s.producer.sent) == 1  # nothing sent again


async def test_the_worker_taking_over_confirms_a_pending_task_already_answered() -> None:
    """The task went out (its consumer answered it), its worker died before the confirm,
    and the `declined` was read before the re-drive. The worker taking over dropped the
    task as `declined`: counted suppressed (it reached the customer) and its rule's
    cooldown given back, which the decline is about. A pending task that already has an
    outcome was published: it is confirmed as sent, not published again, its cooldown
    kept."""
    s = Scenario()
    returns = CollectedCooldownReturns(lambda: {RULE})
    s.sink.returns = returns
    await _published_unconfirmed(s)
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    record = outcome_record(CALL, OutcomeStatus.DECLINED, START + 5 * MINUTE)
    assert (await handle_outcomes([record], s.sink, now=now)).declined == 1

    await s.sink.redrive(older_than=0)
    assert s.producer.sent == []  # the first publish went out; none again
    assert await s.sink.ledger.state(CALL) == "sent"
    suppressed = {"moment_type": RULE, "reason": "declined"}
    assert s.metrics.registry.get_sample_value("moments_tasks_suppressed_total", suppressed) in (
        None,
        0,
    )
    assert returns.take() == []
    assert s.gauge("outbound_call") == 0  # answered: not waiting for an outcome
    published = {"moment_type": RULE, "channel": "outbound_call"}
    assert s.metrics.registry.get_sample_value("moments_tasks_published_total", published) == 1
