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


@pytest.mark.parametrize("rate", ["0", "-5", "fast"])
def test_bench_refuses_an_offered_rate_that_is_no_positive_number(
    rate: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from moments.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--offered", rate])
    assert exit_info.value.code == 2
    assert "--offered" in capsys.readouterr().err


def test_bench_passes_the_offered_rate_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import moments.bench
    from moments.cli import main

    seen: dict[str, object] = {}

    def fake_run_bench(*args: object, **kwargs: object) -> int:
        seen.update(kwargs)
        return 0

    monkeypatch.setattr(moments.bench, "run_bench", fake_run_bench)
    assert main(["bench", "--offered", "8000"]) == 0
    assert seen["offered"] == 8000.0
