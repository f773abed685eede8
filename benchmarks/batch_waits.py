"""What the bench's worker waits for in a batch: runs `moments bench` with a
`sitecustomize` that wraps the batch's steps in the worker process and records, for
each, the wall time and the main thread's CPU time while the step ran; then prints,
for the seconds before the bench printed its latency (the latency phase), their split
per call. The difference is time the batch waited: for Kafka and Redis, or for the GIL
while the consumer thread decoded a fetch. The CPU column also holds whatever else the
event loop ran while the step awaited (the producer's sender, timers), so it is an upper
bound of the step's own CPU and the waiting a lower bound.

    .venv/bin/python benchmarks/batch_waits.py
    .venv/bin/python benchmarks/batch_waits.py --offered 6000 --last 15
"""

from __future__ import annotations

from pathlib import Path

import bench_site

# Runs in every Python process the bench starts; only the worker ("worker" in argv)
# wraps its steps, once their modules are imported, and writes the running totals
# every second: wall time, label, calls, wall seconds, CPU seconds.
WRAPPER = """
import functools, os, sys, threading, time
if "worker" in sys.argv:
    _totals = {}
    def _wrap(owner, name, label):
        original = getattr(owner, name)
        @functools.wraps(original)
        async def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return await original(*args, **kwargs)
            finally:
                row = _totals.setdefault(label, [0, 0.0, 0.0])
                row[0] += 1
                row[1] += time.perf_counter() - wall
                row[2] += time.thread_time() - cpu
        setattr(owner, name, timed)
    def _run():
        while True:
            runtime = sys.modules.get("moments.runtime")
            dispatch = sys.modules.get("sinks.dispatch")
            if getattr(runtime, "Runtime", None) and getattr(dispatch, "TaskSink", None):
                if getattr(runtime, "produce_to_partitions", None):
                    break
            time.sleep(0.1)
        time.sleep(0.5)  # both modules done importing
        _wrap(runtime.Runtime, "handle", "whole batch")
        _wrap(sys.modules["sinks.subscribers"].Subscribers, "record_facts", "facts (Redis)")
        _wrap(dispatch.TaskSink, "flush", "tasks (Redis, Kafka)")
        _wrap(runtime, "produce_to_partitions", "state changelog (Kafka)")
        out = open(os.path.join(os.environ["BATCH_WAITS_DIR"], f"steps.{os.getpid()}"), "w")
        while True:
            time.sleep(1)
            for label, (calls, wall, cpu) in list(_totals.items()):
                out.write(f"{time.time():.3f}\\t{label}\\t{calls}\\t{wall:.6f}\\t{cpu:.6f}\\n")
            out.flush()
    threading.Thread(target=_run, daemon=True).start()
"""


def summary(path: Path, end: float, last_s: float) -> str:
    """Per step, the totals' growth over the `last_s` seconds before `end`."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    first: dict[str, tuple[int, float, float]] = {}
    last: dict[str, tuple[int, float, float]] = {}
    for at, label, calls, wall, cpu in rows:
        if float(at) < end - last_s or float(at) > end:
            continue
        first.setdefault(label, (int(calls), float(wall), float(cpu)))
        last[label] = (int(calls), float(wall), float(cpu))
    lines = [f"{last_s:.0f} s before the latency figure, per call (ms): wall, CPU, waiting"]
    for label, (calls_n, wall_s, cpu_s) in last.items():
        n, w, c = calls_n - first[label][0], wall_s - first[label][1], cpu_s - first[label][2]
        if n:
            per = 1000 / n
            lines.append(
                f"  {label:<26} {n:6d} calls  {w * per:6.2f}  {c * per:6.2f}  {(w - c) * per:6.2f}"
            )
    return "\n".join(lines)


def main() -> None:
    bench_site.main(__doc__ or "", WRAPPER, "BATCH_WAITS_DIR", summary, offered=6_000, last=15.0)


if __name__ == "__main__":
    main()
