"""`moments state seed` offline: the records a history builds, as a worker would store
them but without input offsets, placed on the partition murmur2 of the key names; and
when the workers' consumer group counts as running."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import errors as kafka_errors

from moments.backtest_input import EventFile
from moments.cli import main
from moments.partitioning import partition_of
from moments.seed import (
    Group,
    build_states,
    describe,
    of_partitions,
    parse_partitions,
    write_records,
)
from moments.settings import Settings
from moments.state import SubscriberState

from .catalogs import default_rules

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
    seeded = build_states(default_rules(), _history(tmp_path / "h.jsonl"))
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
    seeded = build_states(default_rules(), _history(tmp_path / "h.jsonl"))
    for partitions in (1, 4, 7):
        placed = seeded.by_partition(partitions)
        for partition, items in placed.items():
            for key, value in items:
                assert partition == partition_of(key, partitions)
                assert value == seeded.records[key.decode()]
        assert describe(seeded, partitions)["subscribers"] == 2


def test_a_seed_in_parts_builds_the_records_of_a_whole_one(tmp_path: Path) -> None:
    """A province's millions do not fit one run's memory: each part holds the subscribers
    of some changelog partitions only, and the parts together are the whole."""
    history = tmp_path / "h.jsonl"
    end = dt.datetime.fromisoformat("2026-11-05T00:00:00+08:00")  # `--to`: the same event time
    whole = build_states(default_rules(), _history(history), until=end)
    parts = [
        build_states(default_rules(), of_partitions(EventFile(history), 4, {p}), until=end)
        for p in range(4)
    ]
    li, wang = (partition_of(sub.encode(), 4) for sub in (LI, WANG))
    assert li != wang  # (murmur2: 3 and 0)
    assert [sorted(p.records) for p in parts] == [
        [sub for sub, at in ((LI, li), (WANG, wang)) if at == p] for p in range(4)
    ]
    assert {k: v for p in parts for k, v in p.records.items()} == whole.records
    assert describe(parts[li], 4, {li})["records per partition"] == f"{li}: 1"


def test_a_dry_run_in_parts_counts_its_partitions_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = str(_history(tmp_path / "h.jsonl").path)
    args = ["state", "seed", "--events", history, "--dry-run", "--partitions", "2-3"]
    assert main(args) == 2
    assert "--partitions needs --to" in capsys.readouterr().err
    assert main([*args, "--to", "2026-11-05"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "subscribers │ 1 │" in said  # Li's partition is 3, Wang's 0
    assert "2: 0, 3: 1" in said


@pytest.mark.parametrize("which", ["--events", "--profiles"])
def test_a_missing_events_file_is_said_not_raised(
    which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As `backtest` and `rules test` say it: the file's name and the fix, exit 2 (a path
    given wrong is set-up, README); the seed printed a traceback ending in EventFileError."""
    history = str(_history(tmp_path / "h.jsonl").path)
    missing = str(tmp_path / "missing.jsonl")
    given = {"--events": history, "--profiles": None, which: missing}
    args = ["state", "seed", "--dry-run", *(a for k, v in given.items() if v for a in (k, v))]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    said = {  # --profiles named as the profiles snapshot, not "pass an events file"
        "--events": f"moments: {missing}: no such file; pass an events file",
        "--profiles": f"moments: {missing}: no such file, given to --profiles; pass the profiles",
    }
    assert said[which] in err


@pytest.mark.parametrize(
    ("text", "chosen"), [("0", {0}), ("1-3", {1, 2, 3}), (" 0, 2-3 ", {0, 2, 3}), ("3,3", {3})]
)
def test_partitions_are_numbers_and_ranges(text: str, chosen: set[int]) -> None:
    assert parse_partitions(text, 4) == chosen


@pytest.mark.parametrize(
    ("text", "said"), [("4", "partitions are 0 to 3"), ("3-1", "0 to 3"), ("a", "e.g. 0-3")]
)
def test_partitions_beyond_the_setting_are_refused(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_partitions(text, 4)


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


class _RefusingProducer:
    """A producer on a broker that refuses a producer id (Tansu): an idempotent one fails
    to start, as aiokafka's does."""

    def __init__(self, *, enable_idempotence: bool, **_: object) -> None:
        self.idempotent = enable_idempotence

    async def start(self) -> None:
        if self.idempotent:
            raise kafka_errors.UnknownError("InitProducerId")

    async def stop(self) -> None:
        return None


def test_a_seed_on_a_broker_without_producer_ids_says_nothing_of_tasks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`moments state seed` warned that "tasks are still deduplicated by the Redis
    ledger", the worker's words: a seed writes state records and makes no task."""
    from moments import producer

    started = producer.start_producer

    async def refused(settings: Settings, **kwargs: Any) -> Any:
        return await started(settings, _RefusingProducer, **kwargs)

    monkeypatch.setattr(producer, "start_producer", refused)
    with caplog.at_level(logging.WARNING, logger="moments.producer"):
        assert asyncio.run(write_records(Settings(), "moments-state-changelog", [])) == 0
    (warning,) = [r.getMessage() for r in caplog.records if "idempotent" in r.getMessage()]
    assert "Redis ledger" not in warning
    assert "state record" in warning


def _with_refusals(path: Path, keyless: int) -> Path:
    """A good roaming event, a line that is no JSON (line 2), a top-up with no amount
    (line 3) and `keyless` roaming events with no subscriber id (lines 4 on)."""
    good = {"type": "roaming", "event_id": "r1", "subscriber_id": LI, "country": "JP",
            "occurred_at": "2026-11-01T10:00:00+08:00",
            "roaming_type": "international"}  # fmt: skip
    bad = {**good, "type": "topup", "event_id": "t1"}  # a top-up without an amount
    lines = [orjson.dumps(good), b"not json", orjson.dumps(bad)]
    lines += [
        orjson.dumps({k: v for k, v in good.items() if k != "subscriber_id"} | {"event_id": n})
        for n in range(keyless)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_the_refused_rows_are_named_by_file_and_line(tmp_path: Path) -> None:
    """An operator seeding a province saw how many rows were refused, not which: each
    dead letter names the file and line of its row (the first ones), with its reason."""
    history = _with_refusals(tmp_path / "h.jsonl", 2)
    seeded = build_states(default_rules(), EventFile(history))
    assert seeded.dead_letters == {"invalid_json": 1, "invalid_event": 3}
    named = [(where, reason) for where, reason, _ in seeded.refused]
    assert named == [
        (f"{history}:2", "invalid_json"),
        (f"{history}:3", "invalid_event"),
        (f"{history}:4", "invalid_event"),
        (f"{history}:5", "invalid_event"),
    ]


def test_a_dry_run_lists_the_refused_rows_and_counts_them_by_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The list is capped (the rest said as "… and N more"); the count by reason ends it."""
    from moments.backtest_input import NAMED_KEPT

    history = _with_refusals(tmp_path / "h.jsonl", NAMED_KEPT + 3)
    assert main(["state", "seed", "--events", str(history), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{history}:2: invalid_json" in out
    assert f"{history}:3: invalid_event: topup: amount: Field required" in out
    assert f"{history}:{NAMED_KEPT + 1}" in out
    assert f"{history}:{NAMED_KEPT + 2}:" not in out  # the 21st refused row: over the cap
    assert "… and 5 more" in out
    counts = " ".join(out[out.index("… and 5 more") :].split())
    assert f"invalid_event │ {NAMED_KEPT + 4}" in counts
    assert "invalid_json │ 1" in counts
