"""A bootstrap address where something other than a Kafka broker answers is named as such
(moments.connections.check_kafka).

Pointed at Redis's port, `moments check` and a starting worker said "no answer from ...",
and waited, as for a broker down; pointed at a server that answers in text and hangs up,
they said only that the listener might speak TLS. Each server here is a local socket
server that speaks as the real one does to a Kafka client's first bytes, and a real
redis-server where one is installed."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import moments.connections
from moments.connections import check_kafka
from moments.embedded import RedisServer
from moments.exceptions import ConfigError
from moments.settings import load_settings

AGAIN_S = 60.0
"""How long a silent address is left unprobed (`connections._PROBE_AGAIN_S`)."""
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("MOMENTS_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(moments.connections, "_PROBE_TIMEOUT_S", 0.5, raising=False)


@asynccontextmanager
async def _server(handle: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(100)
    writer.write(b"220 mail.example ESMTP ready\r\n")
    await writer.drain()
    writer.close()


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP server given bytes that are no request line: 400, then it hangs up."""
    await reader.read(100)
    writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
    await writer.drain()
    writer.close()


async def _redis_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Redis: nothing until a line whose first byte is not zero, then a reply."""
    line = await reader.readline()
    if line.startswith(b"\x00"):
        await asyncio.sleep(30)  # Redis waits for a line end it never finds
        return
    writer.write(b"-NOAUTH Authentication required.\r\n")
    await writer.drain()
    writer.close()


async def _problem(bootstrap: str) -> str:
    settings = load_settings(kafka_bootstrap=bootstrap)
    with pytest.raises(ConfigError) as raised:
        await check_kafka(settings, timeout_s=1.0, report=False)
    return str(raised.value)


@pytest.mark.parametrize(
    ("handle", "kind"),
    [(_garbage, "an unknown server"), (_http, "an HTTP server"), (_redis_like, "a Redis server")],
    ids=["text-then-hang-up", "http", "redis-like"],
)
async def test_a_server_that_is_not_kafka_is_named(handle: Handler, kind: str) -> None:
    async with _server(handle) as bootstrap:
        problem = await _problem(bootstrap)
    assert "something answered that is not a Kafka broker" in problem
    assert kind in problem
    assert "MOMENTS_KAFKA_BOOTSTRAP" in problem


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server installed")
    with RedisServer(tmp_path / "redis") as server:
        yield server.port


async def test_redis_s_own_port(redis_port: int) -> None:
    """Was `ConnectionError: no answer from 127.0.0.1:<port>: TimeoutError()`."""
    problem = await _problem(f"127.0.0.1:{redis_port}")
    assert "not a Kafka broker (a Redis server: b'+PONG" in problem
    assert "MOMENTS_KAFKA_BOOTSTRAP" in problem


async def test_nothing_listening_is_still_left_to_the_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(kafka_bootstrap=f"127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match="no answer from"):
        await check_kafka(settings, timeout_s=1.0, report=False)


async def _kafka_in_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A Kafka broker (or a proxy before one) whose ApiVersions answer reaches the client
    in pieces: its size first, the rest later. A stream gives no frame boundaries: the
    probe's first read took the size alone and named the broker 'an unknown server'."""
    size = int.from_bytes(await reader.readexactly(4), "big")
    request = await reader.readexactly(size)
    correlation = request[4:8]  # after the api key and version
    body = correlation + b"\x00\x00" + b"\x00\x00\x00\x00"  # no error, no api versions
    writer.write(len(body).to_bytes(4, "big"))
    await writer.drain()
    await asyncio.sleep(0.1)  # the size and the body in two reads
    writer.write(body)
    await writer.drain()
    await reader.read()  # keeps the connection, as a broker does


async def test_a_kafka_answer_read_in_pieces_is_kafka() -> None:
    async with _server(_kafka_in_pieces) as bootstrap:
        host, port = bootstrap.rsplit(":", 1)
        assert await moments.connections._not_kafka(host, int(port)) is None


async def _tls_alert(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A TLS listener given bytes that are no ClientHello: a fatal alert, then it hangs up
    (Kafka's own TLS listener flushes the alert before it closes)."""
    await reader.read(100)
    writer.write(b"\x15\x03\x03\x00\x02\x02\x0a")  # alert, TLS 1.2, fatal unexpected_message
    await writer.drain()
    writer.close()


async def test_a_tls_listener_names_the_security_protocol() -> None:
    """Was told only to fix MOMENTS_KAFKA_BOOTSTRAP ('not Redis's (6379) or an HTTP port'):
    the address of a Kafka listener that speaks TLS is right, its protocol setting is not."""
    async with _server(_tls_alert) as bootstrap:
        problem = await _problem(bootstrap)
    assert "a TLS listener" in problem
    assert "MOMENTS_KAFKA_SECURITY_PROTOCOL=SSL" in problem


def _silent(
    probes: list[bytes],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A listener that takes the connection and says nothing, keeping the probe's requests
    (the ApiVersions request and Redis's PING) in `probes`."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(100)
        if b"moments-probe" in first or first.startswith(b"PING"):
            probes.append(first)
        await asyncio.sleep(30)

    return silent


async def test_a_silent_server_is_probed_once_per_process() -> None:
    """A listener that takes the connection and says nothing (a broker hung, starting,
    overloaded): the probe waits for an answer to each of its two requests. Asked again
    on every failed attempt, it added those waits to each retry of a starting worker's
    wait for Kafka; the address is probed once."""
    probes: list[bytes] = []
    silent = _silent(probes)

    async with _server(silent) as bootstrap:
        settings = load_settings(kafka_bootstrap=bootstrap)
        for _ in range(3):
            with pytest.raises(ConnectionError, match="no answer from"):
                await check_kafka(settings, timeout_s=0.5, report=False)
    assert len(probes) == 2  # the ApiVersions request and PING, of the first attempt only


async def test_an_address_where_nothing_listened_is_probed_again_when_it_fails_again() -> None:
    """Nothing connected (no cost): what listens there later is still named."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(kafka_bootstrap=f"127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match="no answer from"):
        await check_kafka(settings, timeout_s=1.0, report=False)
    server = await asyncio.start_server(_http, "127.0.0.1", port)
    try:
        problem = await _problem(f"127.0.0.1:{port}")
    finally:
        server.close()
    assert "not a Kafka broker (an HTTP server" in problem
    assert getattr(moments.connections, "_PROBE_AGAIN_S", AGAIN_S) == AGAIN_S


async def test_a_silent_server_that_answers_later_as_another_is_still_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener silent when first probed (a load balancer or port-forward with no
    backend yet, a Redis busy with a long command) was remembered as no other server for
    the rest of the process: when it answered later, as the HTTP or Redis server it is, a
    worker waiting for Kafka said "no answer" for ever instead of stopping with the
    variable to fix. A silent address is asked again once `_PROBE_AGAIN_S` has passed."""
    now = [1000.0]
    monkeypatch.setattr(moments.connections, "_clock", lambda: now[0], raising=False)
    speaking: list[bool] = []

    async def silent_then_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if speaking:
            await _http(reader, writer)
        else:
            await reader.read(100)
            await asyncio.sleep(30)

    async with _server(silent_then_http) as bootstrap:
        settings = load_settings(kafka_bootstrap=bootstrap)
        with pytest.raises(ConnectionError, match="no answer from"):
            await check_kafka(settings, timeout_s=0.5, report=False)
        speaking.append(True)
        now[0] += AGAIN_S
        problem = await _problem(bootstrap)
    assert "not a Kafka broker (an HTTP server" in problem
    assert getattr(moments.connections, "_PROBE_AGAIN_S", AGAIN_S) == AGAIN_S


async def test_a_silent_server_is_not_probed_again_within_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Within `_PROBE_AGAIN_S` of its last silent probe an address is not asked again: a
    starting worker's retries (at most `KAFKA_WAIT_MAX_S` apart) do not each wait for it."""
    now = [1000.0]
    monkeypatch.setattr(moments.connections, "_clock", lambda: now[0], raising=False)
    probes: list[bytes] = []
    silent = _silent(probes)

    async with _server(silent) as bootstrap:
        settings = load_settings(kafka_bootstrap=bootstrap)
        for _ in range(2):
            with pytest.raises(ConnectionError, match="no answer from"):
                await check_kafka(settings, timeout_s=0.5, report=False)
            now[0] += AGAIN_S - 1
    assert len(probes) == 2  # the first attempt's two requests only
