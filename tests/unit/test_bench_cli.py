"""`moments bench` arguments it refuses before starting anything, and what its workers get."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments import bench
from moments.settings import Settings


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


@pytest.mark.parametrize("standby", [None, 0, 1])
def test_bench_workers_keep_the_configured_store_and_standby_copies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, standby: int | None
) -> None:
    """`MOMENTS_STANDBY_REPLICAS=1 moments bench` measures workers that keep a copy: the
    bench gives its workers their own environment, so each setting must be passed on."""
    seen: dict[str, str] = {}

    def popen(args: list[str], env: dict[str, str], **kwargs: object) -> object:
        seen.update(env)
        return object()

    monkeypatch.setattr("moments.bench.subprocess.Popen", popen)
    settings = Settings(store="rocksdb", standby_replicas=standby, rocksdb_block_cache_mib=64)
    bench.start_worker(settings, tmp_path / "data", 9999, tmp_path / "worker.log")
    assert seen["MOMENTS_STORE"] == "rocksdb"
    assert seen["MOMENTS_ROCKSDB_BLOCK_CACHE_MIB"] == "64"  # the store's memory bounds too
    assert seen.get("MOMENTS_STANDBY_REPLICAS") == (None if standby is None else str(standby))
