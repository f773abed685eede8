"""A file of one kind given where another belongs (analyst walk): an events file as rules
(`rules validate events.jsonl.gz` was told "byte 0x8b is not UTF-8: save the file as
UTF-8", a JSON lines one "YAML syntax: expected '<document start>'", a CSV one ": Input
should be a valid dictionary or instance of RulesFile"), or a rules file as the dispatch
policy (`--policy rules.yaml` was told "Extra inputs are not permitted" of `gating`,
`series` and `rules`). Each is told what the file is and where it goes."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from moments.exceptions import ConfigError
from rules.catalog import load_rules
from rules.exceptions import RulesError
from sinks.policy import load_policy

EVENT = (
    b'{"type":"topup","event_id":"t1","subscriber_id":"13900000001",'
    b'"occurred_at":"2026-11-10T10:00:00+08:00","amount":150,"channel":"app"}\n'
)
RULES = """\
gating:
  timezone: Asia/Shanghai
rules:
  - id: r1
    description: d
    on: [complaint]
    task: {family: anomaly, type: t, channel: manager, priority: 1, action: a, ttl: 48h,
           description: d}
"""


def _events_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "JSON lines": tmp_path / "events.jsonl",
        "gzip": tmp_path / "events.jsonl.gz",
        "CSV": tmp_path / "events.CSV",
    }
    files["JSON lines"].write_bytes(EVENT * 2)
    files["gzip"].write_bytes(gzip.compress(EVENT))
    files["CSV"].write_text("type,event_id\ntopup,t1\n")
    return files


class TestEventsFileAsRules:
    @pytest.mark.parametrize("kind", ["JSON lines", "gzip", "CSV"])
    def test_it_is_named_as_events(self, tmp_path: Path, kind: str) -> None:
        path = _events_files(tmp_path)[kind]
        with pytest.raises(RulesError) as err:
            load_rules(path)
        (said,) = [str(p) for p in err.value.problems]
        assert said.startswith(f"{path}:1:1: a {kind} file (events?), not YAML"), said
        assert "events go to --events" in said

    def test_a_gzip_file_named_otherwise_is_told_too(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_bytes(gzip.compress(RULES.encode()))
        with pytest.raises(RulesError) as err:
            load_rules(path)
        assert "a gzip file (events?), not YAML" in str(err.value)

    def test_an_events_file_as_the_policy_is_named_as_events(self, tmp_path: Path) -> None:
        path = _events_files(tmp_path)["JSON lines"]
        with pytest.raises(ConfigError) as err:
            load_policy(path)
        assert "a JSON lines file (events?), not YAML" in str(err.value)


class TestRulesFileAsPolicy:
    def test_it_is_named_as_rules(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text(RULES)
        with pytest.raises(ConfigError) as err:
            load_policy(path)
        said = str(err.value)
        assert said.startswith(f"{path}: a rules file (gating:, rules:), not a dispatch policy")
        assert "Extra inputs" not in said
        assert "--rules" in said

    def test_a_policy_with_a_stray_rules_key_is_told_key_by_key(self, tmp_path: Path) -> None:
        """A policy that holds policy keys too is a policy with a mistake, said at its line."""
        path = tmp_path / "policy.yaml"
        path.write_text("capacity: {NJ: {manager: 2}}\nrules: []\n")
        with pytest.raises(ConfigError) as err:
            load_policy(path)
        assert "a rules file" not in str(err.value)
        assert ":2:1: rules" in str(err.value)


@pytest.mark.parametrize("command", ["backtest", "rules test"])
def test_a_yaml_file_given_as_events_is_named_as_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """`--events rules.yaml` was told "none of its first 20 line(s) is a JSON object ... name
    a CSV file .csv, a gzip file .gz, or export the events as JSON lines"."""
    from moments.cli import main

    rules = tmp_path / "rules.YML"
    rules.write_text(RULES)
    argv = [*command.split(), "--events", str(rules)]
    argv += ["--out", str(tmp_path / "o")] if command == "backtest" else [str(rules)]
    assert main(argv) != 0
    said = " ".join(capsys.readouterr().err.split())
    assert f"{rules}: a YAML file (rules or a dispatch policy?), not events" in said, said
