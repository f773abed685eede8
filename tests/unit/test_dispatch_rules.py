"""Pure parts of the dispatch path: policy file, capacity arithmetic, merging,
relevance checks and retries."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from moments.exceptions import ConfigError
from moments.models import (
    Channel,
    Deferral,
    Family,
    Moment,
    ProfileEvent,
    RoamingEvent,
    ServiceTask,
    TopUpEvent,
)
from moments.outcomes import retry_id, retry_task
from sinks.capacity import CapacityLimiter, allowed_for, next_day_start
from sinks.contact import merge_tasks
from sinks.memory import MemorySlots
from sinks.policy import DispatchPolicy, OverflowPolicy, load_policy
from sinks.relevance import SubscriberFacts, came_home, facts_from, facts_of, topped_up
from sinks.routes import waited

from .calls import counted_calls

T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)


def make(task_id: str, priority: int = 3, minutes: int = 0, **update: object) -> ServiceTask:
    at = T0 + dt.timedelta(minutes=minutes)
    task = ServiceTask(
        task_id=task_id,
        subscriber_id="13800138001",
        moment=Moment(
            family=Family.ANOMALY,
            type=f"type_{task_id}",
            rule_id=f"rule_{task_id}",
            rule_version=1,
            description="d",
        ),
        priority=priority,
        channel=Channel.SMS,
        action="a",
        triggered_at=at,
        created_at=at,
        deliver_after=at,
        expires_at=at + dt.timedelta(hours=6),
        evidence=[f"ev-{task_id}"],
    )
    return task.model_copy(update=update)


class TestPolicyFile:
    """The policy YAML is validated at load time; errors name the file, field and fix."""

    def test_defaults_without_a_file(self) -> None:
        policy = load_policy(None)
        assert policy.limit("NJ", Channel.MANAGER) is None
        assert policy.merge.window == dt.timedelta(minutes=30)
        assert policy.overflow_for("any").policy is OverflowPolicy.DEFER

    def test_the_example_in_the_architecture_page_loads_as_written(self, tmp_path: Path) -> None:
        page = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
        section = page[page.index("### Dispatch policy") : page.index("## Risk score")]
        (example,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
        path = tmp_path / "policy.yaml"
        path.write_text(example)
        policy = load_policy(path)
        assert policy.limit("NJ", Channel.MANAGER) == 400
        assert policy.limit("SH", Channel.MANAGER) == 100  # "*"
        assert policy.limit("SH", Channel.OUTBOUND_CALL) is None
        low = policy.overflow_for("low_balance")
        assert (low.policy, low.channel) == (OverflowPolicy.FALLBACK, Channel.SMS)
        assert policy.overflow_for("any").policy is OverflowPolicy.DEFER
        assert policy.next_day_at == dt.time(9, 0)
        assert policy.contact.max_contacts == 3
        assert policy.outcomes.max_retries == 2
        assert policy.min_time_left == dt.timedelta(minutes=5)
        assert str(policy.hours_for(Channel.OUTBOUND_CALL)) == "09:00-21:00"
        assert str(policy.hours_for(Channel.MANAGER)) == (
            "09:00-12:00, 13:00-18:00 except on 2027-02-06..2027-02-13, 2027-04-05"
        )
        assert policy.hours_for(Channel.SMS) is None

    def test_the_example_in_the_architecture_page_writes_every_field(self) -> None:
        """The page calls its example "every field": a field added to the policy and left
        out of it (`release_batch` was) is one an operator cannot find there."""
        page = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
        section = page[page.index("### Dispatch policy") : page.index("## Risk score")]
        (example,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
        written = set(re.findall(r"^([a-z_]+):", example, re.M))
        assert written == set(DispatchPolicy.model_fields)

    def test_region_limits_fall_back_to_star(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.yaml"
        path.write_text(
            "capacity:\n  NJ: {manager: 5}\n  '*': {manager: 2, sms: 100}\n"
            "overflow:\n  low_balance: {policy: fallback, channel: sms}\n"
            "contact: {max_contacts: 2, period: 3d}\n"
        )
        policy = load_policy(path)
        assert policy.limit("NJ", Channel.MANAGER) == 5
        assert policy.limit("NJ", Channel.SMS) == 100
        assert policy.limit("SZ", Channel.MANAGER) == 2
        assert policy.limit(None, Channel.APP_PUSH) is None
        assert policy.overflow_for("low_balance").channel is Channel.SMS
        assert policy.contact.period == dt.timedelta(days=3)

    def test_a_region_of_digits_is_the_text_written(self, tmp_path: Path) -> None:
        """A region keyed by its area code (`010` Beijing, `025` Nanjing) was read as the
        number 10 and refused "capacity.10: Input should be a valid string", the zero lost
        and no fix given, while a rules file's `region: 010` reads "010"; `10` too was
        refused. The counts beside them, leading zero or not, stay numbers."""
        path = tmp_path / "policy.yaml"
        path.write_text(
            "capacity:\n  010: {manager: 040}\n  10: {manager: 5}\n  '*': {manager: 02}\n"
            "overflow:\n  low_balance: {policy: fallback, channel: sms}\n"
            "contact: {max_contacts: 03, period: 7d}\n"
        )
        policy = load_policy(path)
        assert sorted(policy.capacity) == ["*", "010", "10"]
        assert policy.pool("010", Channel.MANAGER) == ("010", 40)
        assert policy.pool("10", Channel.MANAGER) == ("10", 5)
        assert policy.pool("025", Channel.MANAGER) == ("*", 2)
        assert policy.contact.max_contacts == 3
        assert policy.describe_capacity().startswith("tasks a day: 010 manager 40; 10 manager 5")

    async def test_the_regions_not_listed_share_one_pool(self) -> None:
        """A pool per unlisted region let each region an event named (a typo, 'nj' beside
        'NJ') make its own day of calls and its own series of capacity_left (SRE and
        security reviews). 'nj' is NJ: regions match whatever the case."""
        policy = DispatchPolicy.model_validate(
            {"capacity": {"NJ": {"manager": 1}, "*": {"manager": 2}}}
        )
        limiter = CapacityLimiter(MemorySlots(), policy)
        at = dt.datetime(2026, 11, 2, 4, tzinfo=dt.UTC)
        requests = [
            (f"t{i}", region, Channel.MANAGER, 1)
            for i, region in enumerate(["SZ", "nj", "NJ", "WX", None, "NJ"])
        ]
        slots = await limiter.take_many(requests, at)
        assert [(s.taken, s.left, s.pool) for s in slots] == [
            (True, 1, "*"),
            (True, 0, "NJ"),
            (False, 0, "NJ"),
            (True, 0, "*"),
            (False, 0, "*"),
            (False, 0, "NJ"),
        ]
        again = await limiter.take("t0", "SZ", Channel.MANAGER, 1, at)  # its slot still
        assert (again.taken, again.left, again.pool) == (True, 0, "*")

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (b"capacity: " + b"[" * 5000 + b"]" * 5000, "nested more than 64 levels deep"),
            (b'timezone: "\xff"\n', ":1:12: byte 0xff is not UTF-8: save the file as UTF-8"),
        ],
    )
    def test_a_file_that_cannot_be_read_is_refused_not_a_crash(
        self, tmp_path: Path, raw: bytes, expected: str
    ) -> None:
        """5,000 brackets crashed start-up with a RecursionError traceback (security
        re-check)."""
        path = tmp_path / "policy.yaml"
        path.write_bytes(raw)
        with pytest.raises(ConfigError, match=re.escape(expected)) as err:
            load_policy(path)
        assert str(path) in str(err.value)

    @pytest.mark.parametrize("text", ["", "# capacity: {NJ: {manager: 5}}\n"])
    def test_an_empty_file_is_refused_and_braces_are_the_defaults(
        self, text: str, tmp_path: Path
    ) -> None:
        """Empty (half-written, on a reload) it put the defaults in force: every capacity
        limit lifted (re-check)."""
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match="the dispatch policy is empty"):
            load_policy(path)
        path.write_text("{}\n")
        assert load_policy(path) == DispatchPolicy()

    def test_every_span_is_written_as_in_rules_files(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.yaml"
        path.write_text(
            "merge: {window: 45m}\nmin_time_left: 10m\n"
            "outcomes: {declined_suppress: 14d, unreachable_retry_after: 3h}\n"
        )
        policy = load_policy(path)
        assert policy.merge.window == dt.timedelta(minutes=45)
        assert policy.min_time_left == dt.timedelta(minutes=10)
        assert policy.outcomes.declined_suppress == dt.timedelta(days=14)
        assert policy.outcomes.unreachable_retry_after == dt.timedelta(hours=3)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("overflow: {x: {policy: fallback}}", "needs a channel"),
            ("capacity: {NJ: {manager: -1}}", r"1:26: capacity\.NJ\.manager: -1 is too small"),
            ("merge: {window: soon}", "merge.window"),
            ("timezone: Mars/Base", "IANA"),
            ("timezone: America", "'America' is not an IANA time zone"),  # IsADirectoryError
        ],
    )
    def test_errors_name_the_field(self, tmp_path: Path, text: str, expected: str) -> None:
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=expected) as err:
            load_policy(path)
        assert str(path) in str(err.value)

    def test_a_worker_with_a_bad_file_stops_before_waiting_for_kafka(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The policy was read only once Kafka and Redis answered: with the broker down, a
        worker waited for it and only then said the file was wrong."""
        from moments.cli import main
        from moments.embedded import free_port

        path = tmp_path / "policy.yaml"
        path.write_text("merge: {window: soon}\n")
        monkeypatch.chdir(tmp_path)  # no .env of the developer's
        monkeypatch.setenv("MOMENTS_DISPATCH_POLICY", str(path))
        monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # nobody
        monkeypatch.setenv("MOMENTS_METRICS_PORT", "0")
        # 1, as rules refused: a file read and found wanting (README, exit codes)
        assert main(["worker"]) == 1
        err = capsys.readouterr().err
        assert f"{path}:1:17: merge.window" in err
        assert "Traceback" not in err


class TestCapacityArithmetic:
    """Priorities 1-2 may use the reserved share; 'next day' is a local wall-clock day."""

    def test_reserved_share(self) -> None:
        assert [allowed_for(10, 0.2, p) for p in (1, 2, 3, 5)] == [10, 10, 8, 8]
        assert allowed_for(3, 0.5, 4) == 1

    def test_next_day_start_across_a_dst_change(self) -> None:
        berlin = ZoneInfo("Europe/Berlin")
        at = dt.datetime(2026, 10, 24, 22, 30, tzinfo=dt.UTC)  # 00:30 local on the 25th
        start = next_day_start(at, berlin, dt.time(9, 0))
        assert start.astimezone(berlin).isoformat() == "2026-10-26T09:00:00+01:00"


class TestMerge:
    """The highest-priority moment leads; the others are listed with their evidence."""

    def test_highest_priority_leads_under_the_waiting_tasks_id(self) -> None:
        waiting = make("a", priority=4)
        urgent = make("b", priority=1, minutes=10)
        other = make("c", priority=4, minutes=20)
        merged = merge_tasks("a", [waiting, urgent, other])
        assert (merged.task_id, merged.moment.type, merged.priority) == ("a", "type_b", 1)
        assert [(r.task_id, r.evidence) for r in merged.related or []] == [
            ("a", ["ev-a"]),
            ("c", ["ev-c"]),
        ]
        assert merged.expires_at == other.expires_at

    def test_a_merged_task_merged_again_keeps_every_moment(self) -> None:
        first = merge_tasks("a", [make("a", priority=2), make("b", priority=3)])
        again = merge_tasks("a", [first, make("c", priority=1)])
        assert again.moment.type == "type_c"
        assert sorted(r.task_id for r in again.related or []) == ["a", "b"]

    def test_each_moment_of_a_merged_task_has_its_own_id(self) -> None:
        """The task's id is the carrier's, whose own moment is in `related` under that id,
        while the leading moment's own id appeared nowhere: a consumer de-duplicating per
        moment saw a collision (dispatch consumer review). `moment_id` is the lead's."""
        merged = merge_tasks("a", [make("a", priority=4), make("b", priority=1)])
        assert (merged.task_id, merged.moment_id, merged.moment.type) == ("a", "b", "type_b")
        ids = [merged.moment_id, *(r.task_id for r in merged.related or [])]
        assert ids == ["b", "a"]
        assert [r.moment.type for r in merged.related or []] == ["type_a"]

    def test_a_task_of_one_moment_is_its_own_moment(self) -> None:
        """Also a task stored or published before `moment_id` existed, read back."""
        assert make("a").moment_id == "a"
        old = make("a").model_dump(mode="json", exclude={"moment_id"})
        assert ServiceTask.model_validate_json(orjson.dumps(old)).moment_id == "a"

    def test_merged_again_under_another_lead_each_moment_keeps_its_id(self) -> None:
        """The carrier, led by another moment before, was listed under its own id with the
        lead's moment, and its own moment was then left out as a repeat."""
        first = merge_tasks("a", [make("a", priority=3), make("b", priority=2)])
        again = merge_tasks("a", [first, make("c", priority=1)])
        assert (again.task_id, again.moment_id) == ("a", "c")
        related = sorted((r.task_id, r.moment.type) for r in again.related or [])
        assert related == [("a", "type_a"), ("b", "type_b")]
        # Leading again, it keeps its lead, and the carrier's own moment is not dropped.
        kept = merge_tasks("a", [first, make("c", priority=4)])
        assert (kept.task_id, kept.moment_id) == ("a", "b")
        related = sorted((r.task_id, r.moment.type) for r in kept.related or [])
        assert related == [("a", "type_a"), ("c", "type_c")]

    def test_the_merged_task_says_the_carriers_deferral_not_a_joined_moments(self) -> None:
        """A moment that joined a waiting task keeps, in the group, what gating wrote when
        it joined (quiet hours to 08:00); the carrier's payload holds what the group
        waited for since (parked for capacity to 09:00). Published, the task says the
        carrier's, even when the joined moment leads it: the member's own is not judged
        again, and read only to hold the group for a suspended line (`line_held_since`).
        Split from the group to carry a part of it, a moment takes the group's
        (`waited`)."""
        quiet = Deferral(reason="quiet_hours", until=T0 + dt.timedelta(hours=6))
        capacity = Deferral(reason="capacity", until=T0 + dt.timedelta(hours=7))
        carrier = make("a", priority=4, deferred=capacity, deliver_after=capacity.until)
        joined = make("b", priority=1, deferred=quiet, deliver_after=quiet.until)
        merged = merge_tasks("a", [carrier, joined])
        assert (merged.moment_id, merged.deferred) == ("b", capacity)
        assert merged.deliver_after == capacity.until
        assert waited(joined, carrier).deferred == capacity

    def test_a_held_call_is_never_turned_into_an_sms(self) -> None:
        """A severity-1 complaint call waited for the merge window; a low-balance SMS of the
        same priority, triggered earlier, joined it and led: the task went out as an SMS
        and no one made the call (dispatch review)."""
        call = make("call", priority=2, minutes=5, channel=Channel.OUTBOUND_CALL)
        call = call.model_copy(
            update={
                "deferred": Deferral(reason="merge_window", until=T0 + dt.timedelta(minutes=35))
            }
        )
        sms = make("sms", priority=2, channel=Channel.SMS, action="quick_topup")
        push = make("push", priority=1, minutes=1, channel=Channel.APP_PUSH)
        merged = merge_tasks("call", [call, sms, push])
        assert (merged.task_id, merged.channel, merged.moment.type) == (
            "call",
            Channel.OUTBOUND_CALL,
            "type_call",
        )
        assert merged.priority == 1  # the highest of them all
        assert merged.deferred == call.deferred  # the group waited
        assert [(r.task_id, r.expires_at) for r in merged.related or []] == [
            ("sms", sms.expires_at),
            ("push", push.expires_at),
        ]
        assert merged.expires_at == call.expires_at  # the latest


class TestRelevance:
    """Cancelled only by facts newer than the moment."""

    def test_topped_up_after_the_moment(self) -> None:
        task = make("lb")
        later = T0.timestamp() + 60
        assert not topped_up(task, SubscriberFacts(topup_at=later)).keep
        assert topped_up(task, SubscriberFacts(topup_at=T0.timestamp() - 60)).keep
        assert topped_up(task, SubscriberFacts()).keep

    def test_came_home_unless_abroad_again(self) -> None:
        task = make("rw")
        home = T0.timestamp() + 600
        assert came_home(task, SubscriberFacts(home_at=home)).reason == "came_home"
        assert came_home(task, SubscriberFacts(home_at=home, abroad_at=home + 60)).keep

    def test_facts_of_events(self) -> None:
        topup = TopUpEvent(
            event_id="e", subscriber_id="13800138001", occurred_at=T0, amount=10, channel="app"
        )
        domestic = RoamingEvent(
            event_id="r",
            subscriber_id="13800138001",
            occurred_at=T0,
            country="CN",
            roaming_type="domestic",
        )
        abroad = domestic.model_copy(update={"country": "JP", "roaming_type": "international"})
        assert facts_of(topup) == [("topup", T0.timestamp())]
        assert facts_of(domestic) == [("home", T0.timestamp())]
        assert facts_of(abroad) == [("abroad", T0.timestamp())]

    def test_facts_of_a_profile_opt_out(self) -> None:
        """Every channel moments sends on, out or in, for a profile carrying `opt_out` (the
        whole list), and another named, out only (a newer version may send on it), and
        when the list was (`opt_list`); nothing for one not carrying it."""
        t = T0.timestamp()
        said = ProfileEvent(
            event_id="p",
            subscriber_id="13800138001",
            occurred_at=T0,
            status="suspended",
            opt_out=["sms", "email"],
        )
        assert sorted(facts_of(said)) == [
            ("opt_in:app_push", t),
            ("opt_in:manager", t),
            ("opt_in:outbound_call", t),
            ("opt_list", t),
            ("opt_out:email", t),
            ("opt_out:sms", t),
            ("suspended", t),
        ]
        assert facts_of(said.model_copy(update={"opt_out": None})) == [("suspended", t)]
        cleared = said.model_copy(update={"opt_out": [], "status": None})
        assert {f for f, _ in facts_of(cleared)} == {
            "opt_list",
            *(f"opt_in:{c.value}" for c in Channel),
        }
        assert facts_from({"opt_out:sms": t, "opt_in:sms": t - 1}).opted_out == {"sms"}
        assert facts_from({"opt_out:sms": t - 1, "opt_in:sms": t}).opted_out == set()

    def test_reading_a_subscribers_facts_names_no_channel_again(self) -> None:
        """Read for every task a decision looks at: each channel's opt-out and opt-in
        fields are named once for all, not made from the enum at every read (its `.value`
        a call each, and two strings a channel)."""
        t = 1_800_000_000.0
        values = {"topup": t, "opt_out:sms": t, "opt_in:sms": t - 1, "opt_out:manager": t - 1}
        facts, calls = counted_calls(lambda: facts_from(values))
        assert facts.opted_out == {"sms", "manager"}
        assert facts.topup_at == t
        assert not [name for name in calls if name.endswith(("enum.py:__get__", "enum.py:value"))]


class TestRetry:
    """An unreachable task is retried later with a new deterministic id, within expiry."""

    def test_retry_and_its_limits(self) -> None:
        task = make("u")
        hour = dt.timedelta(hours=1)
        retry = retry_task(task, T0, hour, max_retries=2)
        assert retry is not None
        assert (retry.task_id, retry.attempt, retry.retry_of) == (retry_id("u", 1), 1, "u")
        assert retry.deliver_after == T0 + hour
        second = retry_task(retry, T0, hour, max_retries=2)
        assert second is not None
        assert (second.task_id, second.retry_of) == (retry_id("u", 2), "u")
        assert retry_task(second, T0, hour, max_retries=2) is None
        assert retry_task(task, T0, dt.timedelta(hours=7), max_retries=2) is None

    @pytest.mark.parametrize("behind", [dt.timedelta(hours=8), dt.timedelta(minutes=1)])
    def test_an_attempt_dated_before_the_task_went_out_waits_from_then(
        self, behind: dt.timedelta
    ) -> None:
        """An unanswered call reported as made before its task was published (a dialer
        writing UTC with +08:00: 8 hours behind) was retried at once, the customer called
        again minutes after; no attempt precedes the task, so the wait counts from its
        `deliver_after`, as for a call made the moment it went out."""
        task = make("u", channel=Channel.OUTBOUND_CALL)
        read = T0 + dt.timedelta(minutes=10)
        hour = dt.timedelta(hours=1)
        retry = retry_task(task, read, hour, max_retries=2, occurred_at=T0 - behind)
        assert retry is not None
        assert retry.deliver_after == T0 + hour
        # An attempt dated after the task went out still counts from its own time.
        later = retry_task(task, read, hour, max_retries=2, occurred_at=T0 + hour / 6)
        assert later is not None
        assert later.deliver_after == T0 + hour + hour / 6

    def test_a_retry_is_of_the_same_moment(self) -> None:
        merged = merge_tasks("a", [make("a", priority=4), make("b", priority=1)])
        retry = retry_task(merged, T0, dt.timedelta(hours=1), max_retries=2)
        assert retry is not None
        assert (retry.retry_of, retry.moment_id) == ("a", "b")
