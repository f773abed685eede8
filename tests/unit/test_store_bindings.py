"""MOMENTS_STORE=rocksdb where the RocksDB bindings are not installed (`pip install .`, as
the README's plain-process install has it, leaves out the `rocksdb` extra the image has):
the worker stops before it joins anything, and `moments check` says so, each naming the
variable and the fix."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moments.check import Verdict, run_checks
from moments.embedded import free_port
from moments.settings import load_settings
from moments.store import store_problem

NO_BINDINGS = {
    "rocksdict.py": 'raise ImportError("no rocksdict here (test)")\n',
    "rocksdb.py": 'raise ImportError("no rocksdb here (test)")\n',
}
"""Modules that shadow both bindings Faust's RocksDB store tries, as if not installed."""


@pytest.fixture
def without_bindings(tmp_path: Path) -> dict[str, str]:
    """The environment of a process where neither binding imports."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    for name, text in NO_BINDINGS.items():
        (shadow / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    path = os.pathsep.join(p for p in (str(shadow), env.get("PYTHONPATH", "")) if p)
    return env | {
        "PYTHONPATH": path,
        "MOMENTS_STORE": "rocksdb",
        "MOMENTS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nobody there
        "MOMENTS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MOMENTS_METRICS_PORT": "0",
        "MOMENTS_DATA_DIR": str(tmp_path / "data"),
    }


def test_the_worker_stops_before_waiting_for_the_broker(
    without_bindings: dict[str, str], tmp_path: Path
) -> None:
    """It waited for its broker, joined the consumer group and crashed on its first
    assignment with Faust's traceback ("pip install faust-streaming-rocksdb or
    rocksdict", no word of the extra) and exit code 1, a rebalance for every worker."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "moments", "worker"],
            env=without_bindings,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as waited:
        pytest.fail(f"the worker went on to wait for its broker: {waited.stderr!r}"[-2000:])
    assert done.returncode == 2, done.stderr[-2000:]
    assert "MOMENTS_STORE=rocksdb" in done.stderr
    assert ".[rocksdb]" in done.stderr
    assert "MOMENTS_STORE=memory" in done.stderr


CHECK = """
import asyncio, json
from moments.check import run_checks
from moments.settings import load_settings
from moments.store import store_problem
found = asyncio.run(run_checks(load_settings(), timeout_s=2))
print(json.dumps([[f.step, f.verdict.value, f.detail] for f in found]))
"""


def test_moments_check_fails_the_store(without_bindings: dict[str, str], tmp_path: Path) -> None:
    """`moments check` said every step was ok, and the worker it vouched for crashed."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK],
        env=without_bindings,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    findings = json.loads(done.stdout.strip().splitlines()[-1])
    store = [f for f in findings if "rocksdb" in f[2].lower()]
    assert store, findings
    ((_, verdict, detail),) = store
    assert verdict == "FAIL", findings
    assert ".[rocksdb]" in detail


def test_with_the_bindings_the_store_step_is_ok(tmp_path: Path) -> None:
    """Here the bindings are installed (the `dev` extra pulls `rocksdb`)."""
    settings = load_settings(
        store="rocksdb",
        data_dir=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    found = asyncio.run(run_checks(settings, timeout_s=2))
    (store,) = [f for f in found if f.step.startswith("state store")]
    assert store.verdict is Verdict.OK, store


def test_python_rocksdb_alone_is_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust also takes python-rocksdb, but the store's memory bounds
    (`moments.rocksdb_memory`) are set through rocksdict: without it the bounds would not
    hold, so python-rocksdb alone is refused as no bindings are."""
    monkeypatch.setitem(sys.modules, "rocksdict", None)  # import fails
    monkeypatch.setitem(sys.modules, "rocksdb", type(sys)("rocksdb"))  # imports
    problem = store_problem("rocksdb")
    assert problem is not None
    assert ".[rocksdb]" in problem
