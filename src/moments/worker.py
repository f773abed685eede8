"""`moments worker`: one detector worker (a Faust worker) with /metrics."""

from __future__ import annotations

import asyncio
import logging
import sys

from moments import statezip
from moments.app import build, topic_types
from moments.connections import preflight
from moments.consumer_metrics import install as install_consumer_metrics
from moments.exceptions import ConfigError
from moments.metrics_server import serve_metrics
from moments.settings import Settings
from moments.statezip import StateFormatError
from rules.catalog import load_rules
from sinks.metrics import Metrics

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


def run_worker(settings: Settings, faust_args: list[str]) -> None:
    """Load rules (refusing a bad file before anything starts), serve /metrics, run Faust."""
    rules = load_rules(settings.rules)
    try:
        statezip.check()  # a broken installation stops here, before any input is read
    except StateFormatError as exc:
        raise ConfigError(str(exc)) from exc
    asyncio.run(preflight(settings))  # wrong credentials stop here, with the variable to fix
    metrics = Metrics()
    if settings.metrics_port:
        serve_metrics(settings, metrics.registry)
        auth = " (basic auth)" if settings.metrics_username else ""
        log.info(
            "metrics on http://%s:%d/metrics%s", settings.metrics_host, settings.metrics_port, auth
        )
    advice = standby_advice(settings)
    if advice:
        log.warning("%s", advice)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app, _runtime = build(settings, rules, metrics)
    # Lag per partition, commit latency, rebalances, broker reachability
    # (see moments.consumer_metrics).
    install_consumer_metrics(app, metrics.registry, topic_types(settings), health=metrics)
    if not any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") for a in faust_args):
        level = FAUST_LOG_LEVELS.get(settings.log_level, settings.log_level.lower())
        faust_args = ["--loglevel", level, *faust_args]
    if not any(a.startswith(("--web", "--without-web")) for a in faust_args):
        # /metrics is ours; Faust's own web server would only take port 6066 (two workers
        # on one machine would clash), so it is off unless asked for.
        faust_args = ["--without-web", *faust_args]
    sys.argv = ["moments worker", "worker", *faust_args]
    app.main()
