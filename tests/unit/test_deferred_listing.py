"""`moments tasks deferred`'s reading of a ledger entry and its closing line."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import hiredis

from moments.deferred import (
    DeferredTask,
    Listing,
    _described,
    _with_group,
    aligned,
    deferred_tasks,
    summary,
)

TASK_ID = "0" * 32


def test_an_entry_no_longer_waiting_is_left_out() -> None:
    assert _described(TASK_ID, 10.0, None) is None
    assert _described(TASK_ID, 10.0, b'P{"channel":"sms"}') is None


def test_a_payload_without_a_deferral_or_unreadable_shows_unknowns() -> None:
    bare = _described(TASK_ID, 10.0, b'D{"channel":"sms","subscriber_id":"13800138001"}')
    assert bare is not None
    assert (bare.reason, bare.moment_type, bare.subscriber) == ("?", "?", "138****8001")
    assert bare.waited_s(100.0) is None
    broken = _described(TASK_ID, 10.0, b"Dnot json")
    assert broken is not None
    assert (broken.channel, broken.reason, broken.subscriber) == ("?", "?", "?")


def test_the_due_time_is_shown_in_the_given_zone() -> None:
    task = DeferredTask(TASK_ID, "low_balance", "sms", "138****8001", "capacity", 0.0, -90.0)
    zone = dt.timezone(dt.timedelta(hours=8))
    assert task.row(0.0, zone)[6:] == ("1970-01-01 08:00", "1m")
    assert task.as_json(0.0, zone)["due_at"] == "1970-01-01T08:00:00+08:00"


def test_the_closing_line_counts_by_reason_and_says_how_many_more() -> None:
    task = DeferredTask(TASK_ID, "low_balance", "sms", "138****8001", "capacity", 0.0, None)
    listing = Listing([task], 3, Counter({"quiet_hours": 2, "capacity": 1}))
    assert summary(listing) == (
        "3 task(s) waiting (capacity 1, quiet_hours 2); 2 more not listed, soonest due "
        "first (--limit 0 lists all)"
    )
    assert summary(Listing()) == "no task is waiting in the deferral queue"


def test_nothing_matching_the_filters_says_how_many_wait_all_the_same() -> None:
    """ "no task is waiting in the deferral queue (of those asked for)" read the same for an
    empty queue and for filters no task matched, and said "asked for" when nothing was."""
    assert summary(Listing(waiting=0, filtered=True)) == (
        "no task is waiting in the deferral queue"
    )
    assert summary(Listing(waiting=3, filtered=True)) == (
        "none of the 3 task(s) waiting in the deferral queue is of the --reason or "
        "--moment-type asked for"
    )


def test_a_listing_that_read_part_of_the_queue_says_so_and_how_to_count_all() -> None:
    """Counting by reason reads every payload of the queue (2-3 s for 50,000 tasks): a
    listing reads the soonest due only, and says how many wait in all and how to count."""
    tasks = [
        DeferredTask(TASK_ID, "low_balance", "sms", "138****8001", reason, 0.0, None)
        for reason in ("quiet_hours", "capacity", "quiet_hours")
    ]
    listing = Listing(tasks, 1000, Counter({"quiet_hours": 600}), complete=False, waiting=50_000)
    assert summary(listing) == (
        "3 task(s) listed, the soonest due of those asked for (capacity 1, quiet_hours 2), "
        "of 50,000 waiting in all; --limit 0 reads the whole queue, to list and count them "
        "all by reason"
    )


def test_a_merged_task_shows_how_many_moments_it_carries() -> None:
    task = DeferredTask(TASK_ID, "low_balance", "sms", "138****8001", "merge_window", 0.0, None, 2)
    assert task.row(0.0, dt.UTC)[1:3] == ("low_balance", "+2")
    assert task.as_json(0.0, dt.UTC)["merged"] == 2
    alone = DeferredTask(TASK_ID, "low_balance", "sms", "138****8001", "merge_window", 0.0, None)
    assert (alone.row(0.0, dt.UTC)[2], alone.as_json(0.0, dt.UTC)["merged"]) == ("", 0)


def test_a_moment_type_no_task_has_is_said_with_the_closest_the_rules_make() -> None:
    """`--moment-type bill_shock` (the guide's own example; the catalog's type is
    `bill_spike`) said only "no task is waiting", as for an empty queue."""
    from moments.deferred import unmatched_types

    listing = Listing(by_type=Counter({"low_balance": 2, "bill_spike": 1}))
    known = {"low_balance", "bill_spike", "complaint"}
    assert unmatched_types(listing, ["bill_shock", "complaint", "low_balance"], known) == [
        "no task of moment type 'bill_shock' waits and no rule in force (MOMENTS_RULES) makes "
        "that type: did you mean 'bill_spike'?; waiting: bill_spike 1, low_balance 2",
        "no task of moment type 'complaint' waits; waiting: bill_spike 1, low_balance 2",
    ]
    unknown = unmatched_types(Listing(), ["zzz"], known)
    assert unknown == [
        "no task of moment type 'zzz' waits and no rule in force (MOMENTS_RULES) makes that "
        "type (`moments rules explain` lists the rules and their types)"
    ]
    assert unmatched_types(Listing(), ["zzz"], None) == ["no task of moment type 'zzz' waits"]


def test_a_moment_type_not_met_in_a_part_read_is_not_said_to_wait_nowhere() -> None:
    """A listing that stopped at `--limit` (the soonest due of the types asked for) read
    part of the queue: a type it did not meet may wait further on."""
    from moments.deferred import unmatched_types

    listing = Listing(by_type=Counter({"low_balance": 50}), complete=False, waiting=50_000)
    assert unmatched_types(listing, ["bill_spike", "low_balance"], {"bill_spike"}) == [
        "no task of moment type 'bill_spike' among the soonest due read (--limit 0 reads the "
        "whole queue)"
    ]


class _GroupScript:
    """The listing's script over merge groups (`moments.deferred._per_group`): LLEN or
    LRANGE of each item's group (`sinks.luabatch`: an item's key and one argument), the
    groups `groups` holds (by key, `G:<task id>`), every other one empty."""

    def __init__(self, body: str, groups: dict[str, list[bytes]]) -> None:
        self.count, self.groups = "LLEN" in body, groups
        self.script, self.sha = body, hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()

    def reply(self, keys: list[bytes]) -> list[object]:
        found = [self.groups.get(k.decode(), []) for k in keys]  # sent as bytes, as Redis
        return [len(g) for g in found] if self.count else list(found)


class _Connection:
    """A pooled connection of `_SortedSetRedis` (`sinks.luabatch` sends its EVALSHA packed
    on one): the command read back as Redis reads it, its reply the script's."""

    def __init__(self, scripts: dict[str, _GroupScript]) -> None:
        self.scripts, self.retry = scripts, self
        self.reply: list[object] = []

    async def call_with_retry(self, once: Callable[[], Any], failed: Any) -> Any:
        return await once()

    async def send_packed_command(self, command: bytes) -> None:
        reader = hiredis.Reader()
        reader.feed(command)
        name, sha, keys, *rest = reader.gets()
        assert (name, rest[int(keys) :][:2]) == (b"EVALSHA", [b"1", b"1"])  # a key, an arg
        self.reply = self.scripts[sha.decode()].reply(rest[: int(keys)])


class _SortedSetRedis:
    """The queue's `deferred` sorted set and the ledger's entries, in memory: the reads
    `deferred_tasks` makes, with `after_count` run once the queue was counted (a worker's
    release landing between two of the listing's reads)."""

    def __init__(self, scores: dict[str, float], entries: dict[str, bytes]) -> None:
        self.scores, self.entries = scores, entries
        self.groups: dict[str, list[bytes]] = {}
        self.after_count: Callable[[], None] = lambda: None
        self.scripts: dict[str, _GroupScript] = {}
        self.connection_pool = self

    def register_script(self, body: str) -> _GroupScript:
        script = _GroupScript(body, self.groups)
        self.scripts[script.sha] = script
        return script

    async def get_connection(self) -> _Connection:
        return _Connection(self.scripts)

    async def release(self, connection: _Connection) -> None:
        pass

    async def parse_response(self, connection: _Connection, command: str) -> Any:
        return connection.reply

    async def zcard(self, key: str) -> int:
        count = len(self.scores)
        self.after_count()
        return count

    def _ordered(self) -> list[tuple[bytes, float]]:
        return sorted(((m.encode(), s) for m, s in self.scores.items()), key=lambda x: (x[1], x[0]))

    async def zrange(self, key: str, start: int, end: int, withscores: bool) -> list[Any]:
        return self._ordered()[start : end + 1]

    async def zrangebyscore(
        self, key: str, low: Any, high: Any, start: int, num: int, withscores: bool
    ) -> list[Any]:
        return [x for x in self._ordered() if x[1] >= 0][start : start + num]

    async def zrevrangebyscore(
        self, key: str, high: Any, low: Any, start: int, num: int, withscores: bool
    ) -> list[Any]:
        return [x for x in reversed(self._ordered()) if x[1] < 0][start : start + num]

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.entries.get(k.removeprefix("T:")) for k in keys]


class _Ledger:
    def key(self, task_id: str) -> str:
        return f"T:{task_id}"

    def group_key(self, task_id: str) -> str:
        return f"G:{task_id}"


@dataclasses.dataclass
class _Queue:
    redis: _SortedSetRedis
    key: str = "deferred"
    ledger: _Ledger = dataclasses.field(default_factory=_Ledger)


async def test_tasks_released_while_listing_leave_the_waiting_ones_listed() -> None:
    """The queue's two parts were told apart by a rank counted first: a release landing
    after that count (a worker's, every few seconds in a busy day) moved the first waiting
    tasks below the rank counted, where the waiting part was not read, and they were
    neither listed nor counted, the soonest due of them first."""
    entry = b'D{"deferred": {"reason": "capacity"}, "moment": {"type": "low_balance"}}'
    ranked = {f"r{i}": -1.0 - (100 + i) for i in range(3)}  # due and ranked
    waiting = {f"w{i}": 200.0 + i for i in range(3)}
    redis = _SortedSetRedis({**ranked, **waiting}, dict.fromkeys([*ranked, *waiting], entry))

    def release() -> None:  # the ranked ones are sent: out of the queue, P in the ledger
        for task_id in ranked:
            redis.scores.pop(task_id, None)
            redis.entries[task_id] = b"P{}"

    redis.after_count = release
    for limit in (0, 2):
        redis.scores.update(ranked)
        redis.entries.update(dict.fromkeys(ranked, entry))
        listing = await deferred_tasks(_Queue(redis), limit=limit)  # type: ignore[arg-type]
        assert [t.task_id for t in listing.tasks] == ["w0", "w1", "w2"][: limit or None]
        if listing.complete:
            assert listing.by_reason == {"capacity": 3}


def test_a_merged_task_carries_the_types_of_every_moment_in_it() -> None:
    """`--moment-type` matches any moment a task carries: its own, its `related` ones
    (merged before it was parked again) and its merge group's (and theirs)."""
    entry = (
        b'D{"moment": {"type": "low_balance"},'
        b' "related": [{"moment": {"type": "bill_spike"}}, {"moment": {}}, "junk"]}'
    )
    task = _described(TASK_ID, 10.0, entry)
    assert task is not None
    assert task.moment_types == ("low_balance", "bill_spike")
    group = [
        b'{"moment": {"type": "roaming_welcome"}, "related": [{"moment": {"type": "x"}}]}',
        b'{"moment": {"type": "low_balance"}}',
        b"not json",
    ]
    merged = _with_group(task, group)
    assert merged.moment_types == ("low_balance", "bill_spike", "roaming_welcome", "x")
    assert (merged.merged, merged.moment_type) == (3, "low_balance")


async def test_the_json_of_a_merged_task_names_the_types_of_the_moments_merged() -> None:
    """`--json` said how many moments were merged into a task (`merged`) but not their
    types, which the table's `--moment-type` filter matches by: `moment_types` names every
    type the task carries, its own first, without a filter asked for."""
    entry = b'D{"moment": {"type": "low_balance"}, "related": [{"moment": {"type": "x"}}]}'
    redis = _SortedSetRedis({"a": 100.0, "b": 200.0}, {"a": entry, "b": entry})
    redis.groups["G:a"] = [b'{"moment": {"type": "bill_spike"}}', b'{"moment": {}}']
    listing = await deferred_tasks(_Queue(redis), merged_types=True)  # type: ignore[arg-type]
    carried = [t.as_json(0.0, dt.UTC) for t in listing.tasks]
    assert [(t["merged"], t["moment_types"]) for t in carried] == [
        (2, ["low_balance", "x", "bill_spike"]),
        (0, ["low_balance", "x"]),
    ]


def test_a_piped_listing_is_plain_columns_as_wide_as_their_widest_cell() -> None:
    assert aligned(("id", "type", "last"), [("a1", "low_balance", ""), ("b", "x", "2m")]) == [
        "id  type         last",
        "a1  low_balance",
        "b   x            2m",
    ]
