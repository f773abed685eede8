"""Durations written the way analysts write them: `30m`, `24h`, `60d`, `2w`."""

from __future__ import annotations

import datetime as dt
import re

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> dt.timedelta:
    """Parse `<number><unit>` with unit s, m, h, d or w; raise ValueError saying what to write."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit, e.g. 30m, 24h, 60d"
        )
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
