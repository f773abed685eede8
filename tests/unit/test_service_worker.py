"""The worker process: its root logger stays at the configured level
(moments.service_worker), and signals do what operations.md says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

# In a child process: Faust's logging set-up changes the root logger for good.
PROBE = """
import logging, sys, faust
from moments.service_worker import ServiceWorker
cls = ServiceWorker if sys.argv[1] == "ours" else faust.Worker
app = faust.App("probe", broker="kafka://127.0.0.1:1", web_enabled=False, autodiscover=False)
cls(app, loglevel=sys.argv[2], quiet=True)._setup_logging()
root = logging.getLogger()
handlers = ",".join(sorted(type(h).__name__ for h in root.handlers))
print(logging.getLevelName(root.level), handlers, file=sys.__stderr__)
"""


def probe(worker: str, level: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, worker, level],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stderr.strip().splitlines()[-1].split()


@pytest.mark.parametrize(("level", "expected"), [("warn", "WARNING"), ("info", "INFO")])
def test_the_root_logger_stays_at_the_level_without_a_spinner(level: str, expected: str) -> None:
    assert probe("ours", level) == [expected, "StreamHandler"]


def test_faust_own_worker_puts_it_at_debug_at_warn() -> None:
    """Why the class exists: a Faust upgrade that stops doing this makes it unneeded."""
    assert probe("faust", "warn") == ["DEBUG", "SpinnerHandler,StreamHandler"]


SIGNAL_PROBE = """
import asyncio, os, pdb, signal, sys, faust
from moments.service_worker import ServiceWorker
cls = ServiceWorker if sys.argv[1] == "ours" else faust.Worker

def no_debugger(*args, **kwargs):
    print("DEBUGGER", file=sys.__stderr__)

pdb.set_trace = no_debugger
app = faust.App("probe", broker="kafka://127.0.0.1:1", web_enabled=False, autodiscover=False)
worker = cls(app, loglevel="warn", quiet=True, stderr=sys.__stderr__)
worker.install_signal_handlers()

async def signalled():
    os.kill(os.getpid(), signal.SIGUSR2)
    await asyncio.sleep(0.3)

worker.loop.run_until_complete(signalled())
"""


@pytest.mark.parametrize(
    ("worker", "expected"), [("ours", "THREAD MainThread"), ("faust", "DEBUGGER")]
)
def test_sigusr2_writes_the_stacks_instead_of_starting_the_debugger(
    worker: str, expected: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_PROBE, worker],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert expected in done.stderr
    assert ("DEBUGGER" in done.stderr) == (worker == "faust")


def _worker_env(tmp_path: Path) -> dict[str, str]:
    from moments.embedded import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    return env | {
        "MOMENTS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nobody: it waits
        "MOMENTS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MOMENTS_METRICS_PORT": "0",
        "MOMENTS_DATA_DIR": str(tmp_path / "data"),
    }


@contextmanager
def _waiting_worker(
    tmp_path: Path, prefix: Sequence[str] = (), env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A worker (run under `prefix`, with `env` added) waiting for a broker that is not
    there: once its log says so, the process and its log. Killed at the end if it still
    runs."""
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "moments", "worker"],
            env=_worker_env(tmp_path) | (env or {}),
            stdout=out,
            stderr=out,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 60
            while "not reachable yet" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)  # a poll for the log line, not a timing
            assert "not reachable yet" in log.read_text(), log.read_text()[-2000:]
            yield proc, log
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_sighup_while_the_worker_waits_for_kafka_does_not_end_it(tmp_path: Path) -> None:
    """Before its reload handler was installed, SIGHUP's default ended the worker (exit
    129, no log line): `systemctl reload` during a start killed it (ops review)."""
    with _waiting_worker(tmp_path) as (proc, log):
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "SIGHUP while the worker starts" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        assert proc.poll() is None


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2], ids=["USR1", "USR2"])
def test_sigusr_while_the_worker_waits_for_kafka_writes_the_stacks_and_goes_on(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Before Faust's worker handles SIGUSR1 and SIGUSR2 (each writes every thread's
    stack), their default ended the worker (exit -10, -12, no log line): an operator
    asking a worker slow to start where it waits killed it. Now it writes the stacks, as
    it does once Faust runs, and waits on."""
    with _waiting_worker(tmp_path) as (proc, log):
        proc.send_signal(signum)
        deadline = time.monotonic() + 30
        said = f"{signum.name} while the worker starts"
        while said not in log.read_text() or "most recent call first" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        assert " in _prepare" in log.read_text()  # the start-up's frames, the wait's caller
        assert proc.poll() is None, log.read_text()[-2000:]


def _json_records(text: str) -> list[dict[str, object]]:
    """Every line of a JSON log as its object; a line that is none fails the test."""
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a line of the JSON log is no JSON: {line[:200]!r}")
    return records


def test_sigusr1_while_the_worker_starts_with_json_logs_is_one_json_record(
    tmp_path: Path,
) -> None:
    """With MOMENTS_LOG_FORMAT=json, the stacks SIGUSR1 gives during the start are one log
    record: faulthandler's plain lines (`Thread 0x...`, `  File ...`) broke the
    one-object-per-line log a collector reads."""
    env = {"MOMENTS_LOG_FORMAT": "json"}
    with _waiting_worker(tmp_path, env=env) as (proc, log):
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while " in _prepare" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()[-2000:]
        records = _json_records(log.read_text())
    stacks = [r for r in records if "SIGUSR1 while the worker starts" in str(r["message"])]
    assert len(stacks) == 1
    assert " in _prepare" in str(stacks[0]["message"])


JSON_CRY_PROBE = """
import asyncio, os, signal, sys, faust
from moments.logformat import faust_logging_config
from moments.service_worker import ServiceWorker

app = faust.App(
    "probe", broker="kafka://127.0.0.1:1", web_enabled=False, autodiscover=False,
    logging_config=faust_logging_config("json"),
)
worker = ServiceWorker(app, loglevel="warn", quiet=True, stderr=sys.__stderr__)
worker._setup_logging()
worker.install_signal_handlers()
held = {"subscriber_id": "13800138001"}  # a local variable the dump shows, masked

async def signalled():
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.sleep(0.5)

worker.loop.run_until_complete(signalled())
"""


def test_sigusr1_with_json_logs_is_one_json_record() -> None:
    """Once Faust's worker runs, SIGUSR1's dump (every thread's and task's stack and
    their local variables) with JSON logs is one record: it was written as plain text,
    hundreds of lines each a parse error (or an entry of its own) for the collector."""
    done = subprocess.run(
        [sys.executable, "-c", JSON_CRY_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    records = _json_records(done.stderr)
    dumps = [r for r in records if "THREAD MainThread" in str(r["message"])]
    assert len(dumps) == 1, done.stderr[-2000:]
    assert str(dumps[0]["message"]).startswith("SIGUSR1: every thread's and task's stack")
    assert "13800138001" not in done.stderr  # masked as any log record is
    assert "138****8001" in str(dumps[0]["message"])


def test_a_misspelt_variable_in_the_env_file_is_named_at_start(tmp_path: Path) -> None:
    """As one in the environment is: `.env` in the worker's directory is read too, and a
    typo there (`MOMENTS_LIVE_FORM`) left the default in force without a word."""
    (tmp_path / ".env").write_text("MOMENTS_LIVE_FORM=2027-02-15\n")
    with _waiting_worker(tmp_path) as (_, log):
        said = log.read_text()
    assert "MOMENTS_LIVE_FORM (in .env) is not a setting and is ignored" in said, said[-2000:]
    assert "did you mean MOMENTS_LIVE_FROM?" in said


def _first_pid_in_namespace() -> list[str] | None:
    """`unshare` arguments that run a command as PID 1 of a new PID namespace, as the
    image's `ENTRYPOINT ["moments"]` runs in a container; None where that is not allowed."""
    import shutil

    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run(
        [unshare, "--pid", "--fork", "sh", "-c", 'test "$$" = 1'],
        capture_output=True,
        timeout=30,
    )
    return [unshare, "--pid", "--fork"] if probe.returncode == 0 else None


@pytest.mark.parametrize("pid_one", [False, True], ids=["process", "container-pid-1"])
def test_sigterm_while_the_worker_waits_for_kafka_ends_it(tmp_path: Path, pid_one: bool) -> None:
    """Before Faust's worker handles SIGTERM (the worker waits for its broker, say), the
    signal had its default action. In a container the worker is PID 1 (the image's
    ENTRYPOINT, no init), and the kernel drops a signal PID 1 has no handler for:
    `docker stop` and Kubernetes waited their whole grace period (60 s) for a worker that
    had read nothing yet, then killed it. It now ends at once, with exit code 0 and a log
    line, as a process or as PID 1."""
    prefix: list[str] = []
    if pid_one:
        found = _first_pid_in_namespace()
        if found is None:
            pytest.skip("no unshare --pid here (needs CAP_SYS_ADMIN)")
        prefix = found
    with _waiting_worker(tmp_path, prefix) as (proc, log):
        target = proc.pid
        if pid_one:  # the worker is unshare's child
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
            target = int(children.split()[0])
        try:
            os.kill(target, signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail("still running 30 s after SIGTERM:\n" + log.read_text()[-2000:])
        finally:
            if proc.poll() is None and pid_one:
                os.kill(target, signal.SIGKILL)
    assert code == 0, log.read_text()[-2000:]
    assert "SIGTERM while the worker starts" in log.read_text()


EARLY_SIGTERM_PROBE = """
import os, signal, sys, time, faust
from moments.service_worker import ServiceWorker, note_sigterm

# As `run_worker` leaves it for Faust's start; the signal comes before Faust handles it.
signal.signal(signal.SIGTERM, note_sigterm)
os.kill(os.getpid(), signal.SIGTERM)
app = faust.App("probe", broker="kafka://127.0.0.1:1", web_enabled=False, autodiscover=False)
app.stop_grace_s = 0.5
worker = ServiceWorker(app, loglevel="warn", quiet=True, stderr=sys.__stderr__)
worker.install_signal_handlers()
said = "STOP SCHEDULED" if worker._signal_stop_future else "NO STOP"
print(said, file=sys.__stderr__, flush=True)
time.sleep(30)  # the loop never runs: only the stop deadline ends this
"""


def test_a_sigterm_while_faust_starts_stops_the_worker_once_it_handles_signals() -> None:
    """Between `run_worker` and Faust's worker installing its handlers (its logging
    set-up), a SIGTERM is noted; the worker then stops as for one that came after, and
    the stop deadline counts from it."""
    done = subprocess.run(
        [sys.executable, "-c", EARLY_SIGTERM_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "STOP SCHEDULED" in done.stderr, done.stderr
    assert done.returncode == 70, done.stderr
    assert "SIGTERM came " in done.stderr


MASKED_STACKS_PROBE = """
import asyncio, os, signal, sys, threading, faust
from moments.logmask import install_pii_masking
from moments.service_worker import ServiceWorker

install_pii_masking(True, secrets=["S3cretPass"])  # as `moments worker` starts
app = faust.App("probe", broker="kafka://127.0.0.1:1", web_enabled=False, autodiscover=False)
worker = ServiceWorker(app, loglevel="warn", quiet=True, stderr=sys.__stderr__)
worker.install_signal_handlers()

async def holding_a_record():
    record = b'{"subscriber_id":"13900139002","event_id":"e-1"}'  # a frame's local
    password = "S3cretPass"
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.sleep(0.3)
    return record, password

worker.loop.run_until_complete(holding_a_record())
print(threading.get_ident())
"""


def test_the_stacks_sigusr1_writes_mask_subscribers_and_redact_secrets() -> None:
    """SIGUSR1 (and SIGUSR2) write every thread's and task's stack with its frames' local
    variables, straight to stderr (mode's `cry`), past the masking every log record gets:
    the dump operations.md tells on-call to take held the records of the batch in hand,
    subscriber numbers and payloads unmasked, and any password a frame held."""
    done = subprocess.run(
        [sys.executable, "-c", MASKED_STACKS_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "THREAD MainThread" in done.stderr
    assert "holding_a_record" in done.stderr  # the frame holding them was written
    assert "139****9002" in done.stderr
    assert "13900139002" not in done.stderr
    assert "S3cretPass" not in done.stderr
    # A thread's ident is no subscriber's number: masked, the dump's threads were
    # `140********2896` alike and could not be told apart.
    ident = done.stdout.split()[-1]
    assert f"started {ident})>" in done.stderr
