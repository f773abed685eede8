"""A re-drive of a task that carries the moments of a withdrawn carrier on (a leave's mark,
`L<time>`), on Redis and in memory. Parked since the leave, then released, and the
release's worker died mid-decision: the re-drive repeats the release's decision, so it
dates the task by the release (its score, the release's token found), not by the leave;
and its moments may have gone out inside the withdrawn carrier, so the re-drive keeps
their cooldowns when it drops them (`Writes.carried`), as a release does."""

from __future__ import annotations

import datetime as dt
import time

import orjson
import pytest

from moments.backtest import CollectingProducer
from moments.models import Channel, Family, Moment, ServiceTask
from sinks.cooldowns import CollectedCooldownReturns
from sinks.dispatch import TaskSink
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, Joining, Leave, Parking

pytestmark = pytest.mark.integration

SUB = "13800000003"
CALL, LEAD, OTHER = "c" * 32, "d" * 32, "e" * 32
POLICY = DispatchPolicy.model_validate({"timezone": "UTC"})
"""SMS goes out at any hour; a task is sent no later than 5 minutes before it expires
(`min_time_left`)."""


def task(
    task_id: str, rule: str, channel: Channel, made: dt.datetime, expires: dt.datetime
) -> ServiceTask:
    return ServiceTask(
        task_id=task_id,
        subscriber_id=SUB,
        moment=Moment(
            family=Family.FIRST_TIME, type=rule, rule_id=rule, rule_version=1, description="d"
        ),
        priority=2 if task_id == LEAD else 3,
        channel=channel,
        action="act",
        triggered_at=made,
        created_at=made,
        deliver_after=made,
        expires_at=expires,
        evidence=["e1"],
    )


def worker(stores: DispatchStores) -> tuple[TaskSink, CollectingProducer, CollectedCooldownReturns]:
    producer = CollectingProducer(time.time)
    returns = CollectedCooldownReturns(lambda: {"call", "lead", "other"})
    sink = TaskSink(producer, "tasks", stores, Metrics(), POLICY, clock=time.time, returns=returns)
    return sink, producer, returns


async def rehomed(stores: DispatchStores, lead_expires: dt.datetime, left_at: float) -> None:
    """Two SMS moments (`LEAD`, rule `lead`, expiring at `lead_expires`; `OTHER`, rule
    `other`, in three days) merged into a waiting call; the call withdrawn, they go on
    under `LEAD`'s id, its entry pending with a leave's mark dated `left_at` (their
    moments may have gone out inside the call)."""
    now = dt.datetime.now(dt.UTC)
    made, later = now - dt.timedelta(hours=2), now + dt.timedelta(days=3)
    tasks = [
        task(CALL, "call", Channel.OUTBOUND_CALL, made, later),
        task(LEAD, "lead", Channel.SMS, made, lead_expires),
        task(OTHER, "other", Channel.SMS, made, later),
    ]
    raw = {t.task_id: task_bytes(t) for t in tasks}
    await stores.ledger.claim(list(raw.items()))
    parking = Parking(CALL, SUB, b"", time.time() - 1, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    joins = [Joining(LEAD, SUB, b""), Joining(OTHER, SUB, b"")]
    assert await stores.deferral.join_many(joins) == [CALL, CALL]
    # The call's release, its decision: withdrawn, its moments on under the lead's id.
    assert [r.task_id for r in await stores.deferral.release(time.time(), 10, "A")] == [CALL]
    leaves = [
        Leave(CALL, LEAD, raw[LEAD], to=LEAD, went_out=True, went_at=left_at),
        Leave(CALL, OTHER, raw[OTHER], to=LEAD),
    ]
    assert await stores.ledger.leave_many(leaves) == [True, True]
    await stores.ledger.drop_many([(CALL, "opt_out")])
    assert [await stores.ledger.state(i) for i in (CALL, LEAD, OTHER)] == [
        "dropped",
        "pending",
        "merged",
    ]
    assert await stores.ledger.redriven_carried([LEAD]) == (set(), {LEAD})


async def test_a_redrive_after_a_release_dates_the_task_by_the_release(
    stores: DispatchStores,
) -> None:
    """The leave, an hour ago, judged the lead sendable; the task waited, and the lead
    lapsed a minute ago (sent no later than six minutes ago). Its release now takes it
    (the release's token), and the release's worker dies before deciding. The re-drive
    repeats the release's decision: the lead could not have gone out under its id then,
    so the task is not sealed: the lead is dropped `expired`, its cooldown kept (its
    moment may have gone out inside the withdrawn call), and the other moment goes out
    under its own id. Before, the re-drive dated the task by the leave: sealed, the other
    moment was dropped with the lead, though no copy of the task ever went out."""
    now = dt.datetime.now(dt.UTC)
    await rehomed(stores, now - dt.timedelta(minutes=1), time.time() - 3600)
    parking = Parking(LEAD, SUB, b"", time.time() - 1, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    [released] = await stores.deferral.release(time.time(), 10, token="R")
    assert released.task_id == LEAD  # the release's worker dies here
    sink, produced, returns = worker(stores)
    assert await sink.redrive(-1.0) == 1  # past the grace period
    assert [orjson.loads(p.payload)["task_id"] for p in produced.sent] == [OTHER]
    assert [await stores.ledger.state(i) for i in (LEAD, OTHER)] == ["dropped", "sent"]
    assert returns.take() == []
    assert await stores.ledger.owed_returns(-1.0) == []


async def test_a_redrive_keeps_the_cooldowns_of_a_leaves_moments_judged_unsealed(
    stores: DispatchStores,
) -> None:
    """The leave's mark dates the task after its lead's last send (a `min_time_left`
    raised since the leave judged it): the re-drive finds it never went out under its
    id, drops the lead `expired` and sends the other moment alone. The lead's moment may
    have gone out inside the withdrawn call: its rule's cooldown is kept, as a release's
    drop keeps it. Before, the re-drive did not read the leave's mark as such
    (`Writes.carried` empty) and returned the cooldown: its rule free to fire again for
    a customer the call may have reached."""
    now = dt.datetime.now(dt.UTC)
    await rehomed(stores, now - dt.timedelta(minutes=30), time.time() - 600)
    sink, produced, returns = worker(stores)
    assert await sink.redrive(-1.0) == 1
    assert [orjson.loads(p.payload)["task_id"] for p in produced.sent] == [OTHER]
    assert [await stores.ledger.state(i) for i in (LEAD, OTHER)] == ["dropped", "sent"]
    assert returns.take() == []
    assert await stores.ledger.owed_returns(-1.0) == []


@pytest.mark.parametrize("released", [False, True])
async def test_the_claim_dates_a_leaves_mark_by_a_release_since(
    stores: DispatchStores, released: bool
) -> None:
    """The store alone: a leave's mark becomes the claim's with the leave's time (given in
    `first_pending`), unless a release's token is found (parked and released since): then
    with the claim's score, the release's time (`since`; not in `first_pending`). Either
    way the claim reports the leave's kind (`carried`), and its mark is a claim's now."""
    left_at = 1_733_300_000.5
    await rehomed(stores, dt.datetime.now(dt.UTC) + dt.timedelta(days=1), left_at)
    ledger = stores.ledger
    if released:
        parking = Parking(LEAD, SUB, b"", time.time() - 1, 1800.0)
        assert await stores.deferral.park_many([parking]) == [True]
        assert [r.task_id for r in await stores.deferral.release(time.time(), 10, "R")] == [LEAD]
    since: dict[str, float] = {}
    first: dict[str, float | None] = {}
    carried: set[str] = set()
    got = await ledger.claim_stale(-1.0, since=since, first_pending=first, carried=carried)
    assert [i for i, _ in got] == [LEAD]
    assert carried == {LEAD}
    dated = since[LEAD] if released else left_at
    assert since[LEAD] > left_at
    assert first == ({} if released else {LEAD: left_at})
    assert await ledger.first_pending([LEAD]) == {LEAD: dated}
    assert await ledger.redriven_carried([LEAD]) == ({LEAD}, set())


@pytest.mark.parametrize("released", [False, True])
async def test_a_second_redrive_keeps_the_leaves_kind_after_the_first_died_at_its_claim(
    stores: DispatchStores, released: bool
) -> None:
    """Two crashes and a lead that lapsed: the task carrying a withdrawn call's moments on
    is claimed by a first re-drive whose worker dies right after the claim (`claim_stale`,
    nothing decided), and a second re-drive, a grace period later, decides it. Judged
    unsealed (the leave dated after the lead's last send; or, `released`, the task parked
    and released since, the release's worker dead mid-decision, and the lead lapsed before
    the release), the lead is dropped `expired` and the other moment goes out under its
    own id, as after one crash; the lead's moment may have gone out inside the withdrawn
    call, so its rule's cooldown is kept. Before, the first claim turned the leave's mark
    into a plain claim's, the second claim reported no leave (`carried` empty), and the
    second re-drive returned the cooldown: the rule free to fire again for a customer the
    call may have reached."""
    now = dt.datetime.now(dt.UTC)
    if released:
        await rehomed(stores, now - dt.timedelta(minutes=1), time.time() - 3600)
        parking = Parking(LEAD, SUB, b"", time.time() - 1, 1800.0)
        assert await stores.deferral.park_many([parking]) == [True]
        [taken] = await stores.deferral.release(time.time(), 10, token="R")
        assert taken.task_id == LEAD  # the release's worker dies here
    else:
        await rehomed(stores, now - dt.timedelta(minutes=30), time.time() - 600)
    carried: set[str] = set()
    first_claim = await stores.ledger.claim_stale(-1.0, token="first", carried=carried)
    assert [i for i, _ in first_claim] == [LEAD]
    assert carried == {LEAD}  # the first re-drive's worker dies here
    sink, produced, returns = worker(stores)
    assert await sink.redrive(-1.0) == 1
    assert [orjson.loads(p.payload)["task_id"] for p in produced.sent] == [OTHER]
    assert [await stores.ledger.state(i) for i in (LEAD, OTHER)] == ["dropped", "sent"]
    assert returns.take() == []
    assert await stores.ledger.owed_returns(-1.0) == []
