"""The machine-readable contract under `schemas/`, generated from `moments.models`.

- one JSON Schema (2020-12) per event, task and outcome type, self-contained;
- `asyncapi.yaml`, an AsyncAPI 3.0.0 document for the default topics of
  `moments.settings.Topics`, embedding the same schemas under `components.schemas`.

`render_schemas()` is pure and deterministic (sorted keys, trailing newline), so a
test can compare it with the files in the repository; `moments schemas export`
writes them with `export_schemas()` and `--check` uses `check_schemas()`.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from ruamel.yaml import YAML

from moments.decoding import decode
from moments.models import (
    BLANK_SPACE,
    INVISIBLE,
    ComplaintEvent,
    EventType,
    ProfileEvent,
    RoamingEvent,
    ServiceTask,
    SubscriberId,
    TaskOutcome,
    TaskWithdrawal,
    TopUpEvent,
    UsageEvent,
    open_enum,
)
from moments.records import REASONS_EXPLAINED, DeadLetter, RawRecord, RejectReason
from moments.settings import Topics

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
# `$id` base of the JSON Schema files; `.example` is reserved, so the ids name the
# files without pretending to be resolvable on the internet.
SCHEMA_ID_BASE: Final = "https://moments.example/schemas/"
ASYNCAPI_FILE: Final = "asyncapi.yaml"
# The version of the external contract (AsyncAPI `info.version`), not of the package.
CONTRACT_VERSION: Final = "1.0.0"
KAFKA_BINDING_VERSION: Final = "0.5.0"
SCHEMA_SUFFIX: Final = ".schema.json"

# file name -> (model, mode). Input types are described as the detector accepts them
# (validation mode); what it writes, as it serialises it.
SCHEMA_FILES: Final[dict[str, tuple[type[BaseModel], JsonSchemaMode]]] = {
    "topup-event.schema.json": (TopUpEvent, "validation"),
    "roaming-event.schema.json": (RoamingEvent, "validation"),
    "complaint-event.schema.json": (ComplaintEvent, "validation"),
    "usage-event.schema.json": (UsageEvent, "validation"),
    "profile-event.schema.json": (ProfileEvent, "validation"),
    "service-task.schema.json": (ServiceTask, "serialization"),
    "task-outcome.schema.json": (TaskOutcome, "validation"),
    "task-withdrawal.schema.json": (TaskWithdrawal, "serialization"),
}

DLQ_HEADER_PREFIX: Final = "__dlq.errors."

_SUBSCRIBER = "13800138000"

# One realistic value per input message, used as AsyncAPI message examples (and by tests);
# the ServiceTask's is made from them by the code (`example_task`).
EXAMPLES: Final[dict[str, Any]] = {
    "TopUpEvent": {
        "event_id": "bss-topup-20261122-000123",
        "subscriber_id": _SUBSCRIBER,
        "occurred_at": "2026-11-22T09:30:00+08:00",
        "region": "NJ",
        "amount": "50.00",
        "balance_after": 62.5,
        "channel": "app",
    },
    "RoamingEvent": {
        "event_id": "vlr-reg-88412",
        "subscriber_id": _SUBSCRIBER,
        "occurred_at": "2026-11-22T07:05:00+09:00",
        "country": "JP",
        "roaming_type": "international",
        "operator": "NTT DOCOMO",
        "timezone": "Asia/Tokyo",
    },
    "ComplaintEvent": {
        "event_id": "crm-cmp-5521-1",
        "subscriber_id": _SUBSCRIBER,
        "occurred_at": "2026-11-22T10:12:00+08:00",
        "region": "NJ",
        "complaint_id": "CMP-5521",
        "category": "network",
        "severity": 1,
        "status": "opened",
    },
    "UsageEvent": {
        "event_id": "cdr-data-7730015",
        "subscriber_id": _SUBSCRIBER,
        "occurred_at": "2026-11-22T11:00:00+08:00",
        "kind": "data",
        "quantity": 104857600,
        "charge": "3.00",
        "balance_after": "59.50",
        "imei": "356938035643809",
    },
    "ProfileEvent": {
        "event_id": "crm-profile-991",
        "subscriber_id": _SUBSCRIBER,
        "occurred_at": "2026-11-01T08:00:00+08:00",
        "birthday": "07-14",
        "joined_on": "2015-03-01",
        "contract_end": "2027-02-28",
        "tier": "gold",
        "star_level": 5,
        "timezone": "Asia/Shanghai",
        "quiet_hours": ["22:00-08:00"],
        "status": "active",
        "opt_out": ["outbound_call"],
        "manager_id": "mgr-0042",
    },
    "TaskOutcome": {
        "task_id": "90bd947c9fdac044a8b53075800c7701",
        "subscriber_id": _SUBSCRIBER,
        "status": "accepted",
        "occurred_at": "2026-11-22T09:15:00+08:00",
        "agent_id": "agent-17",
        "note": "Bought the Japan 7-day data pack",
    },
}


@functools.cache
def example_task() -> dict[str, Any]:
    """The ServiceTask example: the task the packaged catalog makes of the profile and
    roaming examples (a first international roaming in quiet hours), as the sink publishes
    it. Made by the code, so it cannot drift from real tasks: the hand-written one lacked
    `attempt`, `quiet_hours`, `related`, `retry_of` and `risk` and wrote times no task has
    (dispatch consumer review)."""
    from moments.pipeline import run_pipeline
    from rules.catalog import load_rules
    from sinks.hours import published
    from sinks.payloads import task_bytes

    roaming = EXAMPLES["RoamingEvent"]
    # The worker reads the event a second after it happened, on its UTC clock.
    now = dt.datetime.fromisoformat(roaming["occurred_at"]).astimezone(dt.UTC)
    events = [(EventType.PROFILE, EXAMPLES["ProfileEvent"]), (EventType.ROAMING, roaming)]
    result = run_pipeline(events, load_rules(), now=now + dt.timedelta(seconds=1))
    [task] = [t for t in result.tasks if t.moment.type == "first_international_roaming"]
    made: dict[str, Any] = orjson.loads(task_bytes(published(task)))
    return made


@functools.cache
def example_withdrawal() -> dict[str, Any]:
    """The TaskWithdrawal example: the example task's, made by the code, as the customer
    opts out of SMS (its channel) after it went out and after the outcome example. Written
    by hand it named the task's id with another channel and expiry, which no withdrawal
    of that task has (dispatch consumer review)."""
    from moments.enums import WithdrawReason
    from sinks.withdrawals import ProfileChange, notice

    task = ServiceTask.model_validate(example_task())
    opted_out = dt.datetime.fromisoformat("2026-11-22T10:30:00+08:00")
    change = ProfileChange(task.subscriber_id, WithdrawReason.OPT_OUT, opted_out)
    withdrawal = notice(task, change, opted_out.timestamp() + 1.25)
    made: dict[str, Any] = withdrawal.model_dump(mode="json")
    return made


_MADE: Final[dict[str, Callable[[], dict[str, Any]]]] = {
    "ServiceTask": example_task,
    "TaskWithdrawal": example_withdrawal,
}


def example(model_name: str) -> Any:
    """The example value of a message (a copy)."""
    made = _MADE.get(model_name)
    value = made() if made is not None else EXAMPLES[model_name]
    return copy.deepcopy(value)


def _topic_env(field: str) -> str:
    return f"MOMENTS_TOPICS__{field.upper()}"


def _sorted(value: Any) -> Any:
    """A deep copy with every mapping's keys sorted (lists keep their order)."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def _dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _dump_yaml(value: Any) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096  # one line per scalar: stable diffs, no folding surprises
    yaml.allow_unicode = True
    stream = io.StringIO()
    yaml.dump(_sorted(value), stream)
    text = stream.getvalue()
    return text if text.endswith("\n") else text + "\n"


FINAL_NEWLINE: Final = {"type": "string", "pattern": "\n$"}
"""Refused beside every anchored pattern (`"not"`): Python's `re`, which the `jsonschema`
package searches patterns with, lets `$` match before a final newline, so
`"13800138000\n"` or a time ending in one passed the schemas and was a dead letter (the
worker's engine and ECMA-262's, the dialect's own, match `$` at the very end only). Said
with a second pattern, not a lookahead: every regex engine reads this one alike."""


LONE_SURROGATES: Final = r"\ud800-\udfff"
"""Added to the characters text must not hold (`moments.models.INVISIBLE`), in the schemas
only: the worker's JSON parser refuses a lone UTF-16 surrogate escape (`"\\ud83d"`, half
an emoji, as JavaScript writes a string cut in the middle of one) and pydantic's regex
engine cannot name one. `jsonschema` (Python) and ECMA-262 with the `u` flag read the
range as lone surrogates only; an ECMA-262 engine without it would also refuse the
characters beyond U+FFFF."""


def _no_lone_surrogates(pattern: str) -> str:
    return pattern.replace(INVISIBLE, INVISIBLE + LONE_SURROGATES)


def _portable_patterns(node: Any) -> Any:
    """The schema with `FINAL_NEWLINE` refused beside each pattern anchored with `$`, and
    `LONE_SURROGATES` beside the characters text must not hold."""
    if isinstance(node, list):
        return [_portable_patterns(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _portable_patterns(value) for key, value in node.items()}
    if isinstance(out.get("pattern"), str):
        out["pattern"] = _no_lone_surrogates(out["pattern"])
    pattern = out.get("pattern")
    # A blank may end with a newline: `$` before it or after it is all one.
    if isinstance(pattern, str) and pattern.endswith("$") and BLANK_SPACE not in pattern:
        if "not" in out:
            raise ValueError(f"a pattern beside a `not`: {pattern}")
        out["not"] = dict(FINAL_NEWLINE)
    return out


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> self-contained JSON Schema 2020-12 document of one type."""
    out: dict[str, dict[str, Any]] = {}
    for name, (model, mode) in SCHEMA_FILES.items():
        schema = _portable_patterns(model.model_json_schema(mode=mode))  # refs: `#/$defs/...`
        if not schema.get("description"):
            raise ValueError(f"{model.__name__} needs a docstring: it is the schema description")
        schema["$schema"] = JSON_SCHEMA_DIALECT
        schema["$id"] = SCHEMA_ID_BASE + name
        out[name] = _sorted(schema)
    return out


def _component_schemas() -> dict[str, Any]:
    """The same schemas with references into `#/components/schemas/`, for AsyncAPI."""
    _, top = models_json_schema(
        [(model, mode) for model, mode in SCHEMA_FILES.values()],
        ref_template="#/components/schemas/{model}",
    )
    defs: dict[str, Any] = _portable_patterns(top["$defs"])
    # A def no schema refers to is left out: `WithdrawReason`'s closed enum stayed beside
    # the open one `TaskWithdrawal.reason` is now (`open_enum`), for a consumer to pick.
    named = {model.__name__ for model, _ in SCHEMA_FILES.values()}
    text = orjson.dumps(defs).decode()
    return {
        name: schema
        for name, schema in defs.items()
        if name in named or f'"#/components/schemas/{name}"' in text
    }


_KAFKA_KEY_DESCRIPTION = (
    "subscriber_id as UTF-8 bytes; all of a subscriber's records share a partition"
)


def _subscriber_key() -> dict[str, Any]:
    key: dict[str, Any] = _portable_patterns(TypeAdapter(SubscriberId).json_schema())
    key["description"] = _KAFKA_KEY_DESCRIPTION
    return key


def _message(model_name: str, summary: str, *, description: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": model_name,
        "title": model_name,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{model_name}"},
        "bindings": {"kafka": {"key": _subscriber_key(), "bindingVersion": KAFKA_BINDING_VERSION}},
        "examples": [{"name": f"{model_name}-example", "payload": example(model_name)}],
    }
    if description:
        message["description"] = description
    return message


def _refused_example(value: str) -> DeadLetter:
    """The dead letter a worker makes of the example's value, so that the example shows
    the words it writes (it showed pydantic's "String should match pattern", which no
    dead letter says)."""
    record = RawRecord("telecom.topup", 3, 1842, b"1380013800O", value.encode())
    refused = decode(record, EventType.TOPUP)
    if not isinstance(refused, DeadLetter):
        raise TypeError("the dead letter example's value must be refused")
    return refused


def _dead_letter_message() -> dict[str, Any]:
    p = DLQ_HEADER_PREFIX
    digits = "^[0-9]+$"
    reasons = "\n".join(f"- `{r.value}`: {text}" for r, text in REASONS_EXPLAINED.items())
    headers = {
        "type": "object",
        "description": (
            "Where the record came from and why it was rejected, in KIP-1034 style, after "
            "the original record's own headers (kept as they were, except any named "
            "`__dlq.*`). Kafka header values are bytes; these are UTF-8 strings."
        ),
        "required": [
            f"{p}topic",
            f"{p}partition",
            f"{p}offset",
            f"{p}exception.class.name",
            f"{p}exception.message",
            f"{p}reason",
            f"{p}timestamp",
        ],
        "properties": {
            f"{p}topic": {"type": "string", "description": "Topic the record was read from"},
            f"{p}partition": {
                "type": "string",
                "pattern": digits,
                "description": "Partition it was read from, as a decimal string",
            },
            f"{p}offset": {
                "type": "string",
                "pattern": digits,
                "description": "Its offset in that partition, as a decimal string",
            },
            f"{p}exception.class.name": {
                "type": "string",
                "description": "Short name of the error, for people: ValidationError, "
                "JSONDecodeError, DuplicateKey, MissingKey, KeyMismatch, EmptyValue, TooLarge, "
                "OutOfTime, Misplaced, SubscriberMismatch, UnknownTask. A detector_error "
                "carries the exception's own class (KeyError, ...). Programs read the reason",
            },
            f"{p}exception.message": {
                "type": "string",
                "maxLength": 4096,
                "description": "What is wrong with the record, in words: the fields and what "
                "they should be, by how much a time is off. At most 4096 bytes in UTF-8: a "
                "longer one is cut on a character boundary and ends ` [cut from N bytes]`",
            },
            f"{p}reason": {
                **open_enum(
                    [r.value for r in RejectReason],
                    "a reason added later (its message says what is wrong, as every one's)",
                ),
                "description": "Why, as a code (the label of "
                "moments_events_rejected_total); each is described on the message. New "
                "reasons may be added",
            },
            f"{p}timestamp": {
                "type": "string",
                "format": "date-time",
                "description": "When the record was dead-lettered, RFC 3339 with an offset",
            },
            f"{p}original.timestamp": {
                "type": "string",
                "format": "date-time",
                "description": "The original record's Kafka timestamp, RFC 3339 in UTC to the "
                "millisecond (absent when the worker had none)",
            },
            f"{p}original.size": {
                "type": "string",
                "pattern": digits,
                "description": "Bytes of the original value, present only when the dead "
                "letter's value is not all of it: a too_large value cut to its first 64 KiB, "
                "or an empty value when the broker refused the dead letter for its size",
            },
        },
        "additionalProperties": True,
    }
    original = json.dumps(
        {**EXAMPLES["TopUpEvent"], "subscriber_id": "1380013800O"}, ensure_ascii=False
    )
    refused = _refused_example(original)
    return {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "A record the detector could not accept, with its origin and the reason.",
        "description": (
            "Written for an input record the worker refuses; the worker goes on. Key, value "
            "and headers are the original ones, unchanged (a value over 64 KiB is cut), with "
            "the origin and the reason added as `__dlq.errors.*` headers. "
            "A record may be dead-lettered more than once: a worker that ends without its "
            "last commit (or loses its partitions in the middle of a batch) reads it again "
            "and refuses it again, the same bytes in a new dead letter. `__dlq.errors.topic`, "
            "`__dlq.errors.partition` and `__dlq.errors.offset` name the original record: "
            "a consumer that must act once per record deduplicates by the three. "
            "The reasons (`__dlq.errors.reason`), what each means and what the producer "
            f"should do:\n{reasons}"
        ),
        "contentType": "application/octet-stream",
        "headers": headers,
        "payload": {
            "type": ["string", "null"],
            "format": "binary",
            "description": "The original value bytes, unchanged (null if the original was "
            "null; its first 64 KiB if it was larger)",
        },
        "bindings": {
            "kafka": {
                "key": {
                    "type": ["string", "null"],
                    "format": "binary",
                    "description": "The original key bytes, unchanged",
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
        "examples": [
            {
                "name": "DeadLetter-example",
                "headers": {
                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    f"{p}topic": "telecom.topup",
                    f"{p}partition": "3",
                    f"{p}offset": "1842",
                    f"{p}exception.class.name": refused.error_class,
                    f"{p}exception.message": refused.message,
                    f"{p}reason": refused.reason.value,
                    f"{p}timestamp": "2026-11-22T09:30:01.250000+00:00",
                    f"{p}original.timestamp": "2026-11-22T01:30:00.412+00:00",
                },
                "payload": original,
            }
        ],
    }


_Action = Literal["send", "receive"]

# Topics field -> (direction, messages, summary); order is the contract's table.
_CHANNELS: Final[dict[str, tuple[_Action, tuple[str, ...], str]]] = {
    "topup": ("receive", ("TopUpEvent",), "Prepaid top-ups (billing)."),
    "roaming": ("receive", ("RoamingEvent",), "Roaming registrations (network)."),
    "complaint": ("receive", ("ComplaintEvent",), "Complaint ticket changes (customer service)."),
    "usage": ("receive", ("UsageEvent",), "Usage and service records (network, billing, CRM)."),
    "profile": (
        "receive",
        ("ProfileEvent", "ProfileTombstone"),
        "Subscriber profile changes (CRM); compacted, a null value forgets the subscriber.",
    ),
    "tasks": ("send", ("ServiceTask",), "Service tasks the detector publishes."),
    "task_outcomes": (
        "receive",
        ("TaskOutcome",),
        "Outcomes of service tasks, written by dispatch consumers.",
    ),
    "task_withdrawals": (
        "send",
        ("TaskWithdrawal",),
        "Published tasks not yet expired that a later opt-out of their channel, a closed "
        "line or a forgotten subscriber made void: do not act on them.",
    ),
    "deadletter": (
        "send",
        ("DeadLetter",),
        "Records the detector rejected: the original bytes plus the reason and origin.",
    ),
}


# What a dispatch consumer must know of the topics it reads or writes, beside the payloads:
# repeats, order and how to answer (docs/consuming-tasks.md says it at length).
_FOR_CONSUMERS: Final[dict[str, str]] = {
    "tasks": "At least once: a worker that dies after publishing a task and before "
    "recording it publishes it again (the same task_id and content): drop repeats by "
    "task_id until its expires_at. Keyed by subscriber_id: a subscriber's tasks are on one "
    "partition, in the order published. Act before expires_at, answer every task on "
    "moments.task-outcomes, then commit its offset (docs/consuming-tasks.md).",
    "task_withdrawals": "Keyed and partitioned as moments.tasks. A withdrawal is written "
    "after its task was acknowledged on moments.tasks (or names one that never went out), "
    "at least once (a repeat carries the same task_id and reason); nothing orders a "
    "consumer's reads of the two topics: read this one to its end before acting on a task, "
    "and keep the withdrawn task ids until their expires_at (docs/consuming-tasks.md).",
    "task_outcomes": "Keyed by the task's subscriber_id exactly (UTF-8): an outcome with no "
    "key or another is a dead letter. At least one per published task by its expires_at, "
    "under its task_id (a merged task's, not those in `related`; a retry's own); the same "
    "status twice counts once (docs/consuming-tasks.md, Reporting back).",
}


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (as a plain mapping) for the default topic names."""
    topics = Topics()
    schemas = _component_schemas()
    messages: dict[str, Any] = {
        name: _message(name, str(schemas[name]["description"]))
        for name in (model.__name__ for model, _ in SCHEMA_FILES.values())
    }
    messages["ProfileEvent"]["description"] = (
        "Only the fields present change; a later record replaces an earlier one on compaction."
    )
    messages["ProfileTombstone"] = {
        "name": "ProfileTombstone",
        "title": "ProfileTombstone",
        "summary": "A null value (tombstone): forget the subscriber: their state, what the "
        "dispatch stores keep of them, and their tasks not yet sent (docs/security.md).",
        "description": "On the wire: a record keyed by the subscriber id with **no value** "
        "(a Kafka null: Java `new ProducerRecord<>(topic, id, null)`, librdkafka a NULL "
        "payload, kafka-python `value=None` with no value_serializer or one that returns None "
        "for None). Not the JSON text `null`: a JSON serializer given None writes those 4 "
        "bytes. The worker erases the subscriber for those too, and for an empty value "
        "(counted in moments_profile_deletions_total{kind}), but compaction keeps such a "
        "record and its key as the subscriber's latest; a null value it removes. The "
        "record's Kafka timestamp is when the subscriber was erased (at most the worker's "
        "clock): their events of any topic dated at or before it and read after it are "
        "dropped (moments_events_forgotten_total), not dead-lettered.",
        "payload": {"type": "null"},
        "bindings": {"kafka": {"key": _subscriber_key(), "bindingVersion": KAFKA_BINDING_VERSION}},
        "examples": [
            {
                "name": "ProfileTombstone-example",
                "summary": "Key 13800138001 and a null record value: no bytes at all, not the "
                "JSON text null",
                "payload": None,
            }
        ],
    }
    messages["DeadLetter"] = _dead_letter_message()
    # The detector's own records: a task and a withdrawal alike carry content-type (the
    # withdrawal's was written and not listed here), on every record: required.
    for name, what in (("ServiceTask", "task"), ("TaskWithdrawal", "withdrawal")):
        messages[name]["headers"] = {
            "type": "object",
            "properties": {
                "content-type": {
                    "type": "string",
                    "const": "application/json",
                    "description": f"On every {what} record, as written by the detector",
                }
            },
            "required": ["content-type"],
        }
        messages[name]["examples"][0]["headers"] = {"content-type": "application/json"}

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for field, (action, names, summary) in _CHANNELS.items():
        address = str(getattr(topics, field))
        channel: dict[str, Any] = {
            "address": address,
            "title": address,
            "summary": summary,
            "description": " ".join(
                [
                    f"Default name; set another with {_topic_env(field)}.",
                    "MOMENTS_TOPIC_PREFIX is prepended to every topic name.",
                    *([_FOR_CONSUMERS[field]] if field in _FOR_CONSUMERS else []),
                ]
            ),
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        }
        if field == "profile":
            channel["bindings"] = {
                "kafka": {
                    "topicConfiguration": {"cleanup.policy": ["compact"]},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            }
        channels[field] = channel
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{field}"},
            "messages": [{"$ref": f"#/channels/{field}/messages/{name}"} for name in names],
            "summary": summary,
        }
        if action == "receive":
            operation["bindings"] = {
                "kafka": {
                    "groupId": {
                        "type": "string",
                        "default": "moments",
                        "description": "The Faust application id (MOMENTS_APP_ID)",
                    },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            }
        operations[f"{action}_{field}"] = operation

    document: dict[str, Any] = _sorted(
        {
            "asyncapi": "3.0.0",
            "info": {
                "title": "moments key-moment detector",
                "version": CONTRACT_VERSION,
                "description": (
                    "Telecom events in, deduplicated service tasks out. Operations are from "
                    "the detector's point of view. Values are UTF-8 JSON objects and keys "
                    "the subscriber id as UTF-8 bytes, except on the dead-letter topic. "
                    "Record batches may be uncompressed or compressed with gzip, snappy, "
                    "lz4 or zstd (the producer's or the topic's compression.type). "
                    "Generated from moments.models by `moments schemas export`; do not edit."
                ),
                "license": {"name": "Apache-2.0"},
            },
            "defaultContentType": "application/json",
            "servers": {
                "kafka": {
                    "host": "127.0.0.1:9092",
                    "protocol": "kafka",
                    "description": "Default bootstrap server; set with MOMENTS_KAFKA_BOOTSTRAP.",
                }
            },
            "channels": channels,
            "operations": operations,
            "components": {"schemas": schemas, "messages": messages},
        }
    )
    return document


def render_schemas() -> dict[str, str]:
    """File name -> exact text of every file under `schemas/`."""
    files = {name: _dump_json(schema) for name, schema in json_schemas().items()}
    files[ASYNCAPI_FILE] = _dump_yaml(asyncapi_document())
    return dict(sorted(files.items()))


def _stale(out_dir: Path, rendered: dict[str, str]) -> list[Path]:
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.glob(f"*{SCHEMA_SUFFIX}") if p.name not in rendered)


def export_schemas(out_dir: Path) -> list[Path]:
    """Write every rendered file into `out_dir`, remove `*.schema.json` files no longer
    rendered, and return the paths written."""
    rendered = render_schemas()
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in _stale(out_dir, rendered):
        path.unlink()
    written: list[Path] = []
    for name, text in rendered.items():
        path = out_dir / name
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    return written


MISSING = "missing"
OUT_OF_DATE = "out of date"
NOT_RENDERED = "no longer generated"


def schema_problems(out_dir: Path) -> list[tuple[str, str]]:
    """(file name, what is wrong) for each file in `out_dir` that is `MISSING`, differs
    from what `render_schemas()` gives (`OUT_OF_DATE`), or is a `*.schema.json` export
    would delete (`NOT_RENDERED`); empty when up to date."""
    rendered = render_schemas()
    problems: list[tuple[str, str]] = []
    for name, text in rendered.items():
        path = out_dir / name
        if not path.is_file():
            problems.append((name, MISSING))
        elif path.read_bytes() != text.encode("utf-8"):
            problems.append((name, OUT_OF_DATE))
    problems.extend((path.name, NOT_RENDERED) for path in _stale(out_dir, rendered))
    return sorted(problems)


def check_schemas(out_dir: Path) -> list[str]:
    """Names of the files `schema_problems` finds; empty when up to date."""
    return [name for name, _ in schema_problems(out_dir)]
