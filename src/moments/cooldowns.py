"""Cooldown returns: a task that waited and was dropped when it came up again gives its
rule's cooldown back.

The engine starts a rule's cooldown when a moment makes a task (`fired[tag]` = the
moment's event time and `fired_by[tag]` = the task, `moments.taskmaking.emit`). A task
dispatch drops in the batch that made it gives the mark back there
(`batchresult.give_back_cooldowns`).
A task that waits (quiet hours, a suspended line, the merge window, capacity's next day,
a contact cap) is decided again by the release timer, outside any batch and without the
subscriber's record, which only the batches of the subscriber's partition write. When
the timer drops it, dispatch sends a `CooldownReturn` (subscriber, rule, mark, task) to
an internal topic keyed by subscriber and co-partitioned with the input topics, once the
drop is written (owed in the ledger until then: `OwedReturns.owe`, `.send`); the batch
loop reads it with the subscriber's events and the engine applies it
(`give_back_returned`) to the record it writes, so the return is in the changelog and
its offset committed with the batch's. A dropped task's return is sent at least once
and a published task's never; applying it is exact and idempotent, so its cooldown is
given back once.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from moments.models import ServiceTask
from moments.state import SubscriberState, mark_id
from rules.rule import state_tag

RETURNS_TOPIC_SUFFIX = "cooldown-returns"
"""The internal topic is `<app id>-cooldown-returns`, beside the state's changelog."""


class MalformedReturnError(ValueError):
    """A record on the returns topic that is not a cooldown return."""


@dataclass(frozen=True, slots=True)
class CooldownReturn:
    """The cooldown a dropped task started: the subscriber's `fired[state_tag(rule_id)]`
    was set to `mark` (the moment's event time, epoch seconds) when the task was made,
    and `fired_by` to its id (`mark_id`)."""

    subscriber_id: str
    rule_id: str
    mark: int
    task_id: str
    """The task dropped: its ledger entry, read before the return is sent again."""
    moment_id: str | None = None
    """The task that set the mark, when it is not `task_id`: a retry's original
    (`ServiceTask.moment_id`)."""
    carrier_id: str | None = None
    """The dropped task that carried this moment in its `related` (the retry of a merged
    task), when it is not `task_id` (then the moment's own task id, which set the mark):
    that task's ledger entry says whether it was dropped."""

    @classmethod
    def of(cls, task: ServiceTask) -> CooldownReturn:
        """The return of a dropped task: the engine set the mark to its moment's event time
        in whole seconds (`int(occurred_at.timestamp())`, which is `triggered_at`), and
        named it by the task it made (a retry's original, its `moment_id`)."""
        mark = int(task.triggered_at.timestamp())
        moment = task.moment_id if task.moment_id not in (None, task.task_id) else None
        return cls(task.subscriber_id, task.moment.rule_id, mark, task.task_id, moment)

    @classmethod
    def all_of(cls, task: ServiceTask) -> list[CooldownReturn]:
        """The returns of a dropped task and of each moment it carries in `related`: each
        moment's own task set its rule's mark, at its event time (`triggered_at`). Only a
        retry of a merged task carries them when dispatch drops it (a waiting group's
        moments are dropped each on its own): its lead's alone, the merged moments'
        cooldowns stayed taken though the customer was never reached."""
        own = cls.of(task)
        related = [
            cls(
                task.subscriber_id,
                r.moment.rule_id,
                int(r.triggered_at.timestamp()),
                r.task_id,
                carrier_id=task.task_id,
            )
            for r in task.related or []
            if r.task_id != (task.moment_id or task.task_id)  # the lead: `own`
        ]
        return [own, *related]

    @property
    def entry(self) -> str:
        """The ledger entry of the task dropped (`carrier_id`, or `task_id`)."""
        return self.carrier_id or self.task_id

    @property
    def owed_key(self) -> str:
        """Its key among the returns owed (`Ledger.owe_returns`): `task_id`, or for a moment
        carried by another task that task's id and its own (a task owes one per moment)."""
        return self.task_id if self.carrier_id is None else f"{self.carrier_id}:{self.task_id}"

    @property
    def marked_by(self) -> str:
        """The `fired_by` of the mark this return removes."""
        return mark_id(self.moment_id or self.task_id)

    @property
    def key(self) -> bytes:
        return self.subscriber_id.encode()

    def to_bytes(self) -> bytes:
        doc: dict[str, str | int] = {
            "subscriber_id": self.subscriber_id,
            "rule_id": self.rule_id,
            "mark": self.mark,
            "task_id": self.task_id,
        }
        if self.moment_id is not None:
            doc["moment_id"] = self.moment_id
        if self.carrier_id is not None:
            doc["carrier_id"] = self.carrier_id
        return orjson.dumps(doc)

    @classmethod
    def from_bytes(cls, value: bytes | None) -> CooldownReturn:
        try:
            doc = orjson.loads(value or b"")
            moment, carrier = doc.get("moment_id"), doc.get("carrier_id")
            made = cls(
                str(doc["subscriber_id"]),
                str(doc["rule_id"]),
                int(doc["mark"]),
                str(doc["task_id"]),
                None if moment is None else str(moment),
                None if carrier is None else str(carrier),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise MalformedReturnError(
                f"not a cooldown return ({type(exc).__name__}: {exc}); only the worker "
                "writes this topic"
            ) from exc
        return made


def holds_mark(state: SubscriberState, tag: str, at: int, by: str) -> bool:
    """Whether the rule's cooldown mark is the one the task `by` (`mark_id`) set at `at`.

    Its time alone does not say: marks are kept to the second, and once a mark was given
    back a later moment of the rule in the same second sets the same time (a return read
    again after a crash removed that task's mark). A mark set before `fired_by` was kept
    is told by its time only."""
    if state.fired.get(tag) != at:
        return False
    held = state.fired_by.get(tag)
    return held is None or held == by


def give_back_returned(state: SubscriberState, returned: CooldownReturn) -> bool:
    """Remove the rule's cooldown mark from the subscriber's record if it is still the one
    the dropped task set (`holds_mark`); returns whether it was removed.

    A later task's mark stays (`fired` holds only the latest). The mark from before the
    task is not put back, and need not be: the task was made, so that earlier mark held
    back nothing at or after `mark` (a moment dated before a mark is never held back by
    it); removing the mark is the same for every later moment. Applying a return twice
    (read again after a crash, or sent again) does nothing the second time."""
    tag = state_tag(returned.rule_id)
    if not holds_mark(state, tag, returned.mark, returned.marked_by):
        return False
    del state.fired[tag]
    state.fired_by.pop(tag, None)
    return True
