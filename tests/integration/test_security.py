"""Credentials and TLS against real servers: the right ones connect, wrong ones stop the
worker at once with a message naming the variable to fix."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis
import trustme
from redis.exceptions import NoPermissionError

from moments.connections import check_kafka, check_redis, redis_client
from moments.embedded import RedisServer, TansuBroker, free_port
from moments.exceptions import ConfigError
from moments.producer import start_producer
from moments.settings import Settings, load_settings
from sinks.ledger import TaskLedger

from .conftest import MakeSettings, WorkerProcess, settings_env
from .kafka_io import produce, read_topic
from .secured_servers import (
    ACL_PASSWORD,
    ACL_USER,
    ADMIN_PASSWORD,
    ELSEWHERE_PASSWORD,
    ELSEWHERE_USER,
    LIMITED_PASSWORD,
    LIMITED_USER,
    AuthenticatingTansu,
    SecuredRedis,
)

pytestmark = pytest.mark.integration
WRONG = "pw-that-is-wrong"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    return paths


@pytest.fixture(scope="module")
def tls_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def secured_redis(
    tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path], tls_port: int
) -> Iterator[SecuredRedis]:
    with SecuredRedis(tmp_path_factory.mktemp("redis"), tls=pki, tls_port=tls_port) as server:
        yield server


@pytest.fixture(scope="module")
def auth_tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthenticatingTansu]:
    with AuthenticatingTansu(tmp_path_factory.mktemp("tansu-auth")) as broker:
        yield broker


def _settings(**values: object) -> Settings:
    return load_settings(metrics_port=0, **values)


class TestRedisCredentials:
    """requirepass and ACL users: the right login answers, a wrong one names the variable."""

    async def test_password_of_the_default_user(self, secured_redis: SecuredRedis) -> None:
        settings = _settings(redis_url=secured_redis.url, redis_password=ADMIN_PASSWORD)
        assert await check_redis(settings) is True

    async def test_acl_user_reaches_the_ledger_keys(self, secured_redis: SecuredRedis) -> None:
        settings = _settings(
            redis_url=secured_redis.url, redis_username=ACL_USER, redis_password=ACL_PASSWORD
        )
        assert await check_redis(settings) is True
        client = redis_client(settings)
        try:
            assert await client.set("moments:test:k", b"v", ex=60)
            assert await client.get("moments:test:k") == b"v"
        finally:
            await client.aclose()

    @pytest.mark.parametrize(
        ("values", "named"),
        [
            ({}, "MOMENTS_REDIS_PASSWORD"),
            ({"redis_password": WRONG}, "MOMENTS_REDIS_PASSWORD"),
            ({"redis_username": ACL_USER, "redis_password": WRONG}, "MOMENTS_REDIS_USERNAME"),
        ],
        ids=["no password", "wrong password", "wrong ACL password"],
    )
    async def test_wrong_login_fails_at_once(
        self, secured_redis: SecuredRedis, values: dict[str, object], named: str
    ) -> None:
        settings = _settings(redis_url=secured_redis.url, **values)
        with pytest.raises(ConfigError) as err:
            await check_redis(settings)
        message = str(err.value)
        assert named in message
        assert WRONG not in message

    @pytest.mark.parametrize(
        ("user", "password"),
        [(LIMITED_USER, LIMITED_PASSWORD), (ELSEWHERE_USER, ELSEWHERE_PASSWORD)],
        ids=["ping only", "rights on other keys"],
    )
    async def test_a_user_that_may_not_touch_the_apps_keys_fails_the_check(
        self, secured_redis: SecuredRedis, user: str, password: str
    ) -> None:
        """The check (the worker's preflight, `moments check`, the Redis commands') only
        PINGed: a user allowed PING but not the app's keys (`moments:<app id>:*`) or
        scripts passed it, `moments check` said ok, and the worker joined the consumer
        group and crashed on its first Redis call (NoPermissionError, exit code 1)."""
        settings = _settings(
            redis_url=secured_redis.url, redis_username=user, redis_password=password
        )
        with pytest.raises(ConfigError) as err:
            await check_redis(settings)
        message = str(err.value)
        assert "grant" in message
        assert "~moments:*" in message
        assert password not in message

    async def test_user_without_the_rights_is_told_what_to_grant(
        self, secured_redis: SecuredRedis
    ) -> None:
        settings = _settings(
            redis_url=secured_redis.url,
            redis_username=LIMITED_USER,
            redis_password=LIMITED_PASSWORD,
        )
        client = redis_client(settings)
        from moments.connections import describe_redis_failure

        try:
            with pytest.raises(NoPermissionError) as err:
                await client.set("moments:x", b"1")
        finally:
            await client.aclose()
        advice = describe_redis_failure(settings, err.value)
        assert advice is not None
        assert "grant" in advice
        assert "+@scripting" in advice  # what docs/security.md recommends

    async def test_the_recommended_acl_is_enough_for_the_ledger(
        self, secured_redis: SecuredRedis
    ) -> None:
        settings = _settings(
            redis_url=secured_redis.url, redis_username=ACL_USER, redis_password=ACL_PASSWORD
        )
        client = redis_client(settings)
        ledger = TaskLedger(client, f"moments:{uuid4().hex[:8]}:", 3600)
        try:
            assert await ledger.claim([("t1", b"task-1"), ("t2", b"task-2")]) == [True, True]
            await ledger.confirm(["t1"])
            assert await ledger.state("t1") == "sent"
            assert await ledger.pending_count() == 1
            stale = await ledger.claim_stale(older_than=-1.0)
            assert [task_id for task_id, _ in stale] == ["t2"]
            with pytest.raises(NoPermissionError):
                await client.flushdb()  # keyless and dangerous: not granted
        finally:
            await client.aclose()

    async def test_the_recommended_acl_is_enough_to_forget_and_to_mark_replays(
        self, secured_redis: SecuredRedis
    ) -> None:
        """What a profile tombstone and `moments deadletter replay` write, as the ACL user."""
        from moments.deadletter_replay import _not_replayed, _remember
        from moments.deadletters import parse_entry
        from sinks.stores import redis_stores

        settings = _settings(
            redis_url=secured_redis.url, redis_username=ACL_USER, redis_password=ACL_PASSWORD
        )
        client = redis_client(settings)
        stores = redis_stores(TaskLedger(client, f"moments:{settings.app_id}:", 3600))
        sub = "13800138000"
        try:
            await stores.declines.suppress(sub, "low_balance", 60)
            await stores.facts.forget([sub], 1_700_000_000.0)
            await stores.contacts.forget([sub])
            await stores.declines.forget([sub], ["low_balance"])
            await stores.deferral.forget([sub])
            assert (await stores.facts.get(sub)).forgotten_at == 1_700_000_000.0
            assert not await stores.declines.suppressed(sub, "low_balance")
            entry = parse_entry(0, 7, None, b"{}", [])
            await _remember(client, settings, [entry])
            assert await _not_replayed(client, settings, [entry]) == []
        finally:
            await client.aclose()

    async def test_the_recommended_acl_is_enough_to_owe_and_settle_cooldown_returns(
        self, secured_redis: SecuredRedis
    ) -> None:
        """What dispatch writes for a task with a cooldown dropped after it waited
        (`sinks.owedreturns`), as the ACL user: no MULTI (@transaction is not granted)."""
        settings = _settings(
            redis_url=secured_redis.url, redis_username=ACL_USER, redis_password=ACL_PASSWORD
        )
        client = redis_client(settings)
        ledger = TaskLedger(client, f"moments:{uuid4().hex[:8]}:", 3600)
        try:
            await ledger.owe_returns([("t1:low_balance", b"return-1")])
            assert await ledger.owed_returns(older_than=-1.0) == [("t1:low_balance", b"return-1")]
            await ledger.settle_returns(["t1:low_balance"])
            assert await ledger.owed_returns(older_than=-1.0) == []
        finally:
            await client.aclose()


class TestRedisTLS:
    """rediss:// with the server's CA connects; without it the certificate is not trusted."""

    async def test_rediss_with_the_ca(
        self, secured_redis: SecuredRedis, pki: dict[str, Path], tls_port: int
    ) -> None:
        settings = _settings(
            redis_url=f"rediss://127.0.0.1:{tls_port}/0",
            redis_password=ADMIN_PASSWORD,
            redis_ssl_cafile=pki["ca"],
        )
        assert await check_redis(settings) is True

    async def test_rediss_without_the_ca_names_the_variable(
        self, secured_redis: SecuredRedis, tls_port: int
    ) -> None:
        settings = _settings(
            redis_url=f"rediss://127.0.0.1:{tls_port}/0", redis_password=ADMIN_PASSWORD
        )
        with pytest.raises(ConfigError) as err:
            await check_redis(settings)
        assert "MOMENTS_REDIS_SSL_CAFILE" in str(err.value)


class TestKafkaAuthentication:
    """Tansu with --authentication offers SCRAM only, and (this build) stores no users."""

    async def test_plaintext_client_is_told_to_authenticate(
        self, auth_tansu: AuthenticatingTansu
    ) -> None:
        settings = _settings(kafka_bootstrap=auth_tansu.bootstrap)
        with pytest.raises(ConfigError) as err:
            await check_kafka(settings)
        assert "MOMENTS_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in str(err.value)

    async def test_an_unoffered_mechanism_names_the_variable(
        self, auth_tansu: AuthenticatingTansu
    ) -> None:
        settings = _settings(
            kafka_bootstrap=auth_tansu.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="moments",
            kafka_sasl_password="pw",
        )
        with pytest.raises(ConfigError) as err:
            await check_kafka(settings)
        assert "MOMENTS_KAFKA_SASL_MECHANISM" in str(err.value)

    @pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
    async def test_a_refused_scram_login_names_the_credentials(
        self, auth_tansu: AuthenticatingTansu, mechanism: str
    ) -> None:
        settings = _settings(
            kafka_bootstrap=auth_tansu.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username="nobody",
            kafka_sasl_password="not-the-password",
        )
        with pytest.raises(ConfigError) as err:
            await check_kafka(settings)
        message = str(err.value)
        assert "MOMENTS_KAFKA_SASL_USERNAME" in message
        assert "MOMENTS_KAFKA_SASL_PASSWORD" in message
        assert "not-the-password" not in message

    def test_tansu_user_create_is_refused_by_an_authenticating_broker(
        self, auth_tansu: AuthenticatingTansu, tansu_broker: TansuBroker
    ) -> None:
        """What this Tansu build does (docs/security.md): an --authentication broker refuses
        `tansu user create` (the command does not log in: "early eof"); a broker without
        it accepts the command, but its memory storage keeps no SCRAM credentials, so no
        login can succeed. When this test fails, Tansu changed: add a test of a good login."""
        refused = auth_tansu.create_user("alice", "alice-pw")
        assert refused.startswith("exit 1")
        assert "early eof" in refused
        accepted = AuthenticatingTansu.create_user(tansu_broker, "alice", "alice-pw")  # type: ignore[arg-type]
        assert accepted.startswith("exit 0")


class TestWorkerFailsFast:
    """`moments worker` with wrong credentials exits 2 before Faust starts, naming the fix."""

    def _run_worker(self, settings: Settings, tmp_path: Path) -> subprocess.CompletedProcess[str]:
        env = settings_env(settings)
        env["MOMENTS_DATA_DIR"] = str(tmp_path / "data")
        return subprocess.run(
            [sys.executable, "-m", "moments", "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def test_wrong_redis_password(
        self, kafka_bootstrap: str, secured_redis: SecuredRedis, tmp_path: Path
    ) -> None:
        settings = _settings(
            kafka_bootstrap=kafka_bootstrap,
            redis_url=secured_redis.url,
            redis_username=ACL_USER,
            redis_password="definitely-wrong",
        )
        done = self._run_worker(settings, tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "MOMENTS_REDIS_PASSWORD" in done.stderr
        assert "definitely-wrong" not in done.stderr + done.stdout

    def test_kafka_wants_a_login(
        self, auth_tansu: AuthenticatingTansu, redis_url: str, tmp_path: Path
    ) -> None:
        settings = _settings(kafka_bootstrap=auth_tansu.bootstrap, redis_url=redis_url)
        done = self._run_worker(settings, tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "MOMENTS_KAFKA_SECURITY_PROTOCOL" in done.stderr


class TestWorkerConnects:
    """The worker, as an ACL user over rediss://, detects and publishes as usual."""

    @pytest.mark.slow
    async def test_acl_user_over_tls(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
        secured_redis: SecuredRedis,
        pki: dict[str, Path],
        tls_port: int,
        any_hour_rules: Path,
    ) -> None:
        settings = make_settings(
            rules=any_hour_rules,
            redis_url=f"rediss://127.0.0.1:{tls_port}/0",
            redis_username=ACL_USER,
            redis_password=ACL_PASSWORD,
            redis_ssl_cafile=pki["ca"],
        )
        await topics_for(settings)
        worker = start_worker(settings)
        sub = "13800138001"
        event = {
            "event_id": "r1",
            "subscriber_id": sub,
            "occurred_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "country": "JP",
            "roaming_type": "international",
        }
        await produce(settings, [("roaming", sub, event)])
        tasks = await read_topic(settings, "tasks", count=1, wait_s=90)
        assert len(tasks) == 1, worker.log()[-3000:]
        admin = redis.Redis(host="127.0.0.1", port=secured_redis.port, password=ADMIN_PASSWORD)
        try:
            ledger = admin.keys(f"moments:{settings.app_id}:*")
        finally:
            admin.close()
        assert ledger, "the task was not recorded in the ledger"


class TestIdempotentProducer:
    """Auto mode falls back on a broker that refuses a producer id (Tansu), and says so once;
    asking for it explicitly there is refused with the variable to change."""

    async def test_auto_falls_back_on_tansu(
        self, tansu_broker: TansuBroker, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings = _settings(kafka_bootstrap=tansu_broker.bootstrap)
        with caplog.at_level(logging.INFO):
            producer = await start_producer(settings)
        try:
            metadata = await producer.send_and_wait(
                f"sec-idem-{free_port()}", b"v", key=b"13800138001"
            )
            assert metadata.offset >= 0
        finally:
            await producer.stop()
        said = [r.getMessage() for r in caplog.records if r.name == "moments.producer"]
        assert len(said) == 1, said
        assert said[0].startswith("idempotent producer off")
        assert "UnknownError" in said[0]
        # aiokafka's own ERROR line for the refusal is left out: the warning explains it.
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []

    async def test_explicit_true_is_refused_on_tansu(self, tansu_broker: TansuBroker) -> None:
        settings = _settings(kafka_bootstrap=tansu_broker.bootstrap, idempotent_producer=True)
        with pytest.raises(ConfigError) as err:
            await start_producer(settings)
        assert "MOMENTS_IDEMPOTENT_PRODUCER" in str(err.value)


def test_plain_redis_server_still_starts(tmp_path: Path) -> None:
    """The secured subclass did not change the embedded server."""
    with RedisServer(tmp_path) as server:
        assert server.url.startswith("redis://")
