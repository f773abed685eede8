"""The `moments bench` command: the detector's rate against a raw consumer's
(moments.bench)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from moments.cliparts import add_command, positive_float, positive_int, shown

if TYPE_CHECKING:
    from moments.cliparts import Subparsers


MIN_BENCH_EVENTS = 50_000
"""A worker takes up to 20,000 events a batch and is sampled every 0.2 s: fewer events
than this are mostly done before the clock starts."""


def _positive_rate(text: str) -> float:
    """`--offered`: a finite rate above 0 (`inf` was taken, and the bench run at it)."""
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{shown(text)}: write a finite number of events a second above 0, e.g. 8000"
        ) from None


def add_bench_command(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "bench",
        "Measure the detector against a raw aiokafka consumer on the same events, in one "
        "run, and print both rates and their ratio (embedded broker and Redis unless "
        "MOMENTS_KAFKA_BOOTSTRAP / MOMENTS_REDIS_URL are set).",
        """
                  moments bench                          # 200k events, 20k subscribers
                  moments bench --events 50000 --subscribers 5000
                  moments bench --rules-only                 # rule cost and state size only
                  moments bench --partitions 8 --workers 2   # and two workers against one
                  moments bench --offered 8000           # latency at 8,000 events/s
                  moments bench --worker-src /tmp/old    # workers on another tree's src
                  MOMENTS_RULES=my-rules/ moments bench  # the cost of your own catalog
                """,
        _cmd_bench,
    )
    p.add_argument("--events", type=positive_int, default=200_000, help="events to produce")
    p.add_argument("--subscribers", type=positive_int, default=20_000, help="distinct subscribers")
    p.add_argument("--partitions", type=positive_int, default=4, help="partitions per topic")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="with 2 or more, also run that many workers together on the same events and "
        "print their rate against one worker's (needs as many partitions)",
    )
    p.add_argument(
        "--rules-only",
        action="store_true",
        help="only the in-process part: rule cost per event and state bytes (no broker)",
    )
    p.add_argument(
        "--offered",
        type=_positive_rate,
        default=None,
        metavar="EVENTS_PER_S",
        help="load at which latency is measured (default: half the measured rate); a fixed "
        "rate compares two versions or machines at the same load",
    )
    p.add_argument(
        "--worker-src",
        type=Path,
        default=None,
        metavar="DIR",
        help="run the workers on another version's code: DIR holds its src (e.g. from `git "
        "archive <commit> src | tar -x -C DIR`); the bench, raw reader and events stay this "
        "version's, so two runs compare the workers alone",
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from moments.bench import run_bench, worker_src_path

    if not args.rules_only and args.events < MIN_BENCH_EVENTS:
        print(
            f"--events {args.events:,} is too few to time a worker: most would be done before "
            f"its first metrics sample and the rates would read 0; use --events "
            f"{MIN_BENCH_EVENTS:,} or more (or --rules-only for the in-process rule cost)",
            file=sys.stderr,
        )
        return 2
    if args.workers > args.partitions:
        print(
            f"--workers {args.workers} needs at least as many partitions: "
            f"add --partitions {args.workers} (or more)",
            file=sys.stderr,
        )
        return 2
    if args.worker_src is not None:
        try:
            worker_src_path(args.worker_src)
        except ValueError as exc:
            print(f"--worker-src: {exc}", file=sys.stderr)
            return 2
    return run_bench(
        args.events,
        args.subscribers,
        args.partitions,
        args.rules_only,
        workers=args.workers,
        offered=args.offered,
        worker_src=args.worker_src,
    )
