"""`moments state seed` offline: the records a history builds, as a worker would store
them but without input offsets, placed on the partition murmur2 of the key names; and
when the workers' consumer group counts as running."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from moments.backtest_input import EventFile
from moments.partitioning import partition_of
from moments.seed import Group, build_states, describe
from moments.state import SubscriberState
from rules.catalog import load_rules

LI, WANG = "13800138001", "13900139002"


def _history(path: Path) -> EventFile:
    lines = [
        {"type": "roaming", "event_id": f"r{n}", "subscriber_id": sub, "country": "JP",
         "occurred_at": f"2026-11-0{n}T10:00:00+08:00", "roaming_type": "international"}
        for n, sub in ((1, LI), (2, WANG))
    ]  # fmt: skip
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return EventFile(path)


def test_the_records_a_history_builds_carry_no_offsets_and_made_no_task(tmp_path: Path) -> None:
    seeded = build_states(load_rules(None), _history(tmp_path / "h.jsonl"))
    assert sorted(seeded.records) == [LI, WANG]
    assert seeded.events == 2
    assert seeded.moments >= 2  # the first roaming of each, in shadow
    for value in seeded.records.values():
        state = SubscriberState.from_bytes(value)
        # A file's line numbers are no offsets of the input topics: kept, a worker would
        # skip every live event up to them as read already.
        assert state.offsets == {}
        assert any(key.endswith(":JP") for key in state.first_seen)


def test_each_record_goes_where_murmur2_of_its_key_puts_it(tmp_path: Path) -> None:
    seeded = build_states(load_rules(None), _history(tmp_path / "h.jsonl"))
    for partitions in (1, 4, 7):
        placed = seeded.by_partition(partitions)
        for partition, items in placed.items():
            for key, value in items:
                assert partition == partition_of(key, partitions)
                assert value == seeded.records[key.decode()]
        assert describe(seeded, partitions)["subscribers"] == 2


@pytest.mark.parametrize(
    ("state", "members", "live"),
    [
        ("Dead", 0, False),
        ("Empty", 0, False),
        ("Stable", 2, True),
        ("PreparingRebalance", 0, True),
        ("CompletingRebalance", 1, True),
    ],
)
def test_a_group_with_members_or_rebalancing_is_running(
    state: str, members: int, live: bool
) -> None:
    assert Group(state, members).live is live
