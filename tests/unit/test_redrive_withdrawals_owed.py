"""The withdrawal of a task dropped after its worker may have published it (a re-drive's
drop, or the release of a task a re-drive parked, for an opt-out, a closed line or a
tombstone) is owed in the ledger before the drop is written, and goes out at least once:
the publish right after the drop, or, when that publish fails (a refusal past the Kafka
retries) or its worker dies before it, any worker's re-drive timer once the grace period
has passed (`Withdrawals.resend_owed`). Before, it was published after the drop was
written and nothing held it: a failed publish or a crash between lost it for good, the
task `X` (never re-driven) and the copy that went out standing. On the memory stores the
backtest uses; tests/integration/dispatch/test_crash_windows.py runs the crash on Redis."""

from __future__ import annotations

import datetime as dt
import logging
import types
from collections.abc import Awaitable
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

import sinks.retry
import sinks.steps
from moments.backtest import CollectingProducer
from moments.enums import WithdrawReason
from moments.models import Channel, ProfileEvent
from sinks.base import Headers
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores
from sinks.withdrawals import WITHDRAWALS_TOPIC, ProfileChange, notice, profile_changes

from .fakes import Clock
from .test_redriven_parked import GRACE_S, OPENS, PRODUCED, SUB, TASK, call, notices


class RefusingProducer(CollectingProducer):
    """Refuses withdrawals while `refusing` (an ACL refusing the topic: not retried); times
    out the next `away` of their sends (the broker away: retried)."""

    refusing = False
    away = 0

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        if self.refusing and topic == WITHDRAWALS_TOPIC:
            raise TopicAuthorizationFailedError()
        if self.away and topic == WITHDRAWALS_TOPIC:
            self.away -= 1
            raise KafkaTimeoutError()
        return await super().send(topic, value, key, partition, timestamp_ms, headers)


def setup(hours: bool) -> tuple[Clock, DispatchStores, TaskSink, RefusingProducer]:
    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    producer = RefusingProducer(clock)
    policy = {"timezone": "UTC", **({"hours": {"outbound_call": "03:00-12:00"}} if hours else {})}
    sink = TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        DispatchPolicy.model_validate(policy),
        clock=clock,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    return clock, stores, sink, producer


async def opt_out(sink: TaskSink, at: float, channel: str = "outbound_call") -> None:
    update = ProfileEvent.model_validate(
        {
            "event_id": f"p{at}",
            "subscriber_id": SUB,
            "occurred_at": dt.datetime.fromtimestamp(at, dt.UTC),
            "opt_out": [channel],
        }
    )
    await sink.subscribers.record_facts([update])
    await sink.withdrawals.withdraw(profile_changes([update]))


async def test_a_redrive_drops_the_task_and_its_refused_withdrawal_goes_out_later() -> None:
    """The worker died after its produce; the customer opts out of calls; the re-drive drops
    the task `opt_out`, and the withdrawal's publish is refused: logged, the notice left
    owed, nothing raised (it stopped the worker). The next tick after the grace period,
    the topic writable again, publishes it; the one after, nothing more."""
    clock, stores, sink, producer = setup(hours=False)
    await stores.ledger.claim([(TASK, task_bytes(call()))])
    clock.now += 10
    await opt_out(sink, clock.now)
    clock.now += GRACE_S
    producer.refusing = True
    await sink.redrive(GRACE_S)  # the refusal is logged; the notice stays owed
    assert await stores.ledger.state(TASK) == "dropped"
    assert notices(producer) == []
    assert [task_id for task_id, _ in await stores.ledger.owed_withdrawals(-1.0)] == [TASK]

    producer.refusing = False
    clock.now += GRACE_S + 1
    await sink.redrive(GRACE_S)
    assert notices(producer) == [(TASK, "opt_out")]
    clock.now += GRACE_S + 1
    await sink.redrive(GRACE_S)
    assert notices(producer) == [(TASK, "opt_out")]


async def test_the_release_of_a_task_a_redrive_parked_owes_its_withdrawal_alike() -> None:
    """Calls are worked 03:00-12:00 UTC: the re-drive parks the task until 03:00; an opt-out
    while it waits has its release drop it, and the withdrawal's publish is refused: left
    owed, not raised. A later tick publishes it."""
    clock, stores, sink, producer = setup(hours=True)
    await stores.ledger.claim([(TASK, task_bytes(call()))])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state(TASK) == "deferred"
    await opt_out(sink, clock.now + 60)

    clock.now = OPENS.timestamp()
    producer.refusing = True
    await sink.release_due()  # the refusal is logged; the notice stays owed
    assert await stores.ledger.state(TASK) == "dropped"
    assert notices(producer) == []

    producer.refusing = False
    clock.now += GRACE_S + 1
    await sink.redrive(GRACE_S)
    assert notices(producer) == [(TASK, "opt_out")]


async def test_a_withdrawal_owed_for_a_task_sent_since_is_never_published() -> None:
    """Owed before a drop its worker never wrote (it died in between): the entry stays
    pending, and the re-drive that decides it again, the customer opted back in, sends it.
    The owed withdrawal is settled unsent: no notice of a task published and standing."""
    clock, stores, sink, producer = setup(hours=False)
    await stores.ledger.claim([(TASK, task_bytes(call()))])
    notice = orjson.dumps({"task_id": TASK})
    await stores.ledger.owe_withdrawals([(TASK, notice)])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state(TASK) == "sent"
    clock.now += GRACE_S + 1
    await sink.redrive(GRACE_S)
    assert notices(producer) == []
    assert await stores.ledger.owed_withdrawals(-1.0) == []


async def test_a_stalled_redrives_withdrawal_is_not_published_for_the_task_another_sent() -> None:
    """A re-drive owes the withdrawal of the task it drops `opt_out`, then stalls past the
    grace period before its drop is written; the customer opts back in, and another
    worker's re-drive takes the task and sends it. The stalled drop finds the task sent
    (it writes nothing), and its notice is settled unpublished, as its timer's would be
    (`resend_owed`): published, it told the consumer to drop a task sent and standing."""
    clock, stores, sink, producer = setup(hours=False)
    other = TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        DispatchPolicy.model_validate({"timezone": "UTC"}),
        clock=clock,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    await stores.ledger.claim([(TASK, task_bytes(call()))])
    clock.now += 10
    await opt_out(sink, clock.now)
    clock.now += GRACE_S
    owe = sink.withdrawals.owe_dropped

    async def stalled(dropped: Any) -> Any:
        made = await owe(dropped)
        clock.now += 1
        await opt_in(other, clock.now)
        clock.now += GRACE_S + 1
        assert await other.redrive(GRACE_S) == 1
        return made

    sink.withdrawals.owe_dropped = stalled  # type: ignore[method-assign]
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state(TASK) == "sent"
    assert [orjson.loads(p.payload)["task_id"] for p in producer.sent] == [TASK]
    assert notices(producer) == []
    assert await stores.ledger.owed_withdrawals(-1.0) == []


async def opt_in(sink: TaskSink, at: float) -> None:
    update = ProfileEvent.model_validate(
        {
            "event_id": f"p{at}",
            "subscriber_id": SUB,
            "occurred_at": dt.datetime.fromtimestamp(at, dt.UTC),
            "opt_out": [],
        }
    )
    await sink.subscribers.record_facts([update])


async def test_a_withdrawal_a_newer_version_owed_on_a_channel_unknown_here_goes_out() -> None:
    """A newer version's worker owed the withdrawal of a task on a channel this version
    does not know (`wechat`), wrote the drop and died. This version's timer publishes the
    notice naming the channel as it was made (docs/operations.md, "Rolling upgrades":
    withdrawals still go out for such a task); before, it failed to read as a
    `TaskWithdrawal`, was logged and settled, and never went out."""
    clock, stores, sink, producer = setup(hours=False)
    await stores.ledger.claim([(TASK, task_bytes(call()))])
    await stores.ledger.drop_many([(TASK, "opt_out")])
    change = ProfileChange(SUB, WithdrawReason.OPT_OUT, PRODUCED)
    made = orjson.loads(orjson.dumps(notice(call(), change, clock.now).model_dump(mode="json")))
    await stores.ledger.owe_withdrawals([(TASK, orjson.dumps({**made, "channel": "wechat"}))])
    clock.now += GRACE_S + 1
    await sink.redrive(GRACE_S)
    published = [orjson.loads(p.payload) for p in producer.withdrawn]
    assert published == [{**made, "channel": "wechat"}]
    newer = {"kind": "withdrawal"}
    assert sink.metrics.registry.get_sample_value("moments_tasks_newer_version_total", newer) == 1
    assert await stores.ledger.owed_withdrawals(-1.0) == []


SMS_TASK = "d2" * 16


def expired_unanswered(sink: TaskSink) -> float:
    labels = {"channel": "sms", "moment_type": "m"}
    found = sink.metrics.registry.get_sample_value("moments_tasks_unanswered_expired_total", labels)
    return found or 0.0


async def owed_and_unanswered() -> tuple[Clock, DispatchStores, TaskSink, RefusingProducer]:
    """A withdrawal owed (its task dropped `opt_out` by a worker that died before publishing
    it), and an SMS published an hour before its expiry that no outcome answered: both due
    at the next tick, two hours on (the outcome grace is an hour)."""
    clock, stores, sink, producer = setup(hours=False)
    sms = call().model_copy(
        update={
            "task_id": SMS_TASK,
            "channel": Channel.SMS,
            "expires_at": PRODUCED + dt.timedelta(hours=1),
        }
    )
    await sink.dispatch([sms])
    assert [orjson.loads(p.payload)["task_id"] for p in producer.sent] == [SMS_TASK]
    await stores.ledger.claim([(TASK, task_bytes(call()))])
    await stores.ledger.drop_many([(TASK, "opt_out")])
    change = ProfileChange(SUB, WithdrawReason.OPT_OUT, PRODUCED)
    made = notice(call(), change, clock.now).model_dump(mode="json")
    await stores.ledger.owe_withdrawals([(TASK, orjson.dumps(made))])
    clock.now += 2 * 3600 + 1
    return clock, stores, sink, producer


async def test_a_refused_withdrawal_leaves_the_unanswered_tasks_expiring_on_the_same_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The withdrawals topic refuses for good (an ACL): the tick still expires the
    unanswered SMS, counts the refusal in `moments_timer_errors_total{step="withdrawals"}`
    and logs it with the fix, and raises nothing: the notice stays owed in the ledger and
    the worker goes on. A tick after the back-off, the topic writable again, publishes it.
    Before, the refusal was raised out of the timer, which stopped the worker at every
    start; and before that it skipped the expiry on every tick."""
    clock, stores, sink, producer = await owed_and_unanswered()
    producer.refusing = True
    with caplog.at_level(logging.ERROR, logger="sinks.steps"):
        await sink.redrive(GRACE_S)
    assert expired_unanswered(sink) == 1
    assert timer_errors(sink, "withdrawals") == 1
    assert failures_in_a_row(sink, "withdrawals") == 1
    said = " ".join(r.getMessage() for r in caplog.records if r.name == "sinks.steps")
    assert "while publishing withdrawals owed" in said
    assert "grant it Write" in said
    assert notices(producer) == []
    assert [task_id for task_id, _ in await stores.ledger.owed_withdrawals(-1.0)] == [TASK]

    producer.refusing = False
    clock.now += GRACE_S + 1
    await sink.redrive(GRACE_S)
    assert notices(producer) == [(TASK, "opt_out")]
    assert expired_unanswered(sink) == 1
    assert timer_errors(sink, "withdrawals") == 1
    assert failures_in_a_row(sink, "withdrawals") == 0
    assert await stores.ledger.owed_withdrawals(-1.0) == []


def timer_errors(sink: TaskSink, step: str) -> float:
    found = sink.metrics.registry.get_sample_value("moments_timer_errors_total", {"step": step})
    return found or 0.0


def failures_in_a_row(sink: TaskSink, step: str) -> float:
    """The gauge MomentsTimerErrors reads, held between the step's tries."""
    found = sink.metrics.registry.get_sample_value(
        "moments_timer_failures_in_a_row", {"step": step}
    )
    assert found is not None, "declared at 0"
    return found


async def test_a_withdrawals_topic_away_is_waited_out_before_the_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker away is still retried with back-off inside the step, as before: the tick
    publishes the withdrawal once it answers, then expires the SMS, and raises nothing."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(sinks.retry, "asyncio", types.SimpleNamespace(sleep=sleep))
    _, _, sink, producer = await owed_and_unanswered()
    producer.away = 2
    await sink.redrive(GRACE_S)
    assert delays == [0.1, 0.2]
    assert notices(producer) == [(TASK, "opt_out")]
    assert expired_unanswered(sink) == 1


async def test_a_batchs_refused_withdrawal_is_owed_and_the_timer_publishes_it() -> None:
    """A published SMS; the customer opts out of SMS, and the batch's withdrawal is
    refused (an ACL): the batch goes on (the refusal was raised, and stopped the worker at
    every start, the batch read again), the notice owed in the ledger and the task out of
    the published index (a later opt-out makes no second notice). The timer publishes it
    once the topic takes it, whatever became of the task: it was sent, which a re-drive's
    owed notice would be settled unpublished for. Counted withdrawn once, when it went."""
    clock, stores, sink, producer = setup(hours=False)
    await sink.dispatch([call().model_copy(update={"channel": Channel.SMS})])
    assert await stores.ledger.state(TASK) == "sent"
    producer.refusing = True
    clock.now += 10
    await opt_out(sink, clock.now, "sms")
    assert notices(producer) == []
    assert [task_id for task_id, _ in await stores.ledger.owed_withdrawals(-1.0)] == [
        f"standing:{TASK}"
    ]
    clock.now += 1
    await opt_out(sink, clock.now, "sms")
    assert len(await stores.ledger.owed_withdrawals(-1.0)) == 1

    clock.now += GRACE_S + 1
    await sink.redrive(GRACE_S)  # still refused: counted, left owed
    assert timer_errors(sink, "withdrawals") == 1
    producer.refusing = False
    clock.now += GRACE_S + 1  # past the step's back-off and the owed notice's lease
    await sink.redrive(GRACE_S)
    assert notices(producer) == [(TASK, "opt_out")]
    assert await stores.ledger.owed_withdrawals(-1.0) == []
    withdrawn = {"moment_type": call().moment.type, "reason": "opt_out"}
    assert sink.metrics.registry.get_sample_value("moments_tasks_withdrawn_total", withdrawn) == 1
    clock.now += GRACE_S + 1
    await sink.redrive(GRACE_S)
    assert notices(producer) == [(TASK, "opt_out")]


async def test_a_refusal_at_every_decision_is_one_error_line_in_30_s(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The withdrawals topic refuses (an ACL) the notices of three decisions in a row: one
    ERROR line says so, with the fix, and the next one 30 s on says how many it held back;
    each is owed all the same. Before, each refusal made two lines (`with_retry`'s and the
    owing code's), none throttled: under load, an ERROR pair per batch."""
    throttle = Clock(1e12)  # past any line an earlier test let through
    monkeypatch.setattr(sinks.steps.REFUSALS_THROTTLE, "clock", throttle)
    clock, stores, sink, producer = setup(hours=False)
    producer.refusing = True

    async def voided(n: int) -> None:
        task = call().model_copy(update={"task_id": f"{n:032x}"})
        await sink.withdrawals.withdraw_voided([(task, WithdrawReason.OPT_OUT, clock.now)])

    with caplog.at_level(logging.ERROR):
        for n in range(3):
            await voided(n)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors
        assert "withdrawal(s) refused by Kafka" in errors[0]
        assert "grant it Write" in errors[0]
        throttle.now += 31
        await voided(3)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert "[2 more like this in the last 31 s]" in errors[1]
    assert len(await stores.ledger.owed_withdrawals(-1.0)) == 4


async def test_a_refused_step_is_tried_again_once_what_it_read_is_due_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An owed notice read is not read again for the grace period (the ledger moves its
    time to now): the step is not tried again before, whatever its back-off (10 s), and
    its failures go on in a row. Tried at 10 s, it read nothing and said it went through
    again, then failed afresh (`1 time(s) in a row`, its traceback again) at each read."""
    clock, _, sink, producer = await owed_and_unanswered()
    producer.refusing = True
    with caplog.at_level(logging.WARNING, logger="sinks.steps"):
        await sink.redrive(GRACE_S)
        clock.now += 11  # past the 10 s back-off, within the notice's lease
        await sink.redrive(GRACE_S)
        clock.now += GRACE_S
        await sink.redrive(GRACE_S)
    said = [r.getMessage() for r in caplog.records if r.name == "sinks.steps"]
    assert not [line for line in said if "went through" in line], said
    assert timer_errors(sink, "withdrawals") == 2
    assert "(2 time(s) in a row" in said[-1]
    assert f"tries this step again in {GRACE_S:.0f} s" in said[-1]
    assert notices(producer) == []
