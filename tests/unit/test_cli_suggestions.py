"""A command, or an option's value, that is none of the choices is told what it may have
meant. `moments rules check` (`moments check` and `events check` are checks) was told
only "invalid choice: 'check' (choose from 'validate', 'explain', 'diff', 'test')", and
`moments validate rules/` the list of every top-level command."""

from __future__ import annotations

import pytest

from moments.cli import build_parser, main

from .test_cli_help import commands


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What `moments ARGV` says on stderr as it exits 2 (argparse's usage error)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    return " ".join(err.split())


@pytest.mark.parametrize(
    ("argv", "typed", "meant"),
    [
        # a word for the same
        (["rules", "check", "rules/"], "check", "`moments rules validate`"),
        (["events", "validate", "e.jsonl"], "validate", "`moments events check`"),
        (["state", "list"], "list", "`moments state show`"),
        (["deadletter", "list"], "list", "`moments deadletter show`"),
        # a close spelling
        (["rules", "valdiate", "rules/"], "valdiate", "`moments rules validate`"),
        (["rule", "validate"], "rule", "`moments rules`"),
        (["backtests"], "backtests", "`moments backtest`"),
        (["tasks", "tial"], "tial", "`moments tasks tail`"),
        # a command one level down, named without its group
        (["tail"], "tail", "`moments tasks tail`"),
        (["seed"], "seed", "`moments state seed`"),
        (["replay"], "replay", "`moments deadletter replay`"),
        (["validate", "rules/"], "validate", "`moments rules validate` or `moments check`"),
        (["export"], "export", "`moments calendar export` or `moments schemas export`"),
        # a new user's first hour (review): the name other tools give (the dead letters'
        # own headers are `__dlq.errors.*`), an option typed as a command, a probe's word
        (["dlq", "show"], "dlq", "`moments deadletter`"),
        (["version"], "version", "`moments --version`"),
        (["help"], "help", "`moments --help`"),
        (["rules", "help"], "help", "`moments rules --help`"),
        (["status"], "status", "`moments check` or `moments state`"),
        (["health"], "health", "`moments check`"),
    ],
)
def test_a_command_that_is_none_is_told_the_one_it_may_mean(
    argv: list[str], typed: str, meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    said = refused(argv, capsys)
    assert f"invalid choice: {typed!r}; did you mean {meant}? (choose from " in said


def test_an_options_value_gets_a_close_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    said = refused(["events", "check", "--type", "topups", "e.jsonl"], capsys)
    assert "argument --type: invalid choice: 'topups'; did you mean 'topup'?" in said


@pytest.mark.parametrize(
    ("argv", "typed", "meant"),
    [
        (
            ["tasks", "ack", "a" * 32, "--status", "DONE_NO_CHANGE"],
            "DONE_NO_CHANGE",
            "done_no_change",
        ),
        (["tasks", "ack", "a" * 32, "--status", "Declined"], "Declined", "declined"),
        (["events", "check", "--type", "USAGE", "e.jsonl"], "USAGE", "usage"),
    ],
)
def test_a_value_written_in_other_case_is_told_its_spelling(
    argv: list[str], typed: str, meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dispatch consumer's `tasks ack --status DONE_NO_CHANGE` (its dialer's spelling)
    was given the list alone: difflib compares case, and found nothing close. The worker
    tells such an outcome "write 'done_no_change' exactly"; the command now says it too."""
    said = refused(argv, capsys)
    assert f"invalid choice: {typed!r}; did you mean {meant!r}?" in said


@pytest.mark.parametrize(
    "argv", [["frobnicate"], ["rules", "zzz"], ["events", "check", "--type", "zzz", "e.jsonl"]]
)
def test_nothing_close_is_the_list_alone(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    said = refused(argv, capsys)
    typed = "frobnicate" if argv == ["frobnicate"] else "zzz"
    assert f"invalid choice: {typed!r} (choose from " in said
    assert "did you mean" not in said


def test_every_commands_parser_is_of_the_suggesting_class() -> None:
    """argparse makes a command's parser of its parent's class: the commands' modules
    add theirs with `add_subparsers`, and each refuses a name with suggestions."""
    from moments.cliparts import Parser

    found = list(commands(build_parser()))
    assert len(found) > 20
    for path, parser in found:
        assert isinstance(parser, Parser), path


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["backtest", "--events", "e.jsonl", "--form", "2026-12-01"],
            "moments backtest: error: unrecognized arguments: --form 2026-12-01; --form: "
            "did you mean --from?",
        ),
        (
            ["events", "check", "--tpye=topup", "e.jsonl"],
            "moments events check: error: unrecognized arguments: --tpye=topup; --tpye: "
            "did you mean --type?",
        ),
    ],
)
def test_an_option_that_is_none_is_told_the_commands_close_one(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Told by `moments` itself, under its usage: "moments: error: unrecognized
    arguments: --form 2026-12-01"."""
    assert said in refused(argv, capsys)


def test_an_extra_argument_with_nothing_close_is_said_as_before(
    capsys: pytest.CaptureFixture[str],
) -> None:
    said = refused(["schemas", "export", "--zzz", "extra"], capsys)
    assert "moments schemas export: error: unrecognized arguments: --zzz extra" in said
    assert "did you mean" not in said
