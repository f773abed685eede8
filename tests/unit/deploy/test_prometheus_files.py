"""deploy/prometheus/: promtool accepts the config and rules, and the alert unit tests pass."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
OPERATIONS = DEPLOY.parents[1] / "docs" / "operations.md"
RUNBOOK = "https://github.com/<org>/moments/blob/main/docs/operations.md#"
"""The base of every runbook_url, which docs/operations.md tells the operator to set."""
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool missing: `make prometheus` installs Debian's prometheus package as root, "
    "else run `sudo apt-get install -y --no-install-recommends prometheus`",
)

ALERTS = {
    "MomentsConsumerLagGrowing",
    "MomentsPartitionNotProgressing",
    "MomentsDeadLetterSpike",
    "MomentsDetectorErrors",
    "MomentsNothingDetectedWhileEventsFlow",
    "MomentsDeferredTasksOverdue",
    "MomentsTasksExpireUnanswered",
    "MomentsRulesRefused",
    "MomentsDispatchPolicyRefused",
    "MomentsEventsMisplaced",
    "MomentsRulesDiffer",
    "MomentsDependencyDown",
    "MomentsDependencyErrors",
    "MomentsWorkerDown",
    "MomentsWorkerStalled",
    "MomentsWorkerRestarting",
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


class TestRunbookLinks:
    """On-call found 6 of 14 descriptions that did not point to the runbook, which says
    each one does, and no runbook_url for Alertmanager or Grafana to link."""

    @pytest.fixture
    def anchors(self) -> set[str]:
        return heading_anchors(OPERATIONS.read_text())

    def test_every_alert_has_a_runbook_url_and_a_description_that_points_to_it(
        self, anchors: set[str]
    ) -> None:
        rules = YAML(typ="safe").load((DEPLOY / "alerts.yml").read_text())
        for rule in (r for g in rules["groups"] for r in g["rules"]):
            name, annotations = rule["alert"], rule["annotations"]
            anchor = name.lower()
            assert anchor in anchors, f"docs/operations.md has no heading `### {name}`"
            assert annotations.get("runbook_url") == RUNBOOK + anchor, name
            assert annotations["description"].endswith(f" Runbook: docs/operations.md#{anchor}."), (
                name
            )

    def test_every_link_into_operations_md_names_a_heading(self, anchors: set[str]) -> None:
        text = (DEPLOY / "alerts.yml").read_text()
        links = set(re.findall(r"docs/operations\.md#([\w-]+)", text))
        assert {"scaling", "misplaced-events"} < links
        assert links <= anchors
