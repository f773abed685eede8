"""Run `moments bench` with a `sitecustomize` of ours in its processes, and note when
the bench printed its latency (the end of its latency phase: 5 s of warm-up, 15 s
measured). Shared by the benchmarks that look inside the bench's worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def run_bench_with_site(
    site_code: str, tmp: Path, offered: int, env_extra: dict[str, str]
) -> float:
    """Runs the bench, echoing its output; returns the wall time (epoch seconds) at which
    it printed the latency line. Exits with a message when the bench fails."""
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(site_code)
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    moments = Path(sys.executable).with_name("moments")
    command = [str(moments), "bench", "--offered", str(offered)]
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
