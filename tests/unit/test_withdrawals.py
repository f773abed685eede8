"""Withdrawals: a published task not yet expired is withdrawn on `moments.task-withdrawals`
when a later profile change makes it void (an opt-out of the channel it went out on, a
closed line, a tombstone); the pure choice of tasks, the memory twin's index, and the
backtest, which drives the stream's sink (the stream's stores:
tests/integration/test_task_withdrawals.py)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
import pytest

from moments.backtest import BacktestResult
from moments.batchresult import BatchResult
from moments.engine import Detector
from moments.enums import Channel, WithdrawReason
from moments.models import EventType, ProfileEvent, ServiceTask, TaskWithdrawal
from moments.runtime import Runtime
from moments.schemas import asyncapi_document
from moments.settings import load_settings
from moments.state import SubscriberState
from moments.store import DictStateStore
from moments.tracking import profile_update
from sinks import relevance
from sinks.dispatch import TaskSink
from sinks.memory import MemoryFacts, MemoryLedger, memory_stores
from sinks.metrics import Metrics
from sinks.relevance import voided
from sinks.withdrawals import (
    ProfileChange,
    PublishedTask,
    Withdrawable,
    changes_by_fact,
    profile_changes,
    void_tasks,
    withdrawals_of,
)

from .fakes import FakeProducer, NoDeadLetters, Sent, acknowledged
from .rules.helpers import NO_ACTIVITY, at, backtest_of, ev, rules_from

SUB = "13800138000"
NOW = dt.datetime(2026, 11, 10, 2, 0, tzinfo=dt.UTC).timestamp()


def task(
    task_id: str, channel: str = "sms", expires: str = "2026-11-12T00:00:00+08:00", **more: Any
) -> ServiceTask:
    return ServiceTask.model_validate(
        {
            "task_id": task_id * 32,
            "subscriber_id": SUB,
            "moment": {
                "family": "anomaly",
                "type": "no_activity",
                "rule_id": "no_activity",
                "rule_version": "1",
                "description": "quiet",
                "params": {},
            },
            "priority": 3,
            "channel": channel,
            "action": "reactivation_offer",
            "triggered_at": "2026-11-09T00:00:00+08:00",
            "created_at": "2026-11-09T00:00:00+08:00",
            "deliver_after": "2026-11-09T08:00:00+08:00",
            "expires_at": expires,
            "evidence": ["e1"],
            **more,
        }
    )


def opt_out(*channels: str, sub: str = SUB) -> ProfileChange:
    when = dt.datetime(2026, 11, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    return ProfileChange(sub, WithdrawReason.OPT_OUT, when, frozenset(channels))


def change(reason: WithdrawReason) -> ProfileChange:
    return ProfileChange(SUB, reason, dt.datetime.fromtimestamp(NOW, dt.UTC))


class TestVoidTasks:
    def test_an_opt_out_withdraws_the_tasks_of_its_channel_only(self) -> None:
        """An SMS opt-out voids the SMS task; the call goes on."""
        sms, call = task("a"), task("b", "outbound_call")
        assert void_tasks(opt_out("sms"), [sms, call], NOW) == [sms]

    def test_an_opt_out_of_another_channel_withdraws_nothing(self) -> None:
        assert void_tasks(opt_out("app_push", "manager"), [task("a")], NOW) == []

    def test_an_expired_task_is_not_withdrawn(self) -> None:
        """Nothing may act on it any more: no notice for it."""
        gone = task("a", expires="2026-11-10T09:59:59+08:00")
        assert void_tasks(opt_out("sms"), [gone], NOW) == []
        assert void_tasks(change(WithdrawReason.CLOSED), [gone], NOW) == []

    def test_a_task_expiring_at_the_instant_is_not_withdrawn(self) -> None:
        at_now = task("a", expires=dt.datetime.fromtimestamp(NOW, dt.UTC).isoformat())
        assert void_tasks(opt_out("sms"), [at_now], NOW) == []

    @pytest.mark.parametrize("reason", [WithdrawReason.CLOSED, WithdrawReason.FORGOTTEN])
    def test_a_closed_line_or_a_tombstone_withdraws_every_live_task(
        self, reason: WithdrawReason
    ) -> None:
        tasks = [task("a"), task("b", "outbound_call"), task("c", "app_push")]
        assert void_tasks(change(reason), tasks, NOW) == tasks

    def test_the_channel_judged_is_the_one_the_task_went_out_on(self) -> None:
        """A merged call carrying an SMS moment in `related` went out as a call: an SMS
        opt-out leaves it, a call opt-out withdraws it (its `channel` is the fallback's,
        or the leading moment's, as published)."""
        related = [
            {
                "task_id": "f" * 32,
                "moment": task("f").moment.model_dump(mode="json"),
                "priority": 3,
                "channel": "sms",
                "action": "x",
                "triggered_at": "2026-11-09T00:00:00+08:00",
                "expires_at": "2026-11-12T00:00:00+08:00",
                "evidence": ["e2"],
            }
        ]
        merged = task("a", "outbound_call", related=related)
        assert void_tasks(opt_out("sms"), [merged], NOW) == []
        assert void_tasks(opt_out("outbound_call"), [merged], NOW) == [merged]

    def test_another_subscribers_tasks_are_left(self) -> None:
        assert void_tasks(opt_out("sms", sub="13900139000"), [task("a")], NOW) == []


class TestWithdrawalsOf:
    def test_one_notice_per_task_by_the_first_change_voiding_it(self) -> None:
        """A line closed and opted out of SMS in one batch: the SMS task is withdrawn once,
        for the closing (the first change)."""
        changes = [change(WithdrawReason.CLOSED), opt_out("sms")]
        made = withdrawals_of(changes, {SUB: [task("a")]}, NOW)
        assert [(w.task_id, w.reason) for w in made] == [("a" * 32, WithdrawReason.CLOSED)]

    def test_the_notice_names_the_task_and_the_change(self) -> None:
        (w,) = withdrawals_of([opt_out("sms")], {SUB: [task("a")]}, NOW)
        assert w == TaskWithdrawal(
            task_id="a" * 32,
            subscriber_id=SUB,
            channel=Channel.SMS,
            moment_type="no_activity",
            reason=WithdrawReason.OPT_OUT,
            occurred_at=dt.datetime.fromisoformat("2026-11-10T09:00:00+08:00"),
            withdrawn_at=dt.datetime.fromisoformat("2026-11-10T10:00:00+08:00"),
            expires_at=dt.datetime.fromisoformat("2026-11-12T00:00:00+08:00"),
        )
        assert w.withdrawn_at.utcoffset() == dt.timedelta(hours=8)  # the change's clock


class TestProfileChanges:
    made = 0

    def profile(self, **fields: Any) -> ProfileEvent:
        """A profile update dated a second after the previous one made (a batch holds them
        in the order they happened unless a test dates them itself)."""
        self.made += 1
        when = dt.datetime.fromisoformat(at("2026-11-10")) + dt.timedelta(seconds=self.made)
        return ProfileEvent.model_validate(
            {"event_id": "p", "subscriber_id": SUB, "occurred_at": when.isoformat(), **fields}
        )

    def test_the_changes_a_batch_holds(self) -> None:
        events = [
            self.profile(opt_out=["sms", "email"]),
            self.profile(status="suspended"),  # a suspension withdraws nothing
            self.profile(status="closed"),
            self.profile(tier="gold"),
        ]
        got = profile_changes(events, ["13900139000"], {"13900139000": NOW}, NOW + 5)
        assert [(c.subscriber_id, c.reason, c.channels) for c in got] == [
            ("13900139000", WithdrawReason.FORGOTTEN, frozenset()),
            # email too, as written: a newer version may send on it (`TestANewerChannel`)
            (SUB, WithdrawReason.OPT_OUT, frozenset({"sms", "email"})),
            (SUB, WithdrawReason.CLOSED, frozenset()),
        ]
        assert got[0].occurred_at.timestamp() == NOW  # the tombstone's own time

    def test_an_opt_out_the_batch_opts_in_again_is_no_change(self) -> None:
        """The customer ends the batch opted in (`[]` replaces the list): tasks published
        before stand; another subscriber's opt-out in between still counts."""
        other = "13900139000"
        events = [
            self.profile(opt_out=["sms", "outbound_call"]),
            self.profile(opt_out=["sms"], subscriber_id=other),
            self.profile(opt_out=[]),
        ]
        got = profile_changes(events)
        assert [(c.subscriber_id, c.channels) for c in got] == [(other, frozenset({"sms"}))]

    def test_an_opt_out_counts_for_the_channels_still_opted_out_at_the_batch_end(
        self,
    ) -> None:
        """Out of SMS and calls, then of calls only: the first withdraws calls (by its
        time), SMS was opted into again; out of SMS again later withdraws SMS then."""
        events = [
            self.profile(opt_out=["sms", "outbound_call"]),
            self.profile(opt_out=["outbound_call"], tier="gold"),
            self.profile(tier="silver"),  # carries no opt_out: says nothing of it
            self.profile(opt_out=["outbound_call", "sms"]),
        ]
        got = profile_changes(events)
        assert [c.channels for c in got] == [
            frozenset({"outbound_call"}),
            frozenset({"outbound_call"}),
            frozenset({"outbound_call", "sms"}),
        ]
        assert [i for i, _ in changes_by_fact(events).items()] == [0, 1, 3]

    def test_a_line_the_batch_reopens_after_closing_it_is_no_change(self) -> None:
        """Closed, then active (or suspended) again in the batch: the line ends it not
        closed (`SubscriberFacts.line_closed`: the latest status decides), and the tasks
        published before stand; another subscriber's closing in between still counts, as
        does a closing after the reopening, and one an update carrying no status follows."""
        other = "13900139000"
        for again in ("active", "suspended"):
            events = [
                self.profile(status="closed"),
                self.profile(status="closed", subscriber_id=other),
                self.profile(status=again),
            ]
            assert [c.subscriber_id for c in profile_changes(events)] == [other]
        events = [
            self.profile(status="closed"),
            self.profile(status="active"),
            self.profile(status="closed", tier="gold"),
            self.profile(tier="silver"),
        ]
        assert [(i, [c.reason for c in made]) for i, made in changes_by_fact(events).items()] == [
            (2, [WithdrawReason.CLOSED])
        ]

    async def test_the_withdrawals_are_what_the_facts_hash_says_at_the_batch_end(
        self,
    ) -> None:
        """The updates as the engine applies them (`profile_update`: a field a newer
        second set is stripped; one of the same second is applied again, read later wins)
        are recorded in the facts hash, which keeps each field's latest `occurred_at` (to the
        microsecond) and reads a tie as opted out, or as not closed. Two updates of one
        second, in either order, dated apart within it or alike, withdraw what the hash then
        says, as the dispatch's and the confirm's checks read it: the batch's order decided
        (an opt-in read after an opt-out dated later within the second, or alike, left the
        customer opted out in the hash and the tasks published on the channel stood)."""
        t = dt.datetime.fromisoformat(at("2026-11-10"))
        pairs: list[tuple[dict[str, Any], dict[str, Any]]] = [
            ({"opt_out": ["sms"]}, {"opt_out": []}),
            ({"opt_out": ["sms", "outbound_call"]}, {"opt_out": ["sms"]}),
            ({"status": "closed"}, {"status": "active"}),
            ({"status": "closed"}, {"status": "suspended"}),
        ]
        for first, second in pairs:
            for ms in ((700, 200), (200, 700), (500, 500), (0, 5000), (5000, 0)):
                for ordered in ((first, second), (second, first)):
                    events = [
                        self.profile(
                            occurred_at=(t + dt.timedelta(milliseconds=m)).isoformat(), **fields
                        )
                        for m, fields in zip(ms, ordered, strict=True)
                    ]
                    state = SubscriberState()
                    applied = [
                        a
                        for e in events
                        if (a := profile_update(state, e, int(e.occurred_at.timestamp())))
                    ]
                    facts = MemoryFacts(lambda: NOW)
                    await facts.record(applied)
                    said = await facts.get(SUB)
                    got = profile_changes(applied)
                    withdrawn = frozenset().union(
                        *(c.channels for c in got if c.reason is WithdrawReason.OPT_OUT)
                    )
                    case = (ms, ordered)
                    assert withdrawn == said.opted_out, case
                    closed = any(c.reason is WithdrawReason.CLOSED for c in got)
                    assert closed == said.line_closed, case

    def test_an_update_naming_no_channel_at_all_makes_no_change(self) -> None:
        """`[]` opts in; null says nothing of the opt-outs."""
        assert profile_changes([self.profile(opt_out=[]), self.profile(tier="gold")]) == []


class TestANewerChannel:
    """In a rolling upgrade a newer version may send on a channel this one does not know
    (`wechat`), and this version's worker may read the profile update opting out of it:
    the model keeps the entry (`OptOutChannel`), so the worker withdraws the tasks a newer
    worker published on that channel, and records the opt-out in the facts hash, where a
    newer worker's release and confirm read it (docs/operations.md, "Rolling upgrades").
    An old worker withdrew nothing and recorded nothing: the customer was contacted on the
    channel they had just refused."""

    def profile(self, second: int, **fields: Any) -> ProfileEvent:
        when = dt.datetime.fromisoformat(at("2026-11-10")) + dt.timedelta(seconds=second)
        return ProfileEvent.model_validate(
            {"event_id": "p", "subscriber_id": SUB, "occurred_at": when.isoformat(), **fields}
        )

    def newer(self, task_id: str, channel: str) -> PublishedTask:
        """A published task as a newer version stored it, read back (`_task`)."""
        body = orjson.loads(task(task_id).model_dump_json())
        return PublishedTask.model_validate({**body, "channel": channel})

    def test_an_opt_out_of_it_withdraws_the_tasks_published_on_it(self) -> None:
        """Those on it only: the SMS task stands, and so does one on another new channel."""
        changes = profile_changes([self.profile(1, opt_out=["wechat"])])
        published: list[Withdrawable] = [
            self.newer("a", "wechat"),
            task("b"),
            self.newer("c", "line"),
        ]
        made = withdrawals_of(changes, {SUB: published}, NOW)
        assert [(w.task_id, w.channel, w.reason) for w in made] == [
            ("a" * 32, "wechat", WithdrawReason.OPT_OUT)
        ]

    def test_opted_into_again_later_in_the_batch_it_withdraws_nothing(self) -> None:
        """As for a channel of moments': the latest update carrying `opt_out` decides."""
        events = [self.profile(1, opt_out=["wechat", "sms"]), self.profile(2, opt_out=["sms"])]
        got = profile_changes(events)
        assert [c.channels for c in got] == [frozenset({"sms"}), frozenset({"sms"})]

    async def test_the_facts_hash_records_the_opt_out(self) -> None:
        """As `opt_out:<channel>`, the field a newer worker's confirm (`sinks.ledger._SETTLE`,
        which reads the task's channel's fields whatever it is) and release read; this
        version's own reading of the hash knows its own channels only."""
        event = self.profile(1, opt_out=["wechat", "sms"])
        facts = MemoryFacts(lambda: NOW)
        await facts.record([event])
        fields = facts.fields(SUB)
        assert fields["opt_out:wechat"] == fields["opt_out:sms"] == event.occurred_at.timestamp()
        assert (await facts.get(SUB)).opted_out == frozenset({"sms"})

    async def test_opted_into_again_the_facts_hash_says_so(self) -> None:
        """`opt_out: []` after `["wechat"]`, both read by this version, which writes no
        `opt_in:wechat`: the hash's `opt_list` (the latest update carrying `opt_out`) says
        the latest update named it no more, as the confirm reads it for any channel
        (`voided`, the memory twin of `sinks.ledger._SETTLE`); an older update read late
        does not undo it. Without it, a newer version kept the customer opted out of the
        channel, and withdrew each task it sent them there, until it read an opt-in
        itself."""
        out, back = self.profile(1, opt_out=["wechat"]), self.profile(2, opt_out=[])
        facts = MemoryFacts(lambda: NOW)
        await facts.record([out])
        said = (WithdrawReason.OPT_OUT, out.occurred_at.timestamp())
        assert voided(facts.fields(SUB), "wechat", math.inf) == said
        await facts.record([back])
        assert voided(facts.fields(SUB), "wechat", math.inf) is None
        await facts.record([out])
        assert voided(facts.fields(SUB), "wechat", math.inf) is None
        await facts.record([self.profile(3, opt_out=["wechat", "sms"])])
        assert voided(facts.fields(SUB), "wechat", math.inf) is not None
        assert (await facts.get(SUB)).opted_out == frozenset({"sms"})

    @pytest.mark.parametrize(("written", "sent_on"), [("WeChat", "wechat"), ("wechat", "WeChat")])
    def test_an_opt_out_written_in_another_case_withdraws_the_tasks_on_it(
        self, written: str, sent_on: str
    ) -> None:
        """A channel this version does not know is compared whatever its case: the
        producer may write `WeChat` where the newer version's tasks say `wechat`. Compared
        as written, the opt-out withdrew nothing: the customer was contacted on the
        channel they had just refused."""
        changes = profile_changes([self.profile(1, opt_out=[written])])
        made = withdrawals_of(changes, {SUB: [self.newer("a", sent_on), task("b")]}, NOW)
        assert [(w.task_id, w.channel) for w in made] == [("a" * 32, sent_on)]
        # Opted out again in another case later in the batch: still opted out.
        events = [self.profile(1, opt_out=[written, "sms"]), self.profile(2, opt_out=[sent_on])]
        assert [c.channels for c in profile_changes(events)] == [frozenset({"wechat"})] * 2

    @pytest.mark.parametrize("written", ["WeChat", "WECHAT"])
    async def test_the_facts_hash_records_it_as_the_confirm_reads_it_whatever_its_case(
        self, written: str
    ) -> None:
        """As `opt_out:wechat`, A-Z lowered (as Lua's `string.lower`): a newer worker's
        confirm and release of a task on `wechat` looked up `opt_out:wechat` and missed
        `opt_out:WeChat`."""
        event = self.profile(1, opt_out=[written])
        facts = MemoryFacts(lambda: NOW)
        await facts.record([event])
        fields = facts.fields(SUB)
        assert f"opt_out:{written}" not in fields
        said = (WithdrawReason.OPT_OUT, event.occurred_at.timestamp())
        assert voided(fields, "wechat", math.inf) == said
        assert voided(fields, "WeChat", math.inf) == said

    def test_an_opt_out_an_earlier_build_recorded_as_written_voids_the_channel_in_any_case(
        self,
    ) -> None:
        """A build before the lowering recorded `opt_out:WeChat` (kept while the
        subscriber's facts are written): a task on `WeChat` exactly was void by it then,
        and the lowered look-up alone (`opt_out:wechat`) missed it; a task on `wechat`
        missed it still, where the release (`_facts`) and the gates found it. Every
        `opt_out:` field is read by its `channel_key`, the latest counting
        (docs/operations.md, "Rolling upgrades")."""
        at = NOW
        old = {"opt_out:WeChat": at, "opt_list": at}
        assert voided(old, "WeChat", math.inf) == (WithdrawReason.OPT_OUT, at)
        assert voided(old, "wechat", math.inf) == (WithdrawReason.OPT_OUT, at)
        shouted = {"opt_out:WECHAT": at + 7, **old}
        assert voided(shouted, "wechat", math.inf) == (WithdrawReason.OPT_OUT, at + 7)
        both = {"opt_out:WeChat": at, "opt_out:wechat": at + 5, "opt_list": at + 5}
        assert voided(both, "WeChat", math.inf) == (WithdrawReason.OPT_OUT, at + 5)
        opted_in = {"opt_out:WeChat": at, "opt_list": at + 5}
        assert voided(opted_in, "WeChat", math.inf) is None

    def test_a_newer_versions_release_finds_an_opt_out_recorded_in_another_case(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A version that sends on `wechat` reads the facts hash for its release and
        re-drive decisions (`_facts`: HGETALL, the fields it knows): the field an earlier
        build recorded as written (`opt_out:WeChat`) is read as its channel's
        (`channel_key`), the later of the two counting. It read `opt_out:wechat` only, and
        sent the waiting task on the channel the customer had refused, until their next
        update carrying `opt_out`. Here with `wechat` among the channels known, as that
        version has it."""
        fields = (*relevance.OPT_FIELDS, ("wechat", "opt_out:wechat", "opt_in:wechat"))
        monkeypatch.setattr(relevance, "OPT_FIELDS", fields)
        known = relevance.KNOWN_FACTS | {"opt_out:wechat", "opt_in:wechat"}
        monkeypatch.setattr(relevance, "KNOWN_FACTS", known)
        at = NOW
        old = {b"opt_out:WeChat": str(at).encode(), b"opt_list": str(at).encode()}
        assert relevance._facts(old).opted_out == frozenset({"wechat"})
        later = {**old, b"opt_in:wechat": str(at + 5).encode()}
        assert relevance._facts(later).opted_out == frozenset()
        both = {**later, b"opt_out:wechat": str(at + 9).encode()}
        assert relevance._facts(both).opted_out == frozenset({"wechat"})


class TestMemoryLedgerIndex:
    """The memory twin keeps the published index as the Redis script does."""

    async def test_confirmed_tasks_are_indexed_by_subscriber_until_they_expire(self) -> None:
        now = [1000.0]
        ledger = MemoryLedger(lambda: now[0], 86400)
        await ledger.claim([("a" * 32, b"{}"), ("b" * 32, b"{}"), ("c" * 32, b"{}")])
        await ledger.confirm(
            ["a" * 32, "b" * 32],
            awaiting={"a" * 32: ("sms", 2000.0), "b" * 32: ("sms", 5000.0)},
            subscribers={"a" * 32: SUB, "b" * 32: SUB},
        )
        await ledger.drop("c" * 32, "capacity")
        assert await ledger.published_of([SUB, "13900139000"], now[0]) == [
            ["a" * 32, "b" * 32],
            [],
        ]
        now[0] = 2500.0
        assert await ledger.published_of([SUB], now[0]) == [["b" * 32]]
        # A confirm repeated (a re-drive's) does not put a withdrawn task back.
        await ledger.withdrawn([("b" * 32, SUB, "sms")])
        await ledger.confirm(
            ["b" * 32], awaiting={"b" * 32: ("sms", 5000.0)}, subscribers={"b" * 32: SUB}
        )
        assert await ledger.published_of([SUB], now[0]) == [[]]
        assert await ledger.unanswered() == {
            "sms": 1,
            "outbound_call": 0,
            "manager": 0,
            "app_push": 0,
        }


# The backtest, through the stream's sink: a silence found at midnight goes out by SMS at
# 08:00 on 11-09 (quiet hours) and expires at midnight 11-12.
SILENCE = "rules:" + NO_ACTIVITY


def backtest(events: list[tuple[EventType, dict[str, Any]]]) -> BacktestResult:
    return backtest_of(SILENCE, events, at("2026-11-12", "12:00"))


def use() -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.USAGE, at("2026-11-01", "10:00"), kind="data", quantity=1000)


def profile(day: str, time: str, **fields: Any) -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.PROFILE, at(day, time), **fields)


def notices(result: BacktestResult) -> list[dict[str, Any]]:
    return [orjson.loads(p.payload) for p in result.withdrawn]


def withdrawn_counts(result: BacktestResult) -> dict[tuple[str, ...], int]:
    return {
        tuple(v for _, v in sorted(labels.items())): int(n)
        for labels, n in result.counter("moments_tasks_withdrawn")
    }


class TestBacktest:
    def test_an_sms_opt_out_after_the_task_went_out_withdraws_it_once(self) -> None:
        out = backtest(
            [
                use(),
                profile("2026-11-10", "09:00", opt_out=["sms"]),
                profile("2026-11-10", "11:00", opt_out=["sms", "outbound_call"]),
            ]
        )
        (task_bytes,) = [p.payload for p in out.published]
        published = orjson.loads(task_bytes)
        (notice,) = notices(out)  # the second opt-out finds it withdrawn already
        assert notice["task_id"] == published["task_id"]
        assert notice["reason"] == "opt_out"
        assert notice["channel"] == "sms"
        assert notice["occurred_at"] == at("2026-11-10", "09:00")
        assert withdrawn_counts(out) == {("no_activity", "opt_out"): 1}
        assert (
            out.withdrawn[0].at == dt.datetime.fromisoformat(at("2026-11-10", "09:00")).timestamp()
        )

    def test_an_opt_out_opted_in_again_in_the_same_batch_withdraws_nothing(self) -> None:
        """The SMS went out on 11-09; on 11-10 an opt-out and, 30 seconds later, the opt-in
        again are read in one batch: the customer ends it opted in, so the task stands
        (as in the stream, which records the batch's facts together)."""
        out = backtest(
            [
                use(),
                profile("2026-11-10", "09:00", opt_out=["sms"]),
                ev(EventType.PROFILE, "2026-11-10T09:00:30+08:00", opt_out=[]),
            ]
        )
        assert len(out.published) == 1
        assert out.withdrawn == []

    def test_an_opt_out_of_another_channel_withdraws_nothing(self) -> None:
        out = backtest([use(), profile("2026-11-10", "09:00", opt_out=["outbound_call"])])
        assert len(out.published) == 1
        assert out.withdrawn == []

    def test_a_closed_line_withdraws_it(self) -> None:
        out = backtest([use(), profile("2026-11-10", "09:00", status="closed")])
        assert [n["reason"] for n in notices(out)] == ["closed"]

    def test_a_line_suspended_after_it_went_out_withdraws_nothing(self) -> None:
        """A suspension is temporary: the published task stands (docs/consuming-tasks.md,
        "A suspended line withdraws nothing"); a guard, no bug to fail on."""
        out = backtest([use(), profile("2026-11-10", "09:00", status="suspended")])
        assert len(out.published) == 1
        assert out.withdrawn == []

    def test_an_opt_out_after_it_expired_withdraws_nothing(self) -> None:
        out = backtest([use(), profile("2026-11-12", "06:00", opt_out=["sms"])])
        assert len(out.published) == 1
        assert out.withdrawn == []

    def test_a_line_closed_before_it_went_out_drops_it_and_withdraws_nothing(self) -> None:
        """Held by quiet hours, the line closed at 07:00: dropped at its 08:00 release
        (`closed`), as gating drops a task of a closed line; it went out before."""
        out = backtest([use(), profile("2026-11-09", "07:00", status="closed")])
        assert out.published == []
        assert out.withdrawn == []
        suppressed = {
            tuple(v for _, v in sorted(labels.items())): int(n)
            for labels, n in out.counter("moments_tasks_suppressed")
        }
        assert suppressed == {("no_activity", "closed"): 1}

    def test_a_line_closed_then_active_again_lets_it_go(self) -> None:
        out = backtest(
            [
                use(),
                profile("2026-11-09", "06:00", status="closed"),
                profile("2026-11-09", "07:00", status="active"),
            ]
        )
        assert len(out.published) == 1

    def test_a_line_closed_and_active_again_in_the_same_batch_withdraws_nothing(self) -> None:
        """The SMS went out on 11-09; on 11-10 the line is closed and, 30 seconds later,
        active again (a CRM correcting itself), read in one batch: the line ends it
        active, so the task stands (as in the stream)."""
        out = backtest(
            [
                use(),
                profile("2026-11-10", "09:00", status="closed"),
                ev(EventType.PROFILE, "2026-11-10T09:00:30+08:00", status="active"),
            ]
        )
        assert len(out.published) == 1
        assert out.withdrawn == []

    def test_a_line_suspended_before_it_went_out_holds_it_until_reactivated(self) -> None:
        """Held by quiet hours, the line suspended at 07:00: at its 08:00 release it waits
        for the line, as gating holds a task of a suspended line (it went out to the
        suspended line), and goes at the reactivation, saying it waited for the line."""
        out = backtest(
            [
                use(),
                profile("2026-11-09", "07:00", status="suspended"),
                profile("2026-11-10", "10:00", status="active"),
            ]
        )
        (published,) = [orjson.loads(p.payload) for p in out.published]
        assert published["deferred"]["reason"] == "suspended"
        went = dt.datetime.fromisoformat(published["deliver_after"])
        assert went == dt.datetime.fromisoformat(at("2026-11-10", "10:00"))
        deferred = {labels["reason"]: int(n) for labels, n in out.counter("moments_tasks_deferred")}
        assert deferred["suspended"] == 1

    def test_a_line_suspended_until_it_expired_drops_it(self) -> None:
        out = backtest([use(), profile("2026-11-09", "07:00", status="suspended")])
        assert out.published == []
        suppressed = {
            tuple(v for _, v in sorted(labels.items())): int(n)
            for labels, n in out.counter("moments_tasks_suppressed")
        }
        assert suppressed == {("no_activity", "suspended"): 1}

    def test_an_opt_out_before_it_went_out_drops_it_and_withdraws_nothing(self) -> None:
        """Held by quiet hours, it is dropped at release (docs/consuming-tasks.md): never
        published, so nothing to withdraw."""
        out = backtest([use(), profile("2026-11-09", "07:00", opt_out=["sms"])])
        assert out.published == []
        assert out.withdrawn == []


P = TypeVar("P", bound=FakeProducer)


def _runtime(producer: P) -> tuple[Runtime, P]:
    """A runtime with the no-activity rule whose task sink sends to `producer`, withdrawals
    on, and no dead letters."""
    detector = Detector(rules_from("rules:" + NO_ACTIVITY), {t.value: t for t in EventType})
    runtime = Runtime(load_settings(), Metrics(), detector)
    runtime.tasks = TaskSink(
        producer,
        "moments.tasks",
        memory_stores(),
        runtime.metrics,
        withdrawals_topic="moments.task-withdrawals",
    )
    runtime.dead_letters = NoDeadLetters()  # type: ignore[assignment]
    return runtime, producer


class CollectingProducer(FakeProducer):
    """Each (topic, value) sent, acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def take(self, record: Sent) -> Awaitable[Any]:
        assert record.value is not None
        self.sent.append((record.topic, record.value))
        return acknowledged()


class TestRuntimeBatch:
    async def test_a_task_of_the_batch_published_before_its_opt_out_is_withdrawn(self) -> None:
        """A batch holding a task (its event read before the profile update) and the SMS
        opt-out: the engine's fresh task goes out with the batch, after the batch looked its
        subscriber's published tasks up, and its confirm, reading the opt-out the batch
        recorded, withdraws it."""
        runtime, producer = _runtime(CollectingProducer())
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        fresh = task("d", expires=(now + dt.timedelta(hours=6)).isoformat()).model_copy(
            update={"triggered_at": now, "created_at": now, "deliver_after": now}
        )
        result = BatchResult()
        result.tasks.append(fresh)
        result.facts.append(
            ProfileEvent.model_validate(
                {
                    "event_id": "p",
                    "subscriber_id": SUB,
                    "occurred_at": now.isoformat(),
                    "opt_out": ["sms"],
                }
            )
        )
        assert await runtime._publish(result, DictStateStore())
        topics = [topic for topic, _ in producer.sent]
        assert topics == ["moments.tasks", "moments.task-withdrawals"]
        notice = orjson.loads(producer.sent[1][1])
        assert (notice["task_id"], notice["reason"]) == (fresh.task_id, "opt_out")

    async def test_a_task_of_the_batch_after_its_tombstone_is_not_withdrawn(self) -> None:
        """A tombstone, then an event of the number's new holder in the same batch: the
        batch keeps the new task (`batchresult.forget`) and it goes out. It is not the
        erased subscriber's, so the tombstone withdraws nothing of it (looked up after the
        batch's tasks went out, the tombstone withdrew it as `forgotten`)."""
        runtime, producer = _runtime(CollectingProducer())
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        result = BatchResult()
        result.forgotten.append(SUB)
        result.erased_at[SUB] = (now - dt.timedelta(seconds=5)).timestamp()
        result.tasks.append(
            task("n", expires=(now + dt.timedelta(hours=6)).isoformat()).model_copy(
                update={"triggered_at": now, "created_at": now, "deliver_after": now}
            )
        )
        assert await runtime._publish(result, DictStateStore())
        assert [topic for topic, _ in producer.sent] == ["moments.tasks"]
        assert runtime.tasks is not None
        ledger = runtime.tasks.ledger
        assert await ledger.published_of([SUB], now.timestamp()) == [["n" * 32]]

    @pytest.mark.parametrize(
        "then_again",
        [({"opt_out": ["sms"]}, {"opt_out": []}), ({"status": "closed"}, {"status": "active"})],
        ids=["opt_out-then-opt_in", "closed-then-active"],
    )
    async def test_a_task_of_the_batch_after_a_change_undone_is_not_withdrawn(
        self, then_again: tuple[dict[str, Any], dict[str, Any]]
    ) -> None:
        """An SMS opt-out (a closing) and the opt-in (reactivation) again in one batch,
        then the event of a task on SMS: the engine made it after the opt-in, the latest
        profile lets it go, and it stands (looked up after the batch's tasks went out, the
        opt-out withdrew it; the backtest, recording each fact at its time, did not)."""
        runtime, producer = _runtime(CollectingProducer())
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        result = BatchResult()
        for n, fields in enumerate(then_again):
            when = now - dt.timedelta(seconds=10 - n)
            result.facts.append(
                ProfileEvent.model_validate(
                    {"event_id": f"p{n}", "subscriber_id": SUB, "occurred_at": when, **fields}
                )
            )
        result.tasks.append(
            task("d", expires=(now + dt.timedelta(hours=6)).isoformat()).model_copy(
                update={"triggered_at": now, "created_at": now, "deliver_after": now}
            )
        )
        assert await runtime._publish(result, DictStateStore())
        assert [topic for topic, _ in producer.sent] == ["moments.tasks"]

    @pytest.mark.parametrize(
        "then_again",
        [({"opt_out": ["sms"]}, {"opt_out": []}), ({"status": "closed"}, {"status": "active"})],
        ids=["opt_out-then-opt_in", "closed-then-active"],
    )
    async def test_a_change_undone_in_one_batch_leaves_earlier_tasks(
        self, then_again: tuple[dict[str, Any], dict[str, Any]]
    ) -> None:
        """A task published by an earlier batch; then a batch holding the SMS opt-out and
        the opt-in again (the line closed and active again): the customer ends the batch
        opted in (the line active), and the task stands."""
        runtime, producer = _runtime(CollectingProducer())
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        earlier = BatchResult()
        earlier.tasks.append(
            task("d", expires=(now + dt.timedelta(hours=6)).isoformat()).model_copy(
                update={"triggered_at": now, "created_at": now, "deliver_after": now}
            )
        )
        assert await runtime._publish(earlier, DictStateStore())
        result = BatchResult()
        for n, fields in enumerate(then_again):
            result.facts.append(
                ProfileEvent.model_validate(
                    {
                        "event_id": f"p{n}",
                        "subscriber_id": SUB,
                        "occurred_at": now + dt.timedelta(seconds=n + 1),
                        **fields,
                    }
                )
            )
        assert await runtime._publish(result, DictStateStore())
        assert [topic for topic, _ in producer.sent] == ["moments.tasks"]
        assert runtime.tasks is not None
        assert await runtime.tasks.ledger.published_of([SUB], now.timestamp()) == [["d" * 32]]

    async def test_a_waiting_task_of_the_batch_after_its_tombstone_goes_at_its_release(
        self,
    ) -> None:
        """The number's new holder's task, made after the batch's tombstone and held a
        minute: at its release it goes out. The tombstone's `forgotten` mark was the clock
        when the batch forgot, after the engine stamped the task's `created_at`: the task
        read as made before the tombstone and was dropped (`forgotten`)."""
        runtime, producer = _runtime(CollectingProducer())
        now = dt.datetime.now(dt.UTC)
        result = BatchResult()
        result.forgotten.append(SUB)
        result.erased_at[SUB] = (now - dt.timedelta(seconds=5)).timestamp()
        made = task("n", expires=(now + dt.timedelta(hours=6)).isoformat()).model_copy(
            update={
                "triggered_at": now,
                "created_at": now,
                "deliver_after": now + dt.timedelta(minutes=1),
            }
        )
        result.tasks.append(made)
        assert await runtime._publish(result, DictStateStore())
        assert runtime.tasks is not None
        assert await runtime.tasks.ledger.state(made.task_id) == "deferred"
        assert await runtime.tasks.release_due((now + dt.timedelta(minutes=2)).timestamp()) == 1
        assert await runtime.tasks.ledger.state(made.task_id) == "sent"
        assert [topic for topic, _ in producer.sent] == ["moments.tasks"]


class HeaderProducer(CollectingProducer):
    """Each record's topic and headers too."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[tuple[str, dict[str, bytes | None]]] = []

    async def take(self, record: Sent) -> Awaitable[Any]:
        self.headers.append((record.topic, dict(record.headers or ())))
        return await super().take(record)


async def test_the_headers_of_tasks_and_withdrawals_are_those_the_asyncapi_document_lists() -> None:
    """What a consumer reads in `schemas/asyncapi.yaml` of a record's headers is what the
    worker writes: `content-type: application/json` on a task and on a withdrawal (the
    document listed it for tasks only, though docs/consuming-tasks.md and the worker put
    it on withdrawals too)."""
    runtime, producer = _runtime(HeaderProducer())
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result = BatchResult()
    result.tasks.append(
        task("d", expires=(now + dt.timedelta(hours=6)).isoformat()).model_copy(
            update={"triggered_at": now, "created_at": now, "deliver_after": now}
        )
    )
    result.facts.append(
        ProfileEvent.model_validate(
            {
                "event_id": "p",
                "subscriber_id": SUB,
                "occurred_at": now.isoformat(),
                "opt_out": ["sms"],
            }
        )
    )
    assert await runtime._publish(result, DictStateStore())
    document = asyncapi_document()
    messages = {
        channel["address"]: name
        for channel in document["channels"].values()
        for name in channel["messages"]
    }
    written = dict(producer.headers)
    assert written.keys() == {"moments.tasks", "moments.task-withdrawals"}
    for topic, headers in written.items():
        listed = document["components"]["messages"][messages[topic]].get("headers", {})
        properties = listed.get("properties", {})
        assert properties.keys() == headers.keys(), topic
        for name, value in headers.items():
            assert value is not None
            assert properties[name]["const"] == value.decode(), (topic, name)
