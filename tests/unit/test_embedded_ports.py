"""Pure helpers of moments.embedded: Kafka wire encoding, /proc parsing, host:port."""

from __future__ import annotations

import socket
import struct

import pytest

from moments.embedded import (
    KafkaProtocolError,
    encode_request,
    free_port,
    parse_api_versions_v0,
    parse_metadata_v0_brokers,
    parse_proc_net_tcp,
    split_host_port,
)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_encode_request_layout() -> None:
    frame = encode_request(18, 0, 7, "ab", b"\x01")
    (size,) = struct.unpack(">i", frame[:4])
    assert size == len(frame) - 4
    assert frame[4:] == struct.pack(">hhih", 18, 0, 7, 2) + b"ab" + b"\x01"


def _api_versions_payload(
    correlation_id: int, error: int, keys: list[tuple[int, int, int]]
) -> bytes:
    body = struct.pack(">ihi", correlation_id, error, len(keys))
    return body + b"".join(struct.pack(">hhh", *k) for k in keys)


def test_parse_api_versions() -> None:
    payload = _api_versions_payload(1, 0, [(18, 0, 3), (3, 0, 12)])
    assert parse_api_versions_v0(payload, 1) == {18: (0, 3), 3: (0, 12)}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (_api_versions_payload(2, 0, []), "correlation"),
        (_api_versions_payload(1, 35, []), "error code 35"),
        (_api_versions_payload(1, 0, [(18, 0, 3)])[:-2], "truncated"),
        (b"\x00", "truncated"),
    ],
)
def test_parse_api_versions_errors(payload: bytes, match: str) -> None:
    with pytest.raises(KafkaProtocolError, match=match):
        parse_api_versions_v0(payload, 1)


def test_parse_metadata_brokers() -> None:
    host = b"127.0.0.1"
    payload = struct.pack(">ii", 2, 1) + struct.pack(">ih", 111, len(host)) + host
    payload += struct.pack(">i", 9092) + struct.pack(">i", 0)  # then an empty topic array
    assert parse_metadata_v0_brokers(payload, 2) == [(111, "127.0.0.1", 9092)]
    with pytest.raises(KafkaProtocolError, match="truncated"):
        parse_metadata_v0_brokers(payload[:12], 2)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("a:1,b:2", ("a", 1)),
        ("[::1]:9092", ("::1", 9092)),
    ],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected


@pytest.mark.parametrize("address", ["", "host", ":9092", "host:port"])
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
