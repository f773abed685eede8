"""A rolling upgrade: this version's workers read back tasks a newer version wrote into
the shared Redis (a field, a channel or a moment family this version does not know).
Each path does what it can with them: a re-drive or a release republishes a task with
the fields it does not know, and leaves one it cannot send to a newer worker (counted,
not read again at every re-drive); a withdrawal and an outcome still act on it."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from typing import Any, cast

import orjson
import pytest

from moments.enums import WithdrawReason
from moments.models import OutcomeStatus, ProfileEvent, ServiceTask, TaskOutcome
from moments.outcomes import handle_outcomes, retry_id
from moments.records import RawRecord
from sinks.ledger import TaskLedger
from sinks.payloads import task_bytes
from sinks.readback import NEWER_WAIT_S
from sinks.stores import Parking
from sinks.withdrawals import ProfileChange, profile_changes
from tests.integration.kafka_io import read_written, values

from .conftest import HOUR, NOW, MakeWorker, Worker, lose_claims_first_reply, published, task

pytestmark = pytest.mark.integration

SUB = "13900000801"


def tid(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


def as_newer(t: ServiceTask, moment: dict[str, Any] | None = None, **fields: Any) -> bytes:
    """`t` as a newer version could have written it: `fields` (and `moment`'s) set."""
    data = orjson.loads(task_bytes(t))
    data["moment"].update(moment or {})
    data.update(fields)
    return orjson.dumps(data)


def newer_read(w: Worker, path: str) -> float:
    return w.sample("moments_tasks_newer_version_total", kind=path)


async def sent_as_newer(w: Worker, t: ServiceTask, body: bytes) -> None:
    """`t` published and confirmed, its stored body then as a newer worker wrote it."""
    await w.send(t)
    ledger = cast(TaskLedger, w.ledger)
    assert await ledger.body(t.task_id) is not None
    await ledger.redis.set(ledger.body_key(t.task_id), body, keepttl=True)


class TestRedriveAndRelease:
    async def test_a_redrive_republishes_the_fields_a_newer_version_wrote(
        self, make_worker: MakeWorker
    ) -> None:
        """Pending after its worker (a newer version) died; re-driven by this version, it
        goes out with the fields this version does not know, not without them."""
        w = make_worker()
        t = task(tid("n1"), sub=SUB)
        extra = {"offer": {"code": "R5", "value": 5}}
        assert await w.ledger.claim([(t.task_id, as_newer(t, **extra))]) == [1]
        assert await w.sink.redrive(older_than=0) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["offer"]) == (t.task_id, extra["offer"])

    async def test_a_redrive_leaves_a_task_on_a_channel_it_does_not_know_to_a_newer_worker(
        self, make_worker: MakeWorker
    ) -> None:
        """Counted once and left pending; the next re-drives of this version do not read it
        again (every 30 s for as long as it lived before), a newer worker's takes it later."""
        w = make_worker()
        t = task(tid("n2"), sub=SUB)
        assert await w.ledger.claim([(t.task_id, as_newer(t, channel="wechat"))]) == [1]
        assert await w.sink.redrive(older_than=0) == 0
        assert await w.sink.redrive(older_than=0) == 0
        assert newer_read(w, "redrive") == 1
        assert await w.ledger.state(t.task_id) == "pending"
        later = await w.ledger.claim_stale(-NEWER_WAIT_S - 60)
        assert [i for i, _ in later] == [t.task_id]

    async def test_a_release_leaves_a_task_of_a_new_family_to_a_newer_worker(
        self, make_worker: MakeWorker
    ) -> None:
        w = make_worker()
        t = task(tid("n3"), sub=SUB, deliver_after=NOW, deferred="quiet_hours")
        body = as_newer(t, moment={"family": "loyalty"})
        assert await w.ledger.claim([(t.task_id, body)]) == [1]
        # Due by now, released at the wall clock: the entry goes pending then, where the
        # re-drive below would claim it but for the release leaving it to a newer worker
        # (released an hour ahead, it was pending an hour ahead and claimed by no re-drive).
        due = time.time() - 1
        parked = await w.sink.deferral.park_many([Parking(t.task_id, SUB, b"", due, 1800.0)])
        assert parked == [True]
        await w.sink.release_due()
        assert newer_read(w, "release") == 1
        assert await w.ledger.state(t.task_id) == "pending"
        assert await w.sink.redrive(older_than=0) == 0
        assert newer_read(w, "redrive") == 0  # not read again before a newer worker's turn


@pytest.mark.redis_only
class TestWithdrawalsAndOutcomes:
    async def test_an_opt_out_withdraws_a_task_of_a_family_this_version_does_not_know(
        self, make_worker: MakeWorker
    ) -> None:
        w = make_worker()
        w.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
        t = task(tid("n4"), sub=SUB)
        await sent_as_newer(w, t, as_newer(t, moment={"family": "loyalty"}))
        change = ProfileChange(SUB, WithdrawReason.OPT_OUT, NOW, frozenset({"sms"}))
        made = await w.sink.withdrawals.withdraw([change])
        assert [(m.task_id, m.channel) for m in made] == [(t.task_id, "sms")]
        assert newer_read(w, "withdrawal") == 1

    async def test_a_closed_line_withdraws_a_task_on_a_channel_this_version_does_not_know(
        self, make_worker: MakeWorker
    ) -> None:
        """The notice names the task's channel as the task did."""
        w = make_worker()
        w.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
        t = task(tid("n5"), sub=SUB)
        await sent_as_newer(w, t, as_newer(t, channel="wechat"))
        await w.sink.withdrawals.withdraw([ProfileChange(SUB, WithdrawReason.CLOSED, NOW)])
        notices = values(await read_written(w.settings, "task_withdrawals", at_least=1))
        assert [(n["task_id"], n["channel"], n["reason"]) for n in notices] == [
            (t.task_id, "wechat", "closed")
        ]

    @pytest.mark.parametrize("written", ["wechat", "WeChat"])
    async def test_an_opt_out_of_a_channel_this_version_does_not_know_is_acted_on(
        self, make_worker: MakeWorker, written: str
    ) -> None:
        """Read by this version's worker, `opt_out: ["wechat"]` withdraws the task a newer
        worker published on it, and is recorded where a newer worker's confirm reads it: a
        task it sends on the channel after is found void, for it to withdraw (the update
        withdrew nothing and recorded nothing: the customer was contacted on the channel
        they had just refused). Written `WeChat` too: compared as written, it did neither."""
        w = make_worker()
        w.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
        t = task(tid("n8"), sub=SUB)
        await sent_as_newer(w, t, as_newer(t, channel="wechat"))
        update = ProfileEvent.model_validate(
            {"event_id": "p8", "subscriber_id": SUB, "occurred_at": NOW, "opt_out": [written]}
        )
        await w.sink.subscribers.record_facts([update])
        made = await w.sink.withdrawals.withdraw(profile_changes([update]))
        assert [(m.task_id, m.channel, m.reason) for m in made] == [
            (t.task_id, "wechat", WithdrawReason.OPT_OUT)
        ]
        after = task(tid("n9"), sub=SUB)
        assert await w.ledger.claim([(after.task_id, as_newer(after, channel="wechat"))]) == [1]
        expires = (NOW + HOUR).timestamp()
        void = await w.ledger.confirm(
            [after.task_id],
            awaiting={after.task_id: ("wechat", expires)},
            subscribers={after.task_id: SUB},
            made={after.task_id: NOW.timestamp()},
        )
        assert void == {after.task_id: (WithdrawReason.OPT_OUT, NOW.timestamp())}
        # Opted into again, read by this version too (it writes no `opt_in:wechat`): the
        # update's `opt_list` says so, and the next task on the channel is not void.
        back = update.model_copy(update={"occurred_at": NOW + HOUR / 60, "opt_out": []})
        await w.sink.subscribers.record_facts([back])
        later = task(tid("n10"), sub=SUB)
        assert await w.ledger.claim([(later.task_id, as_newer(later, channel="wechat"))]) == [1]
        void = await w.ledger.confirm(
            [later.task_id],
            awaiting={later.task_id: ("wechat", expires)},
            subscribers={later.task_id: SUB},
            made={later.task_id: NOW.timestamp()},
        )
        assert void == {}

    async def test_a_decline_of_a_task_on_a_channel_this_version_does_not_know_is_applied(
        self, make_worker: MakeWorker
    ) -> None:
        """Counted by its moment type and its rule suppressed for the subscriber, as a
        task this version knows (it was counted `unknown` and applied to nobody)."""
        w = make_worker()
        t = task(tid("n6"), sub=SUB, moment_type="low_balance")
        await sent_as_newer(w, t, as_newer(t, channel="wechat"))
        declined = TaskOutcome(
            task_id=t.task_id, subscriber_id=SUB, status=OutcomeStatus.DECLINED, occurred_at=NOW
        )
        record = RawRecord("o", 0, 0, SUB.encode(), declined.model_dump_json().encode())
        result = await handle_outcomes([record], w.sink)
        assert (result.handled, result.declined) == (1, 1)
        labels = {"moment_type": "low_balance", "status": "declined"}
        assert w.sample("moments_task_outcomes_total", **labels) == 1
        assert await w.sink.declines.suppressed(SUB, "low_balance")
        assert newer_read(w, "outcome") == 1

    async def test_an_unreachable_task_on_a_channel_this_version_does_not_know_is_retried(
        self, make_worker: MakeWorker
    ) -> None:
        """Its retry is made from the body the newer version stored (its channel and the
        fields this version does not know kept) and parked until due, never routed here
        (this version cannot send on the channel). Released by this version's worker, it is
        left to a newer one (`NEWER_WAIT_S`), which re-drives it then. No retry was made:
        the customer the newer version could not reach was not tried again. Read again,
        the outcome queues nothing more."""
        w = make_worker()
        t = task(tid("n7"), sub=SUB, expires_at=NOW + 24 * HOUR)
        offer = {"code": "R5", "value": 5}
        await sent_as_newer(w, t, as_newer(t, channel="wechat", offer=offer))
        unreachable = TaskOutcome(
            task_id=t.task_id, subscriber_id=SUB, status=OutcomeStatus.UNREACHABLE, occurred_at=NOW
        )
        record = RawRecord("o", 0, 0, SUB.encode(), unreachable.model_dump_json().encode())
        result = await handle_outcomes([record], w.sink, now=NOW)
        retry = retry_id(t.task_id, 1)
        assert (result.handled, result.retries) == (1, [retry])
        due = (NOW + w.sink.policy.outcomes.unreachable_retry_after).timestamp()
        assert await w.sink.deferral.due_at(retry) == due
        assert w.sample("moments_tasks_deferred_total", reason="unreachable_retry") == 1
        again = await handle_outcomes([record], w.sink, now=NOW)
        assert (again.handled, again.retries) == (1, [retry])  # the same id: nothing new
        assert await w.sink.deferral.waiting() == 1
        await w.sink.release_due(now=due + 1)
        assert newer_read(w, "release") == 1
        assert await w.ledger.state(retry) == "pending"
        [(taken, payload)] = await w.ledger.claim_stale(-NEWER_WAIT_S - 60)
        body = orjson.loads(payload)
        assert (taken, body["channel"], body["offer"]) == (retry, "wechat", offer)
        assert (body["retry_of"], body["attempt"], body["deferred"]["reason"]) == (
            t.task_id,
            1,
            "unreachable_retry",
        )
        assert dt.datetime.fromisoformat(body["deliver_after"]).timestamp() == due
        assert "counted" not in body

    async def test_a_retry_whose_claim_reply_was_lost_after_it_ran_is_parked(
        self, make_worker: MakeWorker
    ) -> None:
        """The claim of the retry runs, then its reply is lost; the claim retried
        (`with_retry`) takes the entry its first try wrote as its own (`ClaimCall`) and
        parks the retry until due. Read as another worker's, it was left pending, not
        parked: re-driven a grace period later, its due time not kept."""
        w = make_worker()
        t = task(tid("n9"), sub=SUB, expires_at=NOW + 24 * HOUR)
        await sent_as_newer(w, t, as_newer(t, channel="wechat"))
        lost = lose_claims_first_reply(w)
        unreachable = TaskOutcome(
            task_id=t.task_id, subscriber_id=SUB, status=OutcomeStatus.UNREACHABLE, occurred_at=NOW
        )
        record = RawRecord("o", 0, 0, SUB.encode(), unreachable.model_dump_json().encode())
        result = await handle_outcomes([record], w.sink, now=NOW)
        assert lost
        retry = retry_id(t.task_id, 1)
        assert (result.handled, result.retries) == (1, [retry])
        due = (NOW + w.sink.policy.outcomes.unreachable_retry_after).timestamp()
        assert await w.sink.deferral.due_at(retry) == due
        assert w.sample("moments_tasks_deferred_total", reason="unreachable_retry") == 1

    async def test_a_retry_racing_a_tombstone_is_dropped_not_parked(
        self, make_worker: MakeWorker
    ) -> None:
        """The tombstone applied after the batch's look at the erasure marks: the park
        reads the mark in the same step (on Redis, in its script) and parks nothing; the
        retry is dropped `forgotten` at once. It waited with the erased subscriber's
        payload until its release time, in a `waiting:` index written after the erasure."""
        w = make_worker()
        t = task(tid("n8"), sub=SUB, expires_at=NOW + 24 * HOUR)
        await sent_as_newer(w, t, as_newer(t, channel="wechat"))
        subscribers, applied = w.sink.subscribers, list[str]()
        looked = subscribers.forgotten_tasks

        async def look_then_tombstone(tasks: Sequence[ServiceTask]) -> set[str]:
            found = await looked(tasks)
            if not applied:
                applied.append(SUB)
                await subscribers.forget([SUB], ["first_international_roaming"])
            return found

        subscribers.forgotten_tasks = look_then_tombstone  # type: ignore[method-assign]
        unreachable = TaskOutcome(
            task_id=t.task_id, subscriber_id=SUB, status=OutcomeStatus.UNREACHABLE, occurred_at=NOW
        )
        record = RawRecord("o", 0, 0, SUB.encode(), unreachable.model_dump_json().encode())
        result = await handle_outcomes([record], w.sink, now=NOW)
        retry = retry_id(t.task_id, 1)
        assert applied == [SUB]
        assert (result.retries, result.forgotten) == ([], 1)
        assert await w.sink.deferral.waiting() == 0
        assert await w.ledger.state(retry) == "dropped"
        assert w.sample("moments_tasks_deferred_total", reason="unreachable_retry") == 0
        if isinstance(w.ledger, TaskLedger):
            redis, prefix = w.ledger.redis, w.ledger.prefix
            assert await redis.exists(f"{prefix}waiting:{SUB}") == 0
            assert await redis.zcard(w.ledger.pending_key) == 0
