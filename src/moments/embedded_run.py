"""`moments run`: the whole detector on one machine, for a first look and for demos.

Starts Tansu and redis-server on free ports, creates the topics, starts a worker
process, plays the sample stream, prints each task as it arrives and serves
/metrics. Ctrl-C, SIGTERM (systemd, `docker stop`, a CI timeout) or `--exit-after N`
stops every process it started and removes its files; the exit code is 130 after
Ctrl-C, as for any interrupted command, and 0 after SIGTERM or --exit-after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.markup import escape

from moments.cliparts import command_settings, stderr_console
from moments.committedwait import committed_to_end
from moments.embedded import (
    HOST,
    RedisServer,
    TansuBroker,
    death_signal_preexec,
)
from moments.exceptions import ConfigError
from moments.livefrom import parse_live_from, warming_up
from moments.metrics_server import scrape
from moments.models import EventType
from moments.producer import stop_within
from moments.runlog import ReloadFollower, shown
from moments.sample import sample_stream
from moments.settings import Settings, load_settings
from moments.tail import STOP_S, tail_tasks
from moments.topiclayout import INPUT_TOPICS
from moments.topics import ensure_topics
from sinks.policy import load_policy

DEMO_POLICY = """\
# Written by `moments run`: the defaults, but calls wait 10 s for the subscriber's other
# moments instead of 30 min, so the demo shows a merged call without a long wait.
merge: {window: 10s, hold_channels: [outbound_call, manager]}
"""

PROFILES_WAIT_S = 60.0

FAILED = 1
"""The exit code when something did not work; the work folder is kept for its logs."""

REBALANCE_SECONDS = 3.0
"""Tansu completes a group join only after the whole rebalance timeout: keep it short here."""
WORKER_STOP_WAIT_S = 15.0
"""How long a stop waits for the worker after SIGTERM before SIGKILL (`stop_wait`)."""
WORKER_STOP_GRACE_S = 10.0
"""The worker's MOMENTS_STOP_GRACE_SECONDS unless the user set it: below
`WORKER_STOP_WAIT_S`, so a worker whose event loop is stuck writes where it is to its log
before the SIGKILL."""


def all_topics(settings: Settings) -> tuple[dict[str, int], list[str]]:
    """Every topic the detector reads or writes, with partitions, and the compacted ones."""
    names = [t.value for t in INPUT_TOPICS] + [
        "tasks",
        "task_outcomes",
        "task_withdrawals",
        "deadletter",
    ]
    topics = {settings.topic(n): settings.partitions for n in names}
    return topics, [settings.topic("profile")]


def worker_env(
    environ: Mapping[str, str], user: Settings, stack: Mapping[str, str]
) -> dict[str, str]:
    """The worker's environment: the caller's with the embedded stack's settings, and
    /metrics on 127.0.0.1 like the broker and Redis unless the user chose its host (the
    worker's own default, every interface, is for a container's pod IP); its stop grace
    below the wait before SIGKILL (`WORKER_STOP_GRACE_S`) unless the user chose one."""
    env = {**environ, **stack}
    if "metrics_host" not in user.model_fields_set:
        env["MOMENTS_METRICS_HOST"] = HOST
    if "stop_grace_seconds" not in user.model_fields_set:
        env["MOMENTS_STOP_GRACE_SECONDS"] = f"{WORKER_STOP_GRACE_S:g}"
    return env


def stop_wait(user: Settings) -> float:
    """How long a stop waits for the worker before SIGKILL: `WORKER_STOP_WAIT_S`, or a few
    seconds past a longer stop grace the user set, so the worker's own deadline (and its
    log line saying where its loop was stuck) comes first."""
    if "stop_grace_seconds" not in user.model_fields_set:
        return WORKER_STOP_WAIT_S
    return max(WORKER_STOP_WAIT_S, user.stop_grace_seconds + 5.0)


def other_shells(bootstrap: str, redis_url: str, commands: Path | None = None) -> str:
    """The line that points another shell's commands at this run's broker and Redis: on
    free ports, not the defaults `moments tasks tail` and the rest would try. `commands`:
    the folder of this `moments`, put first on the PATH (`make run`'s .venv/bin, which a
    new shell does not have: `moments tasks tail` was "command not found")."""
    line = f"export MOMENTS_KAFKA_BOOTSTRAP={bootstrap} MOMENTS_REDIS_URL={redis_url}"
    return line if commands is None else f'{line} PATH={shlex.quote(str(commands))}:"$PATH"'


def commands_folder() -> Path | None:
    """The folder of the `moments` command this process runs from, when a shell's PATH
    would not find it there (None: it would)."""
    here = Path(sys.executable).parent
    found = shutil.which("moments")
    if not (here / "moments").is_file() or (found and Path(found).parent == here):
        return None
    return here


def served_host(user: Settings) -> str:
    """Where the worker serves /metrics (see `worker_env`)."""
    return user.metrics_host if "metrics_host" in user.model_fields_set else HOST


def metrics_url(host: str, port: int) -> str:
    """A URL for /metrics served on `host`: an any-address host is reached on loopback."""
    # Not a bind: the any-addresses only map to the loopback one a browser can open.
    shown = {"0.0.0.0": HOST, "": HOST, "::": "::1"}.get(host, host)  # noqa: S104
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/metrics"


def check_metrics_port(user: Settings, port: int) -> None:
    """Refuse a /metrics port the worker could not bind, before anything starts: the
    worker found out itself, after the broker, Redis and the whole sample stream."""
    if port == 0:  # /metrics off
        return
    host_set = "metrics_host" in user.model_fields_set
    host = served_host(user)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the worker's server binds: a port left in TIME_WAIT is no obstacle.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            other_host = " or MOMENTS_METRICS_HOST to an address of this machine"
            raise ConfigError(
                f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}; pass a free "
                "port with --metrics-port PORT (it defaults to MOMENTS_METRICS_PORT; 0 turns "
                f"/metrics off){other_host if host_set else ''}"
            ) from None


def check_rules(user: Settings) -> None:
    """Refuse rules the worker would refuse (`RulesError`, its `file:line:column: message`
    lines, exit 1), before anything starts: the worker stopped on them at once, but the run
    waited a minute for it to read the sample's profiles and played the whole sample to
    nobody before it said so."""
    if user.rules is None:  # the packaged catalog: its tests load it
        return
    from rules.catalog import load_rules

    load_rules(user.rules)


def run_embedded(
    json_lines: bool, play_sample: bool, metrics_port: int | None, exit_after: int | None
) -> int:
    user = command_settings()  # this process's log masked as the worker's
    port = metrics_port if metrics_port is not None else user.metrics_port
    check_metrics_port(user, port)
    check_rules(user)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="moments-run-"))
    try:
        return _run(workdir, user, port, json_lines, play_sample, exit_after)
    except KeyboardInterrupt as stop:  # while starting: what had started is stopped by now
        shutil.rmtree(workdir, ignore_errors=True)
        return stop_code(stop)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(
    workdir: Path,
    user: Settings,
    port: int,
    json_lines: bool,
    play_sample: bool,
    exit_after: int | None,
) -> int:
    console = stderr_console()
    worker: subprocess.Popen[bytes] | None = None
    with contextlib.ExitStack() as stack:
        with console.status("starting Tansu (Kafka-protocol broker) and redis-server..."):
            broker = stack.enter_context(TansuBroker(workdir / "tansu"))
            redis = stack.enter_context(RedisServer(workdir / "redis"))
        console.print(f"[green]broker[/] {broker.bootstrap}   [green]redis[/] {redis.url}")
        console.print(
            "[dim]in another shell, for moments tasks tail, tasks pending, tasks ack, "
            "deadletter show or a consumer of your own:[/]"
        )
        # Never wrapped: it is copied and pasted whole.
        console.print(
            other_shells(broker.bootstrap, redis.url, commands_folder()),
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        stack_env = {
            "MOMENTS_KAFKA_BOOTSTRAP": broker.bootstrap,
            "MOMENTS_REDIS_URL": redis.url,
            "MOMENTS_REBALANCE_TIMEOUT": str(REBALANCE_SECONDS),
            "MOMENTS_DATA_DIR": str(workdir / "data"),
            "MOMENTS_METRICS_PORT": str(port),
        }
        env = worker_env(os.environ, user, stack_env)
        if not os.environ.get("MOMENTS_DISPATCH_POLICY"):
            demo = workdir / "dispatch-policy.yaml"
            demo.write_text(DEMO_POLICY)
            env["MOMENTS_DISPATCH_POLICY"] = str(demo)
            console.print(
                "[dim]calls and manager tasks wait 10 s for the subscriber's other moments "
                "(the merge window; 30 min by default, MOMENTS_DISPATCH_POLICY sets it)[/]"
            )
        settings = load_settings(
            kafka_bootstrap=broker.bootstrap,
            redis_url=redis.url,
            metrics_port=port,
            data_dir=workdir / "data",
        )
        topics, compacted = all_topics(settings)
        with console.status("creating topics..."):
            asyncio.run(ensure_topics(broker.bootstrap, topics, compacted))
        log_path = workdir / "worker.log"
        log_file = stack.enter_context(log_path.open("wb"))
        worker = subprocess.Popen(
            [sys.executable, "-m", "moments", "worker"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Like the broker and Redis: gone with us even when we are killed outright.
            preexec_fn=death_signal_preexec(),
        )
        wait_s = stop_wait(user)
        stack.callback(_stop_process, worker, wait_s)
        console.print(f"[green]worker[/] pid {worker.pid}, log {log_path}")
        if port:
            console.print(f"[green]metrics[/] {metrics_url(served_host(user), port)}")
        console.print(rules_line(user))
        if (holding := live_from_line(user, time.time())) is not None:
            console.print(holding)
        console.print("tasks appear below as they are published; Ctrl-C stops everything\n")
        code = FAILED
        # Not asyncio.run: its clean-up waits without a bound for every task and executor
        # thread before returning, so a viewer slow to close could keep the worker running.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            code = loop.run_until_complete(
                _follow(settings, worker, log_path, console, json_lines, play_sample, exit_after)
            )
        except KeyboardInterrupt as stop:
            console.print("\nstopping worker, redis-server and Tansu...")
            code = stop_code(stop)
        finally:
            stopped = _stop_process(worker, wait_s)  # first, whatever the viewer still does
            _close_loop(loop)
        if stopped is not None and code != FAILED:
            console.print(stopped)
    if code != FAILED:  # the broker's and Redis's files go; the worker's log it printed stays
        for path in workdir.iterdir():
            if path.name != "worker.log":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        console.print(f"the worker's log is kept: {workdir / 'worker.log'}")
    else:
        console.print(f"logs kept in {workdir}")
    return code


async def _follow(
    settings: Settings,
    worker: subprocess.Popen[bytes],
    log_path: Path,
    console: Console,
    json_lines: bool,
    play_sample: bool,
    exit_after: int | None,
) -> int:
    ready = asyncio.Event()
    tail = asyncio.create_task(
        tail_tasks(
            settings, json_lines=json_lines, from_beginning=True, exit_after=exit_after, ready=ready
        )
    )
    await ready.wait()
    said: asyncio.Task[None] | None = None
    if play_sample:
        await _play_sample(settings, console, alive=lambda: worker.poll() is None)
    else:
        said = asyncio.create_task(
            _say_ready(settings, console, alive=lambda: worker.poll() is None)
        )
    try:
        return await _watch(worker, log_path, console, tail, exit_after)
    finally:
        if said is not None:
            said.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await said


async def _watch(
    worker: subprocess.Popen[bytes],
    log_path: Path,
    console: Console,
    tail: asyncio.Task[int],
    exit_after: int | None,
) -> int:
    """Follow the task viewer and the worker until the viewer ends or the worker exits."""
    started = time.monotonic()
    reloads = ReloadFollower(log_path)
    while not tail.done():
        show_reloads(reloads, console)
        if worker.poll() is not None:
            await _cancel(tail)
            console.print(
                f"[red]the worker exited with code {worker.returncode}[/]; "
                f"its log ({log_path}) ends with:"
            )
            console.print(_last_lines(log_path))
            return FAILED
        await asyncio.sleep(0.2)
        if exit_after is not None and time.monotonic() - started > 120:
            await _cancel(tail)
            console.print(f"[red]no {exit_after} task(s) within 120 s[/]; see {log_path}")
            return FAILED
    await tail
    return 0


async def _say_ready(
    settings: Settings, console: Console, alive: Callable[[], bool] = lambda: True
) -> None:
    """Say once when the worker's /readyz answers 200: with --no-sample nothing else tells
    the user waiting to send their own events that the ~20 s of a group join on Tansu are
    over. Nothing when /metrics is off, or once the worker is gone."""
    if not settings.metrics_port:
        return
    url = metrics_url(served_host(settings), settings.metrics_port).removesuffix("/metrics")

    def answered() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):  # noqa: S310 (ours)
                return True
        except OSError:  # not ready (503, an HTTPError) or not serving yet
            return False

    while alive():
        if await asyncio.to_thread(answered):
            console.print(
                "[green]ready:[/] the worker is in its consumer group; the events you send now "
                "are read at once (those sent before were waiting for it)"
            )
            return
        await asyncio.sleep(0.5)


def rules_line(user: Settings) -> str:
    """Where the worker's rules come from, and that a saved change shows here."""
    where = escape(str(user.rules)) if user.rules is not None else "the packaged default catalog"
    if not user.rules_reload_seconds:
        return f"[green]rules[/] {where} (MOMENTS_RULES_RELOAD_SECONDS=0: no reload)"
    return (
        f"[green]rules[/] {where}: a saved change is loaded within about "
        f"{2 * user.rules_reload_seconds:g} s, or refused with its problems, and said here"
    )


def live_from_line(user: Settings, now: float) -> str | None:
    """What MOMENTS_LIVE_FROM holds back, while it is to come: the sample's notes name the
    tasks the catalog makes, none came, and only the worker's log said why. None when it
    is unset or gone by (the worker is live)."""
    if user.live_from is None:
        return None
    zone = load_policy(user.dispatch_policy).zone  # the demo policy keeps the default zone
    when = parse_live_from(user.live_from, zone)
    if not warming_up(when, now):
        return None
    return (
        f"[yellow]MOMENTS_LIVE_FROM {when.isoformat()}[/]: moments dated before it make no "
        "task, every rule counted as a shadow one (moments_shadow_moments_total; "
        'docs/operations.md, "Going live"); events dated now, the sample\'s too, make none: '
        "unset it to see tasks"
    )


def show_reloads(reloads: ReloadFollower, console: Console) -> None:
    """Print what the worker's log says of reloads since the last look: a refused rules
    file was said only in the log, and the terminal went on as if it were taken."""
    for record in reloads.poll():
        style = (
            "red"
            if record.level in ("ERROR", "CRITICAL")
            else ("yellow" if record.level == "WARNING" else "green")
        )
        # Not wrapped: a `file:line:column: message` line is copied whole.
        console.print(shown(record), style=style, markup=False, highlight=False, soft_wrap=True)


async def _cancel(task: asyncio.Task[int]) -> None:
    """Cancel the task viewer and wait for it: its own clean-up closes its Kafka consumer
    (left to the loop's close, it was cut short: "Unclosed AIOKafkaConsumer")."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _play_sample(
    settings: Settings, console: Console, alive: Callable[[], bool] = lambda: True
) -> None:
    """Profiles first, and the rest once the worker has read them: as in production, where
    a subscriber's profile (home zone, quiet hours) is known long before their events, and
    not read from another topic a moment later than an event it should gate."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    stream = sample_stream()
    profiles = [r for r in stream if r.event_type is EventType.PROFILE]
    header = sample_header(settings.rules)
    if header is not None:
        console.print(header, style="dim", markup=False, highlight=False)
    try:
        for record in profiles:
            await producer.send_and_wait(
                settings.topic(record.event_type.value), value=record.value, key=record.key
            )
            console.print(f"[dim]sample: {record.event_type.value:<9} {record.note}[/]")
        console.print("[dim]waiting for the worker to join its group and read the profiles[/]")
        if settings.metrics_port:
            read = await _profiles_read(
                settings, len(profiles), timeout_s=PROFILES_WAIT_S, alive=alive
            )
        else:  # no /metrics: the worker's commits of the profile topic say it
            read = await committed_to_end(
                settings.bootstrap_servers,
                settings.app_id,
                settings.topic(EventType.PROFILE.value),
                settings.partitions,  # as `all_topics` made it
                timeout_s=PROFILES_WAIT_S,
                alive=alive,
            )
        if not alive():  # stopped: said with its log's last lines, not after the sample
            return
        if not read:
            console.print(
                f"[yellow]the worker has not read the profiles within {PROFILES_WAIT_S:.0f} s;"
                " playing the rest anyway (see the worker log)[/]"
            )
        for record in stream:
            if record.event_type is EventType.PROFILE:
                continue
            await producer.send_and_wait(
                settings.topic(record.event_type.value), value=record.value, key=record.key
            )
            console.print(f"[dim]sample: {record.event_type.value:<9} {record.note}[/]")
    finally:
        # Bounded, as `_close_loop` bounds a cancelled task's wait (Ctrl-C, SIGTERM): a
        # stop meeting a write the broker did not answer waited out the batch's expiry
        # (40 s) with no word.
        await stop_within(producer, STOP_S, unsent="the sample's last event")
    console.print("[dim]sample stream played; the tasks print as they are published[/]\n")


def sample_header(rules: Path | None) -> str | None:
    """What the sample's `-> moment` notes stand for when the worker runs rules of the
    user's: they name what the packaged catalog makes of each event, and read as what the
    user's rules had made (`-> first_topup` with no such rule in MOMENTS_RULES)."""
    if rules is None:
        return None
    return (
        "sample: each '-> ...' below is what the packaged default catalog makes of the event;"
        f" the worker runs your rules ({rules}), which may make other tasks or none: the"
        " tasks printed are what they made"
    )


async def _profiles_read(
    settings: Settings, count: int, timeout_s: float, alive: Callable[[], bool] = lambda: True
) -> bool:
    """Wait until the worker's /metrics counts `count` profile events read; False at once
    once the worker is gone (`alive`), which read nothing more."""

    auth = None
    if settings.metrics_username and settings.metrics_password:
        auth = (settings.metrics_username, settings.metrics_password.get_secret_value())

    def read() -> float:
        profiles = {"event_type": EventType.PROFILE.value}
        return scrape(settings.metrics_port, "moments_events_total", profiles, auth)

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        with contextlib.suppress(OSError, ValueError):
            if await asyncio.to_thread(read) >= count:
                return True
        await asyncio.sleep(0.5)
    return False


def _last_lines(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs, wait for it at most STOP_S, close the loop."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=STOP_S))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()  # does not wait for executor threads


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: the same clean stop."""


def stop_code(stop: KeyboardInterrupt) -> int:
    """The exit code of a stop: 130 after Ctrl-C (128 + SIGINT, as shells report an
    interrupted command), 0 after SIGTERM, the stop systemd and `docker stop` ask for
    (systemd counts anything else as a failure)."""
    return 0 if isinstance(stop, Terminated) else 130


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM takes Ctrl-C's way out: the same clean stop, nothing left behind. (A SIGINT
    that the launching shell set to be ignored, as `cmd &` in a script does, stays ignored,
    as the convention wants.)"""
    raise Terminated


def _stop_process(proc: subprocess.Popen[bytes], wait_s: float = WORKER_STOP_WAIT_S) -> str | None:
    """Stop the worker (SIGTERM, then SIGKILL after `wait_s`) and say how it went; None
    when it had stopped already (said where that was found)."""
    if proc.poll() is not None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        return f"the worker did not stop within {wait_s:g} s of SIGTERM: killed (see its log)"
    return f"the worker stopped (exit code {proc.returncode})"
