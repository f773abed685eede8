"""The `moments` command line. Every subcommand has --help with examples.

Here: the parser, `main`, and the small commands (run, worker, check, calendar, schemas,
config); each bigger group has a module of its own (`rules_cli`, `tasks_cli`, `bench_cli`,
`simulate_cli`, `backtest_cli`, `state_cli`, `deadletter_cli`, `events_cli`), built with
the helpers of `cliparts`. A command imports what it runs with (Kafka and Redis clients,
rich, the rule language) when it runs, not at the top of its module: the whole parser is
built before every command (tests/unit/test_cli_startup.py)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from textwrap import dedent
from typing import TYPE_CHECKING, Any

from moments.backtest_cli import add_backtest_command
from moments.bench_cli import add_bench_command
from moments.cliparts import (
    Handler,
    Parser,
    add_command,
    add_group,
    command_settings,
    port_or_off,
    positive_int,
    shown,
    unrecognized,
)
from moments.deadletter_cli import add_deadletter_command
from moments.events_cli import add_events_command
from moments.exceptions import ConfigError, InputRefusedError, MomentsError
from moments.logmask import install_pii_masking
from moments.logthrottle import install_log_throttle
from moments.rules_cli import add_rules_command
from moments.simulate_cli import add_simulate_command
from moments.state_cli import add_state_command
from moments.tasks_cli import add_tasks_command

if TYPE_CHECKING:
    from moments.cliparts import Subparsers


def version_line() -> str:
    """`moments --version`: this package and what it runs on (what a bug report needs)."""
    import platform

    from moments.buildinfo import versions

    found = versions()
    others = ", ".join(f"{name} {found[name]}" for name in ("faust-streaming", "aiokafka", "redis"))
    return f"moments {found['moments']} (Python {platform.python_version()}; {others})"


class _VersionLine(argparse._VersionAction):
    """`--version`, its line made when asked: the package metadata it reads (~40 ms of
    CPU) was read at every command's start."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        self.version = version_line()
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="moments",
        description="Streaming key-moment detector: telecom events in, service tasks out.",
        epilog=dedent("""\
            examples:
              moments run                      # embedded broker + Redis + worker + sample stream
              moments worker                   # one worker against MOMENTS_KAFKA_BOOTSTRAP
              moments rules validate rules/    # check rules files before deploying them
              moments tasks tail --json        # follow the dispatch topic
              moments schemas export           # regenerate schemas/ from the models

            Configuration comes from MOMENTS_* environment variables (see README)."""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionLine)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in (
        _add_run_command,
        _add_worker_command,
        _add_check_command,
        add_rules_command,
        _add_calendar_command,
        _add_schemas_command,
        add_tasks_command,
        add_bench_command,
        _add_config_command,
        add_simulate_command,
        add_backtest_command,
        add_state_command,
        add_deadletter_command,
        add_events_command,
    ):
        add(sub)
    return parser


def intermixed(
    command: argparse.ArgumentParser, argv: list[str], extras: list[str]
) -> argparse.Namespace | None:
    """The command's arguments read again with its positionals on both sides of its options
    (`rules validate a.yaml --together b.yaml`), where argparse took the first run of them
    alone and left the rest over; None where something else was left over (an option that
    is none of the command's, said with its close spelling)."""
    if any(extra.startswith("-") for extra in extras):
        return None
    words = len(command.prog.split()) - 1  # `moments rules validate`: argv's first two
    try:
        again, left = command.parse_known_intermixed_args(argv[words:])
    except TypeError:  # a parser argparse cannot read so (none of the commands')
        return None
    return None if left else again


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # said by the command given, with its usage and the options it has
        command: argparse.ArgumentParser = getattr(args, "command_parser", parser)
        again = intermixed(command, list(sys.argv[1:] if argv is None else argv), extras)
        if again is None:
            command.error(unrecognized(extras, command))
        vars(args).update(vars(again))
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kafka-python (the readiness probe) logs each connection it makes at INFO: ~20 lines
    # in the middle of `moments run` and `moments bench` output. Its warnings still show.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # matplotlib says at INFO that it built its font cache, on a machine's first backtest
    # chart: a line from a library in the middle of the report.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_level = aiokafka_log.level
    if handler is not _cmd_worker:  # a tool's output, not aiokafka's "Updating subscribed"
        aiokafka_log.setLevel(logging.WARNING)
    install_pii_masking()  # subscriber numbers masked in every log line (MOMENTS_LOG_PII)
    install_log_throttle()  # a broker outage: each client error once per 30 s, with a count
    try:
        return handler(args)
    except BrokenPipeError:  # `moments ... | head`: the reader has seen enough
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    except ConfigError as exc:
        _refused(f"moments: {exc}")
        # A file read and found wanting (a dispatch policy) is 1, as rules refused; a
        # worker refused its policy exited 2 and its rules 1 (README, exit codes).
        return 1 if isinstance(exc, InputRefusedError) else 2
    except MomentsError as exc:
        # Not `except RulesError`: that import is the whole rule language (~0.2 s), paid
        # by every command; a RulesError raised has imported it already.
        from rules.calendar import CalendarError
        from rules.exceptions import RulesError, RulesPathError

        if not isinstance(exc, RulesError):
            raise

        if isinstance(exc, RulesPathError):  # a path given wrong: set-up, exit 2
            # Not "rules refused", the heading of a file read and found wanting: with it,
            # people looked for the error in their YAML.
            _refused(
                f"moments: cannot read the rules path given (the rules were not checked):\n{exc}"
            )
            return 2
        what = "holiday calendar" if isinstance(exc, CalendarError) else "rules"
        _refused(f"moments: {what} refused:\n{exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        aiokafka_log.setLevel(aiokafka_level)  # main() called again (tests) starts afresh


def _refused(message: str) -> None:
    """Why a command stops, on stderr; one JSON record where the log is JSON
    (`MOMENTS_LOG_FORMAT=json`, set up by a worker), which a log collector keeps as one
    entry: as plain lines, the problem under `moments: rules refused:` was an entry of its
    own, with neither the worker's name nor the level."""
    from moments.logformat import CleanJsonFormatter

    handlers = logging.getLogger().handlers
    if any(isinstance(h.formatter, CleanJsonFormatter) for h in handlers):
        logging.getLogger("moments").error("%s", message)
    else:
        print(message, file=sys.stderr)


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (`inf` hung `moments check`; 0 and `nan`
    gave a verdict about a broker nobody had asked)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"{shown(text)}: give seconds above 0 and below 3600")
    return value


def _add_worker_command(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "worker",
        "Start one detector worker. Arguments after -- go to Faust's worker command.",
        """
                  MOMENTS_KAFKA_BOOTSTRAP=kafka1:9092 MOMENTS_REDIS_URL=redis://redis:6379/0 \\
                    moments worker
                  moments worker -- --loglevel debug
                  MOMENTS_KAFKA_SECURITY_PROTOCOL=SASL_SSL MOMENTS_KAFKA_SASL_USERNAME=svc \\
                    MOMENTS_KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka moments worker
                """,
        _cmd_worker,
    )
    p.add_argument("faust_args", nargs=argparse.REMAINDER, help="options for `faust worker`")
    from moments.stopdeadline import STOP_OVERDUE_EXIT

    # What `kubectl describe pod` or `systemctl status` shows of a stopped worker.
    p.epilog = f"""{p.epilog}

exit codes:
  0   stopped by SIGTERM (the log warns if the broker did not take the last commit)
  1   the rules or the dispatch policy refused at start, read and found wanting
      (each problem as file:line:column), or an error waiting cannot fix; the log's
      last lines name it (docs/operations.md, "The worker stops: not an outage")
  2   a setting refused, a rules or policy path that is not there, or topics it
      cannot run with; the last line names the variable, path or topic and the fix
  {STOP_OVERDUE_EXIT}  still running MOMENTS_STOP_GRACE_SECONDS after SIGTERM, its event loop stuck;
      the log says where (docs/operations.md, MomentsWorkerStalled)"""


def _cmd_worker(args: argparse.Namespace) -> int:
    from moments.settings import log_format_asked
    from moments.worker import run_worker

    extra = [a for a in args.faust_args if a != "--"]
    if log_format_asked() == "json":
        # Before the settings are read, not only when they are refused: a bad value (the
        # commonest reason a worker stops at start) and an exception nothing catches while
        # they are read are then one JSON record each, as the rest of the worker's log.
        from moments.logformat import use_json_logs

        use_json_logs()
    run_worker(command_settings(), extra)
    return 0


def _add_check_command(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "check",
        "Check what a worker checks before it starts, with its settings and credentials: "
        "settings' names, rules, dispatch policy, data directory, Kafka (login, topics, "
        "idempotent producer), Redis (login, rights, eviction policy). Joins no consumer "
        "group. Exit 0 when nothing failed (a warn row included), 2 otherwise.",
        """
                  moments check
                  kubectl -n moments exec moments-worker-0 -- moments check
                  docker compose exec detector-1 moments check
                  MOMENTS_REDIS_URL=redis://redis-2:6379/0 moments check
                """,
        _cmd_check,
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds per connection (10; a producer's start may take twice that)",
    )


def _cmd_check(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from moments.check import Verdict, run_checks

    findings = asyncio.run(run_checks(command_settings(), args.timeout))
    table = Table(show_header=True, header_style="bold")
    for column in ("step", "", "detail"):
        # fold: a long word (a rules file's path:line:column) goes on over lines, not cut
        table.add_column(column, overflow="fold")
    style = {Verdict.OK: "green", Verdict.WARN: "yellow", Verdict.FAIL: "bold red"}
    for f in findings:
        verdict = Text(f.verdict.value, style=style[f.verdict])
        table.add_row(Text(f.step), verdict, Text(f.detail))  # Text: no markup from a message
    Console().print(table)
    return 2 if any(f.verdict is Verdict.FAIL for f in findings) else 0


def _add_run_command(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "run",
        "Run everything on this machine: Tansu broker, redis-server, a "
        "worker and a sample stream; print tasks as they arrive; Ctrl-C (or SIGTERM) stops "
        "it all.",
        """
                  moments run
                  moments run --json               # tasks as JSON lines
                  moments run --no-sample          # wait for your own events instead
                  moments run --metrics-port 9400
                """,
        _cmd_run,
    )
    p.add_argument("--json", action="store_true", help="print each task as one JSON line")
    p.add_argument(
        "--no-sample",
        action="store_true",
        help="do not play the sample stream: wait for your own events (a `ready:` line says "
        "when the worker reads them)",
    )
    p.add_argument(
        "--metrics-port",
        type=port_or_off,
        default=None,
        help="port of /metrics (default MOMENTS_METRICS_PORT or 9308)",
    )
    p.add_argument(
        "--exit-after",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after N tasks were printed (for scripts and tests)",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from moments.embedded_run import run_embedded

    return run_embedded(
        json_lines=args.json,
        play_sample=not args.no_sample,
        metrics_port=args.metrics_port,
        exit_after=args.exit_after,
    )


def _add_calendar_command(sub: Subparsers) -> None:
    calendar_sub = add_group(
        sub,
        "calendar",
        "The holiday calendar special-day rules use.",
        """
                  moments calendar export --years 2026-2028
                """,
    )
    _add_calendar_export(calendar_sub)


def _add_calendar_export(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "export",
        "Print (or write) the effective holiday calendar for some years as an operator "
        "calendar file: China's greeting days, lunar festivals included, or those of --from.",
        """
                  moments calendar export --years 2026-2028
                  moments calendar export --years 2027 --from my-calendar.yaml --out holidays.yaml
                """,
        _cmd_calendar_export,
    )
    p.add_argument("--years", required=True, help="YYYY or YYYY-YYYY")
    p.add_argument(
        "--from", dest="source", type=Path, default=None, help="an operator calendar file"
    )
    p.add_argument("--out", type=Path, default=None, help="write to this file instead of printing")


def _cmd_calendar_export(args: argparse.Namespace) -> int:
    from rules.calendar import export_calendar, gaps_said, load_calendar, parse_years

    try:
        years = parse_years(args.years)
    except ValueError as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 2
    if (source := args.source) is not None and (not source.exists() or source.is_dir()):
        # A path given wrong is set-up, 2, as for every command (README, exit codes): it
        # was "holiday calendar refused", 1, the heading of a file read and found wanting.
        said = (
            "a folder; --from takes one operator calendar file (.yaml)"
            if source.is_dir()
            else f"no such calendar file (a path from {Path.cwd()}); check the path, or "
            "leave --from out for China's greeting days"
        )
        print(f"moments: --from {source}: {said}", file=sys.stderr)
        return 2
    calendar = load_calendar(source)
    text = export_calendar(calendar, years)
    if missing := calendar.missing(calendar.package_keys, years):
        # The file says `defaults: false`: loaded, it would leave those years with no day.
        said = gaps_said(missing, calendar.package_keys)
        print(
            f"moments: warning: the calendar written has {said}: add those years' days to "
            "it (`dates:`) before loading it",
            file=sys.stderr,
        )
    if args.out is None:
        print(text, end="")
        return 0
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:  # a folder that does not exist, no permission: said, no traceback
        print(f"moments: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2  # a path given wrong: set-up (README, exit codes)
    print(f"wrote {args.out}")
    return 0


def _add_schemas_command(sub: Subparsers) -> None:
    schemas_sub = add_group(
        sub,
        "schemas",
        "JSON Schema and AsyncAPI documents of the contract.",
        """
                  moments schemas export
                  moments schemas export --check    # exit 1 when schemas/ is not up to date
                """,
    )
    _add_schemas_export(schemas_sub)


def _add_schemas_export(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "export",
        "Write schemas/ from the pydantic models.",
        """
                  moments schemas export --out schemas/
                  moments schemas export --check
                """,
        _cmd_schemas_export,
    )
    p.add_argument("--out", type=Path, default=Path("schemas"), help="folder (default schemas/)")
    p.add_argument(
        "--check", action="store_true", help="only check; exit 1 when missing or out of date"
    )


def _cmd_schemas_export(args: argparse.Namespace) -> int:
    from moments.schemas import export_schemas, schema_problems

    if args.check:
        problems = schema_problems(args.out)
        export = "moments schemas export" + (
            "" if args.out == Path("schemas") else f" --out {shlex.quote(str(args.out))}"
        )
        if problems and not args.out.is_dir():
            print(
                f"{args.out}: missing (no such folder): run the check in the repository's "
                f"root, or give the folder with --out DIR; `{export}` writes it"
            )
            return 1
        for name, what in problems:
            print(f"{args.out / name}: {what}; run `{export}`")
        return 1 if problems else 0
    for path in export_schemas(args.out):
        print(f"wrote {path}")
    return 0


def _add_config_command(sub: Subparsers) -> None:
    config_sub = add_group(
        sub,
        "config",
        "Configuration tools.",
        """
                  moments config show
                """,
    )
    _add_config_show(config_sub)


def _add_config_show(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "show",
        "Print every setting with its effective value and where it came from "
        "(environment, a *_FILE file, .env, or default); secrets are masked.",
        """
                  moments config show
                  MOMENTS_KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka moments config show
                  moments config show --json | jq '.[] | select(.source != "default")'
                """,
        _cmd_config_show,
    )
    p.add_argument("--json", action="store_true", help="a JSON list of {variable, value, source}")


def _cmd_config_show(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from moments.config_view import effective_config, format_lines
    from moments.settings import dotenv_variables, unknown_variables

    lines = effective_config(command_settings())
    if args.json:
        print(json.dumps([dataclasses.asdict(line) for line in lines], indent=2))
    else:
        print(format_lines(lines))
    for warning in unknown_variables(os.environ, dotenv_variables()):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
