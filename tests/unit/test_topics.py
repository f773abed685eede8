"""What the topics a worker creates are asked to be (moments.topics); creating them on a
broker is tests/integration/test_topics.py."""

from __future__ import annotations

from typing import Any

import pytest

from moments import runtime as runtime_module
from moments.engine import Detector
from moments.runtime import Runtime
from moments.settings import load_settings
from moments.topics import new_topics
from rules.catalog import RuleSet
from sinks.metrics import Metrics


def test_each_topic_is_asked_with_its_partitions_replicas_and_compaction() -> None:
    asked = new_topics({"t": 4, "state": 8}, ["state"], replication_factor=3)
    assert [(t.name, t.num_partitions, t.replication_factor) for t in asked] == [
        ("t", 4, 3),
        ("state", 8, 3),
    ]
    assert [t.topic_configs for t in asked] == [{}, {"cleanup.policy": "compact"}]


@pytest.mark.parametrize(
    ("topics", "compacted", "replicas", "message"),
    [
        ({"a": 1}, ["b"], 1, "compacted topics not in topics"),
        ({"a": 0}, [], 1, "partition counts must be >= 1"),
        ({"a": 1}, [], 0, "replication factor must be >= 1"),
    ],
)
def test_impossible_requests_are_refused(
    topics: dict[str, int], compacted: list[str], replicas: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        new_topics(topics, compacted, replicas)


class _StopHereError(Exception):
    """Ends `Runtime.start` once the call under test is made."""


async def test_the_worker_creates_its_outputs_with_the_configured_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The output topics were created with one replica whatever MOMENTS_REPLICATION_FACTOR
    said: on a cluster with `min.insync.replicas=2`, every task publish was refused and
    retried for ever (code review)."""
    calls: list[dict[str, Any]] = []

    async def producer(_: object) -> object:
        return object()

    async def ensure(bootstrap: str, topics: dict[str, int], **kw: Any) -> None:
        calls.append({"topics": topics, **kw})
        raise _StopHereError

    monkeypatch.setattr(runtime_module, "start_producer", producer)
    monkeypatch.setattr(runtime_module, "ensure_topics", ensure)
    settings = load_settings(replication_factor=3, partitions=6)
    runtime = Runtime(settings, Metrics(), Detector(RuleSet.of([]), {}))
    with pytest.raises(_StopHereError):
        await runtime.start()
    (call,) = calls
    assert call["replication_factor"] == 3
    assert call["topics"] == {
        settings.topic(name): 6
        for name in ("tasks", "deadletter", "task_outcomes", "task_withdrawals")
    }
