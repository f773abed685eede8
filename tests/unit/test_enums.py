"""The contract's vocabularies as pydantic writes them: their text, with no Python call
per field (`moments.enums.Vocabulary`)."""

from __future__ import annotations

import enum
import sys
from types import FrameType
from typing import Any

import orjson
import pytest

from moments.enums import Channel, EventType, Family, OutcomeStatus, Vocabulary, WithdrawReason
from moments.models import RelatedMoment, ServiceTask
from moments.schemas import example_task
from sinks.payloads import task_bytes


def _task() -> ServiceTask:
    task = ServiceTask.model_validate(example_task())
    related = RelatedMoment(
        task_id="0" * 32,
        moment=task.moment.model_copy(update={"family": Family.ANOMALY}),
        priority=2,
        channel=Channel.OUTBOUND_CALL,
        action="call",
        triggered_at=task.triggered_at,
        evidence=["e1"],
    )
    return task.model_copy(update={"related": [related], "channel": Channel.MANAGER})


class TestVocabulary:
    def test_every_vocabulary_of_the_contract_is_one(self) -> None:
        """Each closed list a model holds is written as its text by pydantic's own code."""
        for vocabulary in (EventType, Channel, Family, OutcomeStatus, WithdrawReason):
            assert issubclass(vocabulary, Vocabulary)

    def test_a_task_is_written_as_the_values_of_its_enums(self) -> None:
        """The JSON holds each member's value, in JSON-mode dumps plain `str`s, and the
        Python-mode dump keeps the members themselves."""
        task = _task()
        written = orjson.loads(task_bytes(task))
        assert written["channel"] == "manager"
        assert written["moment"]["family"] == task.moment.family.value
        assert [(r["channel"], r["moment"]["family"]) for r in written["related"]] == [
            ("outbound_call", "anomaly")
        ]
        dumped = task.model_dump(mode="json")
        assert type(dumped["channel"]) is str
        assert dumped["channel"] == "manager"
        assert written == orjson.loads(orjson.dumps(dumped))
        assert task.model_dump()["channel"] is Channel.MANAGER

    def test_a_task_is_written_with_no_python_call_for_its_enums(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Its JSON is made without the enum's `value` property (a Python call a field,
        ~390,000 in a 300,000-event backtest) or any other code of the `enum` module."""
        task = _task()
        called: list[str] = []

        def profile(frame: FrameType, event: str, _arg: Any) -> None:
            if event == "call" and frame.f_code.co_filename == enum.__file__:
                called.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

        sys.setprofile(profile)
        try:
            task.__pydantic_serializer__.to_json(task)
        finally:
            sys.setprofile(None)
        assert called == []
