"""Redis refusing a running worker's login or rights is waited out, not a crash, and a
password kept in a file is read again at each new connection (`moments.redislogin`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import AuthenticationError, NoPermissionError

from moments.connections import describe_redis_failure, redis_client
from moments.logmask import clean_text
from moments.redislogin import PasswordFileLogin
from moments.settings import load_settings
from sinks.metrics import Dependency, Metrics
from sinks.retry import with_retry


class TestRefusedLoginIsRetried:
    """A login or a right refused mid-run went up through the batch and crashed the
    worker (exit code 1, a traceback naming no setting)."""

    @pytest.mark.parametrize(
        "error",
        [
            AuthenticationError("invalid username-password pair or user is disabled."),
            NoPermissionError("this user has no permissions to run the 'evalsha' command"),
        ],
        ids=["password", "ACL rights"],
    )
    def test_it_backs_off_until_redis_takes_the_login_again(
        self, error: Exception, caplog: pytest.LogCaptureFixture
    ) -> None:
        metrics = Metrics(CollectorRegistry())
        calls: list[int] = []

        async def call() -> str:
            calls.append(1)
            if len(calls) <= 2:
                raise error
            return "ok"

        with caplog.at_level(logging.WARNING, logger="sinks.retry"):
            value = asyncio.run(
                with_retry(call, Dependency.REDIS, metrics, "claiming tasks", first_delay=0.001)
            )
        assert value == "ok"
        assert metrics.dependency_errors.labels(Dependency.REDIS.value)._value.get() == 2
        assert metrics.up_of[Dependency.REDIS]._value.get() == 1
        first = caplog.records[0].getMessage()
        assert "refused the worker's login" in first
        assert "MOMENTS_REDIS_PASSWORD_FILE" in first
        assert "moments check" in first

    def test_the_fix_is_logged_at_the_first_refusal_after_other_errors(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A password rotated on Redis drops the connection first: the refused login
        comes at the second attempt, which the log kept at debug level."""
        metrics = Metrics(CollectorRegistry())
        errors: list[Exception] = [
            ConnectionError("Connection closed by server."),
            AuthenticationError("invalid password"),
        ]

        async def call() -> str:
            if errors:
                raise errors.pop(0)
            return "ok"

        with caplog.at_level(logging.WARNING, logger="sinks.retry"):
            asyncio.run(with_retry(call, Dependency.REDIS, metrics, "reading", first_delay=0.001))
        assert any("refused the worker's login" in r.getMessage() for r in caplog.records)


class TestPasswordFileLogin:
    def test_each_connection_reads_the_file_again(self, tmp_path: Path) -> None:
        secret = tmp_path / "password"
        secret.write_text("one\n")
        login = PasswordFileLogin(None, str(secret), "one")
        assert login.get_credentials() == ("one",)
        secret.write_text("two\n")
        assert asyncio.run(login.get_credentials_async()) == ("two",)

    def test_a_new_password_is_redacted_from_the_logs_as_the_first_was(
        self, tmp_path: Path
    ) -> None:
        secret = tmp_path / "password"
        secret.write_text("rotated-Zq8")
        PasswordFileLogin(None, str(secret), "first").get_credentials()
        assert "rotated-Zq8" not in clean_text("AUTH default rotated-Zq8 failed")

    def test_an_acl_user_logs_in_by_name(self, tmp_path: Path) -> None:
        secret = tmp_path / "password"
        secret.write_text("pw")
        assert PasswordFileLogin("moments", str(secret), "pw").get_credentials() == (
            "moments",
            "pw",
        )

    def test_a_file_that_cannot_be_read_keeps_the_last_password(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A Secret being swapped: log in with what was read before, and say so once."""
        secret = tmp_path / "password"
        login = PasswordFileLogin(None, str(secret), "before")
        with caplog.at_level(logging.WARNING, logger="moments.redislogin"):
            assert login.get_credentials() == ("before",)
            assert login.get_credentials() == ("before",)
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1
        assert "MOMENTS_REDIS_PASSWORD_FILE" in said[0]
        assert "before" not in said[0].replace("read before", "")

    def test_a_rotated_file_of_two_lines_keeps_the_last_password(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A two-line file became a two-line password that Redis refused as wrong."""
        secret = tmp_path / "password"
        secret.write_text("new-one\nnew-two\n")
        login = PasswordFileLogin(None, str(secret), "before")
        with caplog.at_level(logging.WARNING, logger="moments.redislogin"):
            assert login.get_credentials() == ("before",)
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1
        assert "MOMENTS_REDIS_PASSWORD_FILE" in said[0]
        assert "2 lines" in said[0]
        assert "new-" not in said[0]


class TestRedisClientLogin:
    def test_a_password_file_is_read_at_each_connection(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        secret = tmp_path / "password"
        secret.write_text("pw")
        monkeypatch.setenv("MOMENTS_REDIS_PASSWORD_FILE", str(secret))
        client = redis_client(load_settings(metrics_port=0, redis_username="moments"))
        kwargs = client.connection_pool.connection_kwargs
        provider = kwargs["credential_provider"]
        assert isinstance(provider, PasswordFileLogin)
        assert provider.username == "moments"
        assert "password" not in kwargs
        asyncio.run(client.aclose())

    def test_a_password_in_the_environment_is_given_as_is(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MOMENTS_REDIS_PASSWORD", "pw")
        client = redis_client(load_settings(metrics_port=0))
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["password"] == "pw"
        assert kwargs.get("credential_provider") is None
        asyncio.run(client.aclose())


class TestNoPasswordGiven:
    """A Redis with `requirepass` and no password configured: the message quoted Redis's
    reply (`HELLO must be called with the client already authenticated, otherwise the
    HELLO AUTH <user> <pass> option can be used ...`) as a refused login of 'default'."""

    @pytest.mark.parametrize(
        "reply",
        [
            "HELLO must be called with the client already authenticated, otherwise the "
            "HELLO AUTH <user> <pass> option can be used to authenticate the client and "
            "select the RESP protocol version at the same time",
            "Authentication required.",
        ],
    )
    def test_it_says_to_set_the_password(self, reply: str) -> None:
        settings = load_settings(metrics_port=0, redis_url="redis://redis:6379/0")
        message = describe_redis_failure(settings, AuthenticationError(reply))
        assert message is not None
        assert "asks for a password and none is set" in message
        assert "set MOMENTS_REDIS_PASSWORD" in message
        assert "HELLO" not in message

    def test_a_wrong_password_is_still_a_refused_login(self) -> None:
        settings = load_settings(
            metrics_port=0, redis_url="redis://redis:6379/0", redis_password="nope"
        )
        message = describe_redis_failure(settings, AuthenticationError("invalid password"))
        assert message is not None
        assert "refused the login of user 'default'" in message

    def test_a_password_in_the_url_is_a_password_given(self) -> None:
        settings = load_settings(metrics_port=0, redis_url="redis://:pw@redis:6379/0")
        message = describe_redis_failure(settings, AuthenticationError("invalid password"))
        assert message is not None
        assert "refused the login" in message

    @pytest.mark.parametrize(
        ("url", "user"),
        [
            ("redis://:pw@redis:6379/0", "default"),
            ("redis://bob:pw@redis:6379/0", "bob"),
            ("redis://redis:6379/0?username=bob&password=pw", "bob"),
        ],
    )
    def test_a_refused_login_from_the_url_says_to_check_the_url(self, url: str, user: str) -> None:
        """The login was the URL's, yet the message said to check MOMENTS_REDIS_USERNAME and
        MOMENTS_REDIS_PASSWORD, which were not set: the operator looked where it was not."""
        settings = load_settings(metrics_port=0, redis_url=url)
        message = describe_redis_failure(settings, AuthenticationError("invalid password"))
        assert message is not None
        assert f"refused the login of user {user!r}" in message
        assert "check the user and password in MOMENTS_REDIS_URL" in message
        assert "check MOMENTS_REDIS_USERNAME" not in message
        assert ":pw@" not in message
        assert "password=pw" not in message
