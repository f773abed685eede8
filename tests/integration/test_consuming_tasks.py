"""The example consumer of docs/consuming-tasks.md, run as written against a real broker:
it acts once on a task delivered twice, not on an expired one (which it answers
`failed`: the detector expects an outcome for every task, docs "When nothing comes
back"), tells the customer of a merged task's every moment but one that lapsed (its own
`expires_at` passed: the page says to leave it out, and its example told it all the
same), and its outcomes are ones the worker reads. It honours `moments.task-withdrawals`:
a task withdrawn before it was read is not acted on and gets no outcome (the page says
"Read that topic too"; its example read only the tasks and called a customer who had
opted out)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.models import (
    Channel,
    Family,
    Moment,
    OutcomeStatus,
    RelatedMoment,
    ServiceTask,
    TaskOutcome,
    WithdrawReason,
)
from moments.settings import Settings
from sinks.payloads import task_bytes
from sinks.withdrawals import ProfileChange, notice

from .conftest import MakeSettings
from .kafka_io import produce, read_written

pytestmark = pytest.mark.integration

PAGE = Path(__file__).resolve().parents[2] / "docs" / "consuming-tasks.md"
NOW = dt.datetime.now(dt.UTC)


def tid(name: str) -> str:
    """A task id of the detector's form (32 lowercase hex): the worker takes outcomes of
    no other."""
    return hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


FAILURE, MERGED, RECOVERY, LAPSED, STALE, OPTED_OUT = (
    tid(n) for n in ("failure", "merged", "recovery", "lapsed", "stale", "opted_out")
)


def example() -> str:
    (code,) = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    return str(code)


def moment(kind: str) -> Moment:
    return Moment(
        family=Family.ANOMALY, type=kind, rule_id=kind, rule_version=1, description=f"{kind}!"
    )


def task(task_id: str, sub: str, kind: str, **update: Any) -> ServiceTask:
    made = ServiceTask(
        task_id=task_id,
        subscriber_id=sub,
        moment=moment(kind),
        priority=2,
        channel=Channel.OUTBOUND_CALL,
        action="call",
        triggered_at=NOW - dt.timedelta(minutes=5),
        created_at=NOW,
        deliver_after=NOW,
        expires_at=NOW + dt.timedelta(hours=12),
        evidence=[f"ev-{task_id}"],
    )
    return made.model_copy(update=update)


async def test_the_example_consumer_acts_once_in_time_and_reports(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings()
    await topics_for(settings)
    failure = task(FAILURE, "13800138001", "service_failure")
    merged = task(
        MERGED,
        "13800138002",
        "complaint",
        related=[
            RelatedMoment(
                task_id=RECOVERY,
                moment=moment("service_recovery"),
                priority=3,
                channel=Channel.SMS,
                action="sms",
                triggered_at=NOW,
                expires_at=NOW + dt.timedelta(hours=6),
                evidence=["ev-r"],
            ),
            RelatedMoment(  # lapsed while the group waited: not told to the customer
                task_id=STALE,
                moment=moment("roaming_welcome"),
                priority=4,
                channel=Channel.SMS,
                action="sms",
                triggered_at=NOW - dt.timedelta(days=2),
                expires_at=NOW - dt.timedelta(minutes=1),
                evidence=["ev-s"],
            ),
        ],
    )
    lapsed = task(LAPSED, "13800138003", "low_balance", expires_at=NOW)
    opted_out = task(OPTED_OUT, "13800138004", "roaming_welcome", channel=Channel.SMS)
    # The customer opted out of SMS after it was published, before the dispatch consumer
    # read it: the withdrawal is on its topic first.
    withdrawal = notice(
        opted_out,
        ProfileChange(opted_out.subscriber_id, WithdrawReason.OPT_OUT, NOW),
        NOW.timestamp(),
    )
    await produce(
        settings,
        [("task_withdrawals", withdrawal.subscriber_id, withdrawal.model_dump_json().encode())],
    )
    records = [failure, failure, lapsed, merged, opted_out]  # the first twice: a re-drive
    await produce(settings, [("tasks", t.subscriber_id, task_bytes(t)) for t in records])

    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    namespace: dict[str, Any] = {"__name__": "consumer_example"}
    exec(compile(example(), str(PAGE), "exec"), namespace)  # noqa: S102 (the page's own code)
    namespace["TASKS"] = settings.topic("tasks")
    namespace["OUTCOMES"] = settings.topic("task_outcomes")
    namespace["WITHDRAWALS"] = settings.topic("task_withdrawals")
    await namespace["consume"](stop_after=len(records), rebalance_timeout_ms=3000)

    acted = sorted(capsys.readouterr().out.splitlines())  # two partitions: either first
    assert acted == sorted(
        [
            f"outbound_call | {FAILURE} | service_failure!",
            f"outbound_call | {MERGED} | complaint! | service_recovery!",
        ]
    )
    outcomes = [
        TaskOutcome.model_validate_json(r.value)
        for r in await read_written(settings, "task_outcomes", at_least=3)
    ]
    assert sorted((o.task_id, o.status) for o in outcomes) == sorted(
        [
            (FAILURE, OutcomeStatus.DONE_NO_CHANGE),
            (MERGED, OutcomeStatus.DONE_NO_CHANGE),
            (LAPSED, OutcomeStatus.FAILED),  # read too late: answered, not left unanswered
        ]
    )
    notes = {o.task_id: o.note for o in outcomes}
    assert notes == {FAILURE: None, MERGED: None, LAPSED: "read after expires_at, not acted on"}
