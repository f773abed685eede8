"""A fired rule made into a task, or not: the gates, its rule's cooldown mark, shadow mode.

`emit` is what the detector does with every firing (an event's, a window's close, a
special day's): it counts the moment, drops it within its rule's cooldown or once its
task would have expired, scores it with the subscriber's churn-risk signals, asks the
gates, moves the cooldown mark and builds the task (moments.taskbuilder makes its id and
description). A shadow rule, or any rule before the go-live instant, goes the same way up
to the gates' decision and stops before a task.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from moments.batchresult import BatchResult, CooldownMark
from moments.models import Channel, Deferral, InputEvent, QuietHours
from moments.records import SuppressReason
from moments.risk import SPEND_SERIES, RiskSignals, hotline_calls, scored, spend_drop
from moments.state import SHADOW_MARK, SubscriberState, mark_id
from moments.taskbuilder import build_task, task_id
from moments.tracking import open_complaints, subscriber_view
from rules.base import EvalContext, Fired
from rules.durations import elapsed_after
from rules.gating import GateInput, gate, quiet_hours_carried
from rules.rule import CompiledRule
from rules.windows import local_date, window_index

if TYPE_CHECKING:
    from moments.engine import Detector


def emit(
    detector: Detector,
    rule: CompiledRule,
    fired: Fired,
    sub: str,
    event: InputEvent | None,
    state: SubscriberState,
    at: int,
    ctx: EvalContext,
    result: BatchResult,
    latest: dt.datetime | None = None,
    again: bool = False,
) -> None:
    """Gate a firing and make its task; `latest` ends the task sooner than its ttl.
    `again`: a moment judged again (a silence on its next day, a contract's end on each
    day of its lead: moments.sweep's `_fired_alike`), counted at its first judgement: not
    detected, suppressed, deferred or (a shadow rule's) counted in the shadow figures
    once more. It still makes its task, whose id is the first judgement's: the ledger
    sends it once, and dispatch counts it only if it is new there (`rejudged`)."""
    spec = rule.task
    if again and task_id(sub, rule.id, fired.occurrence) in result.task_ids:
        # This batch holds the moment's task already: made at its first judgement (a
        # day's look and a profile update read in one batch; a catch-up closing a
        # silence's windows at once), counted there, or at an earlier re-judgement. Made
        # twice, dispatch kept the last one, taken for a re-judgement new to the ledger:
        # its deferral counted a second time, and sent as of the later judgement.
        return
    # A shadow rule takes the same path up to the gates' decision, counted apart from
    # the live figures, and stops before a task: it sends nothing and takes no contact.
    # Before the go-live instant every rule is one, judged by the moment's event time.
    shadow = result.shadow if rule.shadow or at < detector.live_at else None
    if rule.shadow and rule.judged_again:
        # A trial gone live judges this moment first when it next looks (moments.sweep).
        state.note_judged(rule.tag, fired.occurrence, shadow=True)
    elif shadow is None and state.shadowed:
        # Judged live: its next look judges it again. Only this occurrence's kind: the
        # trial's note of the rule's other occasion (a contract's end beside a birthday)
        # still says that one's first live judgement is to come.
        state.note_judged(rule.tag, fired.occurrence, shadow=False)
    if shadow is None and not again:
        result.detected[(str(spec.family), spec.moment_type)] += 1
    if again and _kept(detector, rule, fired, sub, state):
        result.rejudged.add(task_id(sub, rule.id, fired.occurrence))  # as if made, dropped
        return
    if spec.cooldown is not None:
        last = state.fired.get(rule.tag)
        if (
            last is not None
            # Either side of the mark: a moment dated before the task that set it, read
            # after it (feeds read side by side, within the lateness), is as close to
            # that contact; it made a second one, and moved the mark back.
            and abs(at - last) < spec.cooldown.total_seconds()
            # A shadow judgement's mark holds back shadow ones only: a cooldown spaces
            # contacts, and the trial (or the warm-up before MOMENTS_LIVE_FROM)
            # contacted nobody, so a customer still silent at the date, or low on
            # balance again the day after a shadow moment, gets the live task.
            and (shadow is not None or state.fired_by.get(rule.tag) != SHADOW_MARK)
        ):
            if again:  # counted at its first judgement
                return
            if shadow is not None:
                shadow[(rule.id, "suppressed", SuppressReason.COOLDOWN)] += 1
            else:
                result.suppressed[(spec.moment_type, SuppressReason.COOLDOWN)] += 1
            return
    triggered = (
        event.occurred_at
        if event is not None  # else a sweep's moment, in the subscriber's local time
        else dt.datetime.fromtimestamp(at, detector.zone_of(state))
    )
    now = ctx.now if ctx.now is not None else triggered
    # In elapsed time: a sweep's moment is on the subscriber's clock, whose DST change
    # moved a 48h expiry by an hour (an event's time has a fixed offset).
    expires = elapsed_after(triggered, spec.ttl)
    if latest is not None and latest < expires:
        expires = latest
    if expires <= now:
        if again:
            return
        if shadow is not None:
            shadow[(rule.id, "suppressed", SuppressReason.EXPIRED)] += 1
        else:
            result.suppressed[(spec.moment_type, SuppressReason.EXPIRED)] += 1
        return
    # Everything the task shows is decided first, so it is built (and validated) once.
    priority, risk = scored(risk_signals(detector, state, at), spec.priority)
    deliver_after = max(now, triggered)
    policy = detector.rules.gating
    gate_input = GateInput(
        str(spec.channel), priority, spec.purpose, triggered, expires, deliver_after
    )
    view = subscriber_view(state, at, policy)
    decision = gate(gate_input, view, policy)
    if (
        again
        and not rule.judges_silence
        and decision.action == "defer"
        and decision.reason == "suspended"
    ):
        # A special day judged again (a contract's lead) while the line is still
        # suspended: its first task waits for the line, and the profile update that
        # reactivates it looks at the day again, which makes it. Made again, a task whose
        # ledger entry had lapsed (a day past its expiry) waited and expired once more,
        # its deferral and its drop counted again at every lapse of a long suspension.
        # (A silence is judged again only at the next close: its task made again is what
        # a reactivation releases at once, so it is still made.)
        return
    before = state.fired.get(rule.tag)
    before_by = state.fired_by.get(rule.tag)
    marks = spec.cooldown is not None and not (
        # The task the rule's mark names, made again (a contract's end each day of its
        # lead, a silence each day it lasts): no new contact, so the cooldown stays where
        # its first making set it. Moved to each re-judgement, it held back the rule's
        # other moments: New Year's greeting of a rule of two occasions, judged after the
        # contract's end it had offered 12 days before (a cooldown of 3 days).
        again
        and before_by is not None
        and before_by == mark_id(task_id(sub, rule.id, fired.occurrence))
    )
    if marks and decision.action != "suppress":
        # Only a moment that makes a task starts the cooldown: one the gates dropped
        # (a complaint being handled, a closed line) or that lapsed did not reach
        # the customer, and the next must not wait for it. Dispatch may still drop
        # the task: then `give_back_cooldowns` puts `before` back. The task sets
        # `fired_by` once it is made (a shadow rule's mark is no task's).
        if shadow is None:
            state.fired[rule.tag] = at
            state.fired_by.pop(rule.tag, None)
        elif before is None or at >= before or before_by == SHADOW_MARK:
            state.fired[rule.tag] = at
            state.fired_by[rule.tag] = SHADOW_MARK
        # else a shadow moment dated before a live task's mark (a warm-up event read
        # late, after the instant): its shadow mark would hold no live moment back,
        # and the live task's holds every later one; the live mark stays.
    if shadow is not None:
        if again:  # one moment, counted at its first judgement, as a live rule's
            return
        outcome = {"suppress": "suppressed", "defer": "deferred"}.get(decision.action, "task")
        why = "" if outcome == "task" else str(decision.reason or decision.action)
        shadow[(rule.id, outcome, why)] += 1
        return
    if decision.action == "suppress":
        assert decision.reason is not None  # gating always says why it suppresses
        if not again:
            result.suppressed[(spec.moment_type, SuppressReason(decision.reason))] += 1
        return
    deferred = None
    if decision.action == "defer":
        assert decision.reason is not None  # gating always says why it defers
        reason = decision.reason
        until = decision.until or expires  # a suspended line: at most until expiry
        deferred = Deferral(reason=reason, until=until)
        deliver_after = decision.deliver_after
        if not again:  # else dispatch counts it if the task is new to the ledger
            result.deferred[reason] += 1
    region = event.region if event is not None and event.region else None
    evidence = [event.event_id] if event is not None else []
    task = build_task(
        rule,
        fired,
        sub,
        region,
        triggered,
        evidence,
        state,
        now,
        event,
        priority=priority,
        risk=risk,
        deliver_after=deliver_after,
        deferred=deferred,
        quiet_hours=_quiet_hours(*quiet_hours_carried(view, policy)),
        expires_at=expires,
    )
    result.tasks.append(task)
    result.task_ids.add(task.task_id)
    if again:
        result.rejudged.add(task.task_id)
    if marks:
        by = state.fired_by[rule.tag] = mark_id(task.task_id)
        result.cooldowns[task.task_id] = CooldownMark(sub, rule.tag, at, before, by, before_by)


def _kept(
    detector: Detector, rule: CompiledRule, fired: Fired, sub: str, state: SubscriberState
) -> bool:
    """True when a moment judged again would only make a task its ledger holds for good
    (`Detector.kept`): made again, it moves no cooldown mark (none, or the task's own) and
    counts nothing, and the ledger drops it; the gates and the build are skipped."""
    if detector.kept is None:
        return False
    made = task_id(sub, rule.id, fired.occurrence)
    if made not in detector.kept:
        return False
    return rule.task.cooldown is None or state.fired_by.get(rule.tag) == mark_id(made)


def risk_signals(detector: Detector, state: SubscriberState, at: int) -> RiskSignals:
    """The churn-risk signals the record holds (see moments.risk)."""
    today = local_date(at, detector.zone_of(state))
    spend = detector.rules.series.get(SPEND_SERIES)
    drop = (
        spend_drop(spend, state.series.get(spend.tag), window_index(spend.period, today))
        if spend is not None
        else None
    )
    return RiskSignals(
        competitor_hotline_calls=hotline_calls(state.series, today.toordinal()),
        spend_drop=drop,
        open_complaints=open_complaints(state, at, detector.rules.gating.open_complaint_lapse),
        contract_days_left=_days_between(today, state.profile.get("contract_end")),
        tenure_days=_days_since(today, state.profile.get("joined_on")),
    )


def _quiet_hours(
    zone: str | None, windows: list[str], channels: tuple[Channel, ...]
) -> QuietHours | None:
    """What a task carries so that dispatch can judge its quiet hours again whenever it
    sends it later than gating decided, or on another channel (it knows neither the
    policy nor the customer)."""
    if zone is None or not windows:
        return None
    return _quiet_hours_of(zone, tuple(windows), channels)


@lru_cache(maxsize=1024)
def _quiet_hours_of(
    zone: str, windows: tuple[str, ...], channels: tuple[Channel, ...]
) -> QuietHours:
    return QuietHours(zone=zone, windows=list(windows), channels=list(channels))


def _days_between(today: dt.date, iso: Any) -> int | None:
    try:
        return (dt.date.fromisoformat(str(iso)) - today).days if iso else None
    except ValueError:
        return None


def _days_since(today: dt.date, iso: Any) -> int | None:
    days = _days_between(today, iso)
    return -days if days is not None else None
