"""The /metrics endpoint, with optional HTTP basic auth.

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
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from moments.settings import Settings

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


def serve_metrics(settings: Settings, registry: CollectorRegistry) -> WSGIServer:
    """Serve /metrics on MOMENTS_METRICS_HOST:MOMENTS_METRICS_PORT from a daemon thread."""

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in settings.metrics_host else socket.AF_INET

    server = make_server(
        settings.metrics_host,
        settings.metrics_port,
        metrics_app(settings, registry),
        Server,
        handler_class=_SilentHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
