"""The /metrics endpoint, with optional HTTP basic auth, and the health probes beside it.

`prometheus_client.start_http_server` has no authentication, so the exposition
app (`make_wsgi_app`) is wrapped in a small WSGI check and served the same way
(a daemon thread). Credentials are compared in constant time and never logged.
Basic auth sends the password in clear text: use it behind TLS or on a private
network (in Kubernetes, a NetworkPolicy that admits only Prometheus).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from moments.exceptions import ConfigError
from moments.health import Health
from moments.settings import Settings


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per scrape on stderr (prometheus_client's own is private)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
REALM = "moments metrics"


def basic_auth(app: WSGIApp, username: str, password: str) -> WSGIApp:
    """`app` behind HTTP basic auth: 401 with a challenge unless the credentials match."""
    expected = f"{username}:{password}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        given = b""
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                given = b""
        if given and hmac.compare_digest(given, expected):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"),
            ],
        )
        return [b"authentication required\n"]

    return guarded


def metrics_app(settings: Settings, registry: CollectorRegistry) -> WSGIApp:
    """The exposition app, behind basic auth when MOMENTS_METRICS_USERNAME/PASSWORD are set."""
    app: WSGIApp = make_wsgi_app(registry)
    if settings.metrics_username and settings.metrics_password is not None:
        app = basic_auth(
            app, settings.metrics_username, settings.metrics_password.get_secret_value()
        )
    return app


HEALTH_PATHS = ("/livez", "/readyz")
METRICS_PATH = "/metrics"


def _plain(start_response: Callable[..., Any], status: str, text: str) -> Iterable[bytes]:
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
    )
    return [text.encode()]


def routed(app: WSGIApp, health: Health | None) -> WSGIApp:
    """`app` on /metrics only, with /livez and /readyz from `health` when given: 200 or 503
    and one line saying why, with no login (a probe sends none, and they tell nothing about
    subscribers). Any other path is 404 naming the paths served, so that a scrape or probe
    configured with a wrong path fails instead of reading the metrics as its answer."""
    served = (METRICS_PATH, *(HEALTH_PATHS if health is not None else ()))

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == METRICS_PATH:
            return app(environ, start_response)
        if health is not None and path in HEALTH_PATHS:
            verdict = health.live() if path == "/livez" else health.ready()
            status = "200 OK" if verdict.ok else "503 Service Unavailable"
            return _plain(start_response, status, verdict.text())
        return _plain(
            start_response, "404 Not Found", f"not found: {path}; served: {', '.join(served)}\n"
        )

    return route


def serve_metrics(
    settings: Settings, registry: CollectorRegistry, health: Health | None = None
) -> WSGIServer:
    """Serve /metrics on MOMENTS_METRICS_HOST:MOMENTS_METRICS_PORT from a daemon thread,
    and /livez and /readyz from `health` when given."""

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in settings.metrics_host else socket.AF_INET

    app = routed(metrics_app(settings, registry), health)
    try:
        server = make_server(
            settings.metrics_host,
            settings.metrics_port,
            app,
            Server,
            handler_class=_QuietHandler,
        )
    except OSError as exc:  # taken port, foreign address, unknown host name
        raise ConfigError(
            f"cannot serve /metrics on {settings.metrics_host}:{settings.metrics_port}: "
            f"{exc.strerror or exc}; set MOMENTS_METRICS_PORT to a free port (0 turns "
            "/metrics off) or MOMENTS_METRICS_HOST to an address of this machine"
        ) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _page(port: int, query: str, auth: tuple[str, str] | None, timeout: float) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{METRICS_PATH}{query}")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (an http URL of ours)
        return str(response.read().decode())


def _named(text: str, name: str) -> list[Sample]:
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def scrape_samples(
    port: int, name: str, auth: tuple[str, str] | None = None, timeout: float = 2.0
) -> list[Sample]:
    """The samples called `name` on the /metrics of a local worker (127.0.0.1:`port`), with
    basic `auth` (user, password) if given. Raises OSError when it does not answer.

    It asks for that name alone (`?name[]=`): prometheus_client's exposition then collects
    only the collector that describes it, where the whole page (about 1,200 samples)
    costs the worker some 67,000 Python calls, which a bench polling every 0.2 s measured
    as the worker's own. Where that answer holds no such sample, the whole page is read:
    a custom collector that does not describe its names is left out of the restricted
    answer, and so is a family with labels but no series yet (it costs both reads, and
    sums to 0). A server that ignores the parameter sends the whole page at once, filtered
    here all the same."""
    query = "?" + urllib.parse.urlencode({"name[]": name})
    samples = _named(_page(port, query, auth, timeout), name)
    return samples or _named(_page(port, "", auth, timeout), name)


def scrape(
    port: int,
    name: str,
    labels: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> float:
    """The sum of the samples called `name` (with these labels, if given) on the /metrics
    of a local worker (127.0.0.1:`port`), with basic `auth` (user, password) if given,
    asking it for that name only (`scrape_samples`). Raises OSError when it does not answer."""
    wanted = (labels or {}).items()
    return sum(
        sample.value
        for sample in scrape_samples(port, name, auth)
        if wanted <= sample.labels.items()
    )
