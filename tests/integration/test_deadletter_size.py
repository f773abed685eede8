"""A record near the broker's size limit against a real broker and worker: dead-lettered
as `too_large` with its first 64 KiB and its size, and the worker goes on. Whole, with
our headers added, it was over the producer's limit: the refusal was retried as if Kafka
were down, for ever, and every partition stopped (producer-team review)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from moments.decoding import MAX_MESSAGE_BYTES
from moments.embedded import free_port
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import metric_value, produce, read_topic, wait_for_metric

pytestmark = [pytest.mark.integration]

SUB = "13800138001"
SIZE = 1_048_276
"""The review's record: a valid top-up with a big `note`, under the 1 MiB a producer
sends by default."""


def _big_topup() -> bytes:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    event = {
        "event_id": "t-big",
        "subscriber_id": SUB,
        "occurred_at": now,
        "amount": "50",
        "channel": "app",
        "note": "",
    }
    pad = SIZE - len(orjson.dumps(event))
    return orjson.dumps(event | {"note": "n" * pad})


async def test_a_record_near_a_megabyte_is_dead_lettered_cut_and_the_worker_goes_on(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port)
    await topics_for(settings)
    worker = start_worker(settings)
    big = _big_topup()
    assert len(big) == SIZE
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    after = {
        "event_id": "r-after",
        "subscriber_id": SUB,
        "occurred_at": now,
        "country": "JP",
        "roaming_type": "international",
    }
    await produce(settings, [("topup", SUB, big), ("roaming", SUB, after)])

    rejected = {"event_type": "topup", "reason": "too_large"}
    await wait_for_metric(port, "moments_events_rejected_total", rejected, 1, wait_s=45)
    await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, 1, wait_s=45)
    (letter,) = await read_topic(settings, "deadletter", 1, wait_s=20, settle=1.0)
    headers = dict(letter.headers)
    assert headers["__dlq.errors.reason"] == b"too_large"
    assert headers["__dlq.errors.original.size"] == str(SIZE).encode()
    assert letter.key == SUB.encode()
    assert letter.value == big[:MAX_MESSAGE_BYTES]
    assert await metric_value(port, "moments_deadletters_oversize_total") == 0
    assert await metric_value(port, "moments_dependency_errors_total", {"dependency": "kafka"}) == 0
    assert worker.proc.poll() is None, worker.log()[-3000:]
