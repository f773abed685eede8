"""`moments tasks deferred`'s reading of a ledger entry and its closing line."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from moments.deferred import DeferredTask, Listing, _described, summary

TASK_ID = "0" * 32


def test_an_entry_no_longer_waiting_is_left_out() -> None:
    assert _described(TASK_ID, 10.0, None) is None
    assert _described(TASK_ID, 10.0, b'P{"channel":"sms"}') is None


def test_a_payload_without_a_deferral_or_unreadable_shows_unknowns() -> None:
    bare = _described(TASK_ID, 10.0, b'D{"channel":"sms","subscriber_id":"13800138001"}')
    assert bare is not None
    assert (bare.reason, bare.moment_type, bare.subscriber) == ("?", "?", "138****8001")
    assert bare.waited_s(100.0) is None
    broken = _described(TASK_ID, 10.0, b"Dnot json")
    assert broken is not None
    assert (broken.channel, broken.reason, broken.subscriber) == ("?", "?", "?")


def test_the_due_time_is_shown_in_the_given_zone() -> None:
    task = DeferredTask(TASK_ID, "low_balance", "sms", "138****8001", "capacity", 0.0, -90.0)
    zone = dt.timezone(dt.timedelta(hours=8))
    assert task.row(0.0, zone)[6:] == ("1970-01-01 08:00", "1m")
    assert task.as_json(0.0, zone)["due_at"] == "1970-01-01T08:00:00+08:00"


def test_the_closing_line_counts_by_reason_and_says_how_many_more() -> None:
    task = DeferredTask(TASK_ID, "low_balance", "sms", "138****8001", "capacity", 0.0, None)
    listing = Listing([task], 3, Counter({"quiet_hours": 2, "capacity": 1}))
    assert summary(listing) == (
        "3 task(s) waiting (capacity 1, quiet_hours 2); 2 more not listed, soonest due "
        "first (--limit 0 lists all)"
    )
    assert summary(Listing()).startswith("no task is waiting in the deferral queue")


def test_a_listing_that_read_part_of_the_queue_says_so_and_how_to_count_all() -> None:
    """Counting by reason reads every payload of the queue (2-3 s for 50,000 tasks): a
    listing reads the soonest due only, and says how many wait in all and how to count."""
    tasks = [
        DeferredTask(TASK_ID, "low_balance", "sms", "138****8001", reason, 0.0, None)
        for reason in ("quiet_hours", "capacity", "quiet_hours")
    ]
    listing = Listing(tasks, 1000, Counter({"quiet_hours": 600}), complete=False, waiting=50_000)
    assert summary(listing) == (
        "3 task(s) listed, the soonest due of those asked for (capacity 1, quiet_hours 2), "
        "of 50,000 waiting in all; --limit 0 reads the whole queue, to list and count them "
        "all by reason"
    )


def test_a_merged_task_shows_how_many_moments_it_carries() -> None:
    task = DeferredTask(TASK_ID, "low_balance", "sms", "138****8001", "merge_window", 0.0, None, 2)
    assert task.row(0.0, dt.UTC)[1:3] == ("low_balance", "+2")
    assert task.as_json(0.0, dt.UTC)["merged"] == 2
    alone = DeferredTask(TASK_ID, "low_balance", "sms", "138****8001", "merge_window", 0.0, None)
    assert (alone.row(0.0, dt.UTC)[2], alone.as_json(0.0, dt.UTC)["merged"]) == ("", 0)


def test_a_moment_type_no_task_has_is_said_with_the_closest_the_rules_make() -> None:
    """`--moment-type bill_shock` (the guide's own example; the catalog's type is
    `bill_spike`) said only "no task is waiting", as for an empty queue."""
    from moments.deferred import unmatched_types

    listing = Listing(by_type=Counter({"low_balance": 2, "bill_spike": 1}))
    known = {"low_balance", "bill_spike", "complaint"}
    assert unmatched_types(listing, ["bill_shock", "complaint", "low_balance"], known) == [
        "no task of moment type 'bill_shock' waits and no rule in force (MOMENTS_RULES) makes "
        "that type: did you mean 'bill_spike'?; waiting: bill_spike 1, low_balance 2",
        "no task of moment type 'complaint' waits; waiting: bill_spike 1, low_balance 2",
    ]
    unknown = unmatched_types(Listing(), ["zzz"], known)
    assert unknown == [
        "no task of moment type 'zzz' waits and no rule in force (MOMENTS_RULES) makes that "
        "type (`moments rules explain` lists the rules and their types)"
    ]
    assert unmatched_types(Listing(), ["zzz"], None) == ["no task of moment type 'zzz' waits"]


def test_a_moment_type_not_met_in_a_part_read_is_not_said_to_wait_nowhere() -> None:
    """A listing that stopped at `--limit` (the soonest due of the types asked for) read
    part of the queue: a type it did not meet may wait further on."""
    from moments.deferred import unmatched_types

    listing = Listing(by_type=Counter({"low_balance": 50}), complete=False, waiting=50_000)
    assert unmatched_types(listing, ["bill_spike", "low_balance"], {"bill_spike"}) == [
        "no task of moment type 'bill_spike' among the soonest due read (--limit 0 reads the "
        "whole queue)"
    ]
