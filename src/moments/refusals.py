"""Events refused for their time, and events whose applying failed: the lateness and the
clock limit the detector judges by, and the dead letters it writes for them. Outcomes,
`moments events check` and `deadletter replay` judge by the same limits."""

from __future__ import annotations

import datetime as dt
import traceback
from pathlib import Path

from moments.models import EventType
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.sources import SOURCE_CODES
from moments.state import SubscriberState

LATENESS = dt.timedelta(hours=1)
"""Events older than the subscriber's latest of their own topic minus this are late: counted,
not applied (a dead letter)."""
MAX_FUTURE = dt.timedelta(minutes=15)
"""Events further than this ahead of the wall clock (or than the lateness, if shorter)
are refused as a clock error. An accepted event then moves the subscriber's event time
ahead by at most the lateness, so it can never make the correct events after it late."""


def allowed_ahead(lateness_s: int) -> int:
    """How far ahead of the wall clock an event may be dated (seconds), for a lateness."""
    return min(int(MAX_FUTURE.total_seconds()), lateness_s)


def _when(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def too_far_ahead(record: RawRecord, kind: str, at: int, now: int, limit: int) -> DeadLetter:
    """The `future` dead letter of a record (an event, or an outcome: `kind`) dated `at`,
    over `limit` seconds ahead of the worker's clock `now`."""
    return DeadLetter(
        record,
        str(kind),
        RejectReason.FUTURE,
        "OutOfTime",
        f"occurred_at {_when(at)} is {at - now} s ahead of the worker's clock ({_when(now)}; "
        f"at most {limit} s): not applied. Check the producer's "
        "clock and offset (local time written with Z?)",
    )


def too_late(
    record: RawRecord, event_type: EventType, at: int, state: SubscriberState, lateness: int
) -> DeadLetter:
    latest = state.seen[SOURCE_CODES[event_type]]
    return DeadLetter(
        record,
        event_type.value,
        RejectReason.LATE,
        "OutOfTime",
        f"occurred_at {_when(at)} is {latest - at} s older than this subscriber's latest "
        f"{event_type.value} event ({_when(latest)}; MOMENTS_LATENESS_SECONDS={lateness}): "
        "not applied, and never replayed. Its producer sent it out of order: send each "
        "subscriber's events of a topic in time order (history goes through moments "
        "backtest, not the live topics)",
    )


def failed(record: RawRecord, event_type: EventType, exc: Exception) -> DeadLetter:
    frame = traceback.extract_tb(exc.__traceback__)[-1:]
    where = f" at {Path(frame[0].filename).name}:{frame[0].lineno}" if frame else ""
    return DeadLetter(
        record,
        event_type.value,
        RejectReason.DETECTOR_ERROR,
        type(exc).__name__,
        f"{type(exc).__name__}{where} while applying the event: a fault of the detector or "
        "its rules, not of the event (the log has the traceback). Report it; once fixed, "
        "`moments deadletter replay --reason detector_error` applies it",
    )


def stale_profile(record: RawRecord, at: int, state: SubscriberState) -> DeadLetter:
    newer = state.seen[SOURCE_CODES[EventType.PROFILE]]
    return DeadLetter(
        record,
        EventType.PROFILE.value,
        RejectReason.LATE,
        "OutOfTime",
        f"occurred_at {_when(at)} is older than the updates that set each field it carries "
        f"(the latest applied: {_when(newer)}): nothing to apply: each profile field is the "
        "latest update's that carried it, by occurred_at. An old snapshot sent again "
        "undoes nothing; a change still to make (an opt-out, a suspension) must be sent "
        "again, dated now",
    )
