"""Raw records as read from Kafka, and what the detector makes of the bad ones."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One Kafka record, before decoding; independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


class RejectReason(StrEnum):
    """Why an input record went to the dead-letter topic (a metric label: keep it short)."""

    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    MISSING_KEY = "missing_key"
    KEY_MISMATCH = "key_mismatch"
    EMPTY_VALUE = "empty_value"
    TOO_LARGE = "too_large"
    LATE = "late"  # valid, but older than its subscriber's latest event by over the lateness
    FUTURE = "future"  # valid, but dated ahead of the worker's clock: a producer's clock
    DETECTOR_ERROR = "detector_error"  # valid, but applying it failed: a fault of ours


OUT_OF_TIME = frozenset({RejectReason.LATE.value, RejectReason.FUTURE.value})
"""Reasons of valid events that were not applied for their time, not their form."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record: the original bytes travel unchanged, the reason beside them."""

    record: RawRecord
    event_type: str
    reason: RejectReason
    error_class: str
    message: str
