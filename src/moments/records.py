"""Raw records as read from Kafka, and what the detector makes of the bad ones."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

Header = tuple[str, bytes | None]
"""A Kafka record header: a name and a value, which Kafka allows to be null."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One Kafka record, before decoding; independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: Sequence[Header] = ()
    """The record's own headers, as read: a dead letter carries them on."""


def next_offsets(records: Iterable[RawRecord]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset after the last of `records` read there: what may be
    committed once they are processed and their outputs durable. Of the records processed,
    not of those fetched: a fetch's records the rewind guard holds back are read again, and
    committing past them would lose them in a crash before the re-read."""
    found: dict[tuple[str, int], int] = {}
    for record in records:  # no call a record: this runs for every record read
        tp = (record.topic, record.partition)
        after = record.offset + 1
        if tp not in found or after > found[tp]:
            found[tp] = after
    return found


class SuppressReason(StrEnum):
    """Why a task was not published: the `reason` label of `moments_tasks_suppressed_total`
    (a metric label: keep it short). The contract names dedup, cooldown, opt-out, capacity
    and expired; the others are documented in docs/operations.md. Gating's suppress
    reasons (`rules.gating.Reason`) are members under the same names."""

    # the engine, before a task is made
    COOLDOWN = "cooldown"
    EXPIRED = "expired"  # by gating, or while waiting in dispatch
    FORGOTTEN = "forgotten"  # a profile tombstone erased the subscriber
    # gating
    OPT_OUT = "opt_out"
    COMPLAINT_OPEN = "complaint_open"
    CLOSED = "closed"
    SUSPENDED = "suspended"
    # the dispatch sink
    DEDUP = "dedup"
    CAPACITY = "capacity"
    CONTACT_CAP = "contact_cap"
    FREQUENCY_CAP = "frequency_cap"
    DECLINED = "declined"
    REACHED = "reached"  # a retry whose earlier attempt an outcome said reached the customer
    FAILED = "failed"  # a retry whose earlier attempt an outcome said failed
    TOPPED_UP = "topped_up"  # relevance checks
    CAME_HOME = "came_home"


class RejectReason(StrEnum):
    """Why an input record went to the dead-letter topic (a metric label: keep it short)."""

    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    DUPLICATE_KEY = "duplicate_key"  # a field that says who, when or which event, twice
    MISSING_KEY = "missing_key"
    KEY_MISMATCH = "key_mismatch"
    EMPTY_VALUE = "empty_value"
    TOO_LARGE = "too_large"
    LATE = "late"  # valid, but older than its subscriber's latest event by over the lateness
    FUTURE = "future"  # valid, but dated ahead of the worker's clock: a producer's clock
    DETECTOR_ERROR = "detector_error"  # valid, but applying it failed: a fault of ours
    MISPLACED = "misplaced"  # a profile tombstone on another partition than its key's
    SUBSCRIBER_MISMATCH = "subscriber_mismatch"  # an outcome whose subscriber is not its task's
    UNKNOWN_TASK = "unknown_task"  # an outcome for a task id the ledger never had


OUTCOME_EVENT_TYPE = "task_outcome"
"""The `event_type` label and dead-letter header of a refused task outcome."""
OUTCOME_ONLY_REASONS = frozenset({RejectReason.SUBSCRIBER_MISMATCH, RejectReason.UNKNOWN_TASK})
"""Reasons only a task outcome is refused for."""
INPUT_ONLY_REASONS = frozenset(
    {RejectReason.LATE, RejectReason.DETECTOR_ERROR, RejectReason.MISPLACED}
)
"""Reasons only an input event is refused for (the detector's judgements of it). Not
`future`: an outcome dated too far ahead is refused as one too."""


REASONS_EXPLAINED: dict[RejectReason, str] = {
    RejectReason.INVALID_JSON: "the value is not UTF-8 JSON (a byte-order mark included): "
    "fix the serializer and send the event again",
    RejectReason.INVALID_EVENT: "JSON, but not an event of its topic's type (a field missing, "
    "of the wrong type or out of range; the message names them): fix the event against "
    "schemas/ (`moments events check` tries it offline) and send it again",
    RejectReason.DUPLICATE_KEY: "JSON whose object names a field that says who, when or "
    "which event (subscriber_id, occurred_at, event_id, a complaint's complaint_id) twice: "
    "which one is meant is unknown (a parser keeps either), so it is not guessed: fix the "
    "producer's template or framing (two events run together?) and send each event once, "
    "each field once",
    RejectReason.MISSING_KEY: "no record key: key every record by its subscriber_id and send "
    "it again",
    RejectReason.KEY_MISMATCH: "the record key is not the value's subscriber_id (or, for a "
    "profile tombstone, no subscriber id at all): key by subscriber_id exactly (UTF-8 "
    "digits) and send it again",
    RejectReason.EMPTY_VALUE: "a null value (a tombstone), JSON null or no bytes on a topic "
    "that takes no deletions: only telecom.profile does (a task outcome may not be empty "
    "either): send the event, or nothing",
    RejectReason.TOO_LARGE: "the value is over 64 KiB (the dead letter holds its first 64 "
    "KiB and __dlq.errors.original.size): send the event without what made it large",
    RejectReason.LATE: "valid, but older than its subscriber's latest event of the same topic "
    "by more than MOMENTS_LATENESS_SECONDS (or a profile update each of whose fields a newer "
    "update set already: an old snapshot; a change still to make goes again dated now): "
    "send in order; it is never replayed",
    RejectReason.FUTURE: "valid, but dated ahead of the worker's clock by more than 15 minutes "
    "(or the lateness, if shorter): fix the producer's clock or zone (local time written "
    "with Z); `moments deadletter replay` sends an event back once due (a task outcome "
    "is not replayed: send it again with the time it happened)",
    RejectReason.MISPLACED: "a profile tombstone on another partition than the one its key "
    "names (murmur2, Kafka's default partitioner): the subscriber's state is not there, so "
    "nothing was erased; produce with the default partitioner (librdkafka: "
    "partitioner=murmur2_random); `moments deadletter replay` sends it where it belongs",
    RejectReason.DETECTOR_ERROR: "valid, but applying it failed: a fault of the detector or "
    "its rules, not of the event (MomentsDetectorErrors; the worker log has the traceback); "
    "nothing for the producer to do: the operators replay it once fixed",
    RejectReason.SUBSCRIBER_MISMATCH: "a task outcome naming another subscriber than its "
    "task's: write the subscriber_id published with the task on moments.tasks (outcomes are "
    "not replayed)",
    RejectReason.UNKNOWN_TASK: "a task outcome for a task id this detector never published "
    "(its ledger keeps every id for MOMENTS_LEDGER_TTL_SECONDS): copy task_id from the "
    "task on moments.tasks of the same MOMENTS_APP_ID (outcomes are not replayed)",
}
"""What each reason means and what the producer should do: the AsyncAPI document's
DeadLetter message lists them (a test wants one for every reason)."""


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
