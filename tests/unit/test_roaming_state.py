"""A subscriber record's roaming place (`SubscriberState.roaming`) with keys this version
does not write (a newer version's, say) is read and written back as it is, not dropped on
load: nothing here reads them (the gates read `z`, `o` and `c`), dropping them would
erase what a newer version knows of the trip during a rolling update or a rollback (as
docs/operations.md "Rolling back" says of records), and they are not kept forever: the
subscriber's next roaming record, abroad or home, replaces the place whole."""

from __future__ import annotations

from typing import Any

from moments.engine import Detector
from moments.models import EventType
from moments.pipeline import to_records
from moments.state import SubscriberState
from moments.store import DictStateStore

from .rules.helpers import SUB, WELCOME, at, ev, rules_from

NEWER = {"z": "Asia/Tokyo", "n": "NTT DOCOMO"}
"""A roaming place as a version keeping the visited network (`n`) would write it."""


def _stored_with_newer_place() -> tuple[Detector, DictStateStore, dict[str, int]]:
    detector = Detector(rules_from("rules:" + WELCOME), {t.value: t for t in EventType})
    store = DictStateStore(cache_capacity=0)
    offsets: dict[str, int] = {}
    arrival = ev(EventType.ROAMING, at("2026-11-02"), country="JP", roaming_type="international")
    store.save(detector.process(to_records([arrival], offsets=offsets), store.load, None).changes)
    state = SubscriberState.from_bytes(store.data[SUB])
    state.roaming = dict(NEWER)
    store.data[SUB] = state.to_bytes()
    return detector, store, offsets


def test_a_key_this_version_does_not_write_is_read_and_written_back() -> None:
    detector, store, offsets = _stored_with_newer_place()
    read = SubscriberState.from_bytes(store.data[SUB])
    assert read.roaming == NEWER
    assert read.faults() == []  # not taken for damage either
    usage = ev(EventType.USAGE, at("2026-11-02", "13:00"), kind="data")
    store.save(detector.process(to_records([usage], offsets=offsets), store.load, None).changes)
    assert SubscriberState.from_bytes(store.data[SUB]).roaming == NEWER


def _after(**roaming: Any) -> dict[str, Any]:
    detector, store, offsets = _stored_with_newer_place()
    record = ev(EventType.ROAMING, at("2026-11-03"), **roaming)
    store.save(detector.process(to_records([record], offsets=offsets), store.load, None).changes)
    return SubscriberState.from_bytes(store.data[SUB]).roaming


def test_the_next_roaming_record_replaces_the_place_whole() -> None:
    assert _after(country="KR", roaming_type="international") == {"c": "KR"}
    assert _after(country="CN", roaming_type="domestic") == {}
