"""A real Prometheus (Debian binary) scrapes a real worker fed by the simulator: the
exposition passes `promtool check metrics`, the alert rules load, and every query of the
Grafana overview dashboard returns data, except the ones named in `NO_DATA_YET` with why."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from moments.embedded import free_port
from moments.models import Channel
from moments.settings import Settings
from moments.simulate import produce_stream, simulate
from tests.unit.test_metrics_contract import documented

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import metric_value, produce, read_topic, values

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CATALOG = ROOT / "src" / "rules" / "catalog" / "default.yaml"
SHADOW_RULE = """
  - id: usage_seen_shadow
    mode: shadow
    description: A rule on trial, for the shadow-rules panel
    on: [usage]
    task: {family: anomaly, type: usage_seen, channel: sms, priority: 5, action: none,
           ttl: 1h, description: "usage seen"}
"""
"""Appended to the catalog's `rules:` list (its last section) so that panel has data."""
SHANGHAI = ZoneInfo("Asia/Shanghai")
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "moments-overview.json"
ALERTS_FILE = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

NO_DATA_YET: dict[str, str] = {}
"""Panel targets (`title [refId]`) that cannot have data until a feature lands. They are not
asserted either way; remove an entry when its feature is merged."""

QUERY_WAIT_S = 120.0


def panel_queries() -> dict[str, str]:
    """`title [refId]` -> PromQL of every panel target, with Grafana's interval filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m")
            queries[f"{panel['title']} [{target['refId']}]"] = expr
    return queries


def api(port: int, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(
        f"http://127.0.0.1:{port}/api/v1/{path}?{query}", timeout=5
    ) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def has_data(port: int, expr: str) -> bool:
    """True when the instant query returns at least one sample that is a number."""
    result = api(port, "query", query=expr)["result"]
    return any(not math.isnan(float(r["value"][1])) for r in result)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], int]]:
    """Start Prometheus with deploy/prometheus/prometheus.yml, its targets pointed at one
    worker and a 1 s scrape interval; returns its port."""
    if PROMETHEUS is None or PROMTOOL is None:
        pytest.skip(
            "prometheus missing: `make prometheus` installs Debian's package as root, else "
            "`sudo apt-get install -y --no-install-recommends prometheus`"
        )
    procs: list[subprocess.Popen[bytes]] = []

    def start(worker_port: int) -> int:
        yaml = YAML(typ="safe")
        config = yaml.load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
        config["scrape_configs"] = [
            {**job, "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}
            for job in config["scrape_configs"]
            if job["job_name"] == "moments-worker"
        ]
        path = tmp_path / "prometheus.yml"
        with path.open("w") as out:
            yaml.dump(config, out)
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        assert PROMETHEUS is not None
        procs.append(
            subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1),
            ):
                return port
            assert procs[-1].poll() is None, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.3)
        raise AssertionError(
            "Prometheus never became ready: " + (tmp_path / "prometheus.log").read_text()
        )

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def in_quiet_hours(now: dt.datetime) -> list[tuple[str, str, Mapping[str, object]]]:
    """A subscriber whose own quiet hours cover `now` (the profile, produced first), then
    roams abroad (produced once the profile is in): a deferred task."""
    sub = "13900000077"
    window = f"{now - dt.timedelta(minutes=30):%H:%M}-{now + dt.timedelta(hours=2):%H:%M}"
    profile = {
        "event_id": "q-1",
        "subscriber_id": sub,
        "occurred_at": (now - dt.timedelta(minutes=1)).isoformat(),
        "timezone": "Asia/Shanghai",
        "quiet_hours": [window],
    }
    roaming = {
        "event_id": "q-2",
        "subscriber_id": sub,
        "occurred_at": now.isoformat(),
        "country": "NZ",
        "roaming_type": "international",
    }
    return [("profile", sub, profile), ("roaming", sub, roaming)]


async def published_at_least(port: int, count: int, wait_s: float = 120.0) -> None:
    """Wait until the worker has published `count` tasks in all (any type and channel)."""
    deadline = time.monotonic() + wait_s
    total = 0.0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            total = await metric_value(port, "moments_tasks_published_total")
            if total >= count:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{total:.0f} task(s) published in {wait_s:.0f}s, wanted {count}")


async def report_outcomes(settings: Settings) -> None:
    """Outcomes for published tasks, as a dispatch consumer writes them."""
    tasks = values(await read_topic(settings, "tasks", count=5, wait_s=60))
    statuses = ["accepted", "accepted", "declined", "done_no_change", "in_progress"]
    now = dt.datetime.now(dt.UTC).isoformat()
    await produce(
        settings,
        [
            (
                "task_outcomes",
                str(t["subscriber_id"]),
                {
                    "task_id": t["task_id"],
                    "subscriber_id": t["subscriber_id"],
                    "status": status,
                    "occurred_at": now,
                },
            )
            for t, status in zip(tasks, statuses, strict=False)
        ],
    )


@contextlib.asynccontextmanager
async def traffic(settings: Settings, prom_port: int) -> AsyncIterator[None]:
    """Simulated traffic for as long as the block runs, plus events three days old (their
    moments have expired), events dated two days ahead (out of time), records that must
    fail (dead letters), a moment inside quiet hours (deferred), outcomes for published
    tasks, and a change to the rules file (a reload)."""
    stale = simulate(
        40, 50, seed=2, plant_rate=0.3, start=dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    )
    await produce_stream(settings, iter(stale), rate=10_000, count=400)
    ahead = simulate(5, 50, seed=3, start=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    await produce_stream(settings, iter(ahead), rate=10_000, count=10)
    await produce(
        settings,
        [("usage", "13800000001", b"not json"), ("topup", "13800000002", b'{"event_id": "x"}')],
    )
    profile, roaming = in_quiet_hours(dt.datetime.now(SHANGHAI))
    await produce(settings, [profile])
    live = simulate(200, 100, seed=1, plant_rate=0.05)
    task = asyncio.create_task(produce_stream(settings, iter(live), rate=100, count=None))
    try:
        await published_at_least(settings.metrics_port, 5)
        await produce(settings, [roaming])
        # Outcomes after Prometheus has seen their series at 0, as on a worker that has been
        # up a while: a counter first scraped at 1 shows no increase.
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(
            has_data, prom_port, "count(moments_task_outcomes_total)"
        ):
            assert time.monotonic() < deadline, "Prometheus never scraped the outcome series"
            await asyncio.sleep(0.5)
        await report_outcomes(settings)
        assert settings.rules is not None
        with settings.rules.open("a") as rules:  # a change the worker's reload picks up
            rules.write("\n# touched by test_observability\n")
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    prometheus: Callable[[int], int],
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(DEFAULT_CATALOG.read_text() + SHADOW_RULE)
    policy = tmp_path / "dispatch-policy.yaml"
    limits = ", ".join(f"{c.value}: 100000" for c in Channel)
    policy.write_text(f"capacity:\n  '*': {{{limits}}}\n")  # limits make capacity_left
    settings = make_settings(metrics_port=free_port(), rules=rules, dispatch_policy=policy)
    await topics_for(settings)
    worker = start_worker(settings)
    prom_port = await asyncio.to_thread(prometheus, settings.metrics_port)
    queries = panel_queries()
    unknown = set(NO_DATA_YET) - set(queries)
    assert not unknown, f"NO_DATA_YET names targets that are not on the dashboard: {unknown}"

    async with traffic(settings, prom_port):
        deadline = time.monotonic() + QUERY_WAIT_S
        waiting = {k: v for k, v in queries.items() if k not in NO_DATA_YET}
        while waiting and time.monotonic() < deadline:
            for name, expr in list(waiting.items()):
                if await asyncio.to_thread(has_data, prom_port, expr):
                    del waiting[name]
            await asyncio.sleep(1)
        for name in NO_DATA_YET:
            if await asyncio.to_thread(has_data, prom_port, queries[name]):
                warnings.warn(f"{name} has data now: remove it from NO_DATA_YET", stacklevel=1)
        exposition = await asyncio.to_thread(
            lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=5
            ).read()
        )
        loaded = await asyncio.to_thread(api, prom_port, "rules")

    assert not waiting, f"panels without data: {sorted(waiting)}\n{worker.log()[-3000:]}"

    assert PROMTOOL is not None
    lint = await asyncio.to_thread(
        subprocess.run,
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    assert b"moments_consumer_lag{" in exposition
    assert served_as_documented(exposition.decode()) == {}
    labels = {
        (name, value)
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
        for name, value in sample.labels.items()
    }
    carrying = {(n, v) for n, v in labels if "subscriber" in n or re.fullmatch(r"[0-9]{5,20}", v)}
    assert not carrying, f"labels that carry a subscriber id: {carrying}"

    alerts = {r["name"] for g in loaded["groups"] for r in g["rules"] if r["type"] == "alerting"}
    written = re.findall(r"^\s*- alert: (\w+)", ALERTS_FILE.read_text(), flags=re.MULTILINE)
    assert alerts == set(written), alerts  # Prometheus loaded every alert of the file


def served_as_documented(exposition: str) -> dict[str, str]:
    """What a running worker's /metrics serves otherwise than the metric table of
    docs/operations.md says (name -> how): a metric it does not serve or one the table
    lacks, another type, or labels other than the table's. The unit tests hold the
    metric classes to the table; this holds the worker that builds them, so a metric
    the worker never registers, which an alert would read as silence, is named."""
    table = documented()
    found: dict[str, str] = {}
    served = set()
    for family in text_string_to_metric_families(exposition):
        if not family.name.startswith("moments_"):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        served.add(name)
        if name not in table:
            found[name] = "served, not in the table"
            continue
        kind, labels = table[name]
        has = {label for s in family.samples for label in s.labels} - {"le"}
        if family.type != kind:
            found[name] = f"a {family.type}, the table says {kind}"
        elif family.samples and has != labels:
            found[name] = f"labels {sorted(has)}, the table says {sorted(labels)}"
    for name in set(table) - served:
        found[name] = "in the table, not served"
    return found


def test_no_data_allow_list_entries_name_dashboard_targets() -> None:
    """The allow-list cannot silently cover a panel that was renamed or removed."""
    assert set(NO_DATA_YET) <= set(panel_queries())
    assert all(reason.strip() for reason in NO_DATA_YET.values())


def test_the_exposition_check_names_a_renamed_metric_and_label() -> None:
    """`served_as_documented` on the metric classes' own exposition finds nothing, and
    finds a metric and a label renamed in it."""
    from prometheus_client import CollectorRegistry, generate_latest

    from moments.consumer_metrics import ConsumerMetrics
    from sinks.metrics import DispatchMetrics, Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    DispatchMetrics.of(metrics)
    ConsumerMetrics(registry)
    # `_created` series left out, as a worker leaves them out (moments.worker)
    lines = generate_latest(registry).decode().splitlines()
    text = "".join(f"{line}\n" for line in lines if "_created" not in line)
    assert served_as_documented(text) == {}
    renamed = text.replace("moments_tasks_redriven_", "moments_tasks_resent_")
    renamed = renamed.replace('{dependency="redis"}', '{dep="redis"}')
    both = ["dep", "dependency"]
    assert served_as_documented(renamed) == {
        "moments_tasks_resent_total": "served, not in the table",
        "moments_tasks_redriven_total": "in the table, not served",
        "moments_dependency_errors_total": f"labels {both}, the table says ['dependency']",
        "moments_dependency_up": f"labels {both}, the table says ['dependency']",
    }
