"""deploy/grafana/: provisioning parses, and every panel is readable at a glance (a
description, a unit, thresholds) and uses the provisioned datasource by uid."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

GRAFANA = Path(__file__).resolve().parents[3] / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

OVERVIEW_METRICS = {
    "moments_events_total",
    "moments_detected_total",
    "moments_tasks_published_total",
    "moments_tasks_suppressed_total",
    "moments_tasks_deferred_total",
    "moments_tasks_waiting",
    "moments_event_to_task_seconds_bucket",
    "moments_consumer_lag",
    "moments_events_rejected_total",
    "moments_rules_reload_total",
    "moments_capacity_left",
    "moments_task_outcomes_total",
    "moments_tasks_unanswered",
    "moments_tasks_unanswered_expired_total",
    "moments_events_misplaced_total",
    "moments_state_stale_records_skipped_total",  # a previous owner's write landing late
    "moments_state_records_damaged_total",  # another changelog writer, a failing volume
    # What ops act on that no panel showed (the deploy/ walk-through of 2026-12-07):
    "moments_deadletters_oversize_total",  # the dead-letter topic's limit too low
    "moments_events_out_of_order_total",  # a producer's re-send applied twice
    "moments_tasks_overflow_total",  # capacity below what the rules make
    "moments_tasks_redriven_total",  # publishes not confirmed
    "moments_tasks_merged_total",
    "moments_cooldown_returns_total",  # malformed: another writer on an internal topic
    "moments_consumer_rebalance_seconds_sum",  # how long /readyz fails on every pod
    "moments_batch_records_sum",
    "moments_profile_deletions_total",  # json_null/empty: a producer's serializer to fix
    "moments_events_forgotten_total",
}
"""What the issue asks the overview to show."""


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def datasource_uid() -> str:
    sources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    return str(source["uid"])


def panels(path: Path) -> list[dict[str, Any]]:
    return [p for p in json.loads(path.read_text())["panels"] if p["type"] != "row"]


def test_the_dashboard_provider_loads_json_files_from_a_folder() -> None:
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "moments.yml")["providers"]
    (provider,) = providers
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert DASHBOARDS, "no dashboard JSON"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_have_description_unit_thresholds_and_the_datasource_variable(
    path: Path,
) -> None:
    """Every query reads the dashboard's `datasource` variable, whose default is the
    provisioned Prometheus: a fixed uid broke every panel of the dashboard imported into
    a Grafana whose Prometheus has another (SRE review)."""
    dashboard = json.loads(path.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    assert variable["current"]["value"] == datasource_uid()
    uid = "${datasource}"
    assert dashboard["uid"]
    for panel in panels(path):
        title = panel["title"]
        assert panel.get("description", "").strip(), f"{title}: no description"
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"{title}: no unit"
        assert defaults["thresholds"]["steps"], f"{title}: no thresholds"
        assert panel["datasource"]["uid"] == uid, title
        assert panel["targets"], f"{title}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, title
            assert target["expr"].strip(), title


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path.name
        cells: set[tuple[int, int]] = set()
        for p in dashboard["panels"]:
            g = p["gridPos"]
            mine = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not mine & cells, f"{path.name}: {p['title']} overlaps another panel"
            assert g["x"] + g["w"] <= 24
            cells |= mine


def test_the_overview_shows_what_the_issue_asks_for() -> None:
    exprs = " ".join(
        t["expr"]
        for p in panels(GRAFANA / "dashboards" / "moments-overview.json")
        for t in p["targets"]
    )
    missing = {m for m in OVERVIEW_METRICS if m not in exprs}
    assert not missing
    assert "histogram_quantile(0.5," in exprs
    assert "histogram_quantile(0.99," in exprs
    assert 'status="accepted"' in exprs


def test_every_worker_metric_an_alert_reads_is_on_the_overview() -> None:
    """The on-call paged by an alert finds the series it fired on in a panel: the drill
    of 2026-12-05 found no panel for the refused rules and dispatch policy files, the
    event loop's stall, the first waiting task's due time or the committed offsets
    (MomentsRulesRefused, MomentsDispatchPolicyRefused, MomentsWorkerStalled,
    MomentsDeferredTasksOverdue, MomentsPartitionNotProgressing)."""
    alerts = load_yaml(GRAFANA.parent / "prometheus" / "alerts.yml")
    read = {
        name
        for group in alerts["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\bmoments_[a-z_]+", rule["expr"])
    }
    assert "moments_consumer_lag" in read  # the pattern finds the alerts' metrics
    exprs = " ".join(
        t["expr"]
        for p in panels(GRAFANA / "dashboards" / "moments-overview.json")
        for t in p["targets"]
    )
    shown = set(re.findall(r"\bmoments_[a-z_]+", exprs))
    assert read - shown == set(), "alerts read these, no overview panel shows them"


def every_expression() -> list[str]:
    """The queries of every dashboard panel and every alert rule."""
    exprs = [t["expr"] for path in DASHBOARDS for p in panels(path) for t in p["targets"]]
    alerts = load_yaml(GRAFANA.parent / "prometheus" / "alerts.yml")
    return exprs + [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]


SHARED_GAUGES = {
    "moments_tasks_waiting",
    "moments_tasks_earliest_due_timestamp_seconds",
    "moments_tasks_unanswered",
    "moments_capacity_left",
}
"""Figures every worker reads from the same Redis keys: each reports the whole figure."""


def test_no_panel_or_alert_sums_a_figure_every_worker_reports_whole() -> None:
    """ "Tasks deferred/s and waiting" showed `sum(moments_tasks_waiting)`: the deferral
    queue's size as each worker reads it from Redis, added up, so four pods showed four
    times the queue. Such gauges take `max` (or `min`), never `sum`."""
    exprs = every_expression()
    shown = {name for e in exprs for name in SHARED_GAUGES if name in e}
    assert shown == SHARED_GAUGES  # the test looks where they are
    for expr in exprs:
        for name in SHARED_GAUGES:
            summed = rf"\bsum\s*(?:by\s*\([^)]*\)\s*)?\(\s*{name}\b"
            assert not re.search(summed, expr), expr


PER_PARTITION_GAUGES = ("moments_consumer_lag", "moments_consumer_committed_offset")
"""Figures of a partition reported by the worker that holds it, and, until its next sample
after a rebalance, by the one that held it: two series of one partition for a while."""


ONCE_A_PARTITION = re.compile(r"max\s*by\s*\(\s*topic\s*,\s*partition\s*\)\s*\((\s*\w+\s*\()?\s*$")
"""What comes right before such a figure: `max by (topic, partition) (`, with at most one
function between (`deriv(`)."""


def test_a_partitions_figure_is_taken_once_whoever_reports_it() -> None:
    """ "Consumer lag" was `sum(moments_consumer_lag)`: for a sample after a rebalance the
    old and the new owner both report a partition, and the total counted its lag twice.
    Each (topic, partition) is taken once, by `max`, before any sum."""
    exprs = every_expression()
    seen = 0
    for expr in exprs:
        for name in PER_PARTITION_GAUGES:
            for use in re.finditer(rf"\b{name}\b", expr):
                seen += 1
                before = expr[: use.start()]
                assert ONCE_A_PARTITION.search(before), expr
    assert seen >= 3  # the test looks where they are


def test_a_panel_that_speaks_of_an_alert_names_one_that_exists() -> None:
    """ "Tasks deferred/s and waiting" said "the deferral alert fires when the queue stays
    above 1000 and keeps growing", a rule replaced long before (the first waiting task
    overdue by 15 min): an alert named in a panel is one of alerts.yml, by its name."""
    alerts = load_yaml(GRAFANA.parent / "prometheus" / "alerts.yml")
    names = {rule["alert"] for group in alerts["groups"] for rule in group["rules"]}
    speaking = 0
    for path in DASHBOARDS:
        for p in panels(path):
            description = p.get("description", "")
            if re.search(r"\balert", description):
                speaking += 1
                named = set(re.findall(r"\bMoments[A-Z]\w+", description))
                assert named, (p["title"], description)
                assert named <= names, (p["title"], named - names)
    assert speaking >= 5


def test_no_panel_hides_in_a_collapsed_row_where_the_checks_do_not_read() -> None:
    """Grafana saves a collapsed row with its panels inside it (`row["panels"]`), not in
    the dashboard's `panels`: every check of deploy/ on the panels (their queries against
    the metrics a worker serves, descriptions, units, the datasource) reads the top level
    only, so a row collapsed in Grafana and saved back would take its panels out of them
    without a failure. Rows stay open, their panels beside them."""
    for path in DASHBOARDS:
        for row in json.loads(path.read_text())["panels"]:
            if row["type"] == "row":
                assert row.get("collapsed") is not True, f"{path.name}: {row['title']}"
                assert not row.get("panels"), f"{path.name}: {row['title']} holds panels"


def test_the_guides_kubernetes_dashboard_command_makes_the_configmap_grafana_loads() -> None:
    """The guide said how docker compose's Grafana loads the overview and, for a Grafana of
    one's own, to "pick its Prometheus": nothing said how kube-prometheus-stack's Grafana,
    the one deploy/k8s's ServiceMonitor and PrometheusRule are written for, gets it (a
    ConfigMap labelled for its dashboard sidecar). The guide's command makes, from the
    repository's root, a ConfigMap holding each dashboard file as it is, with the label
    (run up to its apply, with no cluster, where kubectl is installed)."""
    guide = (GRAFANA.parents[1] / "docs" / "operations.md").read_text()
    section = guide.split("\n## Dashboards\n", 1)[1].split("\n## ", 1)[0]
    (command,) = [
        line
        for block in re.findall(r"```sh\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if "create configmap" in line
    ]
    files = re.findall(r"--from-file=(\S+)", command)
    assert sorted(GRAFANA.parents[1] / f for f in files) == DASHBOARDS
    assert "grafana_dashboard=1" in command
    *make, apply = command.split(" | ")
    assert apply.startswith("kubectl apply --server-side -f -")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl to render the ConfigMap")
    piped = ""
    for step in make:  # the pipe, one kubectl after another (`kubectl` as found)
        words = shlex.split(step)
        assert words[0] == "kubectl", step
        rendered = subprocess.run(
            [kubectl, *words[1:]],
            input=piped,
            cwd=GRAFANA.parents[1],
            capture_output=True,
            text=True,
            check=False,
        )
        assert rendered.returncode == 0, (step, rendered.stderr)
        piped = rendered.stdout
    configmap = YAML(typ="safe").load(piped)
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["labels"] == {"grafana_dashboard": "1"}
    for path in DASHBOARDS:
        assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text())
