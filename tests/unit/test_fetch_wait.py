"""MOMENTS_FETCH_WAIT_MS reaches the aiokafka consumer the worker reads with."""

from __future__ import annotations

import pytest

from moments.app import create_app
from moments.consumer import FETCH_MAX_WAIT_MS, BatchConsumer, BatchConsumerThread
from moments.settings import Settings


@pytest.mark.parametrize("wait_ms", [None, 37])
async def test_the_worker_consumer_waits_as_configured(wait_ms: int | None) -> None:
    # Unset, the setting's default is the consumer's (the two must not drift apart).
    settings = Settings() if wait_ms is None else Settings(fetch_wait_ms=wait_ms)
    app = create_app(settings)
    faust_consumer = app.consumer
    assert isinstance(faust_consumer, BatchConsumer)
    # The consumer the worker's thread creates (nothing connects before start()).
    thread = faust_consumer._thread
    assert isinstance(thread, BatchConsumerThread)
    kafka = thread._create_worker_consumer(faust_consumer.transport)
    try:
        assert kafka._fetch_max_wait_ms == (wait_ms or FETCH_MAX_WAIT_MS)
    finally:
        await kafka.stop()
