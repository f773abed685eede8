"""Building the parser, which `moments --help` and every command do before anything else,
imports none of the libraries the commands run with: together they cost `moments --help`
and every command's start ~0.7 s of CPU when the command modules imported them at their
top. A later top-level import of one of them fails here, without timing anything."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

NOT_FOR_THE_PARSER = (
    "aiokafka",
    "kafka",
    "redis",
    "rich",
    "faust",
    "mode",
    "orjson",
    "pydantic",  # the models: the parser's choices come from moments.enums
    "pydantic_settings",
    "rules",  # the rule language, ruamel.yaml and holidays with it
    "ruamel",
    "holidays",
    "importlib.metadata",  # --version's look-ups, made when it is asked for
)

PROGRAM = textwrap.dedent(
    """
    import argparse, contextlib, importlib.util, io, json, sys
    from moments.cli import build_parser

    def paths(parser, path=()):
        yield path
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from paths(child, (*path, name))

    parser = build_parser()
    for path in paths(parser):  # every --help, as `moments ... --help` prints it
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            parser.parse_args([*path, "--help"])
    loaded = sorted(sys.modules)
    installed = [name for name in sys.argv[1:] if importlib.util.find_spec(name) is not None]
    print(json.dumps({"loaded": loaded, "installed": installed}))
    """
)


@pytest.fixture(scope="module")
def startup() -> dict[str, list[str]]:
    """The modules loaded once the parser was built and every --help printed, and which
    of NOT_FOR_THE_PARSER are installed (in a fresh interpreter: tests here stub some)."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, *NOT_FOR_THE_PARSER],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found: dict[str, list[str]] = json.loads(done.stdout)
    return found


class TestBuildingTheParser:
    """What `moments --help`, `moments check --help` and a command's start import."""

    @pytest.mark.parametrize("name", NOT_FOR_THE_PARSER)
    def test_it_imports_no_client_library_nor_the_rule_language(
        self, startup: dict[str, list[str]], name: str
    ) -> None:
        assert name in startup["installed"], f"{name} is not installed: a stale list"
        assert name not in startup["loaded"], f"building the parser imported {name}"

    def test_it_builds_every_command(self, startup: dict[str, list[str]]) -> None:
        """The command modules are loaded, so what they import was looked at above."""
        for group in ("rules", "tasks", "bench", "simulate", "backtest", "state", "deadletter"):
            assert f"moments.{group}_cli" in startup["loaded"]
        assert "moments.events_cli" in startup["loaded"]
