"""A stalled decision's merged moments (`Ledger.leave_many`, `_LEAVE` on Redis) are fenced
by its claim token, as its drops and parks are (`Held`), on Redis and in memory: a release
that took a waiting call with an SMS moment merged into it decides to drop the moment,
then stalls past the grace period; another worker's re-drive claims the call and publishes
it with the moment inside. Before, the stalled release's leave still found the moment
`M<call>` and marked it dropped, and sent its cooldown return: the moment went out, its
rule free to fire again (a second contact). The leave refused, the return it owed is
forgotten with it (the moment stays merged inside a task that went out: kept, it stayed
owed for good, and was sent once the moment's entry lapsed)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from moments.backtest import CollectingProducer
from moments.models import Channel, Family, Moment, ProfileEvent, ServiceTask
from sinks.cooldowns import CollectedCooldownReturns
from sinks.dispatch import TaskSink
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, Held, Joining, Leave, Parking
from sinks.withdrawals import WITHDRAWALS_TOPIC

pytestmark = pytest.mark.integration

SUB = "13800000002"
CALL, SMS = "c" * 32, "d" * 32
POLICY = DispatchPolicy.model_validate({"timezone": "UTC"})


def task(
    task_id: str, rule: str, channel: Channel, at: dt.datetime, expires: dt.datetime | None = None
) -> ServiceTask:
    return ServiceTask(
        task_id=task_id,
        subscriber_id=SUB,
        moment=Moment(
            family=Family.FIRST_TIME, type=rule, rule_id=rule, rule_version=1, description="d"
        ),
        priority=3,
        channel=channel,
        action="act",
        triggered_at=at,
        created_at=at,
        deliver_after=at,
        expires_at=at + dt.timedelta(days=3) if expires is None else expires,
        evidence=["e1"],
    )


def worker(stores: DispatchStores) -> tuple[TaskSink, CollectingProducer, CollectedCooldownReturns]:
    producer = CollectingProducer(time.time)
    returns = CollectedCooldownReturns(lambda: {"call", "sms"})
    sink = TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        POLICY,
        clock=time.time,
        returns=returns,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    return sink, producer, returns


def profile(opt_out: list[str], at: dt.datetime) -> ProfileEvent:
    return ProfileEvent.model_validate(
        {
            "event_id": f"p{at.timestamp()}",
            "subscriber_id": SUB,
            "occurred_at": at,
            "opt_out": opt_out,
        }
    )


async def a_call_waiting_with_an_sms_inside(
    stores: DispatchStores, now: dt.datetime, call_expires: dt.datetime | None = None
) -> None:
    """The call waits in the deferral queue, due now (parked by a decision, not a re-drive:
    not taken as possibly sent), the SMS moment merged into it. The call expires in three
    days, or at `call_expires`."""
    made = now - dt.timedelta(minutes=5)
    call = task(CALL, "call", Channel.OUTBOUND_CALL, made, call_expires)
    await stores.ledger.claim(
        [
            (CALL, task_bytes(call)),
            (SMS, task_bytes(task(SMS, "sms", Channel.SMS, made))),
        ]
    )
    parking = Parking(CALL, SUB, b"", time.time() - 1, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    assert await stores.deferral.join_many([Joining(SMS, SUB, b"")]) == [CALL]
    assert await stores.ledger.state(SMS) == "merged"


def stall_before_the_leave(a: TaskSink, meanwhile: Callable[[], Awaitable[None]]) -> None:
    """Have `a`'s first move of merged moments out of their group wait for `meanwhile`."""
    leave: Callable[..., Awaitable[set[str]]] = a._leave
    pending: list[Callable[[], Awaitable[None]]] = [meanwhile]

    async def stalled(*args: Any, **kwargs: Any) -> set[str]:
        if pending and any(args[0]):
            await pending.pop()()
        return await leave(*args, **kwargs)

    a._leave = stalled  # type: ignore[method-assign]


async def test_a_stalled_release_does_not_drop_a_moment_another_sent(
    stores: DispatchStores,
) -> None:
    """The customer opted out of SMS: A's release of the call decides to drop the SMS moment
    (its return owed), then stalls before it leaves the group; the customer opts back in,
    and B's re-drive, past the grace period, claims the call and publishes it with the
    moment inside. A's leave is refused: the moment stays merged in the call that went
    out, no return is sent for it, none stays owed, and A publishes nothing."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    a, produced_a, returns_a = worker(stores)
    b, produced_b, returns_b = worker(stores)
    await a.subscribers.record_facts([profile(["sms"], now)])

    async def b_sends_it() -> None:
        await b.subscribers.record_facts([profile([], now + dt.timedelta(seconds=1))])
        assert await b.redrive(-1.0) == 1  # past the grace period

    stall_before_the_leave(a, b_sends_it)
    assert await a.release_due() == 1
    [out] = [orjson.loads(p.payload) for p in produced_b.sent]
    assert out["task_id"] == CALL
    assert [r["task_id"] for r in out["related"] or []] == [SMS]
    assert produced_a.sent == []
    assert returns_a.take() == []
    assert returns_b.take() == []
    assert await stores.ledger.state(SMS) == "merged"
    assert await stores.ledger.owed_returns(-1.0) == []
    # Nothing left owed: the timer, once the moment's entry is gone, sends nothing either.
    assert await a._owed.resend(-1.0) == 0
    assert returns_a.take() == []


async def test_a_stalled_release_does_not_publish_a_moment_another_sent_inside(
    stores: DispatchStores,
) -> None:
    """The customer opted out of calls: A's release drops the call and moves the SMS moment
    out of its group under its own id, to go alone, then stalls before the move; the
    customer opts back in, and B's re-drive claims the call and publishes it with the
    moment inside. A's move is refused: A publishes nothing, the moment stays merged in
    the call that went out. Before, the move was written (the moment still `M<call>`),
    and A's fence held the moment (pending under its own id, no re-drive's token on it):
    A published it a second time, alone."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    a, produced_a, returns_a = worker(stores)
    b, produced_b, _ = worker(stores)
    await a.subscribers.record_facts([profile(["outbound_call"], now)])

    async def b_sends_it() -> None:
        await b.subscribers.record_facts([profile([], now + dt.timedelta(seconds=1))])
        assert await b.redrive(-1.0) == 1  # past the grace period

    stall_before_the_leave(a, b_sends_it)
    assert await a.release_due() == 1
    [out] = [orjson.loads(p.payload) for p in produced_b.sent]
    assert (out["task_id"], [r["task_id"] for r in out["related"] or []]) == (CALL, [SMS])
    assert produced_a.sent == []
    assert returns_a.take() == []
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["sent", "merged"]


async def test_a_leave_is_written_only_while_its_carrier_is_held(stores: DispatchStores) -> None:
    """The store's fence alone: A took the call (token A), B's re-drive claimed it since
    (token B). A's leave of the moment (dropped, moved out under its own id, or to another
    group) is refused, the moment left merged, and the return A owed for it forgotten; a
    return owed under another id is kept, and so is one B owes under the moment's key
    (B's decision drops it too: its own leave is still to be written). B's leave is
    written. Before, A's leaves were
    written (the moment still `M<call>`): moved out under its own id, A's fence (no
    token on it) held it, and A published a moment B's call carried."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    ledger = stores.ledger
    assert [t.task_id for t in await stores.deferral.release(time.time(), 10, token="A")] == [CALL]
    await ledger.postpone([CALL], -3600.0)  # A stalled past the grace period
    assert [i for i, _ in await ledger.claim_stale(-1.0, token="B")] == [CALL]
    await ledger.owe_returns([(SMS, b"r-sms"), ("e" * 32, b"r-other")], owner="A")
    a = Held("A", frozenset({CALL}))
    leaves = [
        Leave(CALL, SMS, b"", to=SMS),
        Leave(CALL, SMS, b"", dropped="opt_out", returns=(SMS,)),
        Leave(CALL, SMS, b"", to="f" * 32),
    ]
    for leave in leaves:
        assert await ledger.leave_many([leave], held=a) == [False]
        assert await ledger.state(SMS) == "merged"
    assert [i for i, _ in await ledger.owed_returns(-1.0)] == ["e" * 32]
    await ledger.owe_returns([(SMS, b"r-sms-b")], owner="B")
    refused = Leave(CALL, SMS, b"", dropped="opt_out", returns=(SMS,))
    assert await ledger.leave_many([refused], held=a) == [False]
    assert sorted(await ledger.owed_returns(-1.0)) == [(SMS, b"r-sms-b"), ("e" * 32, b"r-other")]
    b = Held("B", frozenset({CALL}))
    assert await ledger.leave_many([Leave(CALL, SMS, b"", dropped="opt_out")], held=b) == [True]
    assert await ledger.state(SMS) == "dropped"


class CrashError(Exception):
    """A worker killed at that call."""


async def test_a_refused_leave_forgets_no_return_another_worker_owes(
    stores: DispatchStores,
) -> None:
    """A stall, then a crash. The call is past its last send (it expires in a minute,
    sent no later than five minutes before) and the customer opted out of SMS: A's release
    of the call decides to drop both, the SMS moment's return owed, then stalls before the
    moment leaves the group. B's re-drive, past the grace period, claims the call and
    decides the same (the call could not have gone out at its release: not sealed): it
    owes the moment's return (under the same key) and, before B's leave is written, A's
    leave lands, refused by its fence, the moment still in the call. B then writes its
    leave and the call's drop and dies before sending the returns. The return B owes for
    the moment is still owed, and any worker's timer sends it: the rule's cooldown given
    back for a moment never sent. Before, A's refusal forgot every return owed under the
    moment's key, B's too: the rule stayed in cooldown with no task sent, a fire missed."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now, now + dt.timedelta(minutes=1))
    a, produced_a, returns_a = worker(stores)
    b, produced_b, returns_b = worker(stores)
    await a.subscribers.record_facts([profile(["sms"], now)])
    a_stalled, b_owed, a_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    a_leave: Callable[..., Awaitable[set[str]]] = a._leave
    b_leave: Callable[..., Awaitable[set[str]]] = b._leave

    async def a_stalls(*args: Any, **kwargs: Any) -> set[str]:
        if any(args[0]):
            a_stalled.set()
            await b_owed.wait()
        return await a_leave(*args, **kwargs)

    async def b_waits_for_a(*args: Any, **kwargs: Any) -> set[str]:
        b_owed.set()  # its return owed (`OwedReturns.owe` runs right before the leave)
        await a_done.wait()
        return await b_leave(*args, **kwargs)

    async def b_dies(*args: Any, **kwargs: Any) -> int:
        raise CrashError("send")

    a._leave = a_stalls  # type: ignore[method-assign]
    b._leave = b_waits_for_a  # type: ignore[method-assign]
    b._owed.send = b_dies  # type: ignore[method-assign]

    async def a_releases() -> int:
        try:
            return await a.release_due()
        finally:
            a_done.set()

    async def b_redrives() -> None:
        await a_stalled.wait()
        with pytest.raises(CrashError):
            await b._redrive_stale(-1.0)  # past the grace period

    released, _ = await asyncio.gather(a_releases(), b_redrives())
    assert released == 1
    assert produced_a.sent == produced_b.sent == []
    assert returns_a.take() == returns_b.take() == []
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "dropped"]
    c, _, returns_c = worker(stores)
    assert await c._owed.resend(-1.0) == 2
    assert sorted((r.task_id, r.rule_id) for r in returns_c.take()) == [
        (CALL, "call"),
        (SMS, "sms"),
    ]


def suppressed(sink: TaskSink, moment_type: str, reason: str) -> float:
    """`moments_tasks_suppressed_total` of `sink`'s worker for this type and reason."""
    labels = {"moment_type": moment_type, "reason": reason}
    return sink.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) or 0.0


@pytest.mark.parametrize("opted_out", ["sms", "outbound_call"])
async def test_a_stalled_release_counts_nothing_its_fence_refused(
    stores: DispatchStores, opted_out: str
) -> None:
    """A's release decides to drop the SMS moment (the customer opted out of SMS: its
    leave of the group) or the call (opted out of calls: its entry's drop), then stalls;
    B's re-drive claims the call and publishes it with the moment inside. A's leave or
    drop is refused by its fence, and A counts no suppression for it: nothing of A's
    decision was written, and the moment went out. Before, `_gone` counted it as it was
    judged, before the write its fence refused: a moment sent counted suppressed too."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    a, produced_a, _ = worker(stores)
    b, produced_b, _ = worker(stores)
    await a.subscribers.record_facts([profile([opted_out], now)])

    async def b_sends_it() -> None:
        await b.subscribers.record_facts([profile([], now + dt.timedelta(seconds=1))])
        assert await b.redrive(-1.0) == 1  # past the grace period

    stall_before_the_leave(a, b_sends_it)
    assert await a.release_due() == 1
    [out] = [orjson.loads(p.payload) for p in produced_b.sent]
    assert (out["task_id"], [r["task_id"] for r in out["related"] or []]) == (CALL, [SMS])
    assert produced_a.sent == []
    moment_type = "sms" if opted_out == "sms" else "call"
    assert suppressed(a, moment_type, "opt_out") == 0
    assert suppressed(b, moment_type, "opt_out") == 0


async def test_a_release_not_stalled_counts_its_drop(stores: DispatchStores) -> None:
    """The control: A's release drops the SMS moment (opted out of SMS) and sends the call
    without it, nobody racing it: the moment is counted suppressed once."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    a, produced_a, _ = worker(stores)
    await a.subscribers.record_facts([profile(["sms"], now)])
    assert await a.release_due() == 1
    assert [orjson.loads(p.payload)["task_id"] for p in produced_a.sent] == [CALL]
    assert suppressed(a, "sms", "opt_out") == 1


@pytest.mark.parametrize("opted_out", ["sms", "outbound_call"])
async def test_a_leave_whose_first_reply_was_lost_is_written_once(
    stores: DispatchStores, opted_out: str
) -> None:
    """The control's release, nobody racing it, but the first reply of its leave is lost
    (the script ran, the connection dropped): the retry finds the moment as the first try
    left it and takes that as written. Opted out of SMS, the moment dropped is counted
    suppressed once and the call goes without it; opted out of calls, the call is
    dropped and the moment, moved out under its own id, goes out now. Before, the retry
    found the moment no longer `M<call>` and said not written: the drop was counted
    nowhere, and the moved moment was left to its re-drive, a grace period late."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    a, produced_a, _ = worker(stores)
    await a.subscribers.record_facts([profile([opted_out], now)])
    leave_many: Callable[..., Awaitable[list[bool]]] = stores.ledger.leave_many
    tries: list[int] = []

    async def first_reply_lost(*args: Any, **kwargs: Any) -> list[bool]:
        written = await leave_many(*args, **kwargs)
        tries.append(len(written))
        if len(tries) == 1:
            raise RedisConnectionError("the reply was lost")
        return written

    stores.ledger.leave_many = first_reply_lost  # type: ignore[method-assign]
    assert await a.release_due() == 1
    assert len(tries) == 2
    sent = [orjson.loads(p.payload)["task_id"] for p in produced_a.sent]
    if opted_out == "sms":
        assert sent == [CALL]
        assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["sent", "dropped"]
        assert suppressed(a, "sms", "opt_out") == 1
    else:
        assert sent == [SMS]
        assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "sent"]
        assert suppressed(a, "call", "opt_out") == 1


async def test_a_return_owed_for_a_moment_that_went_out_inside_its_carrier_is_settled(
    stores: DispatchStores,
) -> None:
    """A crash, not a stall: A's release decides to drop the SMS moment (opted out of SMS),
    owes its return and dies before its leave is written. The customer opts back in; B's
    re-drive claims the call and publishes it with the moment inside (sealed: it may have
    gone out so). The return A owed is for a moment that went out: any worker's timer
    settles it unsent, the moment `M<call>` and the call sent. Before, it stayed owed
    (a merged moment's waits for its decision), read again every grace period for the
    moment's entry's life, and sent once that lapsed: the rule's cooldown given back for a
    moment that reached the customer."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    a, _, _ = worker(stores)
    b, produced_b, returns_b = worker(stores)
    await a.subscribers.record_facts([profile(["sms"], now)])

    async def dies(*args: Any, **kwargs: Any) -> set[str]:
        raise CrashError("leave")

    a._leave = dies  # type: ignore[method-assign]
    with pytest.raises(CrashError):
        await a.release_due()
    assert [i for i, _ in await stores.ledger.owed_returns(-1.0)] == [SMS]
    await b.subscribers.record_facts([profile([], now + dt.timedelta(seconds=1))])
    assert await b.redrive(-1.0) == 1
    [out] = [orjson.loads(p.payload) for p in produced_b.sent]
    assert (out["task_id"], [r["task_id"] for r in out["related"] or []]) == (CALL, [SMS])
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["sent", "merged"]
    assert await b._owed.resend(-1.0) == 0
    assert returns_b.take() == []
    assert await stores.ledger.owed_returns(-1.0) == []
