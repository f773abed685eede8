"""A command's files or ids written on both sides of an option are all taken, as in most
command-line tools: `moments rules validate a.yaml --together b.yaml` was refused
"unrecognized arguments: b.yaml" (argparse takes a list of positionals in one run), and
`moments rules explain my-rules/ --policy p.yaml big_recharge` the same of its rule id,
though each is a form the command's own help shows with the option elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

RULE = """rules:
  - id: {id}
    description: A top-up of 200 yuan or more
    on: [topup]
    condition: {{field: amount, gte: 200}}
    task: {{family: anomaly, type: {id}, channel: sms, priority: 4, action: thank_you,
           ttl: 1d, description: "Thanks for your top-up of {{amount}}"}}
"""


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(RULE.format(id="big_a"))
    second.write_text(RULE.format(id="big_a"))  # the same id: refused only --together
    return first, second


def test_validate_takes_paths_after_together(
    two: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = two
    assert main(["rules", "validate", str(first), "--together", str(second)]) == 1
    assert "duplicate rule id 'big_a'" in capsys.readouterr().out


def test_explain_takes_the_rule_after_policy(
    two: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = two
    policy = tmp_path / "policy.yaml"
    policy.write_text("merge:\n  window: 10m\n")
    assert main(["rules", "explain", str(first), "--policy", str(policy), "big_a"]) == 0
    assert "big_a (version 1)" in capsys.readouterr().out


def test_an_extra_option_is_still_refused_with_its_close_spelling(
    two: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = two
    with pytest.raises(SystemExit) as exit_:
        main(["rules", "validate", str(first), "--togther", str(second)])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--togther: did you mean --together?" in err
