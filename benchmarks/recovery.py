"""How long a worker killed with `kill -9` takes to be back: the state table restored
from its changelog, then new events processed.

Produces the bench's events (`moments bench`: mostly usage, 10 per subscriber by
default), lets one worker process them all, kills it with SIGKILL, and starts another
with an empty data directory, so every record comes back from the changelog (what a
pod rescheduled on another node does, or a worker given a partition by a rebalance).
Prints the changelog's size, the new worker's restore time (Faust's rebalance
figure: revocation to the end of recovery, so the records/s is a lower bound of the
reading) and its time from start until it had processed 1,000 fresh events.

    .venv/bin/python benchmarks/recovery.py
    .venv/bin/python benchmarks/recovery.py --events 400000 --subscribers 100000
    .venv/bin/python benchmarks/recovery.py --store rocksdb   # a pod on a new node
    .venv/bin/python benchmarks/recovery.py --store rocksdb --join  # a second pod joins
    .venv/bin/python benchmarks/recovery.py --store rocksdb --compare-with /tmp/old/src

With `--compare-with` workers of this code and of the code under SRC restore the same
changelog in turn (`--rounds` each), each on an empty data directory: restore times and
peak RSS, alternated on the same machine.

With `--join` the first worker is not killed: a second one joins it on an empty data
directory, and the figures are the second's time to its first restore and its CPU
until it goes idle (with RocksDB it also reads a standby copy of the first's
partitions; no events arrive meanwhile, so that is what the CPU is spent on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from faust.types import TP
from rich.console import Console
from rich.progress import Progress

from moments.bench import _cpu_seconds, _peak_rss_mib, produce, start_worker, stop_worker
from moments.connections import kafka_client_kwargs
from moments.embedded import RedisServer, TansuBroker, free_port
from moments.embedded_run import REBALANCE_SECONDS, all_topics
from moments.metrics_server import scrape
from moments.restore import read_changelog
from moments.settings import Settings, load_settings
from moments.topics import ensure_topics

FRESH_EVENTS = 1_000
HOLD_S = 20.0
"""Seconds a restored worker runs on (its window sweep reads every record) in --compare-with."""
IDLE_CPU_S = 0.1
"""CPU seconds in `IDLE_WINDOW_S` below which a worker with no events is idle."""
IDLE_WINDOW_S = 3.0
"""Events produced after the restart: the new worker is back once it has done them."""


def metric(port: int, name: str) -> float:
    try:
        return scrape(port, name)
    except OSError:  # not serving yet
        return 0.0


def wait_for(port: int, name: str, target: float, limit_s: float, what: str) -> float:
    """Seconds until the metric reaches `target`; exits with `what` past `limit_s`."""
    started = time.monotonic()
    while metric(port, name) < target:
        if time.monotonic() - started > limit_s:
            raise SystemExit(f"{what}: not done within {limit_s:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


async def changelog_size(settings: Settings) -> tuple[str, int, int]:
    """The state changelog's name, its records and its subscribers (keys whose newest
    record is not a deletion), read to the end (Tansu's end offsets fall short of it)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, **kafka_client_kwargs(settings)
    )
    await consumer.start()
    try:
        names = [t for t in await consumer.topics() if t.endswith("-changelog")]
        names = [t for t in names if t.startswith(settings.app_id)]
        if len(names) != 1:
            raise SystemExit(f"expected one state changelog of {settings.app_id}, found {names}")
        parts = consumer.partitions_for_topic(names[0]) or set()
    finally:
        await consumer.stop()
    starts: dict[TP, int | None] = {TP(names[0], p): None for p in parts}
    read = await read_changelog(settings.bootstrap_servers, kafka_client_kwargs(settings), starts)
    records = sum(part.end for part in read.values())
    keys = sum(v is not None for part in read.values() for v in part.values.values())
    return names[0], records, keys


def start_second(
    settings: Settings, workdir: Path, console: Console, status: str
) -> tuple[subprocess.Popen[bytes], int, float]:
    """A second worker on an empty data directory, once its first restore is done:
    (process, metrics port, monotonic time it was started at)."""
    port = free_port()
    started = time.monotonic()
    second = start_worker(settings, workdir / "data-2", port, workdir / "worker-2.log")
    try:
        with console.status(status):
            wait_for(port, "moments_consumer_rebalance_seconds_count", 1, 600, "restoring")
    except BaseException:
        stop_worker(second)
        raise
    return second, port, started


def join(settings: Settings, workdir: Path, console: Console) -> None:
    """A second worker joins the running first on an empty data directory: its time to
    the first restore, and its CPU until it is idle (no events arrive meanwhile)."""
    second, _, started = start_second(settings, workdir, console, "second worker: joining")
    joined = time.monotonic() - started
    try:
        with console.status("second worker: reading until idle"):
            last = _cpu_seconds(second.pid)
            while True:
                time.sleep(IDLE_WINDOW_S)
                now = _cpu_seconds(second.pid)
                if now - last < IDLE_CPU_S or time.monotonic() - started > 600:
                    break
                last = now
        idle = time.monotonic() - started - IDLE_WINDOW_S
        cpu = last
    finally:
        stop_worker(second)
    console.print(
        f"second worker: first restore done {joined:.1f} s after its start (the group join "
        f"waits Tansu's {REBALANCE_SECONDS:.0f} s rebalance timeout); idle after about "
        f"{idle:.1f} s, {cpu:.1f} s of CPU by then"
    )


def compare(
    settings: Settings, workdir: Path, console: Console, records: int, rounds: int, other: str
) -> None:
    """Workers on empty data directories restore the same changelog one after the other,
    this code and the code under `other` (its `src`, as PYTHONPATH) alternated: each one's
    restore time and peak RSS once restored and `HOLD_S` later (the window sweep done)."""
    for n in range(rounds):
        for label, pythonpath in (("this code", None), (other, other)):
            rounddir = workdir / f"round-{n}-{'new' if pythonpath is None else 'other'}"
            rounddir.mkdir()
            saved = os.environ.get("PYTHONPATH")
            if pythonpath is not None:
                os.environ["PYTHONPATH"] = pythonpath
            try:
                second, port, _ = start_second(settings, rounddir, console, "restoring")
            finally:
                if saved is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = saved
            try:
                restore = metric(port, "moments_consumer_rebalance_seconds_sum")
                restored_rss = _peak_rss_mib(second.pid)
                time.sleep(HOLD_S)
                rss = _peak_rss_mib(second.pid)
            finally:
                stop_worker(second)
            console.print(
                f"round {n + 1}, {label}: restore {restore:.1f} s, "
                f"{records / max(restore, 1e-9):,.0f} records/s; peak RSS {restored_rss:.0f} "
                f"MiB once restored, {rss:.0f} MiB {HOLD_S:.0f} s later"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--store", choices=("memory", "rocksdb"), default="memory")
    parser.add_argument(
        "--join", action="store_true", help="a second worker joins the first (not killed)"
    )
    parser.add_argument(
        "--compare-with",
        metavar="SRC",
        help="restore the changelog in turn with this code and the code under SRC (e.g. "
        "`git archive HEAD src | tar -x -C /tmp/old` then /tmp/old/src), --rounds times",
    )
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    console = Console(stderr=True)
    workdir = Path(tempfile.mkdtemp(prefix="moments-recovery-"))
    try:
        with TansuBroker(workdir / "tansu") as broker, RedisServer(workdir / "redis") as redis:
            settings = load_settings().model_copy(
                update={
                    "kafka_bootstrap": broker.bootstrap,
                    "redis_url": redis.url,
                    "partitions": args.partitions,
                    "app_id": f"recovery-{int(time.time())}",
                    "rebalance_timeout": REBALANCE_SECONDS,
                    "store": args.store,
                }
            )
            topics, compacted = all_topics(settings)
            kwargs = kafka_client_kwargs(settings)
            asyncio.run(ensure_topics(broker.bootstrap, topics, compacted, client_kwargs=kwargs))
            asyncio.run(produce(settings, args.events, args.subscribers, console))
            port = free_port()
            first = start_worker(settings, workdir / "data-1", port, workdir / "worker-1.log")
            try:
                with Progress(console=console, transient=True) as progress:
                    task = progress.add_task("first worker: processing", total=args.events)
                    limit = time.monotonic() + 120 + args.events / 1000
                    while (done := metric(port, "moments_events_total")) < args.events:
                        if time.monotonic() > limit or first.poll() is not None:
                            raise SystemExit(f"the first worker stopped short; see {workdir}")
                        progress.update(task, completed=done)
                        time.sleep(0.2)
                time.sleep(3)  # its last batch's changelog and commit
                console.print(f"first worker: peak RSS {_peak_rss_mib(first.pid):.0f} MiB")
                if args.join:
                    name, records, keys = asyncio.run(changelog_size(settings))
                    console.print(f"{name} holds {records:,} records of {keys:,} subscribers")
                    join(settings, workdir, console)
                    return
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait()
            name, records, keys = asyncio.run(changelog_size(settings))
            console.print(
                f"killed the first worker; {name} holds {records:,} records of {keys:,} subscribers"
            )
            if args.compare_with:
                compare(settings, workdir, console, records, args.rounds, args.compare_with)
                return

            second, port, started = start_second(
                settings, workdir, console, "second worker: restoring the state"
            )
            recovered = time.monotonic() - started
            try:
                restore = metric(port, "moments_consumer_rebalance_seconds_sum")
                restored_rss = _peak_rss_mib(second.pid)
                # Other event ids than the first run's, so none is skipped as a replay.
                asyncio.run(produce(settings, FRESH_EVENTS, args.subscribers, console, seed=8))
                with console.status("second worker: processing fresh events"):
                    wait_for(port, "moments_events_total", FRESH_EVENTS, 120, "fresh events")
                total = time.monotonic() - started
                # Counted by the window sweep, which goes through every partition at start.
                wait_for(port, "moments_state_subscribers", 1, 600, "counting the state")
                held = metric(port, "moments_state_subscribers")
                rss = _peak_rss_mib(second.pid)
            finally:
                stop_worker(second)
            console.print(
                f"second worker: peak RSS {restored_rss:.0f} MiB once restored, {rss:.0f} MiB "
                "after the fresh events and its window sweep"
            )
            console.print(
                f"restore (revocation to the end of recovery): {restore:.1f} s, "
                f"{records / max(restore, 1e-9):,.0f} changelog records/s; "
                f"done {recovered:.1f} s after the worker started (the group join waits "
                f"Tansu's {REBALANCE_SECONDS:.0f} s rebalance timeout)"
            )
            console.print(
                f"from start to {FRESH_EVENTS:,} fresh events processed: {total:.1f} s; "
                f"the new worker holds {held:,.0f} subscribers' records (the changelog "
                f"{keys:,}; the fresh events may add some)"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
