"""Where the latency phase's tail comes from, batch by batch: runs `moments bench` with a
`sitecustomize` that records, in the worker, every batch (start, end, records, the
main thread's CPU, when its tasks were acknowledged, the Kafka timestamps of its
oldest and newest record, the wait for its fetch) and every window sweep; then prints,
for the seconds before the bench printed its latency, their distributions, the share
of the time the loop spent in batches, and the slowest batches.

Reading it: batches whose wall time grows with their size and a loop busy ~90% or more
is queueing near saturation (a batch waits for the one before it); a few long batches
of ordinary size next to a sweep or a slow step point at that step instead. The
bench's end waits until every task is counted, so with a backlog the window also holds
the catch-up after the load stopped.

    .venv/bin/python benchmarks/batch_trace.py --offered 11000 --events 100000 --subscribers 10000
"""

from __future__ import annotations

import statistics
from pathlib import Path

import bench_site

# Runs in every Python process the bench starts; only the worker ("worker" in argv)
# wraps its steps, once their modules are imported, and writes its rows every second.
# B: start, end, records, CPU s, tasks acknowledged at, oldest and newest record
# timestamp, seconds the loop waited for the fetch. S: sweep start, end.
TRACER = """
import os, sys, threading, time
if "worker" in sys.argv:
    _rows = []
    _now = {"acked": 0.0, "take": 0.0}
    def _install():
        while True:
            runtime = sys.modules.get("moments.runtime")
            dispatch = sys.modules.get("sinks.dispatch")
            consumer = sys.modules.get("moments.consumer")
            if all(getattr(m, n, None) for m, n in ((runtime, "Runtime"),
                    (dispatch, "TaskSink"), (consumer, "BatchConsumer"))):
                break
            time.sleep(0.05)
        time.sleep(0.5)  # the modules done importing
        Runtime, TaskSink, Consumer = runtime.Runtime, dispatch.TaskSink, consumer.BatchConsumer
        handle, flush, take, sweep = Runtime.handle, TaskSink.flush, Consumer.take, Runtime.sweep
        async def traced_handle(self, records, *args, **kwargs):
            t0, c0 = time.time(), time.thread_time()
            _now["acked"] = 0.0
            result = await handle(self, records, *args, **kwargs)
            stamps = [r.timestamp_ms for r in records if r.timestamp_ms] or [0]
            _rows.append(("B", t0, time.time(), len(records), time.thread_time() - c0,
                          _now["acked"] or time.time(), min(stamps) / 1000,
                          max(stamps) / 1000, _now["take"]))
            return result
        async def traced_flush(self, *args, **kwargs):
            result = await flush(self, *args, **kwargs)
            _now["acked"] = time.time()
            return result
        async def traced_take(self, *args, **kwargs):
            t0 = time.time()
            fetch = await take(self, *args, **kwargs)
            _now["take"] = time.time() - t0
            return fetch
        async def traced_sweep(self, *args, **kwargs):
            t0 = time.time()
            try:
                return await sweep(self, *args, **kwargs)
            finally:
                _rows.append(("S", t0, time.time()))
        Runtime.handle, TaskSink.flush = traced_handle, traced_flush
        Consumer.take, Runtime.sweep = traced_take, traced_sweep
        out = open(os.path.join(os.environ["BATCH_TRACE_DIR"], f"trace.{os.getpid()}"), "w")
        while True:
            time.sleep(1)
            while _rows:
                out.write("\\t".join(map(str, _rows.pop(0))) + "\\n")
            out.flush()
    threading.Thread(target=_install, daemon=True).start()
"""


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(path: Path, end: float, last_s: float) -> str:
    """Batches and sweeps that started in the `last_s` seconds before `end`."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    batches = [
        [float(x) for x in row[1:]]
        for row in rows
        if row[0] == "B" and float(row[1]) >= end - last_s
    ]
    batches = [b for b in batches if b[0] <= end]
    if len(batches) < 2:
        return "fewer than two batches in the window"
    sweeps = [
        (float(r[1]), float(r[2])) for r in rows if r[0] == "S" and float(r[1]) >= end - last_s
    ]
    sizes = [b[2] for b in batches]
    wall = [b[1] - b[0] for b in batches]
    cpu = [b[3] for b in batches]
    after = [b[1] - b[4] for b in batches]
    newest = [b[0] - b[6] for b in batches]
    oldest = [b[0] - b[5] for b in batches]
    take = [b[7] for b in batches]
    span = batches[-1][1] - batches[0][0]

    def line(label: str, values: list[float], scale: float = 1000.0) -> str:
        return (
            f"  {label:<34} p50 {_q(values, 0.5) * scale:8.1f}  p90 {_q(values, 0.9) * scale:8.1f}"
            f"  p99 {_q(values, 0.99) * scale:8.1f}  max {max(values) * scale:8.1f}"
        )

    out = [
        f"{last_s:.0f} s before the latency figure: {len(batches)} batches, "
        f"the loop in a batch {sum(wall) / span:.0%} of the time; per event "
        f"{sum(wall) / sum(sizes) * 1e6:.1f} µs wall, {sum(cpu) / sum(sizes) * 1e6:.1f} µs "
        f"main-thread CPU",
        line("records", sizes, 1.0),
        line("wall (ms)", wall),
        line("main-thread CPU (ms)", cpu),
        line("after the tasks' ack (ms)", after),
        line("waiting for the fetch (ms)", take),
        line("newest record's age at start (ms)", newest),
        line("oldest record's age at start (ms)", oldest),
        "  sweeps (waiting for the state lock included): "
        + (", ".join(f"{(b - a) * 1000:.0f} ms" for a, b in sweeps) if sweeps else "none"),
        "  slowest batches: start (s into the window), records, wall, CPU, oldest age (ms)",
    ]
    for b in sorted(batches, key=lambda b: b[1] - b[0], reverse=True)[:8]:
        flag = "  (size over twice the median)" if b[2] > 2 * statistics.median(sizes) else ""
        out.append(
            f"    {b[0] - (end - last_s):6.2f} {b[2]:6.0f} {(b[1] - b[0]) * 1000:7.1f}"
            f" {b[3] * 1000:7.1f} {(b[0] - b[5]) * 1000:7.1f}{flag}"
        )
    return "\n".join(out)


def main() -> None:
    bench_site.main(__doc__ or "", TRACER, "BATCH_TRACE_DIR", summary, offered=11_000, last=15.0)


if __name__ == "__main__":
    main()
