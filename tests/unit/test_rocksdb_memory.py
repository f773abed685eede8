"""The RocksDB store's memory bounds (`MOMENTS_ROCKSDB_*`, moments.rocksdb_memory).

Faust opened each partition's database with its own 2 GiB block cache, three 64 MiB write
buffers, index and filter blocks outside any cache, and up to 90% of the open-file limit:
a pod holding several partitions could grow past its memory limit with the state. Each
database is now opened with the settings' write buffers and open files and one block
cache shared by all of them, which holds their index and filter blocks too. Checked in
what RocksDB itself reports: the OPTIONS file it writes beside each database, and its
block-cache properties.
"""

from __future__ import annotations

import configparser
import gc
from pathlib import Path
from typing import Any

import pytest

from moments.app import create_app, rocksdb_bounds
from moments.exceptions import ConfigError
from moments.restore import DELETIONS_FAMILY, PreloadingTable
from moments.rocksdb_memory import MIB
from moments.settings import Settings, load_settings


def rocksdb_table(settings: Settings) -> Any:
    """The state table as `register_agents` declares it, with its store made."""
    app = create_app(settings)
    table: Any = app.tables.add(
        PreloadingTable(
            app,
            name="subs",
            default=None,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            prepare_store=rocksdb_bounds(settings),
        )
    )
    return table


def written_options(db_path: Path) -> configparser.ConfigParser:
    """The options RocksDB opened the database at `db_path` with (its newest OPTIONS file)."""
    newest = max(db_path.glob("OPTIONS-*"), key=lambda p: int(p.name.split("-")[1]))
    parser = configparser.ConfigParser(strict=False)
    parser.read(newest)
    return parser


class TestSettings:
    """The bounds' settings: defaults that fit deploy/k8s, bad values refused by name."""

    def test_defaults(self) -> None:
        settings = Settings()
        assert settings.rocksdb_block_cache_mib == 256
        assert settings.rocksdb_write_buffer_mib == 16
        assert settings.rocksdb_write_buffers == 2
        assert settings.rocksdb_max_open_files == 256

    @pytest.mark.parametrize(
        ("variable", "value", "said"),
        [
            ("MOMENTS_ROCKSDB_BLOCK_CACHE_MIB", "4", "greater than or equal to 8"),
            ("MOMENTS_ROCKSDB_BLOCK_CACHE_MIB", "2GiB", "write a whole number, e.g. 256"),
            ("MOMENTS_ROCKSDB_WRITE_BUFFER_MIB", "0", "greater than or equal to 1"),
            ("MOMENTS_ROCKSDB_WRITE_BUFFERS", "1", "greater than or equal to 2"),
            ("MOMENTS_ROCKSDB_MAX_OPEN_FILES", "-1", "greater than or equal to 20"),
        ],
    )
    def test_a_bad_value_is_refused_with_the_variable_and_the_fix(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
    ) -> None:
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError) as refused:
            load_settings()
        assert variable in str(refused.value)
        assert said in str(refused.value)

    def test_the_memory_bound_counts_each_databases_write_buffers_once_the_cache_once(
        self,
    ) -> None:
        settings = Settings(
            rocksdb_block_cache_mib=100, rocksdb_write_buffer_mib=8, rocksdb_write_buffers=3
        )
        assert settings.rocksdb_memory_mib(1) == 124
        assert settings.rocksdb_memory_mib(8) == 100 + 8 * 24


class TestOptionsReachTheDatabases:
    """What RocksDB opens a partition's database with."""

    @pytest.fixture
    def settings(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
        monkeypatch.setenv("MOMENTS_STORE", "rocksdb")
        monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("MOMENTS_ROCKSDB_BLOCK_CACHE_MIB", "24")
        monkeypatch.setenv("MOMENTS_ROCKSDB_WRITE_BUFFER_MIB", "3")
        monkeypatch.setenv("MOMENTS_ROCKSDB_WRITE_BUFFERS", "4")
        monkeypatch.setenv("MOMENTS_ROCKSDB_MAX_OPEN_FILES", "77")
        return load_settings()

    def test_each_database_is_opened_with_the_settings(self, settings: Settings) -> None:
        table = rocksdb_table(settings)
        table.data._db_for_partition(1)
        table.data._db_for_partition(3)
        paths = sorted(table.data.path.glob("*.db"))
        assert len(paths) == 2, paths
        for path in paths:
            options = written_options(path)
            db = next(s for s in options.sections() if s.startswith("DBOptions"))
            cf = next(s for s in options.sections() if s.startswith("CFOptions"))
            blocks = next(s for s in options.sections() if s.startswith("TableOptions/Block"))
            assert options[db]["max_open_files"] == "77"
            assert options[cf]["write_buffer_size"] == str(3 * MIB)
            assert options[cf]["max_write_buffer_number"] == "4"
            assert options[blocks]["cache_index_and_filter_blocks"] == "true"

    def test_the_partitions_share_one_block_cache(self, settings: Settings) -> None:
        """Faust gave each database its own cache: one per partition, each filled apart."""
        table = rocksdb_table(settings)
        first = table.data._db_for_partition(0)
        second = table.data._db_for_partition(2)
        for n in range(2000):
            first[b"a%05d" % n] = b"x" * 100
            second[b"b%05d" % n] = b"y" * 100
        first.flush()
        second.flush()
        assert first[b"a00007"] == b"x" * 100
        assert second[b"b00007"] == b"y" * 100
        usage = [int(db.property_value("rocksdb.block-cache-usage")) for db in (first, second)]
        assert usage[0] > 0
        assert usage[0] == usage[1], "the same cache seen from both databases"
        assert int(first.property_value("rocksdb.block-cache-capacity")) == 24 * MIB

    def test_a_partitions_files_are_in_its_own_path_under_the_data_dir(
        self, settings: Settings
    ) -> None:
        """A guard (no bug to fail on). Faust's `RocksDBOptions.open` sets `db_paths` on an
        options object it then drops (it opens with a fresh `as_options()`): the setting
        never reaches RocksDB. It named the database's own path, where RocksDB puts its
        table files without it, so nothing is lost: MOMENTS_DATA_DIR is where they go."""
        table = rocksdb_table(settings)
        db = table.data._db_for_partition(1)
        for n in range(2000):
            db[b"a%05d" % n] = b"x" * 100
        db.flush()
        tables = sorted(settings.data_dir.rglob("*.sst"))
        assert tables, "a flush writes a table file"
        assert {path.parent for path in tables} == {table.data.partition_path(1)}

    def test_the_deletions_family_is_opened_again_with_the_settings_and_the_shared_cache(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The family of remembered deletions (moments.restore.Deletions) was created with
        the bounded options, but a database opened again (a restart on the volume, a
        partition given back) loaded it with what rocksdict reads from the OPTIONS file: a
        block cache of its own (8 MiB, outside the shared one) and the write buffers of the
        settings it was created under, whatever the settings now say."""
        table = rocksdb_table(settings)
        table._deleted.remember(b"13000000001", 1, (5,))
        table.data._dbs.clear()  # Faust's revocation and stop: the database let go
        del table
        gc.collect()
        monkeypatch.setenv("MOMENTS_ROCKSDB_WRITE_BUFFER_MIB", "5")
        table = rocksdb_table(load_settings())
        db = table.data._db_for_partition(1)
        family = db.get_column_family(DELETIONS_FAMILY)
        assert family.get(b"13000000001") == b"5"
        for n in range(2000):
            db[b"a%05d" % n] = b"x" * 100
        db.flush()
        assert db[b"a00007"] == b"x" * 100
        shared = int(db.property_value("rocksdb.block-cache-usage"))
        assert shared > 0
        assert int(family.property_value("rocksdb.block-cache-capacity")) == 24 * MIB
        assert int(family.property_value("rocksdb.block-cache-usage")) == shared
        options = written_options(table.data.partition_path(1))
        section = next(s for s in options.sections() if DELETIONS_FAMILY in s)
        assert options[section]["write_buffer_size"] == str(5 * MIB)
        del family, db

    def test_the_memory_store_is_left_alone(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MOMENTS_STORE", "memory")
        assert rocksdb_bounds(load_settings()) is None
