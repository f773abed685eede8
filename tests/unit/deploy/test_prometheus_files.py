"""deploy/prometheus/: promtool accepts the config and rules, and the alert unit tests pass."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
OPERATIONS = DEPLOY.parents[1] / "docs" / "operations.md"
RUNBOOK = "https://github.com/<org>/moments/blob/main/docs/operations.md#"
"""The base of every runbook_url as shipped, which docs/operations.md tells the operator to
set (with the command `sed_command` reads from it)."""
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool missing: `make prometheus` installs Debian's prometheus package as root, "
    "else run `sudo apt-get install -y --no-install-recommends prometheus`",
)

ALERTS = {
    "MomentsConsumerLagGrowing",
    "MomentsPartitionNotProgressing",
    "MomentsNoPartitionHeld",
    "MomentsDeadLetterSpike",
    "MomentsDeadLettersLost",
    "MomentsOutcomesRefused",
    "MomentsDetectorErrors",
    "MomentsStateRecordsDamaged",
    "MomentsTimerErrors",
    "MomentsNothingDetectedWhileEventsFlow",
    "MomentsDeferredTasksOverdue",
    "MomentsTasksExpireUnanswered",
    "MomentsRulesRefused",
    "MomentsDispatchPolicyRefused",
    "MomentsEventsMisplaced",
    "MomentsRulesDiffer",
    "MomentsRolloutUnfinished",
    "MomentsDependencyDown",
    "MomentsDependencyErrors",
    "MomentsTopicMissing",
    "MomentsKafkaWritesUnacknowledged",
    "MomentsWorkerDown",
    "MomentsNoWorkerUp",
    "MomentsWorkerStalled",
    "MomentsWorkerRestarting",
    "MomentsWorkerNotReady",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
class TestPromtool:
    def test_check_config(self) -> None:
        done = promtool("check", "config", "prometheus.yml")
        assert done.returncode == 0, done.stdout + done.stderr

    def test_check_rules(self) -> None:
        done = promtool("check", "rules", "alerts.yml")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{len(ALERTS)} rules found" in done.stdout

    def test_alert_unit_tests_pass(self) -> None:
        done = promtool("test", "rules", "tests/alerts_test.yml")
        assert done.returncode == 0, done.stdout + done.stderr


class TestAlertFiles:
    def test_every_alert_has_a_firing_and_a_silent_unit_test(self) -> None:
        yaml = YAML(typ="safe")
        rules = yaml.load((DEPLOY / "alerts.yml").read_text())
        names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
        assert names == ALERTS
        tests = yaml.load((DEPLOY / "tests" / "alerts_test.yml").read_text())["tests"]
        fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
        silent = {
            c["alertname"] for t in tests for c in t["alert_rule_test"] if not c["exp_alerts"]
        }
        assert fired == ALERTS
        assert silent == ALERTS

    def test_workers_are_scraped_under_the_job_the_alerts_use(self) -> None:
        config = YAML(typ="safe").load((DEPLOY / "prometheus.yml").read_text())
        jobs = {j["job_name"]: j for j in config["scrape_configs"]}
        assert "alerts.yml" in config["rule_files"]
        targets = jobs["moments-worker"]["static_configs"][0]["targets"]
        assert all(t.endswith(":9308") for t in targets)
        assert 'job="moments-worker"' in (DEPLOY / "alerts.yml").read_text()


def fired_after(series: dict[str, str], tmp_path: Path) -> set[str]:
    """The alerts of alerts.yml that fire after 20 minutes of only `series` (series ->
    promtool's values, 1 m apart): each is tested for silence, and promtool names those
    that fired."""
    rules = YAML(typ="safe").load((DEPLOY / "alerts.yml").read_text())
    names = sorted({r["alert"] for g in rules["groups"] for r in g["rules"]})
    case = {
        "rule_files": [str(DEPLOY / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": name, "exp_alerts": []} for name in names
                ],
            }
        ],
    }
    path = tmp_path / "no_worker_test.yml"
    with path.open("w") as out:
        YAML(typ="safe").dump(case, out)
    done = promtool("test", "rules", str(path))
    return {name for name in names if f"alertname: {name}," in done.stdout + done.stderr}


@needs_promtool
def test_a_critical_alert_fires_when_no_worker_is_scraped_at_all(tmp_path: Path) -> None:
    """On Kubernetes a worker has a scrape target only while its pod has an address: with
    the StatefulSet scaled to 0 (as a state seed asks) and not scaled back, or every pod
    Pending (a volume that cannot attach), `up{job="moments-worker"}` has no series at
    all, so MomentsWorkerDown (`== 0`) stays silent, and so does every alert on the
    workers' own series (the lag among them): nothing was detected or sent, and nothing
    paged."""
    only_prometheus = {'up{job="prometheus",instance="localhost:9090"}': "1x30"}
    fired = fired_after(only_prometheus, tmp_path)
    rules = YAML(typ="safe").load((DEPLOY / "alerts.yml").read_text())
    severity = {r["alert"]: r["labels"]["severity"] for g in rules["groups"] for r in g["rules"]}
    assert "critical" in {severity[name] for name in fired}, fired
    worker = 'up{job="moments-worker",instance="w1"}'
    assert fired_after({**only_prometheus, worker: "1x30"}, tmp_path) == set()
    assert "MomentsWorkerDown" in fired_after({**only_prometheus, worker: "0x30"}, tmp_path)


@needs_promtool
def test_an_alert_fires_when_the_workers_are_up_and_none_holds_a_partition(
    tmp_path: Path,
) -> None:
    """Workers that answer but never get through the group's join (a rebalance that
    never ends, a member kicked out at every join) hold no partition: no lag series
    exists (it is per assigned partition), no event is read, so no lag, progress or
    dead-letter alert has anything to read, the workers are up and their loops run."""
    idle = {
        'up{job="moments-worker",instance="w1"}': "1x30",
        'up{job="moments-worker",instance="w2"}': "1x30",
        'moments_consumer_assigned_partitions{job="moments-worker",instance="w1"}': "0x30",
        'moments_consumer_assigned_partitions{job="moments-worker",instance="w2"}': "0x30",
        'moments_event_loop_stalled_seconds{job="moments-worker",instance="w1"}': "0.5x30",
        'moments_event_loop_stalled_seconds{job="moments-worker",instance="w2"}': "0.5x30",
    }
    assert fired_after(idle, tmp_path)
    holding = 'moments_consumer_assigned_partitions{job="moments-worker",instance="w2"}'
    assert fired_after({**idle, holding: "20x30"}, tmp_path) == set()


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (`### MomentsWorkerDown` is
    `#momentsworkerdown`), leaving code blocks out."""
    anchors: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def runbook_bases(alerts: Path, anchors: set[str]) -> set[str]:
    """The bases of the alerts' runbook_url annotations (the part before the alert's
    anchor), once each alert is checked to link its heading of docs/operations.md and to
    end its description with that entry."""
    rules = YAML(typ="safe").load(alerts.read_text())
    bases = set()
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        name, annotations = rule["alert"], rule["annotations"]
        anchor = name.lower()
        assert anchor in anchors, f"docs/operations.md has no heading `### {name}`"
        url = annotations.get("runbook_url", "")
        assert url.endswith("/docs/operations.md#" + anchor), name
        bases.add(url.removesuffix(anchor))
        assert annotations["description"].endswith(f" Runbook: docs/operations.md#{anchor}."), name
    return bases


def sed_command() -> str:
    """The command docs/operations.md gives to set the runbook_url base, as written."""
    text = OPERATIONS.read_text()
    found = re.search(r"```sh\n(sed -i 's\|https://github\.com/<org>/.*?)```", text, re.S)
    assert found, "docs/operations.md has no `sed -i 's|https://github.com/<org>/...` block"
    return found.group(1)


class TestRunbookLinks:
    """On-call found 6 of 14 descriptions that did not point to the runbook, which says
    each one does, and no runbook_url for Alertmanager or Grafana to link."""

    @pytest.fixture
    def anchors(self) -> set[str]:
        return heading_anchors(OPERATIONS.read_text())

    def test_every_alert_has_a_runbook_url_and_a_description_that_points_to_it(
        self, anchors: set[str]
    ) -> None:
        assert runbook_bases(DEPLOY / "alerts.yml", anchors) == {RUNBOOK}

    @needs_promtool
    def test_the_documented_base_change_leaves_the_rules_and_their_tests_green(
        self, anchors: set[str], tmp_path: Path
    ) -> None:
        """docs/operations.md has the operator point every runbook_url at their own copy
        with one `sed` over the rule files, once, and says the deploy files' test checks
        the anchors, not the base. The command left out the alert unit tests, which
        expect each firing alert's runbook_url: `promtool test rules` failed on all 16
        firing cases after it, and so did this test's check of the base."""
        copy = tmp_path / "repo"
        shutil.copytree(DEPLOY.parents[1] / "deploy", copy / "deploy")
        done = subprocess.run(
            ["/bin/sh", "-c", sed_command()], cwd=copy, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        prometheus = copy / "deploy" / "prometheus"
        (base,) = runbook_bases(prometheus / "alerts.yml", anchors)
        assert base != RUNBOOK  # the command changed it
        assert "<org>" not in base
        rules = YAML(typ="safe").load((copy / "deploy" / "k8s" / "prometheusrule.yaml").read_text())
        assert rules["spec"] == YAML(typ="safe").load((prometheus / "alerts.yml").read_text())
        assert PROMTOOL is not None
        tested = subprocess.run(
            [PROMTOOL, "test", "rules", "tests/alerts_test.yml"],
            cwd=prometheus,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr

    def test_every_link_into_operations_md_names_a_heading(self, anchors: set[str]) -> None:
        text = (DEPLOY / "alerts.yml").read_text()
        links = set(re.findall(r"docs/operations\.md#([\w-]+)", text))
        assert {"scaling", "misplaced-events"} < links
        assert links <= anchors


def test_the_lines_of_a_comment_are_indented_alike() -> None:
    """A comment's second line under MomentsDeadLetterSpike sat two columns left of its
    first (in alerts.yml and the PrometheusRule copy): it read as a comment on the rule's
    list item, not on the rule's keys. YAML does not care; the reader does."""
    root = DEPLOY.parents[1]
    files = [root / "docker-compose.yml", *sorted((root / "deploy").rglob("*.y*ml"))]
    astray = []
    for path in files:
        lines = path.read_text().splitlines()
        for number, (above, line) in enumerate(itertools.pairwise(lines), start=2):
            comments = above.lstrip().startswith("#") and line.lstrip().startswith("#")
            if comments and len(above) - len(above.lstrip()) != len(line) - len(line.lstrip()):
                astray.append(f"{path.relative_to(root)}:{number}")
    assert not astray


RESTORE_RECORDS_PER_S = 30_000
"""The slowest bulk restore docs/performance.md measured ("Restoring the state": 30.5k
records/s on a loaded 2-core machine; 137k on a quiet one)."""
SIZING_RECORDS = 1_055_511
"""The changelog deploy/k8s is sized by (docs/performance.md, "The RocksDB store's
memory": 1M events of 632k subscribers)."""
JOIN_S = 60
"""A consumer-group join: seconds on Apache Kafka, about a minute on Tansu."""
START_S = 10
"""Start to fresh events, beyond the restore (5.9 s less 3.9 s measured; rounded up)."""


def test_the_not_ready_wait_outlasts_a_rolling_restart_and_not_by_far() -> None:
    """MomentsWorkerNotReady's 15 minutes were a guess "meant to outlast a rolling
    restart". A rolling update restarts the pods one at a time, each not ready from its
    SIGTERM to its /readyz: at most terminationGracePeriodSeconds, a join, and a restore
    of its partitions, active and standby, in bulk (an empty volume: the worst case) at
    the slowest rate measured. The `for:` must outlast that for every replica, and not
    by more than twice: a pod left Pending pages that much later. More replicas (or a
    larger state) need a longer `for:`, which this says."""
    docs = [
        doc
        for path in sorted((DEPLOY.parent / "k8s").glob("*.yaml"))
        for doc in YAML(typ="safe").load_all(path.read_text())
        if doc
    ]
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "moments-config"
    ]
    replicas = statefulset["spec"]["replicas"]
    grace = statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    partitions = int(config["data"]["MOMENTS_PARTITIONS"])
    copies = 1 + int(config["data"]["MOMENTS_STANDBY_REPLICAS"])
    held = min(partitions, -(-partitions * copies // replicas))  # a pod's, standbys included
    restore = SIZING_RECORDS * held / partitions / RESTORE_RECORDS_PER_S
    rollout = replicas * (grace + JOIN_S + restore + START_S)
    rules = YAML(typ="safe").load((DEPLOY / "alerts.yml").read_text())
    (rule,) = [
        r for g in rules["groups"] for r in g["rules"] if r["alert"] == "MomentsWorkerNotReady"
    ]
    waits = float(rule["for"].removesuffix("m")) * 60
    assert rollout <= waits <= 2 * rollout, (rollout, waits)


def test_the_guides_alert_table_gives_each_alerts_wait() -> None:
    """docs/operations.md, Alerts: one row per alert of alerts.yml, its "for" column the
    rule's `for:` ("at once" without one), so that on-call reading the table knows how
    long a condition lasted before the page."""
    rules = YAML(typ="safe").load((DEPLOY / "alerts.yml").read_text())
    waits = {r["alert"]: r.get("for") for g in rules["groups"] for r in g["rules"]}
    section = OPERATIONS.read_text().split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(Moments\w+)` \| .* \| ([^|]+) \|$", section, re.M)
    assert sorted(name for name, _ in rows) == sorted(waits)  # each once
    for name, said in rows:
        wait = waits[name]
        expected = "at once" if wait is None else re.sub(r"^(\d+)m$", r"\1 min", wait)
        assert said.strip() == expected, name
