"""Real connections to the session broker and Redis, and the embedded servers' life cycle."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from moments import embedded
from moments.embedded import (
    EmbeddedError,
    RedisServer,
    TansuBroker,
    free_port,
    probe_kafka,
)
from moments.topics import ensure_topics
from tests.integration.fault_tools import freeze, thaw

pytestmark = pytest.mark.integration

UniqueNames = Callable[[str], str]  # the `unique_name` fixture (tests/conftest.py)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is gone if /proc says so.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def _port_refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


async def test_produce_and_consume_roundtrip(
    kafka_bootstrap: str, unique_name: UniqueNames
) -> None:
    topic = unique_name("roundtrip")
    await ensure_topics(kafka_bootstrap, {topic: 2})

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            topic, b"hello", key=b"k1", partition=1, headers=[("origin", b"test")]
        )
    finally:
        await producer.stop()
    assert (meta.partition, meta.offset) == (1, 0)

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 1)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=10_000)
    finally:
        await consumer.stop()
    records = batch.get(tp, [])
    assert [(r.key, r.value, r.offset) for r in records] == [(b"k1", b"hello", 0)]
    assert list(records[0].headers) == [("origin", b"test")]


def test_probe_kafka_answers(kafka_bootstrap: str) -> None:
    probe = probe_kafka(kafka_bootstrap)
    host, port = kafka_bootstrap.rsplit(":", 1)
    assert [(h, p) for _, h, p in probe.brokers] == [(host, int(port))]
    assert probe.cluster_id


def test_probe_kafka_says_when_no_broker_answers() -> None:
    with socket.socket() as silent:  # listens, never speaks Kafka
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(ConnectionError, match="no Kafka broker answered"):
            probe_kafka(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)


async def test_redis_set_get(redis_db: str, unique_name: UniqueNames) -> None:
    assert not redis_db.startswith("redis://127.0.0.1:6379")
    client = aredis.Redis.from_url(redis_db)
    try:
        key = unique_name("key")
        assert await client.set(key, "v", nx=True, ex=60)
        assert await client.get(key) == b"v"
        assert not await client.set(key, "w", nx=True)
        assert 0 < await client.ttl(key) <= 60
    finally:
        await client.aclose()


async def test_redis_db_starts_empty(redis_db: str) -> None:
    client = aredis.Redis.from_url(redis_db)
    try:
        assert await client.dbsize() == 0
        await client.set("leftover", "1")  # the next redis_db user must not see it
    finally:
        await client.aclose()


def test_tansu_stop_leaves_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    broker = TansuBroker(tmp_path)
    with broker:
        elapsed = time.monotonic() - started
        pid, port = broker.pid, broker.port
        assert broker.running
        assert broker.bootstrap == f"127.0.0.1:{port}"
        advertised = [(host, p) for _, host, p in probe_kafka(broker.bootstrap).brokers]
        assert advertised == [("127.0.0.1", port)]
        assert broker in embedded._LIVE
    print(f"tansu start {elapsed:.3f}s")
    assert _pid_gone(pid)
    assert _port_refuses(port)
    assert not broker.running
    assert broker not in embedded._LIVE
    assert broker.log_path is not None
    assert "ready in" in broker.log_path.read_text()
    broker.stop()  # twice is fine


def test_tansu_start_twice_and_restart(tmp_path: Path) -> None:
    broker = TansuBroker(tmp_path)
    try:
        broker.start()
        first_pid = broker.pid
        assert broker.start() is broker  # already running: no new process
        assert broker.pid == first_pid
        broker.stop()
        broker.start()  # a fresh broker, maybe on another port
        assert broker.pid != first_pid
        probe_kafka(broker.bootstrap)
    finally:
        broker.stop()
    assert _pid_gone(first_pid)


def test_tansu_retries_when_port_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(embedded, "free_port", lambda: next(ports))
        with TansuBroker(tmp_path) as broker:
            assert broker.port != taken
            probe_kafka(broker.bootstrap)
        assert (tmp_path / f"tansu-{taken}.log").exists()


def test_redis_retries_when_port_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The port `free_port` picked was taken before redis-server bound it: it exits saying
    so, and is started again on another port."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(embedded, "free_port", lambda: next(ports))
        with RedisServer(tmp_path) as server:
            assert server.port != taken
            client = redis.Redis.from_url(server.url)
            try:
                assert client.ping()
            finally:
                client.close()
        assert "Address already in use" in (tmp_path / f"redis-{taken}.log").read_text()


def test_tansu_fixed_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = TansuBroker(tmp_path, port=taken, start_timeout=5)
        with pytest.raises(EmbeddedError, match=r"AddrInUse|Address"):
            broker.start()
    assert not broker.running
    assert broker not in embedded._LIVE


def test_tansu_bad_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedError, match="missing or not executable"):
        TansuBroker(tmp_path, binary=tmp_path / "nope").start()


def test_tansu_exit_before_ready_shows_log(tmp_path: Path) -> None:
    broker = TansuBroker(tmp_path, extra_args=["--no-such-flag"], start_timeout=5)
    with pytest.raises(EmbeddedError, match="exited with code") as info:
        broker.start()
    assert "no-such-flag" in str(info.value)
    assert not broker.running


def test_redis_server_lifecycle_frozen_and_thawed(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        pid, port = server.pid, server.port
        assert server.url == f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(server.url, socket_timeout=0.5)
        try:
            assert client.ping()
            freeze(server)
            with pytest.raises(redis.TimeoutError):
                client.get("x")
            thaw(server)
            client = redis.Redis.from_url(server.url, socket_timeout=2)
            assert client.ping()
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
        finally:
            client.close()
        freeze(server)  # stop() must still end a frozen server
    assert _pid_gone(pid)
    assert _port_refuses(port)


def test_own_workdir_is_removed() -> None:
    server = RedisServer()
    with server:
        workdir = server.workdir
        assert workdir is not None
        assert workdir.is_dir()
    assert not workdir.exists()


_CHILD = """
import sys, time
from moments.embedded import RedisServer, TansuBroker
broker = TansuBroker(sys.argv[1] + "/b").start()
server = RedisServer(sys.argv[1] + "/r").start()
print(broker.pid, server.pid, flush=True)
if sys.argv[2] == "sleep":
    time.sleep(60)
"""


def _run_child(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, [int(pid) for pid in line.split()]


def _wait_gone(pids: list[int], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_pid_gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def test_interpreter_exit_stops_servers(tmp_path: Path) -> None:
    proc, pids = _run_child(tmp_path, "exit")
    assert len(pids) == 2
    assert proc.wait(20) == 0
    assert _wait_gone(pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_killed_parent_takes_servers_along(tmp_path: Path) -> None:
    proc, pids = _run_child(tmp_path, "sleep")
    assert len(pids) == 2
    proc.kill()  # no atexit: only the parent-death signal can clean up
    proc.wait(10)
    assert _wait_gone(pids)
