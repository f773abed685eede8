"""The detector's work an event counted in calls: the series an event folds into are
looked up without a call each (`Detector.apply`), and so is a record's partition in the
partition check; they run for every event the worker reads."""

from __future__ import annotations

import datetime as dt
import itertools
import sys
from types import CodeType, FrameType
from typing import Any, cast

from moments.engine import Detector
from moments.models import EventType
from moments.partitioning import PartitionCheck, partition_of
from moments.pipeline import run_pipeline
from moments.records import RawRecord
from moments.simulate import simulate

from .calls import counted_calls
from .catalogs import default_rules

START = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)


def _usage_events() -> list[tuple[EventType, dict[str, Any]]]:
    return [
        (e.event_type, e.value)
        for e in itertools.islice(simulate(40, 100, seed=3, start=START), 2000)
        if e.event_type is EventType.USAGE
    ]


def _builtins_called_in(code: CodeType, names: set[str]) -> tuple[int, int]:
    """How many calls of the builtins `names` `code` made while the pipeline ran the
    usage events, and how many events."""
    events = _usage_events()
    made = [0]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and frame.f_code is code and arg.__qualname__ in names:
            made[0] += 1

    sys.setprofile(profile)
    try:
        result = run_pipeline(events, default_rules())
    finally:
        sys.setprofile(None)
    assert result.tasks  # the series were folded and read
    return made[0], len(events)


def test_an_events_series_are_folded_without_a_dict_get_each() -> None:
    """Per event, `Detector.apply` reads the day it checked the windows and the source's
    latest time (two `dict.get`; a rule that fires, one more); the series a usage event
    folds into (~3 in the catalog) cost two more each, a window index and a ring: ~6.8 an
    event."""
    gets, events = _builtins_called_in(Detector.apply.__code__, {"dict.get"})
    assert gets < 2.5 * events, gets / events


def test_an_events_topic_time_is_read_once() -> None:
    """`Detector._process` reads the subscriber's latest time on the event's topic once
    (it read it twice: whether the event is behind, whether it is late) and tells a
    profile by its type, not by `isinstance` again: ~9.1 `dict.get` and `isinstance` an
    event, now ~7.1."""
    calls, events = _builtins_called_in(Detector._process.__code__, {"dict.get", "isinstance"})
    assert calls < 7.5 * events, calls / events


def test_a_known_keys_partition_is_checked_without_a_call() -> None:
    check = PartitionCheck(4)
    keys = [str(o % 7).encode() for o in range(1000)]
    records = [RawRecord("t", partition_of(k, 4), o, k, b"{}") for o, k in enumerate(keys)]
    check.check(records)  # every key seen

    def calls(n: int) -> int:
        return sum(counted_calls(lambda: check.check(records[:n]))[1].values())

    assert calls(1000) == calls(10)


def test_tracking_tells_the_events_kind_without_a_call() -> None:
    """`tracking.track` runs for every event: it told roaming, complaints and profiles
    apart with `isinstance`, ~3 calls an event; by the model's type, none."""
    from moments.models import EVENT_MODELS, InputEvent
    from moments.state import SubscriberState
    from moments.tracking import track

    kinds: dict[EventType, InputEvent] = {}
    for e in itertools.islice(simulate(40, 100, seed=3, start=START), 2000):
        model = EVENT_MODELS[e.event_type].model_validate(e.value)
        kinds.setdefault(e.event_type, cast(InputEvent, model))
    assert {EventType.USAGE, EventType.ROAMING, EventType.COMPLAINT} <= kinds.keys()
    for event in kinds.values():
        state = SubscriberState()
        _, calls = counted_calls(lambda: track(event, state, 1_800_000_000, None))  # noqa: B023  # run at once
        assert calls["isinstance"] == 0, (event, calls)


def test_a_replay_is_looked_for_and_an_event_noted_without_a_dict_get() -> None:
    """`SubscriberState.is_replay` and `applied` run for every event: their offset and
    recent-id lookups were four `dict.get` an event (11 here, now 2)."""
    from moments.state import SubscriberState

    state = SubscriberState()
    state.applied("u", 0, 5, "d1")

    def one_batch() -> list[bool]:
        found = [
            state.is_replay("u", 0, 5, "x"),
            state.is_replay("u", 0, 6, "d1"),
            state.is_replay("u", 0, 6, "d2"),
            state.is_replay("r", 1, 0, "d1"),
        ]
        state.applied("u", 0, 6, "d2")
        state.applied("r", 1, 0, "d3")
        return found

    found, calls = counted_calls(one_batch)
    assert found == [True, True, False, False]
    assert calls["dict.get"] == 2, calls  # the ring's size by source, once an `applied`
    assert state.offsets == {"u0": 6, "r1": 0}
    assert state.recent == {"u": ["d1", "d2"], "r": ["d3"]}
