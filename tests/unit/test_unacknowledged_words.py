"""The error of a write not acknowledged in time says what happened and the fix, in its
caller's words (`sinks.base.Unanswered`).

It ended "taken as the broker away" for every caller: right in the worker's log line
(`kafka unavailable while ... retrying`), odd in the dead-letter replay's `replay
stopped: ...`, which retries nothing."""

from __future__ import annotations

import pytest
from aiokafka import errors as k

import sinks.base
from moments.deadletter_replay import _send
from moments.exceptions import KafkaWriteError
from moments.settings import Settings
from sinks.base import produce_to_partitions

from .test_cli_delivery_deadline import Stuck, entry
from .test_delivery_deadline import Client, Unacknowledged

DEADLINE_S = 0.01

WHAT_HAPPENED = (
    "not acknowledged in 0.01 s: the broker did not answer them in time (it is away, or "
    "answers them with an error the producer retries: a partition without a leader, too "
    "few in-sync replicas; an idempotent producer retries such a write without end); "
)
CHECK = (
    "`moments check` says whether the broker answers; where it does, look at the topic's "
    "partitions (a leader each, enough in-sync replicas: kafka-topics.sh --describe)"
)


@pytest.fixture(autouse=True)
def deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks.base, "DELIVERY_TIMEOUT_S", DEADLINE_S)


@pytest.mark.timeout(15)
async def test_the_workers_write_says_it_is_tried_again_and_the_check() -> None:
    producer = Unacknowledged(stuck=1, there={"app-subscribers-changelog"})
    with pytest.raises(k.KafkaTimeoutError) as raised:
        await produce_to_partitions(producer, "app-subscribers-changelog", [(0, b"k", b"{}")])
    assert str(raised.value).endswith(
        f"1 write(s) to app-subscribers-changelog {WHAT_HAPPENED}tried again as a broker "
        f"away; {CHECK}"
    )


@pytest.mark.timeout(15)
async def test_the_replays_send_says_what_happened_and_the_check_not_a_retry() -> None:
    producer = Stuck(b"two")
    _, failure = await _send(producer, Settings(), [entry(b"one", 1), entry(b"two", 2)])
    assert isinstance(failure, k.KafkaTimeoutError)
    assert str(failure).endswith(f"1 write(s) to telecom.topup {WHAT_HAPPENED}{CHECK}")
    assert "broker away" not in str(failure)


@pytest.mark.timeout(15)
async def test_the_replays_send_to_a_topic_gone_says_to_create_it() -> None:
    producer = Stuck(b"two")
    producer.client = Client(set())  # type: ignore[attr-defined]  # aiokafka's, asked afresh
    _, failure = await _send(producer, Settings(), [entry(b"one", 1), entry(b"two", 2)])
    assert isinstance(failure, k.UnknownTopicOrPartitionError)
    assert str(failure).endswith(
        "1 write(s) to telecom.topup not acknowledged in 0.01 s, and the broker no longer "
        "has telecom.topup (deleted?): create it again as the topic it was (its partition "
        'count; docs/operations.md, "Against a managed Kafka")'
    )


@pytest.mark.timeout(15)
async def test_a_seeds_write_says_what_happened_and_the_check_not_a_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`moments state seed` stops on it: no "tried again", and the command's own words
    after it (`KafkaWriteError`, one line, exit 2)."""
    from moments import producer as producer_module
    from moments import seed

    stuck = Unacknowledged(stuck=1, there={"app-subscribers-changelog"})

    async def start(settings: Settings, **kwargs: object) -> Unacknowledged:
        return stuck

    async def stopped(producer: object, *args: object, **kwargs: object) -> bool:
        return True

    monkeypatch.setattr(producer_module, "start_producer", start)
    monkeypatch.setattr(producer_module, "stop_within", stopped)
    with pytest.raises(KafkaWriteError) as raised:
        await seed.write_records(Settings(), "app-subscribers-changelog", [(0, b"k", b"{}")])
    said = str(raised.value)
    assert f"1 write(s) to app-subscribers-changelog {WHAT_HAPPENED}{CHECK}. " in said
    assert "broker away" not in said
