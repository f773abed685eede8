"""`moments config show`: every setting with its value and source; secrets never printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moments.cli import main
from moments.config_view import effective_config
from moments.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MOMENTS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _by_variable(settings: Settings, tmp_path: Path) -> dict[str, tuple[str, str]]:
    lines = effective_config(settings, dotenv_path=tmp_path / ".env")
    return {line.variable: (line.value, line.source) for line in lines}


class TestEffectiveConfig:
    def test_every_setting_is_listed(self, tmp_path: Path) -> None:
        shown = _by_variable(load_settings(), tmp_path)
        for name in Settings.model_fields:
            if name != "topics":
                assert f"MOMENTS_{name.upper()}" in shown
        assert shown["MOMENTS_TOPICS__TOPUP"] == ("telecom.topup", "default")

    def test_sources_and_masking(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        (tmp_path / "kafka-pw").write_text("kafka-secret\n")
        (tmp_path / ".env").write_text("MOMENTS_LOG_LEVEL=DEBUG\n")
        monkeypatch.setenv("MOMENTS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
        monkeypatch.setenv("MOMENTS_KAFKA_SASL_USERNAME", "svc")
        monkeypatch.setenv("MOMENTS_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "kafka-pw"))
        monkeypatch.setenv("MOMENTS_REDIS_URL", "rediss://moments:url-secret@redis:6380/0")
        monkeypatch.setenv("MOMENTS_TOPICS__TOPUP", "billing.topup")
        shown = _by_variable(load_settings(), tmp_path)
        assert shown["MOMENTS_KAFKA_SASL_PASSWORD"] == (
            "********",
            f"file {tmp_path / 'kafka-pw'}",
        )
        assert shown["MOMENTS_KAFKA_SASL_USERNAME"] == ("svc", "environment")
        assert shown["MOMENTS_REDIS_URL"] == ("rediss://moments:****@redis:6380/0", "environment")
        assert shown["MOMENTS_TOPICS__TOPUP"] == ("billing.topup", "environment")
        assert shown["MOMENTS_LOG_LEVEL"] == ("DEBUG", ".env")
        assert shown["MOMENTS_REDIS_PASSWORD"] == ("(unset)", "default")

    def test_the_command_prints_no_secret(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("MOMENTS_REDIS_PASSWORD", "redis-secret")
        monkeypatch.setenv("MOMENTS_METRICS_USERNAME", "prom")
        monkeypatch.setenv("MOMENTS_METRICS_PASSWORD", "metrics-secret")
        assert main(["config", "show"]) == 0
        assert main(["config", "show", "--json"]) == 0
        out = capsys.readouterr().out
        assert "MOMENTS_METRICS_PASSWORD" in out
        assert "redis-secret" not in out
        assert "metrics-secret" not in out

    def test_a_password_in_the_redis_urls_query_is_masked(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("MOMENTS_REDIS_URL", "redis://127.0.0.1:1/0?password=S3cretPW")
        assert main(["config", "show"]) == 0
        assert main(["config", "show", "--json"]) == 0
        out = capsys.readouterr().out
        assert "redis://127.0.0.1:1/0?password=****" in out
        assert "S3cretPW" not in out
