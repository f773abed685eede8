"""`moments run`, as `make run` starts it: tasks print, /metrics answers, Ctrl-C leaves nothing.

A subprocess in its own session, so SIGINT reaches the whole group as a terminal's
Ctrl-C would. Its SIGINT starts at the default, as a terminal's foreground job has it:
run from a script's background job (`cmd &`), the suite would hand it down ignored.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from moments.embedded import free_port
from moments.sample import VISITS, expected_moments

pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to `pid` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces; the fields after its closing ')' do not.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def listen_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, in the hex of /proc/net/tcp[6]
    (`0100007F` is 127.0.0.1, `00000000` every interface)."""
    found: set[str] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(name)
        for line in path.read_text().splitlines()[1:] if path.exists() else []:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def start_run(tmp_path: Path, port: int, *args: str, stdout: int) -> subprocess.Popen[bytes]:
    """`moments run` in its own session, with no MOMENTS_* settings from the caller and
    its temporary files under `tmp_path`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    env["TMPDIR"] = str(tmp_path)
    return subprocess.Popen(
        [sys.executable, "-m", "moments", "run", *args, "--metrics-port", str(port)],
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        preexec_fn=interruptible,
    )


def assert_left_nothing(children: set[int], tmp_path: Path) -> None:
    """Every process `moments run` started is gone (within 10 s), and so are its files but
    the worker's log, whose path it printed at the start."""
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)], "processes left behind"
    left = [p.relative_to(tmp_path) for p in tmp_path.rglob("*")]
    assert len(left) == 2, left  # moments-run-XXXX/ and its worker.log
    (log,) = tmp_path.glob("moments-run-*/worker.log")
    assert "[INFO] moments.worker: " in log.read_text()


def interruptible() -> None:
    """In the child before exec: SIGINT as a terminal's foreground job has it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_until(
    proc: subprocess.Popen[bytes], wanted: int, wait_s: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """JSON task lines from stdout until they carry `wanted` moments (a merged task carries
    several); also the other lines seen."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    tasks: list[dict[str, Any]] = []
    other: list[str] = []
    buffer = b""
    deadline = time.monotonic() + wait_s
    while sum(1 + len(t.get("related") or []) for t in tasks) < wanted:
        if time.monotonic() > deadline:
            break
        if not selector.select(timeout=0.5):
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"{"):
                tasks.append(orjson.loads(line))
            elif line.strip():
                other.append(line.decode(errors="replace"))
    return tasks, other


def test_run_prints_roaming_tasks_serves_metrics_and_ctrl_c_leaves_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc = start_run(tmp_path, port, "--json", stdout=subprocess.PIPE)
    try:
        expected = expected_moments()
        # Bounded wait, not a timing check: tasks missing after 60 s fail the comparison below.
        tasks, other = read_until(proc, wanted=len(expected), wait_s=60)
        merged = {
            str(t["moment"]["type"]): [r["moment"]["type"] for r in t["related"]]
            for t in tasks
            if t["related"]
        }
        moments = sorted(
            [str(t["moment"]["type"]) for t in tasks] + [m for ms in merged.values() for m in ms]
        )
        assert moments == sorted(expected), (tasks, other)
        # The failed VoLTE call and the complaint minutes later: one call, not two. (Other
        # moments of a subscriber may join a held call too, depending on arrival order.)
        chen = [t for t in tasks if t["subscriber_id"] == "13600136004"]
        assert len(chen) == 1, chen
        assert {chen[0]["moment"]["type"], *merged[str(chen[0]["moment"]["type"])]} == {
            "service_failure",
            "complaint",
        }
        # A roaming welcome may ride along in the same subscriber's held call (related).
        every = [t["moment"] for t in tasks] + [
            r["moment"] for t in tasks for r in t["related"] or []
        ]
        roaming = [m for m in every if m["type"] == "first_international_roaming"]
        countries = sorted(str(m["params"]["country"]) for m in roaming)
        # Two countries where it was daytime when the sample was made (moments.sample).
        assert len(set(countries)) == len(countries) == 2
        assert set(countries) <= {country for country, _, _ in VISITS}

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"moments_tasks_published_total" in metrics
        # As printed and documented: 127.0.0.1 only, not the worker's every interface.
        assert listen_addresses(port) == {"0100007F"}

        children = descendants(proc.pid)
        assert len(children) >= 3, "expected the worker, Tansu and redis-server"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 130  # interrupted, as shells report Ctrl-C
    finally:
        if proc.poll() is None:  # a failed assertion: still let it stop what it started
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert_left_nothing(children, tmp_path)


def test_sigterm_to_run_stops_everything_and_leaves_nothing(tmp_path: Path) -> None:
    """As systemd or `docker stop` would: SIGTERM to `moments run` alone, not its group."""
    port = free_port()
    proc = start_run(tmp_path, port, "--no-sample", stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:  # the worker's /metrics answers: everything has started
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, "moments run exited while starting"
                assert time.monotonic() < deadline, "the worker's /metrics never answered"
                time.sleep(0.5)
        children = descendants(proc.pid)
        assert len(children) >= 3, "expected the worker, Tansu and redis-server"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert_left_nothing(children, tmp_path)
