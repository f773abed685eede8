"""A zone name misspelt in a rules file, a dispatch policy or a profile is refused with
the closest IANA name."""

from __future__ import annotations

import pytest

from moments.zones import check_zone


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("Asia/Shangai", "Asia/Shanghai"),
        ("asia/shanghai", "Asia/Shanghai"),
        ("Asia/HongKong", "Asia/Hong_Kong"),
        ("Asia/Hong Kong", "Asia/Hong_Kong"),
        ("Europe/Londn", "Europe/London"),
        ("Beijing", "Asia/Shanghai"),
        # Searched within the area (the closest when misspelt), as fast as a tenth of
        # the names allows: the hints are those of a search among all names.
        ("AsiaBaku", "Asia/Baku"),
        ("Ect/GMT+8", "Etc/GMT+8"),
        ("SU/Pacific", "US/Pacific"),
        ("Aisa/Shanghai", "Asia/Shanghai"),
    ],
)
def test_a_misspelt_zone_names_the_closest(written: str, meant: str) -> None:
    """`Asia/Shangai` in a rules file's gating was refused with two examples, one of
    them right by luck; `Asia/HongKong` or `Europe/Londn` with the same two (analyst walk)."""
    with pytest.raises(ValueError, match="is not an IANA time zone") as err:
        check_zone(written)
    assert f"did you mean {meant!r}?" in str(err.value)


def test_a_name_like_no_zone_still_shows_how_to_write_one() -> None:
    with pytest.raises(ValueError, match="write one such as Asia/Shanghai") as err:
        check_zone("Mars/Olympus")
    assert "did you mean" not in str(err.value)


@pytest.mark.parametrize(
    ("written", "etc"),
    [
        ("UTC+8", "Etc/GMT-8"),
        ("GMT+08:00", "Etc/GMT-8"),
        ("+08:00", "Etc/GMT-8"),
        ("utc +0800", "Etc/GMT-8"),
        ("UTC-5", "Etc/GMT+5"),
        ("-03:00", "Etc/GMT+3"),
        ("GMT+14", "Etc/GMT-14"),
    ],
)
def test_a_utc_offset_says_what_to_write(written: str, etc: str) -> None:
    """`UTC+8` was refused with two examples, `GMT+08:00` and `+08:00` with the name
    pattern, and no closest name helps: the fix is the place's IANA name, or tzdata's
    fixed-offset zone, whose sign is the other way round."""
    with pytest.raises(ValueError, match="is a UTC offset, not an IANA time zone") as err:
        check_zone(written)
    said = str(err.value)
    assert "Asia/Shanghai for China" in said
    assert f"{etc!r}" in said
    assert "sign inverted" in said
    from moments.zones import known_zone

    assert known_zone(etc) is not None  # what it names is accepted


@pytest.mark.parametrize("written", ["UTC+5:30", "+05:45", "UTC+15", "GMT-13"])
def test_an_offset_no_etc_zone_has_names_the_place_only(written: str) -> None:
    with pytest.raises(ValueError, match="is a UTC offset") as err:
        check_zone(written)
    assert "Etc/GMT" not in str(err.value)
    assert "Asia/Kolkata" in str(err.value)  # an example of a place's name


@pytest.mark.parametrize("written", ["UTC+8", "GMT+08:00", "+08:00"])
def test_a_profile_with_an_offset_is_refused_with_the_fix(written: str) -> None:
    """The profile's pattern refused `GMT+08:00` and `+08:00` before the zone check, with
    the pattern itself as the message; the roaming record's `timezone` is the same type."""
    import orjson

    from moments.decoding import decode
    from moments.models import EventType
    from moments.records import DeadLetter, RawRecord

    value = orjson.dumps(
        {
            "event_id": "p1",
            "subscriber_id": "13800000001",
            "occurred_at": "2026-11-10T10:00:00+08:00",
            "timezone": written,
        }
    )
    refused = decode(RawRecord("profile", 0, 0, b"13800000001", value), EventType.PROFILE)
    assert isinstance(refused, DeadLetter)
    assert "is a UTC offset, not an IANA time zone" in refused.message
    assert "Etc/GMT-8" in refused.message
    assert "should match pattern" not in refused.message


def test_zone_names_with_signs_are_still_zones() -> None:
    assert check_zone("Etc/GMT-8") == "Etc/GMT-8"
    assert check_zone("GMT+0") == "GMT+0"
    assert check_zone("UTC") == "UTC"
