"""A Redis that evicts keys when full is named, with the fix, by `moments check` (a WARN
row) and by a starting worker (a warning): docs/operations.md asks for
`maxmemory-policy noeviction` ("Redis must keep its data"), and nothing checked it,
though managed Redis services evict by default (ElastiCache: `volatile-lru`) and every
dedup ledger entry has a TTL, so every policy but noeviction may drop them: a task sent
twice, a waiting task never sent. Each test runs a `redis-server` of its own."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from moments.check import Verdict, run_checks
from moments.connections import check_redis
from moments.embedded import free_port
from moments.settings import load_settings

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server")


def start_redis(tmp_path: Path, *options: str) -> Iterator[str]:
    assert REDIS_SERVER is not None
    port = free_port()
    server = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            *options,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def evicting(tmp_path: Path) -> Iterator[str]:
    yield from start_redis(tmp_path, "--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru")


@pytest.fixture
def keeping(tmp_path: Path) -> Iterator[str]:
    yield from start_redis(tmp_path, "--maxmemory", "64mb", "--maxmemory-policy", "noeviction")


async def redis_row(url: str) -> tuple[Verdict, str]:
    settings = load_settings(redis_url=url, kafka_bootstrap="127.0.0.1:1")
    (row,) = [f for f in await run_checks(settings, timeout_s=1) if f.step.startswith("Redis")]
    return row.verdict, row.detail


async def test_moments_check_warns_of_a_redis_that_evicts(evicting: str) -> None:
    verdict, detail = await redis_row(evicting)
    assert verdict is Verdict.WARN
    assert "maxmemory-policy volatile-lru" in detail
    assert "set maxmemory-policy noeviction" in detail


async def test_a_redis_that_keeps_its_keys_passes(keeping: str) -> None:
    assert await redis_row(keeping) == (Verdict.OK, "PONG with the configured credentials")


async def test_a_starting_worker_logs_it(evicting: str, caplog: pytest.LogCaptureFixture) -> None:
    """The worker's preflight (`check_redis` reporting) says it once, and starts."""
    settings = load_settings(redis_url=evicting)
    with caplog.at_level(logging.WARNING, "moments.connections"):
        assert await check_redis(settings) is True
    (said,) = [r.getMessage() for r in caplog.records if "evicts keys" in r.getMessage()]
    assert f"Redis {evicting} evicts keys once it holds maxmemory (64 MiB;" in said


@pytest.fixture
def evicting_behind_acl(evicting: str) -> str:
    """The evicting Redis, with docs/security.md's recommended ACL user added (`moments`,
    password `pw`: `~moments:* +@read +@write +@scripting +ping -@dangerous`), to which INFO
    and CONFIG (`@dangerous`) are denied."""
    admin = redis.Redis.from_url(evicting)
    admin.acl_setuser(
        "moments",
        enabled=True,
        passwords=["+pw"],
        keys=["moments:*"],
        categories=["+@read", "+@write", "+@scripting", "-@dangerous"],
        commands=["+ping"],
    )
    admin.close()
    return evicting


async def test_moments_check_says_it_cannot_tell_when_info_is_denied(
    evicting_behind_acl: str,
) -> None:
    """The recommended ACL denies INFO, so the policy cannot be read: the row says so plainly
    and how to read it by hand, instead of an `ok` that reads as "does not evict"."""
    settings = load_settings(
        redis_url=evicting_behind_acl,
        redis_username="moments",
        redis_password="pw",
        kafka_bootstrap="127.0.0.1:1",
    )
    (row,) = [f for f in await run_checks(settings, timeout_s=1) if f.step.startswith("Redis")]
    assert row.verdict is Verdict.WARN
    assert f"could not tell whether Redis {evicting_behind_acl} evicts keys" in row.detail
    assert "CONFIG GET maxmemory-policy" in row.detail
    assert "noeviction" in row.detail


async def test_a_starting_worker_says_it_cannot_tell(
    evicting_behind_acl: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker starts all the same, and its log says once that it could not tell."""
    settings = load_settings(
        redis_url=evicting_behind_acl, redis_username="moments", redis_password="pw"
    )
    with caplog.at_level(logging.INFO, "moments.connections"):
        assert await check_redis(settings) is True
    said = [r for r in caplog.records if "could not tell" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == logging.INFO
