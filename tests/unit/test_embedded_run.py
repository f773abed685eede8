"""`moments run` starts its worker with the embedded stack's settings, and refuses a
/metrics port it cannot use before it starts anything."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.text import Text

from moments import embedded_run
from moments.cli import main
from moments.cliparts import stderr_console
from moments.embedded import free_port
from moments.embedded_run import (
    WORKER_STOP_GRACE_S,
    WORKER_STOP_WAIT_S,
    metrics_url,
    stop_wait,
    worker_env,
)
from moments.health import Health
from moments.metrics_server import serve_metrics
from moments.settings import Settings, load_settings

STACK = {"MOMENTS_KAFKA_BOOTSTRAP": "127.0.0.1:40123", "MOMENTS_METRICS_PORT": "9308"}


class TestWorkerEnv:
    """/metrics listens on 127.0.0.1 like the broker and Redis, unless the user chose."""

    @pytest.fixture(autouse=True)
    def _no_settings(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.chdir(tmp_path)  # no .env
        for name in (
            "MOMENTS_METRICS_HOST",
            "MOMENTS_METRICS_HOST_FILE",
            "MOMENTS_STOP_GRACE_SECONDS",
        ):
            monkeypatch.delenv(name, raising=False)

    def test_metrics_listen_on_loopback_by_default(self) -> None:
        env = worker_env({"PATH": "/bin"}, load_settings(), STACK)
        assert env == {
            "PATH": "/bin",
            **STACK,
            "MOMENTS_METRICS_HOST": "127.0.0.1",
            "MOMENTS_STOP_GRACE_SECONDS": "10",
        }

    def test_a_stuck_worker_ends_itself_before_the_sigkill_of_a_stop(self) -> None:
        """Its stop deadline comes before `moments run`'s SIGKILL, so the worker's log says
        where its event loop was stuck; a grace the user set stands."""
        assert WORKER_STOP_GRACE_S < WORKER_STOP_WAIT_S
        env = worker_env({}, load_settings(), STACK)
        assert float(env["MOMENTS_STOP_GRACE_SECONDS"]) == WORKER_STOP_GRACE_S
        user = load_settings(stop_grace_seconds=30)
        assert "MOMENTS_STOP_GRACE_SECONDS" not in worker_env({}, user, STACK)

    def test_a_stop_waits_past_a_longer_grace_the_user_set(self) -> None:
        """Else the SIGKILL came at 15 s, before the worker's own deadline and its log line."""
        assert stop_wait(load_settings()) == WORKER_STOP_WAIT_S
        assert stop_wait(load_settings(stop_grace_seconds=5)) == WORKER_STOP_WAIT_S
        assert stop_wait(load_settings(stop_grace_seconds=30)) > 30

    def test_a_host_the_user_set_is_kept(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MOMENTS_METRICS_HOST", "0.0.0.0")  # noqa: S104 - deliberately
        env = worker_env({"MOMENTS_METRICS_HOST": "0.0.0.0"}, load_settings(), STACK)  # noqa: S104
        assert env["MOMENTS_METRICS_HOST"] == "0.0.0.0"  # noqa: S104

    def test_a_host_from_a_file_is_not_set_twice(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """MOMENTS_X beside MOMENTS_X_FILE stops the worker: the file's choice stands."""
        (tmp_path / "host").write_text("10.0.0.5\n")
        monkeypatch.setenv("MOMENTS_METRICS_HOST_FILE", str(tmp_path / "host"))
        env = worker_env({}, load_settings(), STACK)
        assert "MOMENTS_METRICS_HOST" not in env


class TestMetricsPortTaken:
    """A /metrics port that cannot be bound stops `moments run` before anything starts
    (the worker found out after the broker, Redis and the whole sample stream had run)."""

    @pytest.fixture(autouse=True)
    def _nothing_starts(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.chdir(tmp_path)  # no .env
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        for name in ("MOMENTS_METRICS_HOST", "MOMENTS_METRICS_HOST_FILE", "MOMENTS_METRICS_PORT"):
            monkeypatch.delenv(name, raising=False)

        def no_broker(*args: object, **kwargs: object) -> None:
            raise AssertionError("the broker was started")

        monkeypatch.setattr(embedded_run, "TansuBroker", no_broker)

    def test_a_taken_port_exits_2_naming_the_flag_and_the_variable(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        port = free_port()
        with socket.socket() as taken:
            # As servers bind (SO_REUSEADDR): `free_port` keeps the port reserved for one.
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taken.bind(("127.0.0.1", port))
            taken.listen()
            assert main(["run", "--metrics-port", str(port)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"moments: cannot serve /metrics on 127.0.0.1:{port}: ")
        assert "--metrics-port" in err
        assert "MOMENTS_METRICS_PORT" in err
        assert list(tmp_path.iterdir()) == []  # no work folder left behind

    def test_an_address_not_of_this_machine_names_the_host_variable(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("MOMENTS_METRICS_HOST", "192.0.2.1")  # TEST-NET-1: nobody's
        assert main(["run", "--metrics-port", str(free_port())]) == 2
        assert "MOMENTS_METRICS_HOST to an address of this machine" in capsys.readouterr().err


def test_the_task_viewer_is_closed_when_the_worker_exits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its Kafka consumer closes before `moments run` reports the exit: left to the loop's
    close, it was cut short ("ERROR asyncio: Unclosed AIOKafkaConsumer")."""
    closed: list[bool] = []

    async def viewer(settings: Settings, **kwargs: Any) -> int:
        kwargs["ready"].set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # a clean-up that awaits, as the consumer's stop does
            closed.append(True)
        return 0

    monkeypatch.setattr(embedded_run, "tail_tasks", viewer)
    worker = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    worker.wait()
    log = tmp_path / "worker.log"
    log.write_text("moments: the reason\n")
    console = Console(file=io.StringIO())
    loop = asyncio.new_event_loop()
    try:
        follow = embedded_run._follow(Settings(), worker, log, console, False, False, None)
        assert loop.run_until_complete(follow) == 1
        assert closed == [True]
    finally:
        embedded_run._close_loop(loop)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9308/metrics"),
        ("0.0.0.0", "http://127.0.0.1:9308/metrics"),  # noqa: S104 - a URL, no bind
        ("10.1.2.3", "http://10.1.2.3:9308/metrics"),
        ("::", "http://[::1]:9308/metrics"),
        ("fe80::1", "http://[fe80::1]:9308/metrics"),
    ],
)
def test_the_metrics_url_printed_is_where_the_worker_serves(host: str, url: str) -> None:
    """`moments run` printed 127.0.0.1 whatever MOMENTS_METRICS_HOST said (ops review)."""
    assert metrics_url(host, 9308) == url


def test_the_line_for_other_shells_points_them_at_this_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`moments tasks tail` or a consumer in another shell tried 127.0.0.1:9092, not the
    run's broker on its free port, and the run printed no way to point them at it (new
    user's walk): the line it prints now, pasted into a shell, does."""
    monkeypatch.chdir(tmp_path)  # no .env
    line = embedded_run.other_shells("127.0.0.1:40123", "redis://127.0.0.1:40124/0")
    shell = subprocess.run(
        ["/bin/sh", "-c", f"{line} && /usr/bin/env"],
        capture_output=True,
        text=True,
        check=True,
        env={},
    )
    exported = dict(v.split("=", 1) for v in shell.stdout.splitlines() if v.startswith("MOMENTS_"))
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:40123"
    assert settings.redis_url == "redis://127.0.0.1:40124/0"


def test_the_line_for_other_shells_finds_this_moments_command(tmp_path: Path) -> None:
    """After `make run`, a new shell's `moments tasks tail` was "command not found": the
    command is in the virtualenv, which no step puts on the PATH. The pasted line does."""
    commands = tmp_path / "a venv" / "bin"
    commands.mkdir(parents=True)
    (commands / "moments").write_text("#!/bin/sh\n")
    (commands / "moments").chmod(0o755)
    line = embedded_run.other_shells("127.0.0.1:40123", "redis://127.0.0.1:40124/0", commands)
    shell = subprocess.run(
        ["/bin/sh", "-c", f"{line} && command -v moments"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert shell.stdout.strip() == str(commands / "moments")


def test_the_path_is_left_alone_where_it_finds_this_moments_already(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "moments").write_text("#!/bin/sh\n")
    (tmp_path / "moments").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert embedded_run.commands_folder() is None
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert embedded_run.commands_folder() == tmp_path


class TestStopSaysHowTheWorkerStopped:
    """Ctrl-C said "stopping worker, redis-server and Tansu..." and nothing of how the
    worker went: a clean stop and one killed after the wait read the same (ops review)."""

    @staticmethod
    def worker(on_term: str) -> subprocess.Popen[bytes]:
        code = (
            "import signal, sys, time\n"
            f"signal.signal(signal.SIGTERM, {on_term})\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"  # its handler is in place
        return proc

    def test_a_clean_stop_is_said_with_its_exit_code(self) -> None:
        proc = self.worker("lambda *_: sys.exit(0)")
        assert embedded_run._stop_process(proc) == "the worker stopped (exit code 0)"

    def test_a_worker_killed_after_the_wait_is_said_so(self) -> None:
        proc = self.worker("signal.SIG_IGN")
        said = embedded_run._stop_process(proc, wait_s=0.5)
        assert said == "the worker did not stop within 0.5 s of SIGTERM: killed (see its log)"
        assert proc.returncode == -signal.SIGKILL

    def test_a_worker_gone_already_is_not_said_again(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
        proc.wait()
        assert embedded_run._stop_process(proc) is None


def test_messages_to_a_file_or_pipe_are_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """`moments run 2> run.log` (or under systemd or docker) split a sample line at 80
    columns: "... -> complaint" and "(merged into the same call)" were two log lines."""
    said = io.StringIO()
    monkeypatch.setattr(sys, "stderr", said)
    line = "sample: complaint " + "a complaint minutes after the VoLTE failure " * 3
    stderr_console().print(line)
    assert said.getvalue() == line + "\n"


def test_a_rules_reload_refused_or_taken_is_said_on_the_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An analyst saved a broken rules file into a `moments run` and saw nothing: the
    worker's refusal, with its `file:line:column` problems, went only to its log file; the
    run now prints it, and the reload of the fixed file after it."""
    log = tmp_path / "worker.log"
    log.write_text(
        "[2026-12-06 20:54:01,687] [7] [ERROR] moments.reload: rules reload refused (what is"
        " in force stays: ...):\n"
        "/r/anomaly.yaml:11:18: override of unknown param 'threshold'\n"
        "[2026-12-06 20:54:17,769] [7] [INFO] moments.reload: rules reloaded from /r: 6"
        " rule(s) \n"
    )
    out = io.StringIO()
    console = Console(file=out, width=200)

    async def viewer(settings: Settings, **kwargs: Any) -> int:
        kwargs["ready"].set()
        for _ in range(200):  # until the run has shown both, or 20 s at most
            if "rules reloaded" in out.getvalue():
                break
            await asyncio.sleep(0.1)
        return 0

    monkeypatch.setattr(embedded_run, "tail_tasks", viewer)
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    loop = asyncio.new_event_loop()
    try:
        follow = embedded_run._follow(Settings(), worker, log, console, False, False, None)
        assert loop.run_until_complete(follow) == 0
    finally:
        embedded_run._stop_process(worker)
        embedded_run._close_loop(loop)
    shown = out.getvalue()
    assert "worker ERROR: rules reload refused" in shown
    assert "/r/anomaly.yaml:11:18: override of unknown param 'threshold'" in shown
    assert "worker INFO: rules reloaded from /r: 6 rule(s)" in shown


def test_the_run_says_where_its_rules_come_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("MOMENTS_RULES_RELOAD_SECONDS", raising=False)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n")
    monkeypatch.setenv("MOMENTS_RULES", str(rules))
    line = embedded_run.rules_line(load_settings())
    assert f"{rules}: a saved change is loaded within about 4 s" in line
    monkeypatch.delenv("MOMENTS_RULES")
    assert "the packaged default catalog" in embedded_run.rules_line(load_settings())


def test_the_sample_notes_say_whose_outcomes_they_are_under_rules_of_ones_own(
    tmp_path: Path,
) -> None:
    """With MOMENTS_RULES set, the sample still printed `-> first_topup` and the like, the
    packaged catalog's moments, as if the analyst's rules had made them (journey review):
    the run says whose they are first. With the packaged rules nothing needs saying."""
    assert embedded_run.sample_header(None) is None
    header = embedded_run.sample_header(tmp_path / "my-rules")
    assert header is not None
    assert "what the packaged default catalog makes of the event" in header
    assert f"your rules ({tmp_path / 'my-rules'})" in header


def test_rules_the_worker_would_refuse_stop_the_run_before_it_starts_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`MOMENTS_RULES=bad.yaml moments run` started the broker, Redis and a worker that
    stopped on the file at once, then waited a minute for it to read the sample's profiles
    and played the whole sample before it showed the worker's `file:line:column` line
    (journey review). The file is refused first, as `moments rules validate` does."""
    monkeypatch.chdir(tmp_path)  # no .env
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n  - id: r\n    description: d\n    on: [usage]\n"
        "    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a,\n"
        "           ttl: 7 dayz, description: x}\n"
    )
    monkeypatch.setenv("MOMENTS_RULES", str(bad))

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the broker was started for rules the worker refuses")

    monkeypatch.setattr(embedded_run, "TansuBroker", started)
    assert main(["run", "--metrics-port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert "moments: rules refused:" in err
    assert f"{bad}:6:12: rules.0.task.ttl: '7 dayz' is not a duration" in err


def test_the_wait_for_the_profiles_ends_with_the_worker(tmp_path: Path) -> None:
    """A worker gone reads no profile: the run waited out its minute all the same."""
    settings = Settings(metrics_port=free_port())
    read = embedded_run._profiles_read(settings, 4, timeout_s=600.0, alive=lambda: False)
    assert asyncio.run(read) is False


class TestReadyWithNoSample:
    """`moments run --no-sample` said nothing once the worker could take events: the user
    waiting to send their own saw no sign for the ~20 s a group join takes on Tansu
    (journey review). The run asks the worker's own /readyz."""

    @pytest.fixture
    def served(self) -> Iterator[tuple[Settings, list[str]]]:
        """A worker's /readyz (the real server and Health) that answers not ready twice."""
        answers: list[str] = []

        def not_ready() -> str | None:
            answers.append("asked")
            return "joining the consumer group" if len(answers) <= 2 else None

        health = Health(stall_after_s=60.0)
        health.ready_when(not_ready)
        settings = Settings(metrics_port=free_port())
        server = serve_metrics(settings, CollectorRegistry(), health)
        try:
            yield settings, answers
        finally:
            server.shutdown()
            server.server_close()

    def test_the_run_says_when_the_worker_is_ready(
        self, served: tuple[Settings, list[str]]
    ) -> None:
        settings, answers = served
        out = io.StringIO()
        said = embedded_run._say_ready(settings, Console(file=out), alive=lambda: True)
        asyncio.run(said)
        assert len(answers) == 3  # asked until it was ready, and no more
        assert "ready: the worker is in its consumer group; the events you send now" in (
            " ".join(out.getvalue().split())
        )

    def test_nothing_is_said_of_a_worker_gone(self, served: tuple[Settings, list[str]]) -> None:
        settings, answers = served
        out = io.StringIO()
        asyncio.run(embedded_run._say_ready(settings, Console(file=out), alive=lambda: False))
        assert (answers, out.getvalue()) == ([], "")


class TestLiveFromLine:
    """`MOMENTS_LIVE_FROM=2026-12-20 moments run` (a going-live rehearsal's environment)
    played the sample, each line saying `-> first_topup` and the like, and printed no task
    and no word of why: the worker's log alone said that every rule waits in shadow
    (journey review)."""

    NOW = dt.datetime(2026, 12, 7, 18, 0, tzinfo=dt.UTC).timestamp()

    def test_a_date_to_come_is_said_with_what_it_holds_back(self) -> None:
        line = embedded_run.live_from_line(Settings(live_from="2026-12-20"), self.NOW)
        assert line is not None
        text = " ".join(Text.from_markup(line).plain.split())
        assert text.startswith(
            "MOMENTS_LIVE_FROM 2026-12-20T00:00:00+08:00: moments dated before it make no task"
        )
        assert text.endswith("events dated now, the sample's too, make none: unset it to see tasks")

    @pytest.mark.parametrize("live_from", [None, "2026-12-01", "2026-12-07T17:00:00Z"])
    def test_none_or_a_date_gone_by_is_not_said(self, live_from: str | None) -> None:
        assert embedded_run.live_from_line(Settings(live_from=live_from), self.NOW) is None


class _SentProducer:
    """A producer that takes every send at once."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.sent = 0

    async def start(self) -> None:
        pass

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent += 1

    async def stop(self) -> None:
        pass


class TestProfilesWaitWithoutMetrics:
    """With /metrics off (`--metrics-port 0`) the run did not wait for the profiles at all,
    then said "the worker has not read the profiles within 60 s" some 13 s after its start
    (new user's run). It waits on the worker's committed offsets of the profile topic."""

    def _play(
        self, monkeypatch: pytest.MonkeyPatch, committed: bool
    ) -> tuple[str, list[dict[str, Any]]]:
        calls: list[dict[str, Any]] = []

        async def committed_to_end(*args: Any, **kwargs: Any) -> bool:
            calls.append({"args": args, **kwargs})
            return committed

        monkeypatch.setattr(embedded_run, "AIOKafkaProducer", _SentProducer)
        monkeypatch.setattr(embedded_run, "committed_to_end", committed_to_end)
        out = io.StringIO()
        console = Console(file=out, width=400)
        asyncio.run(embedded_run._play_sample(Settings(metrics_port=0), console))
        return out.getvalue(), calls

    def test_the_worker_group_committing_the_profiles_ends_the_wait(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        said, calls = self._play(monkeypatch, committed=True)
        assert [c["args"][1:4] for c in calls] == [("moments", "telecom.profile", 4)]
        assert calls[0]["timeout_s"] == embedded_run.PROFILES_WAIT_S
        assert "has not read the profiles" not in said
        assert "sample stream played" in said

    def test_a_group_that_never_commits_them_is_said_after_the_minute(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        said, _ = self._play(monkeypatch, committed=False)
        assert "the worker has not read the profiles within 60 s" in said
