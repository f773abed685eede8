"""An event is applied once: a re-read (its partition's offset again) and a re-delivery
(its id again on its source) are dropped; nothing else is. Found by an upstream
producer's review: a misplaced event, an id used by two upstream systems and a re-sent
complaint behind a burst of usage each lost or doubled an event."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from moments.engine import Detector
from moments.models import EventType
from moments.pipeline import run_pipeline, to_records
from moments.records import RawRecord
from moments.state import (
    RECENT_EVENT_IDS,
    RECENT_EVENT_IDS_ELSE,
    SubscriberState,
    event_digest,
)
from moments.statezip import pack
from moments.store import DictStateStore

from .rules.helpers import SUB, WELCOME, at, rules_from

USAGE, COMPLAINT, TOPUP, ROAMING = "u", "c", "t", "r"


def apply_once(state: SubscriberState, source: str, partition: int, offset: int, id_: str) -> bool:
    """What the engine does with an event's place and id (`Detector.process`): False when
    it was read before, else noted as applied."""
    digest = event_digest(id_)
    if state.is_replay(source, partition, offset, digest):
        return False
    state.applied(source, partition, offset, digest)
    return True


def test_a_re_read_offset_is_dropped_per_partition() -> None:
    state = SubscriberState()
    assert apply_once(state, ROAMING, 1, 25, "misplaced")  # off its key's partition
    assert apply_once(state, ROAMING, 3, 0, "right")  # the key's partition, offset 0
    assert not apply_once(state, ROAMING, 3, 0, "right")  # re-read after a crash
    assert not apply_once(state, ROAMING, 1, 25, "misplaced")
    assert state.offsets == {"r1": 25, "r3": 0}


def test_ids_are_unique_per_source_not_across_them() -> None:
    state = SubscriberState()
    assert apply_once(state, TOPUP, 0, 3, "5001")  # billing's 5001
    assert apply_once(state, ROAMING, 0, 7, "5001")  # the network's 5001: another event
    assert not apply_once(state, ROAMING, 0, 8, "5001")  # re-sent by the network


def test_a_re_sent_complaint_is_dropped_behind_a_burst_of_usage() -> None:
    state = SubscriberState()
    assert apply_once(state, COMPLAINT, 0, 0, "CMP-8")
    usage_ring = RECENT_EVENT_IDS[USAGE]
    for n in range(3 * usage_ring):
        assert apply_once(state, USAGE, 0, n, f"use-{n}")
    assert not apply_once(state, COMPLAINT, 0, 1, "CMP-8")  # an outbox re-publish
    assert len(state.recent[USAGE]) == usage_ring  # each ring stays bounded
    assert apply_once(state, USAGE, 0, 99, "use-0")  # out of its ring: taken as new
    for n in range(2, 2 + RECENT_EVENT_IDS_ELSE):  # newer complaints push CMP-8 out
        assert apply_once(state, COMPLAINT, 0, n, f"CMP-{n + 10}")
    assert len(state.recent[COMPLAINT]) == RECENT_EVENT_IDS_ELSE
    assert apply_once(state, COMPLAINT, 0, 9, "CMP-8")


@given(
    st.lists(
        st.tuples(st.sampled_from("ucrtp"), st.integers(0, 3), st.integers(0, 9)),
        min_size=1,
        max_size=40,
        unique=True,
    )
)
def test_every_event_once_however_often_and_wherever_re_read(
    events: list[tuple[str, int, int]],
) -> None:
    """Distinct events (source, partition, id), each at the next offset of its partition:
    all applied, and reading the whole stream again applies none."""
    state = SubscriberState()
    next_offset: dict[tuple[str, int], int] = {}
    stream = []
    for source, partition, n in events:
        offset = next_offset.get((source, partition), 0)
        next_offset[(source, partition)] = offset + 1
        stream.append((source, partition, offset, f"{source}{partition}-{n}"))
    assert all(apply_once(state, *e) for e in stream)
    assert not any(apply_once(state, *e) for e in stream)


def test_a_record_with_the_old_single_ring_still_loads() -> None:
    old = pack(orjson.dumps({"o": {"u": 4}, "r": ["0123456789ab"], "w": 7}))
    state = SubscriberState.from_bytes(old)
    assert state.recent == {}
    assert state.watermark == 7


def test_through_the_engine_a_misplaced_event_hides_no_later_one() -> None:
    """The roaming event for this subscriber went to partition 1 at offset 25; the next,
    correctly placed on partition 3 at offset 0, is a first arrival of its own."""

    def roaming(partition: int, offset: int, event_id: str, country: str, hour: str) -> RawRecord:
        value = {
            "event_id": event_id,
            "subscriber_id": SUB,
            "occurred_at": at("2026-11-02", hour),
            "country": country,
            "roaming_type": "international",
        }
        return RawRecord(
            EventType.ROAMING.value, partition, offset, SUB.encode(), orjson.dumps(value)
        )

    rules = rules_from("rules:" + WELCOME)
    result = run_pipeline(
        [roaming(1, 25, "n-1", "JP", "10:00"), roaming(3, 0, "n-2", "FR", "11:00")], rules
    )
    assert sorted(t.moment.params["country"] for t in result.tasks) == ["FR", "JP"]


class TestRetries:
    """What a producer's re-send does (docs/producing-events.md, "Sending again"): a retry
    within the ring's size of arrivals is caught in any order, a late event's own retry
    too; a re-send of more than the ring holds is applied again whole, counted as out of
    order. Putting out-of-order ids at the ring's old end stopped that cascade, but a late
    event's retry was then applied twice (re-check review)."""

    def detector(self) -> Detector:
        return Detector(rules_from("rules:" + WELCOME), {t.value: t for t in EventType})

    def cdrs(self, first: int, last: int) -> list[tuple[EventType, dict[str, object]]]:
        return [
            (
                EventType.USAGE,
                {
                    "event_id": f"cdr-{n}",
                    "subscriber_id": SUB,
                    "occurred_at": at("2026-11-02", f"10:{n:02d}"),
                    "kind": "data",
                    "quantity": 1000,
                    "charge": 10,
                },
            )
            for n in range(first, last)
        ]

    def test_a_retry_of_the_ring_is_caught_and_a_longer_one_applied_again_counted(
        self,
    ) -> None:
        ring = RECENT_EVENT_IDS[USAGE]
        for resent, replayed in ((ring, ring), (ring + 1, 0), (12, 0)):
            detector, store, offsets = self.detector(), DictStateStore(), dict[str, int]()
            events = self.cdrs(0, resent)
            store.save(
                detector.process(to_records(events, offsets=offsets), store.load, None).changes
            )
            again = detector.process(to_records(events, offsets=offsets), store.load, None)
            assert again.replayed == replayed, resent
            # all but the newest, which is not older than the newest
            assert again.out_of_order == ({"usage": resent - 1} if not replayed else {})

    def test_a_late_events_own_retry_is_caught(self) -> None:
        detector, store, offsets = self.detector(), DictStateStore(), dict[str, int]()
        store.save(
            detector.process(
                to_records(self.cdrs(10, 18), offsets=offsets), store.load, None
            ).changes
        )
        late = self.cdrs(5, 6)  # 5 minutes older than the newest, within the lateness
        first = detector.process(to_records(late, offsets=offsets), store.load, None)
        assert first.out_of_order == {"usage": 1}
        store.save(first.changes)
        later = self.cdrs(20, 23)  # newer events come between the late one and its retry
        store.save(detector.process(to_records(later, offsets=offsets), store.load, None).changes)
        retry = detector.process(to_records(late, offsets=offsets), store.load, None)
        assert retry.replayed == 1

    def test_a_late_topups_own_retry_is_caught(self) -> None:
        detector, store, offsets = self.detector(), DictStateStore(), dict[str, int]()

        def topup(n: int, hour: str) -> tuple[EventType, dict[str, object]]:
            return (
                EventType.TOPUP,
                {
                    "event_id": f"t-{n}",
                    "subscriber_id": SUB,
                    "occurred_at": at("2026-11-02", hour),
                    "amount": 50,
                    "channel": "app",
                },
            )

        first = [topup(1, "10:00"), topup(2, "10:10")]
        store.save(detector.process(to_records(first, offsets=offsets), store.load, None).changes)
        late = [topup(3, "10:05")]
        store.save(detector.process(to_records(late, offsets=offsets), store.load, None).changes)
        retry = detector.process(to_records(late, offsets=offsets), store.load, None)
        assert retry.replayed == 1
