"""Two framings an upstream producer or a dispatch consumer gets wrong, named in the dead
letter with the fix, as a Confluent frame, a byte-order mark or GBK text already are.

- A value compressed by the application (gzip, or a zstd, lz4 or snappy frame) was told
  "the value is not UTF-8 (byte 1: ...; GBK, Latin-1 or UTF-16?)", which sent the
  producer looking at its text encoding: Kafka compresses batches itself
  (`compression.type`), and the worker reads each codec.
- An event or outcome wrapped in an envelope (`{"type": ..., "payload": {...}}`,
  CloudEvents' `data`, a CDC record's `after`) was told only "event_id: Field required;
  subscriber_id: Field required; ...", every field missing though every one was sent.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import cramjam
import pytest

from moments.decoding import decode
from moments.models import EventType
from moments.outcomes import decode_outcome
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.schemas import example

TOPUP = example("TopUpEvent")
OUTCOME = example("TaskOutcome")
KEY = str(TOPUP["subscriber_id"]).encode()
assert OUTCOME["subscriber_id"] == TOPUP["subscriber_id"]


def _as_event(value: bytes) -> DeadLetter:
    decoded = decode(RawRecord("telecom.topup", 0, 0, KEY, value), EventType.TOPUP)
    assert isinstance(decoded, DeadLetter), decoded
    return decoded


def _as_outcome(value: bytes) -> DeadLetter:
    decoded = decode_outcome(RawRecord("moments.task-outcomes", 0, 0, KEY, value))
    assert isinstance(decoded, DeadLetter), decoded
    return decoded


CODECS: dict[str, Callable[[bytes], Any]] = {
    "gzip": cramjam.gzip.compress,
    "zstd": cramjam.zstd.compress,
    "lz4": cramjam.lz4.compress,
    "snappy": cramjam.snappy.compress,
}


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("read", [_as_event, _as_outcome], ids=["event", "outcome"])
def test_a_compressed_value_names_the_producers_compression(
    codec: str, read: Callable[[bytes], DeadLetter]
) -> None:
    value = bytes(CODECS[codec](json.dumps(TOPUP if read is _as_event else OUTCOME).encode()))
    refused = read(value)
    assert refused.reason is RejectReason.INVALID_JSON
    assert f"{codec}-compressed" in refused.message
    assert f"compression.type={codec}" in refused.message


@pytest.mark.parametrize("level", [1, 6, 9])
@pytest.mark.parametrize("read", [_as_event, _as_outcome], ids=["event", "outcome"])
def test_a_zlib_value_is_named_and_a_kafka_codec_offered(
    level: int, read: Callable[[bytes], DeadLetter]
) -> None:
    """zlib (RFC 1950: Java's DeflaterOutputStream, Node's zlib.deflate, Python's
    zlib.compress) has no Kafka codec, and was told "not UTF-8 (byte 1: ...; GBK, Latin-1
    or UTF-16?)": the producing page promises a value the application compressed is
    named, with the codec to set instead (found producing as a billing team)."""
    doc = TOPUP if read is _as_event else OUTCOME
    refused = read(zlib.compress(json.dumps(doc).encode(), level))
    assert refused.reason is RejectReason.INVALID_JSON
    assert refused.message == (
        "the value is zlib-compressed (deflate): send the JSON text itself, and let the "
        "producer compress (compression.type gzip, snappy, lz4 or zstd, which the worker "
        "reads)"
    )


@pytest.mark.parametrize("alphabet", ["standard", "urlsafe"])
@pytest.mark.parametrize("read", [_as_event, _as_outcome], ids=["event", "outcome"])
def test_base64_of_the_json_says_so(alphabet: str, read: Callable[[bytes], DeadLetter]) -> None:
    """A value base64-encoded by the application (a binary field of a REST bridge or an
    SDK sent as text) was told the parser's "expected value at line 1 column 1"."""
    doc = TOPUP if read is _as_event else OUTCOME
    encode = base64.b64encode if alphabet == "standard" else base64.urlsafe_b64encode
    refused = read(encode(json.dumps(doc).encode()))
    assert refused.reason is RejectReason.INVALID_JSON
    assert refused.message == (
        "the value is base64 of JSON text: send the JSON text itself (UTF-8), not encoded"
    )


def test_text_that_only_looks_like_base64_keeps_the_parsers_words() -> None:
    refused = _as_event(b"hello")
    assert refused.message.startswith("Invalid JSON: expected value at line 1 column 1")
    assert "base64" not in refused.message


ENVELOPES = [
    lambda inner: {"type": "topup", "payload": inner},
    lambda inner: {"specversion": "1.0", "id": "e-1", "data": inner},  # CloudEvents
    lambda inner: {"before": None, "after": inner, "op": "c"},  # a CDC record
    lambda inner: {"subscriber_id": inner["subscriber_id"], "event": inner},
]


@pytest.mark.parametrize("wrap", ENVELOPES)
def test_an_enveloped_event_names_the_envelope(wrap: Callable[[dict[str, Any]], Any]) -> None:
    wrapped = wrap(dict(TOPUP))
    refused = _as_event(json.dumps(wrapped).encode())
    assert refused.reason is RejectReason.INVALID_EVENT
    [member] = [k for k, v in wrapped.items() if isinstance(v, dict)]
    assert f'wrapped in an envelope, under "{member}"' in refused.message


def test_an_enveloped_outcome_names_the_envelope() -> None:
    refused = _as_outcome(json.dumps({"type": "outcome", "body": OUTCOME}).encode())
    assert refused.reason is RejectReason.INVALID_EVENT
    assert 'wrapped in an envelope, under "body"' in refused.message


@pytest.mark.parametrize(
    "value",
    [
        {k: v for k, v in TOPUP.items() if k != "amount"},  # a field missing: no envelope
        {**{k: v for k, v in TOPUP.items() if k != "amount"}, "meta": {"source": "bss"}},
    ],
)
def test_an_event_missing_a_field_is_told_no_envelope(value: dict[str, Any]) -> None:
    refused = _as_event(json.dumps(value).encode())
    assert "envelope" not in refused.message
    assert refused.message.startswith("amount: ")


BIG = 70_000


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (json.dumps([TOPUP] * 400).encode(), "a JSON array of events?"),
        (b"\n".join([json.dumps(TOPUP).encode()] * 400), "several events joined by newlines?"),
        (json.dumps({**TOPUP, "raw": "x" * BIG}).encode(), "leave large fields of your own out"),
    ],
)
def test_a_value_too_large_says_what_it_likely_is(value: bytes, said: str) -> None:
    """It said only the size and the limit: "70000 bytes; events are limited to 65536"."""
    assert len(value) > 65536
    refused = _as_event(value)
    assert refused.reason is RejectReason.TOO_LARGE
    assert said in refused.message


def test_an_outcome_too_large_says_it_too() -> None:
    refused = _as_outcome(json.dumps({**OUTCOME, "debug": "x" * BIG}).encode())
    assert refused.reason is RejectReason.TOO_LARGE
    assert "no outcome of the contract comes near it" in refused.message


@pytest.mark.parametrize(
    ("encoding", "how"),
    [
        ("utf-16-le", "no byte-order mark, little-endian"),
        ("utf-16-be", "no byte-order mark, big-endian"),
        ("utf-16", "a byte-order mark, FF FE"),
    ],
)
def test_a_utf16_value_is_named_as_one(encoding: str, how: str) -> None:
    """A value in UTF-16 without its mark is valid UTF-8 (a zero byte before or after
    each letter), so the parser's own words were said, with the wrong fix: "key must be
    a string ...: names take double quotes (single quotes, or a Python dict written
    with str()?)" little-endian, a bare "expected value" big-endian; with the mark,
    "not UTF-8 (byte 0 ...; GBK, Latin-1 or UTF-16?)"."""
    said = f"the value is UTF-16 text ({how}): encode the JSON text as UTF-8"
    value = json.dumps(TOPUP).encode(encoding)
    for dead in (_as_event(value), _as_outcome(json.dumps(OUTCOME).encode(encoding))):
        assert dead.reason is RejectReason.INVALID_JSON
        assert said in dead.message, dead.message
        assert "double quotes" not in dead.message


def _avro_topup() -> bytes:
    """A top-up as Avro's binary encoding writes it: each string its zigzag length, then
    its bytes; the amount a little-endian double."""
    parts = [str(TOPUP["event_id"]), str(TOPUP["subscriber_id"]), str(TOPUP["occurred_at"])]
    strings = b"".join(bytes([len(p.encode()) * 2]) + p.encode() for p in parts)
    return strings + struct.pack("<d", 50.0) + b"\x06app"


def _protobuf_topup() -> bytes:
    """A top-up as Protobuf writes it: field 1 (event_id) and 2 (subscriber_id) as
    length-delimited strings, 3 (amount) a double, 4 (balance in fen) the varint 300."""
    event_id, subscriber = str(TOPUP["event_id"]).encode(), KEY
    return (
        b"\x0a"
        + bytes([len(event_id)])
        + event_id
        + b"\x12"
        + bytes([len(subscriber)])
        + subscriber
        + b"\x19"
        + struct.pack("<d", 50.0)
        + b"\x20\xac\x02"
    )


CONFLUENT_ID_7 = b"\x00\x00\x00\x00\x07"
BINARY_SERIALIZERS = {
    "confluent-avro": CONFLUENT_ID_7 + _avro_topup(),
    "confluent-protobuf": CONFLUENT_ID_7 + b"\x00" + _protobuf_topup(),  # message index 0
    "avro": _avro_topup(),
    "protobuf": _protobuf_topup(),
}


@pytest.mark.parametrize("framed", ["confluent-avro", "confluent-protobuf"])
@pytest.mark.parametrize("read", [_as_event, _as_outcome], ids=["event", "outcome"])
def test_a_registry_frame_around_binary_is_named(
    framed: str, read: Callable[[bytes], DeadLetter]
) -> None:
    """A Schema Registry Avro or Protobuf serializer's value (magic byte 0, the schema id,
    then binary) was told "not UTF-8 (byte 18: b'\\xa0'; GBK, Latin-1 or UTF-16?)" or the
    parser's "expected value at line 1 column 1": only a frame around JSON was named
    (found producing as a billing team with the registry's serializer)."""
    refused = read(BINARY_SERIALIZERS[framed])
    assert refused.reason is RejectReason.INVALID_JSON
    assert refused.message == (
        "the value starts with a Confluent Schema Registry header (magic byte 0 and the "
        "4-byte schema id 7: a registry serializer's, Avro, Protobuf or JSON Schema): send "
        "plain UTF-8 JSON (a StringSerializer or a JSON serializer without the registry)"
    )


@pytest.mark.parametrize("encoded", ["avro", "protobuf"])
@pytest.mark.parametrize("read", [_as_event, _as_outcome], ids=["event", "outcome"])
def test_a_binary_value_is_named_binary(encoded: str, read: Callable[[bytes], DeadLetter]) -> None:
    """Avro or Protobuf bytes without a registry frame were told the parser's "expected
    value at line 2 column 1" or "not UTF-8 ... GBK, Latin-1 or UTF-16?": a text
    encoding to look at, where the producer's serializer is the fix."""
    refused = read(BINARY_SERIALIZERS[encoded])
    assert refused.reason is RejectReason.INVALID_JSON
    assert refused.message == (  # no byte quoted: `show` counts one line for them all
        "the value is binary, not JSON text (it holds control characters: an Avro, "
        "Protobuf or other binary serializer's?): send it as UTF-8 JSON text (a "
        "StringSerializer, json.dumps(...).encode())"
    )


@pytest.mark.parametrize(
    "value",
    [b'{"event_id": "t\x01"}', b"\n\n{", b'{"a": 1}\x00'],
    ids=["control-in-a-string", "newlines-then-cut", "nul-after-json"],
)
def test_json_text_with_a_control_byte_is_no_binary_value(value: bytes) -> None:
    """JSON text that holds a control byte (in a string, after the object) is still text:
    the parser's words, with their own hints, not "binary"."""
    assert "binary" not in _as_event(value).message
