"""/metrics with basic auth: the exposition only for the right login, in constant time."""

from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from moments.consumer_metrics import ConsumerMetrics
from moments.embedded import free_port
from moments.exceptions import ConfigError
from moments.health import Health
from moments.metrics_server import scrape, scrape_samples, serve_metrics
from moments.settings import load_settings
from sinks.metrics import Metrics


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


class _CountedCollector:
    """A custom collector that describes its one gauge and counts how often it is read."""

    def __init__(self, name: str, described: bool = True) -> None:
        self.name = name
        self.collects = 0
        if described:
            self.describe = lambda: [GaugeMetricFamily(self.name, "a custom gauge")]

    def collect(self) -> list[Metric]:
        self.collects += 1
        family = GaugeMetricFamily(self.name, "a custom gauge", labels=["shard"])
        family.add_metric(["a"], 2.5)
        family.add_metric(["b"], 4.0)
        return [family]


def _page_samples(port: int, name: str, login: tuple[str, str]) -> list[tuple[object, ...]]:
    """The samples called `name` on the whole page, read and parsed here (not by `scrape`)."""
    status, body, _ = _get(port, _basic(*login))
    assert status == 200
    return sorted(
        (sample.name, sorted(sample.labels.items()), sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name
    )


class TestScrapeAsksForTheNameOnly:
    """`scrape` asks the worker for the samples it sums (`?name[]=`), so that a bench
    polling it does not make the worker render its whole page; it reads the same values
    as the whole page would give."""

    LOGIN = ("prom", "scrape-pw")

    def test_a_collector_of_other_names_is_not_read(
        self, registry: CollectorRegistry, secured_port: int
    ) -> None:
        other = _CountedCollector("moments_other_gauge")
        registry.register(other)
        events = Counter("moments_events", "events", ["event_type"], registry=registry)
        events.labels("usage").inc(3)
        assert scrape(secured_port, "moments_events_total", auth=self.LOGIN) == 3
        assert scrape(secured_port, "moments_probe_total", auth=self.LOGIN) == 1
        assert other.collects == 0  # the whole page collects every collector
        assert scrape(secured_port, "moments_other_gauge", {"shard": "b"}, self.LOGIN) == 4.0
        assert other.collects == 1  # asked for, it is read once: no second, whole page

    def test_a_collector_that_does_not_describe_its_names_is_read_from_the_whole_page(
        self, registry: CollectorRegistry, secured_port: int
    ) -> None:
        """prometheus_client leaves such a collector out of a restricted answer."""
        hidden = _CountedCollector("moments_hidden_gauge", described=False)
        registry.register(hidden)
        assert scrape(secured_port, "moments_hidden_gauge", auth=self.LOGIN) == 6.5
        assert scrape(secured_port, "moments_hidden_gauge", {"shard": "a"}, self.LOGIN) == 2.5
        assert scrape(secured_port, "moments_no_such_metric", auth=self.LOGIN) == 0

    def test_every_sample_of_the_workers_registry_reads_as_on_the_whole_page(
        self, registry: CollectorRegistry, secured_port: int
    ) -> None:
        """The product's metrics (counters with labels, gauges with labels and with a
        function, histograms, a family with labels and no series yet), each sample name
        read by `scrape_samples` and summed by `scrape`, against the whole page."""
        metrics = Metrics(registry)
        consumer = ConsumerMetrics(registry)
        registry.register(_CountedCollector("moments_hidden_gauge", described=False))
        metrics.events.labels("usage").inc(7)
        metrics.loop_stalled.set_function(lambda: 1.25)
        metrics.event_to_task.observe(0.2)
        metrics.event_to_task.observe(3.0)
        consumer.lag.labels("in.usage", "0").set(11)
        consumer.lag.labels("in.usage", "1").set(5)
        consumer.assigned_partitions.set(4)
        consumer.rebalances.inc()
        consumer.commit_seconds.observe(0.01)
        _, body, _ = _get(secured_port, _basic(*self.LOGIN))
        names = {
            sample.name
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }
        assert {"moments_consumer_lag", "moments_event_to_task_seconds_bucket"} <= names
        for name in [*sorted(names), "moments_consumer_end_offset"]:
            whole = _page_samples(secured_port, name, self.LOGIN)
            asked = sorted(
                (sample.name, sorted(sample.labels.items()), sample.value)
                for sample in scrape_samples(secured_port, name, self.LOGIN)
            )
            assert asked == whole, name
            total = scrape(secured_port, name, auth=self.LOGIN)
            assert total == pytest.approx(sum(float(str(row[2])) for row in whole)), name
        lag = {"topic": "in.usage", "partition": "1"}
        assert scrape(secured_port, "moments_consumer_lag", lag, self.LOGIN) == 5
        buckets = {"le": "0.25"}
        assert (
            scrape(secured_port, "moments_event_to_task_seconds_bucket", buckets, self.LOGIN) == 1
        )
