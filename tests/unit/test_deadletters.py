"""Dead letters read back: headers parsed (or missing), selection, counts, and what the
current code makes of each (moments.deadletters)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
from collections import Counter
from dataclasses import replace
from typing import Any

import orjson
import pytest

from moments.deadletter_replay import (
    REPLAYED_HEADER,
    FirstCopies,
    _send,
    not_an_input_message,
    replay_headers,
    still_out_of_time,
)
from moments.deadletters import (
    NOT_AN_INPUT,
    UNKNOWN,
    DeadLetterEntry,
    Selection,
    Summary,
    entry_document,
    message_shape,
    parse_entry,
    parse_time,
    revalidate,
)
from moments.decoding import MAX_MESSAGE_BYTES, decode
from moments.models import EventType, TopUpEvent
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.settings import Settings
from sinks.deadletter import dead_letter_headers, dead_letter_message

from .fakes import FakeProducer, Sent, acknowledged

TOPICS = {f"p.telecom.{t.value}": t for t in EventType}
AT = dt.datetime(2026, 12, 4, 10, 30, tzinfo=dt.UTC)
SUB = "13800138000"


def _topup(**changes: object) -> bytes:
    event: dict[str, object] = {
        "event_id": "b-1",
        "subscriber_id": SUB,
        "occurred_at": "2026-12-04T10:00:00+08:00",
        "amount": "50",
        "channel": "app",
    }
    event.update(changes)
    return orjson.dumps({k: v for k, v in event.items() if v is not None})


def _entry(
    value: bytes | None,
    reason: RejectReason = RejectReason.INVALID_EVENT,
    topic: str = "p.telecom.topup",
    key: bytes | None = SUB.encode(),
    at: dt.datetime = AT,
    offset: int = 7,
) -> DeadLetterEntry:
    """An entry as `deadletter show` reads it: the worker's own headers, parsed."""
    letter = DeadLetter(RawRecord(topic, 1, 42, key, value), "topup", reason, "E", "why")
    return parse_entry(0, offset, key, value, dead_letter_headers(letter, at))


def test_the_headers_a_worker_writes_are_read_back() -> None:
    entry = _entry(b"{", RejectReason.INVALID_JSON)
    assert entry.origin_topic == "p.telecom.topup"
    assert (entry.origin_partition, entry.origin_offset) == (1, 42)
    assert (entry.reason, entry.error, entry.message) == ("invalid_json", "E", "why")
    assert entry.rejected_at == AT
    assert entry.coordinates == "0:7"


def test_a_record_without_headers_is_still_an_entry() -> None:
    entry = parse_entry(2, 5, None, b"x", [("__dlq.errors.partition", b"not a number")], 0)
    assert (entry.origin_topic, entry.reason, entry.message) == (UNKNOWN, UNKNOWN, UNKNOWN)
    assert entry.origin_partition is None
    # No timestamp header: the record's own time stands in.
    assert entry.rejected_at == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-04", dt.datetime(2026, 12, 4, tzinfo=dt.UTC)),
        ("2026-12-04T10:00+08:00", dt.datetime(2026, 12, 4, 2, tzinfo=dt.UTC)),
        ("yesterday", None),
        ("", None),
    ],
)
def test_times_are_iso_and_utc_unless_given(text: str, expected: dt.datetime | None) -> None:
    assert parse_time(text) == expected


def test_selection_by_reason_topic_and_time() -> None:
    early = _entry(b"{", RejectReason.INVALID_JSON, at=AT - dt.timedelta(hours=1))
    late = _entry(b"{}", topic="p.telecom.usage", at=AT + dt.timedelta(hours=1))
    no_time = parse_entry(0, 1, None, b"{", [("__dlq.errors.reason", b"invalid_json")])
    everything = Selection()
    assert all(everything.matches(e) for e in (early, late, no_time))
    assert Selection(reasons=frozenset({"invalid_json"})).matches(no_time)
    assert not Selection(reasons=frozenset({"invalid_json"})).matches(late)
    assert Selection(topics=frozenset({"p.telecom.usage"})).matches(late)
    assert not Selection(topics=frozenset({"p.telecom.usage"})).matches(early)
    since = Selection(since=AT)
    assert (since.matches(early), since.matches(late), since.matches(no_time)) == (
        False,
        True,
        False,
    )
    until = Selection(until=AT)  # before, not at
    assert (until.matches(early), until.matches(late)) == (True, False)
    assert not Selection(since=AT, until=AT + dt.timedelta(hours=1)).matches(late)


def test_summary_counts_by_topic_and_reason_with_the_errors_and_the_span() -> None:
    summary = Summary()
    for hours, reason in ((2, RejectReason.INVALID_JSON), (0, RejectReason.INVALID_JSON)):
        letter = DeadLetter(
            RawRecord("p.telecom.topup", 0, hours, None, b"{"), "topup", reason, "E", f"m{hours}"
        )
        when = AT + dt.timedelta(hours=hours)
        summary.add(parse_entry(0, hours, None, b"{", dead_letter_headers(letter, when)))
    summary.add(_entry(b"{}"))
    assert summary.total == 3
    group = summary.groups[("p.telecom.topup", "invalid_json")]
    assert (group.count, group.messages) == (2, Counter({"m2": 1, "m0": 1}))
    assert (group.first, group.last) == (AT, AT + dt.timedelta(hours=2))
    assert summary.groups[("p.telecom.topup", "invalid_event")].count == 1


def test_revalidation_is_the_workers_decode() -> None:
    # Refused by an older version, valid now: replayable.
    accepted = revalidate(_entry(_topup()), TOPICS)
    assert isinstance(accepted, TopUpEvent)
    assert accepted.event_id == "b-1"
    # Still wrong: the reason and message the worker would give now.
    again = revalidate(_entry(_topup(amount="-5")), TOPICS)
    assert isinstance(again, DeadLetter)
    assert again.reason is RejectReason.INVALID_EVENT
    assert "amount" in again.message
    mismatch = revalidate(_entry(_topup(), key=b"13900139000"), TOPICS)
    assert isinstance(mismatch, DeadLetter)
    assert mismatch.reason is RejectReason.KEY_MISMATCH
    assert mismatch.message == (
        f"record key '13900139000' differs from subscriber_id '{SUB}'; key by subscriber_id, "
        "exactly (UTF-8, no prefix, no spaces)"
    )
    stray = revalidate(_entry(_topup(), key=f"{SUB}\n".encode()), TOPICS)  # a newline
    assert isinstance(stray, DeadLetter)
    assert stray.message.startswith(f"record key '{SUB}\\n' differs")
    # A topic that is no input of this configuration (another prefix, a rename).
    assert revalidate(_entry(_topup(), topic="old.telecom.topup"), TOPICS) == NOT_AN_INPUT


def test_an_outcome_left_in_place_says_the_consumer_sends_it_again() -> None:
    """`replay --dry-run` listed an `unknown_task` outcome as "moments.task-outcomes is
    not an input topic of this configuration", a setting to fix, where outcomes are not
    replayed at all (new user's walk)."""
    outcomes = "moments.task-outcomes"
    said = not_an_input_message(outcomes, outcomes)
    assert said.startswith(f"{outcomes}: task outcomes are not replayed; the dispatch consumer")
    other = not_an_input_message("old.telecom.topup", outcomes)
    assert other.startswith("old.telecom.topup is not an input topic of this configuration")
    assert "MOMENTS_TOPIC_PREFIX" in other


def test_the_json_document_keeps_the_bytes() -> None:
    doc = entry_document(_entry(b'{"event_id": 1}'))
    assert doc["value"] == '{"event_id": 1}'
    assert (doc["topic"], doc["reason"], doc["deadletter"]) == (
        "p.telecom.topup",
        "invalid_event",
        "0:7",
    )
    assert doc["rejected_at"] == AT.isoformat()
    binary = entry_document(_entry(b"\xff\xfe"))
    assert binary["value"] is None
    assert base64.b64decode(binary["value_base64"]) == b"\xff\xfe"


def test_a_replay_cut_off_says_how_to_go_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    import moments.deadletter_cli as cli_module
    import moments.deadletter_replay as replay_module
    from moments.cli import main

    async def cut_off(*_args: object, **_kwargs: object) -> None:
        raise RedisConnectionError("Connection reset by peer")

    monkeypatch.setattr(cli_module, "_require", lambda _settings, redis: None)
    monkeypatch.setattr(replay_module, "replay", cut_off)
    assert main(["deadletter", "replay"]) == 1
    err = capsys.readouterr().err
    assert "replay stopped: ConnectionError: Connection reset by peer" in err
    assert "run the same command again" in err


def test_the_summary_shows_the_most_frequent_errors_of_a_reason_with_counts() -> None:
    """It showed the first error of each topic and reason: a producer's own dead letter
    hid behind others' of the same reason. The most frequent few, each with its count,
    and how many said something else, short."""
    from rich.console import Console

    from moments.deadletter_cli import _table

    summary = Summary()
    said = ["amount: m1"] * 5 + ["channel: m2"] * 3 + ["kind: m3"] * 2 + ["x: m4", "y: m5"]
    for offset, message in enumerate(said):
        letter = DeadLetter(
            RawRecord("telecom.topup", 0, offset, None, b"{}"),
            "topup",
            RejectReason.INVALID_EVENT,
            "ValidationError",
            message,
        )
        summary.add(parse_entry(0, offset, None, b"{}", dead_letter_headers(letter, AT)))
    out = io.StringIO()
    Console(file=out, width=200).print(_table("dead letters", summary))
    lines = [" ".join(line.split()) for line in out.getvalue().splitlines()]
    at = next(i for i, line in enumerate(lines) if "5 x amount: m1" in line)
    assert "3 x channel: m2" in lines[at + 1]
    assert "2 x kind: m3" in lines[at + 2]
    assert "2 x other message(s)" in lines[at + 3]
    assert "m4" not in out.getvalue()


def test_tables_piped_keep_topic_and_reason_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """Piped, rich drew 80 columns and cut the topic to `telecom.to…`."""
    from rich.table import Table

    from moments.deadletter_cli import _stdout

    table = Table()
    for name in (
        "topic",
        "reason",
        "count",
        "first (UTC)",
        "last (UTC)",
        "errors, most frequent first",
    ):
        table.add_column(name)
    table.add_row(
        "staging.telecom.topup",
        "invalid_event",
        "12",
        "2026-12-05 01:00",
        "2026-12-05 01:59",
        "amount: Input should be greater than 0; occurred_at: Input should be a valid datetime",
    )
    _stdout().print(table)
    out = capsys.readouterr().out
    assert "staging.telecom.topup" in out
    assert "invalid_event" in out


def test_a_replay_sends_back_a_future_event_once_its_time_came_and_never_a_late_one() -> None:
    now = dt.datetime.now(dt.UTC)

    def topup(when: dt.datetime) -> TopUpEvent:
        return TopUpEvent(
            event_id="t", subscriber_id=SUB, occurred_at=when, amount=50, channel="app"
        )

    hour = 3600
    late = _entry(b"{}", RejectReason.LATE)
    said = still_out_of_time(late, topup(now), hour)
    assert said == "late, and later still if sent back: not replayed"
    future = _entry(b"{}", RejectReason.FUTURE)
    ahead = still_out_of_time(future, topup(now + dt.timedelta(hours=2)), hour)
    assert ahead == "still dated ahead of the clock: replay it once its time has come"
    assert still_out_of_time(future, topup(now - dt.timedelta(minutes=1)), hour) is None
    assert still_out_of_time(_entry(b"{", RejectReason.INVALID_JSON), topup(now), hour) is None
    # With a lateness of 5 s the worker takes events at most 5 s ahead, not 15 minutes:
    # sent back 20 s early, one was refused again as future (SRE re-check).
    soon = topup(now + dt.timedelta(seconds=20))
    assert still_out_of_time(future, soon, hour) is None
    assert still_out_of_time(future, soon, 5) is not None


def test_the_table_masks_the_subscriber_numbers_an_error_quotes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tasks tail` masks them and only --json holds subscriber data (SRE drill: the
    key-mismatch error of `deadletter show` printed two numbers whole)."""
    from moments.deadletter_cli import _stdout, _table

    summary = Summary()
    message = "record key '13000000000' differs from subscriber_id '15100000049'; key by it"
    letter = DeadLetter(
        RawRecord("p.telecom.topup", 0, 1, b"13000000000", b"{}"),
        "topup",
        RejectReason.KEY_MISMATCH,
        "KeyMismatch",
        message,
    )
    summary.add(parse_entry(0, 1, b"13000000000", b"{}", dead_letter_headers(letter, AT)))
    quoting = replace(letter, reason=RejectReason.INVALID_EVENT, message=f"x: {message}")
    summary.add(parse_entry(0, 2, b"13000000000", b"{}", dead_letter_headers(quoting, AT)))
    _stdout().print(_table("dead letters", summary))
    out = capsys.readouterr().out
    assert "record key '…' differs from subscriber_id '…'" in out  # counted by its shape
    assert "x: record key '130****0000' differs from subscriber_id '151****0049'" in out
    assert "13000000000" not in out
    assert "15100000049" not in out


def test_the_table_masks_a_quoted_number_of_over_20_digits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A key over the contract's 20 digits (a number with junk run into it) was printed
    whole: only quoted numbers of 5 to 20 digits were masked, as the log masks any."""
    from moments.deadletter_cli import _stdout, _table

    key = "1380013800113800138001"
    message = f"record key '{key}' differs from subscriber_id '13800138001'; key by it"
    letter = DeadLetter(
        RawRecord("p.telecom.topup", 0, 1, key.encode(), b"{}"),
        "topup",
        RejectReason.INVALID_EVENT,
        "KeyMismatch",
        f"x: {message}",
    )
    summary = Summary()
    summary.add(parse_entry(0, 1, key.encode(), b"{}", dead_letter_headers(letter, AT)))
    _stdout().print(_table("dead letters", summary))
    out = capsys.readouterr().out
    assert "record key '138***************8001'" in out
    assert key not in out


def test_a_cut_dead_letter_is_never_replayed() -> None:
    """A `too_large` record's dead letter holds its first 64 KiB: a valid event padded
    past the limit reads as a valid event once cut, and a replay would have sent it."""
    padded = _topup() + b" " * (MAX_MESSAGE_BYTES + 100)
    letter = DeadLetter(
        RawRecord("p.telecom.topup", 1, 42, SUB.encode(), padded),
        "topup",
        RejectReason.TOO_LARGE,
        "TooLarge",
        "too big",
    )
    _, key, value, headers = dead_letter_message("dlq", letter, AT)
    entry = parse_entry(0, 7, key, value, headers or ())
    assert entry.original_size == len(padded)
    assert isinstance(decode(letter.record, EventType.TOPUP), DeadLetter)  # whole: refused
    again = revalidate(entry, TOPICS)
    assert isinstance(again, DeadLetter)
    assert again.reason is RejectReason.TOO_LARGE
    assert again.message.startswith(f"the dead letter holds 65,536 of the record's {len(padded):,}")
    assert entry_document(entry)["original_size"] == len(padded)


def test_the_original_headers_and_time_are_read_back_and_a_replay_restores_them() -> None:
    record = RawRecord(
        "p.telecom.topup",
        1,
        42,
        SUB.encode(),
        _topup(),
        1_764_900_000_412,
        (("traceparent", b"00-abc-01"), (REPLAYED_HEADER, b"dlq:0:3"), ("null", None)),
    )
    letter = DeadLetter(record, "topup", RejectReason.INVALID_EVENT, "E", "then")
    _, key, value, headers = dead_letter_message("dlq", letter, AT)
    entry = parse_entry(0, 7, key, value, headers or ())
    assert entry.headers == record.headers
    assert entry.original_timestamp == dt.datetime(2025, 12, 5, 2, 0, 0, 412000, tzinfo=dt.UTC)
    assert (entry.reason, entry.rejected_at) == ("invalid_event", AT)
    assert replay_headers(entry, "dlq") == [
        ("traceparent", b"00-abc-01"),
        ("null", None),
        (REPLAYED_HEADER, b"dlq:0:7"),  # the last replay's, not the first's
    ]
    doc = entry_document(entry)
    assert doc["headers"][0] == ["traceparent", "00-abc-01"]
    assert doc["original_timestamp"] == "2025-12-05T02:00:00.412000+00:00"


def test_the_summary_table_shows_a_producers_text_as_text_not_markup() -> None:
    """A key "[link=http://ev.il]PAY[/link]" quoted in a message made a clickable link in
    `deadletter show` (security re-check)."""

    from rich.console import Console

    from moments.deadletter_cli import _table
    from moments.deadletters import Group, Summary

    summary = Summary()
    summary.groups[("telecom.topup", "key_mismatch")] = Group(
        count=1, messages=Counter({"record key '[blink][link=http://ev.il]PAY[/link]' differs": 1})
    )
    out = io.StringIO()
    Console(file=out, width=300, force_terminal=True).print(_table("dead letters", summary))
    text = out.getvalue()
    assert "[blink][link=http://ev.il]PAY[/link]" in text
    assert "\x1b]8;" not in text  # no hyperlink
    assert "\x1b[5m" not in text  # no blink


def test_each_original_record_is_replayed_once_across_batches() -> None:
    """Copies (the same origin topic, partition and offset, dead-lettered again by a
    worker that read the record twice) are told apart from the first, in and across the
    replay's batches; a dead letter without its origin's coordinates is its own."""
    first = _entry(_topup(), offset=7)
    copy = _entry(_topup(), offset=9)  # the same original (topic, partition 1, offset 42)
    other = replace(first, offset=8, origin_offset=43)
    unknown = replace(first, offset=10, origin_partition=None, origin_offset=None)
    originals = FirstCopies()
    assert originals.split([first, other]) == ([first, other], [])
    assert originals.split([copy, unknown, unknown]) == ([unknown, unknown], [copy])
    assert originals.split([replace(other, origin_topic="p.telecom.usage")])[1] == []


class _Recording(FakeProducer):
    """A producer that keeps what it was asked to send, acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, int | None]] = []

    async def take(self, record: Sent) -> asyncio.Future[None]:
        self.sent.append((record.topic, record.value, record.timestamp_ms))
        return acknowledged()


@pytest.mark.parametrize("value", [None, b"null", b""], ids=["tombstone", "json_null", "empty"])
async def test_a_replayed_deletion_keeps_the_time_its_subscriber_was_erased(
    value: bytes | None,
) -> None:
    """A profile deletion's Kafka timestamp is when its subscriber was erased
    (docs/producing-events.md, "Deleting a subscriber"): a misplaced one sent back days
    later went with the replay's time, so the number's next holder's events of the days
    between, read after it, were dropped as the erased person's. An event goes with the
    producer's time: a worker reads its time from the value."""
    erased = 1_764_900_000_412  # 2025-12-05T02:00:00.412Z
    profile = "p.telecom.profile"
    tombstone = RawRecord(profile, 1, 42, SUB.encode(), value, erased)
    letter = DeadLetter(tombstone, "profile", RejectReason.MISPLACED, "Misplaced", "p 1")
    _, key, dead_value, headers = dead_letter_message("dlq", letter, AT)
    deletion = parse_entry(0, 7, key, dead_value, headers or ())
    event = RawRecord("p.telecom.topup", 1, 43, SUB.encode(), _topup(), erased)
    refused = DeadLetter(event, "topup", RejectReason.FUTURE, "OutOfTime", "ahead")
    _, key, dead_value, headers = dead_letter_message("dlq", refused, AT)
    topup = parse_entry(0, 8, key, dead_value, headers or ())
    producer = _Recording()
    await _send(producer, Settings(), [deletion, topup])
    assert producer.sent == [(profile, value, erased), ("p.telecom.topup", _topup(), None)]


class TestAnUnknownTopic:
    """`moments deadletter show --topic billing` said "no dead letters match", and the
    on-call took the producer's topic for clean: a `--topic` that is neither an event type
    nor a topic of this configuration is named, with what it could be."""

    @staticmethod
    def show(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
        import moments.deadletter_cli as cli_module
        import moments.deadletter_replay as replay_module
        from moments.cli import main
        from moments.deadletters import Summary

        async def nothing(*_args: object, **_kwargs: object) -> Summary:
            return Summary()

        monkeypatch.setattr(cli_module, "_require", lambda _settings, redis: None)
        monkeypatch.setattr(replay_module, "summarize", nothing)
        assert main(["deadletter", "show", *args]) == 0

    def test_an_unknown_topic_is_named_with_the_choices(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.show(monkeypatch, "--topic", "billing")
        err = " ".join(capsys.readouterr().err.split())
        assert "no dead letters match" in err
        assert "'billing' is no topic this configuration reads" in err, err
        assert "an event type (topup, roaming," in err, err
        inputs = err.split("an input topic (", 1)[1].split(")", 1)[0]
        assert inputs.startswith("telecom.topup, telecom.roaming,"), err
        # The task outcomes are read, and have dead letters, but are no input topic.
        assert "task-outcomes" not in inputs, err
        assert err.endswith("or the task outcomes' (moments.task-outcomes)"), err

    def test_a_known_one_says_only_that_none_match(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.show(monkeypatch, "--topic", "topup", "--topic", "telecom.usage")
        err = " ".join(capsys.readouterr().err.split())
        assert err == "no dead letters match", err

    @pytest.mark.parametrize("action", ["show", "replay"])
    def test_the_help_tells_the_task_outcomes_from_the_input_topics(
        self, action: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`show` counted "by input topic" and `replay` sent "to their input topic", though
        the task outcomes' topic is read, counted, and never replayed."""
        from moments.cli import main

        with pytest.raises(SystemExit):
            main(["deadletter", action, "--help"])
        said = " ".join(capsys.readouterr().out.split())
        assert "or the task outcomes' topic (repeatable)" in said  # --topic's choices
        if action == "show":
            assert "by the topic they were refused from (an input topic, or the task " in said
        else:
            assert "(task outcomes are not replayed: the dispatch consumer sends them " in said


def test_show_says_how_many_dead_letters_are_copies_of_a_record_counted_before(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker that reads a record again (it ended without its last commit) refuses it
    again: a second dead letter of the same original. `show` counted both with nothing to
    tell them from two refused events; it now says how many are copies, in a batch and
    across the read's batches, as a replay tells them apart."""
    import moments.deadletter_cli as cli_module
    import moments.deadletter_replay as replay_module
    from moments.cli import main

    first = _entry(_topup(), offset=7)
    copy = _entry(_topup(), offset=9)  # the same original (topic, partition 1, offset 42)
    other = replace(first, offset=8, origin_offset=43)

    async def read(*_args: object) -> Any:
        yield [first, other, copy]
        yield [replace(copy, offset=11)]

    monkeypatch.setattr(cli_module, "_require", lambda _settings, redis: None)
    monkeypatch.setattr(replay_module, "dead_letters", read)
    assert main(["deadletter", "show"]) == 0
    out = capsys.readouterr().out
    assert "4 dead letters" in out
    assert "2 of them copies of a record counted before" in out


def test_show_says_one_dead_letter_in_the_singular(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One dead letter was titled "1 dead letters"."""
    import moments.deadletter_cli as cli_module
    import moments.deadletter_replay as replay_module
    from moments.cli import main

    async def read(*_args: object) -> Any:
        yield [_entry(_topup(), offset=7)]

    monkeypatch.setattr(cli_module, "_require", lambda _settings, redis: None)
    monkeypatch.setattr(replay_module, "dead_letters", read)
    assert main(["deadletter", "show"]) == 0
    out = capsys.readouterr().out
    assert "1 dead letter" in out
    assert "1 dead letters" not in out


class TestKeyMismatchShapes:
    """`key_mismatch` messages quote the record's key and its subscriber id, so each
    producer's dead letters were as many one-off rows as keys, and the three a summary
    row shows hid the rest under "other message(s)": they are counted by the message's
    shape, the quoted values left out (the keys stay in --json)."""

    @staticmethod
    def _summary(letters: list[tuple[bytes, str, bytes | None]]) -> Summary:
        """A summary of the dead letters the worker's decode gives for (key, subscriber
        id, value) on the top-up topic; a value of None: a profile tombstone."""
        summary = Summary()
        for offset, (key, sub, value) in enumerate(letters):
            topic, kind = ("telecom.profile", EventType.PROFILE)
            if value is not None:
                topic, kind = ("telecom.topup", EventType.TOPUP)
            letter = decode(RawRecord(topic, 0, offset, key, value), kind)
            assert isinstance(letter, DeadLetter), sub
            assert letter.reason is RejectReason.KEY_MISMATCH
            headers = dead_letter_headers(letter, AT)
            summary.add(parse_entry(0, offset, key, value, headers))
        return summary

    def test_key_mismatches_are_counted_by_shape_not_by_key(self) -> None:
        letters: list[tuple[bytes, str, bytes | None]] = [
            (f"1390013900{i}".encode(), f"1380013800{i}", _topup(subscriber_id=f"1380013800{i}"))
            for i in range(5)
        ]
        letters += [  # a JSON key serializer's: another shape, its own row
            (f'"1380013800{i}"'.encode(), f"1380013800{i}", _topup(subscriber_id=f"1380013800{i}"))
            for i in range(2)
        ]
        letters += [(b"abc", "", None), (b"xyz", "", None)]  # tombstones keyed by no id
        summary = self._summary(letters)
        topup = summary.groups[("telecom.topup", "key_mismatch")].messages
        assert topup == Counter(
            {
                "record key '…' differs from subscriber_id '…'; key by subscriber_id, exactly "
                "(UTF-8, no prefix, no spaces)": 5,
                "record key '…' differs from subscriber_id '…'; key by subscriber_id, exactly "
                "(UTF-8, no prefix, no spaces): it is '…' as a JSON string, in quotes (a JSON "
                "key serializer): serialize the key as plain text (StringSerializer, "
                "str.encode)": 2,
            }
        )
        profile = summary.groups[("telecom.profile", "key_mismatch")].messages
        assert list(profile.values()) == [2]
        assert next(iter(profile)).startswith("a profile tombstone keyed '…' forgets nobody")

    def test_the_json_document_keeps_the_message_whole(self) -> None:
        key, value = b"13900139000", _topup()
        letter = decode(RawRecord("telecom.topup", 0, 1, key, value), EventType.TOPUP)
        assert isinstance(letter, DeadLetter)
        entry = parse_entry(0, 1, key, value, dead_letter_headers(letter, AT))
        assert "'13900139000'" in str(entry_document(entry)["message"])


def test_a_future_dead_letter_still_ahead_says_from_when_it_can_be_replayed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`replay` said "replay it once its time has come" without saying when (producer
    walk-through): each row of the still-refused table says from when its dead letters
    can go back (the earliest, and the last one's), the messages still counted as one."""
    from moments.deadletter_cli import _stdout, _table
    from moments.deadletter_replay import replayable_from

    def topup(when: dt.datetime) -> TopUpEvent:
        return TopUpEvent(
            event_id="t", subscriber_id=SUB, occurred_at=when, amount=50, channel="app"
        )

    soon = topup(dt.datetime(2026, 12, 7, 11, 26, 58, 300_000, tzinfo=dt.UTC))
    # the worker takes it 900 s before its time (the lateness caps that), to the second up
    assert replayable_from(soon, 3600) == dt.datetime(2026, 12, 7, 11, 11, 59, tzinfo=dt.UTC)
    assert replayable_from(soon, 5) == dt.datetime(2026, 12, 7, 11, 26, 54, tzinfo=dt.UTC)
    later = topup(dt.datetime(2026, 12, 7, 19, 6, 58, tzinfo=dt.UTC))
    future = _entry(b"{}", RejectReason.FUTURE)
    summary = Summary()
    for event in (later, soon, later):
        why = still_out_of_time(
            future, topup(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)), 3600
        )
        assert why is not None
        summary.add(replace(future, message=why), due=replayable_from(event, 3600))
    summary.add(_entry(b"{", RejectReason.INVALID_JSON))  # no time to wait for
    [(_, ahead), (_, invalid)] = summary.groups.items()
    assert len(ahead.messages) == 1  # one message, counted 3 times: the grouping holds
    assert (ahead.due, ahead.due_last) == (
        dt.datetime(2026, 12, 7, 11, 11, 59, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 7, 18, 51, 58, tzinfo=dt.UTC),
    )
    assert (invalid.due, invalid.due_last) == (None, None)
    _stdout().print(_table("still refused", summary))
    out = capsys.readouterr().out
    assert "3 x still dated ahead of the clock: replay it once its time has come" in out
    assert (
        "replayable from 2026-12-07 11:11:59 UTC, the last of them from 2026-12-07 "
        "18:51:58 UTC" in out
    )
    assert out.count("replayable from") == 1


def test_show_counts_the_dead_letters_of_one_clock_mistake_as_one_message() -> None:
    """A producer writing local time with `Z` made each `future` dead letter its own
    message (its time and its seconds ahead): `show` listed three and "N x other
    message(s)" (producer walk-through). Times are shaped away and the seconds ahead or
    behind rounded to hours, which still tell an offset mistake (8 h) from a clock off."""
    from moments.refusals import stale_profile, too_far_ahead, too_late
    from moments.sources import SOURCE_CODES
    from moments.state import SubscriberState

    record = RawRecord("p.telecom.topup", 0, 1, SUB.encode(), b"{}")
    now = int(AT.timestamp())
    summary = Summary()

    def add(letter: DeadLetter) -> None:
        summary.add(parse_entry(0, 1, letter.record.key, b"{}", dead_letter_headers(letter, AT)))

    for ahead in (28_800, 28_799, 28_830, 1_200, 1_500):
        add(too_far_ahead(record, "topup", now + ahead, now + ahead % 7, 900))
    state = SubscriberState()
    for behind in (7_300, 7_000):
        state.seen[SOURCE_CODES[EventType.TOPUP]] = now + behind % 11
        add(too_late(record, EventType.TOPUP, now - behind, state, 3600))
    for at in (now, now - 60):
        state.seen[SOURCE_CODES[EventType.PROFILE]] = now + at % 13
        add(stale_profile(record, at, state))
    future = summary.groups[("p.telecom.topup", "future")].messages
    assert future == Counter(
        {
            "occurred_at … is about 8 h ahead of the worker's clock (…; at most 900 s): not "
            "applied. Check the producer's clock and offset (local time written with Z?)": 3,
            "occurred_at … is between 15 min and an hour ahead of the worker's clock (…; "
            "at most 900 s): not applied. Check the producer's clock and offset (local time "
            "written with Z?)": 2,
        }
    )
    late = summary.groups[("p.telecom.topup", "late")].messages
    assert len(late) == 2, late  # an event 2 h behind, and profile updates changing nothing
    assert "occurred_at … is about 2 h older than this subscriber's latest topup event (…; " in (
        next(iter(late))
    )


def test_an_event_under_an_hour_ahead_is_said_past_the_limit_it_broke() -> None:
    """An event 20 minutes ahead read "less than an hour ahead (at most 900 s)", as if one
    a minute ahead was refused too: under an hour, the range starts at the limit."""
    from moments.refusals import too_far_ahead

    record = RawRecord("p.telecom.topup", 0, 1, SUB.encode(), b"{}")
    now = int(AT.timestamp())
    said = too_far_ahead(record, "topup", now + 1_200, now, 900).message
    assert message_shape("future", said).startswith(
        "occurred_at … is between 15 min and an hour ahead of the worker's clock (…; "
    )
    said = too_far_ahead(record, "topup", now + 1_200, now, 90).message
    assert "is between 90 s and an hour ahead" in message_shape("future", said)


def test_times_of_one_wrong_form_are_one_message_of_deadletter_show() -> None:
    """Dead letters of a producer that writes RFC 2822 dates are one row, naming the fix:
    the message names the form, not the time."""
    summary = Summary()
    for n, written in enumerate(
        ["Mon, 07 Dec 2026 10:00:00 +0800", "Tue, 8 Dec 2026 09:30:15 GMT"]
    ):
        value = _topup(occurred_at=written)
        letter = decode(RawRecord("p.telecom.topup", 1, n, SUB.encode(), value), EventType.TOPUP)
        assert isinstance(letter, DeadLetter)
        summary.add(parse_entry(0, n, SUB.encode(), value, dead_letter_headers(letter, AT)))
    (group,) = summary.groups.values()
    ((message, count),) = group.messages.items()
    assert count == 2
    assert message.startswith("occurred_at: write RFC 3339, not an RFC 2822"), message
