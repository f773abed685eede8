"""MOMENTS_STANDBY_REPLICAS reaches Faust, and unset it follows the store: none with the
memory store (Faust drops a memory standby's keys when a recovery ends), one with RocksDB."""

from __future__ import annotations

import pytest

from moments.app import create_app
from moments.exceptions import ConfigError
from moments.settings import Settings, load_settings
from moments.worker import standby_advice


@pytest.mark.parametrize(
    ("store", "configured", "expected"),
    [("memory", None, 0), ("rocksdb", None, 1), ("memory", "1", 1), ("rocksdb", "0", 0)],
)
def test_the_worker_keeps_the_standby_copies_its_store_can_use(
    monkeypatch: pytest.MonkeyPatch, store: str, configured: str | None, expected: int
) -> None:
    monkeypatch.setenv("MOMENTS_STORE", store)
    if configured is None:
        monkeypatch.delenv("MOMENTS_STANDBY_REPLICAS", raising=False)
    else:
        monkeypatch.setenv("MOMENTS_STANDBY_REPLICAS", configured)
    app = create_app(load_settings())
    assert app.conf.table_standby_replicas == expected


def test_more_standby_copies_than_makes_sense_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_STANDBY_REPLICAS", "7")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "MOMENTS_STANDBY_REPLICAS" in str(err.value)


@pytest.mark.parametrize(
    ("store", "configured", "warned"),
    [("memory", None, False), ("memory", 0, False), ("memory", 1, True), ("rocksdb", 2, False)],
)
def test_copies_asked_for_where_none_can_serve_a_failover_are_warned_of(
    store: str, configured: int | None, warned: bool
) -> None:
    advice = standby_advice(Settings(store=store, standby_replicas=configured))
    assert (advice is not None) == warned
    if advice:
        assert "MOMENTS_STANDBY_REPLICAS=1" in advice
        assert "MOMENTS_STORE=rocksdb" in advice
