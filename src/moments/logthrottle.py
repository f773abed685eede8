"""Repeated client errors logged once per interval, with a count of the ones held back.

While a broker is unreachable, aiokafka logs the same few errors for every retry of
every connection: about 50 lines a second, thousands in a short outage, which bury
everything else in the log. The outage itself shows in the metrics
(`moments_dependency_up{dependency="kafka"}`); the log needs each kind of error once
in a while, and how often it happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

THROTTLED_LOGGERS = (
    "aiokafka",  # aiokafka/client.py logs under the package's name
    "aiokafka.conn",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.sender",
)
"""aiokafka's loggers that repeat an error on every retry (a logger's filters do not
apply to its children, so each is named)."""
PER_NAME_LOGGERS = ("mode.timers",)
"""Loggers whose lines are throttled per template and first argument: Faust's timers
(mode) warn "Timer %s is overlapping" on every tick that outlasts its interval, each
second for every timer waiting on Redis or Kafka in an outage; each timer's line stays."""
EVERY_S = 30.0

REBALANCE_LINES = (
    "Joined group",
    "Successfully synced group",
    "Revoking previously assigned partitions",
    "Setting newly assigned partitions",
    "Elected group leader",
)
"""How aiokafka's group coordinator says each step of a rebalance that went through:
never held back. Each comes once per rebalance, not per retry, and a worker re-joining
its group again and again (kicked out on a loaded machine) is what an operator reading
the log needs to see; held, a worker's second join within 30 s was missing from its log.
Its retried lines ("(Re-)joining group", "OffsetCommit failed ... will retry") stay held."""


class RepeatThrottle(logging.Filter):
    """Lets each message template of a logger through at most once per `every` seconds;
    the next one let through says how many like it were held back. Templates, not the
    formatted text: "Unable connect to node with id %s" is one kind whatever the node."""

    def __init__(
        self,
        every: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        by_first_arg: bool = False,
    ):
        super().__init__()
        self.every = every
        self.clock = clock
        self.by_first_arg = by_first_arg
        self._seen: dict[tuple[str, ...], tuple[float, int]] = {}
        self._lock = threading.Lock()  # aiokafka logs from the consumer's thread too

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(REBALANCE_LINES):
            return True
        key: tuple[str, ...] = (record.name, str(record.msg))
        if self.by_first_arg and isinstance(record.args, tuple) and record.args:
            key = (*key, str(record.args[0]))
        now = self.clock()
        with self._lock:
            last, held = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.every:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held and last is not None:
            record.msg = f"{record.msg} [{held} more like this in the last {now - last:.0f} s]"
        return True


def install_log_throttle(every: float = EVERY_S) -> None:
    """Throttle the loggers that repeat an error per retry (idempotent)."""
    for name in (*THROTTLED_LOGGERS, *PER_NAME_LOGGERS):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatThrottle) for f in logger.filters):
            logger.addFilter(RepeatThrottle(every, by_first_arg=name in PER_NAME_LOGGERS))
