"""`benchmarks/worker_calls.py`: the counter it puts in a worker counts each call in the
window (the batch loop's first fetch to the end of the step that handled its `--events`-th
record) and none outside it, and its comparison matches two trees' copies of a function."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

# A stand-in for the worker: a batch loop whose `step` takes a fetch from the consumer,
# makes each record (`wrap`), has `Runtime.handle` call `step` three times a record, then
# marks each (`mark`); and a `wrap` call before the window and a `mark` call after it.
FAKE_WORKER = """
import asyncio, sys, time
from moments.batchloop import BatchLoop, mark, wrap
from moments.consumer import BatchConsumer
from moments.runtime import Runtime

deadline = time.monotonic() + 30
while BatchLoop.step.__name__ != "counted_step":  # the counter's wrappers installed
    assert time.monotonic() < deadline, "the counter did not wrap BatchLoop.step"
    time.sleep(0.05)
wrap("z")  # before the window: not counted

async def main():
    loop = BatchLoop(BatchConsumer([["a", "b"], ["c", "d", "e"]]), Runtime())
    await loop.step()
    await loop.step()
asyncio.run(main())
mark("z")  # after: not counted
"""

FAKE_RUNTIME = """
def step():
    return len("x")

class Runtime:
    async def handle(self, records, store, owned):
        for _ in records:
            step(); step(); step()
"""

FAKE_CONSUMER = """
import asyncio

class Fetch:
    def __init__(self, records):
        self.records = records

class BatchConsumer:
    def __init__(self, fetches):
        self.fetches = asyncio.Queue()
        for records in fetches:
            self.fetches.put_nowait(Fetch(records))

    async def take(self, max_records):
        return await self.fetches.get()
"""

FAKE_BATCHLOOP = """
def wrap(value):
    return value

def mark(record):
    return record

class BatchLoop:
    def __init__(self, source, runtime):
        self.source, self.runtime = source, runtime

    async def step(self):
        fetch = await self.source.take(10)
        records = [wrap(value) for value in fetch.records]
        await self.runtime.handle(records, None, None)
        for record in records:
            mark(record)
"""


def _load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(
        "benchmark_worker_calls", BENCHMARKS / "worker_calls.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


class TestCounter:
    def test_it_counts_the_calls_of_the_window_only(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Five records in two fetches, the batch loop's work on them whole: each record
        made (`wrap`) and marked once, `step` 15 times (3 a record), its `len` as many;
        the calls before the first fetch and after the fifth record's step left out."""
        module = _load(monkeypatch)
        site, fake = tmp_path / "site", tmp_path / "fake" / "moments"
        site.mkdir()
        fake.mkdir(parents=True)
        (site / "sitecustomize.py").write_text(module.COUNTER)
        (fake / "__init__.py").write_text("")
        (fake / "runtime.py").write_text(FAKE_RUNTIME)
        (fake / "consumer.py").write_text(FAKE_CONSUMER)
        (fake / "batchloop.py").write_text(FAKE_BATCHLOOP)
        script = tmp_path / "worker_stand_in.py"
        script.write_text(FAKE_WORKER)
        out = tmp_path / "calls.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_CALLS_")}
        env |= {
            "PYTHONPATH": os.pathsep.join([str(site), str(tmp_path / "fake")]),
            "WORKER_CALLS_OUT": str(out),
            "WORKER_CALLS_EVENTS": "5",
        }
        subprocess.run([sys.executable, str(script), "worker"], env=env, check=True, timeout=60)
        run = json.loads(out.read_text())
        assert (run["records"], run["batches"], run["fetches"]) == (5, 2, 2)
        calls = module.per_event(run)
        for name, each in (("step", 15), ("wrap", 5), ("mark", 5)):
            found = {
                module.short(k): round(n * 5)
                for k, n in calls.items()
                if k.endswith(f":{name}") and not k.startswith("builtin")
            }
            assert list(found.values()) == [each], (name, found)
        lens = {k: n for k, n in calls.items() if k.startswith("builtin len <- ")}
        assert [(module.short(k), n * 5) for k, n in lens.items()] == [
            ("builtin len <- runtime.py:2:step", 15)
        ]


class TestComparison:
    def test_two_trees_copies_of_a_function_are_one(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Keys differ by the tree's directory only; the largest difference comes first."""
        module = _load(monkeypatch)
        old = {
            "/srv/old/src/sinks/ledger.py:10:claim": 2.0,
            "builtin len <- /srv/old/src/a.py:1:f": 5.0,
        }
        new = {"/w/src/sinks/ledger.py:10:claim": 2.5, "builtin len <- /w/src/a.py:1:f": 8.0}
        assert module.differences(new, old, 5) == [
            ("builtin len <- a.py:1:f", 5.0, 8.0),
            ("ledger.py:10:claim", 2.0, 2.5),
        ]

    def test_a_callgrind_run_is_read_by_function(self, monkeypatch: pytest.MonkeyPatch) -> None:
        module = _load(monkeypatch)
        run = {"records": 4, "batches": 1, "callgrind": {"instructions": 40, "functions": {"f": 8}}}
        assert module.per_event(run) == {"f": 2.0}


class TestArguments:
    @pytest.mark.parametrize(
        "argv",
        [
            ["--events", "0"],
            ["--idle", "5", "--callgrind"],
            ["--idle", "-1"],
            ["--scrape-every", "-1"],
        ],
    )
    def test_nonsense_is_refused(self, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
        module = _load(monkeypatch)
        with pytest.raises(SystemExit) as exit_:
            module.parse(argv)
        assert exit_.value.code == 2

    def test_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        args = _load(monkeypatch).parse([])
        assert (args.events, args.subscribers, args.scrape_every, args.callgrind) == (
            20_000,
            2_000,
            0.2,
            False,
        )


class TestPolling:
    @pytest.mark.parametrize("whole", [False, True])
    def test_it_reads_the_followed_sample_alone_as_the_bench_does_or_the_whole_page(
        self, monkeypatch: pytest.MonkeyPatch, whole: bool
    ) -> None:
        """The worker's cost of `moments bench`'s polling: by default the bench's
        restricted page (its followed family alone), with `--scrape-whole` every family."""
        from prometheus_client import CollectorRegistry, Counter, Gauge

        from moments.embedded import free_port
        from moments.metrics_server import serve_metrics
        from moments.settings import load_settings

        module = _load(monkeypatch)
        assert module.parse(["--scrape-whole"] if whole else []).scrape_whole is whole
        registry = CollectorRegistry()
        Counter("moments_events", "events", registry=registry).inc(3)
        Gauge("moments_other", "another family", registry=registry).set(1)
        port = free_port()
        server = serve_metrics(load_settings(metrics_host="127.0.0.1", metrics_port=port), registry)
        try:
            page = module.metrics_page(port, whole).decode()
        finally:
            server.shutdown()
            server.server_close()
        assert "moments_events_total 3.0" in page
        assert ("moments_other" in page) is whole
