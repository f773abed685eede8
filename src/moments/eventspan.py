"""The instants an event may carry, in the standard library alone: the models hold event
times to them (`moments.models.Instant`, and the schemas' pattern), and so do the
commands' time options (`moments.cliparts`, imported by every command at its start) and
the backtest's reading of a file (`moments.backtest_input`)."""

from __future__ import annotations

import datetime as dt

WRITTEN_YEARS = (1970, 9998)
"""The years of the times the detector writes (a task's, a withdrawal's: `models.
WrittenInstant` and its schemas' pattern). A year-1 or year-9999 time broke the local-day
arithmetic (the worker crashed at each restart; producer review), and a year past 9999 is
none Python has."""
EVENT_YEARS = (1970, 9898)
"""The years an event's time may name, as written (in its own offset): the longest
duration a rule adds to it (`rules.durations.MAX_DAYS`, 36,500 days: a task's `ttl`, its
expiry) keeps the task's times in `WRITTEN_YEARS` (an event of 9990 with a `ttl: 36500d`
rule was a `detector_error` dead letter, its task's expiry past the year 9999). Until
2026-12-07 they ended at 2099, and a backtest of history past it refused every event."""
EVENT_SPAN = (
    dt.datetime(EVENT_YEARS[0] - 1, 12, 31, tzinfo=dt.UTC),
    dt.datetime(EVENT_YEARS[1] + 1, 1, 2, tzinfo=dt.UTC),
)
"""`EVENT_YEARS` as instants: from the first day's start at the largest offset ahead of
UTC to the last day's end at the largest behind it (offsets run to 23:59 either way)."""
