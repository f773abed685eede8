"""Compressed input batches against a real broker and worker: every codec a Kafka producer
may choose (gzip, snappy, lz4, zstd) is read. Without `cramjam` aiokafka has no snappy,
lz4 or zstd, and the first such batch crashed the worker's fetcher in a restart loop
(`UnsupportedCodecError`, producer-team review)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka import codec as aiokafka_codec

from moments.connections import kafka_client_kwargs
from moments.embedded import free_port
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import metric_value, wait_for_metric

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CODECS = ("gzip", "snappy", "lz4", "zstd")
PER_CODEC = 20
ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": aiokafka_codec.gzip_encode,
    "snappy": aiokafka_codec.snappy_encode,
    "lz4": aiokafka_codec.lz4_encode,
    "zstd": aiokafka_codec.zstd_encode,
}


def _topups(codec: str) -> list[tuple[bytes, bytes]]:
    """(key, value) of `PER_CODEC` valid top-ups, repetitive enough to compress: a
    producer sends a batch that does not shrink uncompressed, and the test would prove
    nothing."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    out = []
    for n in range(PER_CODEC):
        sub = f"1380000{n:04d}"
        value = {
            "event_id": f"{codec}-topup-{n}",
            "subscriber_id": sub,
            "occurred_at": now,
            "amount": "50",
            "channel": "app",
            "note": f"{codec} batch of top-ups from the app " * 8,
        }
        out.append((sub.encode(), orjson.dumps(value)))
    return out


async def test_every_codec_a_producer_may_use_is_read(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port)
    await topics_for(settings)
    worker = start_worker(settings)
    for done, codec in enumerate(CODECS, start=1):
        records = _topups(codec)
        data = b"".join(v for _, v in records)
        assert len(ENCODERS[codec](data)) < len(data) / 4, codec  # sent compressed
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            compression_type=codec,
            linger_ms=200,  # the records of a partition go in one batch
            **kafka_client_kwargs(settings),
        )
        await producer.start()
        try:
            futures = [
                await producer.send(settings.topic("topup"), value=value, key=key)
                for key, value in records
            ]
            for future in futures:
                await future
        finally:
            await producer.stop()
        await wait_for_metric(
            port,
            "moments_events_total",
            {"event_type": "topup"},
            done * PER_CODEC,
            wait_s=45,
        )
        assert worker.proc.poll() is None, (codec, worker.log()[-3000:])
    assert await metric_value(port, "moments_events_rejected_total") == 0
    assert "UnsupportedCodecError" not in worker.log()
