"""Pure helpers: /proc parsing (moments.embedded), host:port (moments.settings)."""

from __future__ import annotations

import socket

import pytest

from moments.embedded import EPHEMERAL_RANGE, free_port, parse_proc_net_tcp
from moments.settings import split_host_port


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_are_outside_the_range_client_connections_take_theirs_from() -> None:
    low, high = map(int, EPHEMERAL_RANGE.read_text().split())
    ports = [free_port() for _ in range(50)]
    assert all(1024 <= port < low for port in ports), (low, high, ports)


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
