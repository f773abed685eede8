"""docker-compose.yml agrees with the code: services, ports, MOMENTS_* environment (each a
`Settings` field with a valid value), topics, and the Prometheus and Grafana wiring."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from moments.settings import Settings, load_settings
from moments.topiclayout import INPUT_TOPICS

ROOT = Path(__file__).resolve().parents[3]
SERVICES = {
    "kafka",
    "redis",
    "topics",
    "detector-1",
    "detector-2",
    "simulator",
    "prometheus",
    "grafana",
}
DETECTORS = ("detector-1", "detector-2")


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load(ROOT / "docker-compose.yml")
    services: dict[str, Any] = doc["services"]
    return services


def moments_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return {k: str(v) for k, v in env.items() if k.startswith("MOMENTS_")}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("MOMENTS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port."""
    out = {}
    for mapping in service.get("ports", []):
        host, container = str(mapping).split(":")[-2:]
        out[int(container)] = int(host)
    return out


def test_every_published_port_is_on_the_hosts_loopback_only(compose: dict[str, Any]) -> None:
    """Redis without a password, plaintext Kafka, anonymous Grafana and /metrics without a
    login: "6379:6379" would publish them on every interface of the host."""
    for name, service in compose.items():
        for mapping in service.get("ports", []):
            assert isinstance(mapping, str), f"{name}: {mapping!r} (write HOST_IP:HOST:CONTAINER)"
            assert mapping.split(":")[0] == "127.0.0.1", f"{name}: {mapping} not on 127.0.0.1"
    text = (ROOT / "docker-compose.yml").read_text()
    assert "inside the network" not in text, "published ports are on the host, not inside"


def test_the_services_are_the_documented_ones(compose: dict[str, Any]) -> None:
    assert set(compose) == SERVICES
    assert compose["kafka"]["image"].startswith("apache/kafka:")
    for name in (*DETECTORS, "simulator"):
        assert compose[name]["build"] == "."
        assert (ROOT / "Dockerfile").is_file()


@pytest.mark.parametrize("name", [*DETECTORS, "simulator"])
def test_every_moments_variable_is_a_settings_field_with_a_valid_value(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = moments_env(compose[name])
    assert env, f"{name} sets no MOMENTS_* variable"
    fields = {f"MOMENTS_{f.upper()}" for f in Settings.model_fields}
    unknown = {k for k in env if k.split("__")[0] not in fields}
    assert not unknown, f"{name}: not settings fields (ignored silently): {unknown}"
    settings = settings_from(env, monkeypatch)
    assert settings.kafka_bootstrap == "kafka:9092"


def test_workers_reach_kafka_and_redis_by_service_name_and_share_one_group(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = compose["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == 0
    assert kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    apps = set()
    for name in DETECTORS:
        settings = settings_from(moments_env(compose[name]), monkeypatch)
        assert f"PLAINTEXT://{settings.kafka_bootstrap}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
        assert settings.redis_url.startswith("redis://redis:6379/")
        assert settings.idempotent_producer is True, "Apache Kafka supports it"
        apps.add(settings.app_id)
        assert settings.metrics_port in published(compose[name]), f"{name}: /metrics unpublished"
        assert any(str(v).endswith(f":{settings.data_dir}") for v in compose[name]["volumes"]), (
            f"{name}: state dir not on a volume"
        )
    assert len(apps) == 1
    hosts = [published(compose[n])[9308] for n in DETECTORS]
    assert len(set(hosts)) == len(hosts), "two workers on one host port"


def test_the_topics_service_creates_every_input_topic_with_the_workers_partitions(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(moments_env(compose["detector-1"]), monkeypatch)
    script = "\n".join(compose["topics"]["command"])
    for event_type in INPUT_TOPICS:
        assert settings.topic(event_type.value) in script
    assert f"--partitions {settings.partitions}" in script
    assert f"--topic {settings.topic('profile')} --partitions" in script
    assert "cleanup.policy=compact" in script


def test_prometheus_scrapes_the_workers_and_grafana_gets_the_provisioning(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    targets = set(jobs["moments-worker"]["static_configs"][0]["targets"])
    want = {
        f"{name}:{settings_from(moments_env(compose[name]), monkeypatch).metrics_port}"
        for name in DETECTORS
    }
    assert targets == want
    assert "./deploy/prometheus:/etc/prometheus:ro" in compose["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["prometheus"]["command"]
    assert 9090 in published(compose["prometheus"])

    grafana = ROOT / "deploy" / "grafana"
    provider = load(grafana / "provisioning" / "dashboards" / "moments.yml")["providers"][0]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["grafana"]["volumes"]}
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    source = load(grafana / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    home = compose["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"])
    assert (grafana / "dashboards" / Path(home).name).is_file()


@pytest.mark.parametrize("name", DETECTORS)
def test_a_detector_is_healthy_once_its_readyz_says_so_and_the_simulator_waits_for_it(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = settings_from(moments_env(compose[name]), monkeypatch).metrics_port
    check = " ".join(compose[name]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/readyz" in check
    assert compose["simulator"]["depends_on"]["detector-1"] == {"condition": "service_healthy"}


def seconds(duration: str) -> float:
    """A compose duration such as "60s" or "1m30s" in seconds."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert duration, "empty duration"
    assert parts is not None, f"duration {duration!r}"
    return int(parts[1] or 0) * 60 + int(parts[2] or 0)


def test_docker_waits_for_a_stuck_worker_to_end_itself(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker stuck at SIGTERM logs where its loop is and exits after
    MOMENTS_STOP_GRACE_SECONDS; Docker's default of 10 s before SIGKILL cut that short."""
    for name in DETECTORS:
        grace = settings_from(moments_env(compose[name]), monkeypatch).stop_grace_seconds
        assert seconds(str(compose[name].get("stop_grace_period", "10s"))) > grace, name


def test_the_simulator_stops_on_docker_stop(compose: dict[str, Any]) -> None:
    """As PID 1 (the image's ENTRYPOINT) a process without a SIGTERM handler ignores the
    signal; the worker handles it itself (moments.worker), `moments simulate` needs an
    init."""
    assert compose["simulator"].get("init") is True
