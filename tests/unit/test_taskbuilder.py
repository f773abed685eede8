"""Task building: the description's placeholders, filled as the regex substitution and the
JSON dump of the event always filled them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moments.models import EVENT_MODELS, Channel, EventType, InputEvent, TopUpEvent
from moments.taskbuilder import _new_moment, moment_of, shown_fields
from rules.templates import PLACEHOLDER, fill

from .catalogs import default_rules

WHEN = "2026-11-23T10:00:00+08:00"
text = st.text(alphabet="ab{}_1 .é", max_size=12)
names = st.sampled_from(["a", "b", "_c", "country", "x1"])


def shown(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def fill_by_regex(template: str, values: dict[str, Any]) -> str:
    """The substitution `fill` made before it split templates once (whole floats shown
    without ".0")."""
    return PLACEHOLDER.sub(
        lambda m: shown(values[m.group(1)]) if m.group(1) in values else m.group(0), template
    )


class TestFill:
    """Placeholders with a value are replaced by its str (a whole float without ".0");
    unknown and odd ones stay."""

    @settings(max_examples=400)
    @given(
        pieces=st.lists(text | names.map(lambda n: "{" + n + "}"), max_size=8),
        values=st.dictionaries(names, st.none() | st.integers() | text | st.floats()),
    )
    def test_matches_the_regex_substitution(
        self, pieces: list[str], values: dict[str, Any]
    ) -> None:
        template = "".join(pieces)
        assert fill(template, values) == fill_by_regex(template, values)

    def test_odd_placeholders_stay_as_written(self) -> None:
        assert fill("{a} {1a} {a.b} {{a}} {}", {"a": None}) == "None {1a} {a.b} {None} {}"

    @pytest.mark.parametrize(
        ("template", "value", "shown"),
        [
            ("{a:.2f}", Decimal("49.9"), "49.90"),
            ("{a:,.0f}", Decimal("12345.67"), "12,346"),
            ("{a:,.2f}", "12345.6", "12,345.60"),  # money from the event's JSON dump is text
            ("{a:.0%}", 0.853, "85%"),
            ("{a:+.0%}", -0.3456, "-35%"),
            ("{a:,}", 1000.0, "1,000"),  # a whole float without ".0", as {a} shows it
            ("{a:,}", 2, "2"),
            ("{a:_.2f}", Decimal("1234.5"), "1_234.50"),  # money is a Decimal
            ("{a:_.0f}", "12345.6", "12_346"),
            ("{a:_}", Decimal("1234567"), "1_234_567"),
            ("{a:_.0%}", 123.45, "12_345%"),
            ("{a:.1f}", 3, "3.0"),
            ("{a:}", 2.0, "2"),  # an empty format is a bare placeholder
            ("{a:.2f}", "JP", "JP"),  # text is shown as {a} shows it, never an error
            ("{a:.2f}", None, "None"),
            ("{a:.2f}", True, "True"),
            ("{a:.2f}", Decimal("1e40"), "1E+40"),  # no formatting to any length
            ("{a:>99999999}", 1, "{a:>99999999}"),  # refused at load; left as written
            ("{a:.99999999f}", 1, "{a:.99999999f}"),
            ("{b:.2f}", 1, "{b:.2f}"),  # unknown: left as written, as {b}
        ],
    )
    def test_number_formats(self, template: str, value: Any, shown: str) -> None:
        """`{name:spec}` formats numbers with the small safe subset templates allow."""
        assert fill(template, {"a": value}) == shown


def payloads(event_type: EventType) -> st.SearchStrategy[dict[str, Any]]:
    no_controls = st.characters(blacklist_categories=["Cc", "Cs", "Cf", "Zl", "Zp"])
    text = st.text(no_controls, max_size=8)
    # A required text of an event is refused blank (spaces only): the ids and a top-up's
    # channel hold some other character; an optional one left blank is none.
    filled = text.filter(str.strip)
    optional_text = st.none() | text
    money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10**6), places=2)
    fields: dict[EventType, dict[str, st.SearchStrategy[Any]]] = {
        EventType.TOPUP: {
            "amount": money | money.map(str),
            "balance_after": st.none() | money,
            "channel": filled,
        },
        EventType.USAGE: {
            "kind": st.sampled_from(["voice", "sms", "data", "bill_query"]),
            "quantity": st.none() | st.floats(0, 1e9) | st.integers(0, 10**9),
            "charge": money,
            "counterparty": optional_text,
            "direction": st.sampled_from([None, "in", "out"]),
            "imei": st.none() | st.just("123456789012345"),
        },
        EventType.ROAMING: {
            "country": st.sampled_from(["JP", "FR"]),
            "roaming_type": st.sampled_from(["international", "domestic"]),
            "utc_offset_minutes": st.none() | st.integers(-40, 40).map(lambda q: q * 15),
            "timezone": st.sampled_from([None, "Asia/Tokyo", "Europe/Paris", "UTC"]),
        },
        EventType.COMPLAINT: {
            "complaint_id": filled,
            "category": st.sampled_from(["network", "billing"]),
            "severity": st.integers(1, 3),
            "status": st.sampled_from(["opened", "resolved"]),
        },
        EventType.PROFILE: {
            "birthday": st.sampled_from([None, "07-14", "1990-02-28"]),
            "joined_on": st.none() | st.dates(dt.date(2000, 1, 1), dt.date(2030, 1, 1)),
            "tier": optional_text,
            "star_level": st.none() | st.integers(1, 7),
            "quiet_hours": st.none() | st.just(["21:00-08:00"]),
            "opt_out": st.none() | st.lists(st.sampled_from(list(Channel)), max_size=2),
        },
    }
    extras = st.dictionaries(
        st.sampled_from(["shop", "note", "level"]),
        st.none() | st.text(max_size=6) | st.integers() | st.lists(st.integers(), max_size=2),
    )
    return st.builds(
        lambda known, extra: {**extra, **known},
        st.fixed_dictionaries(
            {
                "event_id": st.just("e1"),
                "subscriber_id": st.just("13800138001"),
                "occurred_at": st.just(WHEN),
                "region": st.none() | st.just("NJ"),
                **fields[event_type],
            }
        ),
        extras,
    )


@st.composite
def events(draw: st.DrawFn) -> InputEvent:
    event_type = draw(st.sampled_from(list(EventType)))
    event: InputEvent = EVENT_MODELS[event_type].model_validate(draw(payloads(event_type)))  # type: ignore[assignment]  # the models of InputEvent
    return event


class TestShownFields:
    """What a description may show of the event: its JSON dump, without the Nones."""

    @settings(max_examples=500, deadline=None)
    @given(
        event=events(),
        wanted=st.frozensets(
            st.sampled_from(
                [
                    *{n for model in EVENT_MODELS.values() for n in model.model_fields},
                    *("shop", "note", "level", "copy", "model_fields", "nowhere"),
                ]
            ),
            max_size=6,
        ),
    )
    def test_matches_the_json_dump(self, event: InputEvent, wanted: frozenset[str]) -> None:
        expected = event.model_dump(mode="json", exclude_none=True, include=set(wanted))
        assert shown_fields(event, wanted) == expected

    def test_placeholders_that_name_no_field_show_nothing(self) -> None:
        event = TopUpEvent.model_validate(
            {
                "event_id": "e",
                "subscriber_id": "13800138001",
                "occurred_at": WHEN,
                "amount": "5",
                "channel": "app",
                "shop": "S1",
            }
        )
        shown = shown_fields(event, frozenset({"copy", "channel", "shop", "amount"}))
        assert shown == {"channel": "app", "shop": "S1", "amount": "5"}


param_values = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.sampled_from([0.0, -0.0, 1.0, 2.5, float("nan"), float("inf")])
    | st.sampled_from(["a", "b"])
    | st.lists(st.integers(0, 1), max_size=2)
)


class TestMomentOf:
    """A shared Moment is the one validating the same firing would make, to the JSON byte."""

    @settings(max_examples=400, deadline=None)
    @given(
        firings=st.lists(
            st.tuples(
                st.deferred(lambda: st.sampled_from(default_rules().rules)),
                st.sampled_from(["d", "e"]),
                st.dictionaries(st.sampled_from(["n", "m"]), param_values, max_size=2),
            ),
            min_size=1,
            max_size=12,
        )
    )
    def test_matches_a_freshly_validated_moment(
        self, firings: list[tuple[Any, str, dict[str, Any]]]
    ) -> None:
        for rule, description, params in firings:
            shared = moment_of(rule, description, params)
            fresh = _new_moment(rule, description, params)
            assert shared.model_dump_json() == fresh.model_dump_json()
            assert [type(v) for v in shared.params.values()] == [
                type(v) for v in fresh.params.values()
            ]
            assert repr(shared) == repr(fresh)

    def test_equal_values_of_other_types_are_not_merged(self) -> None:
        rule = default_rules().rules[0]
        assert moment_of(rule, "d", {"n": 1}).params["n"] == 1
        assert type(moment_of(rule, "d", {"n": 1.0}).params["n"]) is float
        assert moment_of(rule, "d", {"n": True}).params["n"] is True
        assert (
            moment_of(rule, "d", {"n": 0.0}).model_dump_json()
            != moment_of(rule, "d", {"n": -0.0}).model_dump_json()
        )
