"""Kafka record batches as a broker stores them, built by hand: a transaction's commit
marker (a control batch), which no client here can write (aiokafka's transactions need
a broker that has them; Tansu, the test broker, has not)."""

from __future__ import annotations

import struct

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

PRODUCER_ID = 7
TIMESTAMP_MS = 1_764_900_000_000


def _builder(base_sequence: int) -> DefaultRecordBatchBuilder:
    return DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=1,
        producer_id=PRODUCER_ID,
        producer_epoch=0,
        base_sequence=base_sequence,
        batch_size=1 << 20,
    )


def records(base: int, count: int, value: bytes = b"{}") -> bytes:
    """A transactional batch of `count` records from offset `base`."""
    builder = _builder(base)
    for i in range(count):
        builder.append(i, timestamp=TIMESTAMP_MS, key=b"13800138001", value=value, headers=[])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)
    return bytes(data)


def commit_marker(offset: int = 0) -> bytes:
    """The control batch a transaction's commit writes after its records, at `offset`
    (a broker sets the offset of what it is sent)."""
    builder = _builder(-1)
    # The control record: key (version 0, type 1 = COMMIT), value (version 0, epoch 0).
    builder.append(0, timestamp=TIMESTAMP_MS, key=b"\0\0\0\1", value=b"\0" * 6, headers=[])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, offset)
    attributes = struct.unpack_from(">h", data, 21)[0] | 0x20  # the control bit
    struct.pack_into(">h", data, 21, attributes)
    struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))  # CRC: attributes on
    return bytes(data)
