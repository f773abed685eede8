"""A text field holding a control or invisible format character, a country in lower
case and an IMEI with dashes are told what to change, not the pattern they missed: it
was `String should match pattern '^[^\\x00-\\x1f\\x7f-\\x9f\\u00ad...]*$'`, 120
characters of regex for a trailing newline or a tab a CRM export padded a column with
(producer re-check). The text itself is never quoted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moments.decoding import decode
from moments.models import EVENT_MODELS, EventType
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.schemas import example

from .catalogs import default_rules


def refused(event_type: EventType, **change: Any) -> str:
    value = {**example(EVENT_MODELS[event_type].__name__), **change}
    record = RawRecord("t", 0, 0, value["subscriber_id"].encode(), json.dumps(value).encode())
    dead = decode(record, event_type)
    assert isinstance(dead, DeadLetter)
    assert dead.reason is RejectReason.INVALID_EVENT
    assert "pattern" not in dead.message
    return dead.message


REMOVE = (
    "text takes no control or invisible format characters (newlines, tabs, zero-width "
    "spaces, direction marks), which would reach an SMS, a log line or a terminal: remove it"
)


@pytest.mark.parametrize(
    ("event_type", "field", "text", "said"),
    [
        (EventType.TOPUP, "channel", "app\n", "U+000A (a control character) at character 4"),
        (EventType.TOPUP, "event_id", "e\u200b1", "U+200B (ZERO WIDTH SPACE) at character 2"),
        (
            EventType.COMPLAINT,
            "region",
            "N\u202eJ",
            "U+202E (RIGHT-TO-LEFT OVERRIDE) at character 2",
        ),
        (EventType.PROFILE, "tier", "gold\t", "U+0009 (a control character) at character 5"),
    ],
)
def test_a_control_or_format_character_is_named_by_its_code_point(
    event_type: EventType, field: str, text: str, said: str
) -> None:
    assert refused(event_type, **{field: text}) == f"{field}: {said}: {REMOVE}"


def test_an_opt_out_is_told_its_character_not_the_four_channels() -> None:
    """Any channel is taken in `opt_out` (moments ignores those it does not send on): one
    holding a control character was told "Input should be 'sms', 'outbound_call',
    'manager' or 'app_push'"."""
    said = refused(EventType.PROFILE, opt_out=["sms", "e\x07mail"])
    assert said == f"opt_out.1: U+0007 (a control character) at character 2: {REMOVE}"


@pytest.mark.parametrize(
    ("event_type", "change", "said"),
    [
        (
            EventType.ROAMING,
            {"country": "jp"},
            "country: write the ISO 3166-1 alpha-2 code in capitals: JP",
        ),
        (
            EventType.USAGE,
            {"imei": "35-693803-564380-9"},
            "imei: write the IMEI as 14 to 16 digits, no spaces or dashes (e.g. 356938035643809)",
        ),
    ],
)
def test_a_short_pattern_says_what_to_write(
    event_type: EventType, change: dict[str, str], said: str
) -> None:
    assert refused(event_type, **change) == said


@pytest.mark.parametrize(
    ("event_type", "change", "said"),
    [
        (
            EventType.USAGE,
            {"quantity": "1000"},
            'quantity: write a JSON number, not text (e.g. 1000, not "1000")',
        ),
        (
            EventType.USAGE,
            {"imei": 356938035643809},
            "imei: write it as a JSON string (in quotes), not a number",
        ),
        (
            EventType.TOPUP,
            {"event_id": 12345},
            "event_id: write it as a JSON string (in quotes), not a number",
        ),
        (
            EventType.PROFILE,
            {"joined_on": 20200101},
            'joined_on: write a real day as YYYY-MM-DD (e.g. 2027-01-31), or "" to clear it',
        ),
    ],
)
def test_a_number_as_text_or_text_as_a_number_says_which_to_write(
    event_type: EventType, change: dict[str, Any], said: str
) -> None:
    """ "1000" was told "Input should be a valid number", which it seems to be, as a
    severity of "1" was told it should be an integer."""
    assert refused(event_type, **change) == said


BLANK_ID = (
    "spaces only, no id: write the record's own id (an id of spaces is one id for every "
    "record: each after the first would be skipped as sent again)"
)


@pytest.mark.parametrize(
    ("event_type", "field", "blank"),
    [
        (EventType.USAGE, "event_id", " "),
        (EventType.TOPUP, "event_id", "\u3000\u3000"),
        (EventType.PROFILE, "event_id", "\xa0"),
        (EventType.COMPLAINT, "complaint_id", "    "),
    ],
)
def test_an_id_of_spaces_only_is_refused(event_type: EventType, field: str, blank: str) -> None:
    """An `event_id` of spaces (a padded CHAR column) was taken, and all such ids were one:
    a subscriber's events after the first were skipped as sent again, with no dead letter
    (and blank complaint ids made one complaint of every ticket)."""
    assert refused(event_type, **{field: blank}) == f"{field}: {BLANK_ID}"


def test_an_id_with_spaces_in_it_is_an_id() -> None:
    """Only an id of nothing but spaces is refused; one holding a control character is
    told which, as any text."""
    value = {**example("UsageEvent"), "event_id": " cdr 1 "}
    record = RawRecord("t", 0, 0, value["subscriber_id"].encode(), json.dumps(value).encode())
    assert not isinstance(decode(record, EventType.USAGE), DeadLetter)
    said = refused(EventType.USAGE, event_id=" \t ")
    assert said == f"event_id: U+0009 (a control character) at character 2: {REMOVE}"


def test_events_of_blank_ids_are_not_skipped_as_sent_again() -> None:
    """Three calls to a competitor's hotline, each with the id " ": the first was applied
    and the two others skipped as replays of it, silently."""
    from moments.pipeline import run_pipeline

    records = [
        RawRecord(
            "usage",
            0,
            minute,
            b"13800138000",
            json.dumps(
                {
                    "event_id": " ",
                    "subscriber_id": "13800138000",
                    "occurred_at": f"2026-11-22T10:0{minute}:00+08:00",
                    "kind": "voice",
                    "quantity": 60,
                    "counterparty": "10010",
                    "direction": "out",
                }
            ).encode(),
        )
        for minute in range(3)
    ]
    result = run_pipeline(records, default_rules())
    assert [d.reason for d in result.dead_letters] == [RejectReason.INVALID_EVENT] * 3


def test_a_top_up_channel_of_spaces_only_is_refused() -> None:
    """A top-up's `channel` is required: one of spaces (a padded CHAR column) was taken as a
    channel, and reached the customer's SMS as "First top-up by    : thanks, ..."."""
    said = refused(EventType.TOPUP, channel="   ")
    assert said == "channel: spaces only: write its value (it is required; a blank one is none)"


def _topups(channels: list[str]) -> list[RawRecord]:
    """One subscriber's top-ups a minute apart, by each of `channels` as written."""
    return [
        RawRecord(
            "topup",
            0,
            number,
            b"13800138000",
            json.dumps(
                {
                    "event_id": f"t{number}",
                    "subscriber_id": "13800138000",
                    "occurred_at": f"2026-11-22T10:0{number}:00+08:00",
                    "amount": 50,
                    "channel": channel,
                }
            ).encode(),
        )
        for number, channel in enumerate(channels)
    ]


def test_a_padded_top_up_channel_is_the_channel_it_names() -> None:
    """A padded CHAR column's `"app   "` was a channel of its own: a subscriber's first
    top-up by `app` was followed by a second "first top-up" task when a top-up came by
    `"app   "`, and its SMS read "First top-up by app   :". Taken without the spaces
    around it, as a region is."""
    from moments.pipeline import run_pipeline

    records = _topups(["app", "app   ", " app"])
    result = run_pipeline(records, default_rules())
    assert not result.dead_letters
    firsts = [t for t in result.tasks if t.moment.rule_id == "first_topup_channel"]
    assert [t.moment.description.split(":")[0] for t in firsts] == ["First top-up by app"]


def test_a_top_up_channel_in_capitals_is_the_channel_it_names() -> None:
    """`APP` from one billing system and `app` from another were channels of their own:
    a subscriber's first top-up by `APP` was followed by a second "first top-up" task (an
    SMS "First top-up by app: thanks, ...") and a third for `App`. Taken in lowercase, as
    the contract writes the channels (`app`, `bank`, `card`, `store`, `auto`)."""
    from moments.models import TopUpEvent
    from moments.pipeline import run_pipeline

    records = _topups(["APP", "app", " App "])
    result = run_pipeline(records, default_rules())
    assert not result.dead_letters
    firsts = [t for t in result.tasks if t.moment.rule_id == "first_topup_channel"]
    assert [t.moment.description.split(":")[0] for t in firsts] == ["First top-up by app"]
    assert TopUpEvent.model_validate_json(records[0].value or b"").channel == "app"


def _topup(number: int, channel: str) -> RawRecord:
    value = {
        "event_id": f"t{number}",
        "subscriber_id": "13800138000",
        "occurred_at": f"2026-11-22T10:0{number}:00+08:00",
        "amount": 50,
        "channel": channel,
    }
    return RawRecord("topup", 0, number, b"13800138000", json.dumps(value).encode())


def test_a_channel_seen_in_capitals_before_the_upgrade_is_no_first_time_after_it() -> None:
    """A worker before the channel was taken in lowercase kept the first-time key of the
    channel as written (`...:APP`); after the upgrade the same subscriber's next `APP`
    top-up reads `app`, a key never seen, and made a second "First top-up by app" SMS
    (its task id of occurrence `app`, not `APP`: no dispatch dedup caught it), and a
    `changed: channel` rule saw the channel change from APP to app."""
    from moments.pipeline import PipelineResult, run_pipeline
    from moments.state import SubscriberState
    from rules.catalog import load_texts

    changed = load_texts(
        [
            (
                "switch.yaml",
                """
rules:
  - id: channel_switch
    description: The top-up channel changed
    on: [topup]
    condition: {changed: channel}
    task:
      family: first_time
      type: channel_switch
      channel: sms
      priority: 4
      action: channel_switch
      ttl: 72h
      description: "Top-up channel now {channel}"
""",
            )
        ]
    )
    for rules, rule_id in ((default_rules(), "first_topup_channel"), (changed, "channel_switch")):
        before = run_pipeline([_topup(0, "APP"), _topup(1, "APP")], rules)
        assert not before.dead_letters
        # What the version before the upgrade stored: the channel as written.
        state = SubscriberState.from_bytes(before.store.data["13800138000"])
        state.first_seen = {k.replace(":app", ":APP"): v for k, v in state.first_seen.items()}
        state.last = {k: "APP" if v == "app" else v for k, v in state.last.items()}
        before.store = type(before.store)()
        before.store.data["13800138000"] = state.to_bytes()
        after = run_pipeline(
            [_topup(2, "APP")],
            rules,
            result=PipelineResult(store=before.store, watermark=before.watermark),
        )
        assert not after.dead_letters
        assert [t.moment.rule_id for t in after.tasks if t.moment.rule_id == rule_id] == []


@pytest.mark.parametrize(
    ("event_type", "change", "said"),
    [
        (EventType.USAGE, {"imei": ["356938035643809"]}, "imei: write it as a JSON string "),
        (EventType.TOPUP, {"region": {"name": "NJ"}}, "region: write it as a JSON string "),
        (EventType.TOPUP, {"event_id": True}, "event_id: write it as a JSON string "),
        (EventType.TOPUP, {"occurred_at": []}, "occurred_at: a time is text: write it in RFC"),
    ],
)
def test_a_list_an_object_or_a_boolean_where_text_belongs_says_what_to_write(
    event_type: EventType, change: dict[str, Any], said: str
) -> None:
    """Each was told pydantic's "Input should be a valid string", naming no fix (an
    exporter nesting a field, a serializer writing a flag where an id belongs)."""
    message = refused(event_type, **change)
    assert message.startswith(said)
    assert "Input should" not in message
