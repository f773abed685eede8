"""The state changelog's shape, checked by `moments check` and a worker's start on Tansu.

A changelog deleted under running workers is made again by the next write on a broker
that creates topics on use, with that broker's partition count and no
`cleanup.policy=compact` (Tansu: 4 partitions, no config at all). A start then restored
from it, and its records went at the broker's retention; a count other than the input's
was told to "set MOMENTS_PARTITIONS" to it. Now `moments check` fails with the command
that makes it right and a worker's start stops (exit code 2) with the same line; where
the broker reports nothing of its policy (Tansu, for a topic made on a write), both say
they could not tell, and the start goes on."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from moments.connections import kafka_client_kwargs
from moments.settings import Settings
from moments.stateview import changelog_topic

from .conftest import MakeSettings, WorkerProcess, settings_env
from .test_check import check, rows

pytestmark = pytest.mark.integration


async def make_topic(settings: Settings, name: str, partitions: int, **configs: str) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_client_kwargs(settings)
    )
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def worker_exit(settings: Settings) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "moments", "worker"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(text: str) -> str:
    """The table's cells and the log's lines folded: a long line wraps in either."""
    return " ".join(text.split())


async def test_a_changelog_of_another_count_than_the_input_fails_with_the_remake_command(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Awaitable[None]]
) -> None:
    """Inputs of 2 partitions, the changelog of 4 (as Tansu makes a topic on a write)."""
    settings = make_settings(partitions=2)
    await topics_for(settings)
    topic = changelog_topic(settings)
    await make_topic(settings, topic, 4, **{"cleanup.policy": "compact"})
    remake = (
        f"--delete --topic {topic}; kafka-topics.sh --bootstrap-server "
        f"{settings.kafka_bootstrap} --create --topic {topic} --partitions 2 "
        "--replication-factor 1 --config cleanup.policy=compact"
    )

    code, out = check(settings)
    assert code == 2, out
    verdict, detail = rows(out)["topics"]
    assert verdict == "FAIL", out
    assert remake in one_line(detail), out
    assert "MOMENTS_PARTITIONS=4" not in detail

    done = await worker_exit(settings)
    assert done.returncode == 2, done.stderr[-3000:]
    assert remake in one_line(done.stderr), done.stderr[-3000:]


async def test_a_changelog_not_compacted_fails_with_the_command_that_compacts_it(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Awaitable[None]]
) -> None:
    """Tansu reports the policy a topic was created with: `delete`, Kafka's default."""
    settings = make_settings(partitions=2)
    await topics_for(settings)
    topic = changelog_topic(settings)
    await make_topic(settings, topic, 2, **{"cleanup.policy": "delete"})
    fix = (
        f"kafka-configs.sh --bootstrap-server {settings.kafka_bootstrap} --alter "
        f"--entity-type topics --entity-name {topic} --add-config cleanup.policy=compact"
    )

    code, out = check(settings)
    assert code == 2, out
    verdict, detail = rows(out)["changelog"]
    assert verdict == "FAIL", out
    assert "has cleanup.policy=delete, not compact" in one_line(detail)
    assert fix in one_line(detail), out

    done = await worker_exit(settings)
    assert done.returncode == 2, done.stderr[-3000:]
    assert fix in one_line(done.stderr), done.stderr[-3000:]


async def test_a_changelog_tansu_made_on_a_write_is_could_not_tell(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Awaitable[None]],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    """Made by a produce (Tansu's 4 partitions, no config): the broker says nothing of
    its policy; a warning, not a pass nor a refusal, and the worker starts."""
    settings = make_settings(partitions=4)
    await topics_for(settings)
    topic = changelog_topic(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_client_kwargs(settings)
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x", key=b"k")
    finally:
        await producer.stop()

    code, out = check(settings)
    assert code == 0, out
    verdict, detail = rows(out)["changelog"]
    assert verdict == "warn", out
    assert f"could not tell whether {topic} is compacted" in one_line(detail)

    worker = start_worker(settings)
    await worker.wait_for_log("runtime ready", wait_s=90)
    assert f"could not tell whether {topic} is compacted" in one_line(worker.log())


async def test_a_changelog_a_worker_made_passes(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Awaitable[None]],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    """Faust makes it with cleanup.policy=compact, which Tansu reports."""
    settings = make_settings(partitions=2)
    await topics_for(settings)
    worker = start_worker(settings)
    await worker.wait_for_log("runtime ready", wait_s=90)
    worker.stop()
    code, out = check(settings)
    assert code == 0, out
    verdict, detail = rows(out)["changelog"]
    assert verdict == "ok", out
    assert "is compacted (cleanup.policy=compact)" in one_line(detail)


async def test_tasks_and_withdrawals_made_again_with_another_count_are_a_warning(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Awaitable[None]],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    """Both deleted and made again by a write (Tansu's 4 partitions) under MOMENTS_PARTITIONS
    2: their subscribers moved to other partition numbers, which dispatch consumers depend
    on. `moments check` said "ok" and a start only "asked 2, has 4"; both now say it with
    the fix, and the start goes on (the workers' own work does not depend on it)."""
    settings = make_settings(partitions=2)
    await topics_for(settings)
    tasks, withdrawals = settings.topic("tasks"), settings.topic("task_withdrawals")
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_client_kwargs(settings)
    )
    await admin.start()
    try:
        await admin.delete_topics([tasks, withdrawals])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_client_kwargs(settings)
    )
    await producer.start()
    try:
        for topic in (tasks, withdrawals):
            await producer.send_and_wait(topic, b"{}", key=b"13800138000")
        made = len(producer.client.cluster.partitions_for_topic(tasks) or ())
    finally:
        await producer.stop()
    assert made == 4  # Tansu's default count, not the 2 they were made with
    said = f"{tasks} and {withdrawals} have 4 partitions; MOMENTS_PARTITIONS is 2"
    fix = f"kafka-topics.sh --bootstrap-server {settings.kafka_bootstrap} --delete --topic {tasks}"

    code, out = check(settings)
    assert code == 0, out
    verdict, detail = rows(out)["topics"]
    assert verdict == "warn", out
    assert said in one_line(detail), out
    assert fix in one_line(detail), out

    worker = start_worker(settings)
    await worker.wait_for_log("runtime ready", wait_s=90)
    logged = one_line(worker.log())
    assert logged.count(said) == 1, logged
    # once: the creation of the output topics no longer says it again without the fix
    assert f"{tasks}: asked 2, has 4" not in logged, logged
    assert f"{withdrawals}: asked 2, has 4" not in logged, logged


async def test_a_profile_topic_not_compacted_is_a_warning_with_the_command(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Awaitable[None]],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    """The contract's compacted input, made with `cleanup.policy=delete` (Tansu reports the
    policy a topic was created with): `moments check` said nothing of it. Its profiles go at
    the retention, which the workers running do not feel (their state is in the changelog):
    a warning with the fix, and the worker starts."""
    settings = make_settings(partitions=2)
    profile = settings.topic("profile")
    await make_topic(settings, profile, 2, **{"cleanup.policy": "delete"})
    await topics_for(settings)  # keeps the profile topic as it is
    fix = (
        f"kafka-configs.sh --bootstrap-server {settings.kafka_bootstrap} --alter "
        f"--entity-type topics --entity-name {profile} --add-config cleanup.policy=compact"
    )

    code, out = check(settings)
    assert code == 0, out
    verdict, detail = rows(out)["profile"]
    assert verdict == "warn", out
    assert f"{profile} has cleanup.policy=delete, not compact" in one_line(detail), out
    assert fix in one_line(detail), out

    worker = start_worker(settings)
    await worker.wait_for_log("runtime ready", wait_s=90)
    assert fix in one_line(worker.log())
