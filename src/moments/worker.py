"""`moments worker`: one detector worker (a Faust worker) with /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

from prometheus_client import disable_created_metrics

from moments import statezip
from moments.app import MomentsApp, beat_every_second, build
from moments.buildinfo import build_labels
from moments.check import zones_differ
from moments.connections import check_kafka, preflight
from moments.consumer_metrics import install as install_consumer_metrics
from moments.exceptions import ConfigError
from moments.health import Health
from moments.logformat import logs_in_json, use_json_logs, use_text_logs
from moments.metrics_server import serve_metrics
from moments.producer import idempotence_refused, refused_message
from moments.reload import log_rule_warnings, signature, with_also
from moments.runtime import create_topics
from moments.service_worker import note_sigterm
from moments.settings import Settings, dotenv_variables, unknown_variables
from moments.stateview import returns_topic
from moments.statezip import StateFormatError
from moments.store import store_problem
from moments.topiclayout import judged_outputs, partition_layout, topic_types
from moments.topicshape import Compaction, Shape, compaction
from rules.catalog import load_rules
from sinks.metrics import Dependency, Metrics
from sinks.policy import check_rule_ids, load_policy
from sinks.retry import with_retry

log = logging.getLogger(__name__)

FAUST_LOG_LEVELS = {"WARNING": "warn", "CRITICAL": "crit"}
"""Faust's --loglevel spells these two its own way."""


def standby_advice(settings: Settings) -> str | None:
    """A warning when standby copies are asked for where they cannot serve a failover."""
    if settings.store == "memory" and settings.standby_copies:
        return (
            f"MOMENTS_STANDBY_REPLICAS={settings.standby_copies} with the memory store: "
            "Faust's memory store drops standby copies when a recovery ends, so they cost "
            "CPU and serve no failover; unset it, or use MOMENTS_STORE=rocksdb"
        )
    return None


def check_partition_layout(settings: Settings, counts: dict[str, int] | None) -> None:
    """Refuse to start (`ConfigError`) when the topics' partition counts (from the
    preflight's metadata; None: Kafka not reachable yet, left to the worker's retries)
    cannot hold the state: a worker started with MOMENTS_PARTITIONS below the input's
    count crashed on the first changelog write of a partition the changelog lacks."""
    if counts is None:
        return
    problem, warning = partition_layout(settings, counts)
    if problem is not None:
        raise ConfigError(problem)
    if warning is not None:
        log.warning("%s", warning)


def judged_counts(settings: Settings, counts: dict[str, int] | None) -> dict[str, int]:
    """The counts of the tasks and withdrawals topics `check_partition_layout` read and
    judged (`output_counts`), for the runtime's creation of the output topics not to say
    them again (`Runtime.judged_counts`); a topic missing then is not among them."""
    found = counts or {}
    return {t: found[t] for t in judged_outputs(settings) if t in found}


COMPACTION_CHECK_S = 10.0
"""Longest the start waits for the broker's configs of the changelog and profile topic."""


def check_compaction(settings: Settings, counts: dict[str, int] | None, health: Health) -> None:
    """Refuse to start (`ConfigError`, exit 2) when the broker reports the state changelog
    not compacted (`moments.topicshape`): made again by a broker on a write after a
    deletion, it deletes state records at its retention, silently. The profile topic not
    compacted is a warning with the fix: the workers running lose nothing by it, a replay
    of the input its old profiles. Where the broker does not say (Tansu, a principal
    without DescribeConfigs, no answer in time), a warning says it could not tell and the
    start goes on; a changelog not there yet is made compacted by the start."""
    if counts is None:
        return

    async def bounded() -> Compaction:
        async with beating(health):
            return await compaction(settings, counts, COMPACTION_CHECK_S)

    found = asyncio.run(bounded())
    if found.changelog is not None and found.changelog.shape is Shape.WRONG:
        raise ConfigError(found.changelog.detail)
    for verdict in (found.changelog, found.profile):
        if verdict is not None and verdict.shape is not Shape.OK:
            log.warning("%s; the worker starts", verdict.detail)


async def ensure_returns_topic(settings: Settings, metrics: Metrics, health: Health) -> None:
    """Create the internal topic of cooldown returns (moments.cooldowns) before Faust
    subscribes it: a broker that creates topics on first use would give it its own
    default partition count, not the input's. Retried with back-off while Kafka does not
    take it, beating `health` meanwhile, as the wait for Kafka does."""
    topics = {returns_topic(settings): settings.partitions}
    what = "creating the cooldown returns topic"
    async with beating(health):
        await create_topics(settings, topics, metrics, what, max_delay=KAFKA_WAIT_MAX_S)


@contextlib.asynccontextmanager
async def beating(health: Health) -> AsyncIterator[None]:
    """Beat `health` once a second while the body waits (for Kafka, with back-off) before
    Faust's event loop runs its own beat: nothing else beats then, and /livez fails after
    MOMENTS_HEALTH_STALL_SECONDS, a restart that would not bring the broker back."""
    task = asyncio.create_task(beat_every_second(health))
    try:
        yield
    finally:
        task.cancel()


async def preflight_beating(settings: Settings, health: Health) -> dict[str, int] | None:
    """`preflight`, beating `health` meanwhile: it tries each bootstrap server in turn, up to
    ~16 s each when one says nothing, after /livez is served and before Faust's loop beats;
    four silent servers of a list ran past the 60 s stall limit without a beat."""
    async with beating(health):
        return await preflight(settings)


KAFKA_WAIT_MAX_S = 15.0
"""Longest pause between two tries of a broker that does not answer at start-up."""
KAFKA_WAIT_LOG_S = 60.0
"""How often the wait says it still waits (the retries log only their 1st, 10th, 100th)."""


async def wait_for_kafka(settings: Settings, metrics: Metrics, health: Health) -> dict[str, int]:
    """The partition counts, once the broker answers. A worker started before its broker
    (or while it is away) waits for it with back-off, in `moments_dependency_up` and the
    log and on /readyz, instead of crashing on Faust's first connection."""
    reason = (
        f"waiting for Kafka at {settings.kafka_bootstrap} (moments_dependency_up is 0; check "
        "the broker and MOMENTS_KAFKA_BOOTSTRAP)"
    )
    health.ready_when(lambda: reason)

    async def reach() -> dict[str, int]:
        counts = await check_kafka(settings, report=False)
        return counts if counts is not None else {}

    async def beat() -> None:
        started = last_said = time.monotonic()
        while True:
            health.beat()
            await asyncio.sleep(1.0)
            if time.monotonic() - last_said >= KAFKA_WAIT_LOG_S:
                last_said = time.monotonic()
                log.warning(
                    "still waiting for Kafka at %s after %.0f s; check the broker and "
                    "MOMENTS_KAFKA_BOOTSTRAP",
                    settings.kafka_bootstrap,
                    last_said - started,
                )

    beating = asyncio.create_task(beat())
    try:
        return await with_retry(
            reach, Dependency.KAFKA, metrics, "starting the worker", max_delay=KAFKA_WAIT_MAX_S
        )
    finally:
        beating.cancel()


_hup_while_starting: list[bool] = []


def _sighup_while_starting(signum: int, frame: object) -> None:
    _hup_while_starting.append(True)
    log.warning(
        "SIGHUP while the worker starts: the rules and the dispatch policy are read again "
        "once it is ready"
    )


IDEMPOTENCE_CHECK_S = 30.0
"""Longest the start-up waits for a producer id (MOMENTS_IDEMPOTENT_PRODUCER=true)."""


def require_idempotence(settings: Settings, health: Health) -> None:
    """Stop (`ConfigError`) unless the broker grants an idempotent producer; bounded: a
    broker whose advertised address accepts connections and never answers held the
    start for ever, its health probes silent (re-check). Beats `health` meanwhile, as the
    other waits before Faust runs do."""
    log.info("checking that Kafka grants an idempotent producer (MOMENTS_IDEMPOTENT_PRODUCER)")

    async def bounded() -> str | None:
        async with beating(health), asyncio.timeout(IDEMPOTENCE_CHECK_S):
            return await idempotence_refused(settings)

    try:
        why = asyncio.run(bounded())
    except TimeoutError:
        raise ConfigError(
            f"Kafka {settings.kafka_bootstrap} answered, but no producer started within "
            f"{IDEMPOTENCE_CHECK_S:.0f} s: check the brokers' advertised listeners (they must "
            "be reachable from here), or unset MOMENTS_IDEMPOTENT_PRODUCER"
        ) from None
    if why is not None:
        raise ConfigError(refused_message(settings, why))


def _stacks_while_starting(signum: int, frame: object) -> None:
    """SIGUSR1 or SIGUSR2 before Faust's worker handles them: every thread's stack to
    stderr, as they give once it does (`ServiceWorker`), and the start goes on. Their
    default ended the worker: an operator asking one slow to start where it waits (its
    broker, a topic) killed it. Written by `faulthandler`, straight to the file
    descriptor: safe whatever the interrupted code was writing. With JSON logs, the
    stacks are one log record instead (`_stacks`): faulthandler's plain lines broke the
    one-object-per-line log."""
    name = signal.Signals(signum).name
    if logs_in_json():
        log.warning(
            "%s while the worker starts: every thread's stack; the worker goes on:\n%s",
            name,
            _stacks(),
        )
        return
    log.warning(
        "%s while the worker starts: every thread's stack follows on stderr; the worker goes on",
        name,
    )
    try:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    except (AttributeError, ValueError, OSError):  # a stderr without a file descriptor
        log.warning("no stack written: stderr has no file descriptor")


def _stacks() -> str:
    """Every thread's stack, most recent call last, each under its thread's name."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(
        f"Thread {names.get(ident, ident)}:\n" + "".join(traceback.format_stack(top)).rstrip()
        for ident, top in sys._current_frames().items()
    )


STACK_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
"""The signals that write the stacks (`_stacks_while_starting`, then Faust's worker)."""


def _sigterm_while_starting(signum: int, frame: object) -> None:
    """SIGTERM before Faust runs: nothing is read or held yet, so the worker just ends,
    with code 0 as after a clean stop. Left at its default, the signal did the same in a
    plain process, but in a container the worker is PID 1 (the image's ENTRYPOINT, no
    init), and the kernel drops a signal PID 1 has no handler for: a worker waiting for
    its broker ignored `docker stop` and Kubernetes until their SIGKILL, 60 s later."""
    log.warning("SIGTERM while the worker starts (nothing read yet): stopping")
    raise SystemExit(0)


def run_worker(settings: Settings, faust_args: list[str]) -> None:
    """Load rules and the dispatch policy (refusing a bad file before anything starts),
    serve /metrics, run Faust. SIGTERM ends the start at any point
    (`_sigterm_while_starting`); once Faust starts, until its worker handles the signal,
    one is noted and then acted on (`service_worker.note_sigterm`). SIGUSR1 and SIGUSR2
    write the stacks throughout (`_stacks_while_starting` until Faust's worker takes
    them over). SIGHUP is noted (`_sighup_while_starting`) and acted on once the runtime
    is ready. A start that fails puts every one of these handlers back as it found them."""
    _hup_while_starting.clear()  # a SIGHUP noted by an earlier start (in-process) is not ours
    previous = signal.signal(signal.SIGTERM, _sigterm_while_starting)
    others = {signum: signal.signal(signum, _stacks_while_starting) for signum in STACK_SIGNALS}
    # Until the runtime installs its reload handler: SIGHUP's default ends the process,
    # and `systemctl reload` during a start (a broker awaited) killed the worker.
    others[signal.SIGHUP] = signal.signal(signal.SIGHUP, _sighup_while_starting)
    try:
        app = _prepare(settings, faust_args)
    except BaseException:
        signal.signal(signal.SIGTERM, previous)  # a caller in-process (tests) as it was
        for signum, handler in others.items():
            signal.signal(signum, handler)
        _hup_while_starting.clear()  # nor would its next start ask for a reload
        raise
    signal.signal(signal.SIGTERM, note_sigterm)
    app.main()


def read_beside_input(settings: Settings) -> list[str]:
    """Topics the worker reads besides the input whose lag is sampled too: the cooldown
    returns, and the dispatch consumers' outcomes. Without the outcomes' lag, outcomes the
    worker stopped reading looked like a consumer that stopped writing them
    (MomentsTasksExpireUnanswered blamed the SMS gateway's team)."""
    return [returns_topic(settings), settings.topic("task_outcomes")]


def ensure_data_dir(path: Path) -> None:
    """`MOMENTS_DATA_DIR`, made for its owner only: with `MOMENTS_STORE=rocksdb` it holds
    profiles and states (security review); one that exists keeps the mode its operator
    gave it. A `ConfigError` naming the variable when it cannot be made or written (a
    volume mounted for another user), instead of a traceback here or in RocksDB later."""
    fix = (
        f"point it at a directory this user (uid {os.getuid()}) may write, e.g. a volume "
        "mounted there (Kubernetes: the pod's fsGroup)"
    )
    dangling = next((p for p in (path, *path.parents) if p.is_symlink() and not p.exists()), None)
    if dangling is not None:  # mkdir's own word for it was "File exists"
        raise ConfigError(f"MOMENTS_DATA_DIR: {dangling} is a link to nothing; {fix}")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"MOMENTS_DATA_DIR: cannot create {path} ({reason}); {fix}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"MOMENTS_DATA_DIR: {path} is not writable by this user; {fix}")


def _prepare(settings: Settings, faust_args: list[str]) -> MomentsApp:
    """Everything before Faust runs; the app, with `sys.argv` set for its command line."""
    if settings.log_format == "json":
        use_json_logs()  # the lines before Faust's own logging setup too
    else:
        use_text_logs()
    for warning in unknown_variables(os.environ, dotenv_variables()):
        log.warning("%s", warning)
    # The files as they are when read: a change while the worker waits for Kafka (which
    # may be long) is then seen by the first reload check, not taken as already loaded.
    as_read = signature(settings.rules), signature(settings.dispatch_policy)
    rules = load_rules(settings.rules)
    log_rule_warnings(rules)
    if (calendar := rules.special.calendar_file) is not None:  # read with the rules
        try:
            as_read = with_also(as_read[0], (calendar,)), as_read[1]
        except OSError:
            as_read = (), as_read[1]
    policy = load_policy(settings.dispatch_policy)
    check_rule_ids(
        settings.dispatch_policy,
        policy,
        (r.id for r in rules.rules),
        (r.task.moment_type for r in rules.rules),
    )
    if (said := zones_differ(rules.gating.timezone, policy.timezone)) is not None:
        log.warning("%s", said)
    try:
        statezip.check()  # a broken installation stops here, before any input is read
    except StateFormatError as exc:
        raise ConfigError(str(exc)) from exc
    ensure_data_dir(settings.data_dir)  # before any wait for the broker
    if (problem := store_problem(settings.store)) is not None:
        raise ConfigError(problem)
    # No `_created` series beside every counter and histogram: they nearly doubled the
    # exposition, and no dashboard or alert reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = Metrics()
    metrics.build_info.labels(**build_labels()).set(1)
    health = Health(settings.health_stall_seconds)
    metrics.loop_stalled.set_function(health.stalled_for)
    if settings.metrics_port:
        serve_metrics(settings, metrics.registry, health)
        auth = " (basic auth)" if settings.metrics_username else ""
        log.info(
            "metrics on http://%s:%d/metrics%s, probes on /livez and /readyz",
            settings.metrics_host,
            settings.metrics_port,
            auth,
        )
    # Wrong credentials stop here, with the variable to fix; so do partition counts that
    # cannot hold the state. A broker that does not answer yet is waited for.
    counts = asyncio.run(preflight_beating(settings, health))
    if counts is None:
        counts = asyncio.run(wait_for_kafka(settings, metrics, health))
    check_partition_layout(settings, counts)
    check_compaction(settings, counts, health)
    asyncio.run(ensure_returns_topic(settings, metrics, health))
    if settings.idempotent_producer:
        require_idempotence(settings, health)
    advice = standby_advice(settings)
    if advice:
        log.warning("%s", advice)
    app, runtime = build(settings, rules, metrics, health, policy)
    runtime.judged_counts = judged_counts(settings, counts)
    runtime.reloader.last, runtime.policy_reloader.last = as_read
    if _hup_while_starting:
        runtime.reloader.request()
        runtime.policy_reloader.request()
    # Lag per partition (the input's and the cooldown returns'), commit latency,
    # rebalances, broker reachability (see moments.consumer_metrics).
    install_consumer_metrics(
        app,
        metrics.registry,
        topic_types(settings),
        health=metrics,
        internal=read_beside_input(settings),
    )
    if not any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") for a in faust_args):
        level = FAUST_LOG_LEVELS.get(settings.log_level, settings.log_level.lower())
        faust_args = ["--loglevel", level, *faust_args]
    if not any(a.startswith(("--web", "--without-web")) for a in faust_args):
        # /metrics is ours; Faust's own web server would only take port 6066 (two workers
        # on one machine would clash), so it is off unless asked for.
        faust_args = ["--without-web", *faust_args]
    # Faust prints a banner table to stdout unless quiet: not a log record, so not JSON.
    quiet = ["--quiet"] if settings.log_format == "json" else []
    sys.argv = ["moments worker", *quiet, "worker", *faust_args]
    return app
