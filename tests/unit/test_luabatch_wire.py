"""sinks.luabatch sends a script's keys and arguments as redis-py would have written them:
texts encoded once, by the batch, instead of by redis-py's encoder one by one."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest
from redis._parsers.encoders import Encoder
from redis.exceptions import DataError

from sinks.luabatch import _wire

_ENCODER = Encoder("utf-8", "strict", decode_responses=False)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def redis_bytes(value: Any) -> Any:
    """What redis-py's encoder, with its defaults (the worker's client sets no encoding),
    sends for `value`."""
    return _ENCODER.encode(value)  # type: ignore[no-untyped-call]  # as above


class _Kind(StrEnum):
    SMS = "sms"


def test_each_value_reaches_redis_as_the_same_bytes() -> None:
    values: list[Any] = ["moments:ledger:t1", "Zürich ☎", "", b"raw", 7, -2, 0.1, 1e300, _Kind.SMS]
    wired = _wire(values)
    assert [redis_bytes(v) for v in wired] == [redis_bytes(v) for v in values]
    assert wired[0] == b"moments:ledger:t1"
    assert wired[1] == "Zürich ☎".encode()
    assert wired[4] == 7  # numbers are left to redis-py, which writes them as repr does


def test_a_bool_is_still_refused_by_redis_py() -> None:
    with pytest.raises(DataError, match="bool"):
        redis_bytes(_wire([True])[0])


def test_a_lone_surrogate_fails_to_encode_as_it_did_in_redis_py() -> None:
    with pytest.raises(UnicodeEncodeError):
        redis_bytes("\ud800")
    with pytest.raises(UnicodeEncodeError):
        _wire(["\ud800"])
