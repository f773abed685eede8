"""Repeated client errors: once per interval, with a count of the ones held back."""

from __future__ import annotations

import logging

import pytest

from moments.logthrottle import (
    PER_NAME_LOGGERS,
    REBALANCE_LINES,
    THROTTLED_LOGGERS,
    RepeatThrottle,
    install_log_throttle,
)

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


def test_each_rebalance_step_is_logged_while_retried_lines_stay_held(
    logged: tuple[logging.Logger, list[str], Clock],
) -> None:
    """A worker kicked out of its group and joining again (CI's scale-out failure: six joins
    in about a minute) showed its first join only: the rest were held for 30 s."""
    logger, lines, clock = logged
    logger.setLevel(logging.INFO)
    for generation in range(1, 4):
        logger.info("(Re-)joining group %s", "app")
        logger.info("Joined group '%s' (generation %s) with member_id %s", "app", generation, "m")
        logger.info("Successfully synced group %s with generation %s", "app", generation)
        logger.info("OffsetCommit failed for group %s due to a coordinator error (%s)", "app", 16)
        clock.now += 2.0
    joined = [line for line in lines if line.startswith("Joined group")]
    assert joined == [f"Joined group 'app' (generation {g}) with member_id m" for g in range(1, 4)]
    assert len([line for line in lines if line.startswith("Successfully synced")]) == 3
    assert all(
        not line.startswith(REBALANCE_LINES) or "more like this" not in line for line in lines
    )
    assert lines.count("(Re-)joining group app") == 1
    assert len([line for line in lines if line.startswith("OffsetCommit failed")]) == 1


def test_different_messages_are_counted_apart(
    logged: tuple[logging.Logger, list[str], Clock],
) -> None:
    logger, lines, _ = logged
    logger.error("Unable to update metadata from %s", [1])
    logger.error("Failed fetch messages from %s: %s", 1, "gone")
    logger.error("Unable to update metadata from %s", [1])
    assert lines == ["Unable to update metadata from [1]", "Failed fetch messages from 1: gone"]


def test_faust_timers_overlapping_in_an_outage_are_a_line_per_timer_every_30_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """mode's Timer warns "Timer %s is overlapping" on every tick longer than its
    interval: each second for each 1 s timer waiting on Redis in an outage."""
    from mode.timers import Timer

    install_log_throttle()
    caplog.set_level(logging.WARNING, "mode.timers")
    now = [1000.0]
    timers = [Timer(1.0, name=name, clock=lambda: now[0]) for name in ("release", "redrive")]
    for timer in timers:
        timer.tick()  # the first tick only starts the clock
    for _ in range(20):  # 20 ticks of 1.5 s each: every one overlaps
        for timer in timers:
            timer.on_before_yield()
            now[0] += 1.5
            timer.tick()
    said = [r.getMessage() for r in caplog.records if r.name == "mode.timers"]
    assert sorted(line.split(" is ")[0] for line in said) == ["Timer redrive", "Timer release"]
    assert min(t.overlaps for t in timers) >= 19  # each tick overlapped, one line each


def test_installing_twice_adds_one_filter() -> None:
    install_log_throttle()
    install_log_throttle()
    for name in (*THROTTLED_LOGGERS, *PER_NAME_LOGGERS):
        throttles = [f for f in logging.getLogger(name).filters if isinstance(f, RepeatThrottle)]
        assert len(throttles) == 1


async def test_dead_letters_are_a_line_every_30_s_with_every_count_and_no_subscriber_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A producer sending garbage made a log line per record (20,000 in an SRE drill);
    then a line per batch throttled by template, whose "[N more like this]" counted lines
    (738 of 10,010 records shown) and hid other reasons (SRE re-check)."""
    from moments.backtest import CollectingProducer, EventTime
    from moments.records import DeadLetter, RawRecord, RejectReason
    from sinks.deadletter import DeadLetterSink
    from sinks.metrics import Metrics

    clock = Clock(0.0)
    sink = DeadLetterSink(CollectingProducer(EventTime()), "dlq", Metrics(), clock)

    async def batch(reasons: list[RejectReason], offset: int) -> None:
        for n, reason in enumerate(reasons):
            record = RawRecord("telecom.usage", 2, offset + n, b"13800138001", b"{")
            sink.add(DeadLetter(record, "usage", reason, "E", "13800138001 is wrong"))
        await sink.flush()

    with caplog.at_level(logging.INFO, logger="sinks.deadletter"):
        await batch([RejectReason.KEY_MISMATCH] + [RejectReason.INVALID_JSON] * 4, 40)
        clock.now += 10
        await batch([RejectReason.INVALID_JSON] * 700, 100)
        await batch([RejectReason.FUTURE] * 3, 900)
        clock.now += 25
        await batch([RejectReason.INVALID_JSON] * 2, 950)
    lines = [r.getMessage() for r in caplog.records if r.name == "sinks.deadletter"]
    assert lines == [
        "dead letters: 4 invalid_json, 1 key_mismatch (the first telecom.usage[2]@40); "
        "moments deadletter show lists them",
        "dead letters: 702 invalid_json, 3 future (the first telecom.usage[2]@100); "
        "moments deadletter show lists them",
    ]
    assert "13800138001" not in " ".join(lines)
