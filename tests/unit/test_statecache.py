"""Records cached between batches: handed out only while the store holds the bytes they
were saved as, lent to one batch at a time, and invisible in what the detector decides."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moments.app import create_app
from moments.batchresult import StateChange
from moments.engine import Detector
from moments.models import EventType
from moments.partitioning import partition_of
from moments.records import RawRecord
from moments.settings import load_settings
from moments.state import SubscriberState
from moments.statecache import StateCache
from moments.store import DictStateStore, FaustTableStore

from .catalogs import default_rules

NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
TYPES = {t.value: t for t in EventType}


def saved(state: SubscriberState) -> bytes:
    return state.to_bytes()


class TestStateCache:
    def test_the_cached_record_comes_back_while_the_store_holds_its_bytes(self) -> None:
        cache = StateCache()
        state = SubscriberState(watermark=5)
        cache.keep("a", saved(state), state)
        assert cache.take("a", saved(state)) is state
        assert (cache.hits, cache.misses) == (1, 0)

    def test_other_bytes_in_the_store_win_over_the_cached_record(self) -> None:
        cache = StateCache()
        mine = SubscriberState(watermark=5)
        cache.keep("a", saved(mine), mine)
        restored = SubscriberState(watermark=9)
        found = cache.take("a", saved(restored))
        assert found is not mine
        assert found == restored
        assert cache.misses == 1

    def test_nothing_in_the_store_means_no_record_and_forgets_the_cached_one(self) -> None:
        cache = StateCache()
        state = SubscriberState(watermark=5)
        cache.keep("a", saved(state), state)
        assert cache.take("a", None) is None
        assert len(cache) == 0

    def test_a_record_is_lent_once_until_it_is_kept_again(self) -> None:
        """A batch that changes a record and fails before saving must not leak the change."""
        cache = StateCache()
        state = SubscriberState(watermark=5)
        raw = saved(state)
        cache.keep("a", raw, state)
        lent = cache.take("a", raw)
        assert lent is state
        assert lent is not None
        lent.watermark = 99  # the failed batch's change, never saved
        again = cache.take("a", raw)
        assert again is not state
        assert again == SubscriberState(watermark=5)

    def test_the_least_recently_kept_go_first(self) -> None:
        cache = StateCache(capacity=2)
        states = {k: SubscriberState(watermark=i) for i, k in enumerate("abc", start=1)}
        cache.keep("a", saved(states["a"]), states["a"])
        cache.keep("b", saved(states["b"]), states["b"])
        cache.keep("a", saved(states["a"]), states["a"])  # saved again: now the newest
        cache.keep("c", saved(states["c"]), states["c"])
        assert len(cache) == 2
        assert cache.take("b", saved(states["b"])) is not states["b"]
        assert cache.take("a", saved(states["a"])) is states["a"]
        assert cache.take("c", saved(states["c"])) is states["c"]

    def test_past_capacity_the_oldest_tenth_goes_at_once(self) -> None:
        cache = StateCache(capacity=20)
        states = [SubscriberState(watermark=i) for i in range(21)]
        for i, state in enumerate(states):
            cache.keep(str(i), saved(state), state)
        assert len(cache) == 18  # 21 - 20 over, and 2 more: a tenth of the capacity
        assert [cache.take(str(i), saved(states[i])) is states[i] for i in (0, 1, 2, 3, 20)] == [
            False,
            False,
            False,
            True,
            True,
        ]

    def test_capacity_zero_keeps_nothing(self) -> None:
        cache = StateCache(capacity=0)
        state = SubscriberState(watermark=5)
        cache.keep("a", saved(state), state)
        assert len(cache) == 0
        assert cache.take("a", saved(state)) is not state

    def test_a_negative_capacity_is_refused(self) -> None:
        with pytest.raises(ValueError, match="capacity"):
            StateCache(capacity=-1)


class _Topic:
    def get_topic_name(self) -> str:
        return "app-subscribers-changelog"


class _Table:
    """What FaustTableStore reads of a Faust table: its store (`data`) and changelog."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog_topic = _Topic()


class _NotingStore(dict[bytes, bytes]):
    """Faust's memory store: a mapping that notes the partition of each key it holds."""

    def __init__(self) -> None:
        super().__init__()
        self._key_partition: dict[bytes, int] = {}


def _written(store: FaustTableStore, changes: dict[str, StateChange]) -> list[Any]:
    """Saved and acknowledged by the changelog (the runtime's `_publish`): in the table."""
    write = store.save(changes)
    store.persisted(write, {})
    return write.records


class TestFaustTableStore:
    def test_the_memory_store_learns_each_written_keys_partition(self) -> None:
        """Faust forgets the keys of given-up partitions by these notes; unnoted, a
        worker kept every partition it ever held."""
        table = _Table()
        table.data = _NotingStore()
        store = FaustTableStore(table, "roaming", partitions=4)
        _written(store, {"13000000001": StateChange(SubscriberState(watermark=5), 2)})
        assert table.data._key_partition == {b"13000000001": 2}
        _written(store, {"13000000001": StateChange(None, 2)})
        assert table.data._key_partition == {}

    def test_a_sweep_finds_records_by_their_noted_partition(self) -> None:
        """Events from a producer with another partitioner (librdkafka's default) sit in
        a partition murmur2 would not name; the memory store's note says where."""
        table = _Table()
        table.data = _NotingStore()
        store = FaustTableStore(table, "roaming", partitions=4)
        sub = "13000000001"
        hashed = partition_of(sub.encode(), 4)
        elsewhere = (hashed + 1) % 4
        _written(store, {sub: StateChange(SubscriberState(watermark=5), elsewhere)})
        assert [s for s, _, _ in store.items({elsewhere})] == [sub]
        assert list(store.items({hashed})) == []

    def test_a_rocksdb_sweep_finds_records_by_the_database_that_holds_them(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Faust's RocksDB store keeps one database per partition: a record written for a
        partition murmur2 would not name (another partitioner upstream) is swept there."""
        monkeypatch.setenv("MOMENTS_STORE", "rocksdb")
        monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path))
        app = create_app(load_settings())
        table = app.Table("subs", default=None, partitions=4, key_type=bytes, value_type=bytes)
        store = FaustTableStore(table, "roaming", partitions=4)
        subs = [str(13_000_000_000 + i) for i in range(12)]
        placed = {sub: (partition_of(sub.encode(), 4) + 1) % 4 for sub in subs}
        for sub, partition in placed.items():
            _written(store, {sub: StateChange(SubscriberState(watermark=5), partition)})
        for partition in range(4):
            found = {(s, p) for s, _, p in store.items({partition})}
            assert found == {(s, p) for s, p in placed.items() if p == partition}
            assert store.census[partition].subscribers == len(found)

    def test_a_record_faust_replaced_is_read_again_from_the_table(self) -> None:
        """Recovery writes the changelog into the table behind the store's back."""
        table = _Table()
        store = FaustTableStore(table, "roaming", partitions=4)
        state = SubscriberState(watermark=5)
        out = _written(store, {"13000000001": StateChange(state, 2)})
        assert out == [(2, b"13000000001", state.to_bytes())]
        assert store.load("13000000001") is state
        _written(store, {"13000000001": StateChange(state, 2)})
        table.data[b"13000000001"] = SubscriberState(watermark=7).to_bytes()
        assert store.load("13000000001") == SubscriberState(watermark=7)

    def test_a_full_pass_over_partitions_counts_their_records(self) -> None:
        table = _Table()
        store = FaustTableStore(table, "roaming", partitions=4)
        subs = [str(13_000_000_000 + i) for i in range(40)]
        for sub in subs:
            partition = partition_of(sub.encode(), 4)
            _written(store, {sub: StateChange(SubscriberState(watermark=len(sub)), partition)})
        wanted = {1, 2}
        seen = list(store.items(wanted))
        assert {p for _, _, p in seen} <= wanted
        for partition in wanted:
            mine = [k for k in table.data if partition_of(k, 4) == partition]
            assert store.census[partition] == (
                len(mine),
                sum(len(table.data[k]) for k in mine),
            )
        assert set(store.census) == wanted

    def test_a_key_gone_from_the_table_loads_as_none(self) -> None:
        """A revoked partition's keys leave the table; a tombstone removes one too."""
        table = _Table()
        store = FaustTableStore(table, "roaming", partitions=4)
        state = SubscriberState(watermark=5)
        _written(store, {"13000000001": StateChange(state, 2)})
        del table.data[b"13000000001"]
        assert store.load("13000000001") is None
        out = _written(store, {"13000000002": StateChange(None, 1)})
        assert out == [(1, b"13000000002", None)]


# ---- the detector sees no difference --------------------------------------------------

SUBSCRIBERS = [str(13_000_000_000 + i) for i in range(4)]
BASE = dt.datetime(2026, 9, 1, 6, tzinfo=dt.UTC)

event_st = st.tuples(
    st.sampled_from(["usage", "usage", "topup", "roaming", "complaint", "profile", "bad"]),
    st.integers(0, len(SUBSCRIBERS) - 1),
    st.integers(0, 24 * 40),  # hours after BASE: weeks and a month boundary
    st.integers(0, 3),  # a variant of each kind
)
# An operation: a batch saved normally, a batch that fails before its save, or the
# store's bytes for a subscriber replaced by an older copy (a changelog restore).
op_st = st.one_of(
    st.tuples(st.just("batch"), st.lists(event_st, min_size=1, max_size=12)),
    st.tuples(st.just("fail"), st.lists(event_st, min_size=1, max_size=6)),
    st.tuples(st.just("restore"), st.integers(0, len(SUBSCRIBERS) - 1)),
)


def make_value(kind: str, sub: str, hours: int, variant: int, n: int) -> dict[str, Any] | bytes:
    at = (BASE + dt.timedelta(hours=hours, minutes=n % 60)).isoformat()
    base: dict[str, Any] = {"event_id": f"e{n}", "subscriber_id": sub, "occurred_at": at}
    if kind == "usage":
        return base | {
            "kind": ("voice", "bill_query", "service_order", "voice")[variant],
            "quantity": 60 * (variant + 1),
            "charge": str(variant * 7),
            "counterparty": "10010" if variant == 3 else "13900000000",
            "direction": "in" if variant % 2 else "out",
            "service_code": f"S{variant}",
            "balance_after": str(5 + variant * 10),
            "imei": f"35{variant:013d}",
        }
    if kind == "topup":
        return base | {"amount": "50", "channel": ("app", "bank", "card", "store")[variant]}
    if kind == "roaming":
        return base | {
            "country": ("JP", "TH", "KR", "US")[variant],
            "roaming_type": "international" if variant < 3 else "domestic",
            "timezone": ("Asia/Tokyo", None, "Asia/Seoul", None)[variant],
        }
    if kind == "complaint":
        return base | {
            "complaint_id": f"c{variant}",
            "category": "network",
            "severity": 1 + variant % 3,
            "status": ("opened", "opened", "resolved", "updated")[variant],
        }
    if kind == "profile":
        return base | {
            "tier": ("gold", "silver", "standard", "gold")[variant],
            "timezone": ("Europe/Berlin", "Asia/Shanghai", "America/New_York", "Asia/Tokyo")[
                variant
            ],
            "birthday": "09-0" + str(variant + 2),
            "quiet_hours": ["12:00-13:00"] if variant == 1 else [],
        }
    return b"{not json"


def batch_records(events: list[Any], offset: int) -> list[RawRecord]:
    """One batch's records from `op_st`'s events, numbered from `offset`."""
    records = []
    for kind, who, hours, variant in events:
        topic = "usage" if kind == "bad" else kind
        value = make_value(kind, SUBSCRIBERS[who], hours, variant, offset)
        raw = orjson.dumps(value) if isinstance(value, dict) else value
        records.append(RawRecord(topic, 0, offset, SUBSCRIBERS[who].encode(), raw))
        offset += 1
    return records


def replay(ops: list[tuple[str, Any]], capacity: int) -> tuple[list[bytes], dict[str, bytes]]:
    """Run the operations on a store with the given cache capacity: tasks and final bytes."""
    detector = Detector(default_rules(), TYPES)
    store = DictStateStore(cache_capacity=capacity)
    history: dict[str, list[bytes]] = {}
    tasks: list[bytes] = []
    offset = 0
    for op, arg in ops:
        if op == "restore":
            sub = SUBSCRIBERS[arg]
            if history.get(sub):
                store.data[sub] = history[sub][0]
            continue
        records = batch_records(arg, offset)
        offset += len(records)
        result = detector.process(records, store.load, NOW)
        if op == "fail":
            continue  # outputs never became durable: the state is not saved
        tasks.extend(orjson.dumps(t.model_dump(mode="json")) for t in result.tasks)
        store.save(result.changes)
        for sub in result.changes:
            if sub in store.data:
                history.setdefault(sub, []).append(store.data[sub])
    return tasks, store.data


@settings(max_examples=60, deadline=None)
@given(st.lists(op_st, min_size=1, max_size=14))
def test_the_cache_changes_no_task_and_no_saved_byte(ops: list[tuple[str, Any]]) -> None:
    """With failed batches and restored records in between, a cached store and one that
    parses every record again make the same tasks and end with the same bytes."""
    assert replay(ops, capacity=1000) == replay(ops, capacity=0)


# A batch whose changelog write is given up (a rebalance, a stop): saved, then discarded.
abandon_op_st = st.one_of(
    op_st, st.tuples(st.just("abandon"), st.lists(event_st, min_size=1, max_size=6))
)


def replay_on_table(
    ops: list[tuple[str, Any]], capacity: int
) -> tuple[list[bytes], dict[str, bytes]]:
    """`replay` on the stream's store: each batch's write persisted as the changelog
    acknowledges it, an abandoned one discarded."""
    detector = Detector(default_rules(), TYPES)
    table = _Table()
    store = FaustTableStore(table, "roaming", partitions=4, cache_capacity=capacity)
    history: dict[str, list[bytes]] = {}
    tasks: list[bytes] = []
    offset = 0
    for op, arg in ops:
        if op == "restore":
            sub = SUBSCRIBERS[arg]
            if history.get(sub):
                table.data[sub.encode()] = history[sub][0]
            continue
        records = batch_records(arg, offset)
        offset += len(records)
        result = detector.process(records, store.load, NOW)
        if op == "fail":
            continue
        write = store.save(result.changes)
        if op == "abandon":
            store.discard(write)
            continue
        tasks.extend(orjson.dumps(t.model_dump(mode="json")) for t in result.tasks)
        store.persisted(write, {})
        for sub in result.changes:
            if (saved_bytes := table.data.get(sub.encode())) is not None:
                history.setdefault(sub, []).append(saved_bytes)
    return tasks, {k.decode(): v for k, v in table.data.items()}


@settings(max_examples=60, deadline=None)
@given(st.lists(abandon_op_st, min_size=1, max_size=14))
def test_an_abandoned_write_leaves_what_a_failed_batch_leaves(ops: list[tuple[str, Any]]) -> None:
    """A batch whose changelog write is given up leaves the store, cached or not, as a
    batch that failed before its save: the same later tasks, the same bytes."""
    as_failed = [("fail", arg) if op == "abandon" else (op, arg) for op, arg in ops]
    expected = replay(as_failed, capacity=0)
    assert replay_on_table(ops, capacity=1000) == expected
    assert replay_on_table(ops, capacity=0) == expected
