"""Settings -> arguments of every Kafka and Redis client the project creates.

One place turns `MOMENTS_KAFKA_SECURITY_PROTOCOL`, SASL and TLS settings into
aiokafka keyword arguments and Faust `broker_credentials`, and the Redis
settings into a `redis.asyncio.Redis`. `preflight()` opens one connection to
each before a worker starts, so wrong credentials stop it at once with a message
naming the variable to fix (an unreachable server is left to the usual retries).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import ssl
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from moments import redisurl
from moments.exceptions import ConfigError, RedisClusterError
from moments.redisurl import redacted_url
from sinks import kafkacodes

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT
    from redis.asyncio import Redis

    from moments.settings import Settings

log = logging.getLogger(__name__)

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_CONNECT_ATTEMPTS = 2
_RECONNECT_PAUSE_S = 1.0
_CREDENTIALS_HELP = (
    "check MOMENTS_KAFKA_SASL_USERNAME and MOMENTS_KAFKA_SASL_PASSWORD "
    "(or MOMENTS_KAFKA_SASL_PASSWORD_FILE)"
)


def security_problems(settings: Settings) -> list[str]:
    """Cross-field mistakes in the security settings, each naming the variable to fix."""
    problems: list[str] = []
    protocol = settings.kafka_security_protocol
    if protocol in SASL_PROTOCOLS:
        if not settings.kafka_sasl_username:
            problems.append(
                f"MOMENTS_KAFKA_SASL_USERNAME: required with "
                f"MOMENTS_KAFKA_SECURITY_PROTOCOL={protocol}"
            )
        if settings.kafka_sasl_password is None:
            problems.append(
                "MOMENTS_KAFKA_SASL_PASSWORD (or MOMENTS_KAFKA_SASL_PASSWORD_FILE): required "
                f"with MOMENTS_KAFKA_SECURITY_PROTOCOL={protocol}"
            )
    elif settings.kafka_sasl_username or settings.kafka_sasl_password is not None:
        problems.append(
            "MOMENTS_KAFKA_SASL_USERNAME/PASSWORD are set but MOMENTS_KAFKA_SECURITY_PROTOCOL="
            f"{protocol} does not use them; set it to SASL_SSL (or SASL_PLAINTEXT)"
        )
    tls_files = {
        "MOMENTS_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "MOMENTS_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "MOMENTS_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
        "MOMENTS_REDIS_SSL_CAFILE": settings.redis_ssl_cafile,
    }
    for variable, path in tls_files.items():
        if path is not None and not os.access(path, os.R_OK):
            problems.append(f"{variable}: {path} is missing or unreadable; point it at a PEM file")
    kafka_tls = (settings.kafka_ssl_cafile, settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    if protocol not in TLS_PROTOCOLS and any(p is not None for p in kafka_tls):
        problems.append(
            f"MOMENTS_KAFKA_SSL_* files are set but MOMENTS_KAFKA_SECURITY_PROTOCOL={protocol} "
            "does not use TLS; set it to SSL or SASL_SSL"
        )
    if (settings.kafka_ssl_certfile is None) != (settings.kafka_ssl_keyfile is None):
        problems.append(
            "MOMENTS_KAFKA_SSL_CERTFILE and MOMENTS_KAFKA_SSL_KEYFILE go together; set both or none"
        )
    url = urlsplit(settings.redis_url)
    if any(redisurl.login(settings.redis_url)) and (
        settings.redis_username or settings.redis_password is not None
    ):
        problems.append(
            "MOMENTS_REDIS_URL carries credentials (user:password@ or ?username=/?password=) "
            "and MOMENTS_REDIS_USERNAME/PASSWORD are set too; keep them in "
            "MOMENTS_REDIS_USERNAME and MOMENTS_REDIS_PASSWORD(_FILE) only"
        )
    if settings.redis_ssl_cafile is not None and url.scheme != "rediss":
        problems.append(
            "MOMENTS_REDIS_SSL_CAFILE is set but MOMENTS_REDIS_URL is not rediss://; "
            "use rediss:// for TLS"
        )
    if (settings.metrics_username is None) != (settings.metrics_password is None):
        problems.append(
            "MOMENTS_METRICS_USERNAME and MOMENTS_METRICS_PASSWORD go together; set both or none"
        )
    elif settings.metrics_password is not None and not (
        settings.metrics_username and settings.metrics_password.get_secret_value()
    ):
        # An empty user served /metrics with no login at all, an empty password took "u:".
        problems.append(
            "MOMENTS_METRICS_USERNAME and MOMENTS_METRICS_PASSWORD (or its _FILE) are set but "
            "one is empty; give both a value, or unset both to serve /metrics without a login"
        )
    return problems


# --------------------------------------------------------------------------- #
# Kafka                                                                       #
# --------------------------------------------------------------------------- #


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context (system CAs, or MOMENTS_KAFKA_SSL_CAFILE), or None without TLS."""
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"MOMENTS_KAFKA_SSL_CAFILE {cafile}: no CA certificate could be read from it "
            f"({_tls_reason(exc)}); point it at the PEM file of the CA that signed the "
            "broker's certificate"
        ) from None
    if settings.kafka_ssl_certfile is not None and settings.kafka_ssl_keyfile is not None:
        key_password = settings.kafka_ssl_key_password
        secret = key_password.get_secret_value() if key_password else ""
        try:
            # A callable, never None: with None, OpenSSL asks for an encrypted key's pass
            # phrase on the terminal, and `kubectl exec -it ... moments check` hung there.
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile),
                password=lambda: secret,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"MOMENTS_KAFKA_SSL_CERTFILE {settings.kafka_ssl_certfile} and "
                f"MOMENTS_KAFKA_SSL_KEYFILE {settings.kafka_ssl_keyfile}: {_tls_reason(exc)}; "
                "give the client certificate and its own private key, both PEM, and "
                "MOMENTS_KAFKA_SSL_KEY_PASSWORD when the key is encrypted"
            ) from None
    return context


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return str(getattr(exc, "strerror", None) or exc)


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Security arguments for `AIOKafkaProducer`, `AIOKafkaConsumer` and `AIOKafkaAdminClient`;
    gives aiokafka the error codes it does not know first (`sinks.kafkacodes`)."""
    kafkacodes.install()
    kwargs: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.kafka_security_protocol in SASL_PROTOCOLS:
        password = settings.kafka_sasl_password
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password else None,
        )
    return kwargs


def faust_broker_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's `broker_credentials` for the same settings (None: plaintext)."""
    import faust

    kafkacodes.install()  # the worker's consumer and producer, as `kafka_client_kwargs`

    context = kafka_ssl_context(settings)
    if settings.kafka_security_protocol in SASL_PROTOCOLS:
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""The mechanisms moments logs in with (`MOMENTS_KAFKA_SASL_MECHANISM`)."""
_ENABLED = re.compile(r"Enabled mechanisms are: \[(.*?)\]")
"""aiokafka's message when the broker answered the handshake with its own list."""


def _mechanism_fix(exc: BaseException) -> str:
    """What to set when the broker refused the mechanism: one of those it listed that
    moments speaks. The fix named moments' three as if the broker offered them, and a
    broker that offered only PLAIN was said to enable SCRAM-SHA-512, which it had refused."""
    found = _ENABLED.search(str(exc))
    offered = [m.strip(" '\"") for m in found.group(1).split(",")] if found else []
    offered = [m for m in offered if m]
    usable = [m for m in offered if m in SASL_MECHANISMS]
    if usable:
        return f"set MOMENTS_KAFKA_SASL_MECHANISM to {' or '.join(usable)}, which it offers"
    if offered:
        return (
            f"it offers {', '.join(offered)}, none of which moments logs in with: enable "
            f"{', '.join(SASL_MECHANISMS[:-1])} or {SASL_MECHANISMS[-1]} on its listener "
            "(sasl.enabled.mechanisms)"
        )
    return (
        "set MOMENTS_KAFKA_SASL_MECHANISM to one its listener enables (the broker's "
        f"sasl.enabled.mechanisms); moments logs in with {', '.join(SASL_MECHANISMS[:-1])} "
        f"or {SASL_MECHANISMS[-1]}"
    )


def describe_kafka_failure(settings: Settings, exc: BaseException) -> str | None:
    """What to fix when connecting failed for a reason retries cannot cure; None otherwise."""
    from aiokafka import errors

    protocol = settings.kafka_security_protocol
    mechanism = settings.kafka_sasl_mechanism
    where = f"Kafka {settings.kafka_bootstrap}"
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return f"{where} does not offer SASL mechanism {mechanism}; {_mechanism_fix(exc)}"
    if isinstance(exc, errors.SaslAuthenticationFailed) or (
        # aiokafka fails on a SCRAM server-final message `e=...` with KeyError/ValueError
        protocol in SASL_PROTOCOLS and isinstance(exc, KeyError | ValueError)
    ):
        return (
            f"{where} refused the SASL {mechanism} login of user "
            f"{settings.kafka_sasl_username!r}; {_CREDENTIALS_HELP}"
        )
    closed = isinstance(exc, errors.KafkaConnectionError) and "closed" in str(exc)
    if closed and protocol in SASL_PROTOCOLS:
        # TCP connected, then the broker hung up during the handshake: Tansu does this
        # for a mechanism it does not offer; Kafka for a login it refuses.
        return (
            f"{where} closed the connection during the SASL {mechanism} login; check "
            f"MOMENTS_KAFKA_SASL_MECHANISM (is it enabled on the broker?) and {_CREDENTIALS_HELP}"
        )
    if closed and protocol in TLS_PROTOCOLS:
        # With TLS 1.3 the client's handshake completes before the server checks the
        # client certificate; a listener that wants one it trusts then hangs up.
        which = (
            "did not accept the client certificate in MOMENTS_KAFKA_SSL_CERTFILE; use one "
            "signed by a CA the broker trusts"
            if settings.kafka_ssl_certfile is not None
            else "probably requires a client certificate; set MOMENTS_KAFKA_SSL_CERTFILE and "
            "MOMENTS_KAFKA_SSL_KEYFILE"
        )
        return f"{where} closed the connection right after the TLS handshake: it {which}"
    if closed:
        return (
            f"{where} closed the connection before answering; if its listener speaks TLS, "
            "set MOMENTS_KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL) and MOMENTS_KAFKA_SSL_CAFILE; "
            "if it is not a Kafka listener, fix MOMENTS_KAFKA_BOOTSTRAP"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"{where}: the broker's TLS certificate was not trusted ({exc.verify_message}); "
            "set MOMENTS_KAFKA_SSL_CAFILE to the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"{where}: TLS handshake failed ({exc.reason}); check that the listener speaks TLS "
            "(MOMENTS_KAFKA_SECURITY_PROTOCOL) and MOMENTS_KAFKA_SSL_CERTFILE/KEYFILE"
        )
    return None


async def check_kafka(
    settings: Settings, timeout_s: float = 10.0, report: bool = True
) -> dict[str, int] | None:
    """Log in to a bootstrap server (each in turn, until one answers) and ask for metadata.

    The partition count of every topic when it worked, None when the server could not be
    reached (logged, left to the retries; with `report` false, ConnectionError instead);
    raises `ConfigError` when the security settings are what is wrong.
    """
    from aiokafka.cluster import ClusterMetadata

    kwargs = kafka_client_kwargs(settings)
    unreachable: BaseException | None = None
    # Each server in turn, as the clients do: a worker restarted while the first of a
    # cluster's brokers was down waited for it for ever (re-check).
    for server in settings.bootstrap_servers:
        try:
            metadata = await _metadata(settings, server, kwargs, timeout_s)
        except _NoAnswerError as exc:
            unreachable = exc.__cause__ or exc
            continue
        cluster = ClusterMetadata()
        cluster.update_metadata(metadata)
        return {t: len(cluster.partitions_for_topic(t) or ()) for t in cluster.topics()}
    assert unreachable is not None  # a bootstrap list is never empty (settings)
    _unreachable(settings, unreachable, report)
    return None


_PROBE_ID = 0x6D6F6D73
"""The correlation id of `_not_kafka`'s request, which a Kafka broker's answer repeats."""
_PROBE_CLIENT = b"moments-probe"
_PROBE = struct.pack(">hhih", 18, 0, _PROBE_ID, len(_PROBE_CLIENT)) + _PROBE_CLIENT
"""An ApiVersions v0 request (api key 18), which every Kafka broker answers before a login."""
_PROBE_TIMEOUT_S = 3.0
_SPOKEN: tuple[tuple[tuple[bytes, ...], str], ...] = (
    ((b"-ERR", b"-NOAUTH", b"-DENIED", b"+PONG", b"-WRONGPASS"), "a Redis server"),
    ((b"HTTP/",), "an HTTP server"),
    ((b"SSH-",), "an SSH server"),
    ((b"\x15\x03",), "a TLS listener"),
)
"""How the servers a bootstrap address is mistaken for start their answer."""


_PROBED: dict[tuple[str, int], float] = {}
"""Addresses `_not_kafka` reached and found no other server at, in this process, and when
(`_clock`) to ask again: never where a Kafka broker answered; `_PROBE_AGAIN_S` on where
the listener said nothing. A listener that takes the connection and says nothing (a
broker hung or starting) keeps the probe waiting `_PROBE_TIMEOUT_S` for each of its two
requests, which each failed attempt of a start waiting for Kafka added again; but a
silent one may answer later as what it is (a load balancer or port-forward whose backend
came up, a Redis busy with a long command), and remembered for good it was never named:
the worker waited for Kafka for ever. An address where nothing connected is probed again
(at no cost): what listens there later is still named."""
_PROBE_AGAIN_S = 60.0
"""How long a silent address is left unprobed: a few of a starting worker's retries (at
most `KAFKA_WAIT_MAX_S`, 15 s, apart) for each probe's wait."""
_clock = time.monotonic


async def _not_kafka(host: str, port: int) -> str | None:
    """What answers at `host:port` when it is not a Kafka broker (`... answered
    b'-NOAUTH ...': a Redis server`), None when nothing connects, it answers as Kafka, or
    it says nothing.

    Sends an ApiVersions request, which a Kafka broker answers (its size and correlation
    id first) and an HTTP server answers with an error page; to one that says nothing
    (Redis waits for a line end, and reads none past a request's first, zero, byte) it
    then sends `PING` and a line end on a new connection, which Redis and HTTP servers
    answer in text (and a Kafka broker refuses, closing the connection). aiokafka waited
    for a reply that never came ("no answer"), or read a text's first bytes as a frame's
    size and waited for hundreds of megabytes. Once per address that it reaches
    (`_PROBED`), or again a while later where it said nothing."""
    if _clock() < _PROBED.get((host, port), -math.inf):
        return None
    request = struct.pack(">i", len(_PROBE)) + _PROBE
    answer = await _first_bytes(host, port, request)
    reached = answer is not None
    if answer == b"":
        answer = await _first_bytes(host, port, b"PING\r\n")
    if not answer:
        if reached:
            _PROBED[host, port] = _clock() + _PROBE_AGAIN_S  # silent: not each attempt
        return None
    if len(answer) >= 8:
        size, correlation = struct.unpack(">ii", answer[:8])
        if correlation == _PROBE_ID and 0 < size < 1 << 20:
            _PROBED[host, port] = math.inf
            return None  # a Kafka broker's answer
    elif _may_be_frame(answer):
        _PROBED[host, port] = math.inf
        return None  # a frame's start, cut off: a broker that hung up or is slow, retried
    kind = next((k for starts, k in _SPOKEN if answer.startswith(starts)), None)
    return (
        f"something answered that is not a Kafka broker ({kind or 'an unknown server'}: "
        f"{answer[:40]!r})"
    )


async def _first_bytes(host: str, port: int, request: bytes) -> bytes | None:
    """The first bytes answered to `request` on a new connection (at least a Kafka
    frame's size and correlation id when it starts as one); b"" when the server said
    nothing within `_PROBE_TIMEOUT_S`; None when nothing connected or it hung up."""
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return None
    answer = b""
    try:
        writer.write(request)
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            await writer.drain()
            answer = await reader.read(64)
            while _may_be_frame(answer):
                # A stream keeps no frame boundaries: a broker's (or a proxy's) answer may
                # come in pieces, its size first; one read took it for an unknown server.
                more = await reader.read(64)
                if not more:
                    break
                answer += more
            return answer or None
    except TimeoutError:
        return answer
    except OSError:
        return None
    finally:
        writer.close()


def _may_be_frame(answer: bytes) -> bool:
    """Whether `answer` may be the start, cut short of its size and correlation id, of a
    Kafka frame (a size under 16 MiB starts with a zero byte; no text answer does)."""
    return 0 < len(answer) < 8 and answer[0] == 0


class _NoAnswerError(Exception):
    """A bootstrap server did not answer (its cause says how): the next is tried."""


async def _metadata(
    settings: Settings, server: str, kwargs: dict[str, Any], timeout_s: float
) -> Any:
    """Log in to one bootstrap server and ask for metadata; `ConfigError` when the
    security settings are what is wrong, `_NoAnswerError` when it does not answer."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.protocol.metadata import MetadataRequest

    from moments.settings import split_host_port

    host, port = split_host_port(server)
    for attempt in range(_CONNECT_ATTEMPTS):
        again = attempt + 1 < _CONNECT_ATTEMPTS
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(
                    host,
                    port,
                    client_id=f"{settings.app_id}-preflight",
                    request_timeout_ms=int(timeout_s * 1000),
                    **kwargs,
                )
        except Exception as exc:  # classified below; the rest is retried
            await _stop_if_not_kafka(settings, server, host, port, exc)
            problem = describe_kafka_failure(settings, exc)
            if problem is not None and "closed" in problem and again:
                # A hang-up may be a broker restarting: only the same answer twice is ours.
                await asyncio.sleep(_RECONNECT_PAUSE_S)
                continue
            if problem is not None:
                raise ConfigError(problem) from None
            raise _NoAnswerError(server) from exc
        try:
            async with asyncio.timeout(timeout_s):
                return await conn.send(MetadataRequest([], allow_auto_topic_creation=False))
        except KafkaConnectionError as exc:
            # A broker that wants a login answers ApiVersions, then hangs up on Metadata;
            # so may one restarting: only the same answer twice is ours.
            if again:
                await asyncio.sleep(_RECONNECT_PAUSE_S)
                continue
            raise ConfigError(_closed_on_metadata(settings, exc)) from None
        except Exception as exc:  # no answer in time: the retries' to cure
            raise _NoAnswerError(server) from exc
        finally:
            conn.close()
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _stop_if_not_kafka(
    settings: Settings, server: str, host: str, port: int, exc: BaseException
) -> None:
    """`ConfigError` naming the variable when what took the connection at `server` and
    then hung up or said nothing Kafka understands is not a Kafka broker (`_not_kafka`).
    Not asked with TLS, whose handshake failing says more, nor after a login's error."""
    from aiokafka.errors import KafkaConnectionError

    if settings.kafka_security_protocol in TLS_PROTOCOLS:
        return
    if not isinstance(exc, TimeoutError | KafkaConnectionError):
        return
    other = await _not_kafka(host, port)
    if other is not None and "a TLS listener" in other:
        # A Kafka listener that speaks TLS answers plaintext with an alert: the address
        # may be right, the protocol is what is wrong.
        raise ConfigError(
            f"Kafka {server}: {other}; if it is a Kafka listener that speaks TLS, set "
            "MOMENTS_KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL) and MOMENTS_KAFKA_SSL_CAFILE; "
            "otherwise fix MOMENTS_KAFKA_BOOTSTRAP"
        ) from None
    if other is not None:
        raise ConfigError(
            f"Kafka {server}: {other}; check MOMENTS_KAFKA_BOOTSTRAP: it must name the host "
            "and port of a Kafka listener (9092 by default), not Redis's (6379) or an HTTP port"
        ) from None


def _unreachable(settings: Settings, exc: BaseException, report: bool) -> None:
    """See `check_kafka`: None and a warning, or ConnectionError without `report`."""
    if not report:
        raise ConnectionError(f"no answer from {settings.kafka_bootstrap}: {exc!r}") from exc
    log.warning("Kafka %s not reachable yet: %r", settings.kafka_bootstrap, exc)
    return


def _closed_on_metadata(settings: Settings, exc: BaseException) -> str:
    if settings.kafka_security_protocol not in SASL_PROTOCOLS:
        return (
            f"Kafka {settings.kafka_bootstrap} answered ApiVersions but closed the connection "
            f"on Metadata twice ({type(exc).__name__}): it probably requires authentication; "
            "set MOMENTS_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT) and "
            "MOMENTS_KAFKA_SASL_USERNAME/PASSWORD"
        )
    return (
        f"Kafka {settings.kafka_bootstrap} closed the connection after the SASL login "
        f"({type(exc).__name__}); {_CREDENTIALS_HELP}"
    )


# --------------------------------------------------------------------------- #
# Redis                                                                       #
# --------------------------------------------------------------------------- #


REDIS_TIMEOUT_S = 5.0
"""The workers' Redis client's socket timeouts."""


def redis_client(settings: Settings, timeout: float = REDIS_TIMEOUT_S) -> Redis:
    """`redis.asyncio.Redis` for MOMENTS_REDIS_URL with the username, password and CA settings."""
    from redis.asyncio import Redis

    from moments.secret_files import secret_file_of

    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    password_file = secret_file_of("redis_password")
    if settings.redis_password is not None and password_file is not None:
        # Read again at each new connection: a rotated Secret is taken without a restart.
        from moments.redislogin import PasswordFileLogin

        kwargs["credential_provider"] = PasswordFileLogin(
            settings.redis_username or None,
            password_file,
            settings.redis_password.get_secret_value(),
        )
    else:
        if settings.redis_username:
            kwargs["username"] = settings.redis_username
        if settings.redis_password is not None:
            kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_ssl_cafile is not None:
        kwargs["ssl_ca_certs"] = str(settings.redis_ssl_cafile)
    return Redis.from_url(settings.redis_url, **kwargs)


def describe_redis_failure(settings: Settings, exc: BaseException) -> str | None:
    """What to fix when Redis refused us for a reason retries cannot cure; None otherwise."""
    from redis import exceptions as rx

    where = f"Redis {redacted_url(settings.redis_url)}"
    if isinstance(exc, rx.AuthenticationError | rx.AuthenticationWrongNumberOfArgsError):
        if settings.redis_password is None and redisurl.login(settings.redis_url)[1] is None:
            # No password given: Redis's reply ("HELLO must be called with the client
            # already authenticated, ...", "NOAUTH Authentication required.") named no fix.
            return (
                f"{where} asks for a password and none is set: set MOMENTS_REDIS_PASSWORD "
                "(or MOMENTS_REDIS_PASSWORD_FILE), and MOMENTS_REDIS_USERNAME for an ACL user "
                "other than 'default'"
            )
        user = settings.redis_username or redisurl.login(settings.redis_url)[0] or "default"
        if settings.redis_password is None:  # the URL's login (both at once are refused)
            return (
                f"{where} refused the login of user {user!r} ({exc}); check the user and "
                "password in MOMENTS_REDIS_URL (user:password@ or ?username=&password=), or "
                "take them out of it and set MOMENTS_REDIS_USERNAME and "
                "MOMENTS_REDIS_PASSWORD_FILE"
            )
        return (
            f"{where} refused the login of user {user!r} ({exc}); check MOMENTS_REDIS_USERNAME "
            "and MOMENTS_REDIS_PASSWORD (or MOMENTS_REDIS_PASSWORD_FILE)"
        )
    if isinstance(exc, rx.NoPermissionError):
        return (
            f"{where}: the user may not run a command the ledger needs on its keys "
            f"({settings.redis_prefix}*) ({exc}); grant it "
            "~moments:* +@read +@write +@scripting +ping -@dangerous (see docs/security.md)"
        )
    if isinstance(exc, rx.ResponseError) and "DB index is out of range" in str(exc):
        # The answer to the connection's SELECT: no waiting makes the database appear.
        db = redisurl.database(settings.redis_url)
        return (
            f"{where} has no database {db} ({exc}: a Redis numbers its databases from 0 to "
            "its `databases` setting less one, 0-15 by default, and a managed or cluster-mode "
            "one may have database 0 alone); set MOMENTS_REDIS_URL to a database it has, "
            "e.g. /0"
        )
    cause = exc.__context__ or exc.__cause__
    if isinstance(exc, rx.ConnectionError) and isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"{where}: the server's TLS certificate was not trusted ({cause.verify_message}); "
            "set MOMENTS_REDIS_SSL_CAFILE to the CA that signed it"
        )
    if isinstance(exc, rx.ConnectionError) and isinstance(cause, ssl.SSLError):
        return f"{where}: TLS handshake failed ({cause.reason}); use rediss:// only for a TLS port"
    return None


KEYS_PROBE = "return redis.call('EXISTS', unpack(KEYS))"
"""Read keys of the app's (`moments:<app id>:*`, `probe_keys`) from a script, as the ledger
does: an ACL user allowed PING but not those keys, or not scripts, fails here, not in the
worker; a Redis Cluster refuses keys of two hash slots (CROSSSLOT), as it would the ledger's."""


def probe_keys(prefix: str) -> list[str]:
    """`<prefix>preflight` and a key of another hash slot (`KEYS_PROBE`); the first alone
    when the prefix holds a hash tag (`{...}`: every key of the app shares its slot)."""
    from redis.crc import key_slot

    first = f"{prefix}preflight"
    for n in range(16):
        if key_slot(f"{first}:{n}".encode()) != key_slot(first.encode()):
            return [first, f"{first}:{n}"]
    return [first]


def cluster_refused(settings: Settings, shown_by: str) -> RedisClusterError:
    """The refusal of a Redis in cluster mode, with the fix; `shown_by`: what said so."""
    return RedisClusterError(
        f"Redis {redacted_url(settings.redis_url)} runs in cluster mode ({shown_by}): the "
        "ledger's Lua scripts read and write keys of many hash slots in one call (a batch's "
        "tasks and the pending index), which Redis Cluster refuses (CROSSSLOT); set "
        "MOMENTS_REDIS_URL to a Redis without cluster mode: a standalone Redis, or the "
        "primary endpoint of a managed Redis with cluster mode disabled (docs/operations.md, "
        "'Against a managed Redis')"
    )


async def probe_redis(client: Redis, settings: Settings) -> None:
    """PING, then refuse a Redis in cluster mode (`RedisClusterError`: INFO's
    `cluster_enabled:1`, or a cluster's reply to `KEYS_PROBE` when INFO is denied, as the
    recommended ACL's `-@dangerous` denies it), then run `KEYS_PROBE` (nothing is
    written). Redis's other errors are raised as they are."""
    from redis import exceptions as rx

    await client.ping()
    try:
        info = await client.info("cluster")
    except rx.ResponseError:  # denied by the ACL, or renamed away: the probe tells
        info = {}
    if str(info.get("cluster_enabled", 0)) == "1":
        raise cluster_refused(settings, "INFO cluster: cluster_enabled:1")
    keys = probe_keys(settings.redis_prefix)
    try:
        await client.eval(KEYS_PROBE, len(keys), *keys)
    except (rx.ClusterCrossSlotError, rx.MovedError, rx.AskError, rx.ClusterDownError) as exc:
        raise cluster_refused(settings, f"{type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class EvictionNote:
    """What `eviction_note` found: `known` false where Redis would not say (INFO denied)."""

    text: str
    known: bool


async def eviction_note(client: Redis, settings: Settings) -> EvictionNote | None:
    """What a Redis that evicts keys when full would cost, with the fix; None when it
    does not (`maxmemory-policy noeviction`, or no `maxmemory`). Where INFO is denied (the
    recommended ACL's `-@dangerous`, or renamed away) it cannot be told: the note says so
    and how to read the policy by hand, not an all-clear. Managed Redis services default
    to evicting (ElastiCache's `volatile-lru`), and the ledger's entries all expire, so
    every policy but noeviction may drop them."""
    from redis import exceptions as rx

    where = redacted_url(settings.redis_url)
    try:
        info = await client.info("memory")
    except rx.ResponseError as exc:
        return EvictionNote(
            f"could not tell whether Redis {where} evicts keys when full: it refused this "
            f"login INFO memory ({exc}; the recommended ACL's -@dangerous denies it); check by "
            f"hand as an admin user, `redis-cli -u {where} --user ADMIN --askpass CONFIG GET "
            "maxmemory-policy` must answer noeviction (or `CONFIG GET maxmemory` 0), on a "
            "managed Redis the maxmemory-policy of its parameter group (docs/operations.md, "
            "'Redis must keep its data')",
            known=False,
        )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    limit = int(info.get("maxmemory", 0) or 0)
    if policy == "noeviction" or limit == 0:
        return None
    # In MiB: the log's masking takes a long run of digits for a subscriber number.
    return EvictionNote(
        f"Redis {where} evicts keys once it holds maxmemory "
        f"({limit / 2**20:.0f} MiB; maxmemory-policy {policy}): an evicted dedup ledger "
        "entry lets its task go out again, an evicted waiting task is never sent; set "
        "maxmemory-policy noeviction (docs/operations.md, 'Redis must keep its data')",
        known=True,
    )


async def check_redis(
    settings: Settings,
    timeout_s: float = REDIS_TIMEOUT_S,
    report: bool = True,
    warnings: list[str] | None = None,
) -> bool:
    """`probe_redis` with the configured credentials; like `check_kafka` (with `report`
    false, ConnectionError instead of a warning and False). What would cost tasks but
    does not stop a worker (`eviction_note`) goes into `warnings` when given, else is
    logged: at WARNING a Redis that evicts, at INFO one that would not say."""
    from redis.exceptions import RedisError

    client = redis_client(settings, timeout_s)
    try:
        # Bounded as a whole: each command of the connection's handshake (HELLO, AUTH,
        # CLIENT SETINFO) waits up to the socket timeout, and a Redis that answered each
        # just in time passed a 10 s check after 28 s (re-check).
        async with asyncio.timeout(timeout_s):
            await probe_redis(client, settings)
            evicting = await eviction_note(client, settings)
        if evicting is not None and warnings is not None:
            warnings.append(evicting.text)
        elif evicting is not None:
            log.log(logging.WARNING if evicting.known else logging.INFO, "%s", evicting.text)
    except (RedisError, OSError) as exc:
        problem = describe_redis_failure(settings, exc)
        if problem is not None:
            raise ConfigError(problem) from None
        where = redacted_url(settings.redis_url)
        if not report:
            raise ConnectionError(f"no answer from {where}: {exc!r}") from None
        log.warning("Redis %s not reachable yet: %r", where, exc)
        return False
    finally:
        await client.aclose()
    return True


async def preflight(settings: Settings) -> dict[str, int] | None:
    """Fail fast on wrong credentials or TLS trust before a worker or tool starts; the
    topics' partition counts as Kafka answered them (None: not reachable yet)."""
    counts, _ = await asyncio.gather(check_kafka(settings), check_redis(settings))
    return counts


def require_kafka(settings: Settings) -> None:
    """For a one-off command, which has nothing to wait for: stop with the fix
    (`ConfigError`) when Kafka cannot be reached or refuses us, in one line with what the
    connection said (not the worker's "not reachable yet" warning before it: nothing
    waits)."""
    try:
        asyncio.run(check_kafka(settings, report=False))
    except ConnectionError as exc:
        raise ConfigError(
            f"Kafka {settings.kafka_bootstrap} is not reachable; start it or set "
            f"MOMENTS_KAFKA_BOOTSTRAP ({_no_answer(exc)})"
        ) from None


def require_redis(settings: Settings, why: str) -> None:
    """As `require_kafka`, for Redis; `why` says what the command keeps there."""
    try:
        asyncio.run(check_redis(settings, report=False))
    except ConnectionError as exc:
        raise ConfigError(
            f"Redis {redacted_url(settings.redis_url)} is not reachable ({why}); start it or "
            f"set MOMENTS_REDIS_URL ({_no_answer(exc)})"
        ) from None


def _no_answer(exc: ConnectionError) -> str:
    """What `check_kafka` / `check_redis` said of a server that did not answer, without the
    address the message around it names already."""
    said = str(exc)
    return "no answer: " + said.split(": ", 1)[1] if said.startswith("no answer from ") else said
