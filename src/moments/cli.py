"""The `moments` command line. Every subcommand has --help with examples."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from textwrap import dedent

from moments.exceptions import ConfigError
from moments.settings import Settings, load_settings
from rules.exceptions import RulesError

Handler = Callable[[argparse.Namespace], int]


def _parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_: str,
    examples: str,
    handler: Handler,
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_,
        description=help_,
        epilog="examples:\n" + dedent(examples).strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=handler, command_parser=p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = _parser(
        sub,
        "run",
        "Run everything on this machine: Tansu broker, redis-server, a "
        "worker and a sample stream; print tasks as they arrive; Ctrl-C stops it all.",
        """
                  moments run
                  moments run --json               # tasks as JSON lines
                  moments run --no-sample          # wait for your own events instead
                  moments run --metrics-port 9400
                """,
        _cmd_run,
    )
    p.add_argument("--json", action="store_true", help="print each task as one JSON line")
    p.add_argument("--no-sample", action="store_true", help="do not play the sample stream")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of /metrics (default MOMENTS_METRICS_PORT or 9308)",
    )
    p.add_argument(
        "--exit-after",
        type=int,
        default=None,
        metavar="N",
        help="stop after N tasks were printed (for scripts and tests)",
    )

    p = _parser(
        sub,
        "worker",
        "Start one detector worker. Arguments after -- go to Faust's worker command.",
        """
                  MOMENTS_KAFKA_BOOTSTRAP=kafka1:9092 MOMENTS_REDIS_URL=redis://redis:6379/0 \\
                    moments worker
                  moments worker -- --loglevel debug
                """,
        _cmd_worker,
    )
    p.add_argument("faust_args", nargs=argparse.REMAINDER, help="options for `faust worker`")

    p = _parser(
        sub,
        "rules",
        "Rules tooling.",
        """
                  moments rules validate rules/default.yaml my-rules/
                """,
        _no_subcommand,
    )
    rules_sub = p.add_subparsers(title="rules commands", metavar="COMMAND")
    v = _parser(
        rules_sub,
        "validate",
        "Exit 0 when every rules file is valid; otherwise print "
        "file:line:column: message for each error and exit 1.",
        """
                  moments rules validate my-rules.yaml
                  moments rules validate rules/      # every .yaml in the folder
                """,
        _cmd_rules_validate,
    )
    v.add_argument("paths", nargs="+", type=Path, metavar="PATH")

    p = _parser(
        sub,
        "schemas",
        "JSON Schema and AsyncAPI documents of the contract.",
        """
                  moments schemas export
                  moments schemas export --check    # exit 1 when schemas/ is stale
                """,
        _no_subcommand,
    )
    schemas_sub = p.add_subparsers(title="schemas commands", metavar="COMMAND")
    e = _parser(
        schemas_sub,
        "export",
        "Write schemas/ from the pydantic models.",
        """
                  moments schemas export --out schemas/
                  moments schemas export --check
                """,
        _cmd_schemas_export,
    )
    e.add_argument("--out", type=Path, default=Path("schemas"), help="folder (default schemas/)")
    e.add_argument("--check", action="store_true", help="only check; exit 1 when stale")

    p = _parser(
        sub,
        "tasks",
        "Reference dispatch consumer tools.",
        """
                  moments tasks tail
                  moments tasks tail --json --from-beginning
                """,
        _no_subcommand,
    )
    tasks_sub = p.add_subparsers(title="tasks commands", metavar="COMMAND")
    t = _parser(
        tasks_sub,
        "tail",
        "Follow the dispatch topic and print each task.",
        """
                  moments tasks tail
                  moments tasks tail --json | jq .moment.type
                """,
        _cmd_tasks_tail,
    )
    t.add_argument("--json", action="store_true", help="one JSON line per task")
    t.add_argument("--from-beginning", action="store_true", help="start at the oldest task")
    t.add_argument("--exit-after", type=int, default=None, metavar="N", help="stop after N tasks")

    b = _parser(
        sub,
        "bench",
        "Measure the detector against a raw aiokafka consumer on the same events, in one "
        "run, and print both rates and their ratio (embedded broker and Redis unless "
        "MOMENTS_KAFKA_BOOTSTRAP / MOMENTS_REDIS_URL are set).",
        """
                  moments bench                          # 200k events, 20k subscribers
                  moments bench --events 50000 --subscribers 5000
                  MOMENTS_RULES=my-rules/ moments bench  # the cost of your own catalog
                """,
        _cmd_bench,
    )
    b.add_argument("--events", type=int, default=200_000, help="events to produce")
    b.add_argument("--subscribers", type=int, default=20_000, help="distinct subscribers")
    b.add_argument("--partitions", type=int, default=4, help="partitions per topic")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 2
    except RulesError as exc:
        print(f"moments: rules refused:\n{exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _no_subcommand(args: argparse.Namespace) -> int:
    args.command_parser.print_help()
    return 2


def _settings() -> Settings:
    return load_settings()


def _cmd_worker(args: argparse.Namespace) -> int:
    from moments.worker import run_worker

    extra = [a for a in args.faust_args if a != "--"]
    run_worker(_settings(), extra)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from moments.embedded_run import run_embedded

    return run_embedded(
        json_lines=args.json,
        play_sample=not args.no_sample,
        metrics_port=args.metrics_port,
        exit_after=args.exit_after,
    )


def _cmd_rules_validate(args: argparse.Namespace) -> int:
    from rules.catalog import load_rules

    failed = False
    for path in args.paths:
        try:
            rules = load_rules(path)
        except RulesError as exc:
            failed = True
            for problem in exc.problems:
                print(problem)
            continue
        print(f"{path}: {len(rules)} rule(s) OK")
    return 1 if failed else 0


def _cmd_schemas_export(args: argparse.Namespace) -> int:
    from moments.schemas import check_schemas, export_schemas

    if args.check:
        stale = check_schemas(args.out)
        for name in stale:
            print(f"{args.out / name}: stale; run `moments schemas export`")
        return 1 if stale else 0
    for path in export_schemas(args.out):
        print(f"wrote {path}")
    return 0


def _cmd_tasks_tail(args: argparse.Namespace) -> int:
    import asyncio

    from moments.tail import tail_tasks

    settings = _settings()
    asyncio.run(
        tail_tasks(
            settings,
            json_lines=args.json,
            from_beginning=args.from_beginning,
            exit_after=args.exit_after,
        )
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from moments.bench import run_bench

    return run_bench(args.events, args.subscribers, args.partitions)


if __name__ == "__main__":
    sys.exit(main())
