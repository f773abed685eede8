"""The `moments simulate` subcommand: arguments, progress display, and the choice of output."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moments.cliparts import (
    add_command,
    command_settings,
    positive_float,
    positive_int,
    shown,
    stderr_console,
    whole,
)
from moments.filenames import is_csv
from moments.progresslines import PROGRESS_EVERY_S

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

    from moments.cliparts import Subparsers
    from moments.settings import Settings
    from moments.simulate import SimEvent, SimStats

EXAMPLES = """
    moments simulate --subscribers 1000 --rate 200               # until Ctrl-C
    moments simulate --subscribers 50000 --rate 5000 --duration 600
    moments simulate --subscribers 500 --rate 0.3 --duration 2d --to-file days.jsonl.gz
    moments simulate --subscribers 100 --rate 50 --duration 10 --seed 7 --plant-rate 0.05
    moments simulate --subscribers 500 --rate 0.2 --duration 1w --seed 3 --start 2026-01-05 \\
        --to-file week.jsonl.gz                                  # the same file on any day
"""


def add_simulate_command(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "simulate",
        "Produce a realistic synthetic stream (profiles first, then mostly usage, fewer "
        "top-ups, rare roaming and complaints, with planted moments) to the input topics of "
        "MOMENTS_KAFKA_BOOTSTRAP, or to a JSON-lines file for `moments rules test`.",
        EXAMPLES,
        _cmd_simulate,
    )
    # --rate is checked by the command, to answer its absence with a rate that fits the
    # subscribers; the usage line still says it is needed.
    p.usage = (
        "%(prog)s [-h] --subscribers N --rate R [--duration T] [--seed SEED]\n"
        "       [--start WHEN] [--plant-rate SHARE] [--to-file PATH]"
    )
    p.add_argument(
        "--subscribers",
        type=positive_int,
        required=True,
        metavar="N",
        help="distinct subscribers, each sent a profile before their other events",
    )
    p.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        metavar="R",
        help="events a second, all subscribers together, of event time with --to-file "
        "(required; 0.83 for 2,000 subscribers is about 36 events each a day)",
    )
    p.add_argument(
        "--duration",
        type=_seconds,
        default=None,
        metavar="T",
        help="traffic after the profiles, in seconds or as a duration (2d, 3w) (default: "
        "until Ctrl-C; needed with --to-file)",
    )
    p.add_argument("--seed", type=_seed, default=None, help="same seed, same stream")
    p.add_argument(
        "--start",
        default=None,
        metavar="WHEN",
        help="event time of the first event: a date (2026-01-05: midnight in Asia/Shanghai) "
        "or RFC 3339 with its offset (default: now); with --seed, the same events on any day",
    )
    p.add_argument(
        "--plant-rate",
        type=_share,
        default=0.01,
        metavar="SHARE",
        help="share of events that are planted moments (default 0.01)",
    )
    p.add_argument(
        "--to-file",
        type=str,  # as written: a Path drops the slash that says a folder was meant
        default=None,
        metavar="PATH",
        help="write JSON lines (gzip when PATH ends in .gz) instead of producing",
    )


EVENTS_A_SUBSCRIBER_A_DAY = 36
"""What the README's history gives each subscriber: 2,000 at --rate 0.83."""


def _file_to_write(written: str) -> Path:
    """The path of `--to-file`; ConfigError for a folder (`out/` was written to a file
    named `out`, an existing folder told "Is a directory"), naming a file in it."""
    from moments.exceptions import ConfigError

    path = Path(written)
    if written.endswith(("/", os.sep)) or path.is_dir():
        raise ConfigError(
            f"--to-file {written} names a folder: name the file to write in it, e.g. "
            f"{path / 'events.jsonl.gz'}"
        )
    return path


def missing_rate(subscribers: int) -> str:
    """The message for `simulate` without `--rate`, with the rate that gives these
    subscribers as many events each as the README's history: an analyst told only that
    `--rate` is required had no idea whether 0.1 or 1000 made a history."""
    rate = float(f"{subscribers * EVENTS_A_SUBSCRIBER_A_DAY / 86400:.2g}")
    return (
        "--rate R is needed: events a second, all subscribers together (of event time with "
        f"--to-file); --rate {rate:g} gives {subscribers:,} subscribers about "
        f"{EVENTS_A_SUBSCRIBER_A_DAY} events each a day, as the README's history "
        "(2,000 at 0.83)"
    )


DURATION_RANGE = "above 0 and at most 36500d (100 years)"
"""The `--duration` taken: as a rules file's durations (`rules.durations.MAX_DAYS`)."""


def _seconds(text: str) -> float:
    """`3600` or a duration as rules files write it (`1h`, `2d`, `3w`), in seconds, within
    `DURATION_RANGE`; a value outside it is refused quoted and cut short (`shown`)."""
    import math

    from rules.durations import MAX_DAYS, parse_duration

    fix = f"write seconds (3600) or a duration (1h, 2d, 3w), {DURATION_RANGE}"
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text).total_seconds()
        except ValueError as exc:
            hint = str(exc).partition("; ")[2]  # `write 2d` for `2 days`, as in a rules file
            # The form and "a shorter duration" are said better by `fix`: seconds too
            if hint.startswith("write ") and not hint.startswith(
                ("write a number and a unit", "write a shorter duration")
            ):
                fix = hint
            raise argparse.ArgumentTypeError(f"{shown(text)}: {fix}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_DAYS * 86400):
        raise argparse.ArgumentTypeError(f"{shown(text)}: {fix}")
    return seconds


def start_of(text: str | None, duration: float | None) -> dt.datetime | None:
    """`--start` (None: none given, the wall clock's now); ConfigError naming the fix for
    a time of another form, or one whose history (`duration` seconds of it, and contracts
    ending up to two years on) would carry times out of the years events may name: the
    simulator would write events every reader refuses."""
    if text is None:
        return None
    from moments.cliparts import parse_when
    from moments.eventspan import EVENT_YEARS
    from moments.exceptions import ConfigError
    from moments.zones import DEFAULT_ZONE

    start = parse_when(text, DEFAULT_ZONE, "--start", ago=False)
    first = dt.datetime(EVENT_YEARS[0], 1, 1, tzinfo=dt.UTC)  # the zones are UTC+6 to +8
    end = dt.datetime(EVENT_YEARS[1] - 2, 12, 31, tzinfo=dt.UTC)
    if start < first or start + dt.timedelta(seconds=duration or 0) >= end:
        years = "-".join(map(str, EVENT_YEARS))
        raise ConfigError(
            f"--start {text.strip()!r}: events carry times of the years {years}, and the "
            "profiles' contracts end up to two years after the start: start from "
            f"{first.date()} on, with --duration ending before {end.date()}"
        )
    return start


def _seed(text: str) -> int:
    """`--seed`: any whole number (argparse's `type=int` echoed a pasted value whole)."""
    value = whole(text)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"{shown(text)}: write a whole number, e.g. 7 (the same seed, the same stream)"
        )
    return value


def _share(text: str) -> float:
    """`--plant-rate`: a share of events from 0 to 1, refused as the arguments are read
    (`type=float` echoed a pasted value whole, and `5` was refused only after)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # nan too
        raise argparse.ArgumentTypeError(f"{shown(text)}: write a share of events from 0 to 1")
    return value


def stats_table(stats: SimStats, elapsed_rate: float | None = None) -> Table:
    from rich.table import Table

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


def live_view(stats: SimStats, now: float) -> RenderableType:
    """The table, and below it what the run waits for (a broker outage) if anything."""
    from rich.console import Group
    from rich.text import Text

    waiting = stats.waiting_for_kafka(now)
    if waiting is None:
        return stats_table(stats)
    return Group(stats_table(stats), Text(waiting, style="yellow"))


LIVE_EVERY_S = 0.25
"""How often the table in a terminal is redrawn."""


def progress_line(stats: SimStats, elapsed_s: float, now: float) -> str:
    """One line for a log: what was sent so far, at what rate, and what the run waits for."""
    sent = sum(stats.events.values())
    rate = sent / elapsed_s if elapsed_s > 0 else 0.0
    line = (
        f"simulate: {sent:,} events sent in {elapsed_s:.0f} s ({rate:,.0f}/s), "
        f"{sum(stats.planted.values()):,} planted moments"
    )
    waiting = stats.waiting_for_kafka(now)
    return f"{line}; {waiting}" if waiting else line


async def _produce(
    settings: Settings,
    events: Iterator[SimEvent],
    rate: float,
    count: int | None,
    stats: SimStats,
    report: Callable[[], None],
    every_s: float,
) -> SimStats:
    """`produce_stream`, calling `report()` every `every_s` whatever it does (a broker
    outage holds it in a retry, and that is what the display must show)."""
    import asyncio

    from moments.simulate import produce_stream

    async def reporting() -> None:
        while True:
            await asyncio.sleep(every_s)
            report()

    reporter = asyncio.create_task(reporting())
    try:
        return await produce_stream(settings, events, rate, count, stats=stats)
    finally:
        reporter.cancel()


def _cmd_simulate(args: argparse.Namespace) -> int:

    from moments.connections import require_kafka
    from moments.exceptions import ConfigError
    from moments.simulate import SimStats, limit, simulate

    if args.rate is None:  # argparse said "the following arguments are required: --rate"
        raise ConfigError(missing_rate(args.subscribers))
    console = stderr_console()
    start = start_of(args.start, args.duration)
    events = simulate(
        args.subscribers, args.rate, seed=args.seed, plant_rate=args.plant_rate, start=start
    )
    count = limit(events, args.rate, args.duration)
    if args.to_file is not None:
        if count is None:
            raise ConfigError(
                "--to-file needs --duration T: the event time it writes, in seconds or as "
                "2d, 3w (the README's history: --duration 3w)"
            )
        if is_csv(args.to_file):
            raise ConfigError(  # the readers take a .csv for CSV, and refused it
                "--to-file writes JSON lines: name the file .jsonl (.jsonl.gz for gzip)"
            )
        to_file = _file_to_write(args.to_file)
        try:
            stats = _write_file(console, to_file, iter(events), count)
        except OSError as exc:  # a folder that does not exist, no permission: a traceback
            print(
                f"moments: cannot write --to-file {args.to_file}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2  # a path given wrong: set-up (README, exit codes)
        console.print(stats_table(stats))
        console.print(f"wrote {sum(stats.events.values()):,} events to {args.to_file}")
        return 0
    settings = command_settings()
    try:
        require_kafka(settings)  # unreachable or refused: a message naming the variable
    except ConfigError as exc:
        # The quick try of docs/backtest.md with its --to-file left out was told only
        # to start a broker, which a history for the offline tools does not need.
        raise ConfigError(
            f"{exc}; or, for a history to give moments rules test or moments backtest, "
            "write it to a file with --to-file PATH (.jsonl.gz), which needs no broker"
        ) from None
    stats = SimStats()
    if console.is_terminal:
        _produce_live(console, settings, iter(events), args.rate, count, stats)
    else:
        _produce_logged(settings, iter(events), args.rate, count, stats)
        console.print(stats_table(stats))
    console.print(f"produced {sum(stats.events.values()):,} events to {settings.kafka_bootstrap}")
    return 0


def _write_file(console: Console, path: Path, events: Iterator[SimEvent], count: int) -> SimStats:
    """`write_jsonl` with a bar: three weeks of 2,000 subscribers took over a minute
    with nothing on the screen. Lines in a log instead (`ProgressLines`)."""
    from moments.simulate import write_jsonl

    if not console.is_terminal:
        from moments.progresslines import to_console

        lines = to_console("simulate", console)
        stats = write_jsonl(path, events, count, lambda n: lines.update(n, n / count))
        lines.finish(sum(stats.events.values()))
        return stats
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("simulate", total=count)
        return write_jsonl(path, events, count, lambda n: bar.update(task, completed=n))


def _produce_live(
    console: Console,
    settings: Settings,
    events: Iterator[SimEvent],
    rate: float,
    count: int | None,
    stats: SimStats,
) -> None:
    """In a terminal: a table redrawn in place, with what the run waits for."""
    import asyncio

    from rich.live import Live

    live = Live(stats_table(stats), console=console, auto_refresh=False)
    with live, _logs_above_the_table():

        def show() -> None:
            live.update(live_view(stats, time.monotonic()), refresh=True)

        asyncio.run(_produce(settings, events, rate, count, stats, show, LIVE_EVERY_S))
        show()


def _produce_logged(
    settings: Settings, events: Iterator[SimEvent], rate: float, count: int | None, stats: SimStats
) -> None:
    """Not in a terminal (`docker compose logs`): a progress line every PROGRESS_EVERY_S
    (a live table is drawn only once it ends, so the log stayed empty for the whole run)."""
    import asyncio

    started = time.monotonic()

    def say() -> None:
        now = time.monotonic()
        print(progress_line(stats, now - started, now), file=sys.stderr, flush=True)

    asyncio.run(_produce(settings, events, rate, count, stats, say, PROGRESS_EVERY_S))


@contextlib.contextmanager
def _logs_above_the_table() -> Iterator[None]:
    """While a live table redirects stderr, log lines (a retry's warning) go through it
    and print above the table: the log handlers keep the stderr they were made with, on
    which the table's redraw wrote over them."""
    redirected = sys.stderr
    moved: dict[logging.StreamHandler[Any], Any] = {
        h: h.stream
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler)
        and h.stream is sys.__stderr__
        and redirected is not sys.__stderr__  # else no live table, nothing to go around
    }
    for handler in moved:
        handler.setStream(redirected)
    try:
        yield
    finally:
        for handler, stream in moved.items():
            handler.setStream(stream)
