"""Fixtures for tests that run the detector against the real broker and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from moments.connections import kafka_client_kwargs
from moments.embedded import free_port
from moments.embedded_run import all_topics
from moments.settings import Settings, load_settings
from moments.topics import ensure_topics

MakeSettings = Callable[..., Settings]

ANY_HOUR_RULES = """
gating: {quiet_hours: []}  # tasks go out at any hour the tests run
rules:
  - id: roaming_welcome
    description: first roaming per country
    on: [roaming]
    condition: {first_time: country}
    task: {family: first_time, type: roaming_welcome, channel: sms, priority: 3, action: a,
           ttl: 24h, description: "Welcome to {country}"}
"""
"""One rule and no quiet hours: the default catalog holds tasks back 21:00-08:00 in
Shanghai (13:00-00:00 UTC), so a test expecting a task then would wait in vain."""


@pytest.fixture
def any_hour_rules(tmp_path: Path) -> Path:
    """A rules file with `ANY_HOUR_RULES`."""
    path = tmp_path / "any-hour-rules.yaml"
    path.write_text(ANY_HOUR_RULES)
    return path


@pytest.fixture
def make_settings(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> MakeSettings:
    """Settings for one test: its own topics (prefix), consumer group, state and ledger keys."""
    # Its digits may read as a phone number (`t495161564fa`): the worker keeps its
    # configured names whole in the log (`Settings.log_names`), so a test can look for them.
    app_id = f"t{uuid4().hex[:10]}a"

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "kafka_bootstrap": kafka_bootstrap,
            "redis_url": redis_url,
            "app_id": app_id,
            "topic_prefix": f"{app_id}.",
            "data_dir": tmp_path / "data",
            "metrics_port": 0,
            "rebalance_timeout": 3.0,
            "partitions": 2,
            "pending_redrive_seconds": 2.0,
            "batch_within": 0.02,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def topics_for() -> Callable[[Settings], Awaitable[None]]:
    async def create(settings: Settings) -> None:
        topics, compacted = all_topics(settings)
        await ensure_topics(
            settings.kafka_bootstrap,
            topics,
            compacted,
            client_kwargs=kafka_client_kwargs(settings),
        )

    return create


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    env.update(
        {
            "MOMENTS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "MOMENTS_REDIS_URL": settings.redis_url,
            "MOMENTS_APP_ID": settings.app_id,
            "MOMENTS_TOPIC_PREFIX": settings.topic_prefix,
            "MOMENTS_DATA_DIR": str(settings.data_dir),
            "MOMENTS_METRICS_PORT": str(settings.metrics_port),
            "MOMENTS_REBALANCE_TIMEOUT": str(settings.rebalance_timeout),
            "MOMENTS_PARTITIONS": str(settings.partitions),
            "MOMENTS_PENDING_REDRIVE_SECONDS": str(settings.pending_redrive_seconds),
            "MOMENTS_BATCH_WITHIN": str(settings.batch_within),
            "MOMENTS_LOG_LEVEL": settings.log_level,
            "MOMENTS_LOG_FORMAT": settings.log_format,
            "MOMENTS_STORE": settings.store,
            "MOMENTS_IDLE_AFTER_SECONDS": str(settings.idle_after_seconds),
            "MOMENTS_RULES_RELOAD_SECONDS": str(settings.rules_reload_seconds),
            "MOMENTS_LATENESS_SECONDS": str(settings.lateness_seconds),
        }
    )
    if settings.rules is not None:
        env["MOMENTS_RULES"] = str(settings.rules)
    if settings.dispatch_policy is not None:
        env["MOMENTS_DISPATCH_POLICY"] = str(settings.dispatch_policy)
    if settings.standby_replicas is not None:
        env["MOMENTS_STANDBY_REPLICAS"] = str(settings.standby_replicas)
    if settings.live_from is not None:
        env["MOMENTS_LIVE_FROM"] = settings.live_from
    if settings.idempotent_producer is not None:
        env["MOMENTS_IDEMPOTENT_PRODUCER"] = str(settings.idempotent_producer).lower()
    if settings.leave_group_on_stop is not None:
        env["MOMENTS_LEAVE_GROUP_ON_STOP"] = str(settings.leave_group_on_stop).lower()
    for name in settings.model_fields_set:
        if name.startswith("rocksdb_"):  # the RocksDB store's memory bounds, when given
            env[f"MOMENTS_{name.upper()}"] = str(getattr(settings, name))
    env.update(security_env(settings))
    return env


def tasks_command(settings: Settings, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`moments tasks COMMAND ARGS` run as a user would, against `settings`' Redis and broker."""
    return subprocess.run(
        [sys.executable, "-m", "moments", "tasks", command, *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


SECURITY_FIELDS = (
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "kafka_ssl_key_password",
    "redis_username",
    "redis_password",
    "redis_ssl_cafile",
    "metrics_username",
    "metrics_password",
    "log_pii",
)


def security_env(settings: Settings) -> dict[str, str]:
    """The security settings (docs/security.md) as MOMENTS_* variables for a child process."""
    env: dict[str, str] = {}
    for name in SECURITY_FIELDS:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"MOMENTS_{name.upper()}"] = str(value)
    return env


class WorkerProcess:
    """`python -m moments worker` as a child process, its output in a log file (its
    stdout in `stdout_path` instead, when given)."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        stdout_path: Path | None = None,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`command` runs instead of `python -m moments worker` (a worker with a fault
        put in first, say); `env` adds to the settings' variables."""
        self.log_path = log_path
        self._log = log_path.open("ab")
        self._stdout = stdout_path.open("ab") if stdout_path is not None else None
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "moments", "worker"],
            env={**settings_env(settings), **(env or {})},
            stdout=self._stdout or self._log,
            stderr=self._log if self._stdout else subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        if self._stdout is not None:
            self._stdout.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for_log(self, pattern: str, wait_s: float = 60.0) -> None:
        """Until a line of the log matches `pattern` (a regex); fails, with the log's end,
        if the worker exits first or `wait_s` passes."""
        deadline = time.monotonic() + wait_s
        while not re.search(pattern, self.log()):
            assert self.proc.poll() is None, f"exited before {pattern!r}: {self.log()[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} in the log: {self.log()[-3000:]}"
            await asyncio.sleep(0.2)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


RulesWorker = Callable[[str], Awaitable[tuple[Settings, WorkerProcess]]]


@pytest.fixture
def worker_on_rules(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> RulesWorker:
    """A worker on its own topics with these rules (YAML text), /metrics on a free port."""

    async def start(text: str) -> tuple[Settings, WorkerProcess]:
        rules = tmp_path / "rules.yaml"
        rules.write_text(text)
        settings = make_settings(metrics_port=free_port(), rules=rules)
        await topics_for(settings)
        return settings, start_worker(settings)

    return start
