"""deploy/prometheus/: promtool accepts the config and rules, and the alert unit tests pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
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
    "MomentsRulesRefused",
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
