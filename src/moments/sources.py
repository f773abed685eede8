"""Short codes of the input sources, used as keys inside the compact subscriber record."""

from __future__ import annotations

from moments.models import EventType

SOURCE_CODES: dict[EventType, str] = {
    EventType.TOPUP: "t",
    EventType.ROAMING: "r",
    EventType.COMPLAINT: "c",
    EventType.USAGE: "u",
    EventType.PROFILE: "p",
}
