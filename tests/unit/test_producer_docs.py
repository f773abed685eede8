"""docs/producing-events.md states the limits a producer's records are held to: the page
follows the code's figures (a change of either without the other fails here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import kafka
import pytest

from moments.decoding import MAX_MESSAGE_BYTES, decode
from moments.enums import EventType
from moments.models import EVENT_MODELS, MONEY_DIGITS, ProfileEvent
from moments.pipeline import run_pipeline
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.refusals import LATENESS, MAX_FUTURE
from moments.settings import Topics
from moments.state import RECENT_EVENT_IDS, RECENT_EVENT_IDS_ELSE
from rules.catalog import load_rules

PAGE = (Path(__file__).parents[2] / "docs" / "producing-events.md").read_text()


def test_the_figures_are_the_codes() -> None:
    assert f"at most **{MAX_MESSAGE_BYTES // 1024} KiB**" in PAGE
    assert f"**{int(MAX_FUTURE.total_seconds() // 60)} minutes**" in PAGE
    assert f"**{int(LATENESS.total_seconds() // 3600)} hour**" in PAGE
    assert f"the last {RECENT_EVENT_IDS['u']} usage ids" in PAGE
    assert f"the last {RECENT_EVENT_IDS_ELSE} of each other topic" in PAGE
    assert MONEY_DIGITS == 9  # "below a billion yuan"
    assert "below a billion yuan" in PAGE
    for name in ("quiet_hours", "opt_out"):
        assert ProfileEvent.model_fields[name].metadata[0].max_length == 8
    assert "at most 8 entries" in PAGE


def test_every_reason_of_an_input_event_is_named() -> None:
    outcomes_only = {RejectReason.SUBSCRIBER_MISMATCH, RejectReason.UNKNOWN_TASK}  # consuming-tasks
    for reason in set(RejectReason) - outcomes_only:
        assert f"`{reason.value}`" in PAGE


class RecordingProducer:
    """Stands in for kafka-python's KafkaProducer in the page's example: keeps what it sends."""

    sent: ClassVar[list[tuple[str, bytes | None, bytes | None]]] = []

    def __init__(self, **config: object) -> None:
        self.config = config

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> None:
        RecordingProducer.sent.append((topic, key, value))

    def flush(self) -> None:
        pass


def first_record_section() -> str:
    match = re.search(r"^## Sending a first record\n(.*?)(?=^## )", PAGE, re.S | re.M)
    assert match is not None, "no section 'Sending a first record'"
    return match.group(1)


def first_records_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[str, bytes | None, bytes | None]]:
    """What the section's example sends, in its order: (topic, key, value)."""
    (code,) = re.findall(r"```python\n(.*?)```", first_record_section(), re.S)
    monkeypatch.setattr(kafka, "KafkaProducer", RecordingProducer)
    monkeypatch.setattr(RecordingProducer, "sent", [])
    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    exec(compile(code, "producing-events.md", "exec"), {})  # noqa: S102 (the page's own code)
    return RecordingProducer.sent


def test_the_first_records_example_is_taken_but_its_malformed_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A producer's first hour (review): the page said what a record must be but not how to
    send one to `moments run`; its example now does, and each record is judged here by the
    worker's own decoding, the malformed one with the message the page quotes."""
    section = first_record_section()
    first_records_sent(monkeypatch)
    types = {getattr(Topics(), t.value): t for t in EventType}
    verdicts = [
        decode(RawRecord(topic, 0, offset, key, value), types[topic])
        for offset, (topic, key, value) in enumerate(RecordingProducer.sent)
    ]
    taken = {t for t, model in EVENT_MODELS.items() for v in verdicts if isinstance(v, model)}
    assert taken == set(EventType)
    (refused,) = [v for v in verdicts if isinstance(v, DeadLetter)]
    quoted = re.search(r"prints, among .*?`(occurred_at: .*?)`", section, re.S)
    assert quoted is not None
    assert refused.reason is RejectReason.INVALID_EVENT
    assert refused.message == " ".join(quoted.group(1).split())


def test_the_first_records_tasks_are_the_ones_the_page_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new user's first hour (review): the page promised "the manager's call about the
    hotline with the complaint merged into it", but the hotline call is a sales contact,
    which an open complaint drops: a worker that read the complaint first (as sent, or
    topics read side by side) printed a complaint call and no manager's call. Both orders
    are run through the packaged catalog here, and the page names what each makes."""
    types = {getattr(Topics(), t.value): t for t in EventType}
    sent = first_records_sent(monkeypatch)
    records = [(types[topic].value, key, value) for topic, key, value in sent]
    usage = [r for r in records if r[0] == EventType.USAGE.value]
    complaint_first = [r for r in records if r[0] != EventType.USAGE.value] + usage
    usage_first = usage + [r for r in records if r[0] != EventType.USAGE.value]
    rules = load_rules()

    def run(order: list[tuple[str, bytes | None, bytes | None]]) -> tuple[set[str], set[str]]:
        raw = [
            RawRecord(topic, 0, offset, key, value)
            for offset, (topic, key, value) in enumerate(order)
        ]
        result = run_pipeline(raw, rules)
        return {t.moment.type for t in result.tasks}, {f"{m}:{r}" for m, r in result.suppressed}

    made, dropped = run(complaint_first)
    assert made == {"first_topup", "first_international_roaming", "complaint"}
    assert dropped == {"competitor_hotline_call:complaint_open"}
    made, dropped = run(usage_first)
    assert made == {
        "first_topup",
        "first_international_roaming",
        "complaint",
        "competitor_hotline_call",
    }
    assert dropped == set()
    said = " ".join(first_record_section().split())
    assert "a first top-up, a roaming welcome, a call about the complaint" in said
    assert (
        'moments_tasks_suppressed_total{moment_type="competitor_hotline_call",reason="complaint_open"}'
        in said
    )
    assert (
        "read before the complaint, it waits in the merge window and the complaint joins it" in said
    )
