"""What the fault tests break things with: a Kafka proxy that can be cut, a server that
can be frozen, event streams.

`TansuProxy` runs `tansu proxy` (shipped in the same binary as the broker) between
a worker and the broker on a fixed port, so stopping it cuts every connection the
worker has and starting it again restores the same address. The port comes from
`free_port`, which keeps it reserved for this process: no other process takes it
before the first start or while the proxy is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import orjson

from moments.embedded import HOST, RedisServer, TansuBroker, free_port, probe_kafka

Record = tuple[str, str | None, bytes | dict[str, Any] | None]


class TansuProxy(TansuBroker):
    """`tansu proxy` forwarding to `origin` (`host:port`), always on the same port: known
    (`address`) before the first start, and reserved from then on (`free_port`)."""

    name: ClassVar[str] = "tansu-proxy"

    def __init__(self, origin: str, workdir: Path) -> None:
        port = free_port()
        super().__init__(workdir, port=port)
        self.origin = origin
        self.address = f"{HOST}:{port}"
        """Where it listens once started (`bootstrap` needs it running)."""

    def _command(self, port: int, workdir: Path) -> list[str]:
        url = f"tcp://{HOST}:{port}"
        return [
            str(self.binary),
            "proxy",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--origin-url",
            f"tcp://{self.origin}",
        ]

    def _answers(self, port: int, pid: int) -> bool:
        # Requests through the proxy answer; its DescribeCluster answer is the origin's
        # own (the proxy rewrites Metadata only), so a broker's advertised check would
        # never pass here.
        probe_kafka(f"{HOST}:{port}", timeout=1.0)
        return self._proc is not None and self._proc.poll() is None


def freeze(server: RedisServer | TansuBroker) -> None:
    """Stop the server's process group (SIGSTOP): connections hang, nothing answers."""
    os.killpg(server.pid, signal.SIGSTOP)


def thaw(server: RedisServer | TansuBroker) -> None:
    """Undo `freeze` (SIGCONT)."""
    os.killpg(server.pid, signal.SIGCONT)


def frozen_once_queued(broker: TansuBroker, queued: asyncio.Event | None = None) -> type:
    """aiokafka's producer class, `broker` frozen once a record is queued, before the
    producer's sender can take it (it runs at the loop's next turn); `queued` set then."""
    from aiokafka import AIOKafkaProducer

    class FrozenOnceQueued(AIOKafkaProducer):  # type: ignore[misc]  # aiokafka is untyped
        async def send(self, *args: Any, **kwargs: Any) -> Any:
            future = await super().send(*args, **kwargs)
            freeze(broker)
            if queued is not None:
                queued.set()
            return future

    return FrozenOnceQueued


def first_roamings(start: int, count: int, zone: str, prefix: str = "f") -> list[Record]:
    """`count` first international roamings of distinct subscribers: one task each.

    `zone` should be one where it is daytime (`moments.sample.daytime_zone`), so no
    quiet hours hold a task back.
    """
    now = dt.datetime.now(dt.UTC).isoformat()
    out: list[Record] = []
    for n in range(start, start + count):
        sub = str(15_100_000_000 + n)
        value = {
            "event_id": f"{prefix}-{n}",
            "subscriber_id": sub,
            "occurred_at": now,
            "country": "FR",
            "roaming_type": "international",
            "timezone": zone,
        }
        out.append(("roaming", sub, value))
    return out


def _bad_json(n: int, sub: str) -> Record:
    return ("roaming", sub, f'{{"event_id": "p-{n}", "subscriber_id": "{sub}", '.encode())


def _missing_fields(n: int, sub: str) -> Record:
    return ("roaming", sub, {"event_id": f"p-{n}", "subscriber_id": sub})


def _wrong_types(n: int, sub: str) -> Record:
    value = {
        "event_id": f"p-{n}",
        "subscriber_id": sub,
        "occurred_at": "yesterday",
        "country": 86,
        "roaming_type": "international",
    }
    return ("roaming", sub, value)


def _oversize(n: int, sub: str) -> Record:
    value = {
        "event_id": f"p-{n}",
        "subscriber_id": sub,
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "country": "FR",
        "roaming_type": "international",
        "operator": "x" * 70_000,
    }
    return ("roaming", sub, value)


def _key_mismatch(n: int, sub: str) -> Record:
    _, _, value = first_roamings(n, 1, "UTC", prefix="p")[0]
    return ("roaming", "13000000000", value)


def _no_key(n: int, sub: str) -> Record:
    _, _, value = first_roamings(n, 1, "UTC", prefix="p")[0]
    return ("roaming", None, value)


def _null_value(n: int, sub: str) -> Record:
    return ("roaming", sub, None)


POISON: tuple[tuple[str, Callable[[int, str], Record]], ...] = (
    ("invalid_json", _bad_json),
    ("invalid_event", _missing_fields),
    ("invalid_event", _wrong_types),
    ("too_large", _oversize),
    ("key_mismatch", _key_mismatch),
    ("missing_key", _no_key),
    ("empty_value", _null_value),
)
"""(expected dead-letter reason, maker) for each kind of malformed record."""


def poisoned_stream(
    count: int, every: int, zone: str
) -> tuple[list[Record], list[tuple[str, Record]], int]:
    """`count` records where every `every`-th is malformed (the kinds in turn), the rest
    first roamings of distinct subscribers: (records, (reason, record) of each malformed
    one, how many are good)."""
    records: list[Record] = []
    poison: list[tuple[str, Record]] = []
    for n in range(count):
        if n % every == every - 1:
            reason, make = POISON[len(poison) % len(POISON)]
            record = make(n, str(15_200_000_000 + n))
            poison.append((reason, record))
            records.append(record)
        else:
            records.extend(first_roamings(n, 1, zone, prefix="g"))
    return records, poison, count - len(poison)


def raw_value(record: Record) -> bytes | None:
    """The bytes `kafka_io.produce` sends for a record's value."""
    value = record[2]
    return orjson.dumps(value) if isinstance(value, dict) else value


STALL_MARK = "test: stalling the event loop"

_STALLING_WORKER = """
import os, sys, time
from pathlib import Path

from moments import engine, runtime
from moments.cli import main

key = os.environ["TEST_STALL_KEY"].encode()
once = Path(os.environ["TEST_STALL_ONCE"])


def stall_here(records):
    if not once.exists() and any(r.key == key for r in records):
        once.touch()
        print(os.environ["TEST_STALL_MARK"], file=sys.stderr, flush=True)
        time.sleep(3600)


if os.environ["TEST_STALL_AT"] == "detect":
    process = engine.Detector.process

    def stuck_rule_evaluation(self, records, *args, **kwargs):
        stall_here(records)
        return process(self, records, *args, **kwargs)

    engine.Detector.process = stuck_rule_evaluation
else:
    handle = runtime.Runtime.handle

    async def stuck_after_durable(self, records, *args, **kwargs):
        result = await handle(self, records, *args, **kwargs)
        stall_here(records)
        return result

    runtime.Runtime.handle = stuck_after_durable
sys.exit(main(["worker"]))
"""


def stalling_worker(key: str, at: str, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a worker whose event loop blocks (`time.sleep`, an
    hour) once, in the batch holding a record keyed `key`: `at` "detect" in the rules'
    evaluation, before anything of the batch is durable; "durable" once its tasks and
    state are durable, before its offsets are committed. A file in `workdir` says it
    blocked, so a second worker with the same command does not. The worker prints
    `STALL_MARK` to stderr when it blocks; its script is a file, so the stacks it logs
    show the blocking line."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "stalling_worker.py"
    script.write_text(_STALLING_WORKER)
    once = workdir / "stalled-once"
    env = {
        "TEST_STALL_KEY": key,
        "TEST_STALL_AT": at,
        "TEST_STALL_ONCE": str(once),
        "TEST_STALL_MARK": STALL_MARK,
    }
    return [sys.executable, str(script)], env
