"""Redis's password changed under a running worker (a rotated Secret: Redis takes the new
password, the kubelet rewrites the mounted file a minute later). The worker's next
connection was refused, `with_retry` raised the AuthenticationError up through the batch,
and the worker crashed with a traceback and exit code 1, in the middle of a batch, every
worker of the app at once. It now waits, as for a Redis away (counted in
`moments_dependency_errors_total`, `moments_dependency_up` 0), with the fix in its log,
and logs in with the new password once the file holds it: the password file is read
again at each new connection."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import redis

from moments.connections import redis_client
from moments.embedded import RedisServer
from moments.settings import load_settings
from sinks.metrics import Dependency, Metrics
from sinks.retry import with_retry

pytestmark = pytest.mark.integration

OLD, NEW = "first-password", "rotated-password"


def test_a_worker_whose_redis_password_rotates_waits_and_logs_in_with_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "password"
    secret.write_text(OLD + "\n")
    monkeypatch.setenv("MOMENTS_REDIS_PASSWORD_FILE", str(secret))
    with RedisServer(tmp_path / "redis") as server:  # its readiness check takes no login
        settings = load_settings(redis_url=server.url, metrics_port=0)
        admin = redis.Redis.from_url(server.url)
        admin.config_set("requirepass", OLD)
        metrics = Metrics()
        seen: list[str] = []

        async def run() -> object:
            client = redis_client(settings)
            try:
                await client.set("k", b"v")  # logged in with the password read at start

                # The rotation: Redis first, and every connection made anew.
                admin.config_set("requirepass", NEW)
                admin.client_kill_filter(_type="normal", skipme=True)

                async def get() -> object:
                    try:
                        return await client.get("k")
                    except Exception as exc:
                        seen.append(type(exc).__name__)
                        if len(seen) == 3:  # the kubelet catches up with the Secret
                            secret.write_text(NEW + "\n")
                        raise

                return await with_retry(
                    get, Dependency.REDIS, metrics, "reading k", first_delay=0.01
                )
            finally:
                await client.aclose()

        try:
            with caplog.at_level(logging.WARNING):
                value = asyncio.run(run())
        finally:
            admin.close()
    assert value == b"v"
    assert "AuthenticationError" in seen
    assert len(seen) >= 3
    assert metrics.dependency_errors.labels(Dependency.REDIS.value)._value.get() == len(seen)
    assert metrics.up_of[Dependency.REDIS]._value.get() == 1
    refused = [
        r.getMessage() for r in caplog.records if "refused the worker's login" in r.getMessage()
    ]
    assert refused, "the retry's log line names the fix"
    assert "MOMENTS_REDIS_PASSWORD_FILE" in refused[0]
    assert OLD not in caplog.text
    assert NEW not in caplog.text
    assert any("holds a new password" in r.getMessage() for r in caplog.records)
