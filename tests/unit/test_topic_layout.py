"""moments.topiclayout.partition_layout on the output topics: which counts a start refuses,
warns of, or takes as they are.

The withdrawals are promised "keyed and partitioned as moments.tasks" (the AsyncAPI
description, docs/consuming-tasks.md): a subscriber's tasks and withdrawals on partitions
of the same number, so that a consumer group handing partition n of both topics to one
member finds a task's withdrawal where it reads the task. A dispatch consumer started
before the workers made the topics had its broker create them with the broker's default
count (Tansu 4), and the worker said only "asked 8, has 4" among its start lines.

The outcomes topic's count is the consumers' choice: the worker keeps no state of it
per partition (everything an outcome reads or writes is in Redis, shared by every
worker), and a subscriber's outcomes, keyed by subscriber, stay on one partition in
order whatever that count is."""

from __future__ import annotations

from moments.settings import Settings, load_settings
from moments.stateview import changelog_topic, returns_topic
from moments.topiclayout import partition_layout, topic_types


def counts_at(settings: Settings, n: int, **outputs: int) -> dict[str, int]:
    """Every input topic, the changelog and the returns topic at `n` partitions, and the
    output topics (`Settings.topic` names) at the counts given."""
    held = [*topic_types(settings), changelog_topic(settings), returns_topic(settings)]
    return dict.fromkeys(held, n) | {settings.topic(name): c for name, c in outputs.items()}


def test_withdrawals_partitioned_otherwise_than_the_tasks_are_warned_of() -> None:
    settings = load_settings(partitions=8)
    counts = counts_at(settings, 8, tasks=8, task_withdrawals=4)
    problem, warning = partition_layout(settings, counts)
    assert problem is None  # the worker's own work does not depend on it
    assert warning is not None
    assert "moments.task-withdrawals has 4 partitions and moments.tasks 8" in warning
    assert "add partitions to moments.task-withdrawals" in warning


def test_withdrawals_with_more_partitions_than_the_tasks_name_the_other_fix() -> None:
    settings = load_settings(partitions=4)
    counts = counts_at(settings, 4, tasks=4, task_withdrawals=8)
    _, warning = partition_layout(settings, counts)
    assert warning is not None
    assert "moments.task-withdrawals has 8 partitions and moments.tasks 4" in warning
    assert "create moments.task-withdrawals again with 4" in warning


def test_withdrawals_made_before_the_tasks_are_compared_with_what_the_worker_makes() -> None:
    """A consumer's start made the withdrawals topic alone (a broker's default count); the
    worker then makes the tasks topic with MOMENTS_PARTITIONS, which its start says."""
    settings = load_settings(partitions=8)
    _, warning = partition_layout(settings, counts_at(settings, 8, task_withdrawals=4))
    assert warning is not None
    assert "moments.task-withdrawals has 4 partitions and moments.tasks 8" in warning
    assert partition_layout(settings, counts_at(settings, 8)) == (None, None)


def test_a_withdrawals_warning_comes_beside_one_of_missing_input_topics() -> None:
    settings = load_settings(partitions=8)
    counts = counts_at(settings, 8, tasks=8, task_withdrawals=4)
    del counts[settings.topic("usage")]
    _, warning = partition_layout(settings, counts)
    assert warning is not None
    assert "do not exist yet" in warning
    assert "moments.task-withdrawals has 4 partitions" in warning


def test_a_missing_profile_topic_is_named_with_the_command_that_makes_it_compacted() -> None:
    """A start said only "create them with MOMENTS_PARTITIONS partitions" of a missing
    `telecom.profile` (`moments check` gave the compacted command in its own row): made
    as told, the contract's compacted topic was made with the broker's default policy,
    and the next start warned of that."""
    settings = load_settings(partitions=8, kafka_bootstrap="kafka-1:9092")
    counts = counts_at(settings, 8)
    del counts[settings.topic("profile")]
    _, warning = partition_layout(settings, counts)
    assert warning is not None
    assert (
        "kafka-topics.sh --bootstrap-server kafka-1:9092 --create --topic telecom.profile "
        "--partitions 8 --replication-factor 1 --config cleanup.policy=compact" in warning
    )


def test_other_missing_input_topics_are_not_told_to_be_compacted() -> None:
    settings = load_settings(partitions=8)
    counts = counts_at(settings, 8)
    del counts[settings.topic("usage")]
    _, warning = partition_layout(settings, counts)
    assert warning is not None
    assert "cleanup.policy=compact" not in warning


def test_tasks_and_withdrawals_of_another_count_than_the_workers_make_are_warned_of() -> None:
    """Both made again by a broker on a write after a deletion (Tansu 4, a Kafka's
    `num.partitions`) under MOMENTS_PARTITIONS 8, or made so by a consumer's client on
    first use: their subscribers are on other partition numbers than the tasks a worker
    had published, and a task re-driven after the change comes on another partition than
    its first copy. It was taken as it is, and only the start's "asked 8, has 4" said it."""
    settings = load_settings(partitions=8, kafka_bootstrap="kafka-1:9092")
    problem, warning = partition_layout(
        settings, counts_at(settings, 8, tasks=4, task_withdrawals=4)
    )
    assert problem is None  # the workers' own work does not depend on it
    assert warning is not None
    assert "moments.tasks and moments.task-withdrawals have 4 partitions" in warning
    assert "MOMENTS_PARTITIONS is 8" in warning
    assert "made again after a deletion" in warning
    for topic in ("moments.tasks", "moments.task-withdrawals"):
        assert (
            f"kafka-topics.sh --bootstrap-server kafka-1:9092 --alter --topic {topic} "
            "--partitions 8" in warning
        )


def test_tasks_made_again_apart_from_the_withdrawals_name_the_tasks_fix() -> None:
    """The tasks topic made again with 4 beside withdrawals still at MOMENTS_PARTITIONS 8:
    the fix is the tasks topic's (add partitions up to 8), not making the withdrawals again
    with the tasks' 4 (what the warning told, the tasks taken as the reference)."""
    settings = load_settings(partitions=8)
    _, warning = partition_layout(settings, counts_at(settings, 8, tasks=4, task_withdrawals=8))
    assert warning is not None
    assert "moments.task-withdrawals has 8 partitions and moments.tasks 4" in warning
    assert "add partitions to moments.tasks up to 8" in warning
    assert "moments.task-withdrawals again" not in warning


def test_tasks_of_more_partitions_than_the_workers_make_name_the_remake() -> None:
    """Partitions cannot be taken away: the fix makes the topics again, once read."""
    settings = load_settings(partitions=4, replication_factor=3)
    _, warning = partition_layout(settings, counts_at(settings, 4, tasks=12, task_withdrawals=12))
    assert warning is not None
    assert "create moments.tasks again with 4" in warning
    assert "--create --topic moments.tasks --partitions 4 --replication-factor 3" in warning


def test_tasks_and_withdrawals_left_from_before_a_scale_out_are_not_blamed_on_a_broker() -> None:
    """A deployment scaled out as docs/operations.md, "Scaling", says (input topics given
    12 partitions, MOMENTS_PARTITIONS=12, a new MOMENTS_APP_ID) keeps the tasks and
    withdrawals topics its workers made with 4: alike, unchanged, as its consumers know
    them. The warning said only that a client or a broker had made them so, and told to
    add partitions, which moves the very subscribers it warns of moving: it says that a
    count left from before a change of MOMENTS_PARTITIONS moved nothing, and that its fix
    is then a change of count to make with the consumers."""
    settings = load_settings(partitions=12)
    _, warning = partition_layout(settings, counts_at(settings, 12, tasks=4, task_withdrawals=4))
    assert warning is not None
    assert "made before MOMENTS_PARTITIONS was changed" in warning
    assert "nothing moved" in warning
    assert "bring them to it only with the dispatch consumers told" in warning


def test_tasks_and_withdrawals_apart_say_nothing_of_a_count_left_from_before() -> None:
    """Apart, the two topics break the consumers' promise whatever made them so: the
    warning tells the fix, with no note that they may be left as they are."""
    settings = load_settings(partitions=8)
    _, warning = partition_layout(settings, counts_at(settings, 8, tasks=4, task_withdrawals=8))
    assert warning is not None
    assert "made before MOMENTS_PARTITIONS was changed" not in warning


def test_outcomes_of_another_count_are_taken_as_they_are() -> None:
    settings = load_settings(partitions=8)
    counts = counts_at(settings, 8, tasks=8, task_withdrawals=8, task_outcomes=4)
    assert partition_layout(settings, counts) == (None, None)
