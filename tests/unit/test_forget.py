"""A profile tombstone in a batch takes back the tasks and facts the batch made of the
subscriber's earlier events, keeps what came after it, and names the subscriber for the
dispatch stores to forget (moments.batchresult.forget)."""

from __future__ import annotations

import asyncio
import datetime as dt

import orjson

from moments.backtest import Backtest
from moments.backtest_input import FileEvent
from moments.engine import Detector
from moments.models import Channel, EventType, Family, Moment, RoamingEvent, ServiceTask
from moments.pipeline import run_pipeline, to_records
from moments.records import RawRecord
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


def _countries(tasks: list[ServiceTask]) -> list[tuple[str, object]]:
    return [(t.subscriber_id, t.moment.params["country"]) for t in tasks]


def test_an_event_dated_before_the_erasure_and_read_after_it_is_dropped() -> None:
    """Topics are read side by side: a roaming record of LI's from before the tombstone,
    on a topic read behind the profile topic, must not start a new record, nor make a
    task for the erased subscriber; one dated after the tombstone is a new subscriber's,
    and that new record drops a later-read event from before the erasure too."""
    rules = rules_from(RULES)
    first = run_pipeline([_roam(LI, "10:00", "JP")], rules)
    first = run_pipeline(
        to_records([(EventType.PROFILE, None)], key=LI, offsets=first.offsets), rules, result=first
    )
    assert _countries(first.tasks) == [(LI, "JP")]
    assert first.store.load(LI) is None

    out = run_pipeline([_roam(LI, "09:59", "KR")], rules, result=first)  # read late
    assert _countries(out.tasks) == [(LI, "JP")]
    assert out.store.load(LI) is None, "no record begun by the erased subscriber's event"
    out = run_pipeline([_roam(LI, "10:05", "FR"), _roam(WANG, "09:58", "KR")], rules, result=out)
    assert _countries(out.tasks) == [(LI, "JP"), (LI, "FR"), (WANG, "KR")]
    out = run_pipeline([_roam(LI, "09:58", "DE")], rules, result=out)  # later still
    assert _countries(out.tasks) == [(LI, "JP"), (LI, "FR"), (WANG, "KR")]
    assert out.erased_events == {"roaming": 2}
    assert out.dead_letters == [], "their payload is the erased subscriber's: no dead letter"


def _tombstone(stamp: dt.datetime | None) -> RawRecord:
    ms = int(stamp.timestamp() * 1000) if stamp is not None else None
    return RawRecord(EventType.PROFILE.value, 0, 0, LI.encode(), None, ms)


def _roaming_record(offset: int, when: dt.datetime, country: str) -> RawRecord:
    _, value = ev(
        EventType.ROAMING, when.isoformat(), LI, country=country, roaming_type="international"
    )
    return RawRecord(EventType.ROAMING.value, 0, offset, LI.encode(), orjson.dumps(value))


def test_the_erasure_is_the_tombstones_own_time_and_never_ahead_of_the_clock() -> None:
    """The tombstone's Kafka timestamp says when the CRM erased the subscriber: an event
    after it is a new subscriber's even if the worker reads the tombstone later. Without
    a timestamp, or with one ahead of the worker's clock, the worker's clock decides."""
    detector = Detector(rules_from(RULES), {t.value: t for t in EventType})
    now = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    erased = now - dt.timedelta(hours=1)
    for stamp, when in ((erased, erased), (None, now), (now + dt.timedelta(hours=1), now)):
        records = [
            _tombstone(stamp),
            _roaming_record(0, when - dt.timedelta(seconds=1), "JP"),
            _roaming_record(1, when + dt.timedelta(seconds=1), "KR"),
        ]
        batch = detector.process(records, DictStateStore().load, now)
        assert batch.erased_at == {LI: when.timestamp()}
        assert _countries(batch.tasks) == [(LI, "KR")], stamp
        assert batch.erased_events == {"roaming": 1}
        state = batch.changes[LI].state
        assert state is not None
        assert state.erased == int(when.timestamp())


def test_an_erasure_known_to_the_stores_drops_the_subscribers_earlier_events() -> None:
    """`erased` (the stores' mark, for subscribers with no record) is what a later batch
    knows of a tombstone; once the record begun after it is 90 days of event time past
    the erasure, the record forgets it (the lateness refuses what is that old)."""
    detector = Detector(rules_from(RULES), {t.value: t for t in EventType})
    gone = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    store = DictStateStore()
    assert detector.unrecorded([_roaming_record(0, gone, "JP")], store.has) == [LI]
    records = [
        _roaming_record(0, gone, "JP"),
        _roaming_record(1, gone + dt.timedelta(minutes=1), "KR"),
    ]
    batch = detector.process(records, store.load, None, {LI: gone.timestamp()})
    assert _countries(batch.tasks) == [(LI, "KR")]
    store.save(batch.changes)
    assert detector.unrecorded(records, store.has) == []
    late = gone + dt.timedelta(days=91)
    batch = detector.process([_roaming_record(2, late, "FR")], store.load, None)
    store.save(batch.changes)
    state = store.load(LI)
    assert state is not None
    assert state.erased == 0
    # An event that old is refused as late against the record's own roaming anyway.
    batch = detector.process([_roaming_record(3, gone, "DE")], store.load, None)
    assert (batch.tasks, batch.late, batch.erased_events) == ([], 1, {})


def test_the_backtest_drops_them_as_the_stream_does() -> None:
    """One record a batch: each late event meets the erasure as the stream's next batch
    does, through the dispatch stores' mark (`Subscribers.erasures`)."""

    def line(sub: str, time: str, country: str) -> FileEvent:
        when = at("2026-12-01", time)
        _, doc = _roam(sub, time, country)
        return FileEvent(
            dt.datetime.fromisoformat(when).timestamp(),
            EventType.ROAMING,
            sub.encode(),
            orjson.dumps(doc),
        )

    tombstone = FileEvent(line(LI, "10:00", "-").at, EventType.PROFILE, LI.encode(), None)  # type: ignore[arg-type]
    history = [
        line(LI, "10:00", "JP"),
        tombstone,
        line(LI, "09:59", "KR"),  # read after the tombstone, from before it
        line(LI, "10:05", "FR"),  # a new subscriber's
        line(LI, "09:58", "DE"),  # from before it, read after the new record began
    ]
    bt = Backtest(rules_from(RULES), batch_size=1)
    out = asyncio.run(bt.run(history))
    assert [t["moment"]["params"]["country"] for t in out.tasks()] == ["JP", "FR"]
    assert out.counter("moments_events_forgotten") == [({"event_type": "roaming"}, 2.0)]


def test_a_tombstone_dated_before_1970_or_at_0_is_erased_at_the_workers_clock() -> None:
    """Kafka's -1 (no timestamp) and any time at or before the epoch are no time: the
    worker's clock stands for it, as for a tombstone without one (re-check)."""
    detector = Detector(rules_from(RULES), {t.value: t for t in EventType})
    now = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    for ms in (-1, -86_400_000, 0):
        tombstone = RawRecord(EventType.PROFILE.value, 0, 0, LI.encode(), None, ms)
        late = _roaming_record(0, now - dt.timedelta(minutes=5), "JP")
        batch = detector.process([tombstone, late], DictStateStore().load, now)
        assert batch.erased_at == {LI: now.timestamp()}, ms
        assert (batch.tasks, batch.erased_events) == ([], {"roaming": 1}), ms


def test_a_subscriber_erased_twice_is_erased_at_the_second_tombstone() -> None:
    """Li erased, the number's next holder roams, and is erased too: what was read late of
    either is dropped, whichever holder it was, and the next holder after them is new."""
    detector = Detector(rules_from(RULES), {t.value: t for t in EventType})
    now = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    first, second = now - dt.timedelta(hours=2), now - dt.timedelta(hours=1)
    store = DictStateStore()
    records = [
        _tombstone(first),
        _roaming_record(0, first + dt.timedelta(minutes=10), "JP"),  # the next holder
        _tombstone(second),
        _roaming_record(1, first + dt.timedelta(minutes=20), "KR"),  # theirs, read late
        _roaming_record(2, first - dt.timedelta(minutes=20), "FR"),  # Li's, read late
    ]
    batch = detector.process(records, store.load, now)
    store.save(batch.changes)
    assert _countries(batch.tasks) == []  # the JP task was taken back by the tombstone
    assert batch.erased_at == {LI: second.timestamp()}
    assert batch.erased_events == {"roaming": 2}
    assert store.load(LI) is None
    # A later batch knows the second erasure from the stores' mark.
    late = [_roaming_record(3, second - dt.timedelta(minutes=1), "DE")]
    again = detector.process(late, store.load, now, {LI: second.timestamp()})
    assert (again.tasks, again.erased_events) == ([], {"roaming": 1})
    new = [_roaming_record(4, second + dt.timedelta(minutes=1), "DE")]
    fresh = detector.process(new, store.load, now, {LI: second.timestamp()})
    assert _countries(fresh.tasks) == [(LI, "DE")]
