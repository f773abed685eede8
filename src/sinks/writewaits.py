"""Kafka writes still awaiting their acknowledgements: how long the oldest has waited
(`moments_kafka_write_wait_seconds`), and the line that says one still waits past
`SLOW_ACK_S`.

A write is given `sinks.base.DELIVERY_TIMEOUT_S` (120 s) before it fails and is tried
again. Until then nothing said it waited: an idempotent producer that the broker does not
acknowledge (too few in-sync replicas, a partition without a leader) retries without a
word, `moments_dependency_up` stays 1 (the lag sample, which reads, sets it 1 every 5 s,
so even after a failed try MomentsDependencyDown does not fire), and one failed try in
120 s is far below MomentsDependencyErrors' rate: only MomentsPartitionNotProgressing
told, after 15 minutes. The gauge and the line say it from `SLOW_ACK_S`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection

from moments.logthrottle import RepeatThrottle

SLOW_ACK_S = 10.0
"""Acknowledgements awaited this long: a line says the write still waits. A broker that
answers acknowledges in milliseconds; a batch aiokafka retries on an error (a leader
moving) is acknowledged within seconds."""

CHECK_BROKER = (
    "`moments check` says whether the broker answers; where it does, look at the topic's "
    "partitions (a leader each, enough in-sync replicas: kafka-topics.sh --describe)"
)
"""The fix of a write the broker does not acknowledge, whoever wrote it."""

log = logging.getLogger("sinks.writewaits")
log.addFilter(RepeatThrottle(by_first_arg=True))  # once per 30 s for each set of topics


class WriteWaits:
    """When each write still awaiting its acknowledgements began (`sinks.base._within`):
    the gauge reads the oldest's age at each scrape, from the metrics server's thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: dict[int, float] = {}  # in the order they began: the oldest first
        self._last = 0
        self._lock = threading.Lock()

    def begin(self) -> int:
        """A write begins to wait; its key, for `end`."""
        with self._lock:
            self._last += 1
            self._since[self._last] = self._clock()
            return self._last

    def end(self, key: int) -> None:
        """The write `begin` gave `key` no longer waits (acknowledged, failed, cancelled)."""
        with self._lock:
            self._since.pop(key, None)

    def oldest_s(self) -> float:
        """Seconds the oldest write still waiting has waited; 0 when none waits."""
        with self._lock:
            began = next(iter(self._since.values()), None)
        return 0.0 if began is None else self._clock() - began


WRITE_WAITS = WriteWaits()
"""The process's writes: one dispatch producer a worker, one producer a command."""


def say_still_waiting(
    topics: Collection[str], waiting: int, waited_s: float, deadline_s: float
) -> None:
    """The line of a write still awaiting `waiting` acknowledgements after `waited_s`."""
    log.warning(
        "%s: %d write(s) not acknowledged in %g s, still waited for (up to %g s, then the "
        "write fails): the broker is slow or away, or answers them with an error the "
        "producer retries (a partition without a leader, too few in-sync replicas); %s",
        ", ".join(sorted(topics)),
        waiting,
        waited_s,
        deadline_s,
        CHECK_BROKER,
    )
