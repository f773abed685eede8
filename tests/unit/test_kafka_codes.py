"""A broker's error code aiokafka does not know is retried only when Kafka marks it
retriable (sinks.kafkacodes, sinks.retry).

aiokafka 0.14 turns every code it lacks into its `UnknownError` (code -1), which the
worker retries as a broker failing: INVALID_RECORD (87), Kafka's answer to a record it
refuses, was retried for ever, reported as the broker away. aiokafka's own produce path
is driven here with a fake produce response carrying the code, and what it fails the
send with is handed to `with_retry` as the task sink's producer would."""

from __future__ import annotations

import types
from typing import Any

import pytest
from aiokafka import errors as k
from aiokafka.producer.sender import SendProduceReqHandler
from aiokafka.structs import TopicPartition

import sinks.retry
from moments.connections import kafka_client_kwargs
from moments.settings import load_settings
from sinks.metrics import Dependency, Metrics
from sinks.retry import with_retry
from tests.unit.test_produce_errors import BACK_OFFS, BackOffs, RetriedForeverError

TOPIC = "moments.tasks"


@pytest.fixture(autouse=True)
def _codes_installed() -> None:
    """As a worker has them: its clients' arguments come from `kafka_client_kwargs`."""
    kafka_client_kwargs(load_settings())


@pytest.fixture
def back_offs(monkeypatch: pytest.MonkeyPatch) -> BackOffs:
    fake = BackOffs()
    monkeypatch.setattr(sinks.retry, "asyncio", types.SimpleNamespace(sleep=fake.sleep))
    return fake


class _Batch:
    """aiokafka's producer batch, as its produce handler uses it."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def expired(self) -> bool:
        return False

    def failure(self, exception: BaseException) -> None:
        self.error = exception

    def done(self, *args: Any) -> None:
        raise AssertionError("the broker refused this batch")


def produce_answered(code: int) -> tuple[BaseException | None, bool]:
    """What aiokafka's sender makes of a produce response (v8) with `code` for our
    partition: the send's error, and whether aiokafka itself sends the batch again."""
    batch = _Batch()
    client = types.SimpleNamespace(force_metadata_update=lambda: None)
    sender = types.SimpleNamespace(_retry_backoff=0.1, client=client, _txn_manager=None)
    handler = SendProduceReqHandler(sender, {TopicPartition(TOPIC, 0): batch})
    response = types.SimpleNamespace(
        API_VERSION=8, topics=[(TOPIC, [(0, code, -1, -1, -1, [], "refused")])]
    )
    handler.handle_response(response)
    return batch.error, bool(handler._to_reenqueue)


async def _publish(error: BaseException, metrics: Metrics) -> None:
    async def send() -> None:
        raise error

    await with_retry(send, Dependency.KAFKA, metrics, "publishing tasks")


class TestInvalidRecord:
    async def test_stops_at_once_naming_the_code_and_what_to_check(
        self, back_offs: BackOffs
    ) -> None:
        """Retried for ever before (`RetriedForeverError`), as code -1."""
        error, resent = produce_answered(87)
        assert error is not None
        assert not resent
        with pytest.raises(k.KafkaError) as raised:
            await _publish(error, Metrics())
        assert back_offs.delays == []
        note = " ".join(raised.value.__notes__)
        assert "error code 87 INVALID_RECORD" in note
        assert "cleanup.policy=compact" in note
        assert "waiting will not fix it" in note
        assert isinstance(raised.value, k.UnknownError)  # caught where the old one was

    async def test_a_code_newer_than_the_table_is_named_by_its_number(
        self, back_offs: BackOffs
    ) -> None:
        error, _ = produce_answered(1234)
        assert error is not None
        with pytest.raises(k.KafkaError) as raised:
            await _publish(error, Metrics())
        assert back_offs.delays == []
        assert "error code 1234 " in " ".join(raised.value.__notes__)


class TestRetriableCodes:
    @pytest.mark.parametrize(
        "code",
        [
            2,  # CORRUPT_MESSAGE: aiokafka fails the send; Kafka's producer sends it again
            89,  # THROTTLING_QUOTA_EXCEEDED: aiokafka did not know it
            74,  # FENCED_LEADER_EPOCH
        ],
    )
    async def test_are_retried_as_an_outage(self, back_offs: BackOffs, code: int) -> None:
        error, resent = produce_answered(code)
        # aiokafka sends again what it now knows is retriable; what it gives up on
        # reaches the worker, which waits.
        failing = error or k.for_code(code)()
        assert resent is (code != 2)
        metrics = Metrics()
        with pytest.raises(RetriedForeverError):
            await _publish(failing, metrics)
        assert len(back_offs.delays) == BACK_OFFS
        assert (
            metrics.registry.get_sample_value("moments_dependency_up", {"dependency": "kafka"}) == 0
        )

    def test_unknown_server_error_is_still_waited_out(self) -> None:
        """Code -1: Tansu's storage failing, as before."""
        error, _ = produce_answered(-1)
        assert error is not None
        assert type(error) is k.UnknownError
        assert sinks.retry.retried(error)


@pytest.mark.parametrize(
    ("said", "fix"),
    [
        ("Support for ProduceRequest v3 has not yet been added", "the broker's version"),
        ("Zstd codec is not available", "install cramjam"),
    ],
)
def test_aiokafka_missing_a_version_or_codec_is_no_bug_of_ours(said: str, fix: str) -> None:
    """aiokafka's NotImplementedError was called a bug in moments."""
    note = sinks.retry.not_retried_note(NotImplementedError(said), Dependency.KAFKA, "sending")
    assert note is not None
    assert fix in note
    assert "bug" not in note
