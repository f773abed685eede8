"""Creating topics on the session broker: partition counts, compaction, what an existing
topic or an unreachable broker gives (moments.topics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from moments.embedded import free_port
from moments.topics import TopicsError, TopicsUnreachableError, ensure_topics
from sinks.retry import RETRYABLE

pytestmark = pytest.mark.integration

UniqueNames = Callable[[str], str]  # the `unique_name` fixture (tests/conftest.py)


async def _partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] == 0}


async def test_ensure_topics_partitions_and_idempotent(
    kafka_bootstrap: str, unique_name: UniqueNames, caplog: pytest.LogCaptureFixture
) -> None:
    wanted = {unique_name("one"): 1, unique_name("three"): 3, unique_name("state"): 2}
    compacted = [unique_name("state")]

    await ensure_topics(kafka_bootstrap, wanted, compacted)
    assert await _partition_counts(kafka_bootstrap, list(wanted)) == wanted

    # Again, unchanged: no error, no warning, nothing changes.
    caplog.clear()
    await ensure_topics(kafka_bootstrap, wanted, compacted)
    assert await _partition_counts(kafka_bootstrap, list(wanted)) == wanted
    assert "partition counts" not in caplog.text

    # Asking for another count of an existing topic: warning, or error when strict.
    other = {unique_name("three"): 5}
    await ensure_topics(kafka_bootstrap, other)
    assert "asked 5, has 3" in caplog.text
    with pytest.raises(TopicsError, match="asked 5, has 3"):
        await ensure_topics(kafka_bootstrap, other, strict=True)

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, unique_name("state"))]
        )
    finally:
        await admin.close()
    ((_, _, _, _, entries),) = response.resources
    configs = {entry[0]: entry[1] for entry in entries}
    assert configs.get("cleanup.policy") == "compact"


async def test_topics_that_exist_are_not_asked_for(
    kafka_bootstrap: str, unique_name: UniqueNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A managed cluster's service account may not create topics, and Kafka refuses a
    CreateTopics it may not make (TOPIC_AUTHORIZATION_FAILED) even for a topic that
    exists: a worker whose topics an operator made stopped at start (re-check review)."""
    made, new = {unique_name("made"): 2}, unique_name("new")
    await ensure_topics(kafka_bootstrap, made)
    asked: list[list[str]] = []
    create = AIOKafkaAdminClient.create_topics

    async def spy(self: AIOKafkaAdminClient, topics: list[Any], **kw: Any) -> Any:
        asked.append([t.name for t in topics])
        return await create(self, topics, **kw)

    monkeypatch.setattr(AIOKafkaAdminClient, "create_topics", spy)
    await ensure_topics(kafka_bootstrap, made)
    assert asked == []
    await ensure_topics(kafka_bootstrap, {**made, new: 1})
    assert asked == [[new]]
    assert await _partition_counts(kafka_bootstrap, [*made, new]) == {**made, new: 1}


async def test_ensure_topics_rejects_bad_arguments(kafka_bootstrap: str) -> None:
    with pytest.raises(ValueError, match="not in topics"):
        await ensure_topics(kafka_bootstrap, {"a": 1}, compacted=["b"])
    with pytest.raises(ValueError, match=">= 1"):
        await ensure_topics(kafka_bootstrap, {"a": 0})
    await ensure_topics(kafka_bootstrap, {})  # nothing to do, no connection needed


async def test_an_unreachable_broker_is_an_error_the_worker_retries() -> None:
    """It was an EmbeddedError, which `with_retry` does not retry: a worker whose broker
    went away while it created its output topics stopped (code review)."""
    port = free_port()
    with pytest.raises(TopicsUnreachableError, match=f"127.0.0.1:{port}") as err:
        await ensure_topics(f"127.0.0.1:{port}", {"x": 1}, timeout_s=3)
    assert isinstance(err.value, RETRYABLE)


async def test_a_consumer_started_first_gives_a_topic_the_brokers_count(
    kafka_bootstrap: str, unique_name: UniqueNames, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/consuming-tasks.md, "Start after the topics exist": aiokafka asks for topics
    with auto-creation on, so a consumer of `moments.task-withdrawals` started before
    any worker made it does not stall: its start creates the topic, with the broker's
    default count (Tansu 4, Kafka `num.partitions`), which a worker asking for another
    keeps (a warning), where the page promises the count of `moments.tasks`."""
    from aiokafka import AIOKafkaConsumer

    topic = unique_name("withdrawals")
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        [made] = (await _partition_counts(kafka_bootstrap, [topic])).values()
    finally:
        await reader.stop()
    worker = made + 3
    await ensure_topics(kafka_bootstrap, {topic: worker})
    assert await _partition_counts(kafka_bootstrap, [topic]) == {topic: made}
    assert f"asked {worker}, has {made}" in caplog.text
