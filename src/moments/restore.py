"""Restoring the in-memory state table from its changelog with a plain consumer.

Faust's recovery hands every changelog record through its consumer thread, a
stream event and a queue, one by one: a restarted worker came back at ~9-11k
records/s on this machine (`benchmarks/recovery.py`), so 1M subscribers would
take minutes before the first event is processed. Here the changelog partitions
that a rebalance makes active are read in bulk with aiokafka, the newest value
of each key is put in the table's memory store, and Faust is told the store
holds everything up to the end offset it read (`persisted_offset`, as RocksDB
tells it), so its own recovery has nothing left to read.

Partitions the worker kept through the rebalance are not read again: the
batch loop wrote each of their records to the store as it wrote the changelog
(`moments.store.FaustTableStore`), and a revocation waits for the batch in
flight. Anything that fails here leaves the partition to Faust's recovery,
which reads it from the start as before. Standby partitions are left to Faust.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

log = logging.getLogger(__name__)

READ_LIMIT_S = 300.0
"""Give up bulk reading after this long and leave what is unread to Faust's recovery."""
FETCH_BYTES = 16 * 1024 * 1024
"""Per request and per partition: records are small, so large fetches."""


@dataclass
class ChangelogPartition:
    """The newest value of each key of one changelog partition (None: deleted)."""

    end: int
    """The end offset read up to: every record before it is in `values`."""
    values: dict[bytes, bytes | None] = field(default_factory=dict)


async def read_changelog(
    bootstrap_servers: list[str],
    client_kwargs: Mapping[str, Any],
    tps: Collection[TP],
    ends_of: Collection[TP] = (),
) -> dict[TP, ChangelogPartition]:
    """Every record of `tps` up to their end offsets at the start, folded to the newest
    value per key; for `ends_of`, their end offsets alone (nothing read)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=FETCH_BYTES,
        max_partition_fetch_bytes=FETCH_BYTES,
        **client_kwargs,
    )
    await consumer.start()
    try:
        wanted = {TopicPartition(tp.topic, tp.partition): tp for tp in (*tps, *ends_of)}
        ends = await consumer.end_offsets(list(wanted))
        out = {tp: ChangelogPartition(ends[k]) for k, tp in wanted.items()}
        pending = {k for k, tp in wanted.items() if tp in tps and ends[k] > 0}
        if not pending:
            return out
        consumer.assign(list(pending))
        await consumer.seek_to_beginning(*pending)
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=100_000)
            for k, records in fetched.items():
                values = out[wanted[k]].values
                for record in records:
                    if record.offset < ends[k] and record.key is not None:
                        values[record.key] = record.value
            for k in list(pending):
                if await consumer.position(k) >= ends[k]:
                    pending.discard(k)
        return out
    finally:
        await consumer.stop()


class PreloadingTable(faust.Table[bytes, bytes]):
    """A memory-store table whose newly active changelog partitions are read in bulk
    (see the module's docstring). `client` must be set before the worker starts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client: tuple[list[str], Mapping[str, Any]] | None = None
        """(bootstrap servers, aiokafka security arguments) for the bulk reads."""
        self._restored: dict[TP, int] = {}
        """Active changelog partition -> the last offset the store holds."""

    def persisted_offset(self, tp: TP) -> int | None:
        found = self._restored.get(tp)
        return found if found is not None else super().persisted_offset(tp)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        changelog = self.changelog_topic.get_topic_name()
        active = {tp for tp in self.app.assignor.assigned_actives() if tp.topic == changelog}
        kept = {tp for tp in active if tp in self._restored}
        self._restored = {tp: self._restored[tp] for tp in kept}
        new = active - kept
        if not active or self.client is None:
            return
        await self._preload(new, kept)

    async def _preload(self, new: set[TP], kept: set[TP]) -> None:
        started = time.perf_counter()
        servers, kwargs = self.client or ([], {})
        try:
            read = await asyncio.wait_for(
                read_changelog(servers, kwargs, new, ends_of=kept), READ_LIMIT_S
            )
        except Exception as exc:  # Faust's recovery reads them instead, slower
            log.warning(
                "bulk restore of %d state partition(s) failed (%s: %s); Faust's recovery "
                "reads them instead",
                len(new),
                type(exc).__name__,
                exc,
            )
            return
        store = cast(Any, self.data)  # faust's memory store: its dict and key partitions
        records = store.data
        partition_of_key = store._key_partition
        count = 0
        for tp in new:
            part = read[tp]
            for key, value in part.values.items():
                if value is None:
                    records.pop(key, None)
                    partition_of_key.pop(key, None)
                else:
                    records[key] = value
                    partition_of_key[key] = tp.partition
                    count += 1
        # Kept partitions: the store is current, their changelog ends where it ends now.
        for tp, part in read.items():
            self._restored[tp] = part.end - 1
        log.info(
            "state: %d record(s) of %d partition(s) restored from the changelog in %.1f s",
            count,
            len(new),
            time.perf_counter() - started,
        )
