"""`MOMENTS_<NAME>_FILE` reads a setting from a file (Docker/Kubernetes secrets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moments.exceptions import ConfigError
from moments.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MOMENTS_"):
            monkeypatch.delenv(name)


class TestFileVariables:
    def test_a_password_is_read_without_its_line_break(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        secret = tmp_path / "redis-password"
        secret.write_text("correct horse\n")
        monkeypatch.setenv("MOMENTS_REDIS_PASSWORD_FILE", str(secret))
        settings = load_settings()
        assert settings.redis_password is not None
        assert settings.redis_password.get_secret_value() == "correct horse"
        assert "correct horse" not in repr(settings)

    def test_any_setting_can_come_from_a_file(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        (tmp_path / "user").write_text("svc-moments")
        (tmp_path / "pw").write_text("pw")
        monkeypatch.setenv("MOMENTS_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        monkeypatch.setenv("MOMENTS_KAFKA_SASL_USERNAME_FILE", str(tmp_path / "user"))
        monkeypatch.setenv("MOMENTS_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
        settings = load_settings()
        assert settings.kafka_sasl_username == "svc-moments"

    def test_a_missing_file_names_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("MOMENTS_REDIS_PASSWORD_FILE", str(tmp_path / "absent"))
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert "MOMENTS_REDIS_PASSWORD_FILE" in str(err.value)
        assert "absent" in str(err.value)

    def test_both_ways_at_once_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        (tmp_path / "pw").write_text("a")
        monkeypatch.setenv("MOMENTS_REDIS_PASSWORD", "b")
        monkeypatch.setenv("MOMENTS_REDIS_PASSWORD_FILE", str(tmp_path / "pw"))
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert "MOMENTS_REDIS_PASSWORD and MOMENTS_REDIS_PASSWORD_FILE" in str(err.value)

    def test_a_file_larger_than_any_value_is_refused_unread(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Read whole, /dev/zero as a password file ended in a MemoryError; a log file
        given by mistake became the password."""
        (tmp_path / "worker.log").write_bytes(b"x" * (1024 * 1024))
        monkeypatch.setenv("MOMENTS_REDIS_PASSWORD_FILE", str(tmp_path / "worker.log"))
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert "MOMENTS_REDIS_PASSWORD_FILE" in str(err.value)
        assert "65,536 bytes" in str(err.value)

    @pytest.mark.parametrize(
        ("variable", "content", "lines"),
        [
            ("MOMENTS_REDIS_PASSWORD_FILE", "s3cret-one\ns3cret-two\n", 2),
            ("MOMENTS_KAFKA_SASL_PASSWORD_FILE", "s3cret-one\r\n\r\ns3cret-two", 3),
        ],
        ids=["redis", "kafka, CRLF and a blank line"],
    )
    def test_a_file_of_more_than_one_line_is_refused_without_its_content(
        self,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        variable: str,
        content: str,
        lines: int,
    ) -> None:
        """Only the trailing line break was dropped: a two-line file became a two-line
        password, and the login failed with a wrong-password error that said not why."""
        secret = tmp_path / "password"
        secret.write_bytes(content.encode())
        monkeypatch.setenv("MOMENTS_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        monkeypatch.setenv(variable, str(secret))
        with pytest.raises(ConfigError) as err:
            load_settings()
        message = str(err.value)
        assert variable in message
        assert str(secret) in message
        assert f"{lines} lines" in message
        assert "one line" in message
        assert "s3cret" not in message

    def test_trailing_line_breaks_are_still_dropped(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        (tmp_path / "pw").write_bytes(b"correct horse\r\n\n")
        monkeypatch.setenv("MOMENTS_REDIS_PASSWORD_FILE", str(tmp_path / "pw"))
        settings = load_settings()
        assert settings.redis_password is not None
        assert settings.redis_password.get_secret_value() == "correct horse"
