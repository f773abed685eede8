"""/metrics with basic auth: the exposition only for the right login, in constant time."""

from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from moments.embedded import free_port
from moments.exceptions import ConfigError
from moments.health import Health
from moments.metrics_server import scrape, serve_metrics
from moments.settings import load_settings


def _get(port: int, header: str | None, path: str = "/metrics") -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if header is not None:
        request.add_header("Authorization", header)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http://127.0.0.1
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("moments_probe", "A probe counter", registry=registry).inc()
    return registry


@pytest.fixture
def secured_port(registry: CollectorRegistry) -> Iterator[int]:
    port = free_port()
    settings = load_settings(
        metrics_host="127.0.0.1",
        metrics_port=port,
        metrics_username="prom",
        metrics_password="scrape-pw",
    )
    server = serve_metrics(settings, registry)
    yield port
    server.shutdown()
    server.server_close()


class TestBasicAuth:
    def test_the_right_login_gets_the_exposition(self, secured_port: int) -> None:
        status, body, _ = _get(secured_port, _basic("prom", "scrape-pw"))
        assert status == 200
        assert "moments_probe_total 1.0" in body

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "Bearer scrape-pw",
            "Basic not-base64!",
            _basic("prom", "wrong"),
            _basic("other", "scrape-pw"),
            _basic("prom", "scrape-pw-and-more"),
        ],
    )
    def test_anything_else_is_401_with_a_challenge(
        self, secured_port: int, header: str | None
    ) -> None:
        status, body, headers = _get(secured_port, header)
        assert status == 401
        assert "moments_probe" not in body
        assert headers["WWW-Authenticate"].startswith("Basic realm=")

    def test_without_credentials_it_is_open(self, registry: CollectorRegistry) -> None:
        port = free_port()
        server = serve_metrics(load_settings(metrics_host="127.0.0.1", metrics_port=port), registry)
        try:
            status, body, _ = _get(port, None)
        finally:
            server.shutdown()
            server.server_close()
        assert status == 200
        assert "moments_probe_total" in body


@pytest.mark.parametrize("with_health", [True, False])
def test_only_the_served_paths_answer_and_others_are_404_naming_them(
    registry: CollectorRegistry, with_health: bool
) -> None:
    """A scrape or probe set up with a wrong path must fail, not read the metrics."""
    port = free_port()
    health = Health(stall_after_s=60) if with_health else None
    server = serve_metrics(
        load_settings(metrics_host="127.0.0.1", metrics_port=port), registry, health
    )
    try:
        answers = {path: _get(port, None, path)[:2] for path in ("/", "/metric", "/livez")}
        metrics = _get(port, None, "/metrics?name[]=moments_probe_total")
    finally:
        server.shutdown()
        server.server_close()
    served = "/metrics, /livez, /readyz" if with_health else "/metrics"
    assert answers["/"] == (404, f"not found: /; served: {served}\n")
    assert answers["/metric"] == (404, f"not found: /metric; served: {served}\n")
    if with_health:
        assert answers["/livez"][0] == 200
        assert answers["/livez"][1].startswith("ok: starting (")
    else:
        assert answers["/livez"][0] == 404
    assert metrics[0] == 200
    assert "moments_probe_total 1.0" in metrics[1]


def test_scrape_sums_the_named_samples_with_the_labels_asked_for(
    registry: CollectorRegistry, secured_port: int
) -> None:
    events = Counter("moments_events", "events", ["event_type"], registry=registry)
    events.labels("profile").inc(4)
    events.labels("usage").inc(6)
    login = ("prom", "scrape-pw")
    assert scrape(secured_port, "moments_events_total", {"event_type": "profile"}, login) == 4
    assert scrape(secured_port, "moments_events_total", auth=login) == 10
    assert scrape(secured_port, "moments_probe_total", auth=login) == 1
    with pytest.raises(OSError, match="401"):
        scrape(secured_port, "moments_events_total")


@pytest.mark.parametrize("host", ["127.0.0.1", "10.9.9.9", "no-such-host.invalid"])
def test_a_port_or_address_it_cannot_bind_names_the_variables(
    registry: CollectorRegistry, host: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = load_settings(metrics_host=host, metrics_port=port)
        with pytest.raises(ConfigError) as refused:
            serve_metrics(settings, registry)
    message = str(refused.value)
    assert message.startswith(f"cannot serve /metrics on {host}:{port}: ")
    assert "MOMENTS_METRICS_PORT" in message
    assert "MOMENTS_METRICS_HOST" in message
