"""What each event changes of a subscriber besides the rules' series: where they roam,
their open complaints, the region their events name and their profile; and what the
gates and special days read back from those (`subscriber_view`, `special_zone`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from moments.models import (
    ComplaintEvent,
    EventType,
    InputEvent,
    ProfileEvent,
    RoamingEvent,
    UsageEvent,
    channel_key,
)
from moments.refusals import LATENESS
from moments.sources import SOURCE_CODES
from moments.state import MAX_OPEN, PROFILE_AT_ANY, SubscriberState
from rules.gating import GatingPolicy, SubscriberView, roaming_zone

_PROFILE_BASE_FIELDS = frozenset({"event_id", "subscriber_id", "occurred_at"})


def track(
    event: InputEvent,
    state: SubscriberState,
    at: int,
    complaint_lapse: int | None,
    lateness: int = int(LATENESS.total_seconds()),
) -> None:
    """Keep what do-not-disturb needs: where the subscriber roams, open complaints (with
    the time of their latest record; those lapsed by `at` are forgotten); and the region
    their events name while the profile names none (a profile's is kept with the profile,
    and comes first: a copy of it would cost every record ~9 bytes). Called before `seen`
    takes the event's time: a roaming record older than the latest one applied (two feeds
    out of order, within the lateness) says where the customer was, not where they are.

    A resolved complaint stays as its resolution's time, negated, while a record older
    than it could still be applied (`lateness` seconds, the detector's: an older one is a
    late dead letter): an `opened` or `updated` record dated before the resolution, read
    after it (CRM systems send them late), leaves it resolved; a newer one reopens it. And
    a resolution dated before the complaint's latest record, read after it (the customer
    called again after it was resolved), leaves it open: the latest record in event time
    decides, whichever feed was read first."""
    # `type(event) is`, not isinstance: no call, and the event models have no subclasses.
    if event.region and type(event) is not ProfileEvent:
        state.region = "" if state.profile.get("region") else event.region
    complaint_source = SOURCE_CODES[EventType.COMPLAINT]
    if type(event) is RoamingEvent:
        if at >= state.seen.get(SOURCE_CODES[EventType.ROAMING], at):
            state.roaming = visited(event)
    elif type(event) is ComplaintEvent:
        complaints = state.complaints
        key = event.complaint_id
        before = complaints.pop(key, None)
        resolved = -before if before is not None and before < 0 else None
        if event.status == "resolved" and before is not None and at < before:
            complaints[key] = before  # a resolution older than a record read before it
        elif event.status == "resolved":
            complaints[key] = -max(at, resolved or 0)
        elif resolved is not None and at <= resolved:
            complaints[key] = -resolved  # a record from before the resolution, read late
        else:
            complaints[key] = max(at, before or 0)
        while len(complaints) > MAX_OPEN:  # resolutions go first, then the oldest opened
            oldest = next((c for c, t in complaints.items() if t < 0), None)
            del complaints[oldest if oldest is not None else next(iter(complaints))]
    # Lapsed complaints leave the record (they count nowhere: `open_complaints`), and so
    # do resolutions no record can be applied before any more, looked for on any event
    # but usage, the 85% whose scan showed in the backtest's profile.
    if state.complaints and type(event) is not UsageEvent:
        latest = state.seen.get(complaint_source, 0)
        if type(event) is ComplaintEvent:
            latest = max(latest, at)  # `seen` takes this record's time after `track`
        oldest_applied = latest - lateness
        gone = [
            c
            for c, t in state.complaints.items()
            if (t < 0 and -t < oldest_applied)
            or (complaint_lapse is not None and at - abs(t) >= complaint_lapse)
        ]
        for c in gone:
            del state.complaints[c]


def visited(event: RoamingEvent) -> dict[str, Any]:
    """What `SubscriberState.roaming` keeps of a roaming record: the visited place's zone
    and/or UTC offset, else its country; {} at home (a domestic record)."""
    if event.roaming_type != "international":
        return {}
    return {
        k: v for k, v in (("z", event.timezone), ("o", event.utc_offset_minutes)) if v is not None
    } or {"c": event.country}


def open_complaints(state: SubscriberState, at: int, lapse: int | None) -> int:
    """The subscriber's complaints still being handled at event time `at`: opened, not
    resolved, and with a record (opened or updated) within `lapse` seconds
    (`gating.open_complaint_lapses_after`; None: however old). Customer-service systems
    lose resolutions, and a complaint opened ten months before still held back a
    retention call and counted in the churn-risk score."""
    if lapse is None:
        return sum(1 for t in state.complaints.values() if t >= 0)
    return sum(1 for t in state.complaints.values() if t >= 0 and at - t < lapse)


def abroad(state: SubscriberState, at: int, lapse: int | None) -> dict[str, Any]:
    """Where the subscriber roams at event time `at` (`SubscriberState.roaming`), or {}
    at home: after a record of the return, or once `lapse` seconds (`gating.
    roaming_lapses_after`; None: never) passed since their latest roaming record. Roaming
    producers do not always send the return, and a week in New York kept quiet hours on
    its clock for months. The network sends a record on each registration abroad (arrival,
    a new network or area), so the latest one dates the trip's latest sign of life; its
    time is the roaming source's `seen` (records written before the lapse have it too)."""
    roaming = state.roaming
    if not roaming or lapse is None:
        return roaming
    latest = state.seen.get(SOURCE_CODES[EventType.ROAMING], 0)
    return roaming if at - latest < lapse else {}


def special_zone(state: SubscriberState, at: int, policy: GatingPolicy) -> dt.tzinfo | None:
    """The visited place's clock while the customer roams abroad at event time `at` (the
    one quiet hours use: `rules.gating.roaming_zone`), or None at home and in a country of
    several clocks the roaming record named alone (then the profile's zone, as for quiet
    hours). Special days are judged on it: which local date it is, when the day's look is
    due and when a greeting expires."""
    roaming = abroad(state, at, policy.roaming_lapse)
    if not roaming:
        return None
    return roaming_zone(roaming.get("z"), roaming.get("o"), roaming.get("c"))


def subscriber_view(state: SubscriberState, at: int, policy: GatingPolicy) -> SubscriberView:
    """What the gates need to know of a subscriber at event time `at`, from the profile
    and the record."""
    profile = state.profile
    roaming = abroad(state, at, policy.roaming_lapse)
    return SubscriberView(
        timezone=profile.get("timezone"),
        roaming_timezone=roaming.get("z"),
        roaming_utc_offset_minutes=roaming.get("o"),
        roaming_country=roaming.get("c"),
        quiet_hours=tuple(profile.get("quiet_hours") or ()),
        status=profile.get("status"),
        # By `channel_key`: a channel this version does not send on is kept as written
        # (`WeChat`), and a version sending on it compares its tasks' `wechat` with it.
        opt_out=frozenset(channel_key(str(c)) for c in profile.get("opt_out") or ()),
        open_complaints=open_complaints(state, at, policy.open_complaint_lapse),
    )


def profile_update(state: SubscriberState, event: ProfileEvent, at: int) -> ProfileEvent | None:
    """Apply the fields of a profile update that no newer update set (an old snapshot sent
    again must not undo a newer one); None when it changes nothing, stale: every field it
    carries was set or cleared by a newer update (`SubscriberState.profile_at`), or it
    carries none and is older than the latest update. Last writer wins per field: two CRM
    services each send partial updates, and an opt-out dated 10:00 read after a tier change
    dated 10:30 is applied (it was refused whole: a do-not-disturb breach). A field set by
    an update dated the same second is set again (read later wins, as before fields had
    times: a correction sent with the same time applies).

    Returns the update as applied: the event itself, or a copy without the fields newer
    updates set, which the rules and dispatch's facts and withdrawals read (an opt-out
    list a newer update replaced withdraws nothing). Unlike other events, an update older
    than the lateness is still applied: an opt-out or a suspension holds however late the
    CRM sends it. The latest profile time (`seen["p"]`) is the newest update's that
    carried a field."""
    source = SOURCE_CODES[EventType.PROFILE]
    newest = state.seen.get(source)
    carried = _carried(event)
    times = state.profile_at
    anyone = times.get(PROFILE_AT_ANY)
    stale = [name for name in carried if at < times.get(name, anyone if anyone is not None else at)]
    if carried and len(stale) == len(carried):
        return None
    if not carried and newest is not None and at < newest:
        return None
    for name in stale:
        del carried[name]
    _set(state.profile, carried)
    for name in carried:
        times[name] = at
    if carried and state.special_day:
        state.changed_after_look = state.special_day  # applied after that day's look
    if carried and (newest is None or at > newest):
        # Only an update that set or cleared a field dates the profile: one carrying none
        # (a CRM record of other fields, a top-up's `amount` and `channel` on this topic)
        # moved it, and the special days took the profile for changed since their look.
        state.seen[source] = at
    return event.model_copy(update=dict.fromkeys(stale)) if stale else event


def apply_profile(state: SubscriberState, event: ProfileEvent) -> None:
    """Set the fields the update carries (`_carried`), whatever their times."""
    _set(state.profile, _carried(event))


def _carried(event: ProfileEvent) -> dict[str, Any]:
    """The fields an update carries, JSON-ready; "" clears one. An update changes only the
    fields it carries; a null is not carried. A serializer
    that writes every unset field as null (Jackson, pydantic, Go) lifted opt-outs, quiet
    hours and suspensions on each partial update, and `opt_out: null` an SMS opt-out:
    clearing is explicit (`opt_out: []`, `quiet_hours: []`, `status: "active"`, and ""
    for the text, date and zone fields: the models read a blank value as ""). Opt-out
    lists and quiet hours are one field each, set whole."""
    # Declared fields only: unknown extras must not grow the subscriber's record.
    fields = set(ProfileEvent.model_fields) - _PROFILE_BASE_FIELDS
    carried = event.model_dump(mode="json", exclude_unset=True, exclude_none=True, include=fields)
    if event.region is not None:
        carried["region"] = event.region
    if event.opt_out is not None:
        # Each once, as written; a channel moments does not send on too (`unknown_opt_outs`,
        # bounded by the model): this version's gates never match it, and a newer version
        # that sends on it reads this state in a rolling upgrade (docs/operations.md).
        carried["opt_out"] = list(dict.fromkeys(str(c) for c in event.opt_out))
    return carried


def _set(profile: dict[str, Any], carried: dict[str, Any]) -> None:
    """Set the carried fields in the profile; "" removes one."""
    for name, value in carried.items():
        if value == "":
            profile.pop(name, None)
        else:
            profile[name] = value
