"""The RocksDB store's memory, bounded by settings (`MOMENTS_ROCKSDB_*`).

Faust opens one RocksDB database per partition a worker holds (active and standby), each
with its own options from `faust.stores.rocksdb.RocksDBOptions`: its own block cache of 2
GiB, three write buffers of 64 MiB, up to 90% of the process's open-file limit in open
files, and index and filter blocks outside any cache (they grow with the data). A pod
holding 8 partitions could so reach 8 x (2 GiB + 192 MiB) as its state grew: far past its
memory limit. `RocksDBMemory` holds one block cache for all the worker's databases, and
`BoundedRocksDBOptions` opens each database with that cache (index and filter blocks
charged to it) and the settings' write buffers and open files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rocksdict
from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as RocksDBStore

from moments.restore import DELETIONS_FAMILY
from moments.settings import Settings

MIB = 1024 * 1024


@dataclass(frozen=True)
class RocksDBMemory:
    """What every partition's database in one worker is opened with."""

    block_cache_size: int
    block_cache: rocksdict.Cache
    write_buffer_size: int
    max_write_buffer_number: int
    max_open_files: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RocksDBMemory:
        size = settings.rocksdb_block_cache_mib * MIB
        return cls(
            block_cache_size=size,
            block_cache=rocksdict.Cache(size),
            write_buffer_size=settings.rocksdb_write_buffer_mib * MIB,
            max_write_buffer_number=settings.rocksdb_write_buffers,
            max_open_files=settings.rocksdb_max_open_files,
        )


class BoundedRocksDBOptions(RocksDBOptions):
    """Faust's options for a partition's database (rocksdict), with `memory`'s shared
    block cache, write buffers and open files.

    `open` is Faust's with the deletions' column family named. Faust's set `db_paths` (the
    database's own path) on an options object it then dropped, opening with a fresh
    `as_options()`: RocksDB never saw it, and needs not (with no `db_paths` it writes the
    table files in the database's path, under MOMENTS_DATA_DIR:
    tests/unit/test_rocksdb_memory.py)."""

    def __init__(self, memory: RocksDBMemory, **kwargs: Any) -> None:
        super().__init__(
            max_open_files=memory.max_open_files,
            write_buffer_size=memory.write_buffer_size,
            max_write_buffer_number=memory.max_write_buffer_number,
            block_cache_size=memory.block_cache_size,
            use_rocksdict=True,
            **kwargs,
        )
        self.memory = memory

    def open(self, path: Path, *, read_only: bool = False) -> rocksdict.Rdict:
        """Faust's open (rocksdict), the family of remembered deletions
        (`moments.restore.Deletions`) named with these options too, and made if missing.
        Not named, an existing family was opened with what rocksdict loads from the
        database's OPTIONS file: a block cache of its own (8 MiB, outside the shared one)
        and the write buffers of the settings it was made under, whatever they are now."""
        options = self.as_options()
        options.create_missing_column_families(True)
        access = (
            rocksdict.AccessType.read_write()
            if self.ttl is None
            else rocksdict.AccessType.with_ttl(self.ttl)
        )
        db = rocksdict.Rdict(
            str(path),
            options=options,
            column_families={DELETIONS_FAMILY: self.as_options()},
            access_type=access,
        )
        db.set_read_options(rocksdict.ReadOptions())
        return db

    def as_options(self) -> rocksdict.Options:
        # Faust's options, then its table factory replaced (the cache Faust made for it
        # allocates nothing until used, and nothing uses it).
        options: rocksdict.Options = super().as_options()
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)  # Faust's 3 bits
        table.set_block_cache(self.memory.block_cache)
        # Index and filter blocks in the cache, so the cache bounds them too (outside it
        # they grow with the data); level 0's pinned, as RocksDB's tuning guide advises.
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


def bound(store: Any, memory: RocksDBMemory) -> None:
    """Open `store`'s databases (Faust's RocksDB store, none opened yet) with `memory`;
    another store (memory) is left as it is."""
    if not isinstance(store, RocksDBStore):
        return
    store.rocksdb_options = BoundedRocksDBOptions(memory, ttl=store.rocksdb_options.ttl)
