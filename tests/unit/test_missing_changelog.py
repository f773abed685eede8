"""The state changelog deleted under a running worker (`Runtime._publish`, `needed_topic`).

Its write is answered UNKNOWN_TOPIC_OR_PARTITION, which Kafka marks retriable: it was
retried as a broker away (`moments_dependency_up{dependency="kafka"}` 0 though the broker
answers, `kafka unavailable while writing the state changelog` in the log), so ops looked
at the broker. Five such answers in a row now make it a missing topic, as the tasks and
dead-letter topics are: the batch still waits (the changelog is where its state goes:
its offsets are not committed, nothing is lost), Kafka reads up, the topic is counted in
`moments_topic_missing{topic}` while held, and the throttled line says how to make the
changelog again (compacted, with MOMENTS_PARTITIONS partitions), not an output topic's
fix."""

from __future__ import annotations

import logging
import types
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka import errors as k

from moments import runtime as runtime_module
from moments.batchresult import BatchResult, StateChange
from moments.engine import Detector
from moments.runtime import Runtime
from moments.settings import load_settings
from moments.state import SubscriberState
from moments.store import DictStateStore, StateWrite
from sinks.metrics import Metrics
from sinks.retry import MISSING_TOPIC_ATTEMPTS

from .catalogs import default_rules
from .fakes import NoDeadLetters
from .test_missing_main_topics import FixedClock, back_offs, clock, held_lines, kafka_up, missing
from .test_state_write_ahead import _Tasks

__all__ = ["clock"]  # the fixture, imported for the tests below

CHANGELOG = "app-subscribers-changelog"
SUB = "13000000001"
HELD = 4
"""Answers after the fifth in a row that the changelog is unknown: held over them."""


class _ChangelogStore(DictStateStore):
    """A store with a changelog: its records go to `CHANGELOG` before it keeps them."""

    changelog_topic = CHANGELOG

    def save(self, changes: object, generation: object = None) -> StateWrite:
        super().save(changes)  # type: ignore[arg-type]
        return StateWrite(records=[(0, SUB.encode(), b"{}")])


class _DeletedChangelog:
    """`produce_to_partitions` to a changelog deleted since the start: unknown `unknown`
    times, then (created again) written."""

    def __init__(self, unknown: int) -> None:
        self.unknown = unknown
        self.topics: list[str] = []

    async def __call__(
        self,
        _producer: object,
        topic: str,
        records: Sequence[tuple[int, bytes, bytes | None]],
        headers: object = None,
    ) -> dict[int, int]:
        self.topics.append(topic)
        if self.unknown:
            self.unknown -= 1
            raise k.UnknownTopicOrPartitionError()
        return {0: 41}


def _runtime(
    monkeypatch: pytest.MonkeyPatch, metrics: Metrics, write: _DeletedChangelog
) -> Runtime:
    runtime = Runtime(load_settings(partitions=6), metrics, Detector(default_rules(), {}))
    runtime.tasks = _Tasks()  # type: ignore[assignment]
    runtime.dead_letters = NoDeadLetters()  # type: ignore[assignment]
    runtime._producer = object()
    monkeypatch.setattr(runtime_module, "produce_to_partitions", write)
    return runtime


class TestTheChangelogDeleted:
    async def test_its_write_waits_as_a_missing_topic_not_a_broker_away(
        self,
        monkeypatch: pytest.MonkeyPatch,
        clock: FixedClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Held, not raised, and from the fifth answer in a row Kafka reads up and the
        changelog is counted missing; once it is there again the batch's state is
        written and the gauge is back to 0."""
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, CHANGELOG)
        write = _DeletedChangelog(MISSING_TOPIC_ATTEMPTS + HELD)
        runtime = _runtime(monkeypatch, metrics, write)
        result = BatchResult(changes={SUB: StateChange(SubscriberState(watermark=9), 0)})
        with caplog.at_level(logging.WARNING):
            assert await runtime._publish(result, _ChangelogStore())
        assert set(write.topics) == {CHANGELOG}
        held = sleeps.seen[MISSING_TOPIC_ATTEMPTS - 1 :]
        assert len(held) == HELD + 1
        assert [(s.up, s.missing) for s in held] == [(1, 1)] * len(held)
        assert (kafka_up(metrics), missing(metrics, CHANGELOG)) == (1, 0)
        said = " ".join(r.getMessage() for r in caplog.records)
        assert f"the topic {CHANGELOG} is there again after" in said
        assert "kafka is back" not in said

    async def test_its_line_says_how_to_make_the_changelog_again(
        self,
        monkeypatch: pytest.MonkeyPatch,
        clock: FixedClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Compacted, with MOMENTS_PARTITIONS partitions, and that the records written
        before the deletion are gone: not an output topic's "restart a worker", which
        restores the worker's partitions from the empty topic."""
        metrics = Metrics()
        back_offs(monkeypatch, metrics, CHANGELOG)
        runtime = _runtime(monkeypatch, metrics, _DeletedChangelog(MISSING_TOPIC_ATTEMPTS + 1))
        result = BatchResult(changes={SUB: StateChange(SubscriberState(watermark=9), 0)})
        with caplog.at_level(logging.WARNING):
            assert await runtime._publish(result, _ChangelogStore())
        [line] = held_lines(caplog)
        assert line.startswith(f"{CHANGELOG}: the topic is missing on the broker while writing")
        assert "--partitions 6 " in line
        assert "--config cleanup.policy=compact" in line
        assert f"--topic {CHANGELOG} " in line
        assert "restart a worker" not in line


class _RecreatedSmaller:
    """`produce_to_partitions` once a broker that creates topics on use made the deleted
    changelog again with fewer partitions (Tansu: 4; Kafka: num.partitions): aiokafka's own
    check of the write's partition against the topic's metadata raises."""

    def __init__(self, partitions: int) -> None:
        self._metadata = types.SimpleNamespace(
            partitions_for_topic=lambda _: set(range(partitions))
        )

    async def __call__(
        self,
        _producer: object,
        topic: str,
        records: Sequence[tuple[int, bytes, bytes | None]],
        headers: object = None,
    ) -> dict[int, int]:
        for partition, _, _ in records:
            AIOKafkaProducer._partition(self, topic, partition, None, None, None, None)
        return {}


class TestTheChangelogMadeAgainSmaller:
    async def test_the_worker_stops_saying_why_not_a_bug_of_moments(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """aiokafka's `AssertionError: Unrecognized partition` was noted as a bug in
        moments ("report it with this traceback"); it is a topic with too few partitions,
        which only making it again fixes (probed on Tansu: a changelog of 6 partitions
        deleted, then written to partition 5)."""
        metrics = Metrics()
        write = _RecreatedSmaller(4)
        runtime = _runtime(monkeypatch, metrics, _DeletedChangelog(0))
        monkeypatch.setattr(runtime_module, "produce_to_partitions", write)

        class _ToPartition5(_ChangelogStore):
            def save(self, changes: object, generation: object = None) -> StateWrite:
                return StateWrite(records=[(5, SUB.encode(), b"{}")])

        result = BatchResult(changes={SUB: StateChange(SubscriberState(watermark=9), 0)})
        with pytest.raises(AssertionError, match="Unrecognized partition") as raised:
            await runtime._publish(result, _ToPartition5())
        notes = " ".join(getattr(raised.value, "__notes__", []))
        assert "fewer partitions than MOMENTS_PARTITIONS" in notes
        assert "auto.create.topics.enable" in notes
        assert "a bug in moments" not in notes
