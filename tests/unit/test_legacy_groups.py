"""Reading back a carrier an earlier version parked as the merged task (sinks.legacy):
what is its own is rebuilt, what is not merged is left alone."""

from __future__ import annotations

import datetime as dt

from moments.models import Channel, Family, Moment, QuietHours, ServiceTask
from moments.outcomes import retry_task
from sinks.contact import merge_tasks
from sinks.legacy import own_moment

T0 = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def task(task_id: str, rule: str, channel: Channel, ttl: dt.timedelta, **kw: object) -> ServiceTask:
    fields: dict[str, object] = {
        "task_id": task_id,
        "subscriber_id": "13900000501",
        "region": "NJ",
        "moment": Moment(
            family=Family.ANOMALY, type=rule, rule_id=rule, rule_version=1, description=rule
        ),
        "priority": 3,
        "channel": channel,
        "action": "act",
        "triggered_at": T0,
        "created_at": T0,
        "deliver_after": T0,
        "expires_at": T0 + ttl,
        "evidence": [f"ev-{task_id}"],
        **kw,
    }
    return ServiceTask.model_validate(fields)


def test_a_carrier_another_moment_led_is_its_own_moment_again() -> None:
    home = QuietHours(zone="Asia/Shanghai", windows=["21:00-08:00"])
    abroad = QuietHours(zone="Asia/Tokyo", windows=["21:00-08:00"])
    sms = task("s1", "low_balance", Channel.SMS, 48 * HOUR, quiet_hours=home)
    other_sms = task("s3", "bill_shock", Channel.SMS, 5 * HOUR, quiet_hours=home)
    lead = task("c2", "complaint", Channel.OUTBOUND_CALL, 3 * HOUR, priority=2, quiet_hours=abroad)
    merged = merge_tasks("s1", [sms, lead, other_sms])
    rebuilt = own_moment("s1", merged, [lead, other_sms])
    assert rebuilt is not None
    assert rebuilt.own is not None
    own = rebuilt.own
    assert (own.moment, own.channel, own.priority, own.expires_at) == (
        sms.moment,
        Channel.SMS,
        3,
        sms.expires_at,
    )
    assert (own.evidence, own.related, own.quiet_hours) == (sms.evidence, None, home)


def test_a_carrier_that_led_gets_its_own_expiry_from_the_bound_or_its_rule() -> None:
    manager = task("m1", "third_complaint_30d", Channel.MANAGER, 2 * HOUR, priority=1)
    later = task("c2", "complaint", Channel.OUTBOUND_CALL, 48 * HOUR, priority=2)
    merged = merge_tasks("m1", [manager, later])
    assert merged.expires_at == later.expires_at
    ttl = {("third_complaint_30d", 1): 2 * HOUR}
    rebuilt = own_moment("m1", merged, [later], lambda r, v: ttl.get((r, v)))
    assert rebuilt is not None
    assert rebuilt.own is not None
    assert (rebuilt.own.expires_at, rebuilt.own.related) == (manager.expires_at, None)
    # Latest of the group and no other as late: its own, with no rule to ask.
    earlier = task("c3", "complaint", Channel.OUTBOUND_CALL, HOUR, priority=2)
    rebuilt = own_moment("m1", merge_tasks("m1", [manager, earlier]), [earlier])
    assert rebuilt is not None
    assert rebuilt.own is not None
    assert rebuilt.own.expires_at == manager.expires_at


def test_a_retry_of_a_merged_task_is_its_own_payload() -> None:
    """A retry lists the moments of the task it retries, sent before: never members of
    the group it waits as, so it is read as it is."""
    manager = task("m1", "third_complaint_30d", Channel.MANAGER, 48 * HOUR, priority=1)
    sent = merge_tasks("m1", [manager, task("c2", "complaint", Channel.OUTBOUND_CALL, 48 * HOUR)])
    retry = retry_task(sent, T0 + HOUR, dt.timedelta(hours=2), 3)
    assert retry is not None
    assert retry.related
    joined = task("s4", "low_balance", Channel.SMS, 48 * HOUR)
    assert own_moment(retry.task_id, retry, [joined]) is None


def test_parked_twice_under_another_lead_the_own_moment_is_gone() -> None:
    sms = task("s1", "low_balance", Channel.SMS, 48 * HOUR)
    lead = task("c2", "complaint", Channel.OUTBOUND_CALL, 48 * HOUR, priority=2)
    # As the earlier version stored it: no moment_id, read back as its task id.
    once = merge_tasks("s1", [sms, lead])
    twice = merge_tasks("s1", [once.model_copy(update={"moment_id": "s1"}), lead])
    rebuilt = own_moment("s1", twice, [lead])
    assert rebuilt is not None
    assert rebuilt.own is None
