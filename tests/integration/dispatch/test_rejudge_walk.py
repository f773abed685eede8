"""The re-judge of a changed timetable (`DeferralQueue.rejudge`) on a real Redis: it walks
the `hours` and `nextday` indexes in chunks, one script call each, so that a night's
queue does not block Redis (and every worker's ledger calls) for the whole walk, and
keeps what the single call guaranteed: the queue is marked judged by the new timetable
only once every waiting task was made due; a task a worker of the old timetable parks
meanwhile is not lost; walks at once do no harm; a crash mid-walk leaves a state the
next re-judge finishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from sinks.deferral import DeferralQueue
from sinks.ledger import TaskLedger, as_bytes
from sinks.stores import Parking

from .conftest import NOW

pytestmark = [pytest.mark.integration, pytest.mark.redis_only]


def at() -> float:
    """The test's `NOW` (read at its start, not at collection), in epoch seconds."""
    return NOW.timestamp()


def opens() -> float:
    """When the old timetable's channel hours open: every parked task waits for it."""
    return at() + 6 * 3600.0


OLD, NEW = "0ld0ld0ld0ld0ld0", "1ae1ae1ae1ae1ae1"
"""Two timetables (`DispatchPolicy.timetable`: a digest)."""
MANY = 50_000
CHUNK = 500


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[DeferralQueue]:
    client = Redis.from_url(redis_url)
    yield DeferralQueue(client, TaskLedger(client, f"test:{uuid4().hex[:8]}:", 3600))
    await client.aclose()


async def park(queue: DeferralQueue, ids: list[str], timetable: str) -> None:
    """Claim and park the ids, a tenth capacity deferrals to the next day, the others
    waiting for their channel's hours, all until `opens()`, by `timetable`."""
    for start in range(0, len(ids), 5000):
        part = ids[start : start + 5000]
        assert all(await queue.ledger.claim([(i, b"{}") for i in part]))
        items = [
            Parking(
                i,
                f"1370{n:07d}",
                b"",
                opens(),
                60.0,
                waits_for_hours=n % 10 != 0,
                waits_for_next_day=n % 10 == 0,
            )
            for n, i in enumerate(part, start)
        ]
        assert all(await queue.park_many(items, timetable))


async def still_waiting(queue: DeferralQueue) -> int:
    """How many of the queue's tasks are due later than `at()`."""
    return int(await queue.redis.zcount(queue.key, f"({at()}", "+inf"))


async def judged(queue: DeferralQueue) -> str | None:
    raw = await queue.redis.get(queue.judged_key)
    return None if raw is None else as_bytes(raw).decode()


Step = Callable[[int], Awaitable[None]]


def watch(queue: DeferralQueue, after_call: Step | None = None) -> list[str | None]:
    """Wrap the queue's re-judge script: the mark after each call, listed; `after_call`
    (given the number of calls so far) runs after each."""
    script = queue._rejudge
    marks: list[str | None] = []

    async def call(**kwargs: Any) -> Any:
        reply = await script(**kwargs)
        marks.append(await judged(queue))
        if after_call is not None:
            await after_call(len(marks))
        return reply

    queue._rejudge = call  # type: ignore[assignment]
    return marks


class TestAWalkInChunks:
    async def test_many_waiting_tasks_are_all_made_due_a_chunk_a_call(
        self, queue: DeferralQueue
    ) -> None:
        await park(queue, [f"t{n}" for n in range(MANY)], OLD)
        assert await judged(queue) == OLD
        marks = watch(queue)
        assert await queue.rejudge(NEW, at()) == MANY
        assert await still_waiting(queue) == 0
        assert await queue.waiting() == MANY  # due, not released
        # SSCAN's count is a hint: a call reads about a chunk, never the whole index.
        assert len(marks) >= MANY // (2 * CHUNK)
        assert marks[-1] == NEW
        assert NEW not in marks[:-1]  # marked judged only at the end of the walk
        assert all(m is not None and m.startswith(f"~{NEW}:") for m in marks[:-1])
        calls = len(marks)
        assert await queue.rejudge(NEW, at()) == 0  # judged: nothing to walk
        assert len(marks) == calls

    async def test_a_crash_after_the_first_chunk_leaves_what_the_next_rejudge_finishes(
        self, queue: DeferralQueue
    ) -> None:
        await park(queue, [f"t{n}" for n in range(MANY)], OLD)

        async def crash(calls: int) -> None:
            if calls == 1:
                raise ConnectionError("the worker died mid-walk")

        marks = watch(queue, crash)
        with pytest.raises(ConnectionError):
            await queue.rejudge(NEW, at())
        left = await still_waiting(queue)
        assert 0 < left < MANY  # a first chunk made due, the rest still waiting
        assert marks == [await judged(queue)]
        assert str(marks[0]).startswith(f"~{NEW}:")  # the walk's mark, not NEW
        restarted = DeferralQueue(queue.redis, queue.ledger)
        assert await restarted.rejudge(NEW, at()) == left
        assert await still_waiting(queue) == 0
        assert await judged(queue) == NEW

    async def test_an_empty_queue_is_marked_judged(self, queue: DeferralQueue) -> None:
        assert await queue.rejudge(NEW, at()) == 0
        assert await judged(queue) == NEW


class TestParkedDuringTheWalk:
    """A worker parks between two chunks of another's walk."""

    @pytest.mark.parametrize("late", ["t7", "late"])
    async def test_by_the_old_timetable_it_marks_them_mixed_and_the_next_rejudge_wakes_it(
        self, queue: DeferralQueue, late: str
    ) -> None:
        """A worker still on the old policy (a rolling restart) parks a task for the old
        opening: one waiting already (parked again) or a fresh one. The queue is not
        marked judged by the new timetable: the next re-judge (the old worker reloaded,
        or a worker started on the new policy) makes it due."""
        await park(queue, [f"t{n}" for n in range(5 * CHUNK)], OLD)

        async def old_worker_parks(calls: int) -> None:
            if calls == 2:
                if late != "t7":
                    assert await queue.ledger.claim([(late, b"{}")]) == [True]
                item = Parking(late, "13700000007", b"{}", opens(), 60.0, waits_for_hours=True)
                assert await queue.park_many([item], OLD) == [True]

        watch(queue, old_worker_parks)
        await queue.rejudge(NEW, at())
        assert await judged(queue) == "*"
        await queue.rejudge(NEW, at())
        assert await queue.due_at(late) == at()
        assert await still_waiting(queue) == 0
        assert await judged(queue) == NEW

    async def test_by_the_new_timetable_it_is_left_to_wait_and_the_mark_is_the_new_one(
        self, queue: DeferralQueue
    ) -> None:
        await park(queue, [f"t{n}" for n in range(5 * CHUNK)], OLD)

        async def new_worker_parks(calls: int) -> None:
            if calls == 2:
                assert await queue.ledger.claim([("fresh", b"{}")]) == [True]
                item = Parking("fresh", "13700000008", b"{}", opens(), 60.0, waits_for_hours=True)
                assert await queue.park_many([item], NEW) == [True]

        watch(queue, new_worker_parks)
        assert await queue.rejudge(NEW, at()) >= 5 * CHUNK
        assert await judged(queue) == NEW
        assert await still_waiting(queue) <= 1  # the fresh one, unless the walk read it


class TestTwoWalksAtOnce:
    async def test_two_workers_of_the_new_timetable_wake_each_task_once(
        self, queue: DeferralQueue
    ) -> None:
        await park(queue, [f"t{n}" for n in range(20 * CHUNK)], OLD)
        other = DeferralQueue(queue.redis, queue.ledger)
        woken = await asyncio.gather(queue.rejudge(NEW, at()), other.rejudge(NEW, at()))
        assert sum(woken) == 20 * CHUNK
        assert await still_waiting(queue) == 0
        assert await judged(queue) == NEW

    async def test_a_walk_started_after_an_old_park_marks_the_queue_and_the_earlier_stops(
        self, queue: DeferralQueue
    ) -> None:
        """An old worker parks during the first walk (`*`), a second walk starts after it:
        the second's mark stands, so the queue is marked judged only once the task the
        old worker parked was read by a walk."""
        await park(queue, [f"t{n}" for n in range(10 * CHUNK)], OLD)
        other = DeferralQueue(queue.redis, queue.ledger)
        second: list[int] = []

        async def park_then_walk(calls: int) -> None:
            if calls == 2:
                assert await queue.ledger.claim([("late", b"{}")]) == [True]
                item = Parking("late", "13700000009", b"{}", opens(), 60.0, waits_for_hours=True)
                assert await queue.park_many([item], OLD) == [True]
                assert await judged(queue) == "*"
                second.append(await other.rejudge(NEW, at()))

        marks = watch(queue, park_then_walk)
        first = await queue.rejudge(NEW, at())
        assert len(marks) == 3  # stopped at its next chunk: the second walk's mark stood
        assert marks[2] == NEW
        assert first + second[0] == 10 * CHUNK + 1
        assert await queue.due_at("late") == at()
        assert await still_waiting(queue) == 0
        assert await judged(queue) == NEW


class TestARetryAfterAFailedChunk:
    """The sink retries a failed re-judge (`with_retry`, the same queue, timetable and
    `now`): the retry goes on from the chunk that failed, not from the start."""

    async def test_it_does_not_wake_again_what_another_worker_judged_meanwhile(
        self, queue: DeferralQueue
    ) -> None:
        """Between the failure and the retry, another worker releases a task the first
        chunk made due, judges it by the new timetable and parks it for that opening.
        Walked again from the start, the retry made it due once more: released, judged
        and parked again, each counted again (`moments_tasks_released`, `deferred`), for
        nothing. And the number of tasks judged again (the log's) is the whole walk's."""
        await park(queue, [f"t{n}" for n in range(5 * CHUNK)], OLD)
        script = queue._rejudge
        calls = 0

        async def fails_once(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:  # the connection drops before the second chunk's call
                raise ConnectionError("Redis went away")
            return await script(**kwargs)

        queue._rejudge = fails_once  # type: ignore[assignment]
        with pytest.raises(ConnectionError):
            await queue.rejudge(NEW, at())
        first = int(await queue.redis.zcount(queue.key, at(), at()))
        assert 0 < first < 5 * CHUNK  # the first chunk made due, the rest still waiting
        # Another worker releases one of them and parks it for the new opening.
        [released] = await queue.release(at(), limit=1)
        later = opens() + 3600.0
        item = Parking(released.task_id, "13700000001", b"", later, 60.0, waits_for_hours=True)
        assert await queue.park_many([item], NEW) == [True]
        woken = await queue.rejudge(NEW, at())  # the retry
        assert await queue.due_at(released.task_id) == later  # not woken again
        assert woken == 5 * CHUNK  # the whole walk's count
        assert await judged(queue) == NEW
        assert await queue.redis.zcount(queue.key, f"({at()}", "+inf") == 1
