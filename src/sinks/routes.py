"""The values `TaskSink`'s decision passes along and the pure helpers it uses: the tasks we
own (`Candidate`) in waves of distinct subscribers (`waves`), each one's route (`Route`),
what capacity makes of it (`Fit`), what a wave leaves to write (`Writes`, `Park`), and
the rewrites of a task that waited (`released`, `waited`, `carrier_bytes`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from moments.cooldowns import CooldownReturn
from moments.models import Channel, Deferral, ServiceTask
from moments.records import SuppressReason
from sinks.capacity import rank_score
from sinks.contact import lead_of
from sinks.payloads import task_bytes
from sinks.relevance import made_at
from sinks.stores import Leave


@dataclass
class Candidate:
    """A task we own in the ledger (`carrier_id`) and the tasks merged into it."""

    carrier_id: str
    tasks: list[ServiceTask]
    fresh: bool = False  # straight from a batch (may join or open a merge group)
    deferral_counted: bool = False  # the engine counted its gating deferral already
    payloads: list[bytes] = field(default_factory=list)
    """The stored bytes of `tasks` (released or re-driven): a merged one leaves its group
    by them."""
    lost_own: bool = False
    """Parked by an earlier version, its entry holds only a copy of another moment of the
    group (`sinks.legacy.Rebuilt`): the entry goes, the others go on without it."""

    def stored(self) -> dict[str, bytes]:
        """Each task's stored bytes by its id (none for a fresh candidate)."""
        return dict(zip((t.task_id for t in self.tasks), self.payloads, strict=False))


def waves(candidates: Sequence[Candidate]) -> list[list[Candidate]]:
    """The candidates in runs of consecutive ones of distinct subscribers.

    A wave never holds two candidates of one subscriber (the second may join the merge
    group the first opens, or find the contact the first took), and the waves keep the
    candidates' order, so capacity goes to the same tasks as one after another."""
    out: list[list[Candidate]] = []
    current: list[Candidate] = []
    seen: set[str] = set()
    for c in candidates:
        subscriber = c.tasks[0].subscriber_id
        if subscriber in seen:
            out.append(current)
            current, seen = [], set()
        current.append(c)
        seen.add(subscriber)
    if current:
        out.append(current)
    return out


@dataclass
class Route:
    """A candidate's moments still worth sending, the ledger entry they go out (or wait)
    as, and the task they make.

    `moments` holds one task with the id `carrier_id` (the entry's own payload, `slot`)
    and the ones merged into it (their payloads in its group): parked again, the entry
    keeps its own payload, not the merged task, so that each moment is judged on its
    own at every release and one that is dropped leaves the group for good."""

    c: Candidate
    carrier_id: str
    moments: list[ServiceTask]
    task: ServiceTask
    moved: bool = False
    """A moment of it is on another channel than it was made for (its rule's fallback,
    `TimeGates.worked`): gating's judgment of its quiet hours was for the other one."""

    @property
    def slot(self) -> ServiceTask:
        return next(t for t in self.moments if t.task_id == self.carrier_id)


@dataclass
class Fit:
    """What capacity makes of a route's moments: those `sent` now as one task (on the
    channel that had room), those that `wait` together for the next day (`later`), and
    those dropped."""

    sent: ServiceTask | None = None
    send: list[ServiceTask] = field(default_factory=list)
    wait: list[ServiceTask] = field(default_factory=list)
    dropped: list[ServiceTask] = field(default_factory=list)
    later: float = 0.0
    why: str = "capacity"
    """Why `wait` waits: `capacity` (the next day), `channel_hours` (the part left to send
    is on a channel not worked now: it waits for the opening) or `quiet_hours` (the
    quiet hours of that channel hold a moment moved to it)."""


def part_id(carrier_id: str, moments: Sequence[ServiceTask]) -> str:
    """The ledger entry a part of a merged group goes out or waits as: the carrier's when
    its own moment is in it, else the id of the part's lead."""
    if any(m.task_id == carrier_id for m in moments):
        return carrier_id
    return lead_of(moments).task_id


@dataclass(frozen=True)
class Park:
    task: ServiceTask
    slot: ServiceTask
    """What the entry keeps while it waits (see `Route`): `task` itself unless merged."""
    release_at: float
    reason: str
    count: bool
    rank: float
    """Its moments' `rank_score`: where it stands for capacity once due."""
    line_since: float | None = None
    """Waiting for its suspended line until its next look (`TimeGates.suspended`), not for a
    `deliver_after` gating gave it: the line is active again once the facts say so after
    this time (`line_held_since`)."""
    made: float | None = None
    """When the earliest of its moments was made (`made_at`): a tombstone recorded at or
    after it refuses the park (`Parking.made`), and the moments are judged again."""


@dataclass
class Writes:
    """What a wave's decisions leave to write, in `TaskSink._write`'s order."""

    given_back: list[tuple[str, str]] = field(default_factory=list)  # (task id, subscriber)
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    """Contacts taken as one task, made by another (task id, other's, subscriber)."""
    parks: list[Park] = field(default_factory=list)
    drops: list[tuple[str, str]] = field(default_factory=list)  # (task id, reason)
    drops_expire: dict[str, float] = field(default_factory=dict)
    """When each dropped task would have expired: its ledger entry need not outlive it."""
    leaving: list[Leave] = field(default_factory=list)
    """Merged moments of a group dropped whole: each leaves it, dropped."""
    returned: list[CooldownReturn] = field(default_factory=list)
    """The cooldowns of the moments dropped after they waited (`TaskSink._gone`), not
    yet owed in the ledger (`OwedReturns.owe`)."""
    suppressed: list[tuple[ServiceTask, SuppressReason]] = field(default_factory=list)
    """The moments dropped for good (`TaskSink._gone`), with why: counted once their
    drops (their entries, `drops`, or their leaves of a group, dropped) are written, and
    only those written (`TaskSink._count_suppressed`)."""
    unwritten: set[str] = field(default_factory=set)
    """The ids of the entries whose drop, or dropped leave, was not written: a fenced
    decision's refused (`Held`: another worker's re-drive claimed them since, and decides
    them), or a leave of a moment no longer merged there. Their moments are not counted
    suppressed here."""
    owed: list[CooldownReturn] = field(default_factory=list)
    """Those owed: sent once their drops are written (`OwedReturns.send`)."""
    timetable: str = ""
    """The policy's timetable the wave's release times are computed by (`park_many`)."""
    raced: list[str] = field(default_factory=list)
    """The ids of the parks refused for a tombstone recorded since the decision read the
    facts (`Parking.made`): left pending, decided again once the decision is done."""
    now: float = 0.0
    """The wave's decision time."""
    counted: list[ServiceTask] = field(default_factory=list)
    """Tasks that may have gone out sent over a cap that refused them: their contacts are
    counted all the same (`ContactCaps.write`), after the wave's given back."""
    channels_moved: dict[str, dict[str, str]] = field(default_factory=dict)
    """The tasks about to go out with a moment on another channel than its payload's, by
    id (`moved_from`): marked before the publish (`Ledger.mark_moved`)."""
    went_out: frozenset[str] = frozenset()
    """The candidates (by their entries' ids) that may have gone out under their ids
    (sealed: re-driven, or parked by a re-drive): their moments dropped keep their
    rules' cooldowns (`TaskSink._gone`)."""
    carried: frozenset[str] = frozenset()
    """The candidates (by their entries' ids) whose moments may have gone out inside
    another carrier, withdrawn since, their ids not (a leave's mark:
    `Ledger.redriven_carried`): not sealed, but their moments dropped keep their rules'
    cooldowns, as `went_out`'s do (`keeps_cooldowns`)."""

    def keeps_cooldowns(self, carrier_id: str) -> bool:
        """Whether the moments of this candidate, dropped, keep their rules' cooldowns:
        they may have gone out, under its id or inside another carrier (`went_out`,
        `carried`)."""
        return carrier_id in self.went_out or carrier_id in self.carried

    def park(
        self,
        r: Route,
        release_at: float,
        reason: str,
        count: bool = True,
        line_since: float | None = None,
    ) -> None:
        rank = rank_score(r.moments)
        made = min(made_at(m) for m in r.moments)
        self.parks.append(Park(r.task, r.slot, release_at, reason, count, rank, line_since, made))

    def drop(self, task_id: str, reason: str, expires_at: dt.datetime) -> None:
        self.drops.append((task_id, reason))
        self.drops_expire[task_id] = expires_at.timestamp()


def line_held_since(r: Route) -> dt.datetime | None:
    """The latest trigger among the route's moments gating held for the suspended line
    (None: none was): the line is active again once the facts say so for it
    (`sinks.relevance.line_active`).

    Any moment, not only the merged task's deferral (its carrier's): a moment held for
    the line joins whatever group of the subscriber is open (`TimeGates.join_bounds`), and
    joined to a call held for the merge window, it went out with the call to the
    suspended line. The latest held one, not the merged task's trigger (its lead's): the
    stream records a batch's facts (a reactivation waking the held task) before it
    dispatches the batch's tasks, so a moment made after the reactivation joins the
    woken task, and leading it (a higher priority), it made the group wait for the line
    again until that moment expired; and a moment held for a line suspended again after
    the reactivation, joined to the woken task, keeps the group waiting."""
    held = [
        m.triggered_at
        for m in r.moments
        if m.deferred is not None and m.deferred.reason == "suspended"
    ]
    return max(held, default=None)


def held_for_line(task: ServiceTask) -> ServiceTask:
    """A task that waited for something else, held now for its line suspended meanwhile:
    it says so as gating's task for a suspended line does (reason `suspended`, at most
    until it expires; `deliver_after` as it was), so `line_held_since` finds it and
    `released` says when it went."""
    if task.deferred is not None and task.deferred.reason == "suspended":
        return task
    held = Deferral(reason="suspended", until=task.expires_at)
    return task.model_copy(update={"deferred": held})


def released(task: ServiceTask, at: dt.datetime) -> ServiceTask:
    """A task held for a suspended line, released at `at`: it says so."""
    if task.deferred is None or task.deferred.reason != "suspended":
        return task
    released = {"deferred": Deferral(reason="suspended", until=at)}
    return task.model_copy(update={**released, "deliver_after": max(task.deliver_after, at)})


def as_it_went(task: ServiceTask, moved: Mapping[str, str]) -> ServiceTask:
    """A moment of a task that may have gone out under its id (re-driven, or parked by a
    re-drive), on the channel it went out on: the one the decision that published it
    moved it to (`moved`, its `moved:<id>` mark, `Ledger.mark_moved`: its rule's
    fallback, for its channel's hours or a full pool), else its payload's (no decision
    moved it: it went out on that channel, or never went out). Never judged again: judged
    as of its decision by the policy in force now (reloaded since: other hours, another
    fallback, another limit), a call went out again as an SMS under its id, and an SMS
    as a call. A channel this version does not know (a newer one's mark): its payload's."""
    channel = moved.get(task.task_id)
    if channel is None or channel == task.channel.value:
        return task
    try:
        to = Channel(channel)
    except ValueError:
        return task
    return task.model_copy(update={"channel": to})


def moved_from(payloads: Sequence[ServiceTask], sent: Sequence[ServiceTask]) -> dict[str, str]:
    """The moments of `sent` (about to go out as one task) on another channel than their
    stored payload's (`payloads`, the candidate's tasks): moment id -> channel, what
    `as_it_went` reads back."""
    made = {t.task_id: t.channel for t in payloads}
    return {
        m.task_id: m.channel.value
        for m in sent
        if m.task_id in made and m.channel != made[m.task_id]
    }


def waited(task: ServiceTask, group: ServiceTask) -> ServiceTask:
    """`task`, part of a merged group that goes on under its own id, with the group's
    deferral: what it waited for is what the group did (its own payload says only what
    gating wrote when it joined: a `deliver_after` hours before, a suspended line)."""
    if group.deferred is None:
        return task
    waited = {
        "deferred": group.deferred,
        "deliver_after": max(task.deliver_after, group.deliver_after),
    }
    return task.model_copy(update=waited)


def carrier_bytes(moment: ServiceTask, to: str, group: ServiceTask) -> bytes:
    """What a moment's entry holds when it leaves its group to carry a part of it (`to`
    its own id): itself with the group's deferral (`waited`); b"" otherwise."""
    return task_bytes(waited(moment, group)) if to == moment.task_id else b""
