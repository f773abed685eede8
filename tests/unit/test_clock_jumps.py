"""A source clock that jumps ahead by hours: the event is refused as a clock error
(counted `future`), so the correct events after it are not made late. Jumps of days
and years: tests/integration/test_faults.py::TestClockJumps.
"""

from __future__ import annotations

import datetime as dt

from moments.pipeline import run_pipeline

from .rules.helpers import rules_from, usage

THREE_A_DAY = """
series:
  n: {on: [usage], period: day}
rules:
  - id: r
    description: three events in a day
    on: [usage]
    condition: {series: n, gte: 3}
    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a, ttl: 30d,
           description: d}
"""


def test_an_event_hours_ahead_does_not_make_the_correct_ones_late() -> None:
    rules = rules_from(THREE_A_DAY)
    now = dt.datetime(2026, 11, 2, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai
    ahead = usage("2026-11-02T23:30:00+08:00", kind="data")  # the source's clock jumped
    result = run_pipeline([ahead], rules, now=now)
    correct = [usage("2026-11-02T12:00:00+08:00", kind="data") for _ in range(3)]
    result = run_pipeline(correct, rules, now=now, result=result)
    assert len(result.tasks) == 1  # three correct events on Nov 2: the rule fires
