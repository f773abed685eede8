"""`moments simulate` rides out a broker outage (it ended in a traceback) and, with its
output in a log rather than a terminal, says how it is doing while it runs."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import aiokafka
import pytest
from aiokafka.errors import RequestTimedOutError
from rich.console import Console

from moments import simulate_cli
from moments.cli import main
from moments.settings import Settings
from moments.simulate import SimEvent, SimStats, produce_stream, simulate


class OutageProducer:
    """An AIOKafkaProducer whose first `failures` sends time out, as while the broker was
    paused (kill -STOP): each send's future fails with RequestTimedOutError."""

    failures = 0
    taken: list[tuple[str, bytes]]

    def __init__(self, **kwargs: Any) -> None:
        self.sends = 0
        type(self).taken = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sends += 1
        if self.sends <= self.failures:
            future.set_exception(RequestTimedOutError())
        else:
            self.taken.append((topic, key))
            future.set_result(None)
        return future


def test_events_the_broker_did_not_take_are_sent_again_until_it_does(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", OutageProducer)
    monkeypatch.setattr(OutageProducer, "failures", 25)
    events = list(itertools.islice(simulate(10, 1000, seed=3), 40))
    stats = asyncio.run(produce_stream(Settings(), iter(events), rate=1e9, count=None))
    expected = [(Settings().topic(e.event_type.value), e.key.encode()) for e in events]
    assert sorted(OutageProducer.taken) == sorted(expected)  # each one, once
    assert sum(stats.events.values()) == 40
    assert stats.waiting_since is None
    said = caplog.text
    assert "kafka unavailable while producing events" in said
    assert "RequestTimedOutError" in said
    assert "kafka is back after" in said


def test_a_wait_for_the_broker_is_in_the_progress_line() -> None:
    stats = SimStats(waiting_since=100.0, last_error="RequestTimedOutError: [Error 7]")
    line = simulate_cli.progress_line(stats, elapsed_s=50, now=152.0)
    assert line.startswith("simulate: 0 events sent in 50 s (0/s), 0 planted moments; ")
    assert "waiting 52 s for Kafka" in line
    assert "retrying after RequestTimedOutError" in line
    stats.waiting_since = None
    assert "Kafka" not in simulate_cli.progress_line(stats, elapsed_s=50, now=152.0)


def test_not_in_a_terminal_it_prints_progress_lines_while_it_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`docker compose logs simulator` stayed empty until the run ended."""
    said_while_running: list[str] = []

    async def produce(
        settings: Settings,
        events: Iterator[SimEvent],
        rate: float,
        count: int | None,
        progress: Callable[[SimStats], None] | None = None,
        stats: SimStats | None = None,
    ) -> SimStats:
        stats = stats if stats is not None else SimStats()
        for event in itertools.islice(events, 3):
            stats.add(event)
            await asyncio.sleep(0)  # the reporter's turn
            await asyncio.sleep(0)
        said_while_running.append(capsys.readouterr().err)
        return stats

    monkeypatch.setattr("moments.simulate.produce_stream", produce)
    monkeypatch.setattr(simulate_cli, "PROGRESS_EVERY_S", 0.0, raising=False)
    monkeypatch.setattr("moments.connections.require_kafka", lambda settings: None)
    assert main(["simulate", "--subscribers", "5", "--rate", "10", "--duration", "1"]) == 0
    assert "simulate: 3 events sent in " in said_while_running[0]
    assert "produced 3 events" in capsys.readouterr().err


def test_the_live_table_says_what_the_run_waits_for() -> None:
    console = Console(file=io.StringIO(), width=120)
    console.print(simulate_cli.live_view(SimStats(waiting_since=0.0), now=30.0))
    assert "waiting 30 s for Kafka to take the events" in console.file.getvalue()  # type: ignore[attr-defined]
