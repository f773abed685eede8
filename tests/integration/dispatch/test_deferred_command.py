"""`moments tasks deferred`: the tasks waiting in the deferral queue, parked through the
real `DeferralQueue`, listed by the command's function and its CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis.asyncio.connection

from moments.deferred import deferred_tasks
from moments.enums import Channel
from moments.models import RelatedMoment, ServiceTask
from sinks.deferral import DeferralQueue
from sinks.ledger import TaskLedger
from sinks.payloads import task_bytes
from sinks.stores import Joining
from tests.integration.conftest import settings_env, tasks_command

from .conftest import HOUR, NOW, Worker, task

pytestmark = pytest.mark.integration
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
"""The default dispatch policy's zone (Asia/Shanghai: no daylight saving)."""


def tid(name: str) -> str:
    return hashlib.blake2b(f"deferred-{name}".encode(), digest_size=16).hexdigest()


def deferred_command(w: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return tasks_command(w.settings, "deferred", *args)


@pytest.mark.redis_only
async def test_lists_the_waiting_tasks_by_due_time_with_filters_and_counts(
    make_worker: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = make_worker()
    ledger, queue = w.ledger, w.sink.deferral
    assert isinstance(ledger, TaskLedger)
    assert isinstance(queue, DeferralQueue)
    parked = [  # (name, subscriber, moment type, reason, due in hours)
        ("q1", "13800138001", "low_balance", "quiet_hours", 3),
        ("q2", "13800138002", "bill_shock", "quiet_hours", 1),
        ("c1", "13800138003", "low_balance", "capacity", 2),
    ]
    for name, sub, moment_type, reason, hours in parked:
        due = NOW + hours * HOUR
        t = task(tid(name), sub, moment_type=moment_type, deliver_after=due, deferred=reason)
        payload = task_bytes(t)
        assert await ledger.claim([(t.task_id, payload)]) == [1]
        assert await queue.park(t.task_id, sub, payload, due.timestamp(), 60.0)

    now = NOW.timestamp()
    listing = await deferred_tasks(queue)
    assert [t.task_id for t in listing.tasks] == [tid("q2"), tid("c1"), tid("q1")]
    assert listing.by_reason == {"quiet_hours": 2, "capacity": 1}
    first = listing.tasks[0].as_json(now, SHANGHAI)
    assert first == {
        "task_id": tid("q2"),
        "moment_type": "bill_shock",
        "channel": "sms",
        "subscriber_id": "138****8002",
        "reason": "quiet_hours",
        "due_at": (NOW + HOUR).astimezone(SHANGHAI).isoformat(),
        "waited_seconds": 0,
        "merged": 0,
        "moment_types": ["bill_shock"],
    }
    only = await deferred_tasks(queue, reasons=["quiet_hours"], moment_types=["low_balance"])
    assert [t.task_id for t in only.tasks] == [tid("q1")]
    assert (listing.complete, listing.waiting) == (True, 3)
    monkeypatch.setattr("moments.deferred.PAGE", 2)  # pages of 2: the limit across pages
    for limit in (1, 2):  # the first page holds them: the rest of the queue is not read
        cut = await deferred_tasks(queue, limit=limit)
        assert cut.tasks == listing.tasks[:limit]
        assert (cut.matched, cut.complete, cut.waiting) == (2, False, 3)
    for limit in (0, 3):  # read to the end: every task counted
        whole = await deferred_tasks(queue, limit=limit)
        assert (whole.tasks, whole.matched, whole.complete) == (listing.tasks, 3, True)
    monkeypatch.undo()

    proc = await asyncio.to_thread(deferred_command, w, "--json", "--reason", "quiet_hours")
    assert proc.returncode == 0, proc.stderr
    rows = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["task_id"], r["reason"]) for r in rows] == [
        (tid("q2"), "quiet_hours"),
        (tid("q1"), "quiet_hours"),
    ]
    assert rows[1]["due_at"] == (NOW + 3 * HOUR).astimezone(SHANGHAI).isoformat()
    assert "2 task(s) waiting (quiet_hours 2)" in proc.stderr

    proc = await asyncio.to_thread(deferred_command, w, "--limit", "1")
    assert proc.returncode == 0, proc.stderr
    assert tid("q2") in proc.stdout
    assert "138****8002" in proc.stdout
    assert (NOW + HOUR).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") in proc.stdout
    assert tid("c1") not in proc.stdout
    assert "13800138002" not in proc.stdout
    # Piped, plain columns (a rich table took 35 s to draw 50,000 rows): one line a row.
    header, row = proc.stdout.splitlines()
    assert header.split()[:4] == ["task", "id", "moment", "type"]
    assert row.split()[:4] == [tid("q2"), "bill_shock", "sms", "138****8002"]
    assert row.index("bill_shock") == header.index("moment type")
    # The queue fits a page: read whole, so counted whole.
    assert "3 task(s) waiting (capacity 1, quiet_hours 2); 2 more not listed" in proc.stderr

    proc = await asyncio.to_thread(deferred_command, w, "--moment-type", "nothing_such")
    assert (proc.returncode, proc.stdout) == (0, "")
    assert "none of the 3 task(s) waiting in the deferral queue is of the" in proc.stderr
    assert (  # the catalog's (MOMENTS_RULES unset) closest type, and the types that wait
        "no task of moment type 'nothing_such' waits and no rule in force (MOMENTS_RULES) "
        "makes that type (`moments rules explain` lists the rules and their types); "
        "waiting: bill_shock 1, low_balance 2"
    ) in proc.stderr
    proc = await asyncio.to_thread(deferred_command, w, "--moment-type", "low_balanse")
    assert "did you mean 'low_balance'?; waiting: bill_shock 1, low_balance 2" in proc.stderr
    # Listing wrote nothing: every task still waits.
    assert await queue.waiting() == 3
    assert {await ledger.state(tid(n)) for n, *_ in parked} == {"deferred"}

    # Due and ranked, not released yet (its score then -1 minus its due time): listed at
    # its due time all the same; the released one leaves the list.
    released = await queue.release(now=(NOW + 2.5 * HOUR).timestamp(), limit=1)
    assert [r.task_id for r in released] in ([tid("q2")], [tid("c1")])
    ranked = tid("c1") if released[0].task_id == tid("q2") else tid("q2")
    assert (await queue.redis.zscore(queue.key, ranked) or 0) < 0
    left = await deferred_tasks(queue)
    gone = released[0].task_id
    assert [(t.task_id, t.due_at) for t in left.tasks] == [
        (t.task_id, t.due_at) for t in listing.tasks if t.task_id != gone
    ]
    assert left.by_reason == Counter(t.reason for t in listing.tasks if t.task_id != gone)


@pytest.mark.redis_only
async def test_an_unreachable_redis_names_the_variable(
    make_worker: Callable[..., Worker],
) -> None:
    w = make_worker()
    env = {**settings_env(w.settings), "MOMENTS_REDIS_URL": "redis://127.0.0.1:1/0"}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "moments", "tasks", "deferred"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "the deferral queue is kept there" in proc.stderr
    assert "set MOMENTS_REDIS_URL" in proc.stderr


@pytest.mark.redis_only
async def test_a_merged_task_says_how_many_moments_it_carries(
    make_worker: Callable[..., Worker],
) -> None:
    """A task that later moments of its subscriber joined (the merge window) showed its
    own moment only: it says how many were merged into it."""
    w = make_worker()
    ledger, queue = w.ledger, w.sink.deferral
    assert isinstance(ledger, TaskLedger)
    assert isinstance(queue, DeferralQueue)
    sub, due = "13800138009", NOW + HOUR
    carrier = task(tid("carrier"), sub, deliver_after=due, deferred="merge_window")
    members = [task(tid(f"m{i}"), sub, moment_type="bill_shock") for i in range(2)]
    alone = task(tid("alone"), "13800138010", deliver_after=due + HOUR, deferred="quiet_hours")
    for t in (carrier, alone):
        assert await ledger.claim([(t.task_id, task_bytes(t))]) == [1]
        assert await queue.park(
            t.task_id, t.subscriber_id, task_bytes(t), t.deliver_after.timestamp(), 600.0
        )
    for m in members:
        assert await ledger.claim([(m.task_id, task_bytes(m))]) == [1]
    joined = await queue.join_many([Joining(m.task_id, sub, task_bytes(m)) for m in members])
    assert joined == [carrier.task_id] * 2

    listing = await deferred_tasks(queue)
    assert [(t.task_id, t.merged) for t in listing.tasks] == [
        (carrier.task_id, 2),
        (alone.task_id, 0),
    ]
    zone = dt.UTC
    assert listing.tasks[0].as_json(NOW.timestamp(), zone)["merged"] == 2
    assert listing.tasks[0].row(NOW.timestamp(), zone)[2] == "+2"

    proc = await asyncio.to_thread(deferred_command, w, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [orjson.loads(line) for line in proc.stdout.splitlines()]
    own = carrier.moment.type
    assert [(r["task_id"], r["merged"], r["moment_types"]) for r in rows] == [
        (carrier.task_id, 2, [own, "bill_shock"]),
        (alone.task_id, 0, [alone.moment.type]),
    ]


async def _park(w: Worker, *tasks: ServiceTask) -> None:
    """Park each of `tasks` until its `deliver_after`, as dispatch parks a task it holds."""
    ledger, queue = w.ledger, w.sink.deferral
    assert isinstance(ledger, TaskLedger)
    assert isinstance(queue, DeferralQueue)
    for t in tasks:
        assert await ledger.claim([(t.task_id, task_bytes(t))]) == [1]
        assert await queue.park(
            t.task_id, t.subscriber_id, task_bytes(t), t.deliver_after.timestamp(), 600.0
        )


@pytest.mark.redis_only
async def test_a_whole_listing_sends_few_commands_whatever_the_queue_holds(
    make_worker: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--limit 0` counted each listed task's merge group with a command of its own (a
    pipeline of LLENs, which redis-py packs and parses one by one: seconds for a night's
    queue); the sizes come in one script call per 1,000 tasks."""
    w = make_worker()
    queue = w.sink.deferral
    assert isinstance(queue, DeferralQueue)
    due = NOW + HOUR
    waiting = [
        task(tid(f"many{i}"), f"1380013{i:04d}", deliver_after=due, deferred="quiet_hours")
        for i in range(40)
    ]
    await _park(w, *waiting)
    sent: list[str] = []
    pack = redis.asyncio.connection.AbstractConnection.pack_command

    def counted(self: redis.asyncio.connection.AbstractConnection, *args: Any) -> Any:
        sent.append(str(args[0]))
        return pack(self, *args)

    monkeypatch.setattr(redis.asyncio.connection.AbstractConnection, "pack_command", counted)
    listing = await deferred_tasks(queue, limit=0)
    monkeypatch.undo()
    assert len(listing.tasks) == 40
    assert len(sent) <= 8, sent  # ZCARD, a page of each part, an MGET, the sizes (+ a load)
    assert "LLEN" not in sent


@pytest.mark.redis_only
async def test_a_moment_type_matches_a_task_carrying_a_moment_of_it(
    make_worker: Callable[..., Worker],
) -> None:
    """A merged task carries several moments, listed under its own moment's type:
    `--moment-type` of a merged moment's type found no task (and said no such task
    waits). It matches a task any of whose moments is of the type: its own, one merged
    into it while it waits, or one merged before it was parked again (`related`)."""
    w = make_worker()
    queue = w.sink.deferral
    assert isinstance(queue, DeferralQueue)
    sub, due = "13800138019", NOW + HOUR
    carrier = task(tid("carrier-t"), sub, deliver_after=due, deferred="merge_window")
    alone = task(tid("alone-t"), "13800138020", deliver_after=due + HOUR, deferred="quiet_hours")
    member = task(tid("member-t"), sub, moment_type="bill_shock")
    reparked = task(
        tid("reparked-t"), "13800138021", deliver_after=due + 2 * HOUR, deferred="capacity"
    ).model_copy(
        update={
            "related": [
                RelatedMoment(
                    task_id=tid("earlier-t"),
                    moment=member.moment.model_copy(update={"type": "low_balance"}),
                    priority=3,
                    channel=Channel.SMS,
                    action="act",
                    triggered_at=NOW,
                    evidence=["ev-earlier"],
                )
            ]
        }
    )
    await _park(w, carrier, alone, reparked)
    ledger = w.ledger
    assert isinstance(ledger, TaskLedger)
    assert await ledger.claim([(member.task_id, task_bytes(member))]) == [1]
    joined = await queue.join_many([Joining(member.task_id, sub, task_bytes(member))])
    assert joined == [carrier.task_id]

    found = await deferred_tasks(queue, moment_types=["bill_shock"])
    assert [(t.task_id, t.moment_type, t.merged) for t in found.tasks] == [
        (carrier.task_id, "first_international_roaming", 1)
    ]
    assert found.tasks[0].moment_types == ("first_international_roaming", "bill_shock")
    assert found.by_reason == {"merge_window": 1}
    found = await deferred_tasks(queue, moment_types=["low_balance"])
    assert [t.task_id for t in found.tasks] == [reparked.task_id]
    found = await deferred_tasks(queue, moment_types=["first_international_roaming"])
    assert [t.task_id for t in found.tasks] == [carrier.task_id, alone.task_id, reparked.task_id]

    proc = await asyncio.to_thread(deferred_command, w, "--json", "--moment-type", "bill_shock")
    assert proc.returncode == 0, proc.stderr
    assert [orjson.loads(line)["task_id"] for line in proc.stdout.splitlines()] == [carrier.task_id]
    assert "1 task(s) waiting (merge_window 1)" in proc.stderr
    assert "no task of moment type" not in proc.stderr
