"""The dispatch sink: tasks go to `moments.tasks` once per task id, through the ledger."""

from __future__ import annotations

import datetime as dt
import logging

import orjson

from moments.models import ServiceTask
from sinks.base import Headers, Producer, produce_all
from sinks.ledger import TaskLedger
from sinks.metrics import Dependency, Metrics, SuppressReason
from sinks.retry import with_retry

log = logging.getLogger(__name__)


def task_bytes(task: ServiceTask) -> bytes:
    return orjson.dumps(task.model_dump(mode="json"))


class TaskSink:
    def __init__(
        self, producer: Producer, topic: str, ledger: TaskLedger, metrics: Metrics
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.ledger = ledger
        self.metrics = metrics
        self._pending: list[ServiceTask] = []

    def add(self, item: ServiceTask) -> None:
        self._pending.append(item)

    async def flush(self) -> None:
        """Claim, publish and confirm every added task; duplicates are counted, not sent."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        unique = list({t.task_id: t for t in batch}.values())
        payloads = [(t.task_id, task_bytes(t)) for t in unique]
        owned = await with_retry(
            lambda: self.ledger.claim(payloads), Dependency.REDIS, self.metrics, "claiming task ids"
        )
        to_send: list[tuple[ServiceTask, bytes]] = []
        for task, (_, payload), mine in zip(unique, payloads, owned, strict=True):
            if mine:
                to_send.append((task, payload))
            else:
                self.metrics.suppressed.labels(task.moment.type, SuppressReason.DEDUP.value).inc()
        await self._send([(t.task_id, t.subscriber_id, p, t) for t, p in to_send])

    async def _send(self, items: list[tuple[str, str, bytes, ServiceTask | None]]) -> None:
        if not items:
            return
        headers: Headers = [("content-type", b"application/json")]
        messages: list[tuple[str, bytes | None, bytes | None, Headers | None]] = [
            (self.topic, sub.encode(), payload, headers) for _, sub, payload, _ in items
        ]
        await with_retry(
            lambda: produce_all(self.producer, messages),
            Dependency.KAFKA,
            self.metrics,
            "publishing tasks",
        )
        ids = [task_id for task_id, _, _, _ in items]
        await with_retry(
            lambda: self.ledger.confirm(ids),
            Dependency.REDIS,
            self.metrics,
            "confirming published tasks",
        )
        now = dt.datetime.now(dt.UTC)
        for _, _, _, task in items:
            if task is None:
                continue
            self.metrics.published.labels(task.moment.type, task.channel.value).inc()
            self.metrics.event_to_task.observe(max(0.0, (now - task.triggered_at).total_seconds()))

    async def redrive(self, older_than: float) -> int:
        """Send again the tasks whose publish was never confirmed (a crash mid-way)."""
        stale = await with_retry(
            lambda: self.ledger.claim_stale(older_than),
            Dependency.REDIS,
            self.metrics,
            "reading pending tasks",
        )
        items: list[tuple[str, str, bytes, ServiceTask | None]] = []
        for task_id, payload in stale:
            sub = str(orjson.loads(payload).get("subscriber_id", ""))
            items.append((task_id, sub, payload, None))
        if items:
            log.warning("re-driving %d task(s) whose publish was not confirmed", len(items))
            await self._send(items)
            self.metrics.pending_redriven.inc(len(items))
        return len(items)
