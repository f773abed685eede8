"""Pure helpers: /proc parsing (moments.embedded), host:port (moments.settings)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from moments import embedded
from moments.embedded import EPHEMERAL_RANGE, free_port, parse_proc_net_tcp
from moments.settings import split_host_port


def _server_socket(host: str, port: int) -> socket.socket:
    """A listening socket bound as every server the tests start binds (SO_REUSEADDR:
    Python's HTTP servers, redis-server, Tansu, stunnel)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    return sock


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])  # noqa: S104 (the worker's default)
def test_a_server_can_listen_on_a_free_port(host: str) -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with _server_socket(host, port):
        pass


PROBE = """
import socket, sys
with socket.socket() as sock:
    try:
        sock.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sys.exit(3)
"""


def test_a_port_handed_out_is_not_free_to_another_process_until_its_server_binds_it() -> None:
    """`free_port` used to say only that a port was free a moment ago: another process (a
    test run beside, with its own `free_port`) could pick the same port before the child
    meant to listen on it bound it, and that child then failed (a worker's /metrics). The
    port stays reserved in this process: another process's probe finds it taken, while a
    server binding it as servers do (SO_REUSEADDR) still listens on it."""
    port = free_port()
    probe = subprocess.run([sys.executable, "-c", PROBE, str(port)], check=False, timeout=30)
    assert probe.returncode == 3, "another process could take the port handed out"
    with _server_socket("127.0.0.1", port):
        pass
    assert free_port() != port  # not handed out twice in this process either


def test_a_port_nobody_listens_on_refuses_connections() -> None:
    """Its reservation does not listen: `127.0.0.1:{free_port()}` stays an address where
    nothing answers, as the tests that need one use it."""
    port = free_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2.0).close()


def test_free_ports_are_outside_the_range_client_connections_take_theirs_from() -> None:
    low, high = map(int, EPHEMERAL_RANGE.read_text().split())
    ports = [free_port() for _ in range(50)]
    assert all(1024 <= port < low for port in ports), (low, high, ports)


@pytest.mark.parametrize(
    ("ephemeral", "lowest", "highest"),
    [
        ("1024 65000", 65001, 65535),  # a common tuning: nothing left below the range
        ("1024\t65535", 1024, 65535),  # nothing left on either side: the kernel's pick
        ("600 60999", 61000, 65535),  # below it, only ports a server must be root to bind
    ],
)
def test_an_ephemeral_range_from_1024_still_gives_a_port(
    ephemeral: str, lowest: int, highest: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ip_local_port_range` tuned to begin at 1024 (or lower) left no port between 1024
    and it: `free_port` raised `ValueError: empty range in randrange(1024, 1024)`, and
    `moments run` and every test starting a server with it stopped there. It takes one
    above the range where there is room, else one the kernel picks."""
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text(ephemeral + "\n")
    monkeypatch.setattr(embedded, "EPHEMERAL_RANGE", range_file)
    ports = [free_port() for _ in range(5)]
    assert all(lowest <= port <= highest for port in ports), ports
    with _server_socket("127.0.0.1", ports[0]):
        pass


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        (" a:1 ", ("a", 1)),
        ("[::1]:9092", ("::1", 9092)),
    ],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected


@pytest.mark.parametrize("address", ["", "host", ":9092", "host:port", "host:0", "host:65536"])
def test_split_host_port_rejects(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_host_port(address)


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0
   1: 0100007F:18EB 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0
   2: 0100007F:18EC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0
   3: garbage
"""


def test_parse_proc_net_tcp_finds_listeners_only() -> None:
    assert parse_proc_net_tcp(PROC_NET_TCP, 0x18EB) == {4242}
    assert parse_proc_net_tcp(PROC_NET_TCP, 0x18EC) == {4444}
    assert parse_proc_net_tcp(PROC_NET_TCP, 1) == set()
