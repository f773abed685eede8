"""Creating the topics a worker, the embedded stack or a test needs, before any client
reads their metadata (Tansu, like Kafka with `auto.create.topics.enable`, creates a topic
with a default partition count as soon as a client asks for it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from moments.exceptions import MomentsError

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


class TopicsError(MomentsError):
    """The broker refused to create a topic, or an existing one has another partition
    count where that matters (`strict`): waiting does not fix it."""


class TopicsUnreachableError(TopicsError, TimeoutError):
    """The broker did not answer in time. A `TimeoutError` too, so `sinks.retry` tries
    again while a command that calls `ensure_topics` once reports it as it is."""


def new_topics(
    topics: Mapping[str, int], compacted: Iterable[str] = (), replication_factor: int = 1
) -> list[Any]:
    """The `NewTopic` requests for `topics` (name -> partition count); those named in
    `compacted` get `cleanup.policy=compact`."""
    from aiokafka.admin import NewTopic

    compact = set(compacted)
    if unknown := compact - topics.keys():
        raise ValueError(f"compacted topics not in topics: {sorted(unknown)}")
    if bad := {name: n for name, n in topics.items() if n < 1}:
        raise ValueError(f"partition counts must be >= 1: {bad}")
    if replication_factor < 1:
        raise ValueError(f"replication factor must be >= 1: {replication_factor}")
    return [
        NewTopic(
            name,
            partitions,
            replication_factor,
            topic_configs={"cleanup.policy": "compact"} if name in compact else {},
        )
        for name, partitions in topics.items()
    ]


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    compacted: Iterable[str] = (),
    *,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
    strict: bool = False,
    client_kwargs: Mapping[str, Any] | None = None,
    judged: Mapping[str, int] | None = None,
) -> None:
    """Create `topics` (name -> partition count) with `replication_factor` replicas (1 on
    a single broker; a cluster with `min.insync.replicas=2` refuses writes to a topic of
    one), then return when every one is in the metadata.

    `client_kwargs` are extra admin-client arguments (security: see moments.connections).
    A topic that already exists is left as it is; if its partition count differs from
    the one asked for, a warning is logged (or `TopicsError` raised with `strict=True`),
    but for a topic that has the count `judged` names for it (name -> count): the caller
    read that count and judged it itself, saying it with its fix (a worker's tasks and
    withdrawals topics, `moments.topiclayout.output_counts` at its start; said here too,
    a start said their count twice, once without the fix). A count other than the one
    judged (the topic made again since) is warned of as any.
    A broker that does not answer within `timeout_s`, or that answers a create with an
    error of a broker away or failing over (NOT_CONTROLLER while the controller moves,
    REQUEST_TIMED_OUT: `sinks.retry.kafka_outage`), raises `TopicsUnreachableError`,
    which the workers retry; a refusal (an ACL, a replication factor the cluster cannot
    hold, a failed login) raises `TopicsError`.
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError, for_code

    from sinks import kafkacodes
    from sinks.retry import kafka_outage

    kafkacodes.install()  # a create refused with a code aiokafka lacks is named, not -1
    wanted = dict(topics)
    requests = new_topics(wanted, compacted, replication_factor)
    if not wanted:
        return

    timeout_ms = int(timeout_s * 1000)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="moments-ensure-topics",
        request_timeout_ms=timeout_ms,
        **dict(client_kwargs or {}),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            # Only what is missing is asked for: a managed cluster's service account may
            # not create topics, and Kafka refuses a CreateTopics it may not make
            # (TOPIC_AUTHORIZATION_FAILED) even for a topic that exists.
            existing = set(await _counts(admin, list(wanted)))
            missing = [r for r in requests if r.name not in existing]
            failures: list[str] = []
            refused = False
            if missing:
                response = await admin.create_topics(missing, timeout_ms=timeout_ms)
                for entry in response.topic_errors:
                    name, code = entry[0], entry[1]
                    message = entry[2] if len(entry) > 2 else None
                    if code == _TOPIC_ALREADY_EXISTS:
                        existing.add(name)
                    elif code != 0:
                        error = for_code(code)
                        refused = refused or not kafka_outage(error())
                        failures.append(
                            f"{name}: error {code} {error.__name__} {message or ''}".rstrip()
                        )
            if refused:
                raise TopicsError("could not create topics: " + "; ".join(failures))
            if failures:  # every one a broker away or failing over: retried
                raise TopicsUnreachableError(
                    f"could not create topics on {bootstrap} yet: " + "; ".join(failures)
                )
            actual = await _wait_for_topics(admin, list(wanted))
    except TopicsError:
        raise
    except TimeoutError as exc:
        raise TopicsUnreachableError(
            f"topics {sorted(wanted)} not ready on {bootstrap} within {timeout_s:.0f}s"
        ) from exc
    except KafkaError as exc:
        if not kafka_outage(exc):  # a refusal: a failed login, a version, an ACL
            raise TopicsError(f"Kafka {bootstrap} refused to create topics: {exc!r}") from exc
        raise TopicsUnreachableError(f"could not create topics on {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()

    said = dict(judged or {})
    mismatched = {
        name: (wanted[name], actual[name])
        for name in existing
        if actual.get(name) != wanted[name] and actual.get(name) != said.get(name)
    }
    if mismatched:
        detail = ", ".join(f"{n}: asked {w}, has {a}" for n, (w, a) in sorted(mismatched.items()))
        if strict:
            raise TopicsError(f"existing topics have other partition counts: {detail}")
        log.warning("existing topics have other partition counts: %s", detail)


async def _counts(admin: Any, names: list[str]) -> dict[str, int]:
    """The partition counts of those of `names` that exist, from one Metadata request."""
    from aiokafka.protocol.metadata import MetadataRequest

    # allow_auto_topic_creation=False: never create a topic by looking at it.
    request = MetadataRequest(names, allow_auto_topic_creation=False)
    response = await admin._send_request(request)
    counts: dict[str, int] = {}
    for topic in response.to_object()["topics"]:
        if topic["error_code"] == 0 and topic["partitions"]:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def _wait_for_topics(admin: Any, names: list[str]) -> dict[str, int]:
    """Poll metadata until all `names` have partitions; name -> partition count."""
    delay = 0.02
    while True:
        counts = await _counts(admin, names)
        if all(name in counts for name in names):
            return counts
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
