"""The instants and years an event may carry, in the standard library alone: the models
hold event times and a profile's days to them (`moments.models.Instant`, `Day`, and the
schemas' patterns), and so do the commands' time options (`moments.cliparts`, imported
by every command at its start) and the backtest's reading of a file
(`moments.backtest_input`)."""

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
BIRTH_YEARS = (1901, EVENT_YEARS[1])
"""The years a profile's `birthday` may name, when it names one (its month and day alone
are kept). A profile's other days (`joined_on`, `contract_end`) are held to `EVENT_YEARS`,
as the times of the events that carry them: a database's empty date (`0001-01-01`, .NET's
and Java's least day; `1900-01-01`, SQL Server's and Excel's day 0; `9999-12-31`, "no
end") was taken as a day, and the catalog greeted "2026 years with us since 0001-01-01",
a birthday of 0001-01-01 every 1 January. A birthday's years begin before the events':
customers were born before 1970, none in 1900."""
EVENT_SPAN = (
    dt.datetime(EVENT_YEARS[0] - 1, 12, 31, tzinfo=dt.UTC),
    dt.datetime(EVENT_YEARS[1] + 1, 1, 2, tzinfo=dt.UTC),
)
"""`EVENT_YEARS` as instants: from the first day's start at the largest offset ahead of
UTC to the last day's end at the largest behind it (offsets run to 23:59 either way)."""
