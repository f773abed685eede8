"""Withdrawal notices: a published task not yet expired, made void by a later profile
change (an opt-out of the channel it went out on, a closed line, a forgotten subscriber),
is named on `moments.task-withdrawals` so that dispatch does not make a contact the
customer refused (docs/consuming-tasks.md, "Withdrawn tasks").

Which tasks a change makes void is pure (`profile_changes`, `void_tasks`); `Withdrawals`
reads the subscriber's published tasks from the ledger (its `published:<subscriber>`
index, written as each task is confirmed), publishes the notices and then takes the tasks
out of the index (and out of the unanswered index: nothing more is expected of a task
withdrawn). A crash between the two publishes the same notices again when the batch is
read again: the same `task_id` and `reason`, which a consumer drops as a repeat. Only
profile updates carrying `opt_out` or `status: closed`, and tombstones, cost a call.
A task a re-drive drops for one of those reasons is withdrawn as well
(`owe_dropped`, `send_owed`): its worker may have published it and died before recording
it; the notice is owed in the ledger before the drop, so a failed publish or a crash
leaves it to any worker's timer (`resend_owed`). A notice Kafka refuses as a batch or a
decision publishes it (an ACL) is owed too, and left to that timer (`_publish_or_owe`,
`send_owed`): the worker goes on detecting and publishing tasks.
A task whose decision read the subscriber's facts before such a change was recorded (a
release, a re-drive, a retry: they run beside the batches, on any worker) is withdrawn by
the sink that published it (`withdraw_voided`): its confirm looks at the facts again in
the step that would index it (`Ledger.confirm`'s `made`). The batch records the change
before it looks up; a confirm before the record indexes the task, which the lookup then
finds, and one after it sees the change and leaves the task out of the index: one
notice, whichever runs first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from moments.enums import Channel, WithdrawReason
from moments.models import InputEvent, ProfileEvent, ServiceTask, TaskWithdrawal, channel_key
from sinks.base import Headers, Message, Producer, produce_all
from sinks.ledger import state_of
from sinks.metrics import Dependency, Metrics, NewerRead, TimerStep
from sinks.payloads import by_newer_version
from sinks.retry import Retrying, with_retry
from sinks.steps import note_owed_refusal
from sinks.stores import Clock, Ledger

log = logging.getLogger(__name__)

WITHDRAWALS_TOPIC = "moments.task-withdrawals"
"""The default name of the topic (`Topics.task_withdrawals`)."""

STANDING = "standing:"
"""The prefix of the owed id of a withdrawal whose publish Kafka refused as a batch or a
decision made it (`Withdrawals._publish_or_owe`): no ledger entry has such an id, so the
timer's `resend_owed` reads its task as gone and publishes it whatever became of the task
since, as the refused publish would have (a worker of an older version does the same)."""

WITHDRAWN_FOR = frozenset(r.value for r in WithdrawReason)
"""The drop reasons (`SuppressReason`) of a task a re-drive drops that are withdrawn too:
the same words as the withdrawal's `reason`."""


class _Moment(BaseModel):
    type: str


class PublishedTask(BaseModel):
    """What a withdrawal needs of a published task, read from its stored body: a task a
    newer version wrote, with a channel or moment family this version does not know
    (`ServiceTask` refuses it), is withdrawn all the same (docs/operations.md, "Rolling
    upgrades"). A channel this version knows is read as such."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    subscriber_id: str
    channel: Channel | str = Field(union_mode="left_to_right")
    moment: _Moment
    expires_at: AwareDatetime


Withdrawable = ServiceTask | PublishedTask


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """A profile change that may make a subscriber's published tasks void."""

    subscriber_id: str
    reason: WithdrawReason
    occurred_at: dt.datetime
    channels: frozenset[str] = frozenset()
    """For `opt_out`: the channels the update opted out of (the rest are not withdrawn), by
    `channel_key`."""


def profile_changes(
    facts: Iterable[InputEvent],
    forgotten: Sequence[str] = (),
    erased_at: Mapping[str, float] | None = None,
    now: float | None = None,
) -> list[ProfileChange]:
    """The changes among a batch's tombstones (`forgotten`, dated `erased_at`, else `now`)
    and its facts (`changes_by_fact`), in that order, as the runtime applies them."""
    out: list[ProfileChange] = []
    erased = erased_at or {}
    for sub in dict.fromkeys(forgotten):
        at = erased.get(sub, now)
        when = dt.datetime.fromtimestamp(at if at is not None else 0.0, dt.UTC)
        out.append(ProfileChange(sub, WithdrawReason.FORGOTTEN, when))
    for made in changes_by_fact(list(facts)).values():
        out += made
    return out


def changes_by_fact(facts: Sequence[InputEvent]) -> dict[int, list[ProfileChange]]:
    """The changes a batch's facts make (the profile updates it applied: a stale one is
    refused before), by the index of the fact that makes them, in order: a closed line
    (`status: closed`) and an opt-out (`opt_out` naming a channel, moments' or one only a
    newer version sends on: `_channels`; `[]` opts in, null says nothing). An update both
    closing the line and opting out gives both, the closing first.

    An opt-out counts only for the channels still opted out at the batch's end: opted in
    again by a later update of the batch (its `opt_out` without the channel), the customer
    ends the batch opted in and the tasks published before stand. The stream records a
    batch's facts together, and the facts hash says the same (the latest update carrying
    `opt_out` decides: `sinks.relevance`); the backtest, recording them one at a time,
    withdraws by the same changes. So does a closing: a later update of the batch whose
    `status` is `active` or `suspended` reopens the line, which ends the batch not closed
    (`SubscriberFacts.line_closed`), and the tasks published before stand. Later is by
    `occurred_at`, as the facts hash reads it (to the microsecond; a tie opted out, not
    closed), not by the order the batch holds them: the engine strips a field a newer
    second set (`moments.tracking.profile_update`) but applies two updates of one second
    both, so an opt-in read after an opt-out dated later within the second is no later."""
    updates = [(i, e) for i, e in enumerate(facts) if isinstance(e, ProfileEvent)]
    if not updates:  # most batches: the facts are looked at once, not once a question
        return {}
    kept = _still_opted_out(updates)
    reopened = _reopened(updates)
    out: dict[int, list[ProfileChange]] = {}
    for i, event in updates:
        made: list[ProfileChange] = []
        if event.status == "closed" and i not in reopened:
            made.append(
                ProfileChange(event.subscriber_id, WithdrawReason.CLOSED, event.occurred_at)
            )
        if event.opt_out:
            channels = _channels(event.opt_out)
            if (after := kept.get(i)) is not None:
                channels &= after
            if channels:
                made.append(
                    ProfileChange(
                        event.subscriber_id, WithdrawReason.OPT_OUT, event.occurred_at, channels
                    )
                )
        if made:
            out[i] = made
    return out


def _channels(opt_out: Iterable[Channel | str]) -> frozenset[str]:
    """The channels an `opt_out` list names, by `channel_key`: moments' own and any other
    the model keeps (`OptOutChannel`), whatever its case (`WeChat` is `wechat`). One this
    version does not send on may be one a newer version does: in a rolling upgrade this
    worker withdraws the tasks a newer worker published on it (`PublishedTask`); a channel
    nobody sends on withdraws nothing."""
    return frozenset(channel_key(str(c)) for c in opt_out)


def _by_subscriber(
    updates: Sequence[tuple[int, ProfileEvent]], keep: Callable[[ProfileEvent], bool]
) -> list[list[tuple[int, ProfileEvent]]]:
    """The profile updates `keep` takes, with their indexes, grouped by subscriber."""
    groups: dict[str, list[tuple[int, ProfileEvent]]] = {}
    for i, event in updates:
        if keep(event):
            groups.setdefault(event.subscriber_id, []).append((i, event))
    return list(groups.values())


def _reopened(updates: Sequence[tuple[int, ProfileEvent]]) -> set[int]:
    """The indexes of the profile updates closing a line that another update of its
    subscriber in the batch saying `active` or `suspended` dated at or after it follows,
    whatever their order in the batch: the facts hash keeps each status's latest time and
    a line is closed only when no `active` or `suspended` came at or after its closing
    (`SubscriberFacts.line_closed`), however late the older one is read."""
    out: set[int] = set()
    for group in _by_subscriber(updates, lambda e: e.status is not None):
        reopenings = [e.occurred_at for _, e in group if e.status in ("active", "suspended")]
        if not reopenings:
            continue
        latest = max(reopenings)
        out |= {i for i, e in group if e.status == "closed" and e.occurred_at <= latest}
    return out


def _still_opted_out(updates: Sequence[tuple[int, ProfileEvent]]) -> dict[int, frozenset[str]]:
    """Per index of a profile update carrying `opt_out` that another one of its subscriber
    carrying `opt_out` dated after it follows (whatever their order in the batch: the facts
    hash keeps the latest time of each, `SubscriberFacts.opted_out`, and an opt-out dated
    as an opt-in wins there): the channels every one of those later updates names (the
    others were opted into again after it). Absent: none dated after it."""
    out: dict[int, frozenset[str]] = {}
    for group in _by_subscriber(updates, lambda e: e.opt_out is not None):
        for i, event in group:
            later = [
                _channels(e.opt_out or ())
                for j, e in group
                if j != i and e.occurred_at > event.occurred_at
            ]
            if later:
                out[i] = frozenset.intersection(*later)
    return out


def void_tasks(
    change: ProfileChange, tasks: Iterable[Withdrawable], now: float
) -> list[Withdrawable]:
    """Those of the subscriber's published `tasks` that `change` makes void at `now`
    (epoch seconds): none that expired (nothing may act on it anyway); for an opt-out, the
    tasks that went out on a channel it names (a task's `channel` is the one it went out
    on: a fallback's, or for a merged task its leading moment's, whatever channels its
    `related` moments were made for); for a closed line or a forgotten subscriber, all."""
    out = []
    for task in tasks:
        if task.subscriber_id != change.subscriber_id or task.expires_at.timestamp() <= now:
            continue
        if (
            change.reason is WithdrawReason.OPT_OUT
            and channel_key(str(task.channel)) not in change.channels
        ):
            continue
        out.append(task)
    return out


def notice(task: Withdrawable, change: ProfileChange, now: float) -> TaskWithdrawal:
    """The withdrawal of `task` by `change`, made at `now` (its times on the clock of the
    change's `occurred_at`, as a task's are on its moment's). A task on a channel a newer
    version added names it as the task did (the schema of that version lists it)."""
    tz = change.occurred_at.tzinfo or dt.UTC
    fields: dict[str, Any] = {
        "task_id": task.task_id,
        "subscriber_id": task.subscriber_id,
        "channel": task.channel,
        "moment_type": task.moment.type,
        "reason": change.reason,
        "occurred_at": change.occurred_at,
        "withdrawn_at": dt.datetime.fromtimestamp(now, tz),
        "expires_at": task.expires_at,
    }
    if isinstance(task.channel, Channel):
        return TaskWithdrawal.model_validate(fields)
    return TaskWithdrawal.model_construct(**fields)


def withdrawals_of(
    changes: Sequence[ProfileChange],
    published: Mapping[str, Sequence[Withdrawable]],
    now: float,
) -> list[TaskWithdrawal]:
    """The notices `changes` make, in their order, of the `published` tasks (per
    subscriber): each task once, by the first change that makes it void."""
    done: set[str] = set()
    out: list[TaskWithdrawal] = []
    for change in changes:
        for task in void_tasks(change, published.get(change.subscriber_id, ()), now):
            if task.task_id not in done:
                done.add(task.task_id)
                out.append(notice(task, change, now))
    return out


class Withdrawals:
    """Publishes the withdrawals of a batch's profile changes (`withdraw`) to `topic`
    (None: none are made, as a sink without the topic; a tombstone's erasure of the
    published tasks runs all the same), through the ledger's index of published tasks per
    subscriber."""

    def __init__(
        self,
        producer: Producer,
        topic: str | None,
        ledger: Ledger,
        metrics: Metrics,
        clock: Clock,
        redis: Retrying,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self._redis = redis

    async def withdraw(self, changes: Sequence[ProfileChange]) -> list[TaskWithdrawal]:
        """Publish the withdrawals `changes` make and await them, then take the tasks out of
        the ledger's indexes; the tombstoned subscribers' index is erased, and the bodies of
        the tasks in it. Returns them. With no topic none are made, but the erasure runs:
        it is the tombstone's, not the notices'."""
        if not changes:
            return []
        gone = [c.subscriber_id for c in changes if c.reason is WithdrawReason.FORGOTTEN]
        made = await self._notices(changes) if self.topic is not None else []
        # Before `withdrawn`, which takes the withdrawn tasks out of the index: erased with
        # the index, their bodies too.
        if gone:
            await self._redis(lambda: self.ledger.forget_published(gone), "erasing published tasks")
        if made:
            items = [(w.task_id, w.subscriber_id, str(w.channel)) for w in made]
            await self._redis(lambda: self.ledger.withdrawn(items), "recording withdrawals")
        return made

    async def _notices(self, changes: Sequence[ProfileChange]) -> list[TaskWithdrawal]:
        """The withdrawals `changes` make of their subscribers' published tasks (read from
        the ledger's index), published and awaited."""
        subs = list(dict.fromkeys(c.subscriber_id for c in changes))
        now = self.clock()
        live = await self._redis(
            lambda: self.ledger.published_of(subs, now), "reading published tasks"
        )
        ids = [i for per in live for i in per]
        bodies = await self._redis(lambda: self.ledger.body_many(ids), "reading published tasks")
        published: dict[str, list[Withdrawable]] = {}
        for task_id, body in zip(ids, bodies, strict=True):
            task = _task(task_id, body)
            if isinstance(task, PublishedTask):
                self.metrics.newer_tasks.labels(NewerRead.WITHDRAWAL.value).inc()
            if task is not None:
                published.setdefault(task.subscriber_id, []).append(task)
        made = withdrawals_of(changes, published, now)
        if made:
            await self._publish_or_owe(made)
        return made

    async def owe_dropped(self, dropped: Sequence[tuple[ServiceTask, str]]) -> list[TaskWithdrawal]:
        """The withdrawals of tasks about to be dropped (task, `WITHDRAWN_FOR` reason) that a
        re-drive decided (`redriven:<id>`): their worker may have published them before it
        died, before it recorded them (so the published index never held them), and the
        opt-out, closed line or tombstone was read meanwhile. Dated now (`occurred_at`
        too: the change's own time is not at hand), and owed in the ledger before the drops
        are written: published by `send_owed` once they are, or by any worker's
        `resend_owed` when that publish fails or its worker dies first. Published after
        the drop with nothing held, a refused publish or a crash between lost the notice
        for good (the entry `X`, never re-driven). None with no topic."""
        if not dropped or self.topic is None:
            return []
        now = self.clock()
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        made = [
            notice(task, ProfileChange(task.subscriber_id, WithdrawReason(r), when), now)
            for task, r in dropped
        ]
        items = [(w.task_id, _payload(w)) for w in made]
        await self._redis(lambda: self.ledger.owe_withdrawals(items), "noting withdrawals")
        return made

    async def send_owed(self, made: Sequence[TaskWithdrawal]) -> None:
        """Publish the withdrawals `owe_dropped` made, their drops written, and settle them,
        as the timer does (`_publish_dropped`): a drop writes nothing on an entry no longer
        pending, so one whose worker stalled past the grace period between the owe and the
        drop, while another worker's re-drive took the task and sent it (the customer opted
        back in), is settled unpublished; published regardless, it told the consumer to
        drop a task sent and standing."""
        if not made:
            return
        from aiokafka.errors import KafkaError

        try:
            await self._publish_dropped([(w.task_id, w) for w in made])
        except KafkaError as exc:  # a refusal: `with_retry` waited out an outage
            note_owed_refusal(
                "withdrawal(s) of dropped tasks",
                len(made),
                exc,
                TimerStep.WITHDRAWALS,
                self.metrics,
            )

    async def resend_owed(self, older_than: float) -> int:
        """The timer's: the withdrawals owed longer than the grace period (their publish
        failed, or their worker died before it), published or settled as `_publish_dropped`
        says. Returns how many were published. None with no topic (none is owed then)."""
        if self.topic is None:
            return 0
        owed = await self._redis(
            lambda: self.ledger.owed_withdrawals(older_than), "reading withdrawals owed"
        )
        if not owed:
            return 0
        published = await self._publish_dropped(owed)
        if published:
            log.warning(
                "published %d withdrawal(s) of dropped tasks that their worker did not (its "
                "publish failed, or it stopped between the drop and the publish)",
                published,
            )
        return published

    async def _publish_dropped(self, owed: Sequence[tuple[str, TaskWithdrawal | bytes]]) -> int:
        """The owed withdrawals (task id, the notice or its stored bytes) by their task's
        entry: published (the same notice) when it is dropped for a profile change, or gone
        (kept a day past the task's expiry); settled unpublished when it was sent or dropped
        for another reason (the drop never written, and the task decided again); left owed
        while it is pending, waiting or merged (that decision is still to come). Those
        published are settled after their publish. Returns how many were published."""
        ids = [task_id for task_id, _ in owed]
        values = await self._redis(lambda: self.ledger.get_many(ids), "reading dropped tasks")
        made: list[TaskWithdrawal] = []
        settled: list[str] = []
        for (task_id, record), value in zip(owed, values, strict=True):
            if state_of(value) in ("pending", "deferred", "merged"):
                continue
            settled.append(task_id)
            if value is not None and value[1:].decode(errors="replace") not in WITHDRAWN_FOR:
                continue  # sent, or dropped for no profile change
            if isinstance(record, TaskWithdrawal):
                made.append(record)
                continue
            try:
                read = _owed_notice(record)
            except ValidationError as exc:
                log.error("task %s: withdrawal owed is not one (%s); left out", task_id, exc)
                continue
            if not isinstance(read.channel, Channel):
                self.metrics.newer_tasks.labels(NewerRead.WITHDRAWAL.value).inc()
            made.append(read)
        if made:
            await self._publish(made)
        await self._redis(lambda: self.ledger.settle_withdrawals(settled), "settling withdrawals")
        return len(made)

    async def withdraw_voided(
        self, voided: Sequence[tuple[ServiceTask, WithdrawReason, float]]
    ) -> None:
        """Withdraw tasks just published that their confirm found void (task, why, when the
        change was, epoch seconds: `Ledger.confirm`'s `made`): their decision read the
        subscriber's facts before the change was recorded, and the change's batch may have
        looked the published index up before the confirm put them there (or will after
        it: they never enter it), so no one else withdraws them. Dated on the task's clock
        (the change's own offset is not at hand)."""
        items = [
            (task, reason, dt.datetime.fromtimestamp(at, task.triggered_at.tzinfo or dt.UTC))
            for task, reason, at in voided
        ]
        await self._withdraw_each(items, self.clock())

    async def _withdraw_each(
        self, items: Sequence[tuple[ServiceTask, WithdrawReason, dt.datetime]], now: float
    ) -> None:
        """Publish the withdrawal of each task (why, when the change was), made at `now`."""
        if not items or self.topic is None:
            return
        await self._publish_or_owe(
            [
                notice(task, ProfileChange(task.subscriber_id, reason, when), now)
                for task, reason, when in items
            ]
        )

    async def _publish_or_owe(self, made: Sequence[TaskWithdrawal]) -> None:
        """`_publish`, or, when Kafka refuses it (an ACL without Write on the topic: what
        `with_retry` raises is no outage), owe `made` in the ledger under `STANDING` ids for
        the re-drive timer to publish once the topic takes them (`resend_owed`, counted in
        `moments_timer_errors_total{step="withdrawals"}` while it fails), and go on: the
        batch or decision carries on, its tasks published. Raised, the refusal stopped the
        worker, at every start while a batch read again made the same notices. A bug is
        still raised."""
        from aiokafka.errors import KafkaError

        try:
            await self._publish(made)
        except KafkaError as exc:
            items = [(STANDING + w.task_id, _payload(w)) for w in made]
            await self._redis(
                lambda: self.ledger.owe_withdrawals(items), "noting withdrawals refused"
            )
            note_owed_refusal("withdrawal(s)", len(made), exc, TimerStep.WITHDRAWALS, self.metrics)

    async def _publish(self, made: Sequence[TaskWithdrawal]) -> None:
        """Produce `made` and await them; counted."""
        topic = self.topic
        if not made or topic is None:
            return
        headers: Headers = [("content-type", b"application/json")]
        messages: list[Message] = [
            (topic, w.subscriber_id.encode(), _payload(w), headers) for w in made
        ]
        await with_retry(
            lambda: produce_all(self.producer, messages),
            Dependency.KAFKA,
            self.metrics,
            "publishing task withdrawals",
            log_refusal=False,  # every caller logs it: `note_owed_refusal`, `TimerSteps`
            missing_topic=topic,  # made as the worker starts: deleted since, not an outage
            producer=self.producer,
        )
        for w in made:
            self.metrics.withdrawn.labels(w.moment_type, str(w.reason)).inc()


def _payload(w: TaskWithdrawal) -> bytes:
    # (no warning for a channel a newer version added: `notice`)
    return orjson.dumps(w.model_dump(mode="json", warnings=False))


def _owed_notice(record: bytes) -> TaskWithdrawal:
    """An owed notice read back (`Ledger.owed_withdrawals`). One a newer version made for a
    task on a channel this version does not know (`by_newer_version`) keeps it as its text,
    as `notice` makes one: refused, it was settled and never went out (docs/operations.md,
    "Rolling upgrades": withdrawals still go out for such a task)."""
    try:
        return TaskWithdrawal.model_validate_json(record)
    except ValidationError as exc:
        if not by_newer_version(exc):
            raise
        fields = orjson.loads(record)
        known = TaskWithdrawal.model_validate({**fields, "channel": Channel.SMS})
        return known.model_copy(update={"channel": fields["channel"]})


def _task(task_id: str, body: bytes | None) -> Withdrawable | None:
    """A published task's body read back; None (logged) when it is gone or unreadable.
    One a newer version wrote (`by_newer_version`) is read as far as a withdrawal needs
    (`PublishedTask`)."""
    if body is None:
        log.warning("task %s: its body is gone; not withdrawn", task_id)
        return None
    try:
        return ServiceTask.model_validate_json(body)
    except ValidationError as exc:
        if by_newer_version(exc):
            with contextlib.suppress(ValidationError):
                return PublishedTask.model_validate_json(body)
        log.warning("task %s: its body does not read as a task; not withdrawn", task_id)
        return None
