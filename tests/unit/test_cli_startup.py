"""What a command imports before it does anything, checked in a fresh interpreter without
timing anything. Building the parser, which `moments --help` and every command do first,
imports none of the libraries the commands run with (together ~0.7 s of CPU when the
command modules imported them at their top); `config show` does not import redis-py for
a Redis URL without options, a worker does not import rich, and `rules validate` neither
the holiday package nor the detector's task making (docs/performance.md, "Command
start-up"). A later top-level import of one of them fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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


SHOW_CONFIG = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from moments.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["config", "show"])
    print(json.dumps({"code": code, "loaded": sorted(sys.modules)}))
    """
)


def _config_show(redis_url: str, where: Path) -> tuple[int, list[str]]:
    """`moments config show` in a fresh interpreter, in the folder `where` (no .env), with
    MOMENTS_REDIS_URL=`redis_url`: its exit code and the modules loaded once it was done."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    done = subprocess.run(
        [sys.executable, "-c", SHOW_CONFIG],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=where,
        env={**env, "MOMENTS_REDIS_URL": redis_url},
    )
    found = json.loads(done.stdout)
    return int(found["code"]), [str(name) for name in found["loaded"]]


class TestLoadingTheSettings:
    """`moments config show`, and every command that reads MOMENTS_* before it connects:
    checking MOMENTS_REDIS_URL needs redis-py (~0.1 s of CPU) only for the options in its
    query, which redis-py reads its own way."""

    def test_a_url_without_options_does_not_import_redis(self, tmp_path: Path) -> None:
        code, loaded = _config_show("redis://127.0.0.1:6379/0", tmp_path)
        assert code == 0
        assert "redis" not in loaded, "checking a URL with no ?option= imported redis"

    def test_a_url_with_options_is_still_checked_by_redis_py(self, tmp_path: Path) -> None:
        """The options are read as redis-py reads them: the check has not been skipped."""
        code, loaded = _config_show("redis://127.0.0.1:6379/0?socket_timeout=5", tmp_path)
        assert code == 0
        assert "redis.asyncio.connection" in loaded


class TestStartingAWorker:
    """`moments worker` (and the ~80 workers the suite starts) imports what a worker runs
    with, and not what only the inspection commands draw with: rich (~0.1 s of CPU), for
    the progress bars of `state show` and `deadletter`."""

    def test_importing_the_worker_does_not_import_rich(self) -> None:
        program = "import json, sys, moments.worker; print(json.dumps(sorted(sys.modules)))"
        done = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
        )
        loaded: list[str] = json.loads(done.stdout)
        assert "faust" in loaded, "the worker's own library: the import ran"
        assert "rich" not in loaded, "importing moments.worker imported rich"


VALIDATE = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from moments.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["rules", "validate", sys.argv[1]])
    print(json.dumps({"code": code, "loaded": sorted(sys.modules)}))
    """
)


@pytest.fixture(scope="module")
def validated() -> list[str]:
    """The modules loaded once `moments rules validate` checked the packaged catalog, in a
    fresh interpreter."""
    import rules

    catalog = Path(rules.__file__).parent / "catalog"
    done = subprocess.run(
        [sys.executable, "-c", VALIDATE, str(catalog)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found = json.loads(done.stdout)
    assert found["code"] == 0, "the packaged catalog is valid"
    return [str(name) for name in found["loaded"]]


class TestValidatingRules:
    """`moments rules validate` loads the rule language, and not what only a worker runs
    with: the holiday package (~0.05 s of CPU; the packaged catalog's rules make no
    calendar to check) nor the detector's task making."""

    def test_it_loads_the_rule_language(self, validated: list[str]) -> None:
        assert "rules.catalog" in validated

    @pytest.mark.parametrize("name", ["holidays", "moments.taskmaking", "moments.batchresult"])
    def test_it_does_not_import_what_a_worker_runs_with(
        self, validated: list[str], name: str
    ) -> None:
        assert name not in validated, f"moments rules validate imported {name}"
