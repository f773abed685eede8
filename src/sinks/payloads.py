"""A task's bytes as dispatch handles them: its JSON (`task_bytes`), the stored payloads a
sink reads back (`Decoded`), the payloads of one decision (`Payloads`), and what the
ledger keeps of a sent task (`sent_meta`)."""

from __future__ import annotations

from collections.abc import Collection

import orjson
from pydantic import ConfigDict, ValidationError

from moments.models import ServiceTask

COUNTED_TAIL = b',"counted":true}'
"""How `task_bytes` ends the payload of a task with `counted` set: the field comes last."""


class StoredTask(ServiceTask):
    """A task read back from the stores: the fields it has that this version does not
    know (a newer version wrote it, in a rolling upgrade) are kept, and written again
    when it is parked or published (`task_bytes`), copies (`model_copy`) included. The
    read-back path's alone: the model producers and consumers have (`ServiceTask`, the
    schema) ignores them."""

    model_config = ConfigDict(frozen=True, extra="allow")

    def __eq__(self, other: object) -> bool:
        """Equal to a `ServiceTask` of the same fields and no other: read back, a task is
        the one that was stored (pydantic's own tells the two classes apart)."""
        if not isinstance(other, ServiceTask):
            return NotImplemented
        extra, others = self.__pydantic_extra__ or {}, other.__pydantic_extra__ or {}
        return self.__dict__ == other.__dict__ and extra == others

    __hash__ = ServiceTask.__hash__


NEWER_VALUES = frozenset({"channel", "family"})
"""The closed lists of a task a newer version may add to (a `channel`, a moment's
`family`): a stored task failing only on one of those was written by it."""


def by_newer_version(exc: ValidationError) -> bool:
    """Whether a stored task fails to read only for a value of `NEWER_VALUES` this version
    does not know (its own, or one of its `related` moments'), not for anything else."""
    errors = exc.errors()
    return bool(errors) and all(
        e["type"] == "enum" and e["loc"][-1:] and e["loc"][-1] in NEWER_VALUES for e in errors
    )


_KNOWN_STAND_IN = {"channel": "sms", "family": "anomaly"}


def newer_task(payload: bytes, exc: ValidationError) -> ServiceTask | None:
    """A stored task that `exc` says a newer version wrote (`by_newer_version`), read as
    far as this version can: its `channel` kept as the text it has (not a `Channel`), a
    moment `family` this version does not know read as `anomaly`, a `related` moment's
    channel as `sms`. None when it does not read even so. For a path that neither routes
    nor republishes it (an outcome's count, decline and contacts), never for one that does."""
    if not by_newer_version(exc):
        return None
    data = orjson.loads(payload)
    for error in exc.errors():
        *path, name = error["loc"]
        at = data
        for step in path:
            at = at[step]
        at[name] = _KNOWN_STAND_IN[str(name)]
    try:
        task = ServiceTask.model_validate(data)
    except ValidationError:
        return None
    channel = orjson.loads(payload).get("channel")
    return task.model_copy(update={"channel": channel}) if isinstance(channel, str) else task


RETRY_FIELDS = frozenset(
    {"task_id", "attempt", "retry_of", "created_at", "deliver_after", "deferred"}
)
"""What a retry of a task changes in it (`moments.outcomes.retry_task`; `counted` too,
which it clears)."""


def newer_retry(payload: bytes, retry: ServiceTask) -> bytes:
    """The stored `payload` of a task a newer version wrote, made the `retry` this version
    made of it (`newer_task`'s read): its `RETRY_FIELDS` set as the retry's, `counted`
    cleared, the rest as that version wrote it (a channel or moment family this version
    does not know, fields it does not have). What the deferral queue parks: this version
    cannot route it, a worker of that version sends it when due."""
    data = orjson.loads(payload)
    data.pop("counted", None)
    data.update(retry.model_dump(mode="json", include=set(RETRY_FIELDS), warnings=False))
    return orjson.dumps(data)


def task_bytes(task: ServiceTask) -> bytes:
    """The task's JSON; with `counted` (dispatch's own, left out of every dump) when it is
    set: only the payload of a task that waits has it (`published` clears it). One check
    here rather than an `exclude_if` callable, which pydantic calls at every task's dump.
    Written by pydantic's JSON serializer straight to bytes: the same bytes as its
    JSON-mode dict through orjson (names in the same order, the same numbers and
    escapes), without the dict of every field made in between and dropped (every task
    is written at its claim, and again at its publish when it changed)."""
    payload = task.__pydantic_serializer__.to_json(task)
    return counted_payload(payload) if task.counted else payload


def counted_payload(payload: bytes) -> bytes:
    """`task_bytes` of the task `payload` is (`counted` not set) with `counted` set, made
    from its bytes: what the ledger's entry holds once a task made again took a dropped
    entry over (`TaskLedger.claim`'s `TAKEN_OVER`), so that a re-drive after a crash
    before the task was parked or dropped reads it counted too. The ledger's Lua makes
    the same bytes (`_CLAIM`); a payload of no field (`{}`) is left as it is."""
    return payload[:-1] + COUNTED_TAIL if len(payload) > 2 else payload


DECODED_MAX = 1024
"""Stored payloads a sink keeps read back (`Decoded`), ~15 kB each (the task's objects
and its JSON). In a two-day backtest of 2,000 subscribers 1,024 caught 77% of the reads
(256: 75%, 8,192: 78%): the tasks read again and again are the few a suspended line or
a cap holds (a suspended line's were looked at every 15 minutes then, hourly now)."""


class Decoded:
    """The stored payloads read back as tasks, by their bytes, and each task's own JSON
    once made: the deferral queue hands the same payloads back at every release (a
    suspended line's task every hour), and validating each again, then serialising
    it again to park it, cost a tenth of the backtest's dispatch.

    A hit is the task `StoredTask.model_validate_json` made of those very bytes before:
    the model is frozen and nothing changes its lists or dicts, so one object serves
    every release. Bounded: the oldest entries go first (`DECODED_MAX`)."""

    def __init__(self, size: int = DECODED_MAX) -> None:
        self.size = size
        self._tasks: dict[bytes, ServiceTask] = {}
        self._own: dict[int, tuple[ServiceTask, bytes | None]] = {}
        """By the id of each task kept: the task (so the id is not reused while it is
        here) and its JSON (`task_bytes`) once made."""

    def task(self, payload: bytes) -> ServiceTask:
        """The task of a stored payload (raises `ValidationError` as the model does), with
        the fields it has that this version does not know (`StoredTask`)."""
        task = self._tasks.get(payload)
        if task is None:
            task = StoredTask.model_validate_json(payload)
            if self.size <= 0:
                return task
            if len(self._tasks) >= self.size:
                oldest = next(iter(self._tasks))
                del self._own[id(self._tasks.pop(oldest))]
            self._tasks[payload] = task
            self._own[id(task)] = (task, None)
        return task

    def own(self, task: ServiceTask) -> bytes:
        """`task_bytes(task)`, made once for a task kept here."""
        kept = self._own.get(id(task))
        if kept is None:
            return task_bytes(task)
        payload = kept[1]
        if payload is None:
            payload = task_bytes(task)
            self._own[id(task)] = (task, payload)
        return payload

    def forget(self, subscriber_ids: Collection[str]) -> int:
        """Let go of the kept tasks of these subscribers (a profile tombstone erased them:
        their data stayed in memory until evicted, for hours on a quiet worker); returns
        how many. A scan of the kept tasks: tombstones are rare, and an index by
        subscriber would cost every read."""
        subs = set(subscriber_ids)
        gone = [payload for payload, task in self._tasks.items() if task.subscriber_id in subs]
        for payload in gone:
            del self._own[id(self._tasks.pop(payload))]
        return len(gone)

    def clear(self) -> None:
        self._tasks.clear()
        self._own.clear()


class Payloads:
    """Each task's JSON made once per decision, and which payload the ledger holds.

    A task's bytes went out up to four times (claim, merge, park, publish), each costing
    a serialisation and the bytes on the wire. Tasks are keyed by identity, not id: a
    merged or re-deferred task is a new object with the same id and other bytes.

    The batch loop, outcome retries and the release timer share one sink and interleave:
    one flow's `clear` only costs another a second serialisation, and since `stored` is
    checked by identity it never answers b"" for an object that was not stored."""

    def __init__(self, decoded: Decoded | None = None) -> None:
        self._bytes: dict[int, tuple[ServiceTask, bytes]] = {}
        self._stored: dict[str, ServiceTask] = {}
        self._decoded = decoded or Decoded(0)

    def of(self, task: ServiceTask) -> bytes:
        found = self._bytes.get(id(task))
        if found is None:
            # (holds the id's object)
            found = self._bytes[id(task)] = (task, self._decoded.own(task))
        return found[1]

    def stored(self, task: ServiceTask) -> None:
        """The ledger now holds this task's payload (claimed or parked by us)."""
        self._stored[task.task_id] = task

    def unless_stored(self, task: ServiceTask) -> bytes:
        """b"" when the ledger holds exactly this task's payload (the stores then use
        theirs), else the payload."""
        return b"" if self._stored.get(task.task_id) is task else self.of(task)

    def clear(self) -> None:
        self._bytes.clear()
        self._stored.clear()


def sent_meta(task: ServiceTask, sent_at: float) -> bytes:
    """What the ledger keeps of a sent task for outcomes: rule and moment type, and when
    it was published (epoch seconds, for `moments tasks pending`)."""
    return orjson.dumps(
        {"rule_id": task.moment.rule_id, "moment_type": task.moment.type, "sent_at": int(sent_at)}
    )
