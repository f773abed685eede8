"""`moments bench` arguments it refuses before starting anything, and what its workers get."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

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


@pytest.mark.parametrize("rate", ["inf", "1e999", "fast" * 50, "\x1b[2J8000"])
def test_an_offered_rate_that_is_no_finite_number_is_shown_cut_with_the_range(
    rate: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--offered inf` was taken (and the bench run at it); a long or odd value was
    echoed whole, an escape sequence reaching the terminal as it was."""
    import moments.bench
    from moments.cli import main

    monkeypatch.setattr(moments.bench, "run_bench", lambda *_a, **_k: 0)
    with pytest.raises(SystemExit):
        main(["bench", "--offered", rate])
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.endswith(": write a finite number of events a second above 0, e.g. 8000"), said
    assert len(said) < 150, said
    assert "\x1b" not in said, said


@pytest.mark.parametrize(
    ("argv", "fix"),
    [
        (["bench", "--workers"], ": write a whole number of 1 or more"),
        (["bench", "--events"], ": write a whole number of 1 or more"),
        (["bench", "--subscribers"], ": write a whole number of 1 or more"),
        (["bench", "--partitions"], ": write a whole number of 1 or more"),
        (["tasks", "deferred", "--limit"], ": write a whole number of 0 or more, 0 for all"),
    ],
)
def test_a_count_that_is_no_whole_number_is_shown_cut_with_the_range(
    argv: list[str], fix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from moments.cli import main

    with pytest.raises(SystemExit):
        main([*argv, "9" * 5000])
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.endswith(fix), said
    assert len(said) < 120, said


@pytest.mark.parametrize("option", ["--events", "--subscribers", "--partitions"])
@pytest.mark.parametrize("value", ["0", "-3", "\x1b[2J4"])
def test_a_count_below_one_is_refused_quoted_with_the_range(
    option: str, value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--partitions 0` and `--subscribers -3` were taken (argparse's `type=int`), and a
    value that was no number echoed whole with no range."""
    import moments.bench
    from moments.cli import main

    monkeypatch.setattr(moments.bench, "run_bench", lambda *_a, **_k: 0)
    with pytest.raises(SystemExit):
        main(["bench", "--rules-only", option, value])
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.endswith(f"{option}: {value!r}: write a whole number of 1 or more"), said


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


def test_a_worker_whose_metrics_port_was_taken_meanwhile_starts_on_another(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A port `free_port` reserved can still be taken by a server elsewhere binding it as
    servers do (SO_REUSEADDR) before the worker binds it: the worker exits naming it. The
    bench then starts it on another port, and the worker serves /metrics there; it ended
    the bench."""
    import socket

    from moments.embedded import free_port, pid_listens_on

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(bench, "free_port", lambda: next(ports))
        tried: list[int] = []
        start_worker = bench.start_worker

        def start(
            settings: Settings, data_dir: Path, port: int, log: Path, worker_src: Path | None
        ) -> Any:
            tried.append(port)
            return start_worker(settings, data_dir, port, log, worker_src)

        monkeypatch.setattr(bench, "start_worker", start)
        settings = Settings(
            kafka_bootstrap=f"127.0.0.1:{free_port()}",  # nobody: the worker waits
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
        )
        proc, port = bench.start_serving_worker(settings, tmp_path / "data", tmp_path / "w.log")
        try:
            assert tried == [taken, port]  # the taken port first, then another
            assert proc.poll() is None, (tmp_path / "w.log").read_text()
            assert pid_listens_on(proc.pid, port) in (True, None)  # None: no /proc to tell
        finally:
            bench.stop_worker(proc)


def _other_tree(root: Path) -> Path:
    """A stand-in for another version's tree: its `moments` says whose it is and exits."""
    package = root / "src" / "moments"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text("import moments, sys; print('ran', moments.__file__)\n")
    return root


class TestWorkerSrc:
    """`moments bench --worker-src DIR`: the workers run DIR's src, the bench this tree's."""

    def test_the_worker_runs_the_other_trees_code(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tree = _other_tree(tmp_path / "old")
        monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))  # kept, after the tree's
        log = tmp_path / "worker.log"
        proc = bench.start_worker(Settings(), tmp_path / "data", 9999, log, worker_src=tree)
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert log.read_text().strip() == f"ran {tree / 'src' / 'moments' / '__init__.py'}"
        assert proc.args == [sys.executable, "-m", "moments", "worker"]

    @pytest.mark.parametrize("given", [True, False])
    def test_the_workers_pythonpath(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: bool
    ) -> None:
        seen: dict[str, str] = {}

        def popen(args: list[str], env: dict[str, str], **kwargs: object) -> object:
            seen.update(env)
            return object()

        monkeypatch.setattr("moments.bench.subprocess.Popen", popen)
        monkeypatch.setenv("PYTHONPATH", "/elsewhere")
        tree = _other_tree(tmp_path / "old") if given else None
        bench.start_worker(Settings(), tmp_path / "data", 9999, tmp_path / "w.log", tree)
        expected = [str(tmp_path / "old" / "src")] if given else []
        assert seen["PYTHONPATH"].split(os.pathsep) == [*expected, "/elsewhere"]

    def test_every_worker_the_bench_starts_gets_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The scale-out run's workers and the single worker alike."""
        given: list[Path | None] = []

        def start(
            settings: Settings, data_dir: Path, port: int, log: Path, worker_src: Path | None
        ) -> Any:
            given.append(worker_src)
            return object()

        monkeypatch.setattr(bench, "start_worker", start)
        monkeypatch.setattr(bench, "_serves_metrics", lambda *_a: True)
        tree = _other_tree(tmp_path / "old")
        workers = [(Settings(), tmp_path / f"d{n}", tmp_path / f"w{n}.log") for n in range(2)]
        bench.start_serving_workers(workers, worker_src=tree)
        bench.start_serving_worker(Settings(), tmp_path / "d", tmp_path / "w.log", worker_src=tree)
        assert given == [tree, tree, tree]

    def test_the_option_reaches_run_bench(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from moments.cli import main

        seen: dict[str, object] = {}

        def fake_run_bench(*args: object, **kwargs: object) -> int:
            seen.update(kwargs)
            return 0

        monkeypatch.setattr(bench, "run_bench", fake_run_bench)
        tree = _other_tree(tmp_path / "old")
        assert main(["bench", "--worker-src", str(tree)]) == 0
        assert seen["worker_src"] == tree
        assert main(["bench"]) == 0
        assert seen["worker_src"] is None

    def test_a_folder_without_src_is_refused_naming_what_to_give(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from moments.cli import main

        monkeypatch.setattr(bench, "run_bench", lambda *_a, **_k: 0)
        assert main(["bench", "--worker-src", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "holds no src/moments/__init__.py" in err
        assert "--worker-src /tmp/old" in err
