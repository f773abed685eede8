"""A re-drive that stalls (Redis retried with back-off, a long GC pause, a slow broker)
past the grace period after its claim, while another worker's re-drive claims the same
entries and decides them, produces nothing of what it decided: the claim is fenced
(`Ledger.fence`, checked and renewed right before the produce). On the memory stores
the backtest uses; tests/integration/dispatch/test_redrive_fence.py runs it on Redis.

- Worker A claims the task and reads the facts; the customer opts out of calls; A stalls.
  Worker B's re-drive claims the task, drops it `opt_out` and publishes its withdrawal.
  A resumes and, before, published the call the customer had opted out of, after its
  withdrawal: its confirm was a no-op (the entry dropped), its produce was not.
- The same for a lapsed carrier's moment A moved out of the group under its own id
  (`Leave`, pending again) before it stalled: B's re-drive claims that entry and
  decides it; A published it again (here the same content; with a channel A moved it
  to, whose mark A had not written yet, on another channel than B's).
- A that stalls before it moves the moment out (B moved it and sent it) never got as
  far: its `Leave` is refused (`_LEAVE` checks `M<carrier>`), and the moment left
  alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from moments.backtest import CollectingProducer
from sinks.base import Headers
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, Parking
from sinks.withdrawals import WITHDRAWALS_TOPIC

from .fakes import Clock
from .test_redrive_withdrawals_owed import opt_out
from .test_redriven_groups import CALL, CALL_LAPSES, SMS, START, merged
from .test_redriven_parked import GRACE_S, PRODUCED, TASK, call, notices

POLICY = DispatchPolicy.model_validate({"timezone": "UTC"})


def worker(clock: Clock, stores: DispatchStores) -> tuple[TaskSink, CollectingProducer]:
    """One worker on the shared stores, with its own producer."""
    producer = CollectingProducer(clock)
    sink = TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        POLICY,
        clock=clock,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    return sink, producer


def tasks_of(producer: CollectingProducer) -> list[tuple[str, list[str]]]:
    """Each task published, in order: its id and the ids in its `related`."""
    out = []
    for p in producer.sent:
        task: dict[str, Any] = orjson.loads(p.payload)
        out.append((str(task["task_id"]), [str(r["task_id"]) for r in task.get("related") or []]))
    return out


def stalls(
    sink: TaskSink, name: str, meanwhile: Callable[[], Awaitable[None]], after: bool = True
) -> None:
    """`sink.<name>` stalls: `meanwhile` runs after the call (`after`) or before it, as
    another worker's work landing while this one waits; once."""
    kept = getattr(sink, name)

    async def stalled(*args: Any, **kwargs: Any) -> Any:
        setattr(sink, name, kept)
        if not after:
            await meanwhile()
        got = await kept(*args, **kwargs)
        if after:
            await meanwhile()
        return got

    setattr(sink, name, stalled)


async def test_a_stalled_redrive_does_not_publish_a_task_another_redrive_dropped() -> None:
    """A's claim reads the facts at 12:01, then stalls; the customer opts out of calls
    and B's re-drive, past the grace period, drops the task and withdraws it. A
    publishes nothing; the task stays dropped."""
    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    a, produced_a = worker(clock, stores)
    b, produced_b = worker(clock, stores)
    await stores.ledger.claim([(TASK, task_bytes(call()))])  # its worker died
    clock.now += GRACE_S + 10

    async def b_redrives() -> None:
        clock.now += GRACE_S + 10
        await opt_out(b, clock.now - 5)
        assert await b.redrive(GRACE_S) == 1

    stalls(a, "_read_for", b_redrives)
    assert await a.redrive(GRACE_S) == 1
    assert notices(produced_b) == [(TASK, "opt_out")]
    assert tasks_of(produced_a) == []
    assert await stores.ledger.state(TASK) == "dropped"


async def test_a_stalled_redrive_does_not_publish_a_moment_it_moved_out_of_its_group() -> None:
    """The call lapsed (11:39) before its group was released (11:40), and the worker that
    released it died: the SMS moment goes out alone under its own id. A moves it out of
    the group (pending under its own id) and stalls; B's re-drive, past the grace period,
    claims it and sends it. A publishes it not again."""
    clock, stores, _, _ = await merged(sms_lasts=72, call_lasts=CALL_LAPSES)
    clock.now = START.timestamp() + 40 * 60
    assert len(await stores.deferral.release(clock.now, 10)) == 1  # then the crash
    clock.now += GRACE_S + 10
    a, produced_a = worker(clock, stores)
    b, produced_b = worker(clock, stores)

    async def b_redrives() -> None:
        assert await stores.ledger.state(SMS) == "pending"
        clock.now += GRACE_S + 10
        assert await b.redrive(GRACE_S) >= 1

    stalls(a, "_write", b_redrives, after=False)
    assert await a.redrive(GRACE_S) == 1
    assert tasks_of(produced_b) == [(SMS, [])]
    assert tasks_of(produced_a) == []
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "sent"]


async def test_a_redrive_stalled_before_it_moved_a_moment_out_leaves_it_alone() -> None:
    """As above, A stalling after its reads, before it moves the SMS moment out: B drops
    the call and sends the SMS moment; A's move out of the group is refused, and it
    publishes nothing."""
    clock, stores, _, _ = await merged(sms_lasts=72, call_lasts=CALL_LAPSES)
    clock.now = START.timestamp() + 40 * 60
    assert len(await stores.deferral.release(clock.now, 10)) == 1  # then the crash
    clock.now += GRACE_S + 10
    a, produced_a = worker(clock, stores)
    b, produced_b = worker(clock, stores)

    async def b_redrives() -> None:
        clock.now += GRACE_S + 10
        assert await b.redrive(GRACE_S) == 1

    stalls(a, "_read_for", b_redrives)
    assert await a.redrive(GRACE_S) == 1
    assert tasks_of(produced_b) == [(SMS, [])]
    assert tasks_of(produced_a) == []
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "sent"]


async def test_a_redrive_not_stalled_publishes_as_before() -> None:
    """The fence holds for a re-drive nobody overtook: the task goes out once, sent."""
    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    a, produced_a = worker(clock, stores)
    await stores.ledger.claim([(TASK, task_bytes(call()))])
    clock.now += GRACE_S + 10
    assert await a.redrive(GRACE_S) == 1
    assert tasks_of(produced_a) == [(TASK, [])]
    assert await stores.ledger.state(TASK) == "sent"


async def parked_and_due(clock: Clock, stores: DispatchStores) -> None:
    """The call was parked a minute (its worker decided it), and is due now."""
    await stores.ledger.claim([(TASK, task_bytes(call()))])
    parking = Parking(TASK, call().subscriber_id, b"", clock.now + 60, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    clock.now += 61


async def test_a_stalled_release_does_not_publish_a_task_another_redrive_dropped() -> None:
    """A's release takes the call (pending again) and reads the facts, then stalls; the
    customer opts out of calls, and B's re-drive, past the grace period, claims the entry,
    drops it `opt_out` and withdraws it. A publishes nothing; the task stays dropped.
    Before, nothing fenced the release: A published the call after its withdrawal."""
    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    a, produced_a = worker(clock, stores)
    b, produced_b = worker(clock, stores)
    await parked_and_due(clock, stores)

    async def b_redrives() -> None:
        clock.now += GRACE_S + 10
        await opt_out(b, clock.now - 5)
        assert await b.redrive(GRACE_S) == 1

    stalls(a, "_read_for", b_redrives)
    assert await a.release_due() == 1
    assert notices(produced_b) == [(TASK, "opt_out")]
    assert tasks_of(produced_a) == []
    assert await stores.ledger.state(TASK) == "dropped"


async def test_a_stalled_release_does_not_publish_a_task_another_redrive_sent() -> None:
    """As above with no opt-out: B's re-drive sends the call; A's release sends it not
    again (before, the same id went out twice)."""
    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    a, produced_a = worker(clock, stores)
    b, produced_b = worker(clock, stores)
    await parked_and_due(clock, stores)

    async def b_redrives() -> None:
        clock.now += GRACE_S + 10
        assert await b.redrive(GRACE_S) == 1

    stalls(a, "_read_for", b_redrives)
    assert await a.release_due() == 1
    assert tasks_of(produced_b) == [(TASK, [])]
    assert tasks_of(produced_a) == []
    assert await stores.ledger.state(TASK) == "sent"


async def test_a_release_of_a_task_a_redrive_parked_publishes_it() -> None:
    """A re-drive parked the call (its token kept a day); its release, nobody racing it,
    publishes it once: the release fences with its own token, not the re-drive's."""
    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    a, produced_a = worker(clock, stores)
    await stores.ledger.claim([(TASK, task_bytes(call()))])
    clock.now += GRACE_S + 10
    assert [i for i, _ in await stores.ledger.claim_stale(GRACE_S, token="R")] == [TASK]
    parking = Parking(TASK, call().subscriber_id, b"", clock.now + 60, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    clock.now += 61
    assert await a.release_due() == 1
    assert tasks_of(produced_a) == [(TASK, [])]
    assert await stores.ledger.state(TASK) == "sent"


async def test_a_release_not_stalled_publishes_as_before() -> None:
    """The release's fence holds when nobody overtook it: the call goes out once."""
    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    a, produced_a = worker(clock, stores)
    await parked_and_due(clock, stores)
    assert await a.release_due() == 1
    assert tasks_of(produced_a) == [(TASK, [])]
    assert await stores.ledger.state(TASK) == "sent"


class BrokerAway(CollectingProducer):
    """A worker's producer whose first task send waits for `away` first: the broker
    answering only once that is over (the produce retried, or a request that long)."""

    def __init__(self, clock: Clock, away: Callable[[], Awaitable[None]]) -> None:
        super().__init__(clock)
        self.away: Callable[[], Awaitable[None]] | None = away

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        if topic != WITHDRAWALS_TOPIC and self.away is not None:
            away, self.away = self.away, None
            await away()
        return await super().send(topic, value, key, partition, timestamp_ms, headers)


async def step(seconds: float) -> None:
    """The claim's renewal waits one turn of the loop, not `seconds`: the test moves the
    clock itself between the turns it gives."""
    await asyncio.sleep(0)


async def test_a_redrive_whose_produce_outlasts_the_grace_period_keeps_its_claim() -> None:
    """A's re-drive fences the call and produces it; the broker answers only three grace
    periods later. Meanwhile A renews its claim every third of the grace period, so B's
    re-drive, each time it looks, finds nothing stale: the call goes out once, A's,
    recorded as sent. Before, the fence re-scored the entry once: B's re-drive claimed it
    a grace period later and published it too, while A's produce was still on its way
    (the same id twice, or, had the customer opted out meanwhile, A's call landing after
    B's withdrawal of it)."""
    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    b, produced_b = worker(clock, stores)

    async def broker_away() -> None:
        for _ in range(9):  # three grace periods, a third at a time
            clock.now += GRACE_S / 3
            for _ in range(5):  # turns of the loop: A's renewal runs
                await asyncio.sleep(0)
            assert await b.redrive(GRACE_S) == 0

    produced_a = BrokerAway(clock, broker_away)
    a = TaskSink(
        produced_a,
        "tasks",
        stores,
        Metrics(),
        POLICY,
        clock=clock,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    a.sleep = step
    await stores.ledger.claim([(TASK, task_bytes(call()))])  # its worker died
    clock.now += GRACE_S + 10
    assert await a.redrive(GRACE_S) == 1
    assert tasks_of(produced_a) == [(TASK, [])]
    assert tasks_of(produced_b) == []
    assert await stores.ledger.state(TASK) == "sent"


async def test_a_redrive_whose_claim_was_taken_while_its_produce_was_retried_leaves_it() -> None:
    """A's produce of the call fails (the broker away) and is tried again; before the next
    try, another worker's re-drive claimed the entry (A could not renew its claim in
    time). A's renewal finds the claim gone: the try leaves the call out, and A records
    nothing of it. B's re-drive decides it and publishes it once. Before, A tried again
    with the call in it: published by both."""
    from aiokafka.errors import KafkaTimeoutError

    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    b, produced_b = worker(clock, stores)

    async def claimed_by_another_then_away() -> None:
        assert [i for i, _ in await stores.ledger.claim_stale(-1e9, token="B")] == [TASK]
        raise KafkaTimeoutError()

    produced_a = BrokerAway(clock, claimed_by_another_then_away)
    a = TaskSink(
        produced_a,
        "tasks",
        stores,
        Metrics(),
        POLICY,
        clock=clock,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    a.sleep = step
    await stores.ledger.claim([(TASK, task_bytes(call()))])  # its worker died
    clock.now += GRACE_S + 10
    assert await a.redrive(GRACE_S) == 1
    assert tasks_of(produced_a) == []
    assert await stores.ledger.state(TASK) == "pending"
    clock.now += GRACE_S + 10  # the other worker's claim lapsed too: re-driven again
    assert await b.redrive(GRACE_S) == 1
    assert tasks_of(produced_b) == [(TASK, [])]
    assert await stores.ledger.state(TASK) == "sent"
