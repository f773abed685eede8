"""Every query of deploy/ (the alerts, the dashboard's panels) reads what a worker serves:
metric names, the labels it matches, groups and prints, and the label values it matches
on; and nothing Prometheus 3 (docker-compose's) reads otherwise than 2.x (promtool's here).
The metrics contract test holds the registry to the contract and the operations guide;
nothing held the alerts and panels to the registry, so a renamed metric or label would
leave an alert silent (no series, no error) and a panel empty."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from ruamel.yaml import YAML

from moments.consumer_metrics import ConsumerMetrics
from moments.enums import REACHED, Channel, EventType, OutcomeStatus
from moments.records import OUTCOME_EVENT_TYPE, RejectReason, SuppressReason
from sinks.metrics import Dependency, DispatchMetrics, Metrics, OversizeOutcome

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))

TARGET_LABELS = {"job", "instance"}
"""What Prometheus adds to every scraped series."""
OPERATOR_LABELS = {"namespace", "service", "pod", "container", "endpoint"}
"""What the Prometheus Operator's ServiceMonitor adds besides (deploy/k8s); docker compose's
Prometheus (deploy/prometheus/prometheus.yml, static targets) does not, so a query that
needs one of them reads nothing there, or every worker as one."""
WORKER = "{{ if $labels.pod }}{{ $labels.pod }}{{ else }}{{ $labels.instance }}{{ end }}"
"""How an alert names a worker: its pod where the Operator scrapes it (`instance` is the
pod's IP:port there), its target (`detector-1:9308`) under docker compose."""
WORKER_LEGEND = "{{worker}}"
"""How a panel names a worker: Grafana's legends cannot say if/else, so the query makes a
`worker` label, the pod's name where there is one and the instance where not
(`label_replace` twice, the second only where `pod` is not empty)."""
KUBE_STATE_METRICS = {
    "kube_pod_container_status_restarts_total": {"namespace", "pod", "container"},
    "kube_pod_owner": {"namespace", "pod", "owner_kind", "owner_name", "owner_is_controller"},
    "kube_statefulset_replicas": {"namespace", "statefulset"},
    "kube_statefulset_status_replicas_ready": {"namespace", "statefulset"},
}
"""The metrics of another exporter the alerts read (MomentsWorkerRestarting,
MomentsWorkerNotReady)."""


SUFFIXED = {"counter", "histogram", "summary"}
"""Kinds whose series all carry a suffix (`_total`, `_bucket`, `_sum`, `_count`,
`_created`): none is named as the collector is."""


@functools.cache
def served() -> dict[str, set[str]]:
    """Every series name a worker serves (a histogram's `_bucket`, `_sum`, `_count` too)
    -> its labels. Not the bare name of a counter or a histogram: prometheus_client
    registers it, but no series has it, so a query of `moments_tasks_published` (the
    counter without `_total`) reads nothing; nor their `_created` series, which the
    worker turns off (`moments.worker`: `disable_created_metrics`)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    DispatchMetrics.of(metrics)
    ConsumerMetrics(registry)
    names: dict[str, set[str]] = {}
    for collector, series in registry._collector_to_names.items():
        labels = set(collector._labelnames)  # type: ignore[attr-defined]
        bare = collector._name if collector._type in SUFFIXED else None  # type: ignore[attr-defined]
        for name in series:
            if name != bare and not (bare and name == f"{bare}_created"):
                names[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    return names


def values_of(enum: type[StrEnum]) -> set[str]:
    return {member.value for member in enum}


VALUES: dict[tuple[str, str], set[str]] = {
    ("moments_events_rejected_total", "event_type"): values_of(EventType) | {OUTCOME_EVENT_TYPE},
    ("moments_events_rejected_total", "reason"): values_of(RejectReason),
    ("moments_tasks_suppressed_total", "reason"): values_of(SuppressReason),
    ("moments_task_outcomes_total", "status"): values_of(OutcomeStatus),
    ("moments_rules_reload_total", "result"): {"ok", "error"},
    ("moments_dependency_up", "dependency"): values_of(Dependency),
    ("moments_deadletters_oversize_total", "outcome"): values_of(OversizeOutcome),
}
"""The values a worker writes in a label that a query matches on a value (a matcher on
another label fails the test: add its values here)."""


def queries() -> list[tuple[str, str, str]]:
    """(where, expression, what it prints: a legend or an alert's summary and
    description) for every alert and every dashboard query."""
    found = []
    for group in YAML(typ="safe").load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            said = " ".join(rule["annotations"].values())
            found.append((f"alert {rule['alert']}", rule["expr"], said))
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                where = f"{path.name}: {panel['title']}"
                found.append((where, target["expr"], target.get("legendFormat", "")))
    return found


SELECTOR = re.compile(r"\b([a-z_][a-z0-9_]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
METRIC = re.compile(r"\b(moments_[a-z_]+|kube_[a-z_]+|up)\b(?!\s*\()")
MADE = re.compile(r',\s*"(\w+)",\s*"[^"]*",\s*"\w+",\s*"[^"]*"\s*\)')
"""The label a `label_replace(v, "dst", "replacement", "src", "regex")` writes."""


SCRAPE_INTERVAL_S = 15
"""deploy/prometheus/prometheus.yml's and the ServiceMonitor's."""


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration))


def metrics_of(expr: str) -> dict[str, set[str]]:
    known = served() | KUBE_STATE_METRICS | {"up": set()}
    return {name: known.get(name, set()) for name in METRIC.findall(expr)}


def problems(where: str, expr: str, said: str) -> list[str]:
    """What in one query reads nothing a worker serves (an unknown metric, a label it has
    not, a value it never writes, a group or a printed label no series has), or what
    Prometheus 3 reads otherwise than 2.x (a short range, an `le` as 2.x kept it)."""
    found: list[str] = []
    labels = metrics_of(expr)
    if not labels:
        found.append("reads no metric the test knows")
    known = set(served()) | set(KUBE_STATE_METRICS) | {"up"}
    found += [f"no worker serves {name}" for name in labels if name not in known]
    for name, matchers in SELECTOR.findall(expr):
        for label, op, value in MATCHER.findall(matchers):
            if label not in labels.get(name, set()) | TARGET_LABELS:
                found.append(f"{name} has no label {label}")
            elif op not in ("=", "!="):
                found.append(f"a regular expression on {name}{{{label}}}")
            elif label in ("le", "quantile"):
                # Prometheus 3 stores them as floats (`le="1"` is `le="1.0"`), 2.x as written.
                if not re.fullmatch(r"\+Inf|-?\d+\.\d+(e[+-]\d+)?", value):
                    found.append(f"{name}{{{label}={value!r}}}: write it as 3.x stores it")
            elif name in KUBE_STATE_METRICS and label == "namespace":
                found.append(f"{name}{{namespace}}: silent in any other; select by StatefulSet")
            elif label in TARGET_LABELS or name in KUBE_STATE_METRICS:
                continue  # the Prometheus and k8s tests hold job and namespace to deploy/
            elif (name, label) not in VALUES:
                found.append(f"{name}{{{label}}}: add the values it takes to VALUES")
            elif value not in VALUES[(name, label)]:
                found.append(f"{name}{{{label}}} is never {value!r}")
    # Prometheus 3 selects a range left-open, (t - d, t], not [t - d, t] as 2.x: a window of
    # two scrape intervals that held 3 samples holds 2, of one 1, and `rate()` needs two.
    found += [
        f"[{window}] holds fewer than 4 scrapes"
        for window in re.findall(r"\[([0-9smhd]+)\]", expr)
        if seconds(window) < 4 * SCRAPE_INTERVAL_S
    ]
    own = set().union(*labels.values())
    has = own | TARGET_LABELS | OPERATOR_LABELS
    grouped = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
    found += [f"grouped by {label}, which no series has" for label in grouped - has - {""}]
    found += [
        f"grouped by {label} without instance: docker compose's Prometheus adds no {label}, "
        "so every worker there is one series"
        for label in sorted((grouped & OPERATOR_LABELS) - own)
        if "instance" not in grouped
    ]
    # Grafana's legend says `{{label}}`; an alert's template `{{ $labels.label }}`.
    template = r"\$labels\.(\w+)" if where.startswith("alert ") else r"\{\{\s*(\w+)\s*\}\}"
    kept = grouped if re.search(r"\b(?:sum|max|min|count|avg)\s*by\b", expr) else has
    kept |= set(MADE.findall(expr))
    found += [
        f"prints {{{{{label}}}}}, which its result has not"
        for label in set(re.findall(template, said)) - kept
    ]
    found += [
        f"prints {{{{{label}}}}} alone, empty under docker compose: print a worker as {WORKER}"
        for label in sorted(set(re.findall(template, said.replace(WORKER, ""))) & OPERATOR_LABELS)
        if label not in own
    ]
    return found


@pytest.mark.parametrize(("where", "expr", "said"), queries(), ids=lambda v: v[:60])
def test_every_query_reads_what_a_worker_serves(where: str, expr: str, said: str) -> None:
    assert problems(where, expr, said) == [], where


def test_the_check_finds_a_wrong_name_label_value_group_and_legend() -> None:
    """What each check of `problems` is for, on queries that get one thing wrong each."""
    wrong = {
        "sum(rate(moments_tasks_publish_total[5m]))": "",
        'sum(rate(moments_tasks_published_total{chanel="sms"}[5m]))': "",
        'sum(rate(moments_task_outcomes_total{status="accept"}[5m]))': "",
        'sum(rate(moments_task_outcomes_total{status=~"acc.*"}[5m]))': "",
        'sum(rate(moments_tasks_published_total{moment_type="x"}[5m]))': "",
        "sum by (chanel) (rate(moments_tasks_published_total[5m]))": "",
        "sum by (channel) (rate(moments_tasks_published_total[5m]))": "{{moment_type}}",
        "sum(rate(moments_tasks_published_total[30s]))": "",
        'sum(rate(moments_processing_seconds_bucket{le="1"}[5m]))': "",
        # A counter or a histogram by the name it is declared with: no series has it.
        "sum(rate(moments_tasks_published[5m]))": "",
        "sum(rate(moments_processing_seconds[5m]))": "",
        "max(moments_tasks_published_created)": "",  # the worker serves no `_created`
    }
    for expr, legend in wrong.items():
        assert len(problems("panel", expr, legend)) == 1, expr
    assert problems("alert A", "max by (instance) (moments_rules_refused)", "{{ $labels.pod }}")
    by_pod = "max by (instance, pod) (moments_rules_refused)"
    assert problems("alert A", by_pod, WORKER) == []
    assert len(problems("alert A", by_pod, "{{ $labels.pod }} refuses")) == 1  # empty in compose
    assert len(problems("alert A", "max by (pod) (moments_rules_refused)", "")) == 1
    restarts = "increase(kube_pod_container_status_restarts_total[30m])"
    assert problems("alert A", restarts, "{{ $labels.pod }}") == []  # kube-state-metrics' own
    in_one = 'kube_statefulset_replicas{namespace="moments", statefulset="moments-worker"}'
    assert len(problems("alert A", in_one, "")) == 1  # an install elsewhere: silent
    by_worker = f'label_replace({by_pod}, "worker", "$1", "pod", "(.+)")'
    assert problems("panel", by_worker, WORKER_LEGEND) == []  # label_replace makes `worker`
    assert len(problems("panel", by_pod, WORKER_LEGEND)) == 1


def test_an_alert_on_one_worker_names_its_pod_where_there_is_one() -> None:
    """Per-worker summaries printed `{{ $labels.instance }}`: under the Prometheus Operator
    that is the pod's IP and port, which `kubectl` does not take and a restart changes. They
    group by `pod` too and print it, or the instance where there is no `pod` (docker
    compose)."""
    rules = YAML(typ="safe").load(ALERTS.read_text())["groups"]
    naming = {
        rule["alert"]: rule
        for group in rules
        for rule in group["rules"]
        if "$labels.instance" in rule["annotations"]["summary"]
    }
    assert {"MomentsWorkerDown", "MomentsWorkerStalled", "MomentsRulesRefused"} <= set(naming)
    for name, rule in naming.items():
        summary = rule["annotations"]["summary"]
        assert WORKER in summary, name
        assert "$labels.instance" not in summary.replace(WORKER, ""), name
        groups = [set(map(str.strip, g.split(","))) for g in GROUPING.findall(rule["expr"])]
        assert all("pod" in g for g in groups if "instance" in g), name


PER_WORKER_PANELS = {
    "Rebalances",
    "State held",
    "State records damaged and mended by worker",
    "Files on disk refused",
    "Event loop stalled",
    "First waiting task overdue by",
    "Input partitions held by worker",
    "Tasks a newer version wrote, read by worker",
    "Dependencies up",
    "Rebalance time by worker (mean since start)",
}
"""The overview's panels that draw a line per worker."""


def per_worker_targets() -> list[tuple[str, str, str]]:
    """(panel title, query, legend) of every dashboard target whose query keeps `instance`:
    a line per worker."""
    return [
        (where.split(": ", 1)[1], expr, legend)
        for where, expr, legend in queries()
        if not where.startswith("alert ")
        and any("instance" in map(str.strip, g.split(",")) for g in GROUPING.findall(expr))
    ]


def test_a_per_worker_panel_names_the_pod_where_there_is_one() -> None:
    """Per-worker panels' legends printed `{{instance}}`: under the Prometheus Operator the
    pod's IP and port, which a restart changes and `kubectl` does not take. They keep `pod`
    beside `instance` and print the `worker` their query makes of the two."""
    targets = per_worker_targets()
    assert {title for title, _, _ in targets} >= PER_WORKER_PANELS
    for title, expr, legend in targets:
        assert WORKER_LEGEND in legend, title
        assert not re.search(r"\{\{\s*(?:instance|pod)\s*\}\}", legend), title
        groups = [set(map(str.strip, g.split(","))) for g in GROUPING.findall(expr)]
        assert all("pod" in g for g in groups if "instance" in g), title


PROMTOOL = shutil.which("promtool")
UNDER_COMPOSE = {"job": "moments-worker", "instance": "detector-1:9308"}
"""A worker's target labels as docker compose's Prometheus scrapes it (static targets)."""
UNDER_OPERATOR = {
    "job": "moments-worker",
    "instance": "10.1.2.3:9308",
    "namespace": "moments",
    "service": "moments-worker",
    "pod": "moments-worker-2",
    "container": "worker",
    "endpoint": "metrics",
}
"""The same under the Prometheus Operator's ServiceMonitor (deploy/k8s)."""


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: `make prometheus` installs it")
def test_a_per_worker_panel_draws_the_pod_or_else_the_target(tmp_path: Path) -> None:
    """Each per-worker query, run by promtool on a worker scraped by docker compose and one
    scraped by the Operator, gives one line per worker whose `worker` is the target's
    `detector-1:9308` for the first and the pod's `moments-worker-2` for the second."""
    targets = per_worker_targets()
    read = {name for _, expr, _ in targets for name in METRIC.findall(expr)}
    series = []
    for name in sorted(read):
        own = {
            label: sorted(VALUES.get((name, label), {"x"}))[0] for label in sorted(served()[name])
        }
        for target in (UNDER_COMPOSE, UNDER_OPERATOR):
            labels = ", ".join(f'{k}="{v}"' for k, v in (target | own).items())
            series.append({"series": f"{name}{{{labels}}}", "values": "1+1x40"})
    expected = [
        {
            "labels": f'{{worker="{target["pod"] if "pod" in target else target["instance"]}"}}',
            "value": 1,
        }
        for target in (UNDER_COMPOSE, UNDER_OPERATOR)
    ]
    case = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": "count by (worker) ("
                        + expr.replace("$__rate_interval", "5m")
                        + ")",
                        "eval_time": "30m",
                        "exp_samples": expected,
                    }
                    for _, expr, _ in targets
                ],
            }
        ],
    }
    path = tmp_path / "per_worker_test.yml"
    with path.open("w") as out:
        YAML(typ="safe").dump(case, out)
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def the_worker_statefulset() -> dict[str, Any]:
    docs = [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in YAML(typ="safe").load_all(path.read_text())
        if doc
    ]
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    return statefulset  # type: ignore[no-any-return]


def equal_matchers(selector: str) -> dict[str, str]:
    return {label: value for label, op, value in MATCHER.findall(selector) if op == "="}


def test_the_restart_alert_reads_the_worker_containers_of_the_statefulset() -> None:
    """MomentsWorkerRestarting matches kube-state-metrics' restarts of the container named
    as deploy/k8s names it, in the pods its StatefulSet owns (`kube_pod_owner`), in any
    namespace: it matched `namespace="moments"`, so an install in another was silent."""
    statefulset = the_worker_statefulset()
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    (expr,) = [e for w, e, _ in queries() if w == "alert MomentsWorkerRestarting"]
    read = {n: equal_matchers(m) for n, m in SELECTOR.findall(expr) if n in KUBE_STATE_METRICS}
    assert read == {
        "kube_pod_container_status_restarts_total": {"container": container["name"]},
        "kube_pod_owner": {
            "owner_kind": "StatefulSet",
            "owner_name": statefulset["metadata"]["name"],
        },
    }
    assert re.search(r"\band\s+on\s*\(\s*namespace\s*,\s*pod\s*\)", expr), expr


def test_the_not_ready_alert_reads_the_worker_statefulset_in_any_namespace() -> None:
    """MomentsWorkerNotReady matches kube-state-metrics' series of the worker StatefulSet
    on its name in deploy/k8s, both sides of its subtraction: a pod left Pending among
    running ones fired nothing (its partitions moved to the others), and another name
    there would leave the alert silent. No namespace: it matched `namespace="moments"`,
    so an install in another was silent."""
    statefulset = the_worker_statefulset()
    (expr,) = [e for w, e, _ in queries() if w == "alert MomentsWorkerNotReady"]
    read = {n: m for n, m in SELECTOR.findall(expr) if n in KUBE_STATE_METRICS}
    assert set(read) == {"kube_statefulset_replicas", "kube_statefulset_status_replicas_ready"}
    for matchers in read.values():
        assert equal_matchers(matchers) == {"statefulset": statefulset["metadata"]["name"]}


def test_the_unanswered_alert_names_the_consumer_of_every_channel() -> None:
    """MomentsTasksExpireUnanswered's description names each channel's consumer with
    `eq $labels.channel "..."` and the last one in its `else`: one more channel would be
    called the app push service."""
    rules = YAML(typ="safe").load(ALERTS.read_text())["groups"]
    (rule,) = [r for g in rules for r in g["rules"] if r["alert"] == "MomentsTasksExpireUnanswered"]
    named = set(re.findall(r'eq \$labels\.channel "(\w+)"', rule["annotations"]["description"]))
    assert named < values_of(Channel)
    assert values_of(Channel) - named == {Channel.APP_PUSH.value}
    assert "app push" in rule["annotations"]["description"]


def test_the_ranges_are_checked_against_the_scrape_interval() -> None:
    """docker-compose runs Prometheus 3.5, promtool here (Debian) is 2.42: `problems` keeps
    out of the queries what 3.x reads differently (ranges, `le`), against this interval."""
    config = YAML(typ="safe").load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert seconds(config["global"]["scrape_interval"]) == SCRAPE_INTERVAL_S
    monitor = YAML(typ="safe").load((DEPLOY / "k8s" / "servicemonitor.yaml").read_text())
    assert seconds(monitor["spec"]["endpoints"][0]["interval"]) == SCRAPE_INTERVAL_S


def statuses_read(selector: str) -> set[str]:
    """The outcome statuses a selector of `moments_task_outcomes_total` reads."""
    read = values_of(OutcomeStatus)
    for label, op, value in MATCHER.findall(selector):
        if label == "status":
            read = read & {value} if op == "=" else read - {value}
    return read


def test_the_acceptance_rate_is_of_the_outcomes_that_reached_the_customer() -> None:
    """ "Acceptance rate by moment type" divided the accepted outcomes by every outcome but
    `in_progress`: `unreachable` and `failed` too, outcomes of attempts that reached
    nobody, so the suggestion was never put to them. A call unanswered and accepted on its
    retry (a task of its own) read 50%; a channel whose calls went unanswered read as
    customers declining. The share is of the outcomes that say the customer was reached
    (`moments.enums.REACHED`); reachability has its own panels (outcomes by status)."""
    (panel,) = [
        p
        for path in DASHBOARDS
        for p in json.loads(path.read_text())["panels"]
        if p["title"].startswith("Acceptance rate")
    ]
    (target,) = panel["targets"]
    numerator, denominator = target["expr"].split(" / ")
    (read_above,) = [
        m for n, m in SELECTOR.findall(numerator) if n == "moments_task_outcomes_total"
    ]
    (read_below,) = [
        m for n, m in SELECTOR.findall(denominator) if n == "moments_task_outcomes_total"
    ]
    assert statuses_read(read_above) == {OutcomeStatus.ACCEPTED.value}
    assert statuses_read(read_below) == {status.value for status in REACHED}
