"""Run `moments bench` with a `sitecustomize` of ours in its processes, and note when
the bench printed its latency (the end of its latency phase: 5 s of warm-up, 15 s
measured). Shared by the benchmarks that look inside the bench's worker."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

Summary = Callable[[Path, float, float], str]
"""(a worker's log file, when the latency printed, seconds before it) -> what to print."""


def run_bench_with_site(
    site_code: str,
    tmp: Path,
    offered: int,
    env_extra: dict[str, str],
    bench_args: Sequence[str] = (),
) -> float:
    """Runs the bench, echoing its output; returns the wall time (epoch seconds) at which
    it printed the latency line. Exits with a message when the bench fails."""
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(site_code)
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    moments = Path(sys.executable).with_name("moments")
    command = [str(moments), "bench", "--offered", str(offered), *bench_args]
    end = None
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as bench:
        assert bench.stdout is not None
        for line in bench.stdout:
            print(line, end="")
            if end is None and "event-to-task latency" in line:
                end = time.time()
    if bench.returncode != 0 or end is None:
        sys.exit(f"moments bench failed (exit {bench.returncode}); nothing to sum")
    return end


def main(
    doc: str, site_code: str, log_dir_variable: str, summary: Summary, offered: int, last: float
) -> None:
    """A benchmark's command line: `--offered` and `--last`, the bench run with
    `site_code` (told where to write its logs by `log_dir_variable`), then `summary` of
    each log the worker left."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--offered", type=int, default=offered, help="events/s, latency phase")
    parser.add_argument("--last", type=float, default=last, help="seconds before the latency")
    parser.add_argument("--events", type=int, help="events to produce (the bench's default)")
    parser.add_argument("--subscribers", type=int, help="distinct subscribers (ditto)")
    args = parser.parse_args()
    bench_args = [
        f"--{name}={value}"
        for name, value in (("events", args.events), ("subscribers", args.subscribers))
        if value is not None
    ]
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp, "logs")
        logs.mkdir()
        end = run_bench_with_site(
            site_code, Path(tmp), args.offered, {log_dir_variable: str(logs)}, bench_args
        )
        for path in sorted(logs.iterdir()):
            print(summary(path, end, args.last))
