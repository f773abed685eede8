"""Going live with no history: `MOMENTS_LIVE_FROM` (and the backtest's `--live-from`).

On the day the workers first run they know nobody, so every subscriber's first top-up
is a "first top-up", every first usage a first handset, and every silent subscriber's
absence rule fires. Until the instant written here every rule behaves as in `mode:
shadow` (moments.engine): the state is built, the would-be tasks are counted
(`moments_shadow_moments_total`) and none is made. A moment is judged by its own event
time, on the stream and in a backtest alike, so history read after the instant (a
topic's retention read by a new consumer group) is still a warm-up, and a worker needs
no restart to go live.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

LIVE_FROM_HELP = "write a date (2026-12-20) or RFC 3339 with its offset (2026-12-20T08:00:00+08:00)"


def parse_live_from(text: str, zone: Any) -> dt.datetime:
    """A date (midnight in `zone`: the dispatch policy's, as the backtest's dates) or an
    RFC 3339 instant with its offset; ValueError with what to write otherwise."""
    text = text.strip()
    try:
        if len(text) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(0), tzinfo=zone)
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r}: {LIVE_FROM_HELP}") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r}: add its offset, e.g. {text}+08:00, or give a date")
    return when


def check_live_from(text: str | None) -> str | None:
    """The setting as written, refused early (any zone will do to check its form)."""
    if text is not None and text.strip():
        parse_live_from(text, dt.UTC)
        return text.strip()
    return None


def warming_up(live_from: dt.datetime | None, now: float) -> bool:
    """Whether a worker starting at `now` (epoch seconds, the wall clock) starts before
    `live_from`: every rule a shadow one until its events reach the instant. One started
    after it (a restart) is live already, whatever history it reads still."""
    return live_from is not None and now < live_from.timestamp()
