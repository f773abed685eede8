"""`moments state seed` against a real broker and a real worker: the history's records go to
the state changelog, a worker started afterwards restores them and knows the seeded
subscribers (their first time is not first again), a new subscriber still gets their
first-time task, and a seed is refused while a worker is in the consumer group."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from moments.embedded import free_port
from moments.partitioning import partition_of
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess, settings_env
from .kafka_io import produce, read_topic, values, wait_for_metric
from .test_worker import roaming

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LI, WANG = "13800138001", "13900139002"


def _history(
    path: Path, subscribers: tuple[str, ...] = (LI,), when: dt.datetime | None = None
) -> Path:
    """The subscribers were in Japan (a month ago unless `when`), as the warehouse knows."""
    at = when or dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    path.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "type": "roaming",
                    "event_id": f"dwh-{sub}",
                    "subscriber_id": sub,
                    "occurred_at": at.replace(microsecond=0).isoformat(),
                    "country": "JP",
                    "roaming_type": "international",
                }
            )
            + b"\n"
            for sub in subscribers
        )
    )
    return path


def _seed(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moments", "state", "seed", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _shown(settings: Settings, *subs: str) -> dict[str, Any]:
    """`moments state show --json`: each subscriber's record in the changelog, or None."""
    shown = subprocess.run(
        [sys.executable, "-m", "moments", "state", "show", *subs, "--json"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode in (0, 1), shown.stderr
    return {
        line["subscriber_id"]: line["record"]
        for line in map(orjson.loads, shown.stdout.splitlines())
    }


async def test_a_worker_started_after_a_seed_knows_the_seeded_subscribers(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    any_hour_rules: Path,
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port, rules=any_hour_rules)
    await topics_for(settings)
    history = _history(tmp_path / "history.jsonl")

    dry = _seed(settings, "--events", str(history), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing written" in dry.stderr

    seeded = _seed(settings, "--events", str(history))
    assert seeded.returncode == 0, seeded.stderr
    assert "1 record(s) written" in seeded.stderr

    # Run again: the changelog holds records, and it says how to go on.
    again = _seed(settings, "--events", str(history))
    assert again.returncode == 2
    assert "--replace" in again.stderr

    worker = start_worker(settings)
    await produce(settings, [roaming("r1", LI, "JP"), roaming("r2", WANG, "JP")])
    tasks = values(await read_topic(settings, "tasks", count=1, wait_s=90, settle=5))
    # Japan is not first for Li (the seed said so); it is for Wang, new to everyone.
    assert [(t["subscriber_id"], t["moment"]["params"]["country"]) for t in tasks] == [
        (WANG, "JP")
    ], worker.log()[-3000:]
    assert await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, 2)

    # A worker is in the group: a seed now is refused, naming how to stop the workers.
    refused = _seed(settings, "--events", str(history), "--replace")
    assert refused.returncode == 2
    assert "consumer group" in refused.stderr
    assert "Stop every worker first" in refused.stderr


async def test_a_subscriber_erased_in_the_last_90_days_gets_no_seeded_record(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    tmp_path: Path,
) -> None:
    """The warehouse erases later than the stream: its history still holds Li, whom a
    profile tombstone erased last week (the dispatch stores' mark). Seeded, Li's record
    came back into the state, the erased person's data (and, for a number given to
    someone since, their first-times and baselines in the new holder's record)."""
    from moments.connections import redis_client
    from sinks.relevance import FactsStore

    settings = make_settings(metrics_port=free_port())
    await topics_for(settings)
    history = _history(tmp_path / "history.jsonl", (LI, WANG))
    redis = redis_client(settings)
    try:
        erased = (dt.datetime.now(dt.UTC) - dt.timedelta(days=7)).timestamp()
        await FactsStore(redis, settings.redis_prefix).forget([LI], erased)
    finally:
        await redis.aclose()

    seeded = _seed(settings, "--events", str(history))
    assert seeded.returncode == 0, seeded.stderr
    assert "1 record(s) written" in seeded.stderr, seeded.stderr
    assert "erased subscribers left out" in seeded.stdout
    records = _shown(settings, LI, WANG)
    assert records[LI] is None, "the erased subscriber's record is not written"
    assert records[WANG] is not None


async def test_a_seed_the_workers_could_not_start_on_is_refused_before_it_writes(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    tmp_path: Path,
) -> None:
    """The input topics have 2 partitions, MOMENTS_PARTITIONS says 3 (the changelog, made
    by the seed, has 3): a worker refuses that layout at start, and the seed wrote a
    changelog no worker could use, on partitions its events never arrive on (a new app
    id was then the only way out). It is refused before the history is read."""
    settings = make_settings(metrics_port=free_port())
    await topics_for(settings)  # 2 partitions each
    three = settings.model_copy(update={"partitions": 3})
    seeded = _seed(three, "--events", str(_history(tmp_path / "history.jsonl")))
    assert seeded.returncode == 2, seeded.stderr
    assert "MOMENTS_PARTITIONS=2" in seeded.stderr
    assert "written" not in seeded.stderr


async def test_a_seed_in_parts_writes_each_part_beside_the_others(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    tmp_path: Path,
) -> None:
    """Millions of subscribers do not fit one run's memory: `--partitions` seeds those
    of some changelog partitions. A part refuses only records in its own partitions, so
    the second is written beside the first, and the first run again is refused."""
    settings = make_settings(metrics_port=free_port())
    await topics_for(settings)  # 2 partitions: Li's is 1, Wang's 0
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).replace(microsecond=0)
    history = _history(tmp_path / "history.jsonl", (LI, WANG), when)
    to = ["--to", (when + dt.timedelta(days=1)).isoformat()]
    li, wang = (str(partition_of(sub.encode(), settings.partitions)) for sub in (LI, WANG))
    assert li != wang
    first = _seed(settings, "--events", str(history), *to, "--partitions", li)
    assert first.returncode == 0, first.stderr
    assert "1 record(s) written" in first.stderr
    second = _seed(settings, "--events", str(history), *to, "--partitions", wang)
    assert second.returncode == 0, second.stderr
    assert "1 record(s) written" in second.stderr
    again = _seed(settings, "--events", str(history), *to, "--partitions", li)
    assert again.returncode == 2
    assert "1 record(s) in the partitions of --partitions already" in again.stderr
    records = _shown(settings, LI, WANG)
    assert records[LI] is not None
    assert records[WANG] is not None
