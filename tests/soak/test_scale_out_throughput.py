"""Two workers against one on the same events and 8 partitions (`moments bench --workers`).

Checks what the figure rests on: both workers of the group took partitions and
events, and together they counted every event once. The rates are reported, not
asserted: two cores are shared by the broker, Redis, the workers and this test.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from moments.bench import Measurement, detector_consume, produce, scale_out_consume
from moments.embedded_run import all_topics
from moments.topics import ensure_topics
from tests.integration.conftest import MakeSettings

pytestmark = [pytest.mark.soak, pytest.mark.integration, pytest.mark.slow]

EVENTS = int(os.environ.get("SOAK_EVENTS", "100000"))
PARTITIONS = 8


def test_two_workers_share_the_partitions_and_count_every_event_once(
    make_settings: MakeSettings, report_figure: Callable[[str], None], tmp_path: Path
) -> None:
    console = Console(stderr=True, quiet=True)
    settings = make_settings(partitions=PARTITIONS)
    topics, compacted = all_topics(settings)
    asyncio.run(ensure_topics(settings.kafka_bootstrap, topics, compacted))
    asyncio.run(produce(settings, EVENTS, EVENTS // 10, console))

    one, _, _ = detector_consume(settings, EVENTS, tmp_path, console, latency_s=0)
    two = scale_out_consume(settings, EVENTS, 2, tmp_path, console)

    assert two.measured.events == sum(two.per_worker) == EVENTS
    assert all(n > 0 for n in two.per_worker), two.per_worker
    assert sum(two.assigned) == PARTITIONS * 5  # five input topics
    assert all(n > 0 for n in two.assigned), two.assigned
    assert one.events == EVENTS

    def cpu_us(m: Measurement) -> float:
        return (m.cpu_seconds or 0.0) / max(1, m.events - m.before) * 1e6

    report_figure(
        f"scale-out, {EVENTS:,} events, {PARTITIONS} partitions: one worker "
        f"{one.rate:,.0f} events/s ({cpu_us(one):.0f} CPU µs/event), two workers "
        f"{two.measured.rate:,.0f} events/s ({cpu_us(two.measured):.0f} CPU µs/event) "
        f"(ratio {two.measured.rate / one.rate:.2f}; events per worker "
        f"{', '.join(f'{n:,}' for n in two.per_worker)}; {two.rebalances} rebalance(s) "
        f"while measured; {os.cpu_count()} CPU cores shared with everything else)"
    )
