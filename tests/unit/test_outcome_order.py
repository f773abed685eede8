"""An `unreachable` outcome of a task whose customer an outcome already said was reached
(`done_no_change`, `done_new_alert`, `accepted`, `declined`) makes no retry; read the
other way round, the retry the `unreachable` queued is dropped at its release
(`reached`).

Found walking as a dispatch consumer: outcomes come out of order (a dialer reports
attempts from several threads, a producer retries a send, an earlier attempt's
`unreachable` is reported after the call that got through). Each status of a task is
counted once, but an `unreachable` read after `accepted` queued a retry all the same:
two hours later the customer who had taken the offer was called again. A `declined`
customer's retry was dropped by the decline; the other three were not. On the in-memory
stores the backtest uses; tests/integration/dispatch/test_outcomes.py runs it on Redis.
"""

from __future__ import annotations

import datetime as dt

import pytest

from moments.models import Channel, OutcomeStatus
from moments.outcomes import handle_outcomes, retry_id
from sinks.memory import MemoryContactBook

from .test_unanswered import CALL, START, SUB, Scenario, outcome_record, task

REACHED = [
    OutcomeStatus.DONE_NO_CHANGE,
    OutcomeStatus.DONE_NEW_ALERT,
    OutcomeStatus.ACCEPTED,
    OutcomeStatus.DECLINED,
]
MINUTE = dt.timedelta(minutes=1)
SMS = "5" * 32


async def _published_after(first: OutcomeStatus, same_batch: bool) -> tuple[int, int]:
    """(retries queued, tasks published by 3 h later): a call task answered `first`,
    then `unreachable` dated before it (an earlier attempt's report, read after)."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    reached = outcome_record(CALL, first, START + 5 * MINUTE)
    stale = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 2 * MINUTE)
    if same_batch:
        results = [await handle_outcomes([reached, stale], s.sink, now=now)]
    else:
        results = [
            await handle_outcomes([reached], s.sink, now=now),
            await handle_outcomes([stale], s.sink, now=now),
        ]
    s.clock.advance((START + 180 * MINUTE).timestamp())
    await s.sink.release_due()
    await s.sink.flush()
    return sum(len(r.retries) for r in results), len(s.producer.sent)


@pytest.mark.parametrize("same_batch", [False, True], ids=["apart", "one batch"])
@pytest.mark.parametrize("first", REACHED, ids=[s.value for s in REACHED])
async def test_a_reached_customer_is_not_called_again(
    first: OutcomeStatus, same_batch: bool
) -> None:
    assert await _published_after(first, same_batch) == (0, 1)  # the task alone


@pytest.mark.parametrize("same_batch", [False, True], ids=["apart", "one batch"])
async def test_the_retry_follows_when_the_customer_was_not_reached(same_batch: bool) -> None:
    """`in_progress` (queued, ringing) says nothing of reaching the customer."""
    assert await _published_after(OutcomeStatus.IN_PROGRESS, same_batch) == (1, 2)


async def test_a_reached_status_in_the_same_batch_after_it_counts_too() -> None:
    """The dialer's redial got through and both reports came in one poll: no retry."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    now = START + 10 * MINUTE
    stale = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 2 * MINUTE)
    done = outcome_record(CALL, OutcomeStatus.DONE_NO_CHANGE, START + 5 * MINUTE)
    result = await handle_outcomes([stale, done], s.sink, now=now)
    assert result.retries == []


@pytest.mark.parametrize("later", REACHED, ids=[s.value for s in REACHED])
async def test_a_waiting_retry_is_dropped_when_a_later_outcome_says_reached(
    later: OutcomeStatus,
) -> None:
    """`unreachable` first (its retry queued for 2 hours later), then the dialer's own
    redial got through: the retry called the customer again all the same."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    unreachable = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 2 * MINUTE)
    queued = await handle_outcomes([unreachable], s.sink, now=now)
    assert queued.retries == [retry_id(CALL, 1)]
    await handle_outcomes([outcome_record(CALL, later, START + 20 * MINUTE)], s.sink, now=now)
    s.clock.advance((START + 180 * MINUTE).timestamp())
    await s.sink.release_due()
    await s.sink.flush()
    assert len(s.producer.sent) == 1  # the task alone
    reason = "declined" if later is OutcomeStatus.DECLINED else "reached"
    labels = {"moment_type": "churn_risk", "reason": reason}
    assert s.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1


async def test_a_later_retry_is_dropped_for_any_earlier_attempt_reached() -> None:
    """The second retry waits; the first retry's own outcome says reached."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    first = retry_id(CALL, 1)
    s.clock.advance((START + 10 * MINUTE).timestamp())
    await handle_outcomes(
        [outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 2 * MINUTE)],
        s.sink,
        now=START + 10 * MINUTE,
    )
    s.clock.advance((START + 130 * MINUTE).timestamp())
    await s.sink.release_due()
    await s.sink.flush()
    assert len(s.producer.sent) == 2  # the task, its first retry
    at = START + 135 * MINUTE
    second = await handle_outcomes(
        [outcome_record(first, OutcomeStatus.UNREACHABLE, at)], s.sink, now=at
    )
    assert second.retries == [retry_id(CALL, 2)]
    await handle_outcomes(  # the first retry's redial got through after all
        [outcome_record(first, OutcomeStatus.DONE_NO_CHANGE, at + MINUTE)], s.sink, now=at
    )
    s.clock.advance((START + 300 * MINUTE).timestamp())
    await s.sink.release_due()
    await s.sink.flush()
    assert len(s.producer.sent) == 2


@pytest.mark.parametrize("same_batch", [False, True], ids=["apart", "one batch"])
async def test_an_unreachable_read_after_failed_makes_no_retry(same_batch: bool) -> None:
    """`failed` (an SMS undelivered, a number not in service, a task dropped unattempted)
    then an earlier attempt's `unreachable` read after it: the task was retried, though
    docs/consuming-tasks.md says a failed task is not sent again."""
    assert await _published_after(OutcomeStatus.FAILED, same_batch) == (0, 1)


async def test_a_waiting_retry_is_dropped_when_a_later_outcome_says_failed() -> None:
    """`unreachable` first (its retry queued for 2 hours later), then `failed` for the same
    task (the dialer's own redial found the number out of service): the retry went out."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    unreachable = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 2 * MINUTE)
    queued = await handle_outcomes([unreachable], s.sink, now=now)
    assert queued.retries == [retry_id(CALL, 1)]
    failed = outcome_record(CALL, OutcomeStatus.FAILED, START + 20 * MINUTE)
    await handle_outcomes([failed], s.sink, now=now)
    s.clock.advance((START + 180 * MINUTE).timestamp())
    await s.sink.release_due()
    await s.sink.flush()
    assert len(s.producer.sent) == 1  # the task alone
    labels = {"moment_type": "churn_risk", "reason": "failed"}
    assert s.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1


async def test_a_later_retry_is_dropped_when_an_earlier_attempt_failed() -> None:
    """The second retry waits; the first retry's own outcome then says `failed`."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    first = retry_id(CALL, 1)
    s.clock.advance((START + 10 * MINUTE).timestamp())
    await handle_outcomes(
        [outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 2 * MINUTE)],
        s.sink,
        now=START + 10 * MINUTE,
    )
    s.clock.advance((START + 130 * MINUTE).timestamp())
    await s.sink.release_due()
    await s.sink.flush()
    assert len(s.producer.sent) == 2  # the task, its first retry
    at = START + 135 * MINUTE
    second = await handle_outcomes(
        [outcome_record(first, OutcomeStatus.UNREACHABLE, at)], s.sink, now=at
    )
    assert second.retries == [retry_id(CALL, 2)]
    await handle_outcomes(
        [outcome_record(first, OutcomeStatus.FAILED, at + MINUTE)], s.sink, now=at
    )
    s.clock.advance((START + 300 * MINUTE).timestamp())
    await s.sink.release_due()
    await s.sink.flush()
    assert len(s.producer.sent) == 2


async def _contact_counted(outcomes: list[list[OutcomeStatus]]) -> bool:
    """Whether the call's contact is still counted in the frequency cap's book (3 a week on
    calls) once these outcomes of it are read, a batch per list."""
    s = Scenario()
    s.capped(contact_cap=False)
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    book = s.sink.stores.frequency
    assert isinstance(book, MemoryContactBook)
    assert CALL in book.contacts.get(SUB, {})  # taken as it went out
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    for n, batch in enumerate(outcomes):
        records = [outcome_record(CALL, status, START + (n + 1) * MINUTE) for status in batch]
        await handle_outcomes(records, s.sink, now=now)
    return CALL in book.contacts.get(SUB, {})


@pytest.mark.parametrize("attempt", [OutcomeStatus.FAILED, OutcomeStatus.UNREACHABLE])
async def test_an_attempt_that_reached_no_one_gives_the_contact_back(
    attempt: OutcomeStatus,
) -> None:
    assert not await _contact_counted([[attempt]])


@pytest.mark.parametrize("same_batch", [False, True], ids=["apart", "one batch"])
@pytest.mark.parametrize("attempt", [OutcomeStatus.FAILED, OutcomeStatus.UNREACHABLE])
@pytest.mark.parametrize("first", REACHED, ids=[s.value for s in REACHED])
async def test_a_reached_customer_keeps_the_contact_whatever_comes_after(
    first: OutcomeStatus, attempt: OutcomeStatus, same_batch: bool
) -> None:
    """`done_no_change` (the customer was reached), then `failed` or an earlier attempt's
    `unreachable` for the same task: the contact was made, so it stays counted. It was
    given back, and the cap let one contact more through that week."""
    batches = [[first, attempt]] if same_batch else [[first], [attempt]]
    assert await _contact_counted(batches)


async def test_an_unreachable_read_again_is_no_suppressed_task() -> None:
    """The same `unreachable` read twice (sent twice, or read again after a restart): its
    retry is queued once, and the second read suppressed no task (it was counted
    `suppressed{reason="dedup"}`, as a moment's task made again): an outcome read again
    is counted once (`moments_task_outcomes_total`), and its retry nowhere again."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    record = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 2 * MINUTE)
    for _ in range(2):
        assert (await handle_outcomes([record], s.sink, now=now)).retries == [retry_id(CALL, 1)]
    registry = s.metrics.registry
    outcomes = {"moment_type": "churn_risk", "status": "unreachable"}
    assert registry.get_sample_value("moments_task_outcomes_total", outcomes) == 1
    dedup = {"moment_type": "churn_risk", "reason": "dedup"}
    assert not registry.get_sample_value("moments_tasks_suppressed_total", dedup)
    s.clock.advance((START + 180 * MINUTE).timestamp())
    await s.sink.release_due()
    await s.sink.flush()
    assert len(s.producer.sent) == 2  # the task, its one retry


@pytest.mark.parametrize("attempt", [OutcomeStatus.FAILED, OutcomeStatus.UNREACHABLE])
@pytest.mark.parametrize("later", REACHED, ids=[s.value for s in REACHED])
async def test_a_contact_given_back_is_counted_again_when_the_customer_was_reached(
    later: OutcomeStatus, attempt: OutcomeStatus
) -> None:
    """`failed` (or `unreachable`) read first gives the contact back; a later outcome
    saying the customer was reached says the contact was made after all: counted again.
    It was not, and the caps let one contact more through that week."""
    assert await _contact_counted([[attempt], [later]])


async def _books_after(
    channel: Channel, outcomes: list[list[OutcomeStatus]]
) -> tuple[dict[str, float], dict[str, float]]:
    """The subscriber's contacts in (the frequency cap's, the contact cap's) books once
    a task on `channel` was sent at START with both caps on (3 a week each, the frequency
    cap counting calls, manager tasks and SMS) and these outcomes of it were read an hour
    later, a batch per list."""
    s = Scenario()
    s.capped()
    await s.sink.dispatch([task(CALL, channel, "churn_risk", 12)])
    now = START + 60 * MINUTE
    s.clock.advance(now.timestamp())
    for n, batch in enumerate(outcomes):
        records = [outcome_record(CALL, status, START + (n + 1) * MINUTE) for status in batch]
        await handle_outcomes(records, s.sink, now=now)
    frequency, contacts = s.sink.stores.frequency, s.sink.stores.contacts
    assert isinstance(frequency, MemoryContactBook)
    assert isinstance(contacts, MemoryContactBook)
    return dict(frequency.contacts.get(SUB, {})), dict(contacts.contacts.get(SUB, {}))


async def test_a_contact_counted_again_keeps_its_time_and_is_counted_once() -> None:
    """Counted again as it was taken, when the task went out (not when the outcome was
    read), in both caps' books; the outcomes read again (a restart) change nothing."""
    done, failed = OutcomeStatus.DONE_NO_CHANGE, OutcomeStatus.FAILED
    sent = {CALL: START.timestamp()}
    assert await _books_after(Channel.OUTBOUND_CALL, [[failed], [done]]) == (sent, sent)
    assert await _books_after(Channel.OUTBOUND_CALL, [[failed], [done], [failed], [done]]) == (
        sent,
        sent,
    )


async def test_a_contact_is_counted_again_only_in_the_books_that_count_its_channel() -> None:
    """An app push is not one of the frequency cap's channels: it took no contact there,
    and none is counted there for it; the contact cap counts every channel."""
    outcomes = [[OutcomeStatus.FAILED], [OutcomeStatus.ACCEPTED]]
    assert await _books_after(Channel.APP_PUSH, outcomes) == ({}, {CALL: START.timestamp()})


async def test_an_unreachable_twice_in_one_batch_lists_its_retry_once() -> None:
    """The same `unreachable` twice in one batch (a producer's retry of the send): one
    retry, listed once in the result (it was listed twice, and dispatched twice)."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    record = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 2 * MINUTE)
    result = await handle_outcomes([record, record], s.sink, now=now)
    assert result.retries == [retry_id(CALL, 1)]
    dedup = {"moment_type": "churn_risk", "reason": "dedup"}
    assert not s.metrics.registry.get_sample_value("moments_tasks_suppressed_total", dedup)
    s.clock.advance((START + 180 * MINUTE).timestamp())
    await s.sink.release_due()
    await s.sink.flush()
    assert len(s.producer.sent) == 2  # the task, its one retry


async def test_a_declined_twice_in_one_batch_is_counted_once() -> None:
    """The same `declined` twice in one batch (a producer's retry of the send), as the
    `unreachable` above: one decline in the result (it counted two)."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    record = outcome_record(CALL, OutcomeStatus.DECLINED, START + 2 * MINUTE)
    result = await handle_outcomes([record, record], s.sink, now=now)
    assert (result.handled, result.declined) == (2, 1)


async def test_an_unreachable_twice_beside_a_reached_status_is_not_retried_once() -> None:
    """An earlier attempt's `unreachable` read twice beside the `accepted` that got
    through: no retry, and its task listed once in `not_retried` (it was listed twice,
    and the log counted two)."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12)])
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    unreachable = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 2 * MINUTE)
    accepted = outcome_record(CALL, OutcomeStatus.ACCEPTED, START + 5 * MINUTE)
    result = await handle_outcomes([unreachable, accepted, unreachable], s.sink, now=now)
    assert (result.retries, result.not_retried) == ([], [CALL])


async def test_outcomes_of_a_forgotten_subscribers_task_count_the_task_once() -> None:
    """A task made before its subscriber was erased, reported `declined` twice (a
    producer's retry of the send) and `unreachable` in one batch: one task acted on
    nothing, as `declined` counts each task once (it counted three); another task of
    theirs in the batch is a second."""
    s = Scenario()
    await s.sink.dispatch(
        [
            task(CALL, Channel.OUTBOUND_CALL, "churn_risk", 12),
            task(SMS, Channel.SMS, "churn_risk", 12),
        ]
    )
    now = START + 10 * MINUTE
    s.clock.advance(now.timestamp())
    await s.sink.subscribers.forget([SUB], ["churn_risk"])
    declined = outcome_record(CALL, OutcomeStatus.DECLINED, START + 2 * MINUTE)
    unreachable = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + 3 * MINUTE)
    result = await handle_outcomes([declined, declined, unreachable], s.sink, now=now)
    assert (result.handled, result.forgotten, result.declined, result.retries) == (3, 1, 0, [])
    other = outcome_record(SMS, OutcomeStatus.DECLINED, START + 4 * MINUTE)
    result = await handle_outcomes([declined, other, declined], s.sink, now=now)
    assert (result.handled, result.forgotten) == (3, 2)
