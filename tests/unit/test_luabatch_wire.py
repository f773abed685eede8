"""sinks.luabatch packs a script's call in one C call (hiredis) into the bytes redis-py
would have written for it, instead of redis-py's encoder and packer going over each key
and argument in Python."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer
from redis.exceptions import DataError

from sinks.luabatch import _packed

_ENCODER = Encoder("utf-8", "strict", decode_responses=False)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def redis_bytes(*command: Any) -> bytes:
    """What redis-py, with its defaults (the worker's client sets no encoding), writes for
    `command` (its pure-Python packer: the protocol without hiredis)."""
    packer = PythonRespSerializer(6000, _ENCODER.encode)
    return b"".join(packer.pack(*command))  # type: ignore[no-untyped-call]  # as above


class _Kind(StrEnum):
    SMS = "sms"


def test_each_value_reaches_redis_as_the_same_bytes() -> None:
    values: list[Any] = [
        "moments:ledger:t1",
        "Zürich ☎",
        "",
        b"raw",
        b"",
        7,
        -2,
        10**30,
        0.1,
        1e300,
        1e-7,
        -0.0,
        0.30000000000000004,
        float("inf"),
        _Kind.SMS,
    ]
    command = [b"EVALSHA", "a" * 40, 2, *values]
    assert _packed(command) == redis_bytes(*command)
    assert _packed([b"EVALSHA", "Zürich ☎"]).endswith("Zürich ☎".encode() + b"\r\n")


@pytest.mark.parametrize("value", [True, None, object()])
def test_a_value_redis_py_refuses_is_refused(value: Any) -> None:
    with pytest.raises(DataError):
        redis_bytes(b"EVALSHA", value)
    with pytest.raises(TypeError):
        _packed([b"EVALSHA", value])


def test_a_lone_surrogate_fails_to_encode_as_it_did_in_redis_py() -> None:
    with pytest.raises(UnicodeEncodeError):
        redis_bytes(b"EVALSHA", "\ud800")
    with pytest.raises(UnicodeEncodeError):
        _packed([b"EVALSHA", "\ud800"])
