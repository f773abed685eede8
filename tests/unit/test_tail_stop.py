"""The task viewer's Kafka consumer closes within a bound: a close the broker never
answers must not keep Ctrl-C of `moments run` from stopping the worker. `--exit-after N`
stops at N tasks, however many a fetch brought."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from moments import tail
from moments.settings import Settings


class StuckOnStop:
    """Answers what the viewer asks of a consumer, and never finishes closing."""

    stopped = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, partitions: list[Any]) -> None:
        pass

    async def seek_to_end(self, *partitions: Any) -> None:
        pass

    async def position(self, partition: Any) -> int:
        return 0

    async def stop(self) -> None:
        StuckOnStop.stopped = True
        await asyncio.sleep(3600)


async def test_a_close_that_never_ends_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "AIOKafkaConsumer", StuckOnStop)
    monkeypatch.setattr(tail, "STOP_S", 0.2)
    # Without the bound this waits the consumer's hour and wait_for fails it.
    printed = await asyncio.wait_for(tail.tail_tasks(Settings(), exit_after=0), 10)
    assert printed == 0
    assert StuckOnStop.stopped


class FiveInOneFetch(StuckOnStop):
    """A topic whose five tasks all come in the first fetch."""

    async def stop(self) -> None:
        pass

    async def seek_to_beginning(self, *partitions: Any) -> None:
        pass

    async def getmany(self, timeout_ms: int) -> dict[str, list[Any]]:
        records = [SimpleNamespace(value=orjson.dumps({"task_id": f"t{n}"})) for n in range(5)]
        return {"tp": records}


async def test_exit_after_stops_at_that_many_tasks_within_one_fetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tail, "AIOKafkaConsumer", FiveInOneFetch)
    out = io.StringIO()
    printed = await tail.tail_tasks(
        Settings(), json_lines=True, from_beginning=True, exit_after=3, out=out
    )
    assert printed == 3
    assert out.getvalue().splitlines() == [f'{{"task_id":"t{n}"}}' for n in range(3)]


@pytest.mark.parametrize("command", [["tasks", "tail"], ["run"]])
@pytest.mark.parametrize("count", ["0", "-1"])
def test_exit_after_less_than_one_is_refused(
    command: list[str], count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moments tasks tail --exit-after 0` (or -1) read nothing and exited 0 at once, as if
    no task were there; `moments run --exit-after 0` started the whole stack to stop it."""
    from moments.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*command, "--exit-after", count])
    assert exit_.value.code == 2
    assert f"{count!r}: write a whole number of 1 or more" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["-5", "70000"])
def test_a_metrics_port_out_of_range_is_refused(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moments run --metrics-port -5` (or 70000) ended in a traceback, `OverflowError:
    bind(): port must be 0-65535`, from the check meant to refuse a port before the run."""
    from moments.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["run", "--metrics-port", port])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{port!r}: write a port number from 1 to 65535, or 0 to turn /metrics off" in err
