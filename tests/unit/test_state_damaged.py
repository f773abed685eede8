"""A damaged subscriber record (bytes that hold no record, or fields of shapes the detector
never writes) is mended where it is read: the bad fields reset (all of it when nothing
can be read), the subscriber's events applied, the record written back sound and said
in `BatchResult.damaged`. Before, such a record raised out of `Detector.process` (or made
every event of the subscriber a dead letter `detector_error`): the batch failed, the
batch loop's task crashed the worker, and its restart read the same batch again. A record
a newer version wrote (a dictionary this one lacks) still fails the batch, as
docs/operations.md ("Rolling back") says."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from prometheus_client import CollectorRegistry

from moments.backtest import Backtest
from moments.backtest_input import EventFile, merged
from moments.backtest_state import BacktestState
from moments.batchresult import BatchResult, StateChange, mend_unwritable
from moments.engine import Detector
from moments.logmask import mask_text
from moments.models import EventType
from moments.pipeline import to_records
from moments.records import RawRecord
from moments.runtime import Runtime
from moments.settings import load_settings
from moments.simulate import limit, simulate, write_jsonl
from moments.state import UNREADABLE, DamagedRecordError, SubscriberState, mark_id
from moments.statedamage import report_damaged
from moments.stateview import changelog_topic
from moments.statezip import CURRENT_DICTIONARY, NewerRecordError, dictionary, pack, unpack
from moments.store import DictStateStore
from moments.sweep import sweep
from rules.rule import state_tag
from sinks.metrics import Metrics

from .catalogs import default_rules
from .rules.helpers import BIRTHDAY, NO_ACTIVITY, NO_GATES, SUB, WELCOME, at, ev, rules_from, run

ARRIVAL_DAY = "2026-11-02"


def detector() -> Detector:
    return Detector(rules_from("rules:" + WELCOME), {t.value: t for t in EventType})


def arrival(country: str, day: str = ARRIVAL_DAY) -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.ROAMING, at(day), country=country, roaming_type="international")


def store_after_japan() -> DictStateStore:
    """A store whose subscriber arrived in Japan (first-time key kept) with a profile."""
    store = DictStateStore(cache_capacity=0)
    profile = ev(EventType.PROFILE, at("2026-11-01"), tier="gold", timezone="Asia/Shanghai")
    offsets: dict[str, int] = {}
    result = detector().process(
        to_records([profile, arrival("JP")], offsets=offsets), store.load, None
    )
    assert [t.moment.params["country"] for t in result.tasks] == ["JP"]
    store.save(result.changes)
    return store


def damage(store: DictStateStore, **fields: Any) -> None:
    """The stored record with these fields replaced (as a damaged or hand-edited one)."""
    doc = orjson.loads(unpack(store.data[SUB]))
    doc.update(fields)
    store.data[SUB] = pack(orjson.dumps(doc))


def later(*events: tuple[EventType, dict[str, Any]]) -> list[RawRecord]:
    """Records after those `store_after_japan` applied (offsets past theirs)."""
    return to_records(list(events), offsets={"roaming": 5, "profile": 5})


MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"o": [1, 2]}, "offsets"),  # read before the event's try: the batch raised
    ({"o": {"r0": "7"}}, "offsets"),
    ({"e": "x"}, "erased"),
    ({"n": {"r": "yesterday"}}, "seen"),  # read inside it: every event a detector_error
    ({"f": ["JP"]}, "first_seen"),
    ({"p": ["gold"]}, "profile"),
]


@pytest.mark.parametrize(("fields", "reset"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_a_malformed_field_is_reset_and_the_rest_kept(fields: dict[str, Any], reset: str) -> None:
    """A later arrival in Korea makes its task; Japan is still not first (the first-time
    keys kept, unless they were what was damaged), the profile kept; the record is
    written back sound."""
    store = store_after_japan()
    damage(store, **fields)
    result = detector().process(
        later(arrival("KR", "2026-11-03"), arrival("JP", "2026-11-03")), store.load, None
    )
    assert not result.failures
    assert not result.dead_letters
    fired = ["KR", "JP"] if reset == "first_seen" else ["KR"]
    assert [t.moment.params["country"] for t in result.tasks] == fired
    assert result.damaged == {SUB: reset}
    store.save(result.changes)
    again = SubscriberState.from_bytes(store.data[SUB])
    assert again.faults() == []
    if reset != "profile":
        assert again.profile == {"tier": "gold", "timezone": "Asia/Shanghai"}


@pytest.mark.parametrize(
    ("fields", "reset"),
    [({"r": {"r": [1, 2]}}, "recent"), ({"n": {"p": "x", "r": 1}}, "profile_at, seen")],
    ids=["ring", "profile time"],
)
def test_a_record_that_cannot_be_written_is_mended_then(fields: dict[str, Any], reset: str) -> None:
    """A damaged field no rule read fails only the record's write (`to_json`: a ring of
    no digests, a latest profile time of no number): the runtime's write of the batch
    raised, and the worker stopped. `mend_unwritable`, where the write fails, resets it."""
    store = store_after_japan()
    damage(store, **fields)
    result = detector().process(later(arrival("KR", "2026-11-03")), store.load, None)
    assert [t.moment.params["country"] for t in result.tasks] == ["KR"]
    with pytest.raises(TypeError):
        store.save(result.changes)
    mend_unwritable(result)
    assert result.damaged == {SUB: reset}
    store.save(result.changes)
    assert SubscriberState.from_bytes(store.data[SUB]).faults() == []


def test_of_a_field_of_entries_only_the_damaged_ones_go() -> None:
    """A first-time key of no time (nothing reads it: no rule has its tag) beside Japan's,
    in a record mended for its offsets: that entry alone goes, so Japan is still not
    first. The whole field was reset, the sound entries with it: Japan fired again."""
    store = store_after_japan()
    kept = orjson.loads(unpack(store.data[SUB]))["f"]
    damage(store, f={**kept, "gone:XX": "yesterday"}, o=[1, 2])
    result = detector().process(
        later(arrival("KR", "2026-11-03"), arrival("JP", "2026-11-03")), store.load, None
    )
    assert [t.moment.params["country"] for t in result.tasks] == ["KR"]
    assert result.damaged == {SUB: "first_seen, offsets"}
    store.save(result.changes)
    again = SubscriberState.from_bytes(store.data[SUB])
    assert "gone:XX" not in again.first_seen
    assert kept.keys() <= again.first_seen.keys()


def test_mend_drops_the_damaged_entries_of_fields_of_entries() -> None:
    """Rings, marks, times per rule tag, partition or complaint stand alone: a damaged one
    goes, the rest are kept; a field that is no map at all, or one whose entries do not
    stand alone (a roaming place), is reset."""
    state = SubscriberState(
        series={"a": [3, 1.5], "b": ["x"]},  # type: ignore[list-item]
        recent={"u": ["0123456789"], "r": [1]},  # type: ignore[list-item]
        fired={"a": 5, "b": None},  # type: ignore[dict-item]
        fired_by={"a": "0badcafe", "b": 7},  # type: ignore[dict-item]
        leads={"a": ["contract:2027-01-01", 739000], "b": ["x"]},
        complaints={"c1": 10, "c2": "open"},  # type: ignore[dict-item]
        closed=[1, 2],  # type: ignore[arg-type]
        roaming={"z": 9, "o": 60},
    )
    assert state.mend() == [
        "recent",
        "series",
        "fired",
        "fired_by",
        "leads",
        "closed",
        "roaming",
        "complaints",
    ]
    assert state.series == {"a": [3, 1.5]}
    assert state.recent == {"u": ["0123456789"]}
    assert (state.fired, state.fired_by) == ({"a": 5}, {"a": "0badcafe"})
    assert state.leads == {"a": ["contract:2027-01-01", 739000]}
    assert state.complaints == {"c1": 10}
    assert (state.closed, state.roaming) == ({}, {})
    assert state.faults() == []


def test_a_field_nothing_reads_is_left_as_it_is() -> None:
    """Found only where it fails (no check of sound records): a ring of a series no rule in
    force reads is written back as it was read."""
    store = store_after_japan()
    damage(store, s={"ab12": ["x"]})
    result = detector().process(later(arrival("KR", "2026-11-03")), store.load, None)
    assert [t.moment.params["country"] for t in result.tasks] == ["KR"]
    assert result.damaged == {}
    store.save(result.changes)
    kept: Any = SubscriberState.from_bytes(store.data[SUB]).series  # a shape it never holds
    assert kept == {"ab12": ["x"]}


def test_a_series_ring_a_rule_reads_is_reset_when_it_fails() -> None:
    """The default catalog's spend series: a ring of no numbers made every usage event of
    the subscriber a dead letter `detector_error`."""
    found = Detector(default_rules(), {t.value: t for t in EventType})
    store = DictStateStore(cache_capacity=0)
    usage = [
        ev(EventType.USAGE, at("2026-11-02", f"1{n}:00"), kind="voice", quantity=60, charge=1)
        for n in range(2)
    ]
    offsets: dict[str, int] = {}
    first = found.process(to_records(usage[:1], offsets=offsets), store.load, None)
    store.save(first.changes)
    rings = SubscriberState.from_bytes(store.data[SUB]).series
    assert rings
    damage(store, s={tag: ["x"] for tag in rings})
    result = found.process(to_records(usage[1:], offsets=offsets), store.load, None)
    assert not result.failures
    assert result.damaged == {SUB: "series"}
    store.save(result.changes)
    assert SubscriberState.from_bytes(store.data[SUB]).faults() == []


def test_a_profile_field_its_model_refuses_goes_alone() -> None:
    store = store_after_japan()
    damage(store, p={"tier": "gold", "timezone": 7, "quiet_hours": 5})
    result = detector().process(later(arrival("KR", "2026-11-03")), store.load, None)
    assert [t.moment.params["country"] for t in result.tasks] == ["KR"]
    assert result.damaged == {SUB: "profile"}
    store.save(result.changes)
    again = SubscriberState.from_bytes(store.data[SUB])
    assert again.profile == {"tier": "gold"}
    set_at = int(dt.datetime.fromisoformat(at("2026-11-01")).timestamp())
    assert again.profile_at["tier"] == set_at  # the times kept: an older update is refused


UNREADABLE_BYTES = [
    b"\x00\x01garbage",  # not zstd nor JSON
    b"\x28\xb5\x2f\xfd\x00\x00",  # a zstd frame cut short
    b'{"o": {"r0": 3',  # JSON cut short
    b"[1, 2]",  # JSON, no object
]


@pytest.mark.parametrize("stored", UNREADABLE_BYTES)
def test_a_record_that_cannot_be_read_is_begun_afresh(stored: bytes) -> None:
    """Its first-time keys are gone with it: Japan fires again."""
    store = store_after_japan()
    store.data[SUB] = stored
    with pytest.raises(DamagedRecordError):
        SubscriberState.from_bytes(stored)
    result = detector().process(later(arrival("JP", "2026-11-03")), store.load, None)
    assert not result.failures
    assert [t.moment.params["country"] for t in result.tasks] == ["JP"]
    assert result.damaged == {SUB: UNREADABLE}
    store.save(result.changes)
    assert SubscriberState.from_bytes(store.data[SUB]).faults() == []


def test_a_damaged_record_of_a_subscriber_with_no_event_applied_is_written_back() -> None:
    """A dead letter of theirs in the batch led to the check: their record is mended too,
    so it is said once; the other subscribers' events are applied as usual."""
    store = store_after_japan()
    store.data[SUB] = b"\x00\x01garbage"
    other = arrival("JP")[1] | {"subscriber_id": "13900139002", "event_id": "o1"}
    records = later((EventType.ROAMING, other), arrival("KR", "2026-11-03"))
    result = detector().process(records, store.load, None)
    assert sorted(t.subscriber_id for t in result.tasks) == [SUB, "13900139002"]
    assert set(result.damaged) == {SUB}
    assert result.changes[SUB].state == SubscriberState.from_bytes(
        result.changes[SUB].state.to_json()  # type: ignore[union-attr]  # written, not deleted
    )


def test_a_record_of_a_newer_version_still_fails_the_batch() -> None:
    """docs/operations.md, "Rolling back": the worker stops, until it runs a version that
    reads the record; it is not reset, which would lose the newer version's state."""
    samples: list[bytes | bytearray | memoryview[int]] = [
        SubscriberState(watermark=i, recent={"u": [f"{i:012x}"]}).to_json() for i in range(400)
    ]
    newer = zstandard.train_dictionary(1024, samples, dict_id=3)
    store = DictStateStore()
    store.data[SUB] = zstandard.ZstdCompressor(dict_data=newer, write_dict_id=True).compress(
        samples[0]
    )
    with pytest.raises(NewerRecordError, match="dictionary 3"):
        detector().process(to_records([arrival("JP")]), store.load, None)
    with pytest.raises(NewerRecordError):
        list(store.items([0]))  # the window sweep's read too


def with_dictionary_id(stored: bytes, dict_id: int) -> bytes:
    """A record's frame with its header's one-byte dictionary id replaced (a damaged byte)."""
    at = 5 if stored[4] & 0x20 else 6  # after the window descriptor, when there is one
    assert stored[4] & 3 == 1  # a one-byte dictionary id
    return stored[:at] + bytes([dict_id]) + stored[at + 1 :]


@pytest.mark.parametrize("named", [3, 77, 255])
def test_a_record_whose_frame_names_a_dictionary_no_version_has_is_read_and_mended(
    named: int,
) -> None:
    """The frame's dictionary id damaged: a dictionary this version knows reads the rest
    as the record, which no newer version's does. It stopped the worker as a newer
    version's record would; now it is read whole (Japan not first again), said damaged
    and written back naming its dictionary."""
    store = store_after_japan()
    store.data[SUB] = with_dictionary_id(store.data[SUB], named)
    read_whole_and_mended(store)
    assert zstandard.get_frame_parameters(store.data[SUB]).dict_id == CURRENT_DICTIONARY


def read_whole_and_mended(store: DictStateStore) -> None:
    """A record whose frame names another dictionary, read in a batch: Japan not first
    again (read whole), said damaged, and written back readable."""
    result = detector().process(
        later(arrival("KR", "2026-11-03"), arrival("JP", "2026-11-03")), store.load, None
    )
    assert [t.moment.params["country"] for t in result.tasks] == ["KR"]
    assert result.damaged == {SUB: "dictionary id"}
    store.save(result.changes)
    again = SubscriberState.from_bytes(store.data[SUB])
    assert again.profile == {"tier": "gold", "timezone": "Asia/Shanghai"}


@pytest.mark.parametrize(
    ("written", "named"),
    [(CURRENT_DICTIONARY, 0), (CURRENT_DICTIONARY, 1), (1, 0), (1, CURRENT_DICTIONARY)],
)
def test_a_record_whose_frame_names_another_known_dictionary_or_none_is_read_and_mended(
    written: int, named: int
) -> None:
    """The id damaged into one this version has, or into 0 (one bit of 2, or of 1): the
    named dictionary (or none) does not read the frame, and it was begun afresh as
    `unreadable`, Japan first again, where a damage into 3 read it whole. Read with the
    dictionary it was written with, it is the record, said damaged and written back."""
    store = store_after_japan()
    if written != CURRENT_DICTIONARY:  # a record an earlier version wrote
        json = unpack(store.data[SUB])
        store.data[SUB] = zstandard.ZstdCompressor(
            dict_data=dictionary(written), write_dict_id=True, write_content_size=True
        ).compress(json)
    store.data[SUB] = with_dictionary_id(store.data[SUB], named)
    assert zstandard.get_frame_parameters(store.data[SUB]).dict_id == named
    read_whole_and_mended(store)


def test_a_frame_naming_a_dictionary_id_no_version_gives_is_damaged() -> None:
    """Dictionary ids are below 256 (one byte in the frame): a frame naming a larger one
    (its header's id size damaged) is no version's record, and is begun afresh."""
    store = store_after_japan()
    stored = store.data[SUB]
    assert stored[4] & 3 == 1
    store.data[SUB] = stored[:4] + bytes([stored[4] | 3]) + stored[5:]  # a 4-byte id
    assert zstandard.get_frame_parameters(store.data[SUB]).dict_id > 255
    with pytest.raises(DamagedRecordError, match="no version"):
        SubscriberState.from_bytes(store.data[SUB])
    result = detector().process(later(arrival("JP", "2026-11-03")), store.load, None)
    assert [t.moment.params["country"] for t in result.tasks] == ["JP"]
    assert result.damaged == {SUB: UNREADABLE}


def test_a_fault_of_the_rules_on_a_sound_record_is_still_a_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a record `faults` finds damaged is mended: a rule's own error stays what it was."""
    store = store_after_japan()

    def broken(*_: Any) -> None:
        raise ZeroDivisionError("a rule's bug")

    found = detector()
    monkeypatch.setattr(found, "apply", broken)
    result = found.process(later(arrival("KR", "2026-11-03")), store.load, None)
    assert [type(f) for f in result.failures] == [ZeroDivisionError]
    assert [d.reason for d in result.dead_letters] == ["detector_error"]
    assert result.damaged == {}


def test_a_sound_record_is_not_checked_field_by_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check runs only where a batch failed: nothing more for a sound record."""

    def checked(_: SubscriberState) -> list[str]:
        raise AssertionError("faults() ran on a batch that did not fail")

    store = store_after_japan()
    monkeypatch.setattr(SubscriberState, "faults", checked)
    result = detector().process(later(arrival("KR", "2026-11-03")), store.load, None)
    assert [t.moment.params["country"] for t in result.tasks] == ["KR"]


def test_a_simulated_days_records_are_sound(tmp_path: Path) -> None:
    """`faults` finds nothing in what the detector writes (the default catalog, a day of
    simulated events): it never resets a sound field."""
    start = dt.datetime(2026, 5, 11, tzinfo=dt.UTC)
    events = simulate(60, 60 * 72 / 86400, seed=7, start=start)
    path = tmp_path / "day.jsonl"
    write_jsonl(path, events, limit(events, 60 * 72 / 86400, 86400) or 0)
    backtest = Backtest(default_rules())
    asyncio.run(backtest.run(merged([EventFile(path)]), None, None))
    assert isinstance(backtest.state, BacktestState)
    held = list(backtest.state.records.values())
    assert len(held) == 60
    assert sum(bool(s.profile) for s in held) > 30  # profiles are among what is checked
    for state in held:
        assert state.faults() == [], state
        assert SubscriberState.from_bytes(state.to_bytes()).faults() == []


class TestSweep:
    """The window sweep reads every record of its partitions: a damaged one ended it and
    stopped the worker (one that cannot be read), or failed at every sweep."""

    def swept(self, store: DictStateStore) -> Any:
        found = Detector(default_rules(), {t.value: t for t in EventType})
        later = int(dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp())
        return sweep(found, store.items([0]), lambda _p: later, None, store.reread)

    def test_a_record_that_cannot_be_read_is_written_back_afresh(self) -> None:
        store = store_after_japan()
        store.data[SUB] = b"\x00\x01garbage"
        result = self.swept(store)
        assert result.damaged == {SUB: UNREADABLE}
        assert not result.failures
        store.save(result.changes)
        assert SubscriberState.from_bytes(store.data[SUB]).faults() == []

    def test_a_malformed_field_is_reset_and_the_record_swept(self) -> None:
        store = store_after_japan()
        damage(store, c="daily")
        result = self.swept(store)
        assert result.damaged == {SUB: "closed"}
        assert not result.failures
        store.save(result.changes)
        again = SubscriberState.from_bytes(store.data[SUB])
        assert again.faults() == []
        assert again.closed  # swept on the mended record
        assert not again.damaged  # said once

    def test_a_record_whose_frame_names_no_known_dictionary_is_read_and_swept(self) -> None:
        store = store_after_japan()
        store.data[SUB] = with_dictionary_id(store.data[SUB], 9)
        result = self.swept(store)
        assert result.damaged == {SUB: "dictionary id"}
        assert not result.failures
        store.save(result.changes)
        again = SubscriberState.from_bytes(store.data[SUB])
        assert again.profile == {"tier": "gold", "timezone": "Asia/Shanghai"}

    def test_a_sound_record_swept_is_not_said_damaged(self) -> None:
        result = self.swept(store_after_japan())
        assert result.damaged == {}


def test_each_damaged_record_is_counted_and_logged_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Counted by kind, each series from 0; one line a record, the subscriber as `shown`
    gives it (the runtime's: `mask_msisdn` unless MOMENTS_LOG_PII)."""
    metrics = Metrics(CollectorRegistry())
    assert metrics.state_damaged.labels("unreadable")._value.get() == 0
    result = BatchResult(damaged={"13800138001": UNREADABLE, "13900139002": "offsets, seen"})
    with caplog.at_level(logging.WARNING, logger="moments.statedamage"):
        report_damaged(metrics, result, lambda sub: f"sub-{sub[-2:]}", "app-subscribers-changelog")
    assert metrics.state_damaged.labels("unreadable")._value.get() == 1
    assert metrics.state_damaged.labels("malformed")._value.get() == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "subscriber sub-01:" in lines[0]
    assert "begun afresh" in lines[0]
    assert "subscriber sub-02:" in lines[1]
    assert "(offsets, seen): those reset" in lines[1]
    assert not any("1380013" in line or "1390013" in line for line in lines)


class TestWhereTheLogSaysItIs:
    """The log line names where the record is (the state changelog's partition: its key
    the subscriber, masked) and, for a batch, the event that met it (topic, partition,
    offset): before, it named the masked subscriber alone, and the record could not be
    found among the changelog's."""

    def said(self, result: Any, caplog: pytest.LogCaptureFixture, *what: str) -> str:
        settings = load_settings()
        runtime = Runtime(settings, Metrics(CollectorRegistry()), detector())
        with caplog.at_level(logging.WARNING, logger="moments.statedamage"):
            runtime.record(result, *what)
        [line] = [r.getMessage() for r in caplog.records if r.name == "moments.statedamage"]
        assert SUB not in line
        assert "138****8001" in line
        assert f"{changelog_topic(settings)}[0]" in line
        return line

    def test_a_batch_names_the_event_that_met_it(self, caplog: pytest.LogCaptureFixture) -> None:
        store = store_after_japan()
        store.data[SUB] = b"\x00\x01garbage"
        records = later(ev(EventType.PROFILE, at("2026-11-03"), tier="gold"))
        records += later(arrival("KR", "2026-11-03"))
        result = detector().process(records, store.load, None)
        assert result.damaged == {SUB: UNREADABLE}
        assert "met by the event at profile[0] offset=5" in self.said(result, caplog)

    def test_the_offset_of_a_busy_partition_survives_the_log_masking(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The log masks every run of 7 digits or more in free text (an offset read as a
        number, maybe a subscriber's): the event's offset on a partition past a million
        records read `offset *******`, and the line named no record to look at."""
        result = BatchResult(
            damaged={SUB: UNREADABLE},
            damaged_at={SUB: ("telecom.roaming", 0, 48213377)},
            changes={SUB: StateChange(SubscriberState(), 0)},
        )
        line = mask_text(self.said(result, caplog))  # as every log record is written
        assert "48213377" in line
        assert "telecom.roaming[0] offset=48213377" in line
        assert SUB not in line

    def test_a_window_sweep_says_so(self, caplog: pytest.LogCaptureFixture) -> None:
        store = store_after_japan()
        damage(store, c="daily")
        result = TestSweep().swept(store)
        assert result.damaged == {SUB: "closed"}
        assert "met by a window sweep" in self.said(result, caplog, "window sweep")


class TestPairsStayConsistent:
    """Fields that describe one thing together (a cooldown's time and its task, a series'
    ring and where its history began, a changed value and its time, the profile's latest
    time and its fields' times): `mend` dropping a damaged entry of one side left the
    other's entry for the same key, which the detector then read as something else."""

    SILENCE = rules_from(NO_GATES + "rules:" + NO_ACTIVITY)
    TAG = state_tag("no_activity")

    def silent_store(self) -> tuple[Detector, DictStateStore, str]:
        """A store whose subscriber's silence made its task at the 11-09 sweep (a 14-day
        cooldown): the rule's mark and its task held; the task's id returned."""
        found = Detector(self.SILENCE, {t.value: t for t in EventType})
        store = DictStateStore(cache_capacity=0)
        use = ev(EventType.USAGE, at("2026-11-01", "10:00"), kind="data", quantity=1000)
        store.save(found.process(to_records([use]), store.load, None).changes)
        mark = int(dt.datetime.fromisoformat(at("2026-11-09", "01:00")).timestamp())
        swept = sweep(found, store.items([0]), lambda _p: mark, None)
        [task] = swept.tasks
        store.save(swept.changes)
        held = SubscriberState.from_bytes(store.data[SUB])
        assert held.fired_by[self.TAG] == mark_id(task.task_id)
        return found, store, task.task_id

    def test_a_silence_judged_again_after_its_mark_was_dropped_sets_a_cooldown(self) -> None:
        """The mark's time damaged (no number): the next day's close judges the silence
        again and fails on it; mended, the mark's task (`fired_by`) was kept without its
        time, the re-judgement took the mark for its own and set none (`emit`'s `marks`),
        and the rule held no cooldown at all. The mark's task goes with its time: the
        re-judgement's task sets the cooldown again."""
        found, store, first = self.silent_store()
        damage(store, x={self.TAG: "yesterday"})
        roam = arrival("JP", "2026-11-10")  # no usage: the silence goes on, judged at its close
        result = found.process(later(roam), store.load, None)
        assert not result.failures
        assert [t.task_id for t in result.tasks] == [first]  # made again, the same moment
        store.save(result.changes)
        again = SubscriberState.from_bytes(store.data[SUB])
        assert again.faults() == []
        close = int(dt.datetime.fromisoformat(at("2026-11-10", "00:00")).timestamp())
        assert again.fired.get(self.TAG) == close
        assert again.fired_by[self.TAG] == mark_id(first)
        assert result.damaged == {SUB: "fired, fired_by"}

    def test_a_marks_task_goes_with_its_time_and_a_time_stays_without_its_task(self) -> None:
        """`fired_by` without `fired` is never written (the task is named once its mark is
        set): it goes with the time, whole when `fired` is no map. A mark whose task was
        damaged is kept: a mark of before tasks were named holds the cooldown back all the
        same, and a dropped task's return removes it by its time (moments.cooldowns)."""
        state = SubscriberState(
            fired={"a": "x", "b": 5, "c": 7},  # type: ignore[dict-item]
            fired_by={"a": "0badcafe", "b": 9, "c": "12345678"},  # type: ignore[dict-item]
        )
        assert state.mend() == ["fired", "fired_by"]
        assert (state.fired, state.fired_by) == ({"b": 5, "c": 7}, {"c": "12345678"})
        whole = SubscriberState(fired=[5], fired_by={"a": "0badcafe"})  # type: ignore[arg-type]
        assert whole.mend() == ["fired", "fired_by"]
        assert (whole.fired, whole.fired_by) == ({}, {})

    def test_a_series_ring_dropped_takes_its_begin_with_it(self) -> None:
        """A begin (`<tag>.b`, rules.series) says where the subscriber's history in the
        series began for a "fewer than" test; kept without its ring, the test read the
        windows since as empty and fired ("fewer than 3 calls in 4 weeks" for a customer
        whose calls the ring held): a moment made up. Without either, the history begins
        again at the next event, as for a new subscriber. A begin damaged alone goes alone:
        the ring's first window is then where the history begins (later: the test waits)."""
        state = SubscriberState(
            series={
                "ab": ["x"],  # type: ignore[list-item]
                "ab.b": [739000],
                "cd": [739001, 739000, 2],
                "cd.b": ["y"],  # type: ignore[list-item]
                "ef.b": [739001],  # a begin with no ring yet: no event in the series
            }
        )
        assert state.mend() == ["series"]
        assert state.series == {"cd": [739001, 739000, 2], "ef.b": [739001]}

    def test_a_changed_value_whose_time_was_dropped_is_dated_at_the_watermark(self) -> None:
        """`last` without `last_at` is a value kept before its time was: a record of the old
        handset read late, dated before the new one's, is taken for a change ("new
        handset"), and the next of the new one for another. Dated at the latest event time
        applied (at or after the value's own), such a record is still read late; only a
        value dated between the lost time and that one waits for its line's next record.
        A value dropped keeps its time: a record dated before it is still read late, and
        the next newer one is the baseline."""
        state = SubscriberState(
            last={"a": "35693803564380", "b": 7, "c": "86"},  # type: ignore[dict-item]
            last_at={"a": "x", "b": 1_790_000_000, "c": 1_790_000_100},  # type: ignore[dict-item]
            watermark=1_790_000_500,
        )
        assert state.mend() == ["last", "last_at"]
        assert state.last == {"a": "35693803564380", "c": "86"}
        assert state.last_at == {"a": 1_790_000_500, "b": 1_790_000_000, "c": 1_790_000_100}

    def test_the_latest_profile_time_dropped_is_its_fields_latest(self) -> None:
        """`seen["p"]` is the newest profile update's time that set a field: the latest of
        the fields' times (`profile_at`). Dropped alone, an update carrying no field dated
        before the latest was applied, and the next day's look took the profile as the one
        it read (moments.sweep); it is the fields' latest again."""
        state = SubscriberState(
            profile={"tier": "gold"},
            profile_at={"tier": 1_790_000_000, "opt_out": 1_790_000_300},
            seen={"p": "x", "u": 1_790_000_400},  # type: ignore[dict-item]
        )
        assert state.mend() == ["seen"]
        assert state.seen == {"p": 1_790_000_300, "u": 1_790_000_400}


class TestSweptAgainAsStored:
    """A record whose sweep failed on a damaged field is mended and swept again from the
    record as stored. Swept again as the failure left it, its day was marked closed and
    looked at already: the closes and the look returned at once, and the day's task, its
    cooldown and the day's window were lost (the record said damaged all the same)."""

    BIRTHDAY_KEPT = NO_GATES + (
        "rules:"
        + BIRTHDAY.replace('description: "Happy birthday!"', 'description: "Hi", cooldown: 300d')
    )

    def test_a_silence_swept_after_its_mark_was_damaged_makes_its_task_and_closes_the_day(
        self,
    ) -> None:
        """The mark's time damaged, the next day's sweep (01:00) judges the silence again."""
        silence = TestPairsStayConsistent()
        found, store, first = silence.silent_store()
        damage(store, x={silence.TAG: "yesterday"})
        mark = int(dt.datetime.fromisoformat(at("2026-11-10", "01:00")).timestamp())
        result = sweep(found, store.items([0]), lambda _p: mark, None, store.reread)
        assert not result.failures
        assert [t.task_id for t in result.tasks] == [first]  # made again, the same moment
        assert result.damaged == {SUB: "fired, fired_by"}
        store.save(result.changes)
        again = SubscriberState.from_bytes(store.data[SUB])
        assert again.faults() == []
        close = int(dt.datetime.fromisoformat(at("2026-11-10", "00:00")).timestamp())
        assert again.fired.get(silence.TAG) == close  # the cooldown set again
        assert again.fired_by[silence.TAG] == mark_id(first)
        assert again.closed["day"] == dt.date(2026, 11, 10).toordinal()  # the window advanced

    def test_a_greeting_whose_mark_was_damaged_is_made_at_the_days_look(self) -> None:
        """Through the pipeline's sweeps: the birthday rule's mark damaged, its look on the
        day fails on it (the day already marked looked at) and makes the greeting swept
        again from the stored record."""
        rules = rules_from(self.BIRTHDAY_KEPT)
        profile = ev(EventType.PROFILE, at("2026-11-01"), birthday="11-10")
        first = run(rules, [profile], until=at("2026-11-02", "10:00"))
        assert first.tasks == []
        doc = orjson.loads(unpack(first.store.data[SUB]))
        doc["x"] = {state_tag("birthday_greeting"): "yesterday"}
        first.store.data[SUB] = pack(orjson.dumps(doc))
        out = run(rules, [], until=at("2026-11-10", "10:00"), result=first)
        assert [t.moment.type for t in out.tasks] == ["birthday"]
        held = SubscriberState.from_bytes(out.store.data[SUB])
        assert held.special_day == dt.date(2026, 11, 10).toordinal()
        assert isinstance(held.fired[state_tag("birthday_greeting")], int)

    def test_a_pipeline_sweep_goes_on_with_the_record_mended_from_the_store(self) -> None:
        """The pipeline asks each record swept when it is next due: a record mended from
        the store is the one written, the copy it loaded (still damaged) is not read."""
        rules = rules_from(self.BIRTHDAY_KEPT)
        profile = ev(EventType.PROFILE, at("2026-11-01"), birthday="11-10")
        first = run(rules, [profile], until=at("2026-11-02", "10:00"))
        doc = orjson.loads(unpack(first.store.data[SUB]))
        doc["c"] = "daily"
        first.store.data[SUB] = pack(orjson.dumps(doc))
        out = run(rules, [], until=at("2026-11-10", "10:00"), result=first)
        assert [t.moment.type for t in out.tasks] == ["birthday"]
        assert SubscriberState.from_bytes(out.store.data[SUB]).faults() == []
