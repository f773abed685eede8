"""Repeated client errors: once per interval, with a count of the ones held back."""

from __future__ import annotations

import logging

import pytest

from moments.logthrottle import THROTTLED_LOGGERS, RepeatThrottle, install_log_throttle

from .fakes import Clock


@pytest.fixture
def logged() -> tuple[logging.Logger, list[str], Clock]:
    clock = Clock()
    logger = logging.getLogger("test.throttle")
    logger.filters.clear()
    logger.addFilter(RepeatThrottle(30.0, clock))
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger.handlers[:] = [Collect()]
    logger.propagate = False
    return logger, lines, clock


def test_a_repeated_error_shows_once_per_interval_then_with_its_count(
    logged: tuple[logging.Logger, list[str], Clock],
) -> None:
    logger, lines, clock = logged
    for node in range(100):
        logger.error("Unable connect to node with id %s: %s", node % 3, "refused")
        clock.now += 0.1  # 100 retries in 10 s
    assert lines == ["Unable connect to node with id 0: refused"]
    clock.now += 25.0
    logger.error("Unable connect to node with id %s: %s", 1, "refused")
    assert (
        lines[1] == "Unable connect to node with id 1: refused [99 more like this in the last 35 s]"
    )
    logger.error("Unable connect to node with id %s: %s", 1, "refused")
    assert len(lines) == 2


def test_different_messages_are_counted_apart(
    logged: tuple[logging.Logger, list[str], Clock],
) -> None:
    logger, lines, _ = logged
    logger.error("Unable to update metadata from %s", [1])
    logger.error("Failed fetch messages from %s: %s", 1, "gone")
    logger.error("Unable to update metadata from %s", [1])
    assert lines == ["Unable to update metadata from [1]", "Failed fetch messages from 1: gone"]


def test_installing_twice_adds_one_filter() -> None:
    install_log_throttle()
    install_log_throttle()
    for name in THROTTLED_LOGGERS:
        throttles = [f for f in logging.getLogger(name).filters if isinstance(f, RepeatThrottle)]
        assert len(throttles) == 1


async def test_dead_letters_are_one_line_a_batch_and_no_subscriber_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A producer sending garbage made a log line per record (20,000 in an SRE drill)."""
    from moments.backtest import CollectingProducer, EventTime
    from moments.records import DeadLetter, RawRecord, RejectReason
    from sinks.deadletter import DeadLetterSink
    from sinks.metrics import Metrics

    sink = DeadLetterSink(CollectingProducer(EventTime()), "moments.deadletter", Metrics())
    for offset in range(5):
        record = RawRecord("telecom.usage", 2, 40 + offset, b"13800138001", b"{")
        reason = RejectReason.INVALID_JSON if offset else RejectReason.KEY_MISMATCH
        sink.add(DeadLetter(record, "usage", reason, "E", "13800138001 is wrong"))
    with caplog.at_level(logging.INFO, logger="sinks.deadletter"):
        await sink.flush()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "sinks.deadletter"]
    assert line == (
        "dead letters: 4 invalid_json, 1 key_mismatch (the first telecom.usage[2]@40); "
        "moments deadletter show lists them"
    )
    assert "sinks.deadletter" in THROTTLED_LOGGERS
