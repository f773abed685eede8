"""The rule set's frequency cap changed by a rules reload while a decision awaits its
stores: the decision goes on by the cap it began with, every step of it (taking a contact,
giving it back), and the next decision takes the new one.

A rules reload is installed from the event loop, as a policy's is (see
test_dispatch_policy_binding.py), so it lands whenever the batch loop or the release timer
awaits Redis; a decision that read the cap at each call took a contact under one cap and
gave it back under another: the cap removed in between, the contact stayed counted for the
cap's whole period though the task was never sent."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import orjson
import pytest

from moments.backtest import CollectingProducer, EventTime
from moments.models import Channel
from rules.gating import FrequencyCap
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from tests.integration.dispatch.conftest import task
from tests.unit.test_dispatch_policy_binding import FULL, OPEN, ReloadDuring

AT = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
CAP = FrequencyCap(max_contacts=1, period="7d", channels=(Channel.SMS,))
"""One SMS a week: a contact left counted holds back the subscriber's next SMS for a week."""
SUBSCRIBERS = ("13800138000", "13800138001")


def dispatched(
    store: str,
    method: str,
    policy: DispatchPolicy,
    before: FrequencyCap | None,
    after: FrequencyCap | None,
    released: bool = False,
) -> tuple[list[list[str]], list[bool]]:
    """Two decisions of one SMS each (one subscriber each), by `policy`, the rules' cap
    going from `before` to `after` during the first one's `store.method` call: the ids
    each published, and whether each subscriber's frequency contact is counted after.
    `released`: each SMS waits an hour first and is decided by the release timer's
    `release_due` (the first call to `store.method` then is the release's)."""
    clock = EventTime(AT.timestamp())
    producer = CollectingProducer(clock)
    stores = memory_stores(clock)
    frequency = stores.frequency
    cap = [before]

    def reload() -> None:
        cap[0] = after

    wrapped = ReloadDuring(getattr(stores, store), method, reload)
    stores = dataclasses.replace(stores, **{store: wrapped})
    sink = TaskSink(
        producer, "moments.tasks", stores, Metrics(), policy, clock, frequency_cap=lambda: cap[0]
    )
    out: list[list[str]] = []

    async def go() -> list[bool]:
        for name, sub in zip("ab", SUBSCRIBERS, strict=True):
            before_ = len(producer.sent)
            due = dt.datetime.fromtimestamp(clock(), dt.UTC) + dt.timedelta(hours=released)
            one = task(
                name * 32,
                sub=sub,
                channel=Channel.SMS,
                triggered=AT,
                deliver_after=due,
                expires_at=AT + dt.timedelta(days=1),
            )
            await sink.dispatch([one])
            if released:
                clock.advance(due.timestamp())
                assert await sink.release_due() == 1
            out.append([orjson.loads(s.payload)["task_id"] for s in producer.sent[before_:]])
        # Would a contact be taken (a free one, look only) under CAP? None: yes.
        week = CAP.span.total_seconds()
        looks = [(sub, "probe", clock()) for sub in SUBSCRIBERS]
        frees = await frequency.take_many(looks, week, CAP.max_contacts, look=True)
        return [free_at is not None for free_at in frees]

    counted = asyncio.run(go())
    return out, counted


@pytest.mark.parametrize("released", [False, True], ids=["fresh", "released"])
def test_a_cap_removed_between_taking_a_contact_and_giving_it_back_still_gives_it_back(
    released: bool,
) -> None:
    """Begun under `CAP`, the first SMS takes a frequency contact, then finds no capacity
    (`FULL`): the contact goes back though the rules dropped the cap while capacity was
    taken (read at each call, the cap was gone when the contacts were given back, and the
    subscriber's week was used up by an SMS never sent). The second decision, begun with
    no cap, takes no frequency contact. The same for tasks the release timer decides."""
    published, counted = dispatched("slots", "take_many", FULL, CAP, None, released)
    assert published == [[], []]
    assert counted == [False, False]


@pytest.mark.parametrize(
    ("store", "method"),
    [
        ("declines", "suppressed_many"),  # the decision's first read
        ("deferral", "join_many"),  # the merge, before the caps
    ],
)
def test_a_cap_added_mid_decision_waits_for_the_next_decision(store: str, method: str) -> None:
    """Begun with no cap, the first SMS is sent without taking a frequency contact though
    `CAP` came in meanwhile (read at each call, its contact step took one under `CAP`);
    the second decision, begun under `CAP`, takes one."""
    published, counted = dispatched(store, method, OPEN, None, CAP)
    assert published == [["a" * 32], ["b" * 32]]
    assert counted == [False, True]
