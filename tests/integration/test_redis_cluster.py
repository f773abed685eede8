"""A Redis in cluster mode (a managed Redis with cluster mode on) is refused at connect
time, naming the fix: the ledger's Lua scripts touch keys of many hash slots in one call,
which a cluster answers with CROSSSLOT. Against a real single-node cluster that serves
every slot (CROSSSLOT applies there as on many nodes)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ClusterCrossSlotError

from moments.connections import check_redis, redis_client
from moments.embedded import RedisServer
from moments.engine import Detector
from moments.exceptions import ConfigError
from moments.runtime import Runtime
from moments.settings import Settings
from moments.topiclayout import topic_types
from rules.catalog import load_rules
from sinks.ledger import TaskLedger
from sinks.metrics import Dependency, Metrics

from .conftest import MakeSettings, settings_env
from .secured_servers import ACL_PASSWORD, ACL_USER, LEDGER_ACL

pytestmark = pytest.mark.integration


class ClusterRedis(RedisServer):
    """redis-server with `--cluster-enabled yes`, serving all 16384 slots alone, with the
    recommended ACL user (which may not run INFO) beside the default user."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(
            workdir,
            extra_args=[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(workdir / "nodes.conf"),
                "--user",
                ACL_USER,
                "on",
                f">{ACL_PASSWORD}",
                *LEDGER_ACL,
            ],
        )

    def __enter__(self) -> ClusterRedis:
        super().__enter__()
        client = redis.Redis.from_url(self.url)
        try:
            client.cluster("ADDSLOTSRANGE", 0, 16383)
            for _ in range(100):  # the node takes the slots at its next cluster cron
                if client.cluster("INFO").get("cluster_state") == "ok":
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError("the single-node cluster never reached cluster_state:ok")
        finally:
            client.close()
        return self


@pytest.fixture(scope="module")
def cluster_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRedis]:
    with ClusterRedis(tmp_path_factory.mktemp("redis-cluster")) as server:
        yield server


def _said_fix(message: str) -> None:
    assert "cluster mode" in message
    assert "MOMENTS_REDIS_URL" in message
    assert "cluster mode disabled" in message


async def test_the_ledger_scripts_cross_slots(
    cluster_redis: ClusterRedis, make_settings: MakeSettings
) -> None:
    """Why a cluster is refused: a claim of two tasks (and the pending index) is one script."""
    settings = make_settings(redis_url=cluster_redis.url)
    client = redis_client(settings)
    try:
        ledger = TaskLedger(client, settings.redis_prefix, 3600)
        with pytest.raises(ClusterCrossSlotError):
            await ledger.claim([("a", b"{}"), ("b", b"{}")])
    finally:
        await client.aclose()


async def test_the_check_refuses_a_cluster_by_info(
    cluster_redis: ClusterRedis, make_settings: MakeSettings
) -> None:
    """It passed the check (PING and a one-key script), and the worker stopped at its
    first batch on CROSSSLOT ("not retried ... Redis refused the command")."""
    with pytest.raises(ConfigError) as err:
        await check_redis(make_settings(redis_url=cluster_redis.url))
    assert "cluster_enabled:1" in str(err.value)
    _said_fix(str(err.value))


async def test_a_user_denied_info_is_refused_by_the_probe(
    cluster_redis: ClusterRedis, make_settings: MakeSettings
) -> None:
    """The recommended ACL denies INFO (-@dangerous): the probe's keys of two slots tell."""
    settings = make_settings(
        redis_url=cluster_redis.url, redis_username=ACL_USER, redis_password=ACL_PASSWORD
    )
    with pytest.raises(ConfigError) as err:
        await check_redis(settings)
    assert "ClusterCrossSlotError" in str(err.value)
    _said_fix(str(err.value))


def _run(settings: Settings, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moments", *command],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_worker_stops_at_start(
    cluster_redis: ClusterRedis, make_settings: MakeSettings
) -> None:
    done = _run(make_settings(redis_url=cluster_redis.url), "worker")
    assert done.returncode == 2, done.stderr[-2000:]
    _said_fix(done.stderr)


def test_a_redis_command_stops(cluster_redis: ClusterRedis, make_settings: MakeSettings) -> None:
    done = _run(make_settings(redis_url=cluster_redis.url), "tasks", "pending")
    assert done.returncode == 2, done.stderr[-2000:]
    _said_fix(done.stderr)


@pytest.mark.parametrize("acl_user", [False, True], ids=["default user", "ACL user, no INFO"])
def test_an_ack_with_its_subscriber_stops(
    cluster_redis: ClusterRedis, make_settings: MakeSettings, acl_user: bool
) -> None:
    """With --subscriber the Redis preflight was skipped: the cluster was only a warning
    ("could not check ...: MovedError; written as given") and the outcome was written."""
    login = {"redis_username": ACL_USER, "redis_password": ACL_PASSWORD} if acl_user else {}
    settings = make_settings(redis_url=cluster_redis.url, **login)
    done = _run(
        settings, "tasks", "ack", "0" * 32, "--status", "accepted", "--subscriber", "13800138001"
    )
    assert done.returncode == 2, done.stderr[-2000:]
    _said_fix(done.stderr)
    assert "warning" not in done.stderr


def test_moments_check_fails_its_redis_step(
    cluster_redis: ClusterRedis, make_settings: MakeSettings
) -> None:
    done = _run(make_settings(redis_url=cluster_redis.url), "check")
    assert done.returncode != 0
    _said_fix(done.stdout + done.stderr)


class _Said(logging.Handler):
    """Sets `said` when a record's text holds `words`."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words
        self.said = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.said.set()


async def test_found_once_running_it_is_waited_out_in_the_dependency_metrics(
    cluster_redis: ClusterRedis, make_settings: MakeSettings
) -> None:
    """The runtime's connect step after a preflight that did not reach Redis: it only
    PINGed, and the worker ran into CROSSSLOT at its first batch. Waited like a Redis
    away, in moments_dependency_up and _errors_total, /readyz naming the step, the log
    line the fix."""
    settings = make_settings(redis_url=cluster_redis.url)
    metrics = Metrics()
    runtime = Runtime(
        settings, metrics, Detector(load_rules(settings.rules), topic_types(settings))
    )
    retries = logging.getLogger("sinks.retry")
    handler = _Said("MOMENTS_REDIS_URL to a Redis without cluster mode")
    retries.addHandler(handler)
    starting = asyncio.create_task(runtime.start())
    said = asyncio.create_task(handler.said.wait())
    try:
        await asyncio.wait({starting, said}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        assert not starting.done()
        assert said.done()
        errors = metrics.dependency_errors.labels(Dependency.REDIS.value)
        assert errors._value.get() >= 1
        assert metrics.up_of[Dependency.REDIS]._value.get() == 0
        assert runtime.starting.startswith("connecting to Redis")
    finally:
        retries.removeHandler(handler)
        for task in (starting, said):
            task.cancel()
        await asyncio.gather(starting, said, return_exceptions=True)
        await runtime.stop()
