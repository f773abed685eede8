"""`moments bench` arguments it refuses before starting anything."""

from __future__ import annotations

import pytest


def test_bench_refuses_too_few_events_naming_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    from moments.cli import main

    assert main(["bench", "--events", "5000"]) == 2
    err = capsys.readouterr().err
    assert "too few to time a worker" in err
    assert "--events 50,000 or more" in err


def test_kafka_python_connection_chatter_is_kept_out_of_the_output() -> None:
    """The readiness probe (kafka-python) logs every connection at INFO; the CLI shows its
    warnings only, so `moments run` and `moments bench` print their own lines."""
    import logging

    from moments.cli import main

    main(["bench", "--events", "5000"])
    probe_log = logging.getLogger("kafka.net.manager")
    assert not probe_log.isEnabledFor(logging.INFO)
    assert probe_log.isEnabledFor(logging.WARNING)
