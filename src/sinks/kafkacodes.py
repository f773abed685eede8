"""Kafka's error codes: which ones waiting cures, and a name for those aiokafka does not know.

aiokafka 0.14 knows codes -1 to 72 and 79 (`aiokafka.errors.kafka_errors`). Any other code
a broker answers with became its `UnknownError` ("[Error -1] ...", the code lost), which
`sinks.retry` retries as a broker failing (code -1, UNKNOWN_SERVER_ERROR: Tansu's storage).
So INVALID_RECORD (87), Kafka's answer to a record it refuses (a compacted topic's record
without a key, a broker-side schema check), was retried for ever, reported as the broker
away, while every retry sent the same record and got the same answer.

`install()` gives aiokafka a class for each code it lacks (a subclass of its
`UnknownError`, so what caught the old error catches this one), named and flagged
`retriable` as Kafka's own clients have it (`RETRIABLE`: the codes whose Java exception
is a `RetriableException`). A code newer than this table gets one too, not retriable, as
Kafka's Java client treats a code it does not know (UNKNOWN_SERVER_ERROR). `sinks.retry`
then retries what Kafka marks retriable and stops the worker on the rest, naming the code.
"""

from __future__ import annotations

import threading
from typing import Any

RETRIABLE: frozenset[int] = frozenset(
    {
        2,  # CORRUPT_MESSAGE: a produce request damaged on its way; sent again, it passes
        3,  # UNKNOWN_TOPIC_OR_PARTITION
        5,  # LEADER_NOT_AVAILABLE
        6,  # NOT_LEADER_OR_FOLLOWER
        7,  # REQUEST_TIMED_OUT
        9,  # REPLICA_NOT_AVAILABLE
        13,  # NETWORK_EXCEPTION
        14,  # COORDINATOR_LOAD_IN_PROGRESS
        15,  # COORDINATOR_NOT_AVAILABLE
        16,  # NOT_COORDINATOR
        19,  # NOT_ENOUGH_REPLICAS
        20,  # NOT_ENOUGH_REPLICAS_AFTER_APPEND
        41,  # NOT_CONTROLLER
        51,  # CONCURRENT_TRANSACTIONS
        56,  # KAFKA_STORAGE_ERROR
        70,  # FETCH_SESSION_ID_NOT_FOUND
        71,  # INVALID_FETCH_SESSION_EPOCH
        72,  # LISTENER_NOT_FOUND
        74,  # FENCED_LEADER_EPOCH
        75,  # UNKNOWN_LEADER_EPOCH
        78,  # OFFSET_NOT_AVAILABLE
        80,  # PREFERRED_LEADER_NOT_AVAILABLE
        83,  # ELIGIBLE_LEADERS_NOT_AVAILABLE
        84,  # ELECTION_NOT_NEEDED
        88,  # UNSTABLE_OFFSET_COMMIT
        89,  # THROTTLING_QUOTA_EXCEEDED
        100,  # UNKNOWN_TOPIC_ID
        103,  # INCONSISTENT_TOPIC_ID
        106,  # FETCH_SESSION_TOPIC_ID_ERROR
        122,  # SHARE_SESSION_NOT_FOUND
        123,  # INVALID_SHARE_SESSION_EPOCH
        133,  # SHARE_SESSION_LIMIT_REACHED
    }
)
"""Kafka's retriable codes (the "Retriable" column of Kafka's protocol guide,
kafka.apache.org/protocol#protocol_error_codes). aiokafka marks most of them `retriable`
too, but not 2, 9, 13, 51, 70, 71 and 72."""

_INVALID_METADATA = frozenset({74, 100, 103})
"""Codes whose Java exception is an `InvalidMetadataException`: aiokafka refreshes its
metadata before it tries again."""

NAMES: dict[int, str] = {
    73: "TOPIC_DELETION_DISABLED",
    74: "FENCED_LEADER_EPOCH",
    75: "UNKNOWN_LEADER_EPOCH",
    76: "UNSUPPORTED_COMPRESSION_TYPE",
    77: "STALE_BROKER_EPOCH",
    78: "OFFSET_NOT_AVAILABLE",
    80: "PREFERRED_LEADER_NOT_AVAILABLE",
    81: "GROUP_MAX_SIZE_REACHED",
    82: "FENCED_INSTANCE_ID",
    83: "ELIGIBLE_LEADERS_NOT_AVAILABLE",
    84: "ELECTION_NOT_NEEDED",
    85: "NO_REASSIGNMENT_IN_PROGRESS",
    86: "GROUP_SUBSCRIBED_TO_TOPIC",
    87: "INVALID_RECORD",
    88: "UNSTABLE_OFFSET_COMMIT",
    89: "THROTTLING_QUOTA_EXCEEDED",
    90: "PRODUCER_FENCED",
    91: "RESOURCE_NOT_FOUND",
    92: "DUPLICATE_RESOURCE",
    93: "UNACCEPTABLE_CREDENTIAL",
    94: "INCONSISTENT_VOTER_SET",
    95: "INVALID_UPDATE_VERSION",
    96: "FEATURE_UPDATE_FAILED",
    97: "PRINCIPAL_DESERIALIZATION_FAILURE",
    98: "SNAPSHOT_NOT_FOUND",
    99: "POSITION_OUT_OF_RANGE",
    100: "UNKNOWN_TOPIC_ID",
    101: "DUPLICATE_BROKER_REGISTRATION",
    102: "BROKER_ID_NOT_REGISTERED",
    103: "INCONSISTENT_TOPIC_ID",
    104: "INCONSISTENT_CLUSTER_ID",
    105: "TRANSACTIONAL_ID_NOT_FOUND",
    106: "FETCH_SESSION_TOPIC_ID_ERROR",
    107: "INELIGIBLE_REPLICA",
    108: "NEW_LEADER_ELECTED",
    109: "OFFSET_MOVED_TO_TIERED_STORAGE",
    110: "FENCED_MEMBER_EPOCH",
    111: "UNRELEASED_INSTANCE_ID",
    112: "UNSUPPORTED_ASSIGNOR",
    113: "STALE_MEMBER_EPOCH",
    114: "MISMATCHED_ENDPOINT_TYPE",
    115: "UNSUPPORTED_ENDPOINT_TYPE",
    116: "UNKNOWN_CONTROLLER_ID",
    117: "UNKNOWN_SUBSCRIPTION_ID",
    118: "TELEMETRY_TOO_LARGE",
    119: "INVALID_REGISTRATION",
    120: "TRANSACTION_ABORTABLE",
    121: "INVALID_RECORD_STATE",
    122: "SHARE_SESSION_NOT_FOUND",
    123: "INVALID_SHARE_SESSION_EPOCH",
    124: "FENCED_STATE_EPOCH",
    125: "INVALID_VOTER_KEY",
    126: "DUPLICATE_VOTER",
    127: "VOTER_NOT_FOUND",
    128: "INVALID_REGULAR_EXPRESSION",
    129: "REBOOTSTRAP_REQUIRED",
    130: "STREAMS_INVALID_TOPOLOGY",
    131: "STREAMS_INVALID_TOPOLOGY_EPOCH",
    132: "STREAMS_TOPOLOGY_FENCED",
    133: "SHARE_SESSION_LIMIT_REACHED",
}
"""Kafka's names (`org.apache.kafka.common.protocol.Errors`, Kafka 4.1) of the codes
aiokafka 0.14 lacks."""

CHECKS: dict[int, str] = {
    87: "the broker validated the record and refused it: a record without a key on a "
    "compacted topic (cleanup.policy=compact), a timestamp outside the topic's "
    "message.timestamp.before.max.ms/after.max.ms, or a broker-side schema check "
    "(confluent.value.schema.validation); the broker's log names the topic and the rule",
    129: "the broker asks its clients to bootstrap again (the cluster changed under them): "
    "restart the worker, and check MOMENTS_KAFKA_BOOTSTRAP names the cluster's brokers",
}
"""What to check for a code that stops the worker, where the code alone does not say."""

UNKNOWN_NAME = "a code unknown to moments"


class KafkaCodeError(Exception):
    """Marks the classes `install` makes (its subclasses are also aiokafka's
    `UnknownError`); `errno` is the code the broker answered with."""

    errno: int
    message: str


_lock = threading.Lock()
_installed = False


def install() -> None:
    """Give aiokafka a class for every code it does not know (idempotent: each client
    factory calls it before it makes a client)."""
    global _installed
    if _installed:
        return
    from aiokafka import errors

    with _lock:
        if _installed:
            return
        codes = _Codes(errors.kafka_errors)
        for code in NAMES:
            if code not in codes:
                codes[code] = error_class(code)
        errors.kafka_errors = codes  # `errors.for_code` reads the module's name at each call
        _installed = True


def error_class(code: int) -> type[Any]:
    """A subclass of aiokafka's `UnknownError` for `code`, named after Kafka's name
    (`InvalidRecordError` for 87), `retriable` as Kafka has it."""
    from aiokafka.errors import UnknownError

    name = NAMES.get(code)
    title = "".join(w.capitalize() for w in name.split("_")) if name else f"KafkaCode{code}"
    return type(
        title if title.endswith("Error") else f"{title}Error",
        (UnknownError, KafkaCodeError),
        {
            "__module__": __name__,
            "__doc__": f"Kafka's error code {code} ({name or UNKNOWN_NAME}).",
            "errno": code,
            "message": name or UNKNOWN_NAME,
            "description": CHECKS.get(code, ""),
            "retriable": code in RETRIABLE,
            "invalid_metadata": code in _INVALID_METADATA,
        },
    )


class _Codes(dict[int, Any]):
    """aiokafka's code -> class table, which makes a class for a code it lacks when
    aiokafka looks it up (`for_code` calls `.get(code, UnknownError)`), so that a code
    newer than `NAMES` is named by its number instead of becoming code -1."""

    def get(self, code: int, default: Any = None) -> Any:
        found = super().get(code)
        if found is None and isinstance(code, int):
            with _lock:
                found = self.setdefault(code, error_class(code))
        return found if found is not None else default


def described(exc: BaseException) -> str | None:
    """`error code 87 INVALID_RECORD, ...; <what to check>` for an error of a code aiokafka
    did not know and Kafka does not mark retriable (`CHECKS`, or where to look it up);
    None for any other error."""
    if not isinstance(exc, KafkaCodeError):
        return None
    check = CHECKS.get(exc.errno) or (
        "look the code up in Kafka's protocol guide "
        "(kafka.apache.org/protocol#protocol_error_codes); the broker's log says why"
    )
    return (
        f"error code {exc.errno} {exc.message}, which Kafka does not mark retriable: "
        f"waiting will not fix it; {check}"
    )
