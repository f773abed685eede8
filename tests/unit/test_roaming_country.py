"""A roaming record's `country` is an ISO 3166-1 alpha-2 code (tzdata's `iso3166.tab`), or
`XK` for Kosovo, in the worker and in the published schema alike.

Any two capitals were taken: `UK` (the EU's code for the United Kingdom; ISO's is `GB`)
or a made-up `ZZ` passed the schema and the worker, was judged on a clock the country
lookup did or did not find, and `UK` beside `GB` made one country two for a
`first_time: country` rule. Now both refuse what is no code, and the dead letter names
the fix."""

from __future__ import annotations

import itertools
import json
import string
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from moments.decoding import decode
from moments.models import EventType, RoamingEvent
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.schemas import example
from moments.zones import countries

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "roaming-event.schema.json"


@cache
def validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA.read_text()))


def roaming(country: Any) -> dict[str, Any]:
    return {**example("RoamingEvent"), "country": country}


def decoded(value: dict[str, Any]) -> RoamingEvent | DeadLetter:
    record = RawRecord("t", 0, 0, value["subscriber_id"].encode(), json.dumps(value).encode())
    got = decode(record, EventType.ROAMING)
    assert isinstance(got, RoamingEvent | DeadLetter)
    return got


def refused(country: str) -> str:
    dead = decoded(roaming(country))
    assert isinstance(dead, DeadLetter)
    assert dead.reason is RejectReason.INVALID_EVENT
    return dead.message


class TestTheCodes:
    def test_the_list_is_tzdatas_iso_3166_with_kosovo(self) -> None:
        codes = set(countries())
        assert {"GB", "GR", "JP", "CN", "US", "XK"} <= codes
        assert not {"UK", "EL", "ZZ", "EU"} & codes
        assert len(codes) >= 249  # iso3166.tab of tzdata 2026.6 lists 249

    def test_every_two_capitals_the_worker_and_the_schema_agree(self) -> None:
        """All 676 pairs: the schema's `enum` takes what the worker's pattern takes."""
        differ = []
        for a, b in itertools.product(string.ascii_uppercase, repeat=2):
            value = roaming(a + b)
            by_schema = validator().is_valid(value)
            by_worker = isinstance(decoded(value), RoamingEvent)
            if by_schema != by_worker:
                differ.append((a + b, by_schema, by_worker))
        assert differ == []
        assert validator().is_valid(roaming("GB"))
        assert not validator().is_valid(roaming("UK"))


@pytest.mark.parametrize(
    ("country", "said"),
    [
        ("UK", "country: UK is not an ISO 3166-1 alpha-2 code (it is the EU's): write GB"),
        ("EL", "country: EL is not an ISO 3166-1 alpha-2 code (it is the EU's): write GR"),
        ("uk", "country: UK is not an ISO 3166-1 alpha-2 code (it is the EU's): write GB"),
        ("jp", "country: write the ISO 3166-1 alpha-2 code in capitals: JP"),
        (
            "ZZ",
            "country: ZZ is not an ISO 3166-1 alpha-2 country code: write the ISO 3166-1 "
            "alpha-2 code in capitals, e.g. JP for Japan (the list is tzdata's iso3166.tab; "
            "XK is taken for Kosovo)",
        ),
        (
            "JPN",
            "country: write the ISO 3166-1 alpha-2 code in capitals, e.g. JP (not jp or JPN)",
        ),
    ],
)
def test_a_code_that_is_none_is_told_what_to_write(country: str, said: str) -> None:
    assert refused(country) == said


@pytest.mark.parametrize("country", ["GB", "GR", "XK", "JP", "AQ"])
def test_a_code_of_the_list_is_taken(country: str) -> None:
    event = decoded(roaming(country))
    assert isinstance(event, RoamingEvent)
    assert event.country == country
