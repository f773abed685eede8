"""What the fault tests break things with: a Kafka proxy that can be cut, event streams.

`TansuProxy` runs `tansu proxy` (shipped in the same binary as the broker) between
a worker and the broker on a fixed port, so stopping it cuts every connection the
worker has and starting it again restores the same address.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

from moments.embedded import HOST, TansuBroker, free_port

Record = tuple[str, str | None, bytes | dict[str, Any] | None]


class TansuProxy(TansuBroker):
    """`tansu proxy` forwarding to `origin` (`host:port`), always on the same port."""

    name: ClassVar[str] = "tansu-proxy"

    def __init__(self, origin: str, workdir: Path) -> None:
        super().__init__(workdir, port=free_port())
        self.origin = origin

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
