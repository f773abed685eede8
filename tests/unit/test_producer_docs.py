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
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.refusals import LATENESS, MAX_FUTURE
from moments.settings import Topics
from moments.state import RECENT_EVENT_IDS, RECENT_EVENT_IDS_ELSE

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


def test_the_first_records_example_is_taken_but_its_malformed_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A producer's first hour (review): the page said what a record must be but not how to
    send one to `moments run`; its example now does, and each record is judged here by the
    worker's own decoding, the malformed one with the message the page quotes."""
    section = first_record_section()
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.setattr(kafka, "KafkaProducer", RecordingProducer)
    monkeypatch.setattr(RecordingProducer, "sent", [])
    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    exec(compile(code, "producing-events.md", "exec"), {})  # noqa: S102 (the page's own code)
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
