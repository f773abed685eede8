"""Function calls an event in a real `moments worker` subprocess: a measure that, unlike
wall-clock or CPU time, does not move with the machine's load, to compare two versions
of the code on the same events (`--src` runs the worker on another tree's `src`).

It starts the embedded broker and Redis, produces the bench's events (`moments bench`'s
generator, fixed seed), and starts a worker (`moments.bench.start_worker`) with a
`sitecustomize` that counts, in every thread of the worker, each Python function call and
each call of a builtin (keyed by its caller), from the batch loop's first fetch with
records to the end of the loop's step in which the runtime has handled `--events`
records: the batch loop's own work a record (its `RawRecord`s, the rewind guard, the
offsets marked) counted with the runtime's, which a window of `Runtime.handle` alone left
out when the events came in one fetch (the fetcher thread's reads before that first
fetch are not counted; the counter's own calls never are). It prints the calls an event
per thread, the process's page faults, collections and objects over that window, and the
functions called most; `--save FILE` keeps the counts (JSON), `--load FILE` prints saved
ones, and `--compare FILE` lists the functions whose calls an event differ most from a saved run's.

    .venv/bin/python benchmarks/worker_calls.py --save /tmp/new.json
    git archive 09b73f39 src | tar -x -C /tmp/old
    .venv/bin/python benchmarks/worker_calls.py --src /tmp/old/src --compare /tmp/new.json

While it waits it reads the worker's /metrics every `--scrape-every` seconds (0.2, as
`moments bench` does; 0: never), as the bench reads it: the one sample name it follows
(`?name[]=moments_events_total`), or with `--scrape-whole` the whole page, as the bench
did before 2026-12-08. Those pages are work of the worker's too, counted in the thread
"/metrics requests". `--idle SECONDS` then counts the idle worker's calls a second
(its timers, the Kafka fetcher, the pages read). `--callgrind` runs the worker under
valgrind and counts instructions instead (all threads, by C function; needs gcc and
valgrind's headers): the only measure that sees C work (regexes, JSON, the collector),
but the worker runs ~50 times slower under it, so the timers' share grows with it and two
runs of one tree differed by 25%; compare several.

Counting slows the worker several times over; the counts are what to read, not its rate.
Batches are fetched as they come, and timers and the Kafka fetcher run by the clock, so
two runs of one tree differ by a few calls an event (the main thread's 216-229 on
2026-12-07): compare the main thread and the functions, over several runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Runs in every Python process started with it on PYTHONPATH; only a worker counts.
# Each thread gets its own tally (a thread's first profile event installs it), so no two
# threads write one dict; nothing is counted until the runtime's first batch.
COUNTER = r"""
import ctypes, gc, json, os, resource, sys, threading, time
_callgrind = os.environ.get("WORKER_CALLS_CALLGRIND")  # the client-request library
if "worker" in sys.argv and _callgrind and not os.environ.get("WORKER_CALLS_IN_VALGRIND"):
    # The worker again, under callgrind, instrumenting nothing until the window opens.
    os.environ["WORKER_CALLS_IN_VALGRIND"] = "1"
    os.execv("/usr/bin/valgrind", ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             "--callgrind-out-file=" + os.environ["WORKER_CALLS_OUT"] + ".cg",
             sys.executable, *sys.orig_argv[1:]])
if "worker" in sys.argv and os.environ.get("WORKER_CALLS_OUT"):
    _on = [False]
    _requests = ctypes.CDLL(_callgrind) if _callgrind else None
    _tallies = {}  # thread name -> {function: calls}
    _lock = threading.Lock()

    def _counter(tally):
        def count(frame, event, arg):
            if not _on[0] or frame.f_code.co_filename == __file__:  # the counter's own: not
                return
            if event == "call":
                code = frame.f_code
                key = f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}"
            elif event == "c_call":
                code = frame.f_code  # the caller: which function calls the builtin
                name = getattr(arg, "__qualname__", type(arg).__name__)
                where = f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}"
                key = f"builtin {name} <- {where}"
            else:
                return
            tally[key] = tally.get(key, 0) + 1
        return count

    def _own_tally():
        with _lock:
            name = threading.current_thread().name
            if name.endswith("(process_request_thread)"):  # one a /metrics request, in turn
                return _tallies.setdefault("/metrics requests", {})
            while name in _tallies:
                name += "'"
            tally = _tallies[name] = {}
        return tally

    def _snapshot():  # a copy: other threads may count, and start, meanwhile
        with _lock:
            return {name: dict(tally) for name, tally in _tallies.items()}

    def _first_event(frame, event, arg):  # a new thread's first profile event
        sys.setprofile(_counter(_own_tally()))

    if _requests is None:  # under callgrind, instructions are counted instead
        sys.setprofile(_counter(_own_tally()))
        threading.setprofile(_first_event)

    def _process():  # counts of the process's own, none of them a time
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = gc.get_stats()
        return {"minor_faults": usage.ru_minflt, "major_faults": usage.ru_majflt,
                "peak_rss_kib": usage.ru_maxrss,
                **{f"gc{n}_collections": stat["collections"] for n, stat in enumerate(stats)},
                "gc_collected": sum(stat["collected"] for stat in stats),
                "gc_objects": len(gc.get_objects()) + gc.get_freeze_count(),
                "rss_kib": int(open("/proc/self/statm").read().split()[1])
                           * os.sysconf("SC_PAGE_SIZE") // 1024}

    def _install():
        wanted_classes = (("moments.runtime", "Runtime"), ("moments.batchloop", "BatchLoop"),
                          ("moments.consumer", "BatchConsumer"))
        while True:
            modules = [sys.modules.get(name) for name, _ in wanted_classes]
            if all(getattr(module, cls, None) is not None
                   for module, (_, cls) in zip(modules, wanted_classes)):
                break
            time.sleep(0.02)
        time.sleep(0.2)  # the modules done importing
        runtime, batchloop, consumer = modules
        handle = runtime.Runtime.handle
        step = batchloop.BatchLoop.step
        take = consumer.BatchConsumer.take
        wanted = int(os.environ["WORKER_CALLS_EVENTS"])
        done = {"records": 0, "batches": 0, "fetches": 0, "closed": False}

        def _open():  # the window: from the batch loop's first fetch with records
            done["at_start"] = _process()
            if _requests is not None:
                _requests.window_opens()
            _on[0] = True

        async def counted_take(self, max_records):
            # Opened before the take when a fetch waits (the take's merging counted too),
            # else once one came; the fetcher thread's reads before it are not counted.
            if not _on[0] and not done["closed"] and not self.fetches.empty():
                _open()
            fetch = await take(self, max_records)
            if not _on[0] and not done["closed"] and fetch.records:
                _open()
            if _on[0] and not done["closed"]:
                done["fetches"] += 1
            return fetch

        async def counted_handle(self, records, *args, **kwargs):
            try:
                return await handle(self, records, *args, **kwargs)
            finally:
                if _on[0] and not done["closed"]:
                    done["records"] += len(records)
                    done["batches"] += 1

        async def counted_step(self):
            # The whole step: the records made of the fetch (`RawRecord`), the rewind
            # guard's filter, the batches and the offsets marked after them.
            try:
                return await step(self)
            finally:
                if _on[0] and not done["closed"] and done["records"] >= wanted:
                    _on[0] = False
                    done["closed"] = True
                    if _requests is not None:
                        _requests.window_closes()
                    at_end = _process()
                    process = {k: at_end[k] - done["at_start"][k] for k in at_end}
                    process["peak_rss_kib"] = at_end["peak_rss_kib"]
                    process["rss_kib_at_start"] = done["at_start"]["rss_kib"]
                    process["gc_objects_at_start"] = done["at_start"]["gc_objects"]
                    with open(os.environ["WORKER_CALLS_OUT"] + ".part", "w") as out:
                        json.dump({"records": done["records"], "batches": done["batches"],
                                   "fetches": done["fetches"], "process": process,
                                   "threads": _snapshot()}, out)
                    os.replace(os.environ["WORKER_CALLS_OUT"] + ".part",
                               os.environ["WORKER_CALLS_OUT"])
                    if os.environ.get("WORKER_CALLS_IDLE_S"):
                        threading.Thread(target=_idle, name="worker-calls-idle",
                                         daemon=True).start()

        def _idle():  # the calls of the worker with nothing to read, by its timers
            time.sleep(3)  # the batch's aftermath done
            before = _snapshot()
            _on[0] = True
            time.sleep(float(os.environ["WORKER_CALLS_IDLE_S"]))
            _on[0] = False
            after = _snapshot()
            idle = {name: {key: n - before.get(name, {}).get(key, 0) for key, n in tally.items()
                           if n > before.get(name, {}).get(key, 0)}
                    for name, tally in after.items()}
            with open(os.environ["WORKER_CALLS_OUT"] + ".idle.part", "w") as out:
                json.dump({"seconds": float(os.environ["WORKER_CALLS_IDLE_S"]),
                           "threads": idle}, out)
            os.replace(os.environ["WORKER_CALLS_OUT"] + ".idle.part",
                       os.environ["WORKER_CALLS_OUT"] + ".idle")

        runtime.Runtime.handle = counted_handle
        batchloop.BatchLoop.step = counted_step
        consumer.BatchConsumer.take = counted_take

    threading.Thread(target=_install, name="worker-calls-install", daemon=True).start()
"""


REQUESTS_C = """
#include <valgrind/callgrind.h>
void window_opens(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void window_closes(void) { CALLGRIND_DUMP_STATS_AT("window"); CALLGRIND_STOP_INSTRUMENTATION; }
"""
"""Callgrind's client requests, for the worker to open and close its window through ctypes."""


def build_requests(work: Path) -> Path:
    """The client-request library, compiled (needs gcc and valgrind's headers)."""
    source, library = work / "requests.c", work / "requests.so"
    source.write_text(REQUESTS_C)
    try:
        subprocess.run(
            ["gcc", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)],  # noqa: S607 (gcc on PATH)
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"--callgrind needs gcc and valgrind's headers (apt-get install valgrind): {exc}")
    return library


def callgrind_window(out: Path) -> dict[str, object]:
    """The instructions of the dump the worker made when its window closed: the total
    and, by function, those of the functions themselves (callgrind_annotate's figures)."""
    dumps = [
        p
        for p in out.parent.glob(out.name + ".cg*")
        if "Client Request: window" in p.read_text(errors="replace")
    ]
    if not dumps:
        sys.exit(f"no callgrind dump of the window in {out.parent}")
    text = dumps[0].read_text(errors="replace")
    total = next(
        int(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("summary:", "totals:"))
    )
    annotated = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(dumps[0])],  # noqa: S607 (valgrind's)
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    functions: dict[str, int] = {}
    for line in annotated.splitlines():
        fields = line.split(None, 1)
        if len(fields) == 2 and fields[0].replace(",", "").isdigit() and ":" in fields[1]:
            name = re.sub(r"^\(\s*[\d.]+%\)\s+", "", fields[1]).split(" [", 1)[0].strip()
            functions[name] = functions.get(name, 0) + int(fields[0].replace(",", ""))
    return {"instructions": total, "functions": functions}


def per_event(run: Mapping[str, Any]) -> dict[str, float]:
    """A saved run's calls an event by function, every thread's summed; or, for a run
    under callgrind, the instructions an event by (C) function."""
    records: int = run["records"]
    if "callgrind" in run:
        functions: dict[str, int] = run["callgrind"]["functions"]
        return {key: n / records for key, n in functions.items()}
    calls: dict[str, float] = {}
    for tally in run["threads"].values():
        for key, n in tally.items():
            calls[key] = calls.get(key, 0.0) + n / records
    return calls


def idle_per_second(run: Mapping[str, Any]) -> dict[str, float]:
    """A saved run's idle calls a second by function, every thread's summed."""
    seconds: float = run["idle"]["seconds"]
    calls: dict[str, float] = {}
    for tally in run["idle"]["threads"].values():
        for key, n in tally.items():
            calls[key] = calls.get(key, 0.0) + n / seconds
    return calls


def short(key: str) -> str:
    """A counted function's key without the directories of its file."""
    if key.startswith("builtin "):
        name, arrow, caller = key.partition(" <- ")
        return f"{name}{arrow}{short(caller)}" if arrow else key
    path, _, rest = key.partition(":")
    return f"{Path(path).name}:{rest}" if rest else key


def differences(
    new: Mapping[str, float], old: Mapping[str, float], top: int
) -> list[tuple[str, float, float]]:
    """The `top` functions whose calls an event differ most: (function, old, new). Keys are
    compared without directories, so two trees' copies of a module match."""
    a: dict[str, float] = {}
    b: dict[str, float] = {}
    for source, into in ((old, a), (new, b)):
        for key, n in source.items():
            into[short(key)] = into.get(short(key), 0.0) + n
    rows = [(key, a.get(key, 0.0), b.get(key, 0.0)) for key in a.keys() | b.keys()]
    rows.sort(key=lambda row: abs(row[2] - row[1]), reverse=True)
    return rows[:top]


def report(run: Mapping[str, Any], top: int) -> None:
    records: int = run["records"]
    fetches = f" of {run['fetches']} fetch(es)" if "fetches" in run else ""
    print(f"{records:,} records in {run['batches']} batches{fetches}")
    if "scrapes" in run:
        made, size = run["scrapes"]["made"], run["scrapes"]["last_bytes"]
        what = "the whole page" if run["scrapes"].get("whole") else FOLLOWED
        print(f"  /metrics read {made} times meanwhile ({what}), {size:,} bytes the last time")
    for key, n in run.get("process", {}).items():
        each = "_at_" not in key and "peak" not in key  # a difference over the window
        print(f"  {key}: {n:,}" + (f" ({n / records:.3f} an event)" if each else ""))
    if "callgrind" in run:
        total = run["callgrind"]["instructions"]
        print(f"all threads: {total / records:,.0f} instructions an event (callgrind)")
    else:
        for name, tally in sorted(run["threads"].items()):
            calls = sum(tally.values())
            if calls:
                builtin = sum(n for k, n in tally.items() if k.startswith("builtin "))
                print(
                    f"  thread {name}: {calls / records:,.1f} calls an event "
                    f"({builtin / records:,.1f} of builtins)"
                )
        print(f"all threads: {sum(per_event(run).values()):,.1f} calls an event")
    for key, n in sorted(per_event(run).items(), key=lambda kv: kv[1], reverse=True)[:top]:
        print(f"  {n:10.2f}  {short(key)}")
    if "idle" in run:
        idle = idle_per_second(run)
        print(f"idle, {run['idle']['seconds']:.0f} s: {sum(idle.values()):,.1f} calls a second")
        for key, n in sorted(idle.items(), key=lambda kv: kv[1], reverse=True)[:top]:
            print(f"  {n:10.2f}  {short(key)}")


FOLLOWED = "moments_events_total"
"""The sample `moments bench` follows while its worker reads the events."""


def metrics_page(port: int, whole: bool = False) -> bytes:
    """The worker's /metrics as `moments bench` reads it while it waits: the followed
    sample's family alone (`scrape`'s `?name[]=`), or the whole page."""
    query = "" if whole else "?" + urllib.parse.urlencode({"name[]": FOLLOWED})
    url = f"http://127.0.0.1:{port}/metrics{query}"
    with urllib.request.urlopen(url, timeout=2) as response:
        page: bytes = response.read()
    return page


def count_calls(
    events: int,
    subscribers: int,
    src: Path | None,
    out: Path,
    callgrind: bool = False,
    idle_s: float = 0.0,
    scrape_every: float = 0.2,
    scrape_whole: bool = False,
) -> dict[str, Any]:
    """Runs the broker, Redis and one counted worker; returns the saved counts."""
    from moments.bench import produce, start_worker, stop_worker
    from moments.cliparts import command_settings, stderr_console
    from moments.connections import kafka_client_kwargs
    from moments.embedded import RedisServer, TansuBroker, free_port
    from moments.embedded_run import REBALANCE_SECONDS, all_topics
    from moments.topics import ensure_topics

    console = stderr_console()
    work = Path(tempfile.mkdtemp(prefix="worker-calls-"))
    site = work / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(COUNTER)
    with TansuBroker(work / "tansu") as broker, RedisServer(work / "redis") as redis:
        settings = command_settings().model_copy(
            update={
                "kafka_bootstrap": broker.bootstrap,
                "redis_url": redis.url,
                "partitions": 4,
                "app_id": f"calls-{os.getpid()}",
                "topic_prefix": "calls.",
                "rebalance_timeout": REBALANCE_SECONDS,
            }
        )
        topics, compacted = all_topics(settings)
        asyncio.run(
            ensure_topics(
                broker.bootstrap, topics, compacted, client_kwargs=kafka_client_kwargs(settings)
            )
        )
        asyncio.run(produce(settings, events, subscribers, console))
        path = [str(site), *([str(src)] if src is not None else [])]
        os.environ["PYTHONPATH"] = os.pathsep.join(path)  # start_worker passes it on
        os.environ["WORKER_CALLS_OUT"] = str(out)
        os.environ["WORKER_CALLS_EVENTS"] = str(events)
        if idle_s > 0:
            os.environ["WORKER_CALLS_IDLE_S"] = str(idle_s)
        if callgrind:
            os.environ["WORKER_CALLS_CALLGRIND"] = str(build_requests(work))
        log = work / "worker.log"
        port = free_port()
        proc = start_worker(settings, work / "data", port, log)
        scrapes, body = 0, b""
        try:
            # valgrind runs the worker ~50 times slower, its start included
            deadline = time.monotonic() + (600 + events / 100) * (6 if callgrind else 1)
            with console.status(f"worker counting its calls over {events:,} events"):
                idle_out = out.with_name(out.name + ".idle")
                while not out.exists() or (idle_s > 0 and not idle_out.exists()):
                    if proc.poll() is not None:
                        sys.exit(f"the worker exited with {proc.returncode}; see {log}")
                    if time.monotonic() > deadline:
                        sys.exit(f"no counts from the worker in time; see {log}")
                    if scrape_every > 0:  # as `moments bench` follows its worker
                        with contextlib.suppress(OSError):
                            body = metrics_page(port, scrape_whole)
                            scrapes += 1
                    time.sleep(scrape_every if scrape_every > 0 else 0.5)
        finally:
            stop_worker(proc)
        result: dict[str, Any] = json.loads(out.read_text())
        result["scrapes"] = {"made": scrapes, "last_bytes": len(body), "whole": scrape_whole}
        if idle_s > 0:
            result["idle"] = json.loads(idle_out.read_text())
    shutil.rmtree(work, ignore_errors=True)  # kept only when the run fails
    if callgrind:
        result["callgrind"] = callgrind_window(out)
        del result["threads"]
    return result


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events to produce and count")
    parser.add_argument("--subscribers", type=int, default=2_000, help="distinct subscribers")
    parser.add_argument("--src", type=Path, help="the worker's code: another tree's src")
    parser.add_argument("--save", type=Path, help="keep the counts in this JSON file")
    parser.add_argument("--compare", type=Path, help="a saved run to compare against")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    parser.add_argument(
        "--callgrind", action="store_true", help="count instructions (valgrind) instead of calls"
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="then count the idle worker's calls for this long (its timers' cost a second)",
    )
    parser.add_argument(
        "--scrape-every",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="read the worker's /metrics this often meanwhile, as moments bench does (0: never)",
    )
    parser.add_argument(
        "--scrape-whole",
        action="store_true",
        help=f"read the whole /metrics page each time, not {FOLLOWED} alone (the bench's "
        "polling before 2026-12-08)",
    )
    parser.add_argument("--load", type=Path, help="report a saved run instead of running")
    args = parser.parse_args(argv)
    if args.events < 1 or args.subscribers < 1:
        parser.error("--events and --subscribers must be at least 1")
    if args.scrape_every < 0:
        parser.error("--scrape-every takes seconds (0: never)")
    if args.idle < 0 or (args.idle and args.callgrind):
        parser.error("--idle takes seconds, and counts calls: not with --callgrind")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    if args.load is not None:
        run = json.loads(args.load.read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run = count_calls(
                args.events,
                args.subscribers,
                args.src,
                Path(tmp, "calls.json"),
                args.callgrind,
                args.idle,
                args.scrape_every,
                args.scrape_whole,
            )
        if args.save is not None:
            args.save.write_text(json.dumps(run))
    report(run, args.top)
    if args.compare is not None:
        saved = json.loads(args.compare.read_text())
        print(f"against {args.compare} (calls an event: theirs, this run's, difference):")
        for key, theirs, ours in differences(per_event(run), per_event(saved), args.top):
            print(f"  {theirs:10.2f} {ours:10.2f} {ours - theirs:+10.2f}  {key}")
        if "idle" in run and "idle" in saved:
            print("idle, calls a second (theirs, this run's, difference):")
            rows = differences(idle_per_second(run), idle_per_second(saved), args.top)
            for key, theirs, ours in rows:
                print(f"  {theirs:10.2f} {ours:10.2f} {ours - theirs:+10.2f}  {key}")


if __name__ == "__main__":
    main()
