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
