"""Every command that talks to Kafka stops with the fix when nothing answers at
MOMENTS_KAFKA_BOOTSTRAP (tasks tail/ack, state show and simulate ended in tracebacks)."""

from __future__ import annotations

import logging

import pytest

from moments.cli import main
from moments.embedded import free_port


@pytest.mark.parametrize(
    "command",
    [
        ["tasks", "tail"],
        ["tasks", "ack", "0" * 32, "--status", "accepted", "--subscriber", "13800138001"],
        ["state", "show", "13800138001"],
        ["simulate", "--subscribers", "10", "--rate", "1", "--duration", "1"],
        ["deadletter", "show"],
        ["deadletter", "replay", "--dry-run"],
    ],
)
def test_a_command_against_a_broker_that_is_not_there_says_what_to_do(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", address)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert (
        f"moments: Kafka {address} is not reachable; start it or set MOMENTS_KAFKA_BOOTSTRAP" in err
    )
    assert "Traceback" not in err


def test_simulate_with_no_broker_names_the_file_it_could_write_instead(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moments simulate --subscribers 200 --rate 0.083 --duration 3d`, the quick try of
    docs/backtest.md with its `--to-file` left out, was told only to start Kafka: a
    history for `rules test` and `backtest` needs none (journey review)."""
    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    assert main(["simulate", "--subscribers", "10", "--rate", "1", "--duration", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.endswith(
        "; or, for a history to give moments rules test or moments backtest, write it to a "
        "file with --to-file PATH (.jsonl.gz), which needs no broker"
    ), err


@pytest.mark.parametrize(
    ("command", "variable", "named"),
    [
        (["tasks", "tail"], "MOMENTS_KAFKA_BOOTSTRAP", "Kafka 127.0.0.1:{port}"),
        (["tasks", "pending"], "MOMENTS_REDIS_URL", "Redis redis://127.0.0.1:{port}/0"),
    ],
)
def test_it_says_so_once_with_what_the_connection_said(
    command: list[str],
    variable: str,
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A one-off command waits for nothing, yet it logged the worker's `Kafka ... not
    reachable yet: ConnectionRefusedError(...)` warning, and then its own line without the
    reason: two lines, the first promising a wait, the second not saying why."""
    port = free_port()  # nothing listens there
    address = named.format(port=port).split(" ", 1)[1]
    monkeypatch.setenv(variable, address)
    with caplog.at_level(logging.WARNING):
        assert main(command) == 2
    assert "not reachable yet" not in caplog.text
    err = " ".join(capsys.readouterr().err.split())
    assert f"moments: {named.format(port=port)} is not reachable" in err
    assert f"set {variable} (no answer: " in err
