"""Time zones: the one check of an IANA zone name.

Zones are `ZoneInfo` objects, which the standard library caches per name: looking one
up per event costs a dictionary look-up, not a new object.
"""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Shanghai"
"""The default zone when a configuration names none (rules' gating, dispatch policy)."""


@lru_cache(maxsize=1024)
def known_zone(name: str) -> ZoneInfo | None:
    """The zone by IANA name; None for a name tzdata does not know.

    A folder of tzdata (`America`) raises IsADirectoryError, not ValueError: it is
    caught here too, so no caller can be stopped by one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def check_zone(name: str) -> str:
    """`name` if it is an IANA zone name; else ValueError saying what to write (for the
    validators of the rules, the dispatch policy and the events)."""
    if known_zone(name) is None:
        raise ValueError(
            f"{name!r} is not an IANA time zone; write one such as Asia/Shanghai or Europe/London"
        )
    return name
