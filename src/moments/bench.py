"""`moments bench`: the detector against the raw client, on the same data, in one run.

Both read the same topics on the same broker: first a plain aiokafka consumer
(orjson decode and a dict update per event: about the limit for Python), then a
detector worker with the configured rules, timed from its first processed event
to its last (the consumer-group join is not counted). The ratio is the figure to
watch: the per-event overhead of the Faust layer, not JSON or rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from moments.cliparts import command_settings, stderr_console
from moments.connections import kafka_client_kwargs
from moments.consumer_metrics import LAG_INTERVAL_S
from moments.embedded import (
    RedisServer,
    TansuBroker,
    death_signal_preexec,
    free_port,
    pid_listens_on,
)
from moments.embedded_run import REBALANCE_SECONDS, all_topics
from moments.metrics_server import scrape
from moments.models import EventType
from moments.settings import Settings
from moments.topiclayout import INPUT_TOPICS
from moments.topics import ensure_topics

MIX: tuple[tuple[EventType, float], ...] = (
    (EventType.USAGE, 0.85),
    (EventType.TOPUP, 0.08),
    (EventType.ROAMING, 0.04),
    (EventType.COMPLAINT, 0.02),
    (EventType.PROFILE, 0.01),
)
"""Share of each event type: mostly usage, rare roaming and complaints."""

COUNTRIES = ("JP", "TH", "KR", "US", "FR", "SG", "GB", "DE")


@dataclass(frozen=True)
class Measurement:
    events: int
    seconds: float
    before: int = 0
    """Events already done when the clock started (a worker's first metrics sample comes
    after its first batch): counted, but not in the rate."""
    cpu_seconds: float | None = None
    """CPU time the worker process(es) used while timed: less load-sensitive than the rate
    on a shared machine, and below `seconds` x workers when a worker waits."""

    @property
    def rate(self) -> float:
        return (self.events - self.before) / self.seconds if self.seconds > 0 else 0.0


def bench_events(
    count: int, subscribers: int, seed: int = 7
) -> Iterator[tuple[EventType, bytes, bytes]]:
    """`count` small JSON events over `subscribers` subscribers: (type, key, value)."""
    rng = random.Random(seed)  # noqa: S311  # test data, not secrets
    kinds, weights = zip(*MIX, strict=True)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    step = dt.timedelta(hours=2) / max(count, 1)
    for i in range(count):
        sub = str(13_000_000_000 + rng.randrange(subscribers))
        event_type = rng.choices(kinds, weights)[0]
        value: dict[str, object] = {
            "event_id": f"b{seed}-{i}",
            "subscriber_id": sub,
            "occurred_at": (start + step * i).isoformat(),
            "region": rng.choice(("NJ", "SZ", "WX")),
        }
        if event_type is EventType.USAGE:
            value |= {"kind": "voice", "quantity": rng.randrange(10, 900), "charge": "0.30"}
        elif event_type is EventType.TOPUP:
            value |= {"amount": rng.choice(("30", "50", "100")), "channel": "app"}
        elif event_type is EventType.ROAMING:
            value |= {
                "country": rng.choice(COUNTRIES),
                "roaming_type": rng.choice(("international", "domestic")),
            }
        elif event_type is EventType.COMPLAINT:
            value |= {
                "complaint_id": f"c{i}",
                "category": "network",
                "severity": 2,
                "status": "opened",
            }
        else:
            value |= {"tier": rng.choice(("gold", "silver", "standard"))}
        yield event_type, sub.encode(), orjson.dumps(value)


async def produce(
    settings: Settings, count: int, subscribers: int, console: Console, seed: int = 7
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        **kafka_client_kwargs(settings),
    )
    await producer.start()
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"producing {count:,} events", total=count)
            pending = []
            events = bench_events(count, subscribers, seed)
            for n, (event_type, key, value) in enumerate(events, start=1):
                pending.append(
                    await producer.send(settings.topic(event_type.value), value=value, key=key)
                )
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
                    progress.update(task, completed=n)
            await asyncio.gather(*pending)
            progress.update(task, completed=count)
    finally:
        await producer.stop()


async def raw_consume(settings: Settings, count: int) -> Measurement:
    """The baseline: aiokafka, orjson and a dict update per event; no framework."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=10_000,
        **kafka_client_kwargs(settings),
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(settings.topic(t.value), p)
            for t in INPUT_TOPICS
            for p in range(settings.partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last_seen: dict[bytes, object] = {}
        seen = 0
        started = 0.0
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not started and batches:
                started = time.perf_counter()
            for records in batches.values():
                for record in records:
                    if record.value is not None and record.key is not None:
                        last_seen[record.key] = orjson.loads(record.value)["occurred_at"]
                seen += len(records)
        return Measurement(seen, time.perf_counter() - started)
    finally:
        await consumer.stop()


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _peak_rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


LATENCY_WARMUP_S = 5.0
"""Seconds of offered load before the latency is measured."""


@dataclass(frozen=True)
class Latency:
    offered_rate: float
    tasks: int
    p50: float
    p99: float
    busy: float
    """The worker's CPU time over the measured seconds, as a share of one core: how far
    from saturation "half the measured rate" left it (small batches cost more per event)."""
    unacknowledged: str = ""
    """What the broker did not take of the load (`moments.latency.Offered.said`): empty
    when every send was acknowledged."""


def measure_latency(
    settings: Settings, port: int, pid: int, rate: float, seconds: float, console: Console
) -> Latency:
    """Event-to-task latency on the running worker (`pid`) at a fixed offered load, after
    `LATENCY_WARMUP_S` of the same load (not measured): the steady state, not the worker's
    catch-up after the throughput run (the window sweep it starts then ran up to 4 s)."""
    from moments.latency import buckets, offer, quantile

    before: dict[float, float] = {}
    cpu: list[float] = []  # worker CPU seconds and wall clock, at the warm-up's end

    def snapshot() -> None:
        before.update(buckets(port))
        cpu[:] = [_cpu_seconds(pid), time.perf_counter()]

    total = LATENCY_WARMUP_S + seconds
    with console.status(f"latency: offering {rate:,.0f} events/s for {total:.0f}s"):
        offered = asyncio.run(
            offer(settings, rate, seconds, warmup=LATENCY_WARMUP_S, on_warm=snapshot)
        )
        tasks = offered.tasks  # of the events acknowledged: a failed send makes no task
        busy = (_cpu_seconds(pid) - cpu[0]) / max(time.perf_counter() - cpu[1], 1e-9)
        deadline = time.monotonic() + 60
        after = buckets(port)
        while after.get(float("inf"), 0) - before.get(float("inf"), 0) < tasks:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
            after = buckets(port)
    return Latency(
        rate,
        tasks,
        quantile(0.5, before, after),
        quantile(0.99, before, after),
        busy,
        offered.said(),
    )


def detector_consume(
    settings: Settings,
    count: int,
    workdir: Path,
    console: Console,
    latency_s: float = 15.0,
    offered: float | None = None,
    worker_src: Path | None = None,
) -> tuple[Measurement, float, Latency | None]:
    """A worker subprocess over the same topics (on `worker_src`'s code if given, see
    `start_worker`): (rate, peak RSS in MiB, latency at `offered` events/s, by default half
    the measured rate)."""
    log_path = workdir / "worker.log"
    proc, port = start_serving_worker(settings, workdir / "data", log_path, worker_src=worker_src)
    try:
        started = 0.0
        seen = 0.0
        before = 0.0
        cpu_at_start = 0.0
        deadline = time.monotonic() + 120 + count / 1000
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("detector: joining the group", total=count)
            while seen < count:
                if proc.poll() is not None:
                    raise RuntimeError(f"the worker exited with {proc.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker read {seen:.0f} of {count}; see {log_path}")
                try:
                    seen = scrape(port, "moments_events_total")
                except OSError:
                    seen = 0.0
                if seen and not started:
                    started = time.perf_counter()
                    before = seen
                    cpu_at_start = _cpu_seconds(proc.pid)
                    progress.update(task, description="detector: processing")
                progress.update(task, completed=seen)
                time.sleep(0.2)
        # The first sample came up to one poll after the first batch: count it out.
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(proc.pid) - cpu_at_start
        measured = Measurement(int(seen), elapsed, int(before), cpu)
        latency = None
        if latency_s > 0:
            rate = offered if offered is not None else measured.rate / 2
            latency = measure_latency(settings, port, proc.pid, rate, latency_s, console)
        return measured, _peak_rss_mib(proc.pid), latency
    finally:
        stop_worker(proc)


PORT_ATTEMPTS = 5
"""Ports a worker is started on before the bench gives up (`start_serving_worker`)."""

METRICS_PORT_TAKEN = re.compile(r"cannot serve /metrics on \S+: Address already in use")
"""What a worker says, and exits 2 on, when its MOMENTS_METRICS_PORT is taken."""


def start_serving_worker(
    settings: Settings,
    data_dir: Path,
    log_path: Path,
    wait_s: float = 60.0,
    worker_src: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """A `moments worker` subprocess serving /metrics on a free port: (process, port)."""
    [started] = start_serving_workers([(settings, data_dir, log_path)], wait_s, worker_src)
    return started


def start_serving_workers(
    workers: list[tuple[Settings, Path, Path]],
    wait_s: float = 60.0,
    worker_src: Path | None = None,
) -> list[tuple[subprocess.Popen[bytes], int]]:
    """`moments worker` subprocesses (settings, data folder, log file each), all started
    before any is waited for, each serving /metrics on a free port: (process, port) each;
    on `worker_src`'s code if given (`start_worker`).

    `free_port` keeps the port reserved from other processes' picks (`free_port` in a test
    run beside, another bench), but a server started elsewhere on that very port, binding
    with SO_REUSEADDR as servers do, may still listen on it before the worker does, and the
    worker then exits naming the port. Such a worker is started again on another port, up to
    `PORT_ATTEMPTS` times. Returns once each worker holds its port (where /proc tells)."""
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for settings, data_dir, log_path in workers:
            port = free_port()
            started.append((start_worker(settings, data_dir, port, log_path, worker_src), port))
        for n, (settings, data_dir, log_path) in enumerate(workers):
            for attempt in range(1, PORT_ATTEMPTS + 1):
                proc, port = started[n]
                if _serves_metrics(proc, port, log_path, wait_s):
                    break
                if attempt == PORT_ATTEMPTS:
                    raise RuntimeError(
                        f"the worker found {PORT_ATTEMPTS} free ports in turn taken by the "
                        f"time it bound /metrics; see {log_path}"
                    )
                port = free_port()
                started[n] = (start_worker(settings, data_dir, port, log_path, worker_src), port)
    except BaseException:
        for proc, _ in started:
            stop_worker(proc)
        raise
    return started


def _serves_metrics(
    proc: subprocess.Popen[bytes], port: int, log_path: Path, wait_s: float
) -> bool:
    """True once the worker holds `port` (or where /proc cannot tell); False if it exited
    because another process had taken the port. Raises if it exited for another reason
    or did not bind within `wait_s`."""
    deadline = time.monotonic() + wait_s
    while (held := pid_listens_on(proc.pid, port)) is False and proc.poll() is None:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the worker did not serve /metrics on port {port} within {wait_s:.0f} s; "
                f"see {log_path}"
            )
        time.sleep(0.05)
    if held is not False:
        return True
    proc.wait()
    if METRICS_PORT_TAKEN.search(log_path.read_text(errors="replace")):
        return False
    raise RuntimeError(f"the worker exited with {proc.returncode}; see {log_path}")


def start_worker(
    settings: Settings,
    data_dir: Path,
    port: int,
    log_path: Path,
    worker_src: Path | None = None,
) -> subprocess.Popen[bytes]:
    """A `moments worker` subprocess for these settings, gone with the bench if it dies.
    With `worker_src` (a checkout or `git archive` of another version: the folder holding
    its `src`), the worker runs that tree's code: its `src` goes first on the worker's
    PYTHONPATH, while the bench, its raw reader and its events stay this tree's, so a
    pair of runs differs in the worker alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    if worker_src is not None:
        path = [str(worker_src_path(worker_src)), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(path)
    env |= {
        "MOMENTS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MOMENTS_REDIS_URL": settings.redis_url,
        "MOMENTS_APP_ID": settings.app_id,
        "MOMENTS_TOPIC_PREFIX": settings.topic_prefix,
        "MOMENTS_PARTITIONS": str(settings.partitions),
        "MOMENTS_REBALANCE_TIMEOUT": str(settings.rebalance_timeout),
        # The batch knobs as configured, so the bench measures the worker one would run.
        "MOMENTS_BATCH_SIZE": str(settings.batch_size),
        "MOMENTS_FETCH_WAIT_MS": str(settings.fetch_wait_ms),
        "MOMENTS_DATA_DIR": str(data_dir),
        "MOMENTS_STORE": settings.store,
        "MOMENTS_METRICS_PORT": str(port),
        "MOMENTS_LOG_LEVEL": "WARNING",
    }
    if settings.rules is not None:
        env["MOMENTS_RULES"] = str(settings.rules)
    if settings.store == "rocksdb":  # the store's memory bounds as configured
        env |= {
            "MOMENTS_ROCKSDB_BLOCK_CACHE_MIB": str(settings.rocksdb_block_cache_mib),
            "MOMENTS_ROCKSDB_WRITE_BUFFER_MIB": str(settings.rocksdb_write_buffer_mib),
            "MOMENTS_ROCKSDB_WRITE_BUFFERS": str(settings.rocksdb_write_buffers),
            "MOMENTS_ROCKSDB_MAX_OPEN_FILES": str(settings.rocksdb_max_open_files),
        }
    if settings.standby_replicas is not None:
        env["MOMENTS_STANDBY_REPLICAS"] = str(settings.standby_replicas)
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "moments", "worker"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=death_signal_preexec(),  # gone with the bench even if it is killed
        )


def worker_src_path(tree: Path) -> Path:
    """The `src` of another version's tree, for its worker's PYTHONPATH. Raises ValueError
    naming what to give when `tree` holds no `src/moments`."""
    src = tree.resolve() / "src"
    if not (src / "moments" / "__init__.py").is_file():
        raise ValueError(
            f"{tree} holds no src/moments/__init__.py: give the folder that holds the other "
            "version's src, e.g. after `git archive <commit> src | tar -x -C /tmp/old`, "
            "--worker-src /tmp/old"
        )
    return src


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class ScaleOut:
    """Several workers in one consumer group over the same events."""

    workers: int
    measured: Measurement
    """All events, from the first processed by any worker to the last (joins included)."""
    per_worker: tuple[int, ...]
    """Events each worker processed: how the partitions were shared."""
    rebalances: int
    """Rebalances the workers went through while measured (each pauses processing)."""
    assigned: tuple[int, ...]
    """Input partitions each worker held at the end."""


def _metric_or_zero(port: int, name: str) -> float:
    try:
        return scrape(port, name)
    except OSError:
        return 0.0


def _assigned(ports: list[int]) -> tuple[int, ...]:
    return tuple(
        int(_metric_or_zero(port, "moments_consumer_assigned_partitions")) for port in ports
    )


def scale_out_consume(
    settings: Settings,
    count: int,
    workers: int,
    workdir: Path,
    console: Console,
    worker_src: Path | None = None,
) -> ScaleOut:
    """`workers` worker subprocesses started together as a new consumer group (own app id,
    state and ledger) over the same topics, timed like the single worker: from the first
    processed event to the last. On `worker_src`'s code if given (`start_worker`)."""
    group = settings.model_copy(update={"app_id": f"{settings.app_id}-x{workers}"})
    started_workers = start_serving_workers(
        [
            (group, workdir / f"data-{n}", workdir / f"worker-x{workers}-{n}.log")
            for n in range(workers)
        ],
        worker_src=worker_src,
    )
    procs = [proc for proc, _ in started_workers]
    ports = [port for _, port in started_workers]
    try:
        started = 0.0
        seen = 0.0
        before = 0.0
        counts = [0.0] * workers
        rebalances_at_start = 0.0
        cpu_at_start = 0.0
        deadline = time.monotonic() + 120 + count / 1000
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{workers} workers: joining the group", total=count)
            while seen < count:
                for n, proc in enumerate(procs):
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"worker {n} exited with {proc.returncode}; see {workdir}"
                        )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{workers} workers read {seen:.0f} of {count}; see {workdir}"
                    )
                counts = [_metric_or_zero(port, "moments_events_total") for port in ports]
                seen = sum(counts)
                if seen and not started:
                    started = time.perf_counter()
                    before = seen
                    cpu_at_start = sum(_cpu_seconds(p.pid) for p in procs)
                    rebalances_at_start = sum(
                        _metric_or_zero(port, "moments_consumer_rebalances_total") for port in ports
                    )
                    progress.update(task, description=f"{workers} workers: processing")
                progress.update(task, completed=seen)
                time.sleep(0.2)
        elapsed = time.perf_counter() - started
        cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu_at_start
        rebalances = sum(
            _metric_or_zero(port, "moments_consumer_rebalances_total") for port in ports
        )
        # The gauge is set by the lag sampler every LAG_INTERVAL_S: a run shorter than
        # that can end before a worker's first sample since the group settled.
        assigned = _assigned(ports)
        expected = settings.partitions * len(INPUT_TOPICS)
        settle = time.monotonic() + 2 * LAG_INTERVAL_S + 1
        while (sum(assigned) != expected or not all(assigned)) and time.monotonic() < settle:
            time.sleep(0.2)
            assigned = _assigned(ports)
        return ScaleOut(
            workers,
            Measurement(int(seen), elapsed, int(before), cpu),
            tuple(int(c) for c in counts),
            int(rebalances - rebalances_at_start),
            assigned,
        )
    finally:
        for proc in procs:
            stop_worker(proc)


def print_rule_costs(count: int, subscribers: int, rules_path: Path | None) -> None:
    from moments.gctune import tune_gc
    from moments.rulecost import decode_cost, rule_costs
    from rules.catalog import load_rules

    tune_gc()  # the worker's young-generation settings
    console = stderr_console()
    with console.status("rules in process: no rules, the catalog, 200 rules"):
        events = list(bench_events(count, subscribers))
        costs = rule_costs(events, load_rules(rules_path))
        decoding = decode_cost(events)
    table = Table(title=f"detector in process (no broker), {count:,} events")
    per_subscriber = f"state bytes/subscriber ({count / max(subscribers, 1):.0f} events each)"
    for column in ("rules", "count", "events/s", "µs/event", per_subscriber):
        table.add_column(column, justify="right")
    for cost in costs:
        table.add_row(
            cost.label,
            str(cost.rules),
            f"{cost.events_per_s:,.0f}",
            f"{cost.us_per_event:.1f}",
            f"{cost.state_bytes:.0f}",
        )
    Console().print(table)
    base = costs[0].us_per_event
    Console().print(
        f"rule cost per event: catalog {costs[1].us_per_event - base:.1f} µs, "
        f"200 rules {costs[2].us_per_event - base:.1f} µs"
    )
    Console().print(f"validating an event alone (the contract's model): {decoding:.1f} µs")


def run_bench(
    count: int,
    subscribers: int,
    partitions: int,
    rules_only: bool = False,
    workers: int = 1,
    offered: float | None = None,
    worker_src: Path | None = None,
) -> int:
    """`workers` > 1 adds a scale-out run: that many workers in a new group, same events.
    `offered`: the latency phase's load (None: half the measured rate). `worker_src`: the
    workers run that tree's `src` (`start_worker`); the rest stays this tree's."""
    base = command_settings()  # its passwords masked in the log, as every command's
    print_rule_costs(min(count, 100_000), subscribers, base.rules)
    if rules_only:
        return 0
    console = stderr_console()
    workdir = Path(tempfile.mkdtemp(prefix="moments-bench-"))
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("MOMENTS_KAFKA_BOOTSTRAP")
        redis_url = os.environ.get("MOMENTS_REDIS_URL")
        if bootstrap is None:
            bootstrap = stack.enter_context(TansuBroker(workdir / "tansu")).bootstrap
        if redis_url is None:
            redis_url = stack.enter_context(RedisServer(workdir / "redis")).url
        settings = base.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "redis_url": redis_url,
                "partitions": partitions,
                "app_id": f"bench-{os.getpid()}-{int(time.time())}",
                "topic_prefix": f"bench{int(time.time())}.",
                "rebalance_timeout": REBALANCE_SECONDS,
            }
        )
        topics, compacted = all_topics(settings)
        asyncio.run(
            ensure_topics(bootstrap, topics, compacted, client_kwargs=kafka_client_kwargs(settings))
        )
        asyncio.run(produce(settings, count, subscribers, console))
        console.print(f"produced {count:,} events over {subscribers:,} subscribers")
        raw = asyncio.run(raw_consume(settings, count))
        console.print(f"raw aiokafka: {raw.rate:,.0f} events/s")
        scale = None
        if workers > 1:  # before the single worker, whose latency phase adds events
            scale = scale_out_consume(settings, count, workers, workdir, console, worker_src)
        detector, rss, latency = detector_consume(
            settings, count, workdir, console, offered=offered, worker_src=worker_src
        )
    # Broker, Redis and workers have stopped; their logs are kept only when a run fails.
    shutil.rmtree(workdir, ignore_errors=True)
    table = Table(title=f"{count:,} events, {subscribers:,} subscribers, {partitions} partitions")
    columns = ("reader", "events", "done before the first sample", "seconds", "events/s")
    for column in (*columns, "worker CPU µs/event"):
        table.add_column(column, justify="right")
    rows = [("raw aiokafka + orjson", raw), ("moments worker", detector)]
    if scale is not None:
        rows.append((f"{scale.workers} moments workers", scale.measured))
    for label, m in rows:
        timed = m.events - m.before
        cpu = f"{m.cpu_seconds / timed * 1e6:.0f}" if m.cpu_seconds and timed else ""
        table.add_row(
            label, f"{m.events:,}", f"{m.before:,}", f"{m.seconds:.2f}", f"{m.rate:,.0f}", cpu
        )
    Console().print(table)
    if worker_src is not None:
        Console().print(f"workers ran {worker_src_path(worker_src)} (--worker-src)")
    Console().print(
        f"ratio detector/raw: {detector.rate / raw.rate:.2f}   worker peak RSS: {rss:.0f} MiB"
    )
    if latency is not None:
        Console().print(
            f"event-to-task latency at {latency.offered_rate:,.0f} events/s offered "
            f"({'as asked' if offered is not None else 'half the measured rate'}), "
            f"{latency.tasks} tasks: "
            f"p50 {latency.p50 * 1000:.0f} ms, p99 {latency.p99 * 1000:.0f} ms; "
            f"worker CPU meanwhile {latency.busy:.0%} of a core"
        )
        if latency.unacknowledged:  # beside the figures it qualifies
            Console().print(f"latency: {latency.unacknowledged}", markup=False, highlight=False)
    if scale is not None:
        Console().print(
            f"ratio {scale.workers} workers / 1 worker: "
            f"{scale.measured.rate / detector.rate:.2f}   "
            f"events per worker {', '.join(f'{n:,}' for n in scale.per_worker)}; "
            f"input partitions per worker at the end {', '.join(map(str, scale.assigned))}; "
            f"{scale.rebalances} rebalance(s) while measured; "
            f"{os.cpu_count()} CPU cores shared by every process of the run"
        )
    return 0
