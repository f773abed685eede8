"""A profile tombstone in a batch takes back the tasks and facts the batch made of the
subscriber's earlier events, keeps what came after it, and names the subscriber for the
dispatch stores to forget (moments.engine.forget)."""

from __future__ import annotations

import datetime as dt

from moments.engine import Detector
from moments.models import Channel, EventType, Family, Moment, RoamingEvent, ServiceTask
from moments.pipeline import to_records
from moments.store import DictStateStore
from sinks.relevance import SubscriberFacts, is_forgotten
from tests.unit.rules.helpers import NO_GATES, WELCOME, at, ev, rules_from

LI, WANG = "13800138001", "13900139002"
RULES = NO_GATES + "rules:" + WELCOME


def _roam(sub: str, time: str, country: str) -> tuple[EventType, dict[str, object]]:
    return ev(
        EventType.ROAMING,
        at("2026-12-01", time),
        sub,
        country=country,
        roaming_type="international",
    )


def test_a_tombstone_takes_back_what_the_batch_made_of_the_subscriber_before_it() -> None:
    detector = Detector(rules_from(RULES), {t.value: t for t in EventType})
    events = [
        _roam(LI, "10:00", "JP"),
        _roam(WANG, "10:01", "JP"),
        (EventType.PROFILE, None),  # LI's tombstone (keyed by LI below)
        _roam(LI, "10:03", "KR"),
    ]
    records = to_records(events[:2]) + to_records([events[2]], key=LI) + to_records(events[3:])
    batch = detector.process(records, DictStateStore().load, None)
    assert [(t.subscriber_id, t.moment.params["country"]) for t in batch.tasks] == [
        (WANG, "JP"),
        (LI, "KR"),  # after the tombstone: a new subscriber, whose first country this is
    ]
    assert batch.suppressed == {("roaming_welcome", "forgotten"): 1}
    facts = [(e.subscriber_id, e.country) for e in batch.facts if isinstance(e, RoamingEvent)]
    assert facts == [(WANG, "JP"), (LI, "KR")]
    assert batch.forgotten == [LI]
    assert batch.changes[LI].state is not None  # the record the later event started


def test_no_tombstone_leaves_the_batch_as_it_was() -> None:
    detector = Detector(rules_from(RULES), {t.value: t for t in EventType})
    batch = detector.process(to_records([_roam(LI, "10:00", "JP")]), DictStateStore().load, None)
    assert (len(batch.tasks), batch.forgotten, batch.suppressed) == (1, [], {})


def _task(created: dt.datetime, triggered: dt.datetime, retry_of: str | None) -> ServiceTask:
    return ServiceTask(
        task_id="t1",
        subscriber_id=LI,
        moment=Moment(
            family=Family.FIRST_TIME,
            type="roaming_welcome",
            rule_id="welcome",
            rule_version=1,
            description="Welcome",
        ),
        priority=3,
        channel=Channel.SMS,
        action="welcome",
        triggered_at=triggered,
        created_at=created,
        deliver_after=created,
        expires_at=created + dt.timedelta(days=1),
        evidence=["e1"],
        retry_of=retry_of,
    )


def test_a_task_made_before_the_forget_is_forgotten_and_one_made_after_is_not() -> None:
    forgot = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    facts = SubscriberFacts(forgotten_at=forgot.timestamp())
    before, after = forgot - dt.timedelta(minutes=1), forgot + dt.timedelta(minutes=1)
    assert is_forgotten(_task(before, before, None), facts)
    assert not is_forgotten(_task(after, before, None), facts)  # an event after the tombstone
    assert not is_forgotten(_task(before, before, None), SubscriberFacts())
    assert not is_forgotten(_task(before, before, None), None)
    # A retry is made anew (created now) for a moment from before: its moment decides.
    assert is_forgotten(_task(after, before, "t0"), facts)
    assert not is_forgotten(_task(after, after, "t0"), facts)
