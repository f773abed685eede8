"""A task waiting for its time is not released to a customer who opted out of its channel
meanwhile (backtest; the stream's stores: tests/integration/dispatch/
test_opt_out_release.py).

A silence found at midnight is deferred by the default quiet hours (21:00-08:00) to 08:00;
the customer's profile update at 07:00 opts out of SMS. The engine's gates judged the
opt-outs when the task was made, and dispatch's checks at release did not know them: the
SMS went out at 08:00."""

from __future__ import annotations

import datetime as dt
from typing import Any

from moments.backtest import BacktestResult
from moments.models import EventType

from .rules.helpers import NO_ACTIVITY, at, backtest_of, ev

SILENCE = "rules:" + NO_ACTIVITY


def backtest(events: list[tuple[EventType, dict[str, Any]]]) -> BacktestResult:
    return backtest_of(SILENCE, events, at("2026-11-12"))


def counts(result: BacktestResult, name: str) -> dict[tuple[str, ...], int]:
    return {
        tuple(v for k, v in sorted(labels.items())): int(n) for labels, n in result.counter(name)
    }


def use() -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.USAGE, at("2026-11-01", "10:00"), kind="data", quantity=1000)


def profile(time: str, **fields: Any) -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.PROFILE, at("2026-11-09", time), **fields)


def test_without_an_opt_out_the_silence_goes_at_eight() -> None:
    out = backtest([use(), profile("07:00", tier="gold")])
    assert counts(out, "moments_tasks_deferred") == {("quiet_hours",): 1}
    assert [p.at for p in out.published] == [
        dt.datetime.fromisoformat(at("2026-11-09", "08:00")).timestamp()
    ]
    assert list(out.ledger.values()) == ["sent"]


def test_an_sms_opt_out_while_it_waits_drops_it() -> None:
    out = backtest([use(), profile("07:00", opt_out=["sms"])])
    assert counts(out, "moments_tasks_deferred") == {("quiet_hours",): 1}
    assert out.published == []
    assert counts(out, "moments_tasks_suppressed") == {("no_activity", "opt_out"): 1}
    assert list(out.ledger.values()) == ["dropped"]


def test_a_later_profile_not_saying_opt_out_leaves_it() -> None:
    out = backtest(
        [use(), profile("06:00", opt_out=["sms", "email"]), profile("07:00", tier="gold")]
    )
    assert out.published == []
    assert counts(out, "moments_tasks_suppressed") == {("no_activity", "opt_out"): 1}


def test_an_opt_in_before_the_release_lets_it_go() -> None:
    out = backtest([use(), profile("06:00", opt_out=["sms"]), profile("07:00", opt_out=[])])
    assert len(out.published) == 1
    assert counts(out, "moments_tasks_suppressed") == {}


def test_an_opt_out_of_another_channel_lets_it_go() -> None:
    out = backtest([use(), profile("07:00", opt_out=["outbound_call", "app_push"])])
    assert len(out.published) == 1
    assert counts(out, "moments_tasks_suppressed") == {}
