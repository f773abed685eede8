"""Seeding the state from history (`moments state seed`): the workers go live knowing everyone.

The history (the warehouse's billing and CRM events) goes through the backtest's engine in
event time (`moments.backtest.Backtest`: the stream's `Detector`), with every moment before
the history's end in shadow (`Detector(live_from=...)`, as `MOMENTS_LIVE_FROM`): the
records are built, no task is made. Each subscriber's record is then written to the state
table's changelog (`<app id>-subscribers-changelog`) as the runtime writes it: key the
subscriber id, value `SubscriberState.to_bytes()`, on the partition murmur2 of the key
names, which is where the worker's table takes it from (the runtime writes each record
to its source event's partition, murmur2 of the key for a producer that keys as the
contract asks). A worker started afterwards restores them (moments.restore) like its own.

The records carry no input offsets: the history's positions in a file are no offsets of
the input topics, and a worker would skip every live event up to them as read already.

A subscriber a profile tombstone erased (the dispatch stores' `forgotten` mark of the last
90 days, `erased_subscribers`) gets no record: the warehouse's history may still hold
their events (its own erasure comes later), and a record written for them would bring
the erased person's data back into the state, or hand it to the number's next holder.

Seeding under a running worker would be overwritten by it, or overwrite its newer
records: `live_group` asks the broker for the members of the workers' consumer group
(DescribeGroups; Tansu answers it too), and the command refuses while there are any.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from moments.backtest import Backtest, Progress
from moments.backtest_input import Cut, EventFile, FileEvent, lines_named, unreadable_lines
from moments.backtest_state import BacktestState
from moments.exceptions import ConfigError
from moments.partitioning import partition_of
from moments.settings import Settings
from rules.catalog import RuleSet
from sinks.policy import DispatchPolicy

NEVER = dt.datetime.max.replace(tzinfo=dt.UTC)
"""The go-live instant of a seed run: no moment of the history makes a task."""
WRITE_CHUNK = 5000
"""Records produced and awaited at once."""
READ_CHUNK = 5000
"""Subscribers whose erasure marks are read in one Redis round trip."""
GROUP_ID_NOT_FOUND = 69
LIVE_STATES = frozenset({"Stable", "PreparingRebalance", "CompletingRebalance", "AwaitingSync"})


@dataclass
class Seeded:
    """What a history built: each subscriber's record as stored, and the counts."""

    records: dict[str, bytes] = field(default_factory=dict)
    events: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    """By reason."""
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    """The first dead letters as (`file:line`, reason, what was wrong)."""
    unreadable_count: int = 0
    """Lines of the files that were no JSON object: among the dead letters."""
    unreadable: list[str] = field(default_factory=list)
    """The first of them, as `file:line`."""
    untyped_count: int = 0
    """JSON objects of the files naming no event type (and none given): left out."""
    untyped: list[str] = field(default_factory=list)
    """The first of them, as `file:line` (`backtest_input.untyped_lines`)."""
    cuts: list[Cut] = field(default_factory=list)
    """Files whose gzip data ended early: nothing is written from such a history."""
    moments: int = 0
    """Moments the rules found in the history (shadow: none made a task)."""
    first_event: float | None = None
    last_event: float | None = None
    erased: int | None = None
    """Subscribers left out because a profile tombstone erased them (`leave_out`); None:
    not looked up (a dry run)."""

    def leave_out(self, erased: Iterable[str]) -> None:
        """Drop the records of subscribers a profile tombstone erased: the history still
        holds their events, and the record would be the erased person's (or, for a number
        given to someone since, theirs mixed with their predecessor's)."""
        gone = [sub for sub in erased if self.records.pop(sub, None) is not None]
        self.erased = (self.erased or 0) + len(gone)

    def by_partition(self, partitions: int) -> dict[int, list[tuple[bytes, bytes]]]:
        """The records as (key, value) per changelog partition: murmur2 of the key."""
        out: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
        for sub, value in self.records.items():
            key = sub.encode()
            out[partition_of(key, partitions)].append((key, value))
        return out

    def sizes(self) -> list[int]:
        return sorted(len(v) for v in self.records.values())


def build_states(
    rules: RuleSet,
    events: Iterable[FileEvent],
    policy: DispatchPolicy | None = None,
    until: dt.datetime | None = None,
    progress: Progress | None = None,
) -> Seeded:
    """Run `events` (event-time order) through the backtest's engine with no task made, and
    return each subscriber's record as a worker would store it, without input offsets.
    `until`: event time runs on up to it after the last event (windows close, silences are
    judged; what falls due at it is the workers'), as the backtest's `--to`."""
    backtest = Backtest(rules, policy, live_from=NEVER, locate=True)
    end = until.timestamp() if until is not None else None
    result = asyncio.run(backtest.run(events, progress, end))
    seeded = Seeded(
        events=result.events,
        dead_letters=result.dead_letters,
        refused=result.refused,
        first_event=result.first_event,
        last_event=result.last_event,
    )
    seeded.moments = int(
        sum(
            sample.value
            for metric in result.metrics.shadow.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
    )
    states = backtest.state
    assert isinstance(states, BacktestState)
    objects = states.records
    for sub in list(objects):
        # Each record's object goes as its bytes come: both sets whole at once were the
        # run's peak (the objects take ten times the bytes).
        state = objects.pop(sub)
        state.offsets.clear()  # a file's positions are no offsets of the input topics
        seeded.records[sub] = state.to_bytes()
    return seeded


def parse_partitions(text: str, count: int) -> frozenset[int]:
    """`--partitions`: changelog partitions as `0,3` or `0-5` (or both, `0-2,7`), each
    below `count` (MOMENTS_PARTITIONS); ValueError saying what to write otherwise."""
    chosen: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ValueError(
                f"--partitions {text!r}: write partition numbers and ranges, e.g. 0-3 or 0,2,5"
            ) from None
        if not 0 <= low <= high < count:
            raise ValueError(
                f"--partitions {text!r}: partitions are 0 to {count - 1} "
                f"(MOMENTS_PARTITIONS={count}), a range low to high"
            )
        chosen.update(range(low, high + 1))
    return frozenset(chosen)


def of_partitions(
    events: Iterable[FileEvent], count: int, chosen: Collection[int]
) -> Iterator[FileEvent]:
    """The events of subscribers whose records go to the `chosen` changelog partitions
    (murmur2 of the key, of `count`): a seed in parts holds only theirs in memory."""
    for event in events:
        if partition_of(event.key, count) in chosen:
            yield event


def unreadable_read(
    files: Iterable[EventFile], count: int, chosen: Collection[int] | None
) -> tuple[int, list[str]]:
    """`unreadable_lines` of `files` that this seed read. Such a line has no key: with
    `--partitions` (`of_partitions`) only the part holding the empty key's partition reads
    it, as any event without a subscriber id, and counts it among its dead letters; every
    other part said it had them too."""
    if chosen is not None and partition_of(b"", count) not in chosen:
        return 0, []
    return unreadable_lines(files)


async def erased_subscribers(settings: Settings, subscriber_ids: Sequence[str]) -> set[str]:
    """Those of `subscriber_ids` the dispatch stores hold an erasure mark for (a profile
    tombstone in the last 90 days, `sinks.relevance`: `forgotten`/`erased`), read in
    chunks of READ_CHUNK (one pipeline each)."""
    from moments.connections import redis_client
    from sinks.relevance import FactsStore

    redis = redis_client(settings)
    try:
        facts = FactsStore(redis, settings.redis_prefix)
        found: set[str] = set()
        for start in range(0, len(subscriber_ids), READ_CHUNK):
            chunk = subscriber_ids[start : start + READ_CHUNK]
            got = await facts.get_many(chunk)
            found.update(s for s, f in zip(chunk, got, strict=True) if f.erasure is not None)
        return found
    finally:
        await redis.aclose()


@dataclass(frozen=True)
class Group:
    """The workers' consumer group as the broker describes it."""

    state: str
    members: int

    @property
    def live(self) -> bool:
        return self.members > 0 or self.state in LIVE_STATES


async def live_group(settings: Settings) -> Group:
    """The consumer group `MOMENTS_APP_ID` (the workers'), by DescribeGroups."""
    from aiokafka.admin import AIOKafkaAdminClient

    from moments.connections import kafka_client_kwargs

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.app_id}-state-seed",
        **kafka_client_kwargs(settings),
    )
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([settings.app_id])
    finally:
        await admin.close()
    for response in described:
        for error_code, group_id, state, _, _, members in response.groups:
            if group_id == settings.app_id:
                if error_code == GROUP_ID_NOT_FOUND:
                    return Group("Dead", 0)
                if error_code != 0:
                    raise ConfigError(
                        f"the broker did not describe the consumer group {group_id!r} (error "
                        f"{error_code}): seeding needs to know that no worker runs"
                    )
                return Group(state or "Dead", len(members))
    return Group("Dead", 0)


async def changelog_records(
    settings: Settings, topic: str, chosen: Collection[int] | None = None
) -> int:
    """How many records the changelog holds (end minus start offsets), in the `chosen`
    partitions (None: every one): a seed in parts writes each part's partitions once. A
    changelog that does not exist yet holds none."""
    from aiokafka import TopicPartition

    from moments.topicread import topic_consumer

    try:
        async with topic_consumer(settings, topic, "state-seed", "") as (consumer, held):
            tps = [TopicPartition(topic, p) for p in held if chosen is None or p in chosen]
            if not tps:
                return 0
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            return sum(ends[tp] - starts[tp] for tp in tps)
    except ConfigError:  # topic_consumer's refusal of a topic that does not exist
        return 0


SEED_DUPLICATES = (
    "a send retried may write a state record twice (the same key and value: a worker "
    "restores the same state)"
)
"""What a plain producer means to a seed (the warning when the broker refuses a producer
id): the worker's note on tasks and the Redis ledger does not apply, a seed makes none."""


async def write_records(
    settings: Settings,
    topic: str,
    records: Sequence[tuple[int, bytes, bytes]],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce (partition, key, value) to the changelog, in chunks each awaited; returns
    how many were acknowledged. A chunk that fails or is not acknowledged in time stops the
    seed with `KafkaWriteError`: how many were written, and to seed again with --replace
    (aiokafka's error ended the command in a traceback)."""
    from aiokafka.errors import KafkaError

    from moments.exceptions import KafkaWriteError
    from moments.producer import WRITE_FAILED_FIX, error_said, start_producer, stop_within
    from sinks.base import STOPPED, produce_to_partitions

    written = 0
    started = False
    try:
        producer = await start_producer(settings, without_idempotence=SEED_DUPLICATES)
        started = True
        try:
            for start in range(0, len(records), WRITE_CHUNK):
                chunk = records[start : start + WRITE_CHUNK]
                await produce_to_partitions(producer, topic, chunk, unanswered=STOPPED)
                written += len(chunk)
                if progress is not None:
                    progress(written)
        finally:
            await stop_within(producer)
    except KafkaError as exc:
        then = (
            "Those of the failed write may have reached the topic all the same: "
            f"{WRITE_FAILED_FIX}, seed again with --replace (a record written twice is the "
            "same record)"
            if started
            else f"Nothing was sent: {WRITE_FAILED_FIX}, seed again"
        )
        raise KafkaWriteError(
            f"the seed stopped after {written:,} of {len(records):,} record(s) written to "
            f"{topic}: {error_said(exc)}. {then}"
        ) from None
    return written


def refusal(group: Group, settings: Settings) -> str:
    """Why seeding must wait for the workers, and how to stop them."""
    return (
        f"{group.members} member(s) in the consumer group {settings.app_id!r} (state "
        f"{group.state}): workers of MOMENTS_APP_ID={settings.app_id} are running, and a "
        "seed under them would be overwritten by their writes or overwrite their newer "
        "records. Stop every worker first (kubectl -n moments scale statefulset/"
        "moments-worker --replicas=0; docker compose stop detector-1 detector-2; "
        "systemctl stop moments-worker), wait for the group to empty (its session "
        "timeout), then seed again"
    )


def describe(
    seeded: Seeded, partitions: int, chosen: Collection[int] | None = None
) -> dict[str, Any]:
    """The counts `--dry-run` prints and the command says before it writes (of the
    `chosen` partitions' subscribers only, with `--partitions`)."""
    sizes = seeded.sizes()
    per = {
        p: len(items)
        for p, items in seeded.by_partition(partitions).items()
        if chosen is None or p in chosen
    }
    return {
        "events": seeded.events,
        "dead letters": sum(seeded.dead_letters.values()),
        **(
            {
                "lines no JSON object (dead letters)": f"{seeded.unreadable_count:,}: "
                + lines_named(seeded.unreadable_count, seeded.unreadable)
            }
            if seeded.unreadable_count
            else {}
        ),
        **(
            {
                "lines with no event type (left out)": f"{seeded.untyped_count:,}: "
                + lines_named(seeded.untyped_count, seeded.untyped)
            }
            if seeded.untyped_count
            else {}
        ),
        "moments (shadow, no task)": seeded.moments,
        "subscribers": len(seeded.records),
        "erased subscribers left out": "not looked up (dry run)"
        if seeded.erased is None
        else seeded.erased,
        "record bytes (mean / p99 / max)": (
            f"{sum(sizes) / len(sizes):.0f} / {sizes[min(len(sizes) - 1, len(sizes) * 99 // 100)]}"
            f" / {sizes[-1]}"
            if sizes
            else "-"
        ),
        "changelog bytes": sum(sizes),
        "records per partition": ", ".join(f"{p}: {n}" for p, n in sorted(per.items())),
    }
