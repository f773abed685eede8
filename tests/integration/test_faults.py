"""Faults under load, each bounded in time: the worker recovers by itself, every task once.

Each test streams first international roamings of distinct subscribers (one task
each), breaks something mid-stream, restores it, and then reads the dispatch topic
from the start: exactly one task per subscriber, and the outage visible in metrics.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from moments.decoding import MAX_MESSAGE_BYTES
from moments.embedded import RedisServer, free_port
from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import TansuProxy, first_roamings, poisoned_stream, raw_value
from .kafka_io import metric_value, produce, read_topic, values, wait_for_metric

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAVE = 100
GRACE_S = 45.0
"""Kubernetes gives a worker 60 s after SIGTERM (deploy/k8s); we stop well before."""


def as_dead_letter(value: bytes | None) -> bytes | None:
    """What the dead letter of a record with this value holds."""
    return value[:MAX_MESSAGE_BYTES] if value is not None else None


def assert_one_task_each(tasks: list[dict[str, Any]], expected: int, log: str) -> None:
    per_subscriber = Counter(str(t["subscriber_id"]) for t in tasks)
    assert len(per_subscriber) == expected, (len(per_subscriber), log[-3000:])
    assert max(per_subscriber.values()) == 1, per_subscriber.most_common(3)
    assert len({t["task_id"] for t in tasks}) == len(tasks) == expected


class TestBrokerCut:
    """`tansu proxy` between the worker and the broker, stopped mid-stream and started
    again: the worker reconnects by itself and publishes every task once."""

    async def test_the_worker_recovers_from_a_cut_connection(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
        kafka_bootstrap: str,
        tmp_path: Path,
    ) -> None:
        zone = daytime_zone(dt.datetime.now(dt.UTC))
        direct = make_settings()
        await topics_for(direct)
        with TansuProxy(kafka_bootstrap, tmp_path / "proxy") as proxy:
            port = free_port()
            worker = start_worker(make_settings(kafka_bootstrap=proxy.bootstrap, metrics_port=port))
            await produce(direct, first_roamings(0, WAVE, zone))
            await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, WAVE)

            proxy.stop()  # every connection of the worker is cut
            await produce(direct, first_roamings(WAVE, WAVE, zone))  # written while cut off
            errors = await wait_for_metric(
                port, "moments_dependency_errors_total", {"dependency": "kafka"}, 1, wait_s=30
            )
            assert await metric_value(port, "moments_dependency_up", {"dependency": "kafka"}) == 0
            await asyncio.sleep(3)
            proxy.start()  # same address

            await produce(direct, first_roamings(2 * WAVE, WAVE, zone))
            records = await read_topic(direct, "tasks", count=3 * WAVE, wait_s=120, settle=5)
            assert_one_task_each(values(records), 3 * WAVE, worker.log())
            await wait_for_metric(port, "moments_dependency_up", {"dependency": "kafka"}, 1)
            assert errors >= 1
            assert "kafka did not answer the lag sample" in worker.log()
            worker.stop()  # before the proxy goes, so the shutdown is an ordinary one

    async def test_a_worker_cut_off_from_the_broker_stops_in_time_and_loses_nothing(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
        kafka_bootstrap: str,
        tmp_path: Path,
    ) -> None:
        """SIGTERM while the broker is unreachable (a rolling restart during an outage):
        the worker gives up its last commit and stops well within Kubernetes' 60 s grace
        period (it took 90 s and crashed); its successor reads the uncommitted events
        again and publishes every task once."""
        zone = daytime_zone(dt.datetime.now(dt.UTC))
        direct = make_settings()
        await topics_for(direct)
        with TansuProxy(kafka_bootstrap, tmp_path / "proxy") as proxy:
            port = free_port()
            via_proxy = make_settings(kafka_bootstrap=proxy.bootstrap, metrics_port=port)
            worker = start_worker(via_proxy)
            await produce(direct, first_roamings(0, WAVE, zone))
            await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, WAVE)

            proxy.stop()
            await produce(direct, first_roamings(WAVE, WAVE, zone))
            await wait_for_metric(
                port, "moments_dependency_errors_total", {"dependency": "kafka"}, 1, wait_s=30
            )
            worker.proc.send_signal(signal.SIGTERM)
            # A bounded wait, not a timing check: the worker's own stop deadline must end
            # it before Kubernetes' grace period would (SIGKILL at 60 s).
            try:
                code = await asyncio.to_thread(worker.proc.wait, GRACE_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {GRACE_S:.0f} s after SIGTERM: {worker.log()[-3000:]}")
            assert code == 0, worker.log()[-3000:]
            # It says it gave up: the last commit, or (when the cut caught the last batch
            # of the first wave still writing its tasks or state) the batch in progress, or
            # the state that batch or a window sweep still held at the stop's deadline;
            # either way the events since the last commit are read again.
            gave_up = (
                "did not take the last commit",
                "the batch in progress did not finish",
                "still held the state after",
            )
            assert any(said in worker.log() for said in gave_up), worker.log()[-3000:]
            # aiokafka repeats its errors on every retry (thousands of lines before):
            # each kind once per 30 s (moments.logthrottle)
            assert worker.log().count("Unable connect to node") <= 3, worker.log()[-3000:]

            proxy.start()
            successor = start_worker(make_settings(kafka_bootstrap=proxy.bootstrap))
            await produce(direct, first_roamings(2 * WAVE, WAVE, zone))
            records = await read_topic(direct, "tasks", count=3 * WAVE, wait_s=120, settle=5)
            assert_one_task_each(values(records), 3 * WAVE, successor.log())
            successor.stop()


class TestRedisOutageUnderLoad:
    """Redis (with AOF, as the ledger requires) stopped while a real worker has events to
    process, started again: batches wait and retry, every task is published once."""

    async def test_the_worker_waits_for_redis_and_loses_nothing(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
        tmp_path: Path,
    ) -> None:
        zone = daytime_zone(dt.datetime.now(dt.UTC))
        server = RedisServer(
            tmp_path / "redis",
            port=free_port(),
            extra_args=["--appendonly", "yes", "--appendfsync", "always"],
        )
        with server:
            port = free_port()
            settings = make_settings(redis_url=server.url, metrics_port=port)
            await topics_for(settings)
            worker = start_worker(settings)
            await produce(settings, first_roamings(0, WAVE, zone))
            await wait_for_metric(port, "moments_tasks_published_total", {}, WAVE)

            server.stop()
            await produce(settings, first_roamings(WAVE, WAVE, zone))  # arrive while it is down
            errors = await wait_for_metric(
                port, "moments_dependency_errors_total", {"dependency": "redis"}, 1, wait_s=30
            )
            assert await metric_value(port, "moments_dependency_up", {"dependency": "redis"}) == 0
            await asyncio.sleep(3)
            published_while_down = await metric_value(port, "moments_tasks_published_total")
            server.start()  # same port, same AOF

            await produce(settings, first_roamings(2 * WAVE, WAVE, zone))
            records = await read_topic(settings, "tasks", count=3 * WAVE, wait_s=120, settle=5)
            assert_one_task_each(values(records), 3 * WAVE, worker.log())
            assert published_while_down == WAVE  # nothing went out without the ledger
            await wait_for_metric(port, "moments_dependency_up", {"dependency": "redis"}, 1)
            assert errors >= 1
            assert await metric_value(port, "moments_tasks_suppressed_total") == 0
            worker.stop()


class TestPoisonAtASteadyRate:
    """One record in 20 malformed, of every kind in turn: each one in the dead-letter
    topic with its reason and original bytes, every good event processed, once."""

    async def test_every_poison_record_is_dead_lettered_and_every_good_one_processed(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
    ) -> None:
        zone = daytime_zone(dt.datetime.now(dt.UTC))
        records, poison, good = poisoned_stream(700, every=20, zone=zone)
        assert len(poison) == 35
        port = free_port()
        settings = make_settings(metrics_port=port)
        await topics_for(settings)
        worker = start_worker(settings)
        await produce(settings, records)

        tasks = values(await read_topic(settings, "tasks", count=good, wait_s=120, settle=3))
        assert_one_task_each(tasks, good, worker.log())
        dead = await read_topic(settings, "deadletter", count=len(poison), wait_s=60, settle=3)
        reasons = Counter(dict(d.headers)["__dlq.errors.reason"].decode() for d in dead)
        assert reasons == Counter(reason for reason, _ in poison)
        # Bytes unchanged, but a too_large value: its first 64 KiB, and its size.
        expected = Counter(as_dead_letter(raw_value(r)) for _, r in poison)
        assert Counter(d.value for d in dead) == expected
        for letter in dead:
            headers = dict(letter.headers)
            assert headers["__dlq.errors.topic"].decode() == settings.topic("roaming")
            assert headers["__dlq.errors.exception.message"]
            if headers["__dlq.errors.reason"] == b"too_large":
                assert int(headers["__dlq.errors.original.size"]) > MAX_MESSAGE_BYTES
        assert await metric_value(port, "moments_events_rejected_total") == len(poison)
        assert await metric_value(port, "moments_events_total") == len(records)
        worker.stop()


class TestClockJumps:
    """A source whose clock jumps days ahead, and events from long ago: counted in
    moments_events_out_of_time_total, not applied, and in the dead-letter topic; later
    normal events of the same subscriber detect as if the bad ones had never come."""

    async def test_events_far_in_the_future_or_past_leave_state_unharmed(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        zone = daytime_zone(now)
        sub = "15300000001"

        def roaming(event_id: str, country: str, at: dt.datetime) -> tuple[str, str, Any]:
            value = {
                "event_id": event_id,
                "subscriber_id": sub,
                "occurred_at": at.isoformat(),
                "country": country,
                "roaming_type": "international",
                "timezone": zone,
            }
            return ("roaming", sub, value)

        port = free_port()
        settings = make_settings(metrics_port=port)
        await topics_for(settings)
        worker = start_worker(settings)
        await produce(settings, [roaming("c1", "FR", now)])
        await wait_for_metric(port, "moments_tasks_published_total", {}, 1)
        await produce(
            settings,
            [
                roaming("c2", "DE", now + dt.timedelta(days=3)),  # the source's clock jumped
                roaming("c3", "IT", now + dt.timedelta(days=400)),
                roaming("c4", "US", dt.datetime(2001, 1, 1, tzinfo=dt.UTC)),
                roaming("c5", "GB", now - dt.timedelta(days=2)),  # older than the lateness
            ],
        )
        out_of_time = "moments_events_out_of_time_total"
        await wait_for_metric(port, out_of_time, {"kind": "future"}, 2)
        await wait_for_metric(port, out_of_time, {"kind": "late"}, 2)
        await produce(
            settings,
            [
                roaming("c6", "DE", now),  # first DE: the future event did not count
                roaming("c7", "FR", now),  # not first: state still knows FR
                roaming("c8", "US", now),  # first US: the old event did not count
            ],
        )
        # Detected: FR, DE, US. The US SMS is the week's third contact, which the catalog's
        # frequency cap keeps for priorities 1-2: it counts as detected, not published.
        roaming_moments = {"family": "first_time", "moment_type": "first_international_roaming"}
        await wait_for_metric(port, "moments_detected_total", roaming_moments, 3)
        records = await read_topic(settings, "tasks", count=2, wait_s=60, settle=3)
        countries = [t["moment"]["params"]["country"] for t in values(records)]
        assert countries == ["FR", "DE"], worker.log()[-3000:]
        await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, 8)
        assert await metric_value(port, out_of_time, {"kind": "future"}) == 2
        assert await metric_value(port, out_of_time, {"kind": "late"}) == 2
        suppressed = "moments_tasks_suppressed_total"
        assert await metric_value(port, suppressed, {"reason": "dedup"}) == 0  # state, not ledger
        assert await metric_value(port, suppressed, {"reason": "frequency_cap"}) == 1
        # Each went to the dead-letter topic, its bytes kept, saying why it was not applied.
        dead = await read_topic(settings, "deadletter", count=4, wait_s=30, settle=1)
        reasons = {
            orjson.loads(d.value)["event_id"]: dict(d.headers)["__dlq.errors.reason"].decode()
            for d in dead
            if d.value is not None
        }
        assert reasons == {"c2": "future", "c3": "future", "c4": "late", "c5": "late"}
        worker.stop()
