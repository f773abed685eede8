"""`moments run` starts its worker with the embedded stack's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.embedded_run import worker_env
from moments.settings import load_settings

STACK = {"MOMENTS_KAFKA_BOOTSTRAP": "127.0.0.1:40123", "MOMENTS_METRICS_PORT": "9308"}


class TestWorkerEnv:
    """/metrics listens on 127.0.0.1 like the broker and Redis, unless the user chose."""

    @pytest.fixture(autouse=True)
    def _no_settings(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.chdir(tmp_path)  # no .env
        for name in ("MOMENTS_METRICS_HOST", "MOMENTS_METRICS_HOST_FILE"):
            monkeypatch.delenv(name, raising=False)

    def test_metrics_listen_on_loopback_by_default(self) -> None:
        env = worker_env({"PATH": "/bin"}, load_settings(), STACK)
        assert env == {"PATH": "/bin", **STACK, "MOMENTS_METRICS_HOST": "127.0.0.1"}

    def test_a_host_the_user_set_is_kept(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MOMENTS_METRICS_HOST", "0.0.0.0")  # noqa: S104 - deliberately
        env = worker_env({"MOMENTS_METRICS_HOST": "0.0.0.0"}, load_settings(), STACK)  # noqa: S104
        assert env["MOMENTS_METRICS_HOST"] == "0.0.0.0"  # noqa: S104

    def test_a_host_from_a_file_is_not_set_twice(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """MOMENTS_X beside MOMENTS_X_FILE stops the worker: the file's choice stands."""
        (tmp_path / "host").write_text("10.0.0.5\n")
        monkeypatch.setenv("MOMENTS_METRICS_HOST_FILE", str(tmp_path / "host"))
        env = worker_env({}, load_settings(), STACK)
        assert "MOMENTS_METRICS_HOST" not in env
