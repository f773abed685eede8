"""The state's changelog before its local copy (write-ahead).

A record in the local store (RocksDB on disk) that the changelog lacks outlives a kill:
restarted on the same volume, the worker judged the re-read events replays by it and
committed them, so the changelog never got their updates, and the partition's next
owner restored the older record (first-time facts, series, cooldown marks lost). So
`FaustTableStore.save` only holds a batch's changes pending; the runtime writes them to
the changelog, and only once it is acknowledged does `persisted` put them in the table's
store (then its persisted offset); an abandoned write is `discard`ed.

A fake table that logs every write to its store and its offsets stands in for Faust's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from moments import runtime as runtime_module
from moments.app import create_app
from moments.batchresult import BatchResult, StateChange
from moments.engine import Detector
from moments.restore import PreloadingTable
from moments.runtime import Runtime
from moments.settings import load_settings
from moments.state import SubscriberState
from moments.store import DictStateStore, FaustTableStore, StateWrite
from sinks.metrics import Metrics

from .catalogs import default_rules
from .fakes import FakeChangelog, NoDeadLetters

SUB = "13000000001"
KEY = SUB.encode()
OLD = SubscriberState(watermark=5)
NEW = SubscriberState(watermark=9)


class _LoggedData(dict[bytes, bytes]):
    """The table's store: each write and removal noted in `order`."""

    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.order.append(f"store {key.decode()}")
        super().__setitem__(key, value)

    def pop(self, key: bytes, default: Any = None) -> Any:
        self.order.append(f"store removes {key.decode()}")
        return super().pop(key, default)


class _Topic:
    def get_topic_name(self) -> str:
        return "app-subscribers-changelog"


class _Table:
    """What FaustTableStore uses of `moments.restore.PreloadingTable`."""

    def __init__(self, order: list[str]) -> None:
        self.order = order
        self.data = _LoggedData(order)
        self.changelog_topic = _Topic()
        self.offsets: dict[int, int] = {}

    def written(self, partition: int, offset: int) -> None:
        self.order.append(f"offset {partition}:{offset}")
        self.offsets[partition] = offset


def _store(order: list[str]) -> tuple[FaustTableStore, _Table]:
    """A store whose table holds OLD for SUB (restored from the changelog)."""
    table = _Table(order)
    dict.__setitem__(table.data, KEY, OLD.to_bytes())
    return FaustTableStore(table, "roaming", partitions=4), table


class TestStore:
    def test_a_save_leaves_the_table_alone_but_this_process_reads_the_new_record(self) -> None:
        order: list[str] = []
        store, table = _store(order)
        write = store.save({SUB: StateChange(NEW, 2), "13000000002": StateChange(NEW, 1)})
        assert sorted(write.records) == sorted(
            [(2, KEY, NEW.to_bytes()), (1, b"13000000002", NEW.to_bytes())]
        )
        assert order == []
        assert table.data == {KEY: OLD.to_bytes()}
        assert store.load(SUB) == NEW
        assert store.has("13000000002")
        assert {(s, st.watermark, p) for s, st, p in store.items([1, 2])} == {
            (SUB, 9, 2),
            ("13000000002", 9, 1),
        }

    def test_reread_reads_what_items_reads_never_a_copy_handed_out(self) -> None:
        """The window sweep mends a record that failed half-way from `reread`: the pending
        change over the table's bytes, as `items` reads them; a new object, never the
        cache's copy a sweep or batch may hold changed."""
        store, _ = _store([])
        held = store.load(SUB)
        assert held is not None
        held.watermark = 7  # changed in place, not saved
        assert store.reread(SUB) == OLD
        store.save({SUB: StateChange(NEW, 2)})
        again = store.reread(SUB)
        assert again == NEW
        assert again is not NEW
        assert store.reread("13000000002") is None

    def test_persisted_writes_the_table_then_the_offsets(self) -> None:
        order: list[str] = []
        store, table = _store(order)
        state = SubscriberState(watermark=9)
        write = store.save({SUB: StateChange(state, 2)})
        store.persisted(write, {2: 41})
        assert order == [f"store {SUB}", "offset 2:41"]
        assert table.data == {KEY: NEW.to_bytes()}
        assert store.load(SUB) is state  # kept in the cache, as saved

    def test_a_discarded_write_leaves_the_table_as_it_was_and_loads_read_it(self) -> None:
        order: list[str] = []
        store, table = _store(order)
        store.load(SUB)  # lent to the batch
        write = store.save({SUB: StateChange(NEW, 2), "13000000002": StateChange(NEW, 1)})
        store.discard(write)
        assert order == []
        assert table.data == {KEY: OLD.to_bytes()}
        assert store.load(SUB) == OLD
        assert not store.has("13000000002")
        assert [s for s, _, _ in store.items(range(4))] == [SUB]

    def test_a_pending_tombstone_hides_the_record_until_resolved(self) -> None:
        order: list[str] = []
        store, table = _store(order)
        write = store.save({SUB: StateChange(None, 2)})
        assert store.load(SUB) is None
        assert not store.has(SUB)
        assert list(store.items([2])) == []
        assert KEY in table.data
        store.persisted(write, {2: 7})
        assert order == [f"store removes {SUB}", "offset 2:7"]
        assert KEY not in table.data

    def test_an_earlier_write_resolved_late_leaves_a_later_writes_record_pending(self) -> None:
        """One write at a time in the worker (the runtime's state lock); still, each
        pending entry is its own write's."""
        order: list[str] = []
        store, table = _store(order)
        first = store.save({SUB: StateChange(SubscriberState(watermark=7), 2)})
        second = store.save({SUB: StateChange(NEW, 2)})
        store.discard(first)
        assert store.load(SUB) == NEW
        store.persisted(second, {2: 3})
        assert table.data[KEY] == NEW.to_bytes()
        assert store.load(SUB) == NEW

    def test_faust_replacing_a_record_under_a_discarded_write_is_what_loads(self) -> None:
        """A recovery may write the table while a write is pending: once it is dropped,
        the bytes Faust wrote are read, not a cached copy."""
        order: list[str] = []
        store, table = _store(order)
        write = store.save({SUB: StateChange(NEW, 2)})
        restored = SubscriberState(watermark=11)
        dict.__setitem__(table.data, KEY, restored.to_bytes())
        store.discard(write)
        assert store.load(SUB) == restored

    def test_rocksdb_holds_the_record_and_its_offset_only_once_persisted(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """On Faust's RocksDB store: nothing on disk while pending; then the record, and
        the persisted offset beside it in the partition's database."""
        monkeypatch.setenv("MOMENTS_STORE", "rocksdb")
        monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path))
        app = create_app(load_settings())
        table: Any = app.tables.add(
            PreloadingTable(
                app, name="subs", default=None, partitions=4, key_type=bytes, value_type=bytes
            )
        )
        store = FaustTableStore(table, "roaming", partitions=4)
        write = store.save({SUB: StateChange(NEW, 2)})
        db = table.data._db_for_partition(2)
        tp = TP(table.changelog_topic.get_topic_name(), 2)
        assert db.get(KEY) is None
        # Acknowledged, not yet applied (a kill here): the offset has not moved either,
        # so a restart on this volume reads the records from the changelog.
        assert table.data.persisted_offset(tp) is None
        store.persisted(write, {2: 41})
        assert db.get(KEY) == NEW.to_bytes()
        assert table.data.persisted_offset(tp) == 41


# ---- the runtime's order ----------------------------------------------------------------


class _Facts:
    async def record_facts(self, _: object) -> None:
        pass


class _Tasks:
    subscribers = _Facts()

    def add(self, _: object, rejudged: bool = False) -> None:
        pass

    async def flush(self) -> set[str]:
        return set()

    def took_over(self) -> set[str]:
        return set()


def _runtime(monkeypatch: pytest.MonkeyPatch, changelog: FakeChangelog) -> Runtime:
    runtime = Runtime(load_settings(), Metrics(), Detector(default_rules(), {}))
    runtime.tasks = _Tasks()  # type: ignore[assignment]
    runtime.dead_letters = NoDeadLetters()  # type: ignore[assignment]
    runtime._producer = object()
    monkeypatch.setattr(runtime_module, "produce_to_partitions", changelog)
    return runtime


def _result(changes: Mapping[str, StateChange]) -> BatchResult:
    return BatchResult(changes=dict(changes))


class TestRuntimeOrder:
    async def test_the_changelog_acknowledges_before_the_store_holds_the_record(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        order: list[str] = []
        store, table = _store(order)
        runtime = _runtime(monkeypatch, FakeChangelog(order))
        assert await runtime._publish(_result({SUB: StateChange(NEW, 2)}), store)
        assert order == ["changelog written", f"store {SUB}", "offset 2:41"]
        assert table.data == {KEY: NEW.to_bytes()}

    async def test_while_the_changelog_write_waits_the_store_holds_nothing_new(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A kill -9 now (the broker gone, the write retried) leaves a store the
        changelog agrees with: the re-read events are applied again, not taken for
        replays."""
        order: list[str] = []
        store, table = _store(order)
        changelog = FakeChangelog(order, fail=1, hold=True)
        runtime = _runtime(monkeypatch, changelog)
        publish = asyncio.create_task(runtime._publish(_result({SUB: StateChange(NEW, 2)}), store))
        await asyncio.wait_for(changelog.writing.wait(), 30)
        assert table.data == {KEY: OLD.to_bytes()}
        assert table.offsets == {}
        assert order == []
        changelog.release.set()
        assert await publish
        assert table.data == {KEY: NEW.to_bytes()}

    async def test_a_write_abandoned_at_a_rebalance_leaves_the_store_as_it_was(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The retry finds the partitions gone: the records reach neither the changelog
        nor the store, and the next load reads the old record."""
        order: list[str] = []
        store, table = _store(order)
        held = {"ours": True}
        changelog = FakeChangelog(order, fail=1)
        real_call = changelog.__call__

        async def failing_then_revoked(*args: Any) -> dict[int, int]:
            try:
                return await real_call(*args)
            finally:
                held["ours"] = False  # the rebalance began while the broker was away

        runtime = _runtime(monkeypatch, changelog)
        monkeypatch.setattr(runtime_module, "produce_to_partitions", failing_then_revoked)
        store.load(SUB)  # the batch's read
        written = await runtime._publish(
            _result({SUB: StateChange(NEW, 2)}), store, lambda: held["ours"]
        )
        assert written is False
        assert changelog.attempts == 1
        assert order == []
        assert table.data == {KEY: OLD.to_bytes()}
        assert store.load(SUB) == OLD

    async def test_a_write_cancelled_while_the_changelog_waits_is_dropped(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The worker stopping (or an error) under the write: nothing pending is left for
        a later batch to read, and the store is as it was."""
        order: list[str] = []
        store, table = _store(order)
        changelog = FakeChangelog(order, hold=True)
        runtime = _runtime(monkeypatch, changelog)
        publish = asyncio.create_task(runtime._publish(_result({SUB: StateChange(NEW, 2)}), store))
        await asyncio.wait_for(changelog.writing.wait(), 30)
        publish.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publish
        assert table.data == {KEY: OLD.to_bytes()}
        assert store.load(SUB) == OLD


def test_a_store_without_a_changelog_applies_at_save() -> None:
    """The dict store (backtest, run_pipeline): nothing pending, nothing to produce."""
    store = DictStateStore()
    write = store.save({SUB: StateChange(NEW, 0)})
    assert isinstance(write, StateWrite)
    assert write.records == []
    assert store.load(SUB) is not None
    assert store.data[SUB] == NEW.to_bytes()


async def test_a_write_acknowledged_after_its_partitions_went_is_not_kept_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The changelog write was sent while the partitions were ours and acknowledged after
    a rebalance took them (the broker slow past the revocation's wait). The store kept the
    records and moved its offset to theirs: a RocksDB volume given the partition back
    later read the changelog only after that offset, so the records the next owner wrote
    before it never reached it (its events' first-time facts, series and cooldown marks).
    And the batch was counted, though the next owner reads its events again and counts
    them."""
    order: list[str] = []
    store, table = _store(order)
    changelog = FakeChangelog(order, hold=True)
    runtime = _runtime(monkeypatch, changelog)
    held = {"ours": True}
    store.load(SUB)  # the batch's read
    publish = asyncio.create_task(
        runtime._publish(_result({SUB: StateChange(NEW, 2)}), store, lambda: held["ours"])
    )
    await asyncio.wait_for(changelog.writing.wait(), 30)
    held["ours"] = False  # a rebalance took the partition while the write was in flight
    changelog.release.set()
    assert await publish is False
    assert order == ["changelog written"]
    assert (table.data, table.offsets) == ({KEY: OLD.to_bytes()}, {})
    assert store.load(SUB) == OLD
