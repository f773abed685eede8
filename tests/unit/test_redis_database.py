"""A database number the Redis does not have (`redis://redis:6379/20` where it keeps the
default 16) is a setting to fix, said at once with the fix: Redis answers `SELECT` with
"DB index is out of range", which read as Redis down: one-off commands said "is not
reachable ... (no answer: server:ResponseError)" and a worker waited for it for ever."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from moments.cli import main
from moments.connections import check_redis
from moments.exceptions import ConfigError
from moments.settings import load_settings
from tests.unit.test_redis_eviction import REDIS_SERVER, start_redis

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server")


@pytest.fixture
def two_databases(tmp_path: Path) -> Iterator[str]:
    """A Redis of databases 0 and 1; its URL without the database."""
    for url in start_redis(tmp_path, "--databases", "2"):
        yield url.removesuffix("/0")


async def test_the_check_names_the_database_and_the_fix(two_databases: str) -> None:
    settings = load_settings(redis_url=f"{two_databases}/5")
    with pytest.raises(ConfigError) as err:
        await check_redis(settings)
    message = str(err.value)
    assert f"Redis {two_databases}/5 has no database 5" in message
    assert "set MOMENTS_REDIS_URL" in message
    assert "not reachable" not in message


def test_a_command_says_it_and_not_unreachable(
    two_databases: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOMENTS_REDIS_URL", f"{two_databases}/5")
    assert main(["tasks", "pending"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "has no database 5" in err
    assert "not reachable" not in err


async def test_a_database_it_has_passes(two_databases: str) -> None:
    assert await check_redis(load_settings(redis_url=f"{two_databases}/1")) is True
