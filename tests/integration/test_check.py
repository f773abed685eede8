"""`moments check` on the session broker and Redis, and a worker that must not join the
group with settings the broker refuses (ops review)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess, settings_env

pytestmark = pytest.mark.integration


def check(settings: Settings) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "moments", "check", "--timeout", "5"],
        env={**settings_env(settings), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


FAUST_LOADED = textwrap.dedent(
    """
    import sys
    from moments.cli import main

    code = main(["check", "--timeout", "5"])
    print("faust loaded:", "faust" in sys.modules, "mode" in sys.modules)
    sys.exit(code)
    """
)


def check_in_process(settings: Settings) -> subprocess.CompletedProcess[str]:
    """`moments check`, then a last line saying whether Faust (and its `mode`) was loaded."""
    return subprocess.run(
        [sys.executable, "-c", FAUST_LOADED],
        env={**settings_env(settings), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def rows(output: str) -> dict[str, tuple[str, str]]:
    """step -> (verdict, detail) from the table; a detail's further lines joined to it."""
    found: dict[str, tuple[str, str]] = {}
    last = None
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) != 3:
            continue
        if cells[1] in ("ok", "warn", "FAIL"):
            last = cells[0].split(" ")[0]
            found[last] = (cells[1], cells[2])
        elif last is not None and not cells[0] and not cells[1]:
            verdict, detail = found[last]
            found[last] = (verdict, f"{detail} {cells[2]}")
    return found


async def test_everything_answers(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Awaitable[None]]
) -> None:
    settings = make_settings()
    await topics_for(settings)
    code, out = check(settings)
    assert code == 0, out
    table = rows(out)
    assert list(table) == [
        "rules",
        "dispatch",
        "state",
        "data",
        "Kafka",
        "topics",
        "changelog",  # not there yet: a worker's start makes it
        "profile",  # made compacted, as the contract has it
        "idempotent",
        "Redis",
    ], out
    assert all(verdict == "ok" for verdict, _ in table.values()), out
    assert "refused by the broker" in table["idempotent"][1]  # Tansu gives no producer id


async def test_every_step_runs_without_faust(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Awaitable[None]]
) -> None:
    """`moments check` joins no group and runs no app: Faust (~0.6 s of CPU to import,
    most of the check's start) was loaded for the topics' step only, through the worker's
    module."""
    settings = make_settings()
    await topics_for(settings)
    done = check_in_process(settings)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "topics" in rows(done.stdout), done.stdout
    assert done.stdout.splitlines()[-1] == "faust loaded: False False", done.stdout


def test_what_fails_is_named_with_its_fix(make_settings: MakeSettings, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("merge: {window: 30x}\n")
    settings = make_settings(
        dispatch_policy=policy,
        idempotent_producer=True,
        redis_url="redis://127.0.0.1:1/0",
    )
    code, out = check(settings)
    assert code == 2, out
    table = rows(out)
    assert table["dispatch"][0] == "FAIL"
    assert "merge.window" in table["dispatch"][1]
    assert table["idempotent"][0] == "FAIL"
    assert "set it to false for this broker" in table["idempotent"][1]
    assert table["Redis"][0] == "FAIL"
    assert "MOMENTS_REDIS_URL" in table["Redis"][1]
    assert table["Kafka"][0] == "ok"


def test_a_worker_told_to_be_idempotent_stops_before_joining_the_group(
    make_settings: MakeSettings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    """It crashed inside Faust once it had joined the group (rc 1, Faust's crash banner),
    and every restart made the healthy workers rebalance twice."""
    worker = start_worker(make_settings(idempotent_producer=True))
    code = worker.proc.wait(timeout=120)
    log = worker.log()
    assert code == 2, log[-3000:]
    assert "refused an idempotent producer" in log
    assert "Joined group" not in log


def test_zones_that_differ_are_a_warning(make_settings: MakeSettings, tmp_path: Path) -> None:
    """gating.timezone (customers' days) and the policy's timezone (capacity days) may
    differ only on purpose: a deployment setting one of them had no word of it."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("timezone: Europe/London\n")
    _, out = check(make_settings(dispatch_policy=policy))  # the exit code: Redis's, Kafka's
    verdict, detail = rows(out)["time"]
    assert verdict == "warn", out
    assert "Asia/Shanghai (the rules' gating.timezone)" in detail
    assert "Europe/London (the dispatch policy's timezone)" in detail


def test_a_policy_naming_no_rule_fails_the_policy_step(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    """`overflow: {low_balanse: ...}` named no rule: the check said "ok" and the worker
    gave low_balance the default overflow."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("overflow:\n  low_balanse: {policy: drop}\n")
    code, out = check(make_settings(dispatch_policy=policy))
    assert code == 2, out
    verdict, detail = rows(out)["dispatch"]
    assert verdict == "FAIL", out
    assert (
        "policy.yaml:2:3: overflow.low_balanse: no rule id 'low_balanse' in the rules; did you "
        in detail
    )


def test_a_first_bootstrap_server_down_leaves_the_others(make_settings: MakeSettings) -> None:
    """Only the first server was tried: a worker restarted while the first of a cluster's
    brokers was down waited for it for ever, and `moments check` said Kafka failed
    (re-check)."""
    from moments.embedded import free_port

    live = make_settings().kafka_bootstrap
    code, out = check(make_settings(kafka_bootstrap=f"127.0.0.1:{free_port()},{live}"))
    assert code == 0, out
    assert rows(out)["Kafka"][0] == "ok"


async def test_withdrawals_a_consumer_made_first_are_a_warning(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Awaitable[None]]
) -> None:
    """A consumer of `moments.task-withdrawals` started before the topics were made gives
    it the broker's default count (Tansu 4); the tasks then made with MOMENTS_PARTITIONS
    (8) are partitioned otherwise, which consumers are promised they are not: the check
    says so with the fix, where it said "ok" (docs/architecture.md, "Outcomes")."""
    from aiokafka import AIOKafkaConsumer

    settings = make_settings(partitions=8)
    withdrawals = settings.topic("task_withdrawals")
    reader = AIOKafkaConsumer(withdrawals, bootstrap_servers=settings.kafka_bootstrap)
    await reader.start()
    try:
        made = len(reader.partitions_for_topic(withdrawals) or ())
    finally:
        await reader.stop()
    assert 0 < made < settings.partitions  # the broker's default, below the workers'
    await topics_for(settings)  # keeps the withdrawals' count, makes the rest with 8
    _, out = check(settings)
    verdict, detail = rows(out)["topics"]
    assert verdict == "warn", out
    assert f"{withdrawals} has {made} partitions and {settings.topic('tasks')} 8" in detail, out
    assert f"add partitions to {withdrawals} up to 8" in detail, out
