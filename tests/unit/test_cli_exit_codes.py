"""One exit code for a file given that is not there, whatever the command: 2, "it could
not run as set up" (README, exit codes), as a bad option; 1 is for an input read and
found wanting. `events check` exited 2 and the rest 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import build_parser, main

from .test_cli_help import commands

CATALOG = str(Path(__file__).parents[2] / "src" / "rules" / "catalog" / "default.yaml")


COMMANDS = {
    "events check": ["events", "check", "{missing}"],
    "rules validate": ["rules", "validate", "{missing}"],
    "rules validate --together": ["rules", "validate", "--together", "{missing}", CATALOG],
    "rules test, its rules": ["rules", "test", "{missing}", "--events", "{missing}"],
    "rules test, its events": ["rules", "test", CATALOG, "--events", "{missing}"],
    "rules explain --rules": ["rules", "explain", "--rules", "{missing}"],
    "rules diff": ["rules", "diff", "{missing}", CATALOG],
    "backtest --events": ["backtest", "--events", "{missing}", "--out", "{out}"],
    "backtest --events, a folder": ["backtest", "--events", "{folder}", "--out", "{out}"],
    "state seed": ["state", "seed", "--events", "{missing}", "--dry-run"],
    "state decode": ["state", "decode", "{missing}"],
    # a new user's first hour (review): "holiday calendar refused", exit 1
    "calendar export --from": ["calendar", "export", "--years", "2027", "--from", "{missing}"],
    "calendar export --from, a folder": [
        "calendar",
        "export",
        "--years",
        "2027",
        "--from",
        "{folder}",
    ],
}


@pytest.mark.parametrize("argv", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_file_given_that_is_not_there_exits_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.jsonl"
    paths = {"missing": missing, "out": tmp_path / "out", "folder": tmp_path}
    assert main([a.format(**paths) for a in argv]) == 2
    said = capsys.readouterr()
    assert "nope.jsonl" in said.out + said.err or str(tmp_path) in said.out + said.err


RULES_PATH_COMMANDS = {
    "rules test": ["rules", "test", "{missing}", "--events", "{events}"],
    "rules explain --rules": ["rules", "explain", "--rules", "{missing}"],
    "rules diff, the old": ["rules", "diff", "{missing}", CATALOG],
    "rules diff, the new": ["rules", "diff", CATALOG, "{missing}"],
    "backtest --rules": ["backtest", "--events", "{events}", "--rules", "{missing}"],
    "backtest --baseline-rules": [
        "backtest",
        "--events",
        "{events}",
        "--rules",
        CATALOG,
        "--baseline-rules",
        "{missing}",
    ],
    "state seed --rules": ["state", "seed", "--events", "{events}", "--rules", "{missing}"],
}


@pytest.mark.parametrize("argv", RULES_PATH_COMMANDS.values(), ids=RULES_PATH_COMMANDS.keys())
def test_a_rules_path_that_is_not_there_is_not_called_refused_rules(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rules path not there printed `moments: rules refused:`, the heading of a rules
    file read and found wanting: a person looked for the error in their YAML. It says
    the path cannot be read, that the rules were not checked, and the fix."""
    events = tmp_path / "events.jsonl"
    events.write_text("")
    missing = tmp_path / "my-rules"
    paths = {"missing": missing, "events": events}
    assert main([a.format(**paths) for a in argv + ["--dry-run"] * (argv[0] == "state")]) == 2
    err = capsys.readouterr().err
    assert "rules refused" not in err
    assert "moments: cannot read the rules path given (the rules were not checked):" in err
    assert f"{missing}:1:1: cannot read: no such rules file or folder" in err
    assert "give a rules .yaml file or a folder of them" in err


POLICY_COMMANDS = {
    "backtest --policy": ["backtest", "--events", "{events}", "--policy", "{policy}"],
    "rules explain --policy": ["rules", "explain", "--policy", "{policy}", "low_balance"],
    "state seed --policy": ["state", "seed", "--events", "{events}", "--policy", "{policy}"],
}


@pytest.mark.parametrize("argv", POLICY_COMMANDS.values(), ids=POLICY_COMMANDS.keys())
def test_a_policy_found_wanting_exits_1_and_one_not_there_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dispatch policy read and found wanting is an input to fix, 1, as rules refused
    are; it exited 2, the code of a path given wrong, which a policy not there keeps."""
    events = tmp_path / "events.jsonl"
    events.write_text("")
    broken = tmp_path / "policy.yaml"
    broken.write_text("merge: {window: soon}\n")
    extra = ["--dry-run"] * (argv[0] == "state") + ["--out", str(tmp_path / "out")] * (
        argv[0] == "backtest"
    )
    for policy, code in ((broken, 1), (tmp_path / "nope.yaml", 2)):
        paths = {"events": events, "policy": policy}
        assert main([a.format(**paths) for a in argv] + extra) == code, policy
        err = capsys.readouterr().err
        assert str(policy) in err


def test_rules_diff_says_the_exit_codes_it_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user's first hour (review): `moments rules diff --help` said "Exit 0", and a
    candidate catalog with a mistake exited 1 ("rules refused"), a path not there 2: a
    script that trusted the help took either for "no change to report". The help names
    the three, and each is what the command gives."""
    diff = dict(commands(build_parser()))[("rules", "diff")]
    said = " ".join((diff.description or "").split())
    assert "Exit 0 whatever it finds" in said
    assert "1 when the rules of either side are refused" in said
    assert "2 when a path is not there" in said
    changed = tmp_path / "changed.yaml"
    changed.write_text(Path(CATALOG).read_text().replace("threshold: 10}", "threshold: 11}", 1))
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules:\n  - id: Big-Topup\n")
    assert main(["rules", "diff", CATALOG, CATALOG]) == 0
    assert main(["rules", "diff", CATALOG, str(changed)]) == 0
    assert "changed: low_balance" in capsys.readouterr().out
    assert main(["rules", "diff", CATALOG, str(broken)]) == 1
    assert main(["rules", "diff", CATALOG, str(tmp_path / "nope.yaml")]) == 2
