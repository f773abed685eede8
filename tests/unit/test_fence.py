"""Fencing the state changelog when it is read (moments.fence): a record a worker losing
its partition wrote, landing after the next owner's record of the same subscriber, is
skipped by every restore; records written in turn are all taken, in log order, whatever
the consumer group's generation did (a group deleted and made again starts over).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import pytest
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from moments import restore
from moments.app import create_app, group_ownership, register_agents
from moments.batchresult import BatchResult, StateChange
from moments.engine import Detector
from moments.fence import (
    HEADER,
    Fold,
    Stamp,
    from_headers,
    later_wins,
    next_stamp,
    stamp_of_value,
    to_header,
)
from moments.restore import PreloadingTable
from moments.runtime import Runtime
from moments.settings import load_settings
from moments.state import SubscriberState
from moments.store import FaustTableStore
from rules.catalog import RuleSet
from sinks.metrics import Metrics

from .fakes import FakeChangelog
from .test_state_damaged import arrival, detector, later, with_dictionary_id
from .test_state_write_ahead import _runtime, _store

KEY = b"13000000001"


def _record(watermark: int, stamp: Stamp | None) -> bytes:
    return SubscriberState(watermark=watermark, stamp=stamp).to_bytes()


# ---- the keep/skip decision ----------------------------------------------------------------


class TestDecision:
    def test_a_record_stamped_below_the_one_held_is_skipped(self) -> None:
        assert not later_wins((3,), False, (5,), False)
        assert later_wins((5,), False, (5,), False)  # the same owner: in log order
        assert later_wins((6,), False, (5,), False)

    def test_a_stale_tombstone_deletes_nothing_and_a_stale_record_brings_nothing_back(
        self,
    ) -> None:
        assert not later_wins((3,), True, (5,), False)
        assert not later_wins((3,), False, (5,), True)

    def test_a_record_begun_after_a_deletion_follows_it_whatever_the_stamps(self) -> None:
        """Its writer held nothing for the key: it knew nothing of the tombstone's stamp."""
        assert later_wins((2, 1), False, (9,), True)
        assert later_wins((2, 1), True, (9,), True)
        assert not later_wins((2, 1), False, (5,), False)  # a stale new subscriber's

    def test_records_without_a_stamp_are_taken_in_log_order(self) -> None:
        """Written before stamps were, or by `moments state seed --replace`."""
        assert later_wins((), False, (9,), False)
        assert later_wins((), True, (9,), False)
        assert later_wins((1,), False, (), False)
        assert later_wins((1,), False, None, False)

    def test_a_generation_gone_back_writes_one_record_without_a_stamp(self) -> None:
        """The group made again: its generations start over below the records' stamps."""
        assert next_stamp((57,), 1) == ()
        assert later_wins((), False, (57,), False)
        assert next_stamp((), 1) == (1,)
        assert next_stamp((7,), 9) == (9,)
        assert next_stamp((7, 1), 7) == (7,)
        assert next_stamp(None, 4) == (4, 1)

    def test_headers_and_values_carry_the_stamp(self) -> None:
        assert from_headers([(HEADER, to_header((42,)))]) == (42,)
        assert from_headers({HEADER: b"7.1"}) == (7, 1)
        assert from_headers([("other", b"1.2")]) == ()
        assert from_headers([(HEADER, b"nonsense")]) == ()
        assert from_headers(None) == ()
        assert stamp_of_value(_record(5, (9,))) == (9,)
        assert stamp_of_value(_record(5, None)) == ()
        assert stamp_of_value(b'{"o":{},"r":{}}') == ()  # plain JSON, from before zstd
        assert stamp_of_value(b"\x00not a record") == ()


# ---- histories -----------------------------------------------------------------------------


class _Write(NamedTuple):
    generation: int
    deletes: bool


def _replay(writes: Iterable[_Write]) -> list[tuple[bytes | None, bytes]]:
    """Each write made in turn, over the record the writer holds (the one before it):
    (value, stamp header) as the changelog gets them."""
    out: list[tuple[bytes | None, bytes]] = []
    held: Stamp | None = None
    for n, write in enumerate(writes):
        stamp = next_stamp(held, write.generation)
        out.append((None if write.deletes else _record(n + 1, stamp), to_header(stamp)))
        held = None if write.deletes else stamp
    return out


_any_writes = st.lists(
    st.builds(_Write, st.integers(0, 60), st.booleans()), min_size=1, max_size=30
)


def _fold(records: Iterable[tuple[bytes | None, bytes]]) -> Fold:
    fold = Fold()
    for value, header in records:
        fold.offer(KEY, value, header)
    return fold


@given(_any_writes)
def test_records_written_in_turn_are_all_taken_whatever_the_generations(
    writes: list[_Write],
) -> None:
    """Generations going back (a group made again), deletions and records begun after
    them: the restore keeps the last record, as the changelog's order says."""
    records = _replay(writes)
    fold = _fold(records)
    assert fold.skipped == 0
    assert fold.values == {KEY: records[-1][0]}


@given(
    before=_any_writes,
    stale_deletes=st.booleans(),
    after=st.lists(st.booleans(), min_size=1, max_size=5),
    step=st.integers(1, 5),
)
def test_a_write_of_the_previous_owner_landing_after_the_next_owners_is_skipped(
    before: list[_Write], stale_deletes: bool, after: list[bool], step: int
) -> None:
    """The previous owner (generation g) wrote over the record it held, its write held up;
    the next owner (generation g + step) restored the same record and wrote in turn;
    the previous owner's record lands last: the next owner's last record is kept.

    Not when the previous owner held nothing (the subscriber deleted, or new) and the next
    owner deleted it: a record begun with nothing held follows any deletion (its writer
    could carry no era on), a gap docs/architecture.md names."""
    history = _replay(before)
    held_value, header = history[-1]
    held = None if held_value is None else from_headers([(HEADER, header)])
    if held is None:
        after = [False] * len(after)
    gone = held[0] if held else 0
    old = max(gone, before[-1].generation)
    stale = next_stamp(held, old)
    stale_record = (None if stale_deletes else _record(1000, stale), to_header(stale))
    mine: list[tuple[bytes | None, bytes]] = []
    current = held
    for n, deletes in enumerate(after):
        stamp = next_stamp(current, old + step)
        mine.append((None if deletes else _record(2000 + n, stamp), to_header(stamp)))
        current = None if deletes else stamp
    fold = _fold([*history, *mine, stale_record])
    assert fold.values == {KEY: mine[-1][0]}
    assert fold.skipped == 1


# ---- the store stamps what it writes ---------------------------------------------------------


def test_the_store_stamps_each_record_over_the_one_it_replaces() -> None:
    store, _ = _store([])  # holds a record without a stamp (before stamps were)
    sub = KEY.decode()
    loaded = store.load(sub)
    assert loaded is not None
    assert loaded.stamp == ()
    write = store.save({sub: StateChange(loaded, 2)}, generation=7)
    assert write.headers == [[(HEADER, b"7")]]
    assert stamp_of_value(write.records[0][2] or b"") == (7,)
    store.persisted(write, {2: 41})
    # The group's generation went back (made again): one record without a stamp.
    again = store.load(sub)
    assert again is not None
    write = store.save({sub: StateChange(again, 2)}, generation=1)
    assert write.headers == [[]]
    assert stamp_of_value(write.records[0][2] or b"") == ()
    store.persisted(write, {2: 42})
    # A deletion, stamped over the record held; then a record begun after it.
    write = store.save({sub: StateChange(None, 2)}, generation=3)
    assert write.headers == [[(HEADER, b"3")]]
    store.persisted(write, {2: 43})
    write = store.save({sub: StateChange(SubscriberState(watermark=1), 2)}, generation=3)
    assert write.headers == [[(HEADER, b"3.1")]]
    # Without a generation (no group: the tests' and tools' stores), nothing is stamped.
    assert store.save({sub: StateChange(SubscriberState(), 2)}).headers is None


async def test_the_runtime_stamps_the_changelog_with_the_generation_it_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class _App:
        consumer_generation_id = 12
        rebalancing_count = 3

    order: list[str] = []
    store, _ = _store(order)
    changelog = FakeChangelog(order)
    runtime = _runtime(monkeypatch, changelog)
    owned = group_ownership(_App(), lambda: [2], [2])
    new = SubscriberState(watermark=9)
    assert await runtime._publish(
        BatchResult(changes={KEY.decode(): StateChange(new, 2)}), store, owned
    )
    assert changelog.headers == [[(HEADER, b"12")]]
    assert stamp_of_value(changelog.records[0][2] or b"") == (12,)


async def test_a_save_retried_after_a_record_failed_its_write_stamps_as_the_first_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record that cannot be written (a ring of no digests) fails the save; the runtime
    mends it (`mend_unwritable`) and saves again. The failed try had stamped the records
    before it: the retry read those stamps as the ones held, so a record begun with
    nothing held lost its mark (`12.1` went out as `12`, and a deletion the restore read
    before it then won over it), and a record over a generation gone back was stamped
    (`12`, losing to the older ones) instead of written without a stamp."""

    class _App:
        consumer_generation_id = 12
        rebalancing_count = 3

    order: list[str] = []
    store, _ = _store(order)
    changelog = FakeChangelog(order)
    runtime = _runtime(monkeypatch, changelog)
    owned = group_ownership(_App(), lambda: [2], [2])
    above = SubscriberState(watermark=4, stamp=(20,))  # held from a generation gone back
    damaged = SubscriberState(watermark=3, recent={"r": [1, 2]}, stamp=())  # type: ignore[list-item]
    changes = {
        "13000000002": StateChange(SubscriberState(watermark=9), 2),  # nothing held
        "13000000003": StateChange(above, 2),
        "13000000004": StateChange(None, 2),  # a deletion of a key nothing is known of
        "13000000005": StateChange(damaged, 2),  # fails its write: mended, saved again
    }
    assert await runtime._publish(BatchResult(changes=changes), store, owned)
    assert changelog.headers == [[(HEADER, b"12.1")], [], [(HEADER, b"12.1")], [(HEADER, b"12")]]
    assert [stamp_of_value(value) for _, _, value in changelog.records if value] == [
        (12, 1),
        (),
        (12,),
    ]


def test_a_new_subscriber_whose_events_failed_twice_in_a_batch_is_stamped_as_begun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each failed event puts the subscriber's state back as the batch's records before it
    left it; from the second failure on, that state was read back from its JSON, which
    keeps no "nothing held" (`stamp` None reads back as `()`, unstamped): the record of a
    new subscriber went out stamped `7`, not `7.1`, and a restore that read a deletion of
    the key stamped above it dropped the record."""
    found = detector()
    apply = found.apply

    def failing(sub: str, event: Any, *rest: Any, **kw: Any) -> None:
        if getattr(event, "country", None) == "KR":
            raise ZeroDivisionError("a rule's bug")
        apply(sub, event, *rest, **kw)

    monkeypatch.setattr(found, "apply", failing)
    records = later(arrival("JP"), arrival("KR"), arrival("FR"), arrival("KR"))
    result = found.process(records, lambda _sub: None, None)
    assert [type(f) for f in result.failures] == [ZeroDivisionError, ZeroDivisionError]
    store, _ = _store([])  # holds another subscriber's record, none of this one's
    write = store.save(result.changes, generation=7)
    assert write.headers == [[(HEADER, b"7.1")]]


def test_a_save_that_fails_leaves_the_store_and_the_records_as_they_were() -> None:
    """Nothing of a failed save is pending (read by `load`), nor stamped on its records."""
    store, _ = _store([])
    new = SubscriberState(watermark=9)
    damaged = SubscriberState(recent={"r": [1, 2]}, stamp=(3,))  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.save({"13000000002": StateChange(new, 2), KEY.decode(): StateChange(damaged, 2)}, 7)
    assert new.stamp is None
    assert damaged.stamp == (3,)
    assert store.load("13000000002") is None
    assert store.load(KEY.decode()) == SubscriberState(watermark=5)


# ---- every restore path: Faust's recovery and standbys, the bulk read --------------------------


class _Msg(NamedTuple):
    tp: TP
    partition: int
    offset: int
    key: bytes
    value: bytes | None
    headers: Any


class _Event(NamedTuple):
    message: _Msg
    key: bytes
    value: bytes | None


def _event(offset: int, value: bytes | None, stamp: Stamp) -> _Event:
    headers = [(HEADER, to_header(stamp))] if stamp else []
    tp = TP("app-subscribers-changelog", 2)
    return _Event(_Msg(tp, 2, offset, KEY, value, headers), KEY, value)


@pytest.fixture(params=["memory", "rocksdb"])
def table(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    if request.param == "rocksdb":
        pytest.importorskip("rocksdict")
    monkeypatch.setenv("MOMENTS_STORE", request.param)
    monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path))
    app = create_app(load_settings())
    return app.tables.add(
        PreloadingTable(
            app, name="subs", default=None, partitions=4, key_type=bytes, value_type=bytes
        )
    )


def _held(table: Any) -> bytes | None:
    store = FaustTableStore(table, "roaming", partitions=4)
    state = store.load(KEY.decode())
    return None if state is None else state.to_bytes()


class TestRestorePaths:
    def test_a_stale_record_in_the_same_batch_is_skipped(self, table: Any) -> None:
        newer, stale = _record(9, (5,)), _record(7, (4,))
        table.apply_changelog_batch([_event(10, newer, (5,)), _event(11, stale, (4,))])
        assert _held(table) == newer
        assert table.stale_skipped == 1

    def test_a_stale_record_in_a_later_batch_is_skipped(self, table: Any) -> None:
        """Faust's recovery and a standby copy read the changelog batch after batch: the
        record held is read back from the store."""
        newer, stale = _record(9, (5,)), _record(7, (4,))
        table.apply_changelog_batch([_event(10, newer, (5,))])
        table.apply_changelog_batch([_event(11, stale, (4,))])
        assert _held(table) == newer

    def test_a_stale_record_does_not_bring_a_deleted_subscriber_back(self, table: Any) -> None:
        stale = _record(7, (4,))
        table.apply_changelog_batch([_event(10, _record(8, (4,)), (4,))])
        table.apply_changelog_batch([_event(11, None, (5,))])
        table.apply_changelog_batch([_event(12, stale, (4,))])
        assert _held(table) is None
        begun = _record(1, (5, 1))  # a record begun after the deletion: taken
        table.apply_changelog_batch([_event(13, begun, (5, 1))])
        assert _held(table) == begun

    def test_records_without_stamps_restore_in_log_order(self, table: Any) -> None:
        """A changelog written before stamps were restores as it always did; the first
        stamped record after them is taken too."""
        one, two, three = _record(1, None), _record(2, None), _record(3, (0,))
        table.apply_changelog_batch([_event(1, one, ()), _event(2, two, ())])
        assert _held(table) == two
        table.apply_changelog_batch([_event(3, None, ()), _event(4, one, ())])
        assert _held(table) == one
        table.apply_changelog_batch([_event(5, three, (0,))])
        assert _held(table) == three

    def test_what_the_worker_writes_itself_is_what_a_later_record_meets(self, table: Any) -> None:
        """A deletion restored, then a record the worker begins and writes itself: a stale
        record after it is compared with that record (kept), not with the deletion (it
        was replaced by the deletion again). Then the worker's own deletion: a stale
        record after it does not bring the subscriber back."""
        table.apply_changelog_batch([_event(10, None, (5,))])
        store = FaustTableStore(table, "roaming", partitions=4)
        sub = KEY.decode()
        write = store.save({sub: StateChange(SubscriberState(watermark=20), 2)}, generation=6)
        store.persisted(write, {2: 11})
        mine = _held(table)
        assert mine is not None
        assert stamp_of_value(mine) == (6,)  # over the deletion it knew
        table.apply_changelog_batch([_event(12, _record(7, (5,)), (5,))])
        assert _held(table) == mine
        write = store.save({sub: StateChange(None, 2)}, generation=6)
        store.persisted(write, {2: 13})
        table.apply_changelog_batch([_event(14, _record(7, (5,)), (5,))])
        assert _held(table) is None

    def test_a_record_begun_over_a_known_deletion_is_stamped_over_it(self, table: Any) -> None:
        """The worker knows the tombstone's stamp (it restored it): the record it begins
        is stamped over it, not as begun with nothing held, so a previous owner's record
        begun the same way and landing after it is skipped; a generation gone back below
        the tombstone's writes it without a stamp."""
        table.apply_changelog_batch([_event(10, None, (5,))])
        store = FaustTableStore(table, "roaming", partitions=4)
        sub = KEY.decode()
        write = store.save({sub: StateChange(SubscriberState(watermark=20), 2)}, generation=6)
        assert stamp_of_value(write.records[0][2] or b"") == (6,)
        store.discard(write)
        write = store.save({sub: StateChange(SubscriberState(watermark=20), 2)}, generation=2)
        assert write.headers == [[]]
        store.discard(write)
        # Deleted by the worker itself: the record begun after is stamped over its tombstone.
        table.apply_changelog_batch([_event(11, _record(8, (6,)), (6,))])
        write = store.save({sub: StateChange(None, 2)}, generation=7)
        store.persisted(write, {2: 12})
        write = store.save({sub: StateChange(SubscriberState(watermark=30), 2)}, generation=7)
        assert write.headers == [[(HEADER, b"7")]]

    def test_a_record_whose_frame_names_another_dictionary_fences_with_its_stamp(
        self, table: Any
    ) -> None:
        """A record whose frame's dictionary id was damaged is read whole (the worker
        mends it, `statezip.MisnamedRecordError`), its stamp too: read as no stamp, a
        stale record landing after it replaced it, and a deletion over it in a generation
        gone back was stamped, then lost to it at the next restore."""
        held = with_dictionary_id(_record(9, (5,)), 7)
        table.apply_changelog_batch([_event(10, held, (5,))])
        table.apply_changelog_batch([_event(11, _record(7, (4,)), (4,))])
        store = FaustTableStore(table, "roaming", partitions=4)
        assert store.table.data.get(KEY) == held  # the stale record skipped
        write = store.save({KEY.decode(): StateChange(None, 2)}, generation=3)
        assert write.headers == [[]]  # below the record held: without a stamp
        assert stamp_of_value(held) == (5,)


class TestStaleRecordsCounted:
    """The records a restore skips as stale were only logged: ops had nothing to graph or
    alert on. A worker counts them in moments_state_stale_records_skipped_total by
    partition (no subscriber id), every partition's series at 0 from the start."""

    @pytest.fixture
    def worker(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> tuple[Any, Metrics]:
        monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path))
        settings = load_settings()
        app = create_app(settings)
        metrics = Metrics()
        register_agents(app, settings, Runtime(settings, metrics, Detector(RuleSet.of([]), {})))
        table = next(t for t in app.tables.values() if isinstance(t, PreloadingTable))
        return table, metrics

    @staticmethod
    def skipped(metrics: Metrics, partition: int) -> float | None:
        return metrics.registry.get_sample_value(
            "moments_state_stale_records_skipped_total", {"partition": str(partition)}
        )

    def test_every_partitions_series_starts_at_0(self, worker: tuple[Any, Metrics]) -> None:
        table, metrics = worker
        assert table.partitions > 1
        assert all(self.skipped(metrics, p) == 0.0 for p in range(table.partitions))
        assert self.skipped(metrics, table.partitions) is None

    def test_faust_recovery_and_standby_copies_count_what_they_skip(
        self, worker: tuple[Any, Metrics]
    ) -> None:
        table, metrics = worker
        newer, stale = _record(9, (5,)), _record(7, (4,))
        table.apply_changelog_batch([_event(10, newer, (5,)), _event(11, stale, (4,))])
        table.apply_changelog_batch([_event(12, stale, (4,))])
        assert self.skipped(metrics, 2) == 2
        assert self.skipped(metrics, 1) == 0

    async def test_the_bulk_restore_counts_what_it_skips(
        self, worker: tuple[Any, Metrics], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Skipped in the read (a stale record after a newer one in the changelog) and
        against the record the store holds (a RocksDB volume's tail)."""
        table, metrics = worker
        table.apply_changelog_batch([_event(10, _record(9, (6,)), (6,))])
        tp = TP("app-subscribers-changelog", 2)
        other = b"13000000002"

        async def read(
            servers: Any, kwargs: Any, starts: Any
        ) -> dict[TP, restore.ChangelogPartition]:
            part = restore.ChangelogPartition(end=20)
            part.kept.offer(other, _record(9, (5,)), to_header((5,)))
            part.kept.offer(other, _record(7, (4,)), to_header((4,)))  # skipped in the read
            part.kept.offer(KEY, _record(7, (5,)), to_header((5,)))  # below the held (6,)
            return {tp: part}

        monkeypatch.setattr(restore, "read_changelog", read)
        table.client = ([], {})
        await table._preload({tp: 10}, {tp})
        assert self.skipped(metrics, 2) == 2


class TestDeletionsOnARocksDBVolume:
    """A worker restarted on its RocksDB volume reads only the changelog after the offset
    the volume holds. The stamps of the tombstones before it were remembered only in
    memory: gone with the restart, a previous owner's stale record in the tail, landing
    after the deletion, found nothing held and no deletion known, and brought the
    forgotten subscriber back. The volume now keeps them beside the records."""

    @pytest.fixture
    def volume(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
        pytest.importorskip("rocksdict")
        monkeypatch.setenv("MOMENTS_STORE", "rocksdb")
        monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path))

        def open_table() -> Any:
            app = create_app(load_settings())
            return app.tables.add(
                PreloadingTable(
                    app, name="subs", default=None, partitions=4, key_type=bytes, value_type=bytes
                )
            )

        return open_table

    @staticmethod
    def restarted(table: Any, open_table: Any) -> Any:
        """The same volume opened by a new process (Faust's stop: databases let go)."""
        table.data._dbs.clear()
        del table
        gc.collect()
        return open_table()

    def deleted_by_a_restore(self, open_table: Any) -> Any:
        table = open_table()
        table.apply_changelog_batch([_event(10, _record(8, (4,)), (4,)), _event(11, None, (5,))])
        return table

    def deleted_by_the_worker(self, open_table: Any) -> Any:
        table = open_table()
        table.apply_changelog_batch([_event(10, _record(8, (4,)), (4,))])
        store = FaustTableStore(table, "roaming", partitions=4)
        write = store.save({KEY.decode(): StateChange(None, 2)}, generation=5)
        assert write.headers == [[(HEADER, b"5")]]
        store.persisted(write, {2: 11})
        return table

    @pytest.mark.parametrize("deleted_by", ["deleted_by_a_restore", "deleted_by_the_worker"])
    def test_faust_recovery_of_the_tail(self, volume: Any, deleted_by: str) -> None:
        table = getattr(self, deleted_by)(volume)
        assert _held(table) is None
        table = self.restarted(table, volume)
        assert table.persisted_offset(TP("app-subscribers-changelog", 2)) == 11
        table.apply_changelog_batch([_event(12, _record(7, (4,)), (4,))])  # the stale write
        assert _held(table) is None
        assert table.stale_skipped == 1
        begun = _record(1, (6, 1))  # a record begun after the deletion: taken
        table.apply_changelog_batch([_event(13, begun, (6, 1))])
        assert _held(table) == begun

    async def test_the_bulk_restore_of_the_tail(
        self, volume: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        table = self.restarted(self.deleted_by_a_restore(volume), volume)
        tp = TP("app-subscribers-changelog", 2)

        async def read(
            servers: Any, kwargs: Any, starts: Any
        ) -> dict[TP, restore.ChangelogPartition]:
            assert starts == {tp: 12}  # the tail only
            part = restore.ChangelogPartition(end=13)
            part.kept.offer(KEY, _record(7, (4,)), to_header((4,)))
            return {tp: part}

        monkeypatch.setattr(restore, "read_changelog", read)
        table.client = ([], {})
        await table._preload({tp: 11}, {tp})
        assert _held(table) is None

    def test_the_worker_stamps_a_record_over_a_deletion_before_the_restart(
        self, volume: Any
    ) -> None:
        """Known again, the deletion is what the worker's next record of the subscriber is
        stamped over: a previous owner's record begun the same way is then fenced."""
        table = self.restarted(self.deleted_by_a_restore(volume), volume)
        store = FaustTableStore(table, "roaming", partitions=4)
        write = store.save({KEY.decode(): StateChange(SubscriberState(watermark=20), 2)}, 6)
        assert write.headers == [[(HEADER, b"6")]]
        store.persisted(write, {2: 12})
        table = self.restarted(table, volume)
        table.apply_changelog_batch([_event(13, None, (5,))])  # a stale tombstone
        assert _held(table) is not None

    def test_a_deletion_remembered_never_outweighs_a_record_the_store_holds(
        self, volume: Any
    ) -> None:
        """An older version ran on the volume after the deletion (it opens the database and
        ignores the family) and wrote a record of the subscriber: the family still holds
        the deletion. A stale record after it is compared with the record held, not with
        the deletion: skipped, and the record stays (handed on as the deletion, it would
        have deleted it)."""
        table = self.restarted(self.deleted_by_a_restore(volume), volume)
        held = _record(30, (7,))
        table.data._db_for_partition(2).put(KEY, held)  # as the older version wrote it
        table.apply_changelog_batch([_event(13, _record(7, (6,)), (6,))])
        assert _held(table) == held


class TestDeletionsOfAPartitionGivenUp:
    """The deletions a table remembers were one dict for the whole worker: a partition given
    up in a rebalance left its deletions in memory for as long as the worker ran, so a
    worker held the deletions of every partition it ever held (docs/operations.md says
    it holds those of the partitions it holds). They leave with the partition now; with
    RocksDB they are read back from the partition's database when it comes back."""

    async def test_they_leave_memory_with_the_partition(
        self, table: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        changelog = table.changelog_topic.get_topic_name()
        table.apply_changelog_batch([_event(10, _record(8, (4,)), (4,)), _event(11, None, (5,))])
        assert table._deleted.get(KEY) == (5,)  # partition 2's
        assignment: set[TP] = {TP(changelog, 0), TP(changelog, 2)}
        monkeypatch.setattr(table.app.assignor, "assigned_actives", lambda: assignment)
        monkeypatch.setattr(table.app.assignor, "assigned_standbys", set)
        await table.on_rebalance(set(assignment), set(), set(assignment), 3)
        assert table._deleted.get(KEY) == (5,)  # kept through a rebalance that keeps it
        given_up = {TP(changelog, 2)}
        assignment = {TP(changelog, 0)}
        await table.on_rebalance(set(assignment), given_up, set(), 4)
        assert KEY not in table._deleted
        assignment = {TP(changelog, 0), TP(changelog, 2)}
        await table.on_rebalance(set(assignment), set(), given_up, 5)
        on_a_volume = getattr(table.data, "_dbs", None) is not None
        # RocksDB: read back from the partition's database; memory: from the changelog.
        assert table._deleted.get(KEY) == ((5,) if on_a_volume else None)


class _CrashError(Exception):
    """The worker killed in the middle of a changelog batch."""


def _then_crash(events: list[_Event]) -> Iterator[_Event]:
    yield from events
    raise _CrashError


class TestACrashInTheMiddleOfAChangelogBatch:
    """The deletions' family is written while Faust's store reads a changelog batch, before
    it writes the batch's records and then its offset: a worker killed in between leaves
    the family ahead of the records and of the offset. On the restart the batch is read
    again from the offset the volume holds, and the family's word is then the same as it
    would have been without the crash. A guard, no bug to fail on (driven through the
    table's methods in that order, on a real RocksDB volume)."""

    @pytest.fixture
    def volume(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
        pytest.importorskip("rocksdict")
        monkeypatch.setenv("MOMENTS_STORE", "rocksdb")
        monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path))

        def open_table() -> Any:
            app = create_app(load_settings())
            return app.tables.add(
                PreloadingTable(
                    app, name="subs", default=None, partitions=4, key_type=bytes, value_type=bytes
                )
            )

        return open_table

    @staticmethod
    def family(table: Any) -> dict[bytes, bytes]:
        db = table.data._db_for_partition(2)
        return dict(db.get_column_family(restore.DELETIONS_FAMILY).items())

    def test_killed_after_a_deletion_was_remembered(self, volume: Any) -> None:
        table = volume()
        held = _record(8, (4,))
        table.apply_changelog_batch([_event(10, held, (4,))])
        with pytest.raises(_CrashError):
            table.apply_changelog_batch(_then_crash([_event(11, None, (5,))]))
        assert self.family(table) == {KEY: b"5"}  # ahead of the records and the offset
        assert _held(table) == held
        table = TestDeletionsOnARocksDBVolume.restarted(table, volume)
        tp = TP("app-subscribers-changelog", 2)
        assert table.persisted_offset(tp) == 10
        assert _held(table) == held  # the record held counts, not the deletion
        # The batch read again, and a previous owner's record landing after it.
        table.apply_changelog_batch([_event(11, None, (5,)), _event(12, _record(7, (4,)), (4,))])
        assert _held(table) is None
        table.apply_changelog_batch([_event(13, _record(6, (4,)), (4,))])
        assert _held(table) is None
        assert table.stale_skipped == 2
        assert self.family(table) == {KEY: b"5"}

    def test_killed_after_a_deletion_was_forgotten(self, volume: Any) -> None:
        table = volume()
        table.apply_changelog_batch([_event(10, _record(8, (4,)), (4,)), _event(11, None, (5,))])
        begun = _record(1, (6, 1))
        with pytest.raises(_CrashError):
            table.apply_changelog_batch(
                _then_crash([_event(12, _record(7, (4,)), (4,)), _event(13, begun, (6, 1))])
            )
        assert self.family(table) == {}  # forgotten: the record begun after it was read
        assert _held(table) is None
        table = TestDeletionsOnARocksDBVolume.restarted(table, volume)
        assert table.persisted_offset(TP("app-subscribers-changelog", 2)) == 11
        # Read again: the previous owner's record is taken (no deletion known now), and the
        # record begun after the deletion replaces it, as without the crash.
        table.apply_changelog_batch([_event(12, _record(7, (4,)), (4,)), _event(13, begun, (6, 1))])
        assert _held(table) == begun
        table.apply_changelog_batch([_event(14, _record(6, (5,)), (5,))])
        assert _held(table) == begun
        assert self.family(table) == {}
