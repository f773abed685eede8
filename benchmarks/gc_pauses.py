"""The garbage collector's pauses in the bench's worker: runs `moments bench` with a
`sitecustomize` that times every collection of the worker process, then prints, for
the seconds before the bench printed its latency (the latency phase: 5 s of warm-up,
15 s measured), how many collections there were, their total and the longest.

    .venv/bin/python benchmarks/gc_pauses.py
    .venv/bin/python benchmarks/gc_pauses.py --offered 10000 --last 20
"""

from __future__ import annotations

from pathlib import Path

import bench_site

# Runs in every Python process the bench starts; only the worker ("worker" in argv)
# writes a line per collection: end time, generation, milliseconds.
TIMER = """
import gc, os, sys, time
if "worker" in sys.argv:
    _out = open(os.path.join(os.environ["GC_PAUSES_DIR"], f"gc.{os.getpid()}"), "w")
    _start = [0.0]
    def _time(phase, info):
        if phase == "start":
            _start[0] = time.perf_counter()
        else:
            took = (time.perf_counter() - _start[0]) * 1000
            _out.write(f"{time.time():.3f} {info['generation']} {took:.2f}\\n")
            _out.flush()
    gc.callbacks.insert(0, _time)
"""


def summary(path: Path, end: float, last_s: float) -> str:
    """Collections that ended in the `last_s` seconds before `end` (the worker's own
    shutdown, after it, frees the whole app and is left out)."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    late = [(int(g), float(ms)) for at, g, ms in rows if end - last_s <= float(at) <= end]
    longest = max(late, key=lambda row: row[1], default=(0, 0.0))
    return (
        f"{last_s:.0f} s before the latency figure: {len(late)} collections, "
        f"{sum(ms for _, ms in late):.0f} ms in all, longest {longest[1]:.1f} ms "
        f"(generation {longest[0]}), {sum(1 for _, ms in late if ms > 25)} over 25 ms"
    )


def main() -> None:
    bench_site.main(__doc__ or "", TIMER, "GC_PAUSES_DIR", summary, offered=10_000, last=20.0)


if __name__ == "__main__":
    main()
