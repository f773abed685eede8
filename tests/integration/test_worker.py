"""A real worker process against the real broker and Redis: events in, tasks out."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from moments.embedded import free_port
from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import metric_value, produce, read_topic, values, wait_committed, wait_for_metric

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LI, WANG = "13800138001", "13900139002"


def _now(minutes_ago: int = 0) -> str:
    tz = dt.timezone(dt.timedelta(hours=8))
    return (
        (dt.datetime.now(tz) - dt.timedelta(minutes=minutes_ago)).replace(microsecond=0).isoformat()
    )


def roaming(event_id: str, sub: str, country: str, **extra: Any) -> tuple[str, str, dict[str, Any]]:
    value = {
        "event_id": event_id,
        "subscriber_id": sub,
        "occurred_at": _now(5),
        "region": "NJ",
        "country": country,
        "roaming_type": "international",
        # Abroad where it is daytime now: quiet hours (21:00-08:00 local) hold nothing back
        # whenever the suite runs.
        "timezone": daytime_zone(dt.datetime.now(dt.UTC)),
        **extra,
    }
    return ("roaming", sub, value)


FAUST_READS_CHANGELOG = "Restoring state from changelog topics"
"""Faust's log line when its own recovery has changelog records to read."""


class TestFirstInternationalRoaming:
    """First roaming in a country gives one task; repeats and re-deliveries give none."""

    async def test_one_task_per_country_and_dead_letters_for_bad_input(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
    ) -> None:
        port = free_port()
        settings = make_settings(metrics_port=port)
        await topics_for(settings)
        worker = start_worker(settings)
        profile = {
            "event_id": "crm-1",
            "subscriber_id": LI,
            "occurred_at": _now(60),
            "tier": "gold",
            "manager_id": "m-017",
        }
        await produce(settings, [("profile", LI, profile)])
        # Topics are not ordered with each other: let the profile land before the roaming.
        await wait_for_metric(port, "moments_events_total", {"event_type": "profile"}, 1)
        # WANG's roaming with LI's number written after his own, keyed by the last (as the
        # parser read it): it was taken as LI's first roaming in France.
        twice = f',"subscriber_id":"{LI}"}}'.encode()
        merged = orjson.dumps(roaming("bad-4", WANG, "FR")[2])[:-1] + twice
        await produce(
            settings,
            [
                roaming("r1", LI, "JP", operator="NTT DOCOMO"),
                roaming("r2", LI, "JP"),
                roaming("r2", LI, "JP"),  # the same event delivered twice
                ("roaming", LI, b'{"event_id": "bad-1", '),  # not JSON
                ("roaming", LI, {"event_id": "bad-2", "subscriber_id": LI}),  # fields missing
                roaming("bad-3", LI, "Japan"),  # wrong country format
                ("roaming", LI, merged),  # subscriber_id twice
                roaming("r3", LI, "KR"),  # after the bad ones: the worker went on
                roaming("r4", WANG, "JP"),  # JP is first for another subscriber
            ],
        )
        records = await read_topic(settings, "tasks", count=3, wait_s=90, settle=3)
        tasks = values(records)
        assert sorted((t["subscriber_id"], t["moment"]["params"]["country"]) for t in tasks) == [
            (LI, "JP"),
            (LI, "KR"),
            (WANG, "JP"),
        ], worker.log()[-3000:]
        jp = next(
            t
            for t in tasks
            if t["subscriber_id"] == LI and t["moment"]["params"]["country"] == "JP"
        )
        assert jp["moment"]["family"] == "first_time"
        assert jp["moment"]["type"] == "first_international_roaming"
        assert jp["tier"] == "gold"
        assert jp["manager_id"] == "m-017"
        assert jp["region"] == "NJ"
        assert jp["evidence"] == ["r1"]
        assert jp["channel"] == "sms"
        assert len(jp["task_id"]) == 32
        assert all(
            r.key.decode() == v["subscriber_id"] for r, v in zip(records, tasks, strict=True)
        )

        dead = await read_topic(settings, "deadletter", count=4, wait_s=30, settle=1)
        assert len(dead) == 4
        reasons = sorted(dict(d.headers)["__dlq.errors.reason"].decode() for d in dead)
        assert reasons == ["duplicate_key", "invalid_event", "invalid_event", "invalid_json"]
        assert b'{"event_id": "bad-1", ' in {d.value for d in dead}  # bytes kept as they were
        for letter in dead:
            headers = dict(letter.headers)
            assert headers["__dlq.errors.topic"].decode() == settings.topic("roaming")
            assert int(headers["__dlq.errors.offset"]) >= 0
            assert headers["__dlq.errors.exception.message"]
            assert letter.key == LI.encode()

        # r2 delivered twice: applied once, the second counted as a replay.
        assert await metric_value(port, "moments_events_replayed_total") == 1
        # Every record of the roaming topic went through a timed batch, bad ones included.
        assert await metric_value(port, "moments_batch_records_sum") == 10
        assert await metric_value(port, "moments_processing_seconds_count") >= 1

        # Where a batch's time went, by step (facts: the profile and roamings are facts).
        for stage in ("detect", "facts", "dispatch", "state", "changelog"):
            count = await metric_value(port, "moments_batch_stage_seconds_count", {"stage": stage})
            assert count >= 1, stage

        # The collector's pauses are timed and reported (drained every second). A young
        # collection comes after 10,000 more objects kept than freed (moments.gctune), which
        # a worker freeing what each batch made may not reach for a long while: a rules
        # reload (SIGHUP) keeps thousands.
        deadline = time.monotonic() + 30
        while not await metric_value(port, "moments_gc_pause_seconds_count"):
            assert time.monotonic() < deadline, "no garbage-collector pause reported"
            worker.proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(1)
            await asyncio.sleep(0.5)


class TestCrashAndRestart:
    """kill -9 mid-stream, restart: every task exactly once, state restored from the changelog."""

    async def test_kill_9_then_restart_publishes_each_task_once(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
    ) -> None:
        first_port, second_port = free_port(), free_port()
        settings = make_settings(metrics_port=first_port)
        await topics_for(settings)
        first = start_worker(settings)
        await produce(settings, [roaming("r1", LI, "JP"), roaming("r2", WANG, "FR")])
        assert len(await read_topic(settings, "tasks", count=2, wait_s=90)) == 2
        # Committed: the state changelog was written before.
        await wait_committed(first_port, settings.topic("roaming"), 2)
        first.kill()

        await produce(
            settings,
            [
                roaming("r3", LI, "JP"),  # not first: the restored state knows JP
                roaming("r4", LI, "US"),
                roaming("r2", WANG, "FR"),  # re-delivered
            ],
        )
        second = start_worker(make_settings(metrics_port=second_port))
        records = await read_topic(settings, "tasks", count=3, wait_s=90, settle=4)
        countries = sorted(str(v["moment"]["params"]["country"]) for v in values(records))
        assert countries == ["FR", "JP", "US"], second.log()[-3000:]
        # The restored state, not only the ledger, kept JP from firing again.
        await wait_for_metric(second_port, "moments_events_total", {"event_type": "roaming"}, 3)
        dedup = await metric_value(second_port, "moments_tasks_suppressed_total")
        assert dedup == 0, "JP fired again after restart: state was not restored"
        # Restored by the bulk read (moments.restore), not by Faust's record-by-record path.
        log = second.log()
        restored = re.search(r"state: (\d+) record\(s\) of \d+ partition\(s\) restored", log)
        assert restored is not None, log[-3000:]
        assert int(restored.group(1)) == 2, log[-3000:]
        assert FAUST_READS_CHANGELOG not in log, log[-3000:]


class TestOutcomes:
    """A dispatch consumer's outcome reaches the worker: counted by moment type and status."""

    async def test_a_declined_outcome_is_counted_by_the_worker(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
    ) -> None:
        from moments.ack import ack_task
        from moments.models import OutcomeStatus

        port = free_port()
        settings = make_settings(metrics_port=port)
        await topics_for(settings)
        worker = start_worker(settings)
        await produce(settings, [roaming("r1", LI, "JP")])
        (task,) = values(await read_topic(settings, "tasks", count=1, wait_s=90))
        await ack_task(settings, str(task["task_id"]), OutcomeStatus.DECLINED, note="not now")
        labels = {"moment_type": "first_international_roaming", "status": "declined"}
        value = await wait_for_metric(port, "moments_task_outcomes_total", labels, 1, wait_s=60)
        assert value == 1, worker.log()[-3000:]

    async def test_unanswered_tasks_are_gauged_and_expire_counted_by_the_worker(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
    ) -> None:
        """Two tasks published, one answered: the gauge the worker's timer sets goes 2, 1;
        the other's expiry moved into the past (as hours would), the timer counts it as
        expired unanswered and the gauge goes to 0."""
        from redis.asyncio import Redis

        from moments.ack import ack_task
        from moments.models import OutcomeStatus
        from sinks.ledger import TaskLedger

        port = free_port()
        settings = make_settings(metrics_port=port)  # re-drive tick every second
        await topics_for(settings)
        worker = start_worker(settings)
        await produce(settings, [roaming("r1", LI, "JP"), roaming("r2", WANG, "KR")])
        tasks = values(await read_topic(settings, "tasks", count=2, wait_s=90))
        by_sub = {str(t["subscriber_id"]): str(t["task_id"]) for t in tasks}
        sms = {"channel": "sms"}

        async def gauge_reaches(expected: float) -> float:
            deadline, value = time.monotonic() + 30, -1.0
            while time.monotonic() < deadline:
                value = await metric_value(port, "moments_tasks_unanswered", sms)
                if value == expected:
                    break
                await asyncio.sleep(0.3)
            return value

        assert await gauge_reaches(2) == 2, worker.log()[-3000:]
        await ack_task(settings, by_sub[LI], OutcomeStatus.DONE_NO_CHANGE)
        assert await gauge_reaches(1) == 1, worker.log()[-3000:]

        redis = Redis.from_url(settings.redis_url)
        try:
            ledger = TaskLedger(redis, settings.redis_prefix, settings.ledger_ttl_seconds)
            # Expired 2 hours ago: past the default grace (1 hour).
            await redis.zadd(ledger.unanswered_key("sms"), {by_sub[WANG]: time.time() - 7200})
        finally:
            await redis.aclose()
        labels = {"channel": "sms", "moment_type": "first_international_roaming"}
        expired = await wait_for_metric(
            port, "moments_tasks_unanswered_expired_total", labels, 1, wait_s=30
        )
        assert expired == 1, worker.log()[-3000:]
        assert await gauge_reaches(0) == 0
        assert "1 published task(s) expired with no outcome (sms 1)" in worker.log()


class TestRocksDBStore:
    """MOMENTS_STORE=rocksdb: state on local disk, restored after a kill -9."""

    @staticmethod
    async def killed_and_restarted(
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
        **second: Any,
    ) -> tuple[WorkerProcess, int]:
        """A worker makes LI's JP task and is killed; another (with `second` settings)
        starts and gets JP again and KR: (the second worker, its metrics port)."""
        first_port = free_port()
        settings = make_settings(metrics_port=first_port, store="rocksdb")
        await topics_for(settings)
        first = start_worker(settings)
        await produce(settings, [roaming("r1", LI, "JP")])
        assert len(await read_topic(settings, "tasks", count=1, wait_s=90)) == 1
        await wait_committed(first_port, settings.topic("roaming"), 1)  # changelog before
        first.kill()
        assert list(settings.data_dir.rglob("*.sst")) or list(settings.data_dir.rglob("*.log")), (
            "no RocksDB files in the data dir"
        )
        assert settings.data_dir.stat().st_mode & 0o777 == 0o700  # profiles: owner only
        port = free_port()
        worker = start_worker(make_settings(metrics_port=port, store="rocksdb", **second))
        await produce(settings, [roaming("r2", LI, "JP"), roaming("r3", LI, "KR")])
        records = await read_topic(settings, "tasks", count=2, wait_s=90, settle=3)
        countries = [v["moment"]["params"]["country"] for v in values(records)]
        assert countries == ["JP", "KR"], worker.log()[-3000:]
        return worker, port

    async def test_state_in_rocksdb_survives_a_kill(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
    ) -> None:
        second, port = await self.killed_and_restarted(make_settings, topics_for, start_worker)
        await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, 2)
        assert await metric_value(port, "moments_tasks_suppressed_total") == 0
        # The store said how far the changelog held its records (moments.store.persisted),
        # so Faust's recovery had nothing to read again.
        assert FAUST_READS_CHANGELOG not in second.log(), second.log()[-3000:]

    async def test_a_worker_on_an_empty_volume_restores_the_state_in_bulk(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
        tmp_path: Path,
    ) -> None:
        """A pod rescheduled on another node: no RocksDB files, the changelog read in bulk."""
        second, _ = await self.killed_and_restarted(
            make_settings, topics_for, start_worker, data_dir=tmp_path / "other-node"
        )
        log = second.log()
        assert re.search(r"state: 1 record\(s\) of \d+ partition\(s\) restored", log), log[-3000:]
        assert FAUST_READS_CHANGELOG not in log, log[-3000:]

    async def test_a_worker_with_small_memory_bounds_restores_and_runs(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
        tmp_path: Path,
    ) -> None:
        """MOMENTS_ROCKSDB_* at their smallest: the worker on an empty volume restores the
        state and makes its tasks, its databases opened with those bounds (RocksDB's
        OPTIONS file beside each says what it opened them with)."""
        bounds = {
            "rocksdb_block_cache_mib": 8,
            "rocksdb_write_buffer_mib": 1,
            "rocksdb_write_buffers": 2,
            "rocksdb_max_open_files": 20,
        }
        second, _ = await self.killed_and_restarted(
            make_settings, topics_for, start_worker, data_dir=tmp_path / "small", **bounds
        )
        log = second.log()
        assert re.search(r"state: 1 record\(s\) of \d+ partition\(s\) restored", log), log[-3000:]
        opened = list((tmp_path / "small").rglob("OPTIONS-*"))
        assert opened, "no RocksDB database in the data dir"
        for options in opened:
            text = options.read_text()
            assert f"write_buffer_size={1024 * 1024}\n" in text
            assert "max_write_buffer_number=2\n" in text
            assert "max_open_files=20\n" in text
            assert "cache_index_and_filter_blocks=true\n" in text
