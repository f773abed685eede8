"""An explainable churn-risk score, 0 to 100, and how it raises a task's priority.

Each signal adds points up to its own cap, so the score is the sum of visible parts
(shown on the task as `risk.parts`):

| signal (as shown) | value | points | cap |
|---|---|---|---|
| competitor_hotline_calls | calls to a competitor's hotline, last 30 local days | 15 each | 30 |
| spend_drop | the last closed month below the 3 before (fraction) | 50 x drop, from 0.1 | 25 |
| complaints | open ones: unresolved, with a record within the lapse (*) | 10 each | 20 |
| contract_expiry | days to the contract's end, within 30 / 90 | 15 / 8 | 15 |
| tenure | days since joining, under 1 / 2 years | 10 / 5 | 10 |

(*) `gating.open_complaint_lapses_after`, 30 days unless written: a complaint heard of no
more is taken as resolved (docs/gating.md, "Open complaint").

Priority rule: a score of 60 or more raises the task's priority by two levels, 30 or
more by one; priority 1 stays 1. The operator ranks who gets a manager's call first by
this score (docs/moments.md: "capacity is scarce, so tasks must be ranked").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from moments.models import EventType, RiskPart, RiskScore
from rules.predicates import always
from rules.series import Ring, Series

SPEND_SERIES = "spend_month"
"""The series whose last closed window's drop against the 3 before counts as a churn-risk
signal (`spend_drop`)."""

RAISE_TWO_AT = 60.0
RAISE_ONE_AT = 30.0


@dataclass(frozen=True)
class RiskSignals:
    """What the detector knows of a subscriber; None where it does not know."""

    competitor_hotline_calls: int = 0  # hotline_calls()
    spend_drop: float | None = None  # 0.4 = last month 40% below the baseline (spend_drop())
    open_complaints: int = 0
    """Complaints opened and not yet resolved, however old (what gating also counts): a
    customer still waiting on a complaint is the one most likely to leave. Complaints
    already resolved, however recent, are not counted (the record does not keep them)."""
    contract_days_left: int | None = None
    tenure_days: int | None = None


HOTLINE_DAYS = 30
HOTLINE_CALLS = Series(
    name="competitor_hotline_calls",
    tag="hotline",
    event_types=frozenset({EventType.USAGE}),
    when=always,
    field=None,
    period="day",
    keep=HOTLINE_DAYS,
)
"""Calls to a competitor's hotline per local day, for 30 days: a counting ring in the
subscriber's `series` under `hotline` (catalog series' tags are hex, so never that).
At most 32 numbers, 3 after one call, and only for subscribers who made one; a list of
the calls' times would grow with them."""


def note_hotline_call(series: dict[str, Ring], day: int) -> None:
    """Count one call to a competitor's hotline on local day `day` (an ordinal)."""
    ring = HOTLINE_CALLS.fold(series.get(HOTLINE_CALLS.tag), day, 1.0)
    if ring is not None:  # None: a day older than the ring keeps, out of the count anyway
        series[HOTLINE_CALLS.tag] = ring


def hotline_calls(series: dict[str, Ring], day: int) -> int:
    """Calls to a competitor's hotline in the 30 local days ending on `day`, that day's
    included."""
    ring = series.get(HOTLINE_CALLS.tag)
    if not ring:
        return 0
    # Day `w` is slot `newest - w` (newest first); days after the newest and days the
    # ring no longer keeps had no call it counts, and trailing empty slots are not stored.
    # Summed oldest first, as `HOTLINE_CALLS.window` read them day by day: one slice
    # instead of 30 look-ups, on every task (the churn-risk score).
    newest = int(ring[0])
    low = max(newest - day, 0)
    high = min(newest - day + HOTLINE_DAYS, HOTLINE_CALLS.keep)
    if high <= low:
        return 0
    total = 0.0
    for calls in reversed(ring[2 + low : 2 + high]):
        total += calls
    return int(total)


BASELINE_MONTHS = 3


def spend_drop(spend: Series, ring: Ring | None, current: int) -> float | None:
    """How far the last closed month's spend (window `current - 1`) fell below the
    average of the 3 months before it: 0.4 is 40% below, 0 when it did not fall; None
    without those 4 months of the subscriber's own history (after the partial month it
    began in) or with no spend before.

    The closed month, not the current one pro-rated: a month's spend does not accrue
    evenly (the plan's fee is charged on one day, usage comes in bursts), so a part of a
    month says little of the whole. The current month against 3 whole ones made every
    steady customer look at risk early in a month (1.0 spent on the 1st of 100 a month:
    a 0.99 drop, 25 points). The closed month is what the retention team can stand
    behind, and what the catalog's bill_drop judges too; a fall shows from the 1st of
    the next month.

    The month the subscriber's history began in is no part of the baseline, as for the
    rules' sum and count baselines (rules.conditions): they joined, or the detector
    started, part-way into it, and a history begun on the 25th made that month's spend
    look small and the drop smaller than it was. So 3 whole months must come before the
    closed one."""
    closed = current - 1
    first = spend.history_from(ring)
    if first is None or first >= closed - BASELINE_MONTHS:
        return None
    last = spend.aggregate(ring, closed, "sum")
    before = spend.aggregate(ring, closed - 1, "sum", last=BASELINE_MONTHS)
    if last is None or before is None or before <= 0:
        return None
    base = before / BASELINE_MONTHS
    return round(max(0.0, (base - last) / base), 3)


def _parts(s: RiskSignals) -> list[RiskPart]:
    parts: list[RiskPart] = []
    if s.competitor_hotline_calls > 0:
        points = min(30.0, 15.0 * s.competitor_hotline_calls)
        parts.append(
            RiskPart(
                signal="competitor_hotline_calls", value=s.competitor_hotline_calls, points=points
            )
        )
    if s.spend_drop is not None and s.spend_drop >= 0.1:
        parts.append(
            RiskPart(signal="spend_drop", value=s.spend_drop, points=min(25.0, 50.0 * s.spend_drop))
        )
    if s.open_complaints > 0:
        points = min(20.0, 10.0 * s.open_complaints)
        parts.append(RiskPart(signal="complaints", value=s.open_complaints, points=points))
    if s.contract_days_left is not None and 0 <= s.contract_days_left <= 90:
        points = 15.0 if s.contract_days_left <= 30 else 8.0
        parts.append(RiskPart(signal="contract_expiry", value=s.contract_days_left, points=points))
    if s.tenure_days is not None and s.tenure_days < 730:
        points = 10.0 if s.tenure_days < 365 else 5.0
        parts.append(RiskPart(signal="tenure", value=s.tenure_days, points=points))
    return parts


def raise_by(score: float) -> int:
    """Priority levels a score adds (see the module's table)."""
    if score >= RAISE_TWO_AT:
        return 2
    if score >= RAISE_ONE_AT:
        return 1
    return 0


@functools.lru_cache(maxsize=4096)
def scored(signals: RiskSignals, priority: int) -> tuple[int, RiskScore]:
    """A task's priority raised by the rule, and its score showing the levels it actually
    rose (priority 1 stays 1): the one way a score is made (`moments.taskmaking.emit`).

    Cached: a pure function of a few small values that repeat across subscribers (most
    have no risk signal at all), and the score is a frozen model that tasks may share."""
    parts = _parts(signals)
    score = round(min(100.0, sum(p.points for p in parts)), 2)
    raised = max(1, priority - raise_by(score))
    return raised, RiskScore(score=score, parts=parts, priority_raised_by=priority - raised)
