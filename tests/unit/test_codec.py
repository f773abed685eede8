"""The orjson codec Faust uses for `value_serializer="orjson"`."""

from __future__ import annotations

import orjson
import pytest
from faust.serializers import codecs

from moments.codec import OrjsonCodec, register_codecs


def test_registered_under_its_name() -> None:
    register_codecs()
    assert isinstance(codecs.get_codec("orjson"), OrjsonCodec)


def test_round_trip_of_a_task_like_value() -> None:
    codec = OrjsonCodec()
    value = {"task_id": "abc", "priority": 3, "params": {"country": "JP"}, "evidence": ["e-1"]}
    data = codec.dumps(value)
    assert isinstance(data, bytes)
    assert codec.loads(data) == value
    assert orjson.loads(data) == value, "plain JSON, readable by any consumer"


def test_not_json_is_an_error_not_a_silent_none() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        OrjsonCodec().loads(b"\xff not json")


def test_dumps_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        OrjsonCodec().dumps({"x": object()})
