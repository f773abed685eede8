"""Kafka over mutual TLS: the worker and the CLI tools connect with a CA file and a client
certificate, and a wrong CA, a missing or untrusted client certificate, or a plaintext client
stop them at once with the variable to fix.

The broker is Tansu behind stunnel: Tansu cannot listen in TLS itself (docs/security.md),
so stunnel terminates TLS on the port Tansu advertises and admits only clients with a
certificate signed by the test CA. The client side (aiokafka's TLS, our settings, the
preflight) is exactly what a TLS listener of Apache Kafka would see.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme

from moments.embedded import free_port
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess, settings_env
from .kafka_io import produce, read_topic, values, wait_for_metric
from .secured_servers import STUNNEL, TlsTansu

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(STUNNEL is None, reason="stunnel is missing: apt-get install -y stunnel4"),
]

SUB = "97531"  # a 5-digit subscriber id, allowed by the contract


@pytest.fixture(scope="module")
def kafka_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The broker's CA, server certificate and a client certificate it signed; and a second
    CA with a client certificate of its own (one the broker does not trust)."""
    folder = tmp_path_factory.mktemp("kafka-pki")
    ca, stranger = trustme.CA(), trustme.CA()
    paths = {
        name: folder / f"{name}.pem"
        for name in ("ca", "server", "cert", "key", "stranger_ca", "stranger_cert", "stranger_key")
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    client = ca.issue_cert("moments-worker")
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    stranger.cert_pem.write_to_path(str(paths["stranger_ca"]))
    foreign = stranger.issue_cert("moments-worker")
    foreign.cert_chain_pems[0].write_to_path(str(paths["stranger_cert"]))
    foreign.private_key_pem.write_to_path(str(paths["stranger_key"]))
    return paths


@pytest.fixture(scope="module")
def tls_tansu(
    tmp_path_factory: pytest.TempPathFactory, kafka_pki: dict[str, Path]
) -> Iterator[TlsTansu]:
    with TlsTansu(tmp_path_factory.mktemp("tls-tansu"), kafka_pki["server"], kafka_pki["ca"]) as t:
        yield t


def _tls(tls_tansu: TlsTansu, pki: dict[str, Path], **overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "kafka_bootstrap": tls_tansu.bootstrap,
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": pki["ca"],
        "kafka_ssl_certfile": pki["cert"],
        "kafka_ssl_keyfile": pki["key"],
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def _moments(
    settings: Settings, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moments", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
async def test_worker_and_cli_tools_over_mutual_tls(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tls_tansu: TlsTansu,
    kafka_pki: dict[str, Path],
    any_hour_rules: Path,
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port, rules=any_hour_rules, **_tls(tls_tansu, kafka_pki))
    await topics_for(settings)  # the admin client over TLS too
    worker = start_worker(settings)
    event = {
        "event_id": "r1",
        "subscriber_id": SUB,
        "occurred_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "country": "JP",
        "roaming_type": "international",
    }
    await produce(settings, [("roaming", SUB, event)])
    tasks = values(await read_topic(settings, "tasks", count=1, wait_s=90))
    assert [t["subscriber_id"] for t in tasks] == [SUB], worker.log()[-3000:]

    # `moments tasks tail` reads the task over TLS ...
    tail = _moments(settings, "tasks", "tail", "--json", "--from-beginning", "--exit-after", "1")
    assert tail.returncode == 0, tail.stderr[-2000:]
    assert orjson.loads(tail.stdout.splitlines()[0])["task_id"] == tasks[0]["task_id"]
    # ... and `moments tasks ack` writes its outcome, which the worker reads and counts.
    ack = _moments(settings, "tasks", "ack", str(tasks[0]["task_id"]), "--status", "declined")
    assert ack.returncode == 0, ack.stderr[-2000:]
    labels = {"moment_type": "roaming_welcome", "status": "declined"}
    assert await wait_for_metric(port, "moments_task_outcomes_total", labels, 1) == 1
    assert "closed the connection" not in worker.log()


class TestRefusedAtOnce:
    """Each TLS mistake stops the worker with exit code 2 and names the variable to fix."""

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            pytest.param(
                {"kafka_ssl_cafile": "stranger_ca"},
                "set MOMENTS_KAFKA_SSL_CAFILE to the CA that signed it",
                id="untrusted-broker",
            ),
            pytest.param(
                {"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None},
                "requires a client certificate; set MOMENTS_KAFKA_SSL_CERTFILE",
                id="no-client-certificate",
            ),
            pytest.param(
                {"kafka_ssl_certfile": "stranger_cert", "kafka_ssl_keyfile": "stranger_key"},
                "did not accept the client certificate in MOMENTS_KAFKA_SSL_CERTFILE",
                id="client-certificate-of-another-ca",
            ),
            pytest.param(
                {
                    "kafka_security_protocol": "PLAINTEXT",
                    "kafka_ssl_cafile": None,
                    "kafka_ssl_certfile": None,
                    "kafka_ssl_keyfile": None,
                },
                "set MOMENTS_KAFKA_SECURITY_PROTOCOL=SSL",
                id="plaintext-client",
            ),
        ],
    )
    def test_the_worker_exits_naming_the_fix(
        self,
        overrides: dict[str, str | None],
        message: str,
        make_settings: MakeSettings,
        tls_tansu: TlsTansu,
        kafka_pki: dict[str, Path],
    ) -> None:
        resolved = {  # pki file names -> their paths
            name: kafka_pki[value] if name.startswith("kafka_ssl_") and value else value
            for name, value in overrides.items()
        }
        settings = make_settings(**_tls(tls_tansu, kafka_pki, **resolved))
        done = _moments(settings, "worker", timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        assert message in done.stderr, done.stderr[-2000:]

    def test_a_cli_tool_exits_naming_the_fix(
        self, make_settings: MakeSettings, tls_tansu: TlsTansu, kafka_pki: dict[str, Path]
    ) -> None:
        settings = make_settings(
            **_tls(tls_tansu, kafka_pki, kafka_ssl_certfile=None, kafka_ssl_keyfile=None)
        )
        done = _moments(
            settings, "tasks", "ack", "0" * 32, "--status", "declined", "--subscriber", SUB
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert "requires a client certificate; set MOMENTS_KAFKA_SSL_CERTFILE" in done.stderr
