"""sinks.payloads.Payloads: a task's JSON made once, and sent only when the ledger lacks it;
`Decoded`: stored payloads read back once."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from pydantic import ValidationError

from moments.backtest import CollectingProducer
from moments.models import (
    Channel,
    Deferral,
    Family,
    Moment,
    QuietHours,
    RelatedMoment,
    ServiceTask,
)
from moments.outcomes import retry_task
from sinks.dispatch import TaskSink
from sinks.legacy import no_ttl
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.payloads import (
    Decoded,
    Payloads,
    counted_payload,
    newer_retry,
    newer_task,
    task_bytes,
)
from sinks.policy import DispatchPolicy
from sinks.readback import stored_candidate

from .fakes import Clock

NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)


def a_task() -> ServiceTask:
    return ServiceTask(
        task_id="t1",
        subscriber_id="13800138001",
        moment=Moment(
            family=Family.FIRST_TIME, type="m", rule_id="m", rule_version=1, description="d"
        ),
        priority=3,
        channel=Channel.SMS,
        action="act",
        triggered_at=NOW,
        created_at=NOW,
        deliver_after=NOW,
        expires_at=NOW + dt.timedelta(days=1),
        evidence=["e1"],
    )


def test_the_same_object_is_serialised_once_and_a_copy_on_its_own() -> None:
    payloads = Payloads()
    task = a_task()
    first = payloads.of(task)
    assert first == task_bytes(task)
    assert payloads.of(task) is first  # cached by identity
    later = task.model_copy(update={"deferred": Deferral(reason="capacity", until=NOW)})
    assert payloads.of(later) == task_bytes(later) != first  # same id, other bytes


def a_full_task() -> ServiceTask:
    """A task with every part a payload may hold: params of floats large and small, text
    with control characters, a line separator and characters beyond the BMP, a merged
    moment, a deferral, quiet hours with their channels, times in two offsets, counted."""
    east = dt.timezone(dt.timedelta(hours=8))
    moment = Moment(
        family=Family.ANOMALY,
        type="bill_shock",
        rule_id="bill_shock",
        rule_version=3,
        description='Bill up 250% "x" \\ </script> \u2028 é 😀 \x00\x1f\t',
        params={"ratio": 2.5e-05, "big": 1e16, "spend": 123456789.123, "n": 7, "none": None},
    )
    return a_task().model_copy(
        update={
            "moment": moment,
            "triggered_at": NOW.astimezone(east),
            "related": [
                RelatedMoment(
                    task_id="t0",
                    moment=moment,
                    priority=2,
                    channel=Channel.OUTBOUND_CALL,
                    action="call",
                    triggered_at=NOW.astimezone(east),
                    expires_at=NOW + dt.timedelta(hours=3),
                    evidence=["e0"],
                )
            ],
            "deferred": Deferral(reason="quiet_hours", until=NOW + dt.timedelta(hours=2)),
            "quiet_hours": QuietHours(
                zone="Asia/Shanghai", windows=["22:00-08:00"], channels=[Channel.SMS]
            ),
            "counted": True,
        }
    )


@pytest.mark.parametrize("counted", [False, True])
def test_a_payload_is_the_json_mode_dump_through_orjson(counted: bool) -> None:
    """The bytes the ledger, the deferral queue and the tasks topic hold: what the model's
    JSON-mode dict gave through orjson (`counted` last, only when set), so payloads
    stored by an older worker read back and compare the same."""
    task = a_full_task().model_copy(update={"counted": counted})
    data = task.model_dump(mode="json")
    if counted:
        data["counted"] = True
    assert task_bytes(task) == orjson.dumps(data)
    assert ServiceTask.model_validate_json(task_bytes(task)) == task


def test_a_payload_is_written_without_a_dict_of_the_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Written straight to bytes: a dict of every field, made and dropped at each claim and
    publish, cost the backtest's dispatch more than any other step of its own."""

    def no_dict(*args: object, **kwargs: object) -> None:
        raise AssertionError("task_bytes made a dict of the task")

    expected = task_bytes(a_full_task())
    monkeypatch.setattr(ServiceTask, "model_dump", no_dict)
    assert task_bytes(a_full_task()) == expected


def test_the_counted_payload_made_from_the_bytes_is_the_counted_tasks_own() -> None:
    """What a takeover's entry holds (made from the claim's payload, by the ledger's Lua
    and its memory twin) is the payload of the task marked counted, read back so."""
    task = a_task()
    counted = task.model_copy(update={"counted": True})
    assert counted_payload(task_bytes(task)) == task_bytes(counted)
    assert ServiceTask.model_validate_json(counted_payload(task_bytes(task))).counted
    assert counted_payload(b"{}") == b"{}"


def test_only_the_object_the_ledger_holds_goes_as_empty() -> None:
    payloads = Payloads()
    task = a_task()
    assert payloads.unless_stored(task) == task_bytes(task)
    payloads.stored(task)
    assert payloads.unless_stored(task) == b""
    merged = task.model_copy(update={"evidence": ["e1", "e2"]})
    assert payloads.unless_stored(merged) == task_bytes(merged)  # changed: sent in full
    payloads.clear()
    assert payloads.unless_stored(task) == task_bytes(task)


def test_a_stored_payload_is_read_back_once_and_its_json_made_once() -> None:
    decoded = Decoded(size=2)
    stored = task_bytes(a_task())
    task = decoded.task(stored)
    assert task == ServiceTask.model_validate_json(stored)
    assert decoded.task(bytes(stored)) is task  # equal bytes, not the same object
    assert decoded.own(task) == stored
    assert decoded.own(task) is decoded.own(task)
    payloads = Payloads(decoded)
    assert payloads.of(task) is decoded.own(task)
    other = task.model_copy(update={"priority": 1})
    assert decoded.own(other) == task_bytes(other)  # not kept: made each time


def test_read_back_tasks_are_bounded_oldest_first() -> None:
    decoded = Decoded(size=2)
    payloads = [task_bytes(a_task().model_copy(update={"task_id": f"t{i}"})) for i in range(3)]
    first, second, _ = (decoded.task(p) for p in payloads)
    assert decoded.task(payloads[1]) is second
    assert decoded.task(payloads[0]) is not first  # evicted by the third, read again
    assert decoded.task(payloads[0]) == first


def test_an_unknown_payload_fails_as_the_model_does() -> None:
    with pytest.raises(ValidationError):
        Decoded().task(b'{"task_id": "t1"}')


def test_a_group_holding_the_same_payload_twice_reads_back_a_task_apiece() -> None:
    """Moments are told apart by identity (`CapacityFitting.fit`, `_kept`): one object
    served twice in a group would be one moment, even when the bytes were read back (and
    kept) before."""
    decoded = Decoded()  # the sink's cache of tasks read back
    carrier = task_bytes(a_task())
    member = task_bytes(a_task().model_copy(update={"task_id": "t2", "moment_id": "t2"}))
    once = stored_candidate("t1", [carrier, member], decoded, no_ttl)
    assert once is not None
    twice = stored_candidate("t1", [carrier, member, member], decoded, no_ttl)
    assert twice is not None
    assert len({id(t) for t in twice.tasks}) == 3
    assert [t.task_id for t in twice.tasks] == ["t1", "t2", "t2"]
    # The cache still serves the pair.
    again = stored_candidate("t1", [carrier, member], decoded, no_ttl)
    assert again is not None
    assert [id(t) for t in again.tasks] == [id(t) for t in once.tasks]


def kept(decoded: Decoded) -> list[str]:
    """The subscribers whose tasks the cache holds, one per entry."""
    return sorted(t.subscriber_id for t in decoded._tasks.values())


def test_forgetting_subscribers_lets_go_of_their_tasks_only() -> None:
    decoded = Decoded(size=8)
    theirs = [a_task().model_copy(update={"task_id": f"t{i}"}) for i in range(2)]
    other = a_task().model_copy(update={"task_id": "o1", "subscriber_id": "13900139002"})
    for t in [*theirs, other]:
        decoded.own(decoded.task(task_bytes(t)))
    assert kept(decoded) == ["13800138001", "13800138001", "13900139002"]
    assert decoded.forget(["13800138001", "13700137003"]) == 2
    assert kept(decoded) == ["13900139002"]
    assert decoded.own(decoded.task(task_bytes(other))) == task_bytes(other)  # still kept
    again = decoded.task(task_bytes(theirs[0]))  # read back anew, as a fresh entry
    assert again == theirs[0]
    assert decoded.own(again) == task_bytes(theirs[0])


async def test_an_erased_subscribers_waiting_task_leaves_the_sinks_memory() -> None:
    """The cache of tasks read back kept an erased subscriber's task (~15 kB of their
    data) until 1,024 others pushed it out: on a quiet worker, for hours. Erased, it
    goes at once, and again when the tombstone reads the task back to drop it as
    forgotten (taken out of the queue, not left to its release)."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    sink = TaskSink(
        CollectingProducer(clock),
        "tasks",
        stores,
        Metrics(),
        DispatchPolicy(),
        clock=clock,
    )
    waits = a_task().model_copy(
        update={"deferred": Deferral(reason="suspended", until=NOW + dt.timedelta(days=1))}
    )
    sink.add(waits)
    await sink.flush()  # its line suspended: it waits
    clock.now = await stores.deferral.due_at("t1") or 0
    assert await sink.release_due() == 1  # looked at: read back, kept
    assert kept(sink._decoded) == ["13800138001"]
    await sink.subscribers.forget(["13800138001"], [])
    assert await stores.ledger.state("t1") == "dropped"
    assert await stores.deferral.due_at("t1") is None
    assert kept(sink._decoded) == []


async def test_the_retry_of_a_task_sent_counted_counts_its_own_drop() -> None:
    """A task made again that took over its first one's dropped entry is sent marked
    `counted` in the body the ledger keeps for its outcomes (dispatch's own: its consumer
    sees no such field). An `unreachable` made its retry from that body, `counted` and
    all: a retry dropped (expired, capped, no capacity) counted no suppression, though
    the retry of any other task counts its drop."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock, ttl_seconds=864000)
    metrics = Metrics()
    producer = CollectingProducer(clock)
    sink = TaskSink(producer, "tasks", stores, metrics, DispatchPolicy(), clock=clock)
    await stores.ledger.claim([("t1", b"{}")])
    await stores.ledger.drop_many([("t1", "expired")], keep_until={"t1": clock.now - 3600})
    sink.add(a_task(), rejudged=True)
    await sink.flush()
    assert await stores.ledger.state("t1") == "sent"
    (sent,) = producer.sent
    assert b"counted" not in sent.payload
    body = await stores.ledger.body("t1")
    assert body is not None
    retry = retry_task(
        ServiceTask.model_validate_json(body), NOW, dt.timedelta(hours=1), max_retries=2
    )
    assert retry is not None
    assert not retry.counted
    clock.now = retry.expires_at.timestamp() + 1  # read too late: dropped as expired
    await sink.dispatch([retry])
    suppressed = {
        (s.labels["moment_type"], s.labels["reason"]): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "moments_tasks_suppressed_total"
    }
    assert suppressed == {("m", "expired"): 1}


def test_a_retry_of_a_task_a_newer_version_wrote_is_the_retry_of_one_this_version_knows() -> None:
    """Made from the body that version stored (`newer_retry`), it is what `retry_task` makes
    of the same task this version knows, but for what that version wrote that this one
    does not know (its channel, a field), kept: every field a retry changes is set, and
    `counted` cleared (`RETRY_FIELDS` lagging `retry_task` would park the retry with the
    first attempt's id, or due at the first attempt's time)."""
    known = a_task().model_copy(update={"counted": True})
    extra = {"channel": "wechat", "offer": {"code": "R5"}}
    body = orjson.dumps({**orjson.loads(task_bytes(known)), **extra})
    with pytest.raises(ValidationError) as refused:
        ServiceTask.model_validate_json(body)
    read = newer_task(body, refused.value)
    assert read is not None
    after = dt.timedelta(hours=2)
    retry = retry_task(read, NOW, after, 3)
    assert retry is not None
    made = orjson.loads(newer_retry(body, retry))
    expected = retry_task(known, NOW, after, 3)
    assert expected is not None
    assert made == {**orjson.loads(task_bytes(expected)), **extra}
