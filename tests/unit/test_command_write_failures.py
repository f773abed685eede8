"""A one-off command whose Kafka write fails says so in one line with the fix and exits 2
(README, "Exit codes": a broker that does not answer), with no traceback: `moments tasks
ack` and `moments state seed` let aiokafka's error end them in one. The frozen broker,
with its bound, is tests/integration/test_command_write_bound.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import errors as k
from aiokafka.producer.message_accumulator import BatchBuilder

from moments import ack, seed
from moments import producer as producer_module
from moments.cli import main
from moments.exceptions import ConfigError
from moments.models import OutcomeStatus
from moments.settings import Settings

TASK_ID = "0123456789abcdef0123456789abcdef"
BROKER_GONE = "KafkaConnectionError: Connection at 127.0.0.1:9092 closed"


class _FailingProducer:
    """aiokafka's producer whose every write fails as a broker gone mid-write does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.stopped = False

    async def start(self) -> None:
        return None

    async def send(self, topic: str, *args: object, **kwargs: object) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(k.KafkaConnectionError("Connection at 127.0.0.1:9092 closed"))
        return future

    async def send_and_wait(self, topic: str, *args: object, **kwargs: object) -> Any:
        return await (await self.send(topic))

    async def stop(self) -> None:
        self.stopped = True


class TestAck:
    @pytest.fixture(autouse=True)
    def _failing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        async def no_check(*args: object) -> None:
            return None

        monkeypatch.setattr(ack, "AIOKafkaProducer", _FailingProducer)
        monkeypatch.setattr(ack, "check_subscriber", no_check)
        monkeypatch.setattr("moments.connections.require_kafka", lambda settings: None)

    def test_the_command_exits_2_with_one_line_naming_the_outcome_and_the_fix(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        argv = ["tasks", "ack", TASK_ID, "--status", "accepted", "--subscriber", "13800138001"]
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, captured.err
        assert lines[0] == (
            f"moments: task {TASK_ID}'s accepted outcome was not written to "
            f"moments.task-outcomes: {BROKER_GONE}. It may have reached the topic all the "
            "same: once `moments check` says the broker answers, look for it there before "
            "writing it again"
        )

    def test_a_producer_that_cannot_start_says_nothing_was_sent(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class _NoStart(_FailingProducer):
            async def start(self) -> None:
                raise k.KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")

        monkeypatch.setattr(ack, "AIOKafkaProducer", _NoStart)
        outcome = ack.build_outcome(TASK_ID, "13800138001", OutcomeStatus.DECLINED)
        with pytest.raises(ConfigError) as raised:
            asyncio.run(ack.write_outcome(Settings(), outcome))
        assert str(raised.value) == (
            f"task {TASK_ID}'s declined outcome was not written to moments.task-outcomes: "
            "KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 9092)]. Nothing "
            "was sent: once `moments check` says the broker answers, run the command again"
        )


class _HalfAcknowledged:
    """A seed's producer whose first `good` batches are acknowledged and the rest fail."""

    def __init__(self, good: int) -> None:
        self.good = good

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1024 * 1024, 0)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.good:
            self.good -= 1
            future.set_result(type("Written", (), {"offset": 0})())
        else:
            future.set_exception(k.KafkaConnectionError("Connection at 127.0.0.1:9092 closed"))
        return future

    async def stop(self) -> None:
        return None


class TestSeed:
    async def test_the_write_says_how_many_were_written_and_to_seed_again_with_replace(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        producer = _HalfAcknowledged(good=1)

        async def start(settings: Settings, **kwargs: object) -> _HalfAcknowledged:
            return producer

        monkeypatch.setattr(producer_module, "start_producer", start)
        monkeypatch.setattr(seed, "WRITE_CHUNK", 2)
        records = [(0, str(n).encode(), b"{}") for n in range(5)]
        with pytest.raises(ConfigError) as raised:  # exit 2, one line (cli.main)
            await seed.write_records(Settings(), "app-subscribers-changelog", records)
        assert str(raised.value) == (
            "the seed stopped after 2 of 5 record(s) written to app-subscribers-changelog: "
            f"{BROKER_GONE}. Those of the failed write may have reached the topic all the "
            "same: once `moments check` says the broker answers, seed again with --replace "
            "(a record written twice is the same record)"
        )


def test_the_acks_documented_bound_is_the_codes() -> None:
    """docs/consuming-tasks.md states the bound of a failing write: the code's sum."""
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "consuming-tasks.md").read_text()
    assert ack.WRITE_FAILS_WITHIN_S == 35
    assert (
        " ".join(page.split()).count(
            f"ends the command with code 2 within {ack.WRITE_FAILS_WITHIN_S:g} s "
            f"({ack.WRITE_S:g} s for the producer's start and the topic's metadata, "
            f"{ack.WRITE_S:g} s for the acknowledgement, 5 s to ask the broker afresh, "
            "10 s for the producer's stop)"
        )
        == 1
    )
