"""Reading partitions of a topic from their start to their end as of now, without a
consumer group: what the inspection commands (`state show`, `deadletter`) do, so they
take no partition from the workers and stop on their own."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from moments.connections import kafka_client_kwargs
from moments.exceptions import ConfigError
from moments.settings import Settings

if TYPE_CHECKING:  # rich is imported by the commands that draw a bar: not by the worker
    from rich.console import Console

    from moments.progresslines import ProgressLines

Progress = Callable[[int, int], None]
"""Called with (records read, records to read)."""


class ReadBar:
    """A `Progress` callback drawn as a bar on `console` (stderr for the commands, whose
    output may be piped); use `with bar.progress:` around the read."""

    def __init__(self, console: Console, topic: str) -> None:
        import rich.progress
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

        self.progress = rich.progress.Progress(
            TextColumn(f"reading {topic}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            # Rich sends what is printed to stdout during the bar through the bar's
            # console (stderr) whenever that is a terminal: `--json | jq` got nothing.
            # Only when stdout is that terminal too is it worth keeping above the bar.
            redirect_stdout=sys.stdout.isatty(),
        )
        self.task = self.progress.add_task("read", total=None)
        # The bar is drawn on a terminal only: in a log (`kubectl exec` with no -t, as the
        # docs run these commands), a line every 10 s instead.
        self.lines = None if console.is_terminal else _log_lines(console, topic)

    def __call__(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total)
        if self.lines is not None:
            self.lines.update(done, done / total if total else None)


def _log_lines(console: Console, topic: str) -> ProgressLines:
    from moments.progresslines import ProgressLines

    def write(text: str) -> None:
        print(text, file=console.file, flush=True)

    return ProgressLines(f"reading {topic}", write, unit="records")


class TopicReader:
    """Reads partitions of one topic with a started consumer; counts across calls, so one
    progress bar can cover several reads."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, progress: Progress | None):
        self.consumer = consumer
        self.topic = topic
        self.progress = progress
        self.done = 0
        self.total = 0

    async def batches(
        self, partitions: Collection[int]
    ) -> AsyncIterator[list[ConsumerRecord[Any, Any]]]:
        """The records of `partitions`, oldest first per partition, as fetched, up to at
        least the end each partition had when the read began.

        Every record of a fetch is kept, those past that end too: Tansu reports a
        partition's end as the first offset of its last batch plus one, so a reader that
        stopped there lost the rest of that batch (records a worker wrote together: a
        batch's dead letters, its state changelog records)."""
        consumer = self.consumer
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        if not tps:
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        starts = {tp: await consumer.position(tp) for tp in tps}
        ends = await consumer.end_offsets(tps)
        self.total += sum(ends[tp] - starts[tp] for tp in tps)
        left = {tp for tp in tps if ends[tp] > starts[tp]}
        while left:
            fetched = await consumer.getmany(*left, timeout_ms=1000)
            for records in fetched.values():
                self.done += len(records)
                if records:
                    yield records
            for tp in list(left):  # by position: the last offsets may hold no record
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
            if self.progress is not None:
                self.total = max(self.total, self.done)
                self.progress(self.done, self.total)


@asynccontextmanager
async def topic_consumer(
    settings: Settings, topic: str, role: str, missing: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, set[int]]]:
    """A started consumer without a group (client id `<app id>-<role>`) and the topic's
    partitions; a topic that does not exist stops the command with `missing`, the fix."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        client_id=f"{settings.app_id}-{role}",
        **kafka_client_kwargs(settings),
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = set(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise ConfigError(f"topic {topic} does not exist: {missing}")
        yield consumer, partitions
    finally:
        await consumer.stop()
