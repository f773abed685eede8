"""Merge groups parked by a version before per-moment groups (before 0.1.0's commit
580e4c9), read back in the current form.

Such a version parked a released group again as the *merged* task: the carrier's ledger
entry holds `merge_tasks(carrier, [carrier, *members])` (the lead's moment, channel and
quiet hours under the carrier's id, the group's highest priority and latest expiry, the
others in `related`), where the current version keeps the carrier's own moment there
(`sinks.routes.Route`). Read as it is, the group is led by the lead's moment as long
as any moment lives (an expired call led the task sent) and, when capacity splits it,
the carrier's own moment exists only in a `related` list and is lost or sent twice.

`own_moment` rebuilds the carrier's own moment from the merged task and the members'
own payloads (still in its group), so a rolling upgrade over parked groups needs no
migration step: a group is rebuilt when it is released or re-driven, and parked again
in the current form.

0.1.0 is not released: this serves deployments of its pre-release builds. Remove it once
none can still hold such a group (a release after 0.1.0; a parked group lives at most
its moments' ttl, days).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from moments.models import QuietHours, RelatedMoment, ServiceTask

log = logging.getLogger(__name__)

TaskTtl = Callable[[str, int], dt.timedelta | None]
"""A rule's task ttl by rule id and version, when the rules loaded now have that version."""


def no_ttl(rule_id: str, version: int) -> dt.timedelta | None:
    return None


def is_merged(carrier_id: str, stored: ServiceTask, members: Sequence[ServiceTask]) -> bool:
    """Whether the carrier's stored payload is a merged task (the earlier form): it lists
    the carrier's own moment (another moment led) or a member of its group (it led).

    The current form lists neither: a carrier's own payload has no `related`, but for a
    retry of a merged task, whose `related` are moments sent before (never members)."""
    if not stored.related:
        return False
    member_ids = {m.task_id for m in members}
    return any(r.task_id == carrier_id or r.task_id in member_ids for r in stored.related)


@dataclass(frozen=True)
class Rebuilt:
    """A carrier's own moment read back from a merged task (`own_moment`)."""

    own: ServiceTask | None
    """None when the merged task no longer holds it: parked again twice while another
    moment led, the earlier version kept that moment's copy under the carrier's id, and
    the carrier's own moment is in no stored payload."""


def own_moment(
    carrier_id: str,
    stored: ServiceTask,
    members: Sequence[ServiceTask],
    task_ttl: TaskTtl = no_ttl,
) -> Rebuilt | None:
    """The carrier's own moment, rebuilt from a merged task an earlier version parked as
    its payload (`stored`) and the members' own payloads; None when `stored` is in the
    current form already.

    Exact but for what the merged task kept of one moment only: another moment led it,
    its fields but the moment's own (`RelatedMoment`) are the lead's (the subscriber's,
    bar `created_at`, `risk`, `attempt`, `retry_of`), quiet hours taken from a moment on
    the carrier's channel (any moment's else: waiting is safer than a contact inside
    them); it led, its priority is the group's highest. Its expiry is its own: the
    related moment's, else the latest when no other moment's is as late, else its rule's
    ttl (a member of the same rule version, or the rules loaded now), else the group's
    (logged)."""
    if not is_merged(carrier_id, stored, members):
        return None
    member_ids = {m.task_id for m in members}
    own_related = [
        r for r in stored.related or [] if r.task_id != carrier_id and r.task_id not in member_ids
    ]
    listed = next((r for r in stored.related or [] if r.task_id == carrier_id), None)
    if listed is None:  # it led: the merged task's moment is its own
        own = stored
    else:
        own = stored.model_copy(
            update={
                "moment": listed.moment,
                "priority": listed.priority,
                "channel": listed.channel,
                "action": listed.action,
                "triggered_at": listed.triggered_at,
                "evidence": listed.evidence,
                "quiet_hours": _quiet_hours(listed, stored, members),
            }
        )
    if any(_same_moment(own, m) for m in members):
        return Rebuilt(None)
    expires = _expiry(carrier_id, own, stored, listed, members, task_ttl)
    return Rebuilt(own.model_copy(update={"expires_at": expires, "related": own_related or None}))


def _same_moment(a: ServiceTask, b: ServiceTask) -> bool:
    """The same firing (a copy under another id): two tasks' moments never share their
    rule, time and evidence."""
    return (a.moment, a.triggered_at, a.evidence) == (b.moment, b.triggered_at, b.evidence)


def _quiet_hours(
    own: RelatedMoment, stored: ServiceTask, members: Sequence[ServiceTask]
) -> QuietHours | None:
    """The quiet hours of the carrier's channel: gating gives every task of a subscriber
    on a channel the same ones."""
    tasks = [stored, *members]
    same = [t.quiet_hours for t in tasks if t.channel == own.channel]
    if same:
        return same[0]
    return next((t.quiet_hours for t in tasks if t.quiet_hours is not None), None)


def _expiry(
    carrier_id: str,
    own: ServiceTask,
    stored: ServiceTask,
    listed: RelatedMoment | None,
    members: Sequence[ServiceTask],
    task_ttl: TaskTtl,
) -> dt.datetime:
    if listed is not None and listed.expires_at is not None:
        return listed.expires_at
    others = [r.expires_at for r in stored.related or [] if r.task_id != carrier_id]
    if listed is None and all(e is not None and e < stored.expires_at for e in others):
        return stored.expires_at  # the latest, and no other moment's: its own
    moment = own.moment
    ttl = next(
        (
            m.expires_at - m.triggered_at
            for m in members
            if (m.moment.rule_id, m.moment.rule_version) == (moment.rule_id, moment.rule_version)
        ),
        None,
    ) or task_ttl(moment.rule_id, moment.rule_version)
    if ttl is not None:
        return own.triggered_at + ttl
    log.warning(
        "task %s: parked by an earlier version as a merged task, and the rules loaded have "
        "no version %d of rule %s: it keeps the group's expiry (%s)",
        carrier_id,
        moment.rule_version,
        moment.rule_id,
        stored.expires_at.isoformat(),
    )
    return stored.expires_at
