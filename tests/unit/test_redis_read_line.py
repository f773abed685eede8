"""`moments tasks pending` and `tasks deferred` name the Redis they read, and where its URL
came from, on stderr: run in a shell without the `export` line of `moments run`, they read
the default 127.0.0.1:6379, which on a machine with a system Redis answered with no task
and no word that it was another Redis (new user's run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.settings import load_settings
from moments.tasks_cli import redis_read


@pytest.fixture(autouse=True)
def _no_redis_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("MOMENTS_REDIS_URL", "MOMENTS_REDIS_URL_FILE", "MOMENTS_APP_ID"):
        monkeypatch.delenv(name, raising=False)


class TestRedisRead:
    """The line says the URL (its password redacted), the app id, and where the URL came
    from: the default, the environment or .env."""

    def test_the_default(self) -> None:
        assert redis_read(load_settings(), "tasks pending") == (
            "tasks pending: reading Redis redis://127.0.0.1:6379/0 for app id moments "
            "(MOMENTS_REDIS_URL not set: the default)"
        )

    def test_from_the_environment_with_its_password_redacted(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MOMENTS_REDIS_URL", "redis://:s3cret@127.0.0.1:40111/2")
        said = redis_read(load_settings(), "tasks deferred")
        assert said.startswith("tasks deferred: reading Redis redis://:****@127.0.0.1:40111/2 ")
        assert said.endswith("(MOMENTS_REDIS_URL in the environment)")
        assert "s3cret" not in said

    def test_from_dotenv(self, tmp_path: Path) -> None:
        (tmp_path / ".env").write_text("MOMENTS_REDIS_URL=redis://127.0.0.1:40111/0\n")
        said = redis_read(load_settings(), "tasks pending")
        assert "reading Redis redis://127.0.0.1:40111/0 for app id moments" in said
        assert said.endswith("(MOMENTS_REDIS_URL in .env)")
