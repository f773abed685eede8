"""A bulk restore applies what it read a chunk at a time, the event loop free between two.

Applied in one go, a partition of millions of records held the event loop for tens of
seconds (1M records: 9-27 s on this machine): nothing beat the health clock, /livez
failed, and Kubernetes restarted the worker mid-restore to restore again, a crash loop on
the worker with the most state. Counted here in turns of the loop, not in seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from faust.types import TP

from moments import restore
from moments.app import create_app
from moments.fence import to_header
from moments.restore import PreloadingTable
from moments.settings import load_settings
from moments.state import SubscriberState

CHUNK = 100
RECORDS = 10 * CHUNK + 1
TPX = TP("app-subs-changelog", 2)
VALUE = SubscriberState(watermark=1, stamp=(5,)).to_bytes()


def _key(n: int) -> bytes:
    return b"1%010d" % n


@pytest.fixture(params=["memory", "rocksdb"])
def table(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> Iterator[Any]:
    if request.param == "rocksdb":
        pytest.importorskip("rocksdict")
    monkeypatch.setenv("MOMENTS_STORE", request.param)
    monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path))
    # raising=False: the test must fail on its assertions where there are no chunks.
    monkeypatch.setattr(restore, "APPLY_CHUNK", CHUNK, raising=False)
    app = create_app(load_settings())
    table: Any = app.tables.add(
        PreloadingTable(
            app, name="subs", default=None, partitions=4, key_type=bytes, value_type=bytes
        )
    )

    async def read(servers: Any, kwargs: Any, starts: Any) -> dict[TP, restore.ChangelogPartition]:
        part = restore.ChangelogPartition(end=RECORDS + 20)
        for n in range(RECORDS):
            part.kept.offer(_key(n), VALUE, to_header((5,)))
        return {TPX: part}

    monkeypatch.setattr(restore, "read_changelog", read)
    table.client = ([], {})
    yield table
    if request.param == "rocksdb":
        table.data._dbs.clear()


def _held(table: Any) -> int:
    return sum(table.data.get(_key(n)) == VALUE for n in range(RECORDS))


async def test_the_event_loop_runs_between_chunks(table: Any) -> None:
    turns = 0
    done = False

    async def other_task() -> None:  # the health beat, the consumer's heartbeats
        nonlocal turns
        while not done:
            await asyncio.sleep(0)
            turns += 1

    running = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    turns = 0
    await table._preload({TPX: None}, {TPX})
    done = True
    await running
    assert turns >= RECORDS // CHUNK
    assert _held(table) == RECORDS
    assert table.persisted_offset(TPX) == RECORDS + 19  # the end read, once all is in


async def test_a_chunk_that_fails_leaves_the_stores_offset_where_it_was(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust's recovery then reads the whole partition again, as when one batch failed:
    the chunks applied before must not have told the store it holds the read's end."""
    table.data.set_persisted_offset(TPX, 7)  # a RocksDB volume's (memory: ignored)
    fenced = table._fenced
    calls = 0

    def failing_second(batch: Any, unique: bool) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk full")
        return fenced(batch, unique)

    monkeypatch.setattr(table, "_fenced", failing_second)
    await table._preload({TPX: 7}, {TPX})
    assert calls == 2
    assert TPX not in table._held
    on_disk = getattr(table.data, "_dbs", None) is not None  # RocksDB keeps an offset
    assert table.persisted_offset(TPX) == (7 if on_disk else None)
