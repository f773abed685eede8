"""Retry a call to Redis or Kafka with exponential back-off, visible in metrics and logs.

An unreachable dependency never crashes the worker and is never swallowed: the
batch waits (its offsets are not committed) until the call goes through.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from sinks.metrics import Dependency, Metrics

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError)


@functools.cache  # imported when first needed, then kept: called for every Redis call
def _retryable() -> tuple[type[BaseException], ...]:
    from aiokafka.errors import KafkaError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import (
        MasterDownError,
        OutOfMemoryError,
        ReadOnlyError,
        TryAgainError,
    )
    from redis.exceptions import TimeoutError as RedisTimeoutError

    # Replies of a Redis that is there but cannot serve now: a failover (a replica still
    # read-only, the master down), memory full until keys expire, a cluster slot moving.
    states = (MasterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError)
    return (*RETRYABLE, KafkaError, RedisConnectionError, RedisTimeoutError, *states)


_PIPELINE_ERROR = " of pipeline caused error: "
"""What redis-py puts before a pipeline's first error reply (`Command # 1 (HGETALL ...)
of pipeline caused error: BUSY ...`)."""
_NOT_NOW = ("BUSY ", "MISCONF ", "NOREPLICAS ")
"""Replies of a Redis that will serve once its state changes, which redis-py gives no
class of their own (a plain ResponseError): `BUSY`, another client's script running past
the busy threshold (5 s by default); `MISCONF`, writes refused while Redis cannot persist
(its disk full, its AOF or snapshot failing); `NOREPLICAS`, writes refused while fewer
replicas than `min-replicas-to-write` answer."""


def _not_now(exc: BaseException) -> bool:
    """One of the `_NOT_NOW` replies, told by its first word, after the command's number
    when a pipeline (the stores' plain reads and deletes) raised it."""
    from redis.exceptions import ResponseError

    if not isinstance(exc, ResponseError):
        return False
    reply = str(exc)
    return (reply.partition(_PIPELINE_ERROR)[2] or reply).startswith(_NOT_NOW)


@functools.cache
def _not_retryable() -> tuple[type[BaseException], ...]:
    """Refused credentials: waiting does not fix them (redis-py files them under
    ConnectionError). moments.connections.preflight explains them at start-up."""
    from redis.exceptions import AuthenticationError

    return (AuthenticationError,)


async def with_retry(
    call: Callable[[], Awaitable[T]],
    dependency: Dependency,
    metrics: Metrics,
    what: str,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
) -> T:
    """Await `call()` until it succeeds; back off between failures (forever: the caller
    decides when to give up by cancelling)."""
    errors = _retryable()
    fatal = _not_retryable()
    delay = first_delay
    attempt = 0
    up = metrics.up_of[dependency]
    while True:
        try:
            value = await call()
        except Exception as exc:
            if isinstance(exc, fatal) or not (isinstance(exc, errors) or _not_now(exc)):
                raise
            attempt += 1
            metrics.dependency_errors.labels(dependency.value).inc()
            up.set(0)
            level = logging.WARNING if attempt in (1, 10) or attempt % 100 == 0 else logging.DEBUG
            log.log(
                level,
                "%s unavailable while %s (attempt %d, retrying in %.1fs): %s: %s",
                dependency.value,
                what,
                attempt,
                delay,
                type(exc).__name__,
                exc,
            )
            await asyncio.sleep(delay)
            delay = min(max_delay, delay * 2)
            continue
        if attempt:
            log.warning(
                "%s is back after %d failed attempts while %s", dependency.value, attempt, what
            )
        up.set(1)
        return value


class Retrying(Protocol):
    """A dependency's calls, each retried (`with_retry`) and named for the log: what the
    sink's collaborators are given to call its stores with."""

    def __call__(self, call: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]: ...
