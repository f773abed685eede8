"""The worker's garbage-collector settings."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from moments.gctune import (
    GEN0_THRESHOLD,
    PauseTimer,
    collect_frozen,
    freeze_survivors,
    tune_gc,
)


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    if freeze_survivors in gc.callbacks:
        gc.callbacks.remove(freeze_survivors)
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    gc.unfreeze()
    _, gen1, gen2 = gc.get_threshold()
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.mark.usefixtures("restored_gc")
def test_the_batch_process_is_left_alone_without_freeze_old() -> None:
    tune_gc()
    assert freeze_survivors not in gc.callbacks


@pytest.mark.usefixtures("restored_gc")
def test_what_survives_a_collection_is_frozen_and_cycles_among_it_found_later() -> None:
    tune_gc(freeze_old=True)
    assert gc.callbacks.count(freeze_survivors) == 1
    tune_gc(freeze_old=True)  # registered once
    assert gc.callbacks.count(freeze_survivors) == 1

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle, alive for now
    frozen = gc.get_freeze_count()
    gc.collect(0)
    assert gc.get_freeze_count() > frozen  # the survivors went to the frozen generation
    assert gc.get_objects(generation=2) == []  # nothing left for a full collection to walk

    gone = weakref.ref(a)
    del a, b  # the cycle dies while frozen: no collection finds it
    gc.collect()
    assert gone() is not None
    assert collect_frozen() >= 2  # the periodic full collection does
    assert gone() is None


def test_each_collection_is_timed_and_drained_once() -> None:
    timer = PauseTimer()
    timer.install()
    timer.install()  # once
    try:
        assert gc.callbacks.count(timer) == 1
        gc.collect(1)
        gc.collect(2)
    finally:
        gc.callbacks.remove(timer)
    pauses = list(timer.drain())
    assert [g for g, _ in pauses if g > 0] == [1, 2]  # an automatic young one may come too
    assert all(seconds >= 0 for _, seconds in pauses)
    assert list(timer.drain()) == []


def test_a_pause_is_the_time_from_its_start_to_its_stop() -> None:
    ticks = iter([10.0, 10.25, 20.0, 20.004])
    timer = PauseTimer(keep=1, clock=lambda: next(ticks))
    timer("start", {"generation": 2})
    timer("stop", {"generation": 2})
    assert list(timer.drain()) == [(2, 0.25)]
    timer("start", {"generation": 0})
    timer("stop", {"generation": 0})
    assert [(g, round(s, 6)) for g, s in timer.drain()] == [(0, 0.004)]
