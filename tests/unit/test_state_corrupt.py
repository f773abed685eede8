"""A record whose compact fields are malformed (never written by the detector: a corrupt
or hand-edited record) is read with those fields reset, as other malformed parts of a
record are (a ring that is no list, a stamp that is no list): the batch goes on. A
malformed profile-times field (`q`) raised ValueError out of `from_bytes`, so every batch
with the subscriber's events failed; a ring of recent ids whose length is no whole number
of digests was cut into a short last "digest"."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from moments.engine import Detector
from moments.models import EventType
from moments.pipeline import to_records
from moments.state import DIGEST_CHARS, PROFILE_AT_ANY, SubscriberState, event_digest
from moments.statezip import pack
from moments.store import DictStateStore

from .rules.helpers import SUB, WELCOME, at, ev, rules_from

SEEN_PROFILE = 1_790_000_000
"""The record's latest profile time (`n.p`)."""


def record(**fields: Any) -> bytes:
    """A stored record with these fields besides its offsets and latest times."""
    return pack(orjson.dumps({"o": {"p0": 3}, "n": {"p": SEEN_PROFILE}, **fields}))


MALFORMED_TIMES = [
    [5],  # a list of one: ValueError (not enough values to unpack)
    [5, {}, 7],  # of three: ValueError (too many values)
    ["5", {"tier": 0}],  # a usual time that is no number: TypeError
    [5, ["tier", 0]],  # others that are no object: AttributeError
    {"tier": "0"},  # a field's time that is no number: TypeError
]


@pytest.mark.parametrize("stored", MALFORMED_TIMES)
def test_malformed_profile_times_read_as_a_record_of_before(stored: Any) -> None:
    """Every field dated at the latest profile time (`*`), as a record written before the
    times were kept: an update older than it is refused, a newer one applied."""
    state = SubscriberState.from_bytes(record(p={"tier": "gold"}, q=stored))
    assert state.profile_at == {PROFILE_AT_ANY: SEEN_PROFILE}
    assert state.profile == {"tier": "gold"}


@pytest.mark.parametrize("stored", ["0123456789abcde", "0123456789" * 3 + "x", 7])
def test_a_ring_of_no_whole_digests_reads_as_none(stored: Any) -> None:
    """The source's ring is dropped (its offsets still guard re-reads); the others stay."""
    good = "a" * DIGEST_CHARS + "b" * DIGEST_CHARS
    state = SubscriberState.from_bytes(record(r={"u": stored, "t": good}))
    assert state.recent == {"t": ["a" * DIGEST_CHARS, "b" * DIGEST_CHARS]}


@pytest.mark.parametrize(
    "fields",
    [{"q": [5]}, {"r": {"r": "0123456789abcde"}}],
    ids=["profile times", "ring"],
)
def test_a_batch_with_a_malformed_record_goes_on(fields: dict[str, Any]) -> None:
    """The subscriber's arrival abroad makes its task; the record written back is
    well formed (the ring holds the arrival's id alone)."""
    store = DictStateStore()
    store.data[SUB] = record(p={"tier": "gold"}, **fields)
    detector = Detector(rules_from("rules:" + WELCOME), {t.value: t for t in EventType})
    arrival = ev(EventType.ROAMING, at("2026-11-02"), country="JP", roaming_type="international")
    result = detector.process(to_records([arrival]), store.load, None)
    assert not result.failures
    assert [t.moment.type for t in result.tasks] == ["roaming_welcome"]
    store.save(result.changes)
    again = SubscriberState.from_bytes(store.data[SUB])
    assert again.recent == {"r": [event_digest(str(arrival[1]["event_id"]))]}
    assert again.profile == {"tier": "gold"}
