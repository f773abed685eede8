"""`moments worker`: one detector worker (a Faust worker) with /metrics."""

from __future__ import annotations

import logging
import sys

from prometheus_client import start_http_server

from moments.app import build
from moments.settings import Settings
from rules.catalog import load_rules
from sinks.metrics import Metrics

log = logging.getLogger(__name__)

FAUST_LOG_LEVELS = {"WARNING": "warn", "CRITICAL": "crit"}
"""Faust's --loglevel spells these two its own way."""


def run_worker(settings: Settings, faust_args: list[str]) -> None:
    """Load rules (refusing a bad file before anything starts), serve /metrics, run Faust."""
    rules = load_rules(settings.rules)
    metrics = Metrics()
    if settings.metrics_port:
        start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=metrics.registry
        )
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app, _runtime = build(settings, rules, metrics)
    if not any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") for a in faust_args):
        level = FAUST_LOG_LEVELS.get(settings.log_level, settings.log_level.lower())
        faust_args = ["--loglevel", level, *faust_args]
    if not any(a.startswith(("--web", "--without-web")) for a in faust_args):
        # /metrics is ours; Faust's own web server would only take port 6066 (two workers
        # on one machine would clash), so it is off unless asked for.
        faust_args = ["--without-web", *faust_args]
    sys.argv = ["moments worker", "worker", *faust_args]
    app.main()
