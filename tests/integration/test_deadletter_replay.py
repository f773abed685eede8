"""`moments deadletter show` and `replay` against a real broker and Redis: dead letters as
a worker writes them, counted; the ones this version accepts sent back to their topic
once, bytes unchanged; the others left; a worker takes what came back."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from redis.asyncio import Redis

from moments import deadletter_replay
from moments.deadletter_replay import (
    BEYOND_ERASURES_MESSAGE,
    ERASED_MESSAGE,
    REPLAYED_HEADER,
    replay,
    replayed_key,
)
from moments.deadletters import NOT_AN_INPUT, Selection
from moments.embedded import free_port
from moments.producer import start_producer
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.settings import Settings
from sinks.deadletter import DeadLetterSink
from sinks.metrics import Metrics
from sinks.relevance import FactsStore

from .conftest import MakeSettings, WorkerProcess, settings_env
from .kafka_io import metric_value, read_topic, read_written, wait_for_metric

pytestmark = [pytest.mark.integration]

LI, WANG = "13800138001", "13900139002"
DAY = dt.timedelta(days=1)


def _event(event_id: str, sub: str, **fields: object) -> bytes:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    return orjson.dumps({"event_id": event_id, "subscriber_id": sub, "occurred_at": now} | fields)


async def _write_dead_letters(settings: Settings) -> dict[str, bytes]:
    """Five dead letters through the worker's own sink: two that this version accepts
    (refused by an older one, say), three it refuses too. Returns the accepted values."""
    topup = settings.topic("topup")
    accepted = {
        "topup": _event("t-1", LI, amount="50", channel="app"),
        "usage": _event("u-1", WANG, kind="data", quantity=100),
    }
    rejected = [
        RawRecord(topup, 0, 10, LI.encode(), accepted["topup"]),
        RawRecord(settings.topic("usage"), 1, 11, WANG.encode(), accepted["usage"]),
        RawRecord(topup, 0, 12, LI.encode(), b'{"event_id": '),
        RawRecord(topup, 1, 13, WANG.encode(), accepted["topup"]),  # key is not LI
        RawRecord("elsewhere.telecom.topup", 0, 14, LI.encode(), accepted["topup"]),
    ]
    await _dead_letters(settings, rejected)
    return accepted


async def _dead_letters(settings: Settings, records: list[RawRecord]) -> None:
    """Each of `records` refused (`invalid_event`) into the dead-letter topic, as a worker's
    sink writes them."""
    producer = await start_producer(settings)
    try:
        sink = DeadLetterSink(producer, settings.topic("deadletter"), Metrics())
        for record in records:
            sink.add(DeadLetter(record, "topup", RejectReason.INVALID_EVENT, "E", "then"))
        await sink.flush()
    finally:
        await producer.stop()


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moments", "deadletter", *args],
        env=settings_env(settings) | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_show_and_replay_send_back_once_what_this_version_accepts(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    settings = make_settings()
    await topics_for(settings)
    accepted = await _write_dead_letters(settings)

    shown = _cli(settings, "show")
    assert shown.returncode == 0, shown.stderr
    assert "5 dead letters" in shown.stdout
    assert "invalid_event" in shown.stdout
    assert "elsewhere.telecom.topup" in shown.stdout
    assert settings.topic("usage") in shown.stdout  # piped: never cut to 80 columns
    lines = _cli(settings, "show", "--json", "--topic", "usage").stdout.splitlines()
    assert [orjson.loads(line)["value"] for line in lines] == [accepted["usage"].decode()]

    dry = _cli(settings, "replay", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "2 would be sent back" in dry.stdout
    assert "3 still refused" in dry.stdout

    report = await replay(settings, Selection())
    assert report.replayed.total == 2
    assert report.older_than_lateness == 0  # both happened just now
    assert report.already == 0
    refused = {reason: g.count for (_, reason), g in report.still_rejected.groups.items()}
    assert refused == {"invalid_json": 1, "key_mismatch": 1, NOT_AN_INPUT: 1}
    # The dry run sent nothing: exactly one copy of each is on its topic, as it was sent.
    for name, sub in (("topup", LI), ("usage", WANG)):
        records = await read_written(settings, name, at_least=1)
        assert [(r.key, r.value) for r in records] == [(sub.encode(), accepted[name])]
        (header,) = [v for k, v in records[0].headers if k == REPLAYED_HEADER]
        assert header.decode().startswith(settings.topic("deadletter") + ":")

    # Replayed once: a second replay skips them, --again sends them anyway.
    second = await replay(settings, Selection())
    assert (second.replayed.total, second.already) == (0, 2)
    assert len(await read_written(settings, "topup", at_least=1)) == 1
    usage_only = Selection(topics=frozenset({settings.topic("usage")}))
    forced = await replay(settings, usage_only, again=True)
    assert (forced.replayed.total, forced.not_selected) == (1, 4)
    assert len(await read_written(settings, "usage", at_least=2)) == 2
    assert len(await read_written(settings, "topup", at_least=1)) == 1


class _LosesUsage:
    """A producer whose sends to one topic fail once queued (the broker gone in the
    middle of a batch): the others are acknowledged."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer, self._topic = producer, topic

    async def send(self, topic: str, **kwargs: Any) -> Any:
        if topic != self._topic:
            return await self._producer.send(topic, **kwargs)
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(KafkaConnectionError("the broker went away"))
        return failed

    async def stop(self) -> None:
        await self._producer.stop()


async def test_a_replay_cut_by_a_failed_send_sends_what_went_back_once(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One send of a batch failed: the replay stopped with the batch unmarked, and the
    next one sent the top-up that had gone back a second time (the worker's guard keeps
    a subscriber's latest 2 top-up ids: a third would be applied twice)."""
    settings = make_settings()
    await topics_for(settings)
    topup, usage = settings.topic("topup"), settings.topic("usage")
    values = {
        topup: _event("t-1", LI, amount="50", channel="app"),
        usage: _event("u-1", LI, kind="data", quantity=100),
    }
    # One subscriber's: one partition of the dead-letter topic, read in one batch.
    records = [
        RawRecord(topic, 0, offset, LI.encode(), value)
        for offset, (topic, value) in enumerate(values.items())
    ]
    await _dead_letters(settings, records)

    async def failing(s: Settings) -> Any:
        return _LosesUsage(await start_producer(s), usage)

    monkeypatch.setattr(deadletter_replay, "start_producer", failing)
    with pytest.raises(KafkaConnectionError):
        await replay(settings, Selection())
    monkeypatch.undo()

    again = await replay(settings, Selection())
    assert (again.replayed.total, again.already) == (1, 1)  # the usage event, not the top-up
    topups = await read_written(settings, "topup", at_least=1)
    assert [r.value for r in topups] == [values[topup]]
    used = await read_written(settings, "usage", at_least=1)
    assert [r.value for r in used] == [values[usage]]


async def test_a_replayed_event_is_taken_by_a_worker(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port)
    await topics_for(settings)
    await _write_dead_letters(settings)
    worker = start_worker(settings)  # a new group: it reads the input topics from the start

    replayed = _cli(settings, "replay", "--reason", "invalid_event")
    assert replayed.returncode == 0, replayed.stderr
    assert "2 sent back" in replayed.stdout

    await wait_for_metric(port, "moments_events_total", {"event_type": "topup"}, 1)
    await wait_for_metric(port, "moments_events_total", {"event_type": "usage"}, 1)
    assert await metric_value(port, "moments_events_rejected_total") == 0, worker.log()[-3000:]


def test_replay_without_redis_names_the_fix(make_settings: MakeSettings) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    result = _cli(settings, "replay")
    assert result.returncode != 0
    assert "MOMENTS_REDIS_URL" in result.stderr, result.stderr


async def test_the_replay_marks_expire_with_the_ledger(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    from moments.connections import redis_client

    settings = make_settings(ledger_ttl_seconds=3600)
    await topics_for(settings)
    await _write_dead_letters(settings)
    await replay(settings, Selection())
    redis = redis_client(settings)
    try:
        keys = [replayed_key(settings, p) for p in range(settings.partitions)]
        marked = [await redis.scard(k) for k in keys]
        ttls = [await redis.ttl(k) for k, n in zip(keys, marked, strict=True) if n]
    finally:
        await redis.aclose()
    assert sum(marked) == 2
    assert ttls
    assert all(3500 < t <= 3600 for t in ttls)


def test_show_without_the_topic_names_the_fix(make_settings: MakeSettings) -> None:
    settings = make_settings()  # its own prefix: no topic of it exists
    result = _cli(settings, "show")
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "MOMENTS_TOPIC_PREFIX" in result.stderr


async def test_a_replay_says_which_events_may_come_too_late(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    settings = make_settings(lateness_seconds=3600)
    await topics_for(settings)
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).replace(microsecond=0)
    value = orjson.dumps(
        {"event_id": "t-old", "subscriber_id": LI, "occurred_at": old.isoformat()}
        | {"amount": "50", "channel": "app"}
    )
    await _dead_letters(settings, [RawRecord(settings.topic("topup"), 0, 1, LI.encode(), value)])
    dry = _cli(settings, "replay", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "1 would be sent back" in dry.stdout
    assert "1 of them happened more than MOMENTS_LATENESS_SECONDS (3,600 s) ago" in dry.stdout


async def test_a_future_event_sent_back_once_due_is_applied(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    """The worker dead-letters an event dated ahead of its clock; once its time came,
    `replay --reason future` sends it back and the worker applies it. It noted the
    refused event's id as applied and skipped the replay as a duplicate, silently
    (SRE drill: 0 of 5 such roamings made their task). The dead letter carries the
    record's headers (less a forged `__dlq.*` one) and timestamp, and the replay sends
    the headers back: both were dropped (producer-team review).

    "Its time came" is the worker's limit reaching the event, not the wall clock: the
    event is dated 10 minutes ahead, refused by a worker that allows 2 s, then sent back
    to one (the same group and state, restarted) that allows 15 minutes. Dated 10 s ahead
    and waited for, it had to be read within 8 s of being dated, or it was taken at once:
    a loaded machine failed the test (flakes)."""
    port = free_port()
    settings = make_settings(metrics_port=port, lateness_seconds=2)  # ahead: at most 2 s
    await topics_for(settings)
    worker = start_worker(settings)
    await wait_for_metric(port, "moments_consumer_rebalance_seconds_count", {}, 1, wait_s=90)
    due = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    roaming = {"event_id": "r-ahead", "subscriber_id": LI, "occurred_at": due.isoformat()}
    value = orjson.dumps(roaming | {"country": "JP", "roaming_type": "international"})
    headers = [("traceparent", b"00-4bf92f35-01"), ("__dlq.errors.reason", b"forged")]
    sent_at = 1_764_900_000_412
    producer = await start_producer(settings)
    try:
        await producer.send_and_wait(
            settings.topic("roaming"),
            value,
            key=LI.encode(),
            headers=headers,
            timestamp_ms=sent_at,
        )
    finally:
        await producer.stop()
    rejected = {"reason": "future", "event_type": "roaming"}
    await wait_for_metric(port, "moments_events_rejected_total", rejected, 1)
    (letter,) = await read_topic(settings, "deadletter", 1, wait_s=20)
    assert letter.value == value
    assert [(k, v) for k, v in letter.headers if not k.startswith("__dlq.")] == headers[:1]
    found = dict(letter.headers)
    assert found["__dlq.errors.reason"] == b"future"
    assert found["__dlq.errors.original.timestamp"] == b"2025-12-05T02:00:00.412+00:00"
    # Before its time, the replay says from when it goes back: the lateness (2 s) before
    # its time, to the second up; replayed from then, it is taken (it said only "once
    # its time has come", producer walk-through).
    ready = dt.datetime.fromtimestamp(math.ceil(due.timestamp()) - 2, dt.UTC)
    early = _cli(settings, "replay", "--reason", "future", "--dry-run")
    assert early.returncode == 0, early.stderr
    assert f"replayable from {ready:%Y-%m-%d %H:%M:%S} UTC" in early.stdout, early.stdout
    worker.stop()  # its offsets committed: the refused record is not read again
    port = free_port()
    settings = make_settings(metrics_port=port, lateness_seconds=900)  # ahead: 15 minutes
    worker = start_worker(settings)
    await wait_for_metric(port, "moments_consumer_rebalance_seconds_count", {}, 1, wait_s=90)
    replayed = _cli(settings, "replay", "--reason", "future")
    assert replayed.returncode == 0, replayed.stderr
    assert "1 sent back" in replayed.stdout
    await wait_for_metric(port, "moments_detected_total", {}, 1)  # quiet hours may hold it
    assert await metric_value(port, "moments_events_replayed_total") == 0, worker.log()[-3000:]
    _, again = await read_written(settings, "roaming", at_least=2)
    assert again.value == value
    assert [k for k, _ in again.headers] == ["traceparent", REPLAYED_HEADER]
    assert again.headers[0] == headers[0]


async def test_a_record_dead_lettered_twice_goes_back_once(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    """A worker that reads records again (it ended without its last commit) dead-letters
    them again: three top-ups of one subscriber, twice each. All six were sent back, and
    the worker's guard against a re-delivered event (its latest 2 top-up ids) let the
    first one's copy through: applied twice. Each goes back once, as `show` and the
    headers (`__dlq.errors.topic`, `partition`, `offset`) tell a consumer to do too; the
    copies are remembered, so that a later replay of them alone sends nothing."""
    settings = make_settings()
    await topics_for(settings)
    topup = settings.topic("topup")
    values = [_event(f"t-{n}", LI, amount="50", channel="app") for n in range(3)]
    records = [RawRecord(topup, 0, 20 + n, LI.encode(), v) for n, v in enumerate(values)]
    producer = await start_producer(settings)
    between = []
    try:
        sink = DeadLetterSink(producer, settings.topic("deadletter"), Metrics())
        for _ in range(2):  # read, refused; read again after a restart, refused again
            between.append(dt.datetime.now(dt.UTC))
            for record in records:
                sink.add(DeadLetter(record, "topup", RejectReason.INVALID_EVENT, "E", "then"))
            await sink.flush()
    finally:
        await producer.stop()
    report = await replay(settings, Selection())
    assert report.replayed.total == 3
    sent = await read_written(settings, "topup", at_least=3)
    assert [r.value for r in sent] == values
    assert report.copies == 3
    copies_only = await replay(settings, Selection(since=between[1]))
    assert (copies_only.replayed.total, copies_only.already, copies_only.not_selected) == (0, 3, 3)


async def test_a_copy_is_not_sent_after_its_first_went_back_in_another_replay(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    """A replay of the first copies alone (`--until` the restart), then one of the
    copies alone (`--since` it): the second run had not met the first copies, and sent
    every record back a second time. The originals replayed are remembered too."""
    settings = make_settings()
    await topics_for(settings)
    topup = settings.topic("topup")
    values = [_event(f"t-{n}", LI, amount="50", channel="app") for n in range(2)]
    records = [RawRecord(topup, 0, 30 + n, LI.encode(), v) for n, v in enumerate(values)]
    producer = await start_producer(settings)
    between = []
    try:
        sink = DeadLetterSink(producer, settings.topic("deadletter"), Metrics())
        for _ in range(2):
            between.append(dt.datetime.now(dt.UTC))
            await asyncio.sleep(0.01)  # the copies' times after `between`, to the ms
            for record in records:
                sink.add(DeadLetter(record, "topup", RejectReason.INVALID_EVENT, "E", "then"))
            await sink.flush()
            await asyncio.sleep(0.01)
    finally:
        await producer.stop()
    dry = await replay(settings, Selection(until=between[1]), dry_run=True)
    assert (dry.replayed.total, dry.copies) == (2, 0)
    firsts = await replay(settings, Selection(until=between[1]))
    assert (firsts.replayed.total, firsts.copies) == (2, 0)
    copies = await replay(settings, Selection(since=between[1]), dry_run=True)
    assert (copies.replayed.total, copies.copies, copies.not_selected) == (0, 2, 2)
    copies = await replay(settings, Selection(since=between[1]))
    assert (copies.replayed.total, copies.copies, copies.not_selected) == (0, 2, 2)
    sent = await read_written(settings, "topup", at_least=2)
    assert [r.value for r in sent] == values
    anyway = await replay(settings, Selection(since=between[1]), again=True)
    assert anyway.replayed.total == 2  # --again sends them anyway, as it says


async def test_an_erased_subscribers_event_is_not_sent_back(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    """A replay after a profile tombstone sent the erased person's dead-lettered top-up
    back to the top-up topic: a worker drops it (dated before the erasure), but the topic
    held their data again until its retention, put there by the tool. It stays in the
    dead-letter topic, counted as still refused and saying why; an event of the number
    dated after the erasure (its new holder's) and another subscriber's go back."""
    settings = make_settings()
    await topics_for(settings)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    after = now + dt.timedelta(seconds=5)

    def topup(event_id: str, sub: str, when: dt.datetime) -> bytes:
        fields = {"amount": "50", "channel": "app", "occurred_at": when.isoformat()}
        return orjson.dumps({"event_id": event_id, "subscriber_id": sub} | fields)

    records = [
        RawRecord(settings.topic("topup"), 0, 1, LI.encode(), topup("t-li", LI, now)),
        RawRecord(settings.topic("topup"), 0, 2, WANG.encode(), topup("t-wang", WANG, now)),
        RawRecord(settings.topic("topup"), 0, 3, LI.encode(), topup("t-new", LI, after)),
    ]
    await _dead_letters(settings, records)
    redis = Redis.from_url(settings.redis_url)
    try:  # the tombstone, as a worker records it: erased at `now`
        await FactsStore(redis, settings.redis_prefix).forget([LI], now.timestamp())
    finally:
        await redis.aclose()

    report = await replay(settings, Selection())
    assert report.replayed.total == 2
    [refused] = report.still_rejected.groups.values()
    assert refused.count == 1
    assert list(refused.messages) == [ERASED_MESSAGE]
    sent = await read_written(settings, "topup", at_least=2)
    assert sorted(orjson.loads(r.value)["event_id"] for r in sent) == ["t-new", "t-wang"]


async def test_an_event_older_than_the_erasure_marks_is_not_sent_back(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    """The erasure mark the replay reads lasts 90 days; a subscriber erased longer ago has
    none, though a worker still drops their event (the state record of the number's new
    holder remembers the erasure, or the lateness refuses it): the replay sent it back,
    and the input topic held the erased person's data again until its retention. Whether
    an event dated before the marks reach was of someone erased since cannot be told, so
    it is not sent; a recent one is."""
    settings = make_settings()
    await topics_for(settings)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def topup(event_id: str, when: dt.datetime) -> bytes:
        fields = {"amount": "50", "channel": "app", "occurred_at": when.isoformat()}
        return orjson.dumps({"event_id": event_id, "subscriber_id": LI} | fields)

    records = [
        RawRecord(settings.topic("topup"), 0, 1, LI.encode(), topup("t-old", now - 100 * DAY)),
        RawRecord(settings.topic("topup"), 0, 2, LI.encode(), topup("t-recent", now - 80 * DAY)),
    ]
    await _dead_letters(settings, records)

    report = await replay(settings, Selection())
    assert report.replayed.total == 1
    [refused] = report.still_rejected.groups.values()
    assert list(refused.messages) == [BEYOND_ERASURES_MESSAGE]
    sent = await read_topic(settings, "topup", 1, wait_s=20, settle=1.0)
    assert [orjson.loads(r.value)["event_id"] for r in sent] == ["t-recent"]
