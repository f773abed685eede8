"""Security settings become client arguments; mistakes are refused at load time, by name."""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path

import faust
import pytest
import trustme

from moments.connections import (
    check_kafka,
    check_redis,
    describe_kafka_failure,
    faust_broker_credentials,
    kafka_client_kwargs,
    probe_keys,
    redis_client,
)
from moments.exceptions import ConfigError
from moments.redisurl import login, redacted_url
from moments.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("MOMENTS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    client = ca.issue_cert("moments-client")
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    return paths


class TestKafkaArguments:
    """One function gives aiokafka's arguments, one Faust's credentials, from the same settings."""

    def test_plaintext_by_default(self) -> None:
        settings = load_settings()
        assert kafka_client_kwargs(settings) == {"security_protocol": "PLAINTEXT"}
        assert faust_broker_credentials(settings) is None

    def test_sasl_ssl_with_scram_and_a_private_ca(self, pki: dict[str, Path]) -> None:
        settings = load_settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="moments",
            kafka_sasl_password="s3cret",
            kafka_ssl_cafile=pki["ca"],
        )
        kwargs = kafka_client_kwargs(settings)
        assert kwargs["security_protocol"] == "SASL_SSL"
        assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
        assert kwargs["sasl_plain_username"] == "moments"
        assert kwargs["sasl_plain_password"] == "s3cret"
        context = kwargs["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname
        creds = faust_broker_credentials(settings)
        assert isinstance(creds, faust.SASLCredentials)
        assert creds.protocol.value == "SASL_SSL"
        assert creds.mechanism.value == "SCRAM-SHA-256"
        assert (creds.username, creds.password) == ("moments", "s3cret")
        assert "s3cret" not in repr(creds)

    def test_mutual_tls_loads_the_client_certificate(self, pki: dict[str, Path]) -> None:
        settings = load_settings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=pki["ca"],
            kafka_ssl_certfile=pki["cert"],
            kafka_ssl_keyfile=pki["key"],
        )
        kwargs = kafka_client_kwargs(settings)
        assert kwargs["security_protocol"] == "SSL"
        assert "sasl_mechanism" not in kwargs
        creds = faust_broker_credentials(settings)
        assert isinstance(creds, faust.SSLCredentials)
        assert creds.context is not None

    def test_a_wrong_key_for_the_certificate_is_refused_with_the_fix(
        self, pki: dict[str, Path], tmp_path: Path
    ) -> None:
        """It was an ssl.SSLError traceback from `moments check` and the worker (re-check)."""
        other = trustme.CA().issue_cert("someone-else")
        other.private_key_pem.write_to_path(str(tmp_path / "other.pem"))
        settings = load_settings(
            kafka_security_protocol="SSL",
            kafka_ssl_certfile=pki["cert"],
            kafka_ssl_keyfile=tmp_path / "other.pem",
        )
        with pytest.raises(ConfigError, match=r"MOMENTS_KAFKA_SSL_KEYFILE .*its own private key"):
            kafka_client_kwargs(settings)

    def test_a_ca_file_that_is_no_certificate_is_refused_with_the_fix(self, tmp_path: Path) -> None:
        ca = tmp_path / "ca.pem"
        ca.write_text("not a certificate\n")
        settings = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca)
        with pytest.raises(ConfigError, match=r"MOMENTS_KAFKA_SSL_CAFILE .*PEM file of the CA"):
            kafka_client_kwargs(settings)

    def test_an_encrypted_key_without_its_password_is_refused_not_asked_for(
        self, pki: dict[str, Path], tmp_path: Path
    ) -> None:
        """OpenSSL asked for the pass phrase on the terminal: `kubectl exec -it ...
        moments check` hung there (re-check)."""
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(pki["key"].read_bytes(), password=None)
        locked = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        (tmp_path / "locked.pem").write_bytes(locked)
        settings = load_settings(
            kafka_security_protocol="SSL",
            kafka_ssl_certfile=pki["cert"],
            kafka_ssl_keyfile=tmp_path / "locked.pem",
        )
        with pytest.raises(ConfigError, match="MOMENTS_KAFKA_SSL_KEY_PASSWORD"):
            kafka_client_kwargs(settings)
        unlocked = load_settings(
            kafka_security_protocol="SSL",
            kafka_ssl_certfile=pki["cert"],
            kafka_ssl_keyfile=tmp_path / "locked.pem",
            kafka_ssl_key_password="secret",
        )
        assert kafka_client_kwargs(unlocked)["ssl_context"] is not None


class TestRefusedAtLoad:
    """A half-configured security setting stops start-up naming the variable to set."""

    @pytest.mark.parametrize(
        ("values", "named"),
        [
            ({"kafka_security_protocol": "SASL_SSL"}, "MOMENTS_KAFKA_SASL_USERNAME"),
            (
                {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
                "MOMENTS_KAFKA_SASL_PASSWORD",
            ),
            ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "SASL_SSL"),
            ({"kafka_ssl_cafile": Path("/nonexistent/ca.pem")}, "MOMENTS_KAFKA_SSL_CAFILE"),
            (
                {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": Path(__file__)},
                "MOMENTS_KAFKA_SSL_KEYFILE",
            ),
            (
                {"redis_url": "redis://:pw@localhost:6379/0", "redis_password": "pw"},
                "MOMENTS_REDIS_PASSWORD",
            ),
            (
                {"redis_url": "redis://localhost:6379/0?password=pw", "redis_password": "pw"},
                "MOMENTS_REDIS_PASSWORD",
            ),
            (
                {"redis_url": "redis://localhost:6379/0?username=u", "redis_username": "u"},
                "MOMENTS_REDIS_USERNAME",
            ),
            ({"redis_ssl_cafile": Path(__file__)}, "rediss://"),
            ({"metrics_username": "prom"}, "MOMENTS_METRICS_PASSWORD"),
            # an empty user turned the login off: /metrics was open, password set or not
            ({"metrics_username": "", "metrics_password": "pw"}, "MOMENTS_METRICS_USERNAME"),
            ({"metrics_username": "prom", "metrics_password": ""}, "MOMENTS_METRICS_PASSWORD"),
            ({"kafka_sasl_mechanism": "GSSAPI"}, "MOMENTS_KAFKA_SASL_MECHANISM"),
        ],
    )
    def test_message_names_the_fix(self, values: dict[str, object], named: str) -> None:
        with pytest.raises(ConfigError) as err:
            load_settings(**values)
        assert named in str(err.value)

    def test_a_refused_password_is_not_echoed(self) -> None:
        with pytest.raises(ConfigError) as err:
            load_settings(kafka_sasl_password=["not", "a", "string", "hunter2"])
        assert "hunter2" not in str(err.value)
        assert "MOMENTS_KAFKA_SASL_PASSWORD" in str(err.value)


class TestKafkaHangUps:
    """A broker that closes the connection while we connect: what the settings say to fix."""

    CLOSED = "Connection at 127.0.0.1:9093 closed"

    def _problem(self, **values: object) -> str | None:
        from aiokafka.errors import KafkaConnectionError

        settings = load_settings(kafka_bootstrap="127.0.0.1:9093", **values)
        return describe_kafka_failure(settings, KafkaConnectionError(self.CLOSED))

    def test_tls_without_a_client_certificate(self, pki: dict[str, Path]) -> None:
        problem = self._problem(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"])
        assert problem is not None
        assert "requires a client certificate" in problem
        assert "MOMENTS_KAFKA_SSL_CERTFILE and MOMENTS_KAFKA_SSL_KEYFILE" in problem

    def test_tls_with_a_certificate_it_does_not_accept(self, pki: dict[str, Path]) -> None:
        problem = self._problem(
            kafka_security_protocol="SSL",
            kafka_ssl_certfile=pki["cert"],
            kafka_ssl_keyfile=pki["key"],
        )
        assert problem is not None
        assert "did not accept the client certificate in MOMENTS_KAFKA_SSL_CERTFILE" in problem

    def test_plaintext_against_a_tls_listener(self) -> None:
        problem = self._problem()
        assert problem is not None
        assert "MOMENTS_KAFKA_SECURITY_PROTOCOL=SSL" in problem

    def test_an_unreachable_broker_is_left_to_the_retries(self) -> None:
        settings = load_settings(kafka_bootstrap="127.0.0.1:9093", kafka_security_protocol="SSL")
        refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9093)")
        assert describe_kafka_failure(settings, refused) is None


class TestSaslMechanismRefused:
    """The broker refused the SASL mechanism: the fix names what it offers. It named
    moments' three as those the broker enabled, SCRAM-SHA-512 among them when that was
    the one refused."""

    def _problem(self, message: str) -> str:
        from aiokafka.errors import UnsupportedSaslMechanismError

        settings = load_settings(
            kafka_bootstrap="kafka-1:9093",
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="svc",
            kafka_sasl_password="pw",
        )
        problem = describe_kafka_failure(settings, UnsupportedSaslMechanismError(message))
        assert problem is not None
        assert "does not offer SASL mechanism SCRAM-SHA-512" in problem
        return problem

    def test_the_mechanisms_it_offers_are_named(self) -> None:
        problem = self._problem(
            "Kafka broker does not support SCRAM-SHA-512 sasl mechanism. "
            "Enabled mechanisms are: ['PLAIN', 'SCRAM-SHA-256']"
        )
        assert "set MOMENTS_KAFKA_SASL_MECHANISM to PLAIN or SCRAM-SHA-256" in problem
        assert "SCRAM-SHA-512" not in problem.partition(";")[2]

    def test_a_broker_offering_none_of_ours_is_to_enable_one(self) -> None:
        problem = self._problem(
            "Kafka broker does not support SCRAM-SHA-512 sasl mechanism. "
            "Enabled mechanisms are: ['GSSAPI', 'OAUTHBEARER']"
        )
        assert "it offers GSSAPI, OAUTHBEARER" in problem
        assert "enable PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 on its listener" in problem

    def test_without_the_brokers_list_it_points_to_the_listener(self) -> None:
        problem = self._problem("<AIOKafkaConnection host=kafka-1 port=9093>")
        assert "one its listener enables (the broker's sasl.enabled.mechanisms)" in problem


class TestMetadataAfterConnecting:
    """The preflight connected (ApiVersions answered); then Metadata failed."""

    class Conn:
        def __init__(self, error: Exception) -> None:
            self.error = error

        async def send(self, _: object) -> object:
            raise self.error

        def close(self) -> None:
            pass

    def _check(
        self, error: Exception, monkeypatch: pytest.MonkeyPatch
    ) -> tuple[dict[str, int] | None, list[TestMetadataAfterConnecting.Conn]]:
        import asyncio

        import aiokafka.conn

        from moments import connections

        made: list[TestMetadataAfterConnecting.Conn] = []

        async def create_conn(*_: object, **__: object) -> TestMetadataAfterConnecting.Conn:
            made.append(self.Conn(error))
            return made[-1]

        monkeypatch.setattr(aiokafka.conn, "create_conn", create_conn)
        monkeypatch.setattr(connections, "_RECONNECT_PAUSE_S", 0)
        settings = load_settings(kafka_bootstrap="127.0.0.1:9092")
        return asyncio.run(check_kafka(settings, timeout_s=1)), made

    def test_a_request_timing_out_is_left_to_the_retries(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """It was a ConfigError saying the broker wants a login: a slow or restarting broker
        stopped the worker with the wrong advice (code review)."""
        from aiokafka.errors import RequestTimedOutError

        assert self._check(RequestTimedOutError(), monkeypatch)[0] is None
        assert "not reachable yet" in caplog.text

    def test_a_hang_up_twice_says_it_wants_a_login(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from aiokafka.errors import KafkaConnectionError

        with pytest.raises(ConfigError, match="closed the connection on Metadata twice") as err:
            self._check(KafkaConnectionError("Connection at 127.0.0.1:9092 closed"), monkeypatch)
        assert "MOMENTS_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in str(err.value)


class TestSlowRedis:
    async def test_a_redis_slower_than_the_bound_is_no_answer(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each handshake command waited its own socket timeout: a Redis answering each just
        in time passed a 10 s check after 28 s, and the worker then failed (re-check)."""
        import asyncio

        from moments import connections

        class Slow:
            async def ping(self) -> bool:
                await asyncio.sleep(30)
                return True

            async def aclose(self) -> None:
                pass

        monkeypatch.setattr(connections, "redis_client", lambda *_: Slow())
        settings = load_settings(redis_url="redis://127.0.0.1:6390/0")
        with pytest.raises(
            ConnectionError, match=re.escape("no answer from redis://127.0.0.1:6390/0")
        ):
            await asyncio.wait_for(check_redis(settings, 0.2, report=False), 10)


class TestProbeKeys:
    """The preflight's script reads keys of two hash slots, so that a Redis Cluster refuses
    it (CROSSSLOT) as it would the ledger's scripts, whatever its ACL says of INFO."""

    def test_two_keys_of_the_app_in_two_slots(self) -> None:
        from redis.crc import key_slot

        keys = probe_keys("moments:app:")
        assert len(keys) == 2
        assert all(k.startswith("moments:app:") for k in keys)
        assert key_slot(keys[0].encode()) != key_slot(keys[1].encode())

    def test_one_key_under_a_hash_tag(self) -> None:
        """`{...}` in the prefix puts every key of the app in one slot: INFO alone tells."""
        assert probe_keys("{moments}:app:") == ["{moments}:app:preflight"]


class TestClusterRefusalCounted:
    """A Redis in cluster mode met by the runtime's connect step (`probe_redis` under
    `with_retry`) is waited out as a Redis away: in moments_dependency_errors_total and
    moments_dependency_up, the log line naming the fix (without a cluster to start)."""

    async def test_in_the_dependency_metrics(self, caplog: pytest.LogCaptureFixture) -> None:
        import asyncio

        from moments.connections import probe_redis
        from sinks.metrics import Dependency, Metrics
        from sinks.retry import with_retry

        tried = asyncio.Event()
        calls: list[str] = []

        class ClusterNode:
            async def ping(self) -> bool:
                calls.append("ping")
                if len(calls) >= 2:
                    tried.set()
                return True

            async def info(self, section: str) -> dict[str, int]:
                return {"cluster_enabled": 1}

        settings, metrics = load_settings(), Metrics()
        connecting = asyncio.create_task(
            with_retry(
                lambda: probe_redis(ClusterNode(), settings),  # type: ignore[arg-type]
                Dependency.REDIS,
                metrics,
                "connecting",
                first_delay=0,
                max_delay=0,
            )
        )
        await tried.wait()
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        assert metrics.dependency_errors.labels(Dependency.REDIS.value)._value.get() >= 1
        assert metrics.up_of[Dependency.REDIS]._value.get() == 0
        assert "MOMENTS_REDIS_URL to a Redis without cluster mode" in caplog.text
        # a Redis that answers is not "unavailable": it is refused, the fix on the line
        assert "redis refused while connecting" in caplog.text
        assert "unavailable" not in caplog.text


class TestRedisClient:
    """Username, password and CA reach the connection pool; the URL is shown redacted."""

    async def test_credentials_from_settings(self, pki: dict[str, Path]) -> None:
        settings = load_settings(
            redis_url="rediss://redis.example:6380/2",
            redis_username="moments",
            redis_password="pw",
            redis_ssl_cafile=pki["ca"],
        )
        client = redis_client(settings)
        try:
            options = client.connection_pool.connection_kwargs
            assert options["username"] == "moments"
            assert options["password"] == "pw"
            assert options["ssl_ca_certs"] == str(pki["ca"])
            assert options["db"] == 2
        finally:
            await client.aclose()

    def test_redacted_url(self) -> None:
        assert redacted_url("redis://u:p%40ss@h:6379/0") == "redis://u:****@h:6379/0"
        assert redacted_url("redis://h:6379/0") == "redis://h:6379/0"

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://127.0.0.1:1/0?password=S3cretPW", "redis://127.0.0.1:1/0?password=****"),
            (
                "rediss://u:pw@h:6380/0?db=1&password=a%2Bb+c&username=bob",
                "rediss://u:****@h:6380/0?db=1&password=****&username=bob",
            ),
            ("redis://:pw@[::1]:6379/0", "redis://:****@[::1]:6379/0"),
            (
                "unix:///run/redis.sock?password=pw&db=2",
                "unix:///run/redis.sock?password=****&db=2",
            ),
            ("redis://h:6379/0?pass%77ord=pw", "redis://h:6379/0?pass%77ord=****"),
        ],
    )
    def test_a_password_in_the_query_is_redacted_too(self, url: str, shown: str) -> None:
        """redis-py logs in with `?password=` as with `user:password@`."""
        assert redacted_url(url) == shown

    @pytest.mark.parametrize(
        "url",
        [
            "redis://127.0.0.1:1/0?password=S3cretPW",
            "redis://u:p%40ss@h:6379/0?password=query-pw&username=q",
            "redis://h/0?username=bob&password=a%2Bb+c",
            "redis://:only-pw@h/0",
            "redis://h:6379/0",
        ],
    )
    def test_the_login_read_from_the_url_is_redis_pys(self, url: str) -> None:
        from redis.connection import parse_url

        parsed = parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        assert login(url) == (parsed.get("username"), parsed.get("password"))

    async def test_the_client_logs_in_with_the_querys_password(self) -> None:
        """Why the query must be redacted: the client does use it."""
        client = redis_client(load_settings(redis_url="redis://h:6379/0?password=S3cretPW"))
        try:
            assert client.connection_pool.connection_kwargs["password"] == "S3cretPW"
        finally:
            await client.aclose()

    def test_every_form_of_a_url_password_is_a_secret_to_redact(self) -> None:
        settings = load_settings(redis_url="redis://u:p%40ss@h:6379/0?password=a%2Bb+c")
        assert sorted(settings.secret_values()) == sorted(["p%40ss", "p@ss", "a%2Bb+c", "a+b c"])

    async def test_an_unreachable_redis_is_logged_without_the_password(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings = load_settings(redis_url="redis://127.0.0.1:1/0?password=S3cretPW")
        with caplog.at_level(logging.WARNING, "moments.connections"):
            assert await check_redis(settings, timeout_s=1) is False
        assert "Redis redis://127.0.0.1:1/0?password=**** not reachable yet" in caplog.text
        assert "S3cretPW" not in caplog.text


class TestWiring:
    """The Faust app gets the credentials; a refused URL is shown without its password."""

    def test_faust_app_gets_broker_credentials(self) -> None:
        from moments.app import create_app

        settings = load_settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_username="moments",
            kafka_sasl_password="pw",
        )
        app = create_app(settings)
        creds = app.conf.broker_credentials
        assert isinstance(creds, faust.SASLCredentials)
        assert creds.mechanism.value == "SCRAM-SHA-512"

    def test_a_bad_redis_url_is_echoed_redacted(self) -> None:
        with pytest.raises(ConfigError) as err:
            load_settings(redis_url="http://moments:url-secret@redis:6379/0")
        assert "MOMENTS_REDIS_URL" in str(err.value)
        assert "url-secret" not in str(err.value)
