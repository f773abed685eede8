"""The `moments simulate` subcommand: arguments, progress display, and the choice of output."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from moments.simulate import SimStats, limit, produce_stream, simulate, write_jsonl

EXAMPLES = """
    moments simulate --subscribers 1000 --rate 200               # until Ctrl-C
    moments simulate --subscribers 50000 --rate 5000 --duration 600
    moments simulate --subscribers 1000 --rate 100 --duration 3600 --to-file day.jsonl.gz
    moments simulate --subscribers 100 --rate 50 --duration 10 --seed 7 --plant-rate 0.05
"""


def add_simulate_command(sub: Any, make_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Register `simulate` with the CLI's `_parser` helper (keeps cli.py's edit to one line)."""
    p = make_parser(
        sub,
        "simulate",
        "Produce a realistic synthetic stream (profiles first, then mostly usage, fewer "
        "top-ups, rare roaming and complaints, with planted moments) to the input topics of "
        "MOMENTS_KAFKA_BOOTSTRAP, or to a JSON-lines file for `moments rules test`.",
        EXAMPLES,
        _cmd_simulate,
    )
    p.add_argument("--subscribers", type=_positive_int, required=True, metavar="N")
    p.add_argument("--rate", type=_positive_float, required=True, metavar="R", help="events/s")
    p.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        metavar="T",
        help="seconds of traffic after the profiles (default: until Ctrl-C; needed with --to-file)",
    )
    p.add_argument("--seed", type=int, default=None, help="same seed, same stream")
    p.add_argument(
        "--plant-rate",
        type=float,
        default=0.01,
        metavar="SHARE",
        help="share of events that are planted moments (default 0.01)",
    )
    p.add_argument(
        "--to-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="write JSON lines (gzip when PATH ends in .gz) instead of producing",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: write a whole number of 1 or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: write a number above 0")
    return value


def stats_table(stats: SimStats, elapsed_rate: float | None = None) -> Table:
    table = Table(title="moments simulate", show_header=True)
    table.add_column("event type")
    table.add_column("events", justify="right")
    for name, n in sorted(stats.events.items()):
        table.add_row(name, f"{n:,}")
    table.add_row("[bold]planted moments[/]", f"{sum(stats.planted.values()):,}")
    for name, n in sorted(stats.planted.items()):
        table.add_row(f"  {name}", f"{n:,}")
    if elapsed_rate is not None:
        table.caption = f"{elapsed_rate:,.0f} events/s"
    return table


def _cmd_simulate(args: argparse.Namespace) -> int:
    from moments.connections import require_kafka
    from moments.exceptions import ConfigError
    from moments.settings import load_settings

    if not 0 <= args.plant_rate <= 1:
        raise ConfigError("--plant-rate is a share of events: write a number from 0 to 1")
    console = Console(stderr=True)
    events = simulate(args.subscribers, args.rate, seed=args.seed, plant_rate=args.plant_rate)
    count = limit(events, args.rate, args.duration)
    if args.to_file is not None:
        if count is None:
            raise ConfigError("--to-file needs --duration T (seconds of traffic to write)")
        stats = write_jsonl(args.to_file, iter(events), count)
        console.print(stats_table(stats))
        console.print(f"wrote {sum(stats.events.values()):,} events to {args.to_file}")
        return 0
    settings = load_settings()
    require_kafka(settings)  # unreachable or refused: a message naming the variable
    with Live(stats_table(SimStats()), console=console, refresh_per_second=4) as live:

        def show(stats: SimStats) -> None:
            live.update(stats_table(stats))

        stats = asyncio.run(produce_stream(settings, iter(events), args.rate, count, show))
    console.print(f"produced {sum(stats.events.values()):,} events to {settings.kafka_bootstrap}")
    return 0
