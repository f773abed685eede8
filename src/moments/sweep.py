"""What the calendar fires rather than an event: period windows closing, special days,
and the sweep that judges both for subscribers who send nothing.

Windows end at local midnights, so they are closed at most once a local day
(`CHECKED_DAY`), and special days are looked at once a local day from the look's hour.
A subscriber's event has both judged first, as the detector applies it
(`Detector.apply`); `sweep` judges them by each partition's watermark for the records
no event reached, and `next_sweep` says when a record is next worth sweeping.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from moments.batchresult import BatchResult, StateChange, unmake
from moments.models import EventType
from moments.sources import SOURCE_CODES
from moments.state import SubscriberState
from moments.taskmaking import emit
from moments.tracking import special_zone
from rules.base import EvalContext, Fired
from rules.rule import CompiledRule
from rules.series import forget_begins
from rules.special_days import due_now_in, evaluation_instant_in, special_days_due
from rules.windows import local_date, window_end, window_index

if TYPE_CHECKING:
    from moments.engine import Detector

CLOSE_CATCH_UP = 7
"""Most windows closed at once for one subscriber (after a long silence or a gap in the data)."""

CHECKED_DAY = "checked"
"""Key in `SubscriberState.closed`: the local day whose closes were already evaluated."""

GREETINGS = frozenset({"birthday", "join_anniversary", "holiday"})
"""Special days whose task is worth nothing after the day: greetings, not a contract's
end (a renewal offer is still worth making the day after it is due)."""


def special_days(
    detector: Detector,
    sub: str,
    state: SubscriberState,
    at: int,
    tz: dt.tzinfo,
    ctx: EvalContext,
    result: BatchResult,
    profile_changed: bool = False,
    looked: Mapping[str, Any] | None = None,
) -> bool:
    """Look at the subscriber's special days once a day at the local hour (in event
    time); True when it did.

    `looked`: on a profile update, the profile before it. A look again at a day looked
    at already is for what the update brought (a birthday entered at 15:00, an opt-out
    withdrawn): an occasion a rule fired on at the day's last look, read with that
    profile, was judged then, and is one moment (counted once in
    `moments_detected_total`, its task sent once); its task is made again (`emit`'s
    `again`), so that one the gates held then is sent once they let it go."""
    special = detector.rules.special
    if not special.rules:
        return False
    last = dt.date.fromordinal(state.special_day) if state.special_day else None
    instant = dt.datetime.fromtimestamp(at, dt.UTC)
    # On the clock where the customer is: a birthday due at 09:00 in Shanghai is the
    # evening before it in New York.
    where = special_zone(state, at, detector.rules.gating) or tz
    day = due_now_in(where, last, instant, special.local_hour, profile_changed)
    if day is None:
        return False
    state.special_day = day.toordinal()
    # A greeting is for its day: one made late (a birthday learned at 22:00, a worker
    # back in the evening) must not reach the customer the next morning.
    # Its end as the day's window ends, as a real local time: where the clocks skip
    # midnight (Santiago), 00:00 does not exist and compared unequal to its instant.
    day_end = dt.datetime.fromtimestamp(window_end("day", day.toordinal(), where), where)
    judged = (  # an update's look at a day looked at already
        _looked_at(detector, state, looked, day, at, tz, where)
        if looked is not None and last == day
        else {}
    )
    daily = last is not None and last == day - dt.timedelta(days=1)
    leads: dict[str, list[Any]] = {}  # the contracts' ends fired on at this look
    for occasion in special_days_due(state.profile, day, special.config, special.calendar):
        latest = day_end if occasion.kind in GREETINGS else None
        for rule in special.rules:
            fired = rule.check(None, state, at, tz, occasion=occasion)
            if fired is not None:
                if occasion.kind == "contract_expiry":
                    leads[rule.tag] = [fired.occurrence, day.toordinal()]
                # Judged at the day's last look already: made again all the same, counted
                # once. A gate that held it then (an opt-out, quiet hours to the day's
                # end) may have let go with the update; the ledger stands a task made
                # then down.
                again = fired.occurrence in judged.get(rule.id, ()) or (
                    daily
                    and occasion.kind == "contract_expiry"
                    and _judged_the_day_before(detector, rule, fired, state, day, at, tz, where)
                )
                emit(detector, rule, fired, sub, None, state, at, ctx, result, latest, again)
    # Read by the next day's look (`_judged_the_day_before`), once this one's are judged.
    state.leads = leads
    if last != day:
        state.changed_after_look = 0  # read: it named the day before, or an earlier one
    return True


def _judged_the_day_before(
    detector: Detector,
    rule: CompiledRule,
    fired: Fired,
    state: SubscriberState,
    day: dt.date,
    at: int,
    tz: dt.tzinfo,
    where: dt.tzinfo,
) -> bool:
    """True when a contract's end, judged every day of its lead (the same occurrence), was
    fired on by the rule at the day before's look, live: it is judged again each day (a
    task is still made once a cooldown or an opt-out is over), but it is one moment,
    counted once in `moments_detected_total`. The day's last judgement read the profile
    as it is unless an update came after that day, or was applied after its look however
    old (one during it had the day looked at again); then what that judgement fired on
    is read from the state (`leads`: with none, a record written before it was kept,
    False). False too when the look was before the go-live instant (judged in shadow:
    the first live judgement counts it)."""
    special = detector.rules.special
    before = day - dt.timedelta(days=1)
    look = int(evaluation_instant_in(where, before, special.local_hour).timestamp())
    if state.changed_after_look == before.toordinal() or state.seen.get(
        SOURCE_CODES[EventType.PROFILE], 0
    ) >= window_end("day", before.toordinal(), where):
        # The profile that look read is gone (an update applied after it, or dated since
        # the day's end); re-judged with this one, an update before today's look counted
        # the moment detected again, and one dated before the day, read after its look,
        # took a moment that look did not fire on for judged then and counted it nowhere.
        return state.leads.get(rule.tag) == [fired.occurrence, before.toordinal()] and (
            _judged_alike(detector, rule, fired, state, look, at)
        )
    for occasion in special_days_due(state.profile, before, special.config, special.calendar):
        if occasion.occurrence == fired.occurrence:
            return _fired_alike(detector, rule, fired, state, look, at, tz, occasion=occasion)
    return False


def _looked_at(
    detector: Detector,
    state: SubscriberState,
    looked: Mapping[str, Any],
    day: dt.date,
    at: int,
    tz: dt.tzinfo,
    where: dt.tzinfo,
) -> dict[str, set[str]]:
    """Rule id -> the occurrences it fired on at the day's last look, judged again with
    the profile that look read (`looked`). A live rule's look due before the go-live
    instant was judged in shadow then, as was one of a rule in `mode: shadow` gone live
    since (`SubscriberState.shadowed`): the first live judgement counts it (none here)."""
    special = detector.rules.special
    shadow_look = evaluation_instant_in(where, day, special.local_hour).timestamp()
    live_now = at >= detector.live_at and shadow_look < detector.live_at
    now_profile = state.profile
    state.profile = dict(looked)
    try:
        judged: dict[str, set[str]] = {}
        for occasion in special_days_due(looked, day, special.config, special.calendar):
            for rule in special.rules:
                if live_now and not rule.shadow:
                    continue
                fired = rule.check(None, state, at, tz, occasion=occasion)
                if fired is None:
                    continue
                if not rule.shadow and state.shadow_judged(rule.tag, fired.occurrence):
                    continue  # judged at the look in `mode: shadow`, live since: first now
                if (
                    rule.shadow
                    and shadow_look >= detector.live_at
                    and not state.shadow_judged(rule.tag, fired.occurrence)
                ):
                    continue  # judged live at the look, in `mode: shadow` since: first now
                judged.setdefault(rule.id, set()).add(fired.occurrence)
        return judged
    finally:
        state.profile = now_profile


def close_windows(
    detector: Detector,
    sub: str,
    state: SubscriberState,
    at: int,
    tz: dt.tzinfo,
    ctx: EvalContext,
    result: BatchResult,
    day: dt.date | None = None,
    active: EventType | None = None,
) -> bool:
    """Evaluate the close-time rules of every window that ended by `at`; True if any did.

    `active`: the type of the subscriber's event closing them. It ends the silence of
    a rule that judges one on that type, whose task is not worth sending any more;
    a silence on other types goes on, and is judged now as a sweep would (skipped, it
    was judged first at the next day's close, which took it for a re-judgement and
    counted no detection)."""
    closed_any = False
    day = day if day is not None else local_date(at, tz)
    ordinal = day.toordinal()
    if state.closed.get(CHECKED_DAY) == ordinal:
        return False  # windows end at local midnights: nothing new closes within a day
    state.closed[CHECKED_DAY] = ordinal
    # Once a local day, with the day's first close: the begins of series no rule reads
    # as "fewer than" any more (a reload) leave the record.
    if state.series and forget_begins(state.series, detector.rules.begun_tags):
        closed_any = True
    for period, rules in detector.rules.by_period.items():
        current = window_index(period, day)
        first_open = state.closed.get(period)
        if first_open is None:
            state.closed[period] = current  # nothing before the first event to close
            closed_any = True
            continue
        if current <= first_open:
            continue
        start = max(first_open, current - CLOSE_CATCH_UP)
        for index in range(start, current):
            end = int(window_end(period, index, tz))
            # The window before was judged, here or at an earlier close, unless the
            # catch-up skipped it (a record not swept for more than CLOSE_CATCH_UP).
            judged = index > start or start == first_open
            for rule in rules:
                if rule.judges_silence and active in rule.event_types:
                    continue
                fired = rule.check(None, state, end, tz, closing=index)
                if fired is not None:
                    again = (
                        rule.judges_silence
                        and judged
                        and _judged_before(detector, rule, fired, state, period, index, end, tz)
                    )
                    emit(detector, rule, fired, sub, None, state, end, ctx, result, again=again)
        state.closed[period] = current
        closed_any = True
    return closed_any


def _judged_before(
    detector: Detector,
    rule: CompiledRule,
    fired: Fired,
    state: SubscriberState,
    period: str,
    index: int,
    end: int,
    tz: dt.tzinfo,
) -> bool:
    """True when a silence rule firing at the close of window `index` (at `end`) fired on the
    same occurrence (the same silence) at the previous window's close, live: the
    silence is judged again every day it lasts (a task is still made once its
    cooldown ends), but it is one moment, counted once in `moments_detected_total`."""
    before = int(window_end(period, index - 1, tz))
    return _fired_alike(detector, rule, fired, state, before, end, tz, closing=index - 1)


def _fired_alike(
    detector: Detector,
    rule: CompiledRule,
    fired: Fired,
    state: SubscriberState,
    earlier: int,
    at: int,
    tz: dt.tzinfo,
    **judged: Any,
) -> bool:
    """True when the rule, judged at `earlier` (a previous day's look or window close,
    `judged` its occasion or window) as it is judged now at `at` (both live, or both in
    shadow), fired on `fired`'s occurrence: the same moment judged again, counted once.
    One judged in shadow before the go-live instant and live now: the first live
    judgement counts it, as it counts one last judged by the rule in `mode: shadow`,
    live since (`SubscriberState.shadowed`); judged in shadow both times (a warm-up
    before `MOMENTS_LIVE_FROM`, a `mode: shadow` rule), the shadow figures count it
    once."""
    if not _judged_alike(detector, rule, fired, state, earlier, at):
        return False
    again = rule.check(None, state, earlier, tz, **judged)
    return again is not None and again.occurrence == fired.occurrence


def _judged_alike(
    detector: Detector,
    rule: CompiledRule,
    fired: Fired,
    state: SubscriberState,
    earlier: int,
    at: int,
) -> bool:
    """True when a judgement at `earlier` that fired on `fired`'s occurrence is the one
    counted for it (`_fired_alike`): both live or both in shadow, and not last judged by
    the rule in `mode: shadow`, live since."""
    if rule.shadow:
        # Judged in shadow at `earlier` too: before the go-live instant, or by the rule in
        # `mode: shadow` (its mark). Judged live then (the mode line added since), its
        # first shadow judgement counts it in the shadow figures, as the first live one
        # counts a trial's moment; taken for the moment judged again, it counted nothing.
        return earlier < detector.live_at or state.shadow_judged(rule.tag, fired.occurrence)
    if (earlier < detector.live_at) != (at < detector.live_at):
        return False
    # Judged last by the rule in `mode: shadow`, live since (the mode line deleted): its
    # first live judgement counts it, as at the go-live instant.
    return not state.shadow_judged(rule.tag, fired.occurrence)


def sweep(
    detector: Detector,
    states: Iterable[tuple[str, SubscriberState, int]],
    watermark: Callable[[int], int | None],
    now: dt.datetime | None,
    stored: Callable[[str], SubscriberState | None] | None = None,
) -> BatchResult:
    """Close the windows that ended by each partition's watermark, for subscribers who
    went silent (an event closes them too, but a silent subscriber sends none).

    `stored`: the subscriber's record as the store holds it, read anew (`StateStore.reread`).
    A record whose sweep failed on a damaged field is mended from it and swept again: the
    copy swept had its day marked closed and looked at (and earlier windows' marks set)
    before the failure, so swept again it returned at once, and the day's tasks, their
    cooldowns and its window were lost. None: the records of `states` are the only copies
    (a list of objects); one that failed is mended and swept again as it was left. The
    record to write is the one in `BatchResult.changes`."""
    result = BatchResult()
    ctx = EvalContext(now=now)
    if not detector.rules.by_period and not detector.rules.special.rules:
        return result
    for sub, state, partition in states:
        at = watermark(partition)
        if at is None:
            continue
        made = len(result.tasks)
        try:
            tz = detector.zone_of(state)
            closed = close_windows(detector, sub, state, at, tz, ctx, result)
            changed = special_days(detector, sub, state, at, tz, ctx, result) or closed
        except Exception as exc:  # nor one record the sweep
            unmake(result, made)
            mended = _mended(sub, state, stored)  # a damaged record's fault, not the rules'?
            if mended is None:
                result.failures.append(exc)
                continue  # its record is not written; the next sweep tries it again
            state = mended
            try:
                _sweep_one(detector, sub, state, at, ctx, result)
            except Exception as again:
                unmake(result, made)
                result.failures.append(again)
                continue
            changed = True
        if changed or state.damaged:  # damaged: read as `UNREADABLE`, or mended
            if state.damaged:
                result.damaged[sub] = state.damaged
                state.damaged = ""  # said once: the record is written back sound
            result.changes[sub] = StateChange(state, partition)
    return result


def _mended(
    sub: str,
    swept: SubscriberState,
    stored: Callable[[str], SubscriberState | None] | None,
) -> SubscriberState | None:
    """The record whose sweep failed, as stored (or `swept` itself, with no store), with
    the fields `mend` reset and said in `damaged`; None when none was reset (the fault is
    the rules': the record is left as it is stored) or the store holds none any more."""
    state = swept if stored is None else stored(sub)
    if state is None:
        return None
    reset = state.mend()
    if not reset:
        return None
    state.damaged = ", ".join([state.damaged, *reset] if state.damaged else reset)
    return state


def _sweep_one(
    detector: Detector,
    sub: str,
    state: SubscriberState,
    at: int,
    ctx: EvalContext,
    result: BatchResult,
) -> None:
    """Sweep a mended record again (what `sweep` does for each)."""
    tz = detector.zone_of(state)
    close_windows(detector, sub, state, at, tz, ctx, result)
    special_days(detector, sub, state, at, tz, ctx, result)


def next_sweep(detector: Detector, state: SubscriberState, at: int) -> float:
    """When `sweep` next needs this record: the first event time from `at` on at which
    sweeping it can make a task or change more than its CHECKED_DAY marker (`at` or
    earlier when that is now; inf when no rule is swept). Until then, with the record
    unchanged, every sweep of it is a no-op, so a sweeper may skip it.

    Closes happen only when the local day differs from CHECKED_DAY (windows end at
    local midnights) and special days once a local day from the look's hour: within
    the local day holding `at`, nothing is due before the next midnight or that hour."""
    special = detector.rules.special
    if not detector.rules.by_period and not special.rules:
        return float("inf")
    tz = detector.zone_of(state)
    ordinal = local_date(at, tz).toordinal()
    if state.closed.get(CHECKED_DAY) != ordinal:
        return at
    day_end, look = _day_marks(tz, ordinal, special.local_hour)
    if not special.rules:
        return day_end
    where = special_zone(state, at, detector.rules.gating)
    if where is None or where == tz:
        return min(day_end, look) if state.special_day < ordinal else day_end
    # Abroad: special days are on the visited clock (its midnight starts the day whose
    # look is due at its hour) until the trip lapses and home's clock is back.
    there = local_date(at, where).toordinal()
    there_end, there_look = _day_marks(where, there, special.local_hour)
    soonest = min(day_end, there_end)
    if state.special_day < there:
        soonest = min(soonest, there_look)
    lapse = detector.rules.gating.roaming_lapse
    if lapse is not None:
        soonest = min(soonest, state.seen.get(SOURCE_CODES[EventType.ROAMING], 0) + lapse)
    return soonest


@lru_cache(maxsize=4096)
def _day_marks(tz: dt.tzinfo, ordinal: int, local_hour: int) -> tuple[float, float]:
    """(end of local day `ordinal`, its special-day look) as epoch seconds, in a zone."""
    day = dt.date.fromordinal(ordinal)
    look = evaluation_instant_in(tz, day, local_hour).timestamp()
    return window_end("day", ordinal, tz), look
