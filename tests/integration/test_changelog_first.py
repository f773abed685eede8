"""The state's changelog before its local copy, on a real RocksDB worker.

A worker killed (kill -9) while its changelog write waits on a broker outage must leave
no record on its volume that the changelog lacks: restarted on the same volume, it
judged the re-read events replays by such a record and committed them, and the
changelog never got their updates (`moments.store.FaustTableStore`).

The drill holds a batch of usage events where it is wanted: Redis stopped, the batch
(new subscribers: an erasure look-up first) waits on it; the broker cut (`tansu proxy`
stopped); Redis started, the batch goes on to its changelog write, which waits on the
broker; then kill -9.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from rocksdict import AccessType, Options, Rdict

from moments.connections import kafka_client_kwargs
from moments.embedded import RedisServer, free_port
from moments.restore import read_changelog
from moments.sample import daytime_zone
from moments.settings import Settings
from moments.stateview import changelog_topic

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import Record, TansuProxy, first_roamings
from .kafka_io import metric_value, produce, wait_committed, wait_for_metric

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAVE = 20
OFFSET_KEY = b"__faust\0offset__"
"""Where Faust's RocksDB store keeps a partition's persisted offset, beside the records."""
STAGES = "moments_batch_stage_seconds_count"
"""Batch stages ended, by stage: a batch's changelog write follows its dispatch stage."""


def usage(start: int, count: int) -> list[Record]:
    """Data usage of `count` subscribers new to the state: no task, a state record each."""
    now = dt.datetime.now(dt.UTC).isoformat()
    out: list[Record] = []
    for n in range(start, start + count):
        sub = str(15_200_000_000 + n)
        value = {
            "event_id": f"u-{n}",
            "subscriber_id": sub,
            "occurred_at": now,
            "kind": "data",
            "quantity": 1_000_000,
        }
        out.append(("usage", sub, value))
    return out


def local_records(data_dir: Path) -> dict[bytes, bytes]:
    """Every record in the worker's RocksDB databases (the worker is gone)."""
    out: dict[bytes, bytes] = {}
    dbs = sorted(p for p in data_dir.rglob("*.db") if p.is_dir())
    assert dbs, f"no RocksDB database under {data_dir}"
    for path in dbs:
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            # raw_mode: keys are bytes (rocksdict types them as any key it can store)
            out.update((k, v) for k, v in db.items() if k != OFFSET_KEY)  # type: ignore[misc]
        finally:
            db.close()
    return out


async def changelog_records(settings: Settings) -> dict[bytes, bytes | None]:
    """The newest value of each key in the state's changelog."""
    topic = changelog_topic(settings)
    read = await read_changelog(
        settings.bootstrap_servers,
        kafka_client_kwargs(settings),
        {TP(topic, p): None for p in range(settings.partitions)},
    )
    out: dict[bytes, bytes | None] = {}
    for part in read.values():
        out.update(part.values)
    return out


async def test_a_worker_killed_during_its_changelog_write_keeps_no_record_it_lacks(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    redis = RedisServer(
        tmp_path / "redis",
        port=free_port(),
        extra_args=["--appendonly", "yes", "--appendfsync", "always"],
    )
    with redis, TansuProxy(kafka_bootstrap, tmp_path / "proxy") as proxy:
        direct = make_settings(redis_url=redis.url, store="rocksdb")
        await topics_for(direct)
        port = free_port()
        via_proxy = make_settings(
            kafka_bootstrap=proxy.bootstrap, redis_url=redis.url, store="rocksdb", metrics_port=port
        )
        first = start_worker(via_proxy)
        await produce(direct, first_roamings(0, WAVE, zone))
        await wait_for_metric(port, "moments_tasks_published_total", {}, WAVE, wait_s=120)
        await wait_committed(port, direct.topic("roaming"), WAVE)

        redis.stop()
        await produce(direct, usage(0, WAVE))
        await first.wait_for_log(r"redis unavailable while reading erasures")
        # The batch holds the state lock from its erasure look-up on (no window sweep runs
        # meanwhile): the next dispatch stage to end is its own.
        dispatched = await metric_value(port, STAGES, {"stage": "dispatch"})
        proxy.stop()  # the changelog write will wait on the broker
        redis.start()
        await first.wait_for_log(r"redis is back after \d+ failed attempts? while reading erasures")
        # Its dispatch stage over (no task: usage makes none), the batch is at its changelog
        # write, which waits on the broker: nothing else can go on.
        await wait_for_metric(port, STAGES, {"stage": "dispatch"}, dispatched + 1)
        assert await metric_value(port, "moments_events_total", {"event_type": "usage"}) == 0
        first.kill()

        local = local_records(direct.data_dir)
        logged = await changelog_records(direct)
        ahead = {k for k, v in local.items() if logged.get(k) != v}
        assert not ahead, f"{len(ahead)} local record(s) the changelog lacks: {sorted(ahead)[:3]}"
        assert len(local) == WAVE  # the roaming wave's, in both

        # Restarted on the same volume: the usage events are applied, not taken for
        # replays, and their records reach the changelog.
        proxy.start()
        second_port = free_port()
        second = start_worker(
            make_settings(
                kafka_bootstrap=proxy.bootstrap,
                redis_url=redis.url,
                store="rocksdb",
                metrics_port=second_port,
            )
        )
        await wait_for_metric(
            second_port, "moments_events_total", {"event_type": "usage"}, WAVE, wait_s=120
        )
        assert await metric_value(second_port, "moments_events_replayed_total") == 0, second.log()[
            -3000:
        ]
        await wait_committed(second_port, direct.topic("usage"), WAVE)
        logged = await changelog_records(direct)
        assert {k for k, v in logged.items() if v is not None} >= {
            key.encode() for _, key, _ in usage(0, WAVE) if key is not None
        }
        second.stop()
