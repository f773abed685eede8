"""Special days abroad: judged on the clock where the customer is, as quiet hours are.

A birthday greeting due at 09:00 in Shanghai reached a customer roaming in New York at
20:00 the evening before their birthday (local): the day, the look's hour and the
greeting's end at midnight were all on the home clock while quiet hours were on the
visited one."""

from __future__ import annotations

import datetime as dt
from typing import Any

from moments.engine import Detector
from moments.models import EventType
from moments.sources import SOURCE_CODES
from moments.state import SubscriberState
from moments.sweep import next_sweep

from .rules.helpers import BIRTHDAY, NO_GATES, ev, rules_from, run

RULES = NO_GATES + "special_days: {local_hour: 9}\nrules:" + BIRTHDAY
PROFILE = ev(
    EventType.PROFILE, "2026-11-20T12:00:00+08:00", timezone="Asia/Shanghai", birthday="12-10"
)


def roam(when: str, **where: Any) -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.ROAMING, when, roaming_type="international", **where)


def greetings(events: list[tuple[EventType, dict[str, Any]]], until: str) -> list[Any]:
    result = run(rules_from(RULES), events, until=until)
    return [t for t in result.tasks if t.moment.rule_id == "birthday_greeting"]


class TestInNewYork:
    """Home Shanghai, in New York (UTC-5 in December) over the birthday, 12-10."""

    ARRIVAL = roam("2026-12-08T10:00:00-05:00", country="US", timezone="America/New_York")

    def test_not_the_evening_before_the_birthday_there(self) -> None:
        # 09:00 on 12-10 in Shanghai is 20:00 on 12-09 in New York.
        made = greetings([PROFILE, self.ARRIVAL], until="2026-12-09T23:30:00-05:00")
        assert made == []

    def test_at_nine_on_the_birthday_there_until_midnight_there(self) -> None:
        made = greetings([PROFILE, self.ARRIVAL], until="2026-12-10T09:30:00-05:00")
        assert len(made) == 1
        nine = dt.datetime.fromisoformat("2026-12-10T09:00:00-05:00")
        assert made[0].triggered_at == nine
        assert made[0].expires_at == dt.datetime.fromisoformat("2026-12-10T21:00:00-05:00")
        assert made[0].moment.params["birthday"] == "12-10"

    def test_by_utc_offset_only(self) -> None:
        arrival = roam("2026-12-08T10:00:00-05:00", country="US", utc_offset_minutes=-300)
        assert greetings([PROFILE, arrival], until="2026-12-09T23:30:00-05:00") == []
        made = greetings([PROFILE, arrival], until="2026-12-10T09:30:00-05:00")
        assert [t.triggered_at for t in made] == [
            dt.datetime.fromisoformat("2026-12-10T09:00:00-05:00")
        ]


class TestByCountry:
    def test_a_country_of_one_clock_is_its_clock(self) -> None:
        # France (UTC+1): 09:00 in Shanghai is 02:00 in Paris; the look waits for 09:00.
        arrival = roam("2026-12-08T10:00:00+01:00", country="FR")
        assert greetings([PROFILE, arrival], until="2026-12-10T08:30:00+01:00") == []
        made = greetings([PROFILE, arrival], until="2026-12-10T09:30:00+01:00")
        assert [t.triggered_at for t in made] == [
            dt.datetime.fromisoformat("2026-12-10T09:00:00+01:00")
        ]

    def test_a_country_of_several_clocks_named_alone_is_the_home_clock(self) -> None:
        # As for quiet hours: the United States alone says no clock; Shanghai's it is.
        arrival = roam("2026-12-08T10:00:00-05:00", country="US")
        made = greetings([PROFILE, arrival], until="2026-12-10T09:30:00+08:00")
        assert [t.triggered_at for t in made] == [
            dt.datetime.fromisoformat("2026-12-10T09:00:00+08:00")
        ]


class TestBackHome:
    def test_a_return_puts_the_home_clock_back(self) -> None:
        events = [
            PROFILE,
            roam("2026-12-01T10:00:00-05:00", country="US", timezone="America/New_York"),
            ev(
                EventType.ROAMING,
                "2026-12-05T10:00:00+08:00",
                country="CN",
                roaming_type="domestic",
            ),
        ]
        made = greetings(events, until="2026-12-10T09:30:00+08:00")
        assert [t.triggered_at for t in made] == [
            dt.datetime.fromisoformat("2026-12-10T09:00:00+08:00")
        ]

    def test_a_lapsed_trip_puts_the_home_clock_back(self) -> None:
        # The latest roaming record is 20 days old on the birthday: over 14 days, home.
        events = [
            PROFILE,
            roam("2026-11-20T10:00:00-05:00", country="US", timezone="America/New_York"),
        ]
        made = greetings(events, until="2026-12-10T09:30:00+08:00")
        assert [t.triggered_at for t in made] == [
            dt.datetime.fromisoformat("2026-12-10T09:00:00+08:00")
        ]

    def test_a_day_looked_at_abroad_is_not_looked_at_again_at_home(self) -> None:
        # Home in New York, greeted at 09:00 in Shanghai on the birthday, back home
        # the same day (still 12-10 in New York): no second greeting.
        profile = ev(
            EventType.PROFILE,
            "2026-11-20T12:00:00-05:00",
            timezone="America/New_York",
            birthday="12-10",
        )
        events = [
            profile,
            roam("2026-12-08T10:00:00+08:00", country="CN", timezone="Asia/Shanghai"),
            ev(
                EventType.ROAMING,
                "2026-12-10T12:00:00-05:00",
                country="US",
                roaming_type="domestic",
            ),
        ]
        made = greetings(events, until="2026-12-10T23:30:00-05:00")
        assert [t.triggered_at for t in made] == [
            dt.datetime.fromisoformat("2026-12-10T09:00:00+08:00")
        ]


class TestNextSweep:
    def test_abroad_the_look_is_due_at_the_visited_hour(self) -> None:
        """The sweeper skips a record until `next_sweep`: abroad, that is not the home
        look already past (every sweep would visit it for nothing), nor after the
        visited place's look (New York's 09:00 is after Shanghai's midnight)."""
        detector = Detector(rules_from(RULES), {})
        state = SubscriberState(profile={"timezone": "Asia/Shanghai", "birthday": "12-10"})
        state.roaming = {"z": "America/New_York"}
        noon = dt.datetime.fromisoformat("2026-12-10T12:00:00+08:00")  # 23:00 12-09 NY
        at = int(noon.timestamp())
        state.seen[SOURCE_CODES[EventType.ROAMING]] = at - 3600
        state.closed["checked"] = dt.date(2026, 12, 10).toordinal()
        state.special_day = dt.date(2026, 12, 9).toordinal()  # looked at 12-09 in NY
        due = next_sweep(detector, state, at)
        ny_nine = dt.datetime.fromisoformat("2026-12-10T09:00:00-05:00").timestamp()
        assert at < due <= ny_nine
