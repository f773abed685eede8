"""How far past the history event time may run on (`--to` of `moments backtest`,
`moments rules test` and `moments state seed`; the backtest's `--from`).

Run on past the last event, event time still closes every record's windows at its
local midnight and looks at its special days each day (a silence, a birthday, a holiday
comes every year), so the work is the records times the days: one subscriber to a `--to`
a century on took 9 s in `rules test`, and in the backtest hours. Rules with nothing
swept (no `evaluate:` period, no special day) have no such work: event time jumps to
the next waiting task's release, however far; but the backtest's report still has a row
for every day up to `--to`.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rules.catalog import RuleSet

RUN_ON_MAX_DAYS = 3653
"""The most days event time runs on past the last event when rules are swept (ten
years): every yearly moment comes ten times in it, and a silence's, a window's close or
a waiting task's long before."""


def swept_daily(rules: RuleSet) -> bool:
    """True when event time running on has work each day: rules judged as a window closes
    (`evaluate: daily` ...) or on special days."""
    return bool(rules.by_period or rules.special.rules)


def run_on_refusal(
    rules: RuleSet,
    last_event: float,
    end: float,
    flag: str = "--to",
    zone: dt.tzinfo = dt.UTC,
    every_day_reported: bool = False,
) -> str | None:
    """Why event time may not run on from `last_event` to `end` (epoch seconds), with the
    fix; None when it may: within `RUN_ON_MAX_DAYS`, or with no rule swept and no report
    of every day (`every_day_reported`: the backtest's tables and chart have a row and a
    bar per day up to `--to`, days with nothing included)."""
    swept = swept_daily(rules)
    if end - last_event <= RUN_ON_MAX_DAYS * 86400 or not (swept or every_day_reported):
        return None
    last = dt.datetime.fromtimestamp(last_event, zone)
    latest = (last + dt.timedelta(days=RUN_ON_MAX_DAYS)).date()
    days = int((end - last_event) // 86400)
    work = (
        "event time would run on to it a day at a time for every subscriber (windows close, "
        "special days are looked at), for hours"
        if swept
        else "the report would list every day up to it (a row per day in its tables, a bar "
        "per day in its chart)"
    )
    return (
        f"{flag} {dt.datetime.fromtimestamp(end, zone).date()} is {days:,} days after the last "
        f"event ({last.isoformat(timespec='seconds')}): {work}. Give a {flag} at most "
        f"{RUN_ON_MAX_DAYS:,} days (ten years) after the last event ({latest} at the latest), "
        f"or leave {flag} out"
    )
