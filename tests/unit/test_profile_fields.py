"""Profile updates are applied field by field, the latest update carrying a field setting
it (last writer wins per field): two CRM services each send partial updates, and one read
after the other but dated before it must not be refused whole. An opt-out dated 10:00 read
after a tier change dated 10:30 was `late` and not applied: the customer kept getting SMS
(a do-not-disturb breach). An update is refused as `late` only when it changes nothing:
every field it carries was set by a newer one (an old snapshot sent again)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from moments.backtest_input import FileEvent
from moments.engine import Detector
from moments.models import EventType, ProfileEvent
from moments.pipeline import to_records
from moments.seed import build_states
from moments.state import PROFILE_AT_ANY, SubscriberState
from moments.store import DictStateStore
from moments.tracking import profile_update
from sinks.relevance import facts_of
from sinks.withdrawals import profile_changes

from .rules.helpers import SUB, WELCOME, at, ev, rules_from, run

RULES = rules_from("rules:" + WELCOME)
PROFILE, ROAMING = EventType.PROFILE, EventType.ROAMING
_ids = itertools.count()


def arrival(day: str, country: str, time: str = "12:00") -> tuple[EventType, dict[str, str]]:
    return ev(ROAMING, at(day, time), country=country, roaming_type="international")


def update(when: int, **fields: Any) -> ProfileEvent:
    return ProfileEvent.model_validate(
        {
            "event_id": f"p{next(_ids)}",
            "subscriber_id": SUB,
            "occurred_at": dt.datetime.fromtimestamp(when, dt.UTC).isoformat(),
            **fields,
        }
    )


def test_an_opt_out_dated_between_two_tier_changes_is_applied() -> None:
    """The 10:00 opt-out from one CRM service, read after the 10:30 tier change from
    another: it was refused (`late`) and the SMS went."""
    events = [
        ev(PROFILE, at("2026-11-02", "09:00"), tier="silver", opt_out=[]),
        ev(PROFILE, at("2026-11-02", "10:30"), tier="gold"),
        ev(PROFILE, at("2026-11-02", "10:00"), opt_out=["sms"]),  # read after, dated before
        arrival("2026-11-02", "JP", "11:00"),
    ]
    result = run(RULES, events)
    assert result.tasks == []  # opted out of SMS: no welcome
    assert (result.late, result.dead_letters) == (0, [])
    state = result.store.load(SUB)
    assert state is not None
    assert (state.profile["tier"], state.profile["opt_out"]) == ("gold", ["sms"])
    assert state.seen["p"] == int(dt.datetime.fromisoformat(at("2026-11-02", "10:30")).timestamp())


def test_an_old_snapshot_sent_again_is_still_late() -> None:
    events = [
        ev(PROFILE, at("2026-11-02", "09:00"), tier="silver", status="active"),
        ev(PROFILE, at("2026-11-02", "10:30"), tier="gold", status="active", opt_out=[]),
        ev(PROFILE, at("2026-11-02", "09:00"), tier="silver", status="closed", opt_out=["sms"]),
        arrival("2026-11-02", "JP", "11:00"),
    ]
    result = run(RULES, events)
    assert [t.moment.params["country"] for t in result.tasks] == ["JP"]
    (refused,) = result.dead_letters
    assert (refused.reason.value, result.late) == ("late", 1)
    state = result.store.load(SUB)
    assert state is not None
    assert (state.profile["tier"], state.profile["status"]) == ("gold", "active")


def test_an_update_applies_only_its_fields_no_newer_update_set() -> None:
    """Carrying an opt-out list a newer update replaced and a tier none did: the tier is
    set, the list stays the newer one's, and dispatch learns the tier's update only (an
    opt-out a newer opt-in replaced must withdraw nothing)."""
    state = SubscriberState()
    assert profile_update(state, update(1000, tier="silver"), 1000) is not None
    assert profile_update(state, update(3000, opt_out=[]), 3000) is not None
    applied = profile_update(state, update(2000, tier="gold", opt_out=["sms"]), 2000)
    assert applied is not None
    assert (applied.tier, applied.opt_out) == ("gold", None)
    assert state.profile == {"tier": "gold", "opt_out": []}
    assert state.profile_at == {"tier": 2000, "opt_out": 3000}
    assert state.seen["p"] == 3000


def test_dispatch_learns_only_the_fields_an_update_set() -> None:
    """An older update carrying a closed line and an opt-out a newer update replaced:
    its tier is applied, but neither the facts nor the withdrawals see the line closed or
    the opt-out (tasks published since the newer update must not be withdrawn)."""
    detector = Detector(RULES, {t.value: t for t in EventType})
    records = to_records(
        [
            ev(PROFILE, at("2026-11-02", "10:30"), status="active", opt_out=[]),
            ev(PROFILE, at("2026-11-02", "10:00"), tier="gold", status="closed", opt_out=["sms"]),
        ]
    )
    batch = detector.process(records, DictStateStore().load, None)
    assert (batch.late, batch.dead_letters) == (0, [])
    older = batch.facts[-1]
    assert isinstance(older, ProfileEvent)
    assert (older.tier, older.status, older.opt_out) == ("gold", None, None)
    assert facts_of(older) == []
    assert profile_changes(batch.facts) == []
    state = batch.changes[SUB].state
    assert state is not None
    assert state.profile == {"status": "active", "opt_out": [], "tier": "gold"}


def test_a_field_cleared_by_a_newer_update_is_not_set_again_by_an_older_one() -> None:
    state = SubscriberState()
    assert profile_update(state, update(1000, contract_end="2027-01-31"), 1000) is not None
    assert profile_update(state, update(3000, contract_end=""), 3000) is not None
    assert profile_update(state, update(2000, contract_end="2027-06-30"), 2000) is None
    assert "contract_end" not in state.profile


def test_an_update_of_the_same_second_is_applied_read_later_wins() -> None:
    state = SubscriberState()
    assert profile_update(state, update(1000, tier="silver"), 1000) is not None
    assert profile_update(state, update(1000, tier="gold"), 1000) is not None
    assert state.profile["tier"] == "gold"


def test_the_fields_times_round_trip_compactly() -> None:
    state = SubscriberState(
        profile={"tier": "silver", "timezone": "Asia/Shanghai"},
        profile_at={"tier": 1_790_000_000, "timezone": 1_789_000_000},
        seen={"p": 1_790_000_000},
    )
    doc = orjson.loads(state.to_json())
    # seconds before seen["p"]: the time most of the profile's fields share, and the others'
    assert doc["q"] == [0, {"timezone": 1_000_000}]
    back = SubscriberState.from_bytes(state.to_bytes())
    assert (back.profile_at, back.profile) == (state.profile_at, state.profile)


def test_a_record_of_before_dates_every_field_at_its_latest_profile_time() -> None:
    """Written before fields had times: an older update is refused whatever it carries,
    as it was then, a field the record does not hold too (it may have been cleared)."""
    old = orjson.dumps({"o": {}, "r": {}, "p": {"tier": "gold"}, "n": {"p": 3000}})
    state = SubscriberState.from_bytes(old)
    assert state.profile_at == {PROFILE_AT_ANY: 3000}
    assert profile_update(state, update(2000, tier="silver"), 2000) is None
    assert profile_update(state, update(2000, birthday="1990-05-01"), 2000) is None
    assert profile_update(state, update(4000, opt_out=["sms"]), 4000) is not None
    assert state.profile == {"tier": "gold", "opt_out": ["sms"]}
    again = SubscriberState.from_bytes(state.to_bytes())
    assert again.profile_at == {PROFILE_AT_ANY: 3000, "opt_out": 4000}
    assert profile_update(again, update(3500, tier="silver"), 3500) is not None


def test_a_record_whose_updates_carried_no_field_is_no_record_of_before() -> None:
    state = SubscriberState()
    assert profile_update(state, update(3000), 3000) is not None
    back = SubscriberState.from_bytes(state.to_bytes())
    assert back.profile_at == {}
    assert profile_update(back, update(2000, tier="gold"), 2000) is not None


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "tier": st.sampled_from(["silver", "gold", ""]),
    "status": st.sampled_from(["active", "suspended", "closed"]),
    "opt_out": st.lists(st.sampled_from(["sms", "manager", "app_push"]), unique=True, max_size=2),
    "quiet_hours": st.sampled_from([[], ["22:00-08:00"], ["12:00-14:00"]]),
    "timezone": st.sampled_from(["Asia/Shanghai", "Asia/Tokyo", ""]),
    "contract_end": st.sampled_from(["2027-01-31", "2027-06-30", ""]),
    "region": st.sampled_from(["Beijing", "Shanghai", ""]),
}
PARTIAL = st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), max_size=4).flatmap(
    lambda names: st.fixed_dictionaries({name: FIELDS[name] for name in names})
)


@settings(max_examples=300, deadline=None)
@given(
    first=PARTIAL,
    second=PARTIAL,
    base=PARTIAL,
    times=st.tuples(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 5000)),
    stored=st.booleans(),
)
def test_the_profile_does_not_depend_on_the_order_two_updates_arrive_in(
    first: dict[str, Any],
    second: dict[str, Any],
    base: dict[str, Any],
    times: tuple[int, int, int],
    stored: bool,
) -> None:
    """Two partial updates dated apart, after a base profile, read in either order (the
    record stored and read back between them, or not): the same profile, and the same
    fields' times; an update refused in one order changes nothing in the other."""
    t0, t1, t2 = times
    if t1 == t2:
        t2 += 1  # same second, same field: read later wins, an order of its own

    def apply(order: list[tuple[int, dict[str, Any]]]) -> tuple[SubscriberState, list[bool]]:
        state = SubscriberState()
        applied = []
        for when, fields in [(t0, base), *order]:
            applied.append(profile_update(state, update(when, **fields), when) is not None)
            if stored:
                state = SubscriberState.from_bytes(state.to_bytes())
        return state, applied

    one, _ = apply([(t1, first), (t2, second)])
    other, _ = apply([(t2, second), (t1, first)])
    assert one.profile == other.profile
    assert one.profile_at == other.profile_at
    assert one.seen == other.seen


def test_a_backtest_over_the_events_leaves_the_record_the_worker_does() -> None:
    """The worker reads the two services' updates out of order; a backtest (or `state
    seed`) reads them in event-time order: the same profile and fields' times."""
    events = [
        ev(PROFILE, at("2026-11-02", "09:00"), tier="silver", opt_out=[], status="active"),
        ev(PROFILE, at("2026-11-02", "10:30"), tier="gold", quiet_hours=[]),
        ev(PROFILE, at("2026-11-02", "10:00"), opt_out=["sms"], status="suspended"),
        ev(PROFILE, at("2026-11-02", "10:15"), tier="bronze", contract_end="2027-01-31"),
        arrival("2026-11-02", "JP", "11:00"),
    ]
    worker = run(RULES, events).store.load(SUB)
    lines = sorted(
        (
            FileEvent(
                dt.datetime.fromisoformat(str(value["occurred_at"])).timestamp(),
                event_type,
                SUB.encode(),
                orjson.dumps(value),
            )
            for event_type, value in events
        ),
        key=lambda line: line.at,
    )
    backtest = SubscriberState.from_bytes(build_states(RULES, lines).records[SUB])
    assert worker is not None
    assert (
        worker.profile
        == backtest.profile
        == {
            "tier": "gold",
            "opt_out": ["sms"],
            "status": "suspended",
            "quiet_hours": [],
            "contract_end": "2027-01-31",
        }
    )
    assert worker.profile_at == backtest.profile_at
    assert worker.seen["p"] == backtest.seen["p"]
