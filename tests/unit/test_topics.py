"""What the topics a worker creates are asked to be (moments.topics); creating them on a
broker is tests/integration/test_topics.py; which of a broker's answers the workers' retry
waits out is here, on a fake admin client."""

from __future__ import annotations

import logging
import types
from typing import Any, ClassVar

import pytest
from aiokafka import errors as k

import sinks.retry
from moments import runtime as runtime_module
from moments.engine import Detector
from moments.runtime import Runtime
from moments.settings import load_settings
from moments.topics import TopicsError, TopicsUnreachableError, ensure_topics, new_topics
from rules.catalog import RuleSet
from sinks.metrics import Dependency, Metrics
from sinks.retry import with_retry


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


class _Admin:
    """aiokafka's admin client as `ensure_topics` uses it: each create answers the next
    of `answers` (an error code for every topic asked), and a created topic is then in
    the metadata; `start` raises `refuse` when given."""

    answers: ClassVar[list[int]] = []
    refuse: ClassVar[BaseException | None] = None
    creates: ClassVar[int] = 0

    def __init__(self, **kwargs: Any) -> None:
        self.created: set[str] = set()

    async def start(self) -> None:
        if _Admin.refuse is not None:
            raise _Admin.refuse

    async def close(self) -> None:
        pass

    async def _send_request(self, request: Any) -> Any:
        topics = [  # the one topic the tests ask for
            {"topic": t, "error_code": 0 if t in self.created else 3, "partitions": [0]}
            for t in ["moments.tasks"]
        ]
        return types.SimpleNamespace(to_object=lambda: {"topics": topics})

    async def create_topics(self, asked: list[Any], timeout_ms: int) -> Any:
        _Admin.creates += 1
        code = _Admin.answers.pop(0)
        if code == 0:
            self.created.update(t.name for t in asked)
        return types.SimpleNamespace(topic_errors=[(t.name, code, None) for t in asked])


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> type[_Admin]:
    import aiokafka.admin

    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", _Admin)
    monkeypatch.setattr(_Admin, "answers", [])
    monkeypatch.setattr(_Admin, "refuse", None)
    monkeypatch.setattr(_Admin, "creates", 0)

    waits: list[float] = []

    async def no_wait(delay: float) -> None:
        waits.append(delay)
        if len(waits) > 3:
            raise AssertionError(f"retried {len(waits)} times: for ever")

    monkeypatch.setattr(sinks.retry, "asyncio", types.SimpleNamespace(sleep=no_wait))
    return _Admin


async def _create_retried() -> None:
    await with_retry(
        lambda: ensure_topics("kafka:9092", {"moments.tasks": 1}),
        Dependency.KAFKA,
        Metrics(),
        "creating output topics",
    )


@pytest.mark.parametrize(
    "code",
    [41, 7, 13, -1],
    ids=["NOT_CONTROLLER", "REQUEST_TIMED_OUT", "NETWORK_EXCEPTION", "UNKNOWN_SERVER_ERROR"],
)
async def test_a_create_answered_by_a_broker_failing_over_is_retried(
    admin: type[_Admin], code: int
) -> None:
    # A worker starting while Kafka's controller moved (a rolling restart) stopped with
    # TopicsError "error 41": NOT_CONTROLLER is what the next try cures.
    admin.answers = [code, 0]
    await _create_retried()
    assert admin.creates == 2


@pytest.mark.parametrize(
    ("code", "name"),
    [(29, "TopicAuthorizationFailedError"), (38, "InvalidReplicationFactorError")],
)
async def test_a_create_refused_is_raised_at_once_naming_the_error(
    admin: type[_Admin], code: int, name: str
) -> None:
    admin.answers = [code]
    with pytest.raises(TopicsError, match=f"moments.tasks: error {code} {name}") as raised:
        await _create_retried()
    assert not isinstance(raised.value, TopicsUnreachableError)
    assert admin.creates == 1


async def test_a_refused_login_is_not_retried_as_a_broker_away(admin: type[_Admin]) -> None:
    # Every aiokafka error was a TopicsUnreachableError, retried for ever as "kafka
    # unavailable" while the broker refused the worker's credentials.
    admin.refuse = k.SaslAuthenticationFailed("bad password")
    with pytest.raises(TopicsError, match="refused to create topics") as raised:
        await _create_retried()
    assert not sinks.retry.retried(raised.value)


async def test_a_broker_away_is_still_unreachable(admin: type[_Admin]) -> None:
    admin.refuse = k.KafkaConnectionError("Unable to bootstrap from [('kafka', 9092)]")
    with pytest.raises(TopicsUnreachableError, match="could not create topics on kafka:9092"):
        await ensure_topics("kafka:9092", {"moments.tasks": 1})


class _HeldAdmin:
    """An admin client whose broker holds the topics of `held` (name -> partition count:
    the metadata `ensure_topics` reads); a create is never needed."""

    held: ClassVar[dict[str, int]] = {}

    def __init__(self, **kwargs: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def _send_request(self, request: Any) -> Any:
        topics = [
            {"topic": t, "error_code": 0, "partitions": list(range(n))}
            for t, n in _HeldAdmin.held.items()
        ]
        return types.SimpleNamespace(to_object=lambda: {"topics": topics})


async def _start_warnings(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    read: dict[str, int],
    held: dict[str, int],
) -> list[str]:
    """The warnings of a worker's start under MOMENTS_PARTITIONS 2, as `moments.worker`
    runs it: the check of the counts the preflight `read` (the input topics' 2 beside
    them), then the runtime's creation of the output topics on a broker that holds
    `held`; each a `Settings.topic` name."""
    import aiokafka.admin

    from moments.topiclayout import topic_types
    from moments.worker import check_partition_layout, judged_counts

    async def producer(_: object) -> object:
        return object()

    def no_redis(_: object) -> object:
        raise _StopHereError

    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", _HeldAdmin)
    monkeypatch.setattr(runtime_module, "start_producer", producer)
    monkeypatch.setattr(runtime_module, "redis_client", no_redis)
    settings = load_settings(partitions=2)
    counts = dict.fromkeys(topic_types(settings), 2)
    counts |= {settings.topic(t): n for t, n in read.items()}
    monkeypatch.setattr(_HeldAdmin, "held", {settings.topic(t): n for t, n in held.items()})
    runtime = Runtime(settings, Metrics(), Detector(RuleSet.of([]), {}))
    with caplog.at_level(logging.WARNING):
        check_partition_layout(settings, counts)
        runtime.judged_counts = judged_counts(settings, counts)
        with pytest.raises(_StopHereError):
            await runtime.start()
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_a_start_says_the_tasks_topics_count_once_with_its_fix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every output topic made by a broker with 4 partitions under MOMENTS_PARTITIONS 2:
    the start's check says the tasks and withdrawals topics' count with its fix, and the
    runtime's creation of the output topics said it again, "asked 2, has 4" without one.
    The other output topics, which no check judges, are still said there."""
    outputs = dict.fromkeys(("tasks", "deadletter", "task_outcomes", "task_withdrawals"), 4)
    said = await _start_warnings(
        monkeypatch, caplog, read={"tasks": 4, "task_withdrawals": 4}, held=outputs
    )
    settings = load_settings(partitions=2)
    about_tasks = [m for m in said if settings.topic("tasks") in m]
    assert len(about_tasks) == 1, said
    assert "kafka-topics.sh" in about_tasks[0]
    (others,) = [m for m in said if "other partition counts" in m]
    assert others == (
        "existing topics have other partition counts: "
        f"{settings.topic('deadletter')}: asked 2, has 4, "
        f"{settings.topic('task_outcomes')}: asked 2, has 4"
    )


async def test_a_count_the_start_did_not_read_is_still_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The tasks topic missing at the start's check (nothing said: a worker makes it with
    MOMENTS_PARTITIONS) and made by another client with 4 before the runtime's creation,
    or made again with 8 since the check read 4: the creation says the count it finds."""
    said = await _start_warnings(
        monkeypatch,
        caplog,
        read={"task_withdrawals": 4},
        held={"tasks": 4, "task_withdrawals": 8, "deadletter": 2, "task_outcomes": 2},
    )
    settings = load_settings(partitions=2)
    (others,) = [m for m in said if "other partition counts" in m]
    assert others == (
        "existing topics have other partition counts: "
        f"{settings.topic('task_withdrawals')}: asked 2, has 8, "
        f"{settings.topic('tasks')}: asked 2, has 4"
    )
