"""An orjson codec for Faust (`value_serializer="orjson"`), registered once per process."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs


class OrjsonCodec(codecs.Codec):
    """JSON via orjson: faster than Faust's default and strict about what it emits."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


def register_codecs() -> None:
    codecs.register("orjson", OrjsonCodec())
