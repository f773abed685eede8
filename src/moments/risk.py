"""An explainable churn-risk score, 0 to 100, and how it raises a task's priority.

Each signal adds points up to its own cap, so the score is the sum of visible parts
(shown on the task as `risk.parts`):

| signal | points | cap |
|---|---|---|
| calls to a competitor's hotline (last 30 days) | 15 per call | 30 |
| spend drop against the subscriber's baseline (fraction) | 50 x drop, from 10% | 25 |
| complaints (last 90 days) | 10 per complaint | 20 |
| contract ends within 30 / 90 days | 15 / 8 | 15 |
| tenure under 1 / 2 years | 10 / 5 | 10 |

Priority rule: a score of 60 or more raises the task's priority by two levels, 30 or
more by one; priority 1 stays 1. The operator ranks who gets a manager's call first by
this score (docs/moments.md: "capacity is scarce, so tasks must be ranked").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from moments.models import RiskPart, RiskScore

RAISE_TWO_AT = 60.0
RAISE_ONE_AT = 30.0


@dataclass(frozen=True)
class RiskSignals:
    """What the detector knows of a subscriber; None where it does not know."""

    competitor_hotline_calls: int = 0
    spend_drop: float | None = None  # 0.4 = spending 40% below the baseline
    complaints: int = 0
    contract_days_left: int | None = None
    tenure_days: int | None = None


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
    if s.complaints > 0:
        parts.append(
            RiskPart(signal="complaints", value=s.complaints, points=min(20.0, 10.0 * s.complaints))
        )
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
    rose (priority 1 stays 1): the one way a score is made (the engine's `_emit`).

    Cached: a pure function of a few small values that repeat across subscribers (most
    have no risk signal at all), and the score is a frozen model that tasks may share."""
    parts = _parts(signals)
    score = round(min(100.0, sum(p.points for p in parts)), 2)
    raised = max(1, priority - raise_by(score))
    return raised, RiskScore(score=score, parts=parts, priority_raised_by=priority - raised)
