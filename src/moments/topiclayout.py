"""The input topics, and whether the topics' partition counts can hold the state: what a
worker's start refuses and `moments check` (and `moments state seed`) says, without
importing Faust (~0.6 s of CPU at each `moments check`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moments.enums import EventType
from moments.partitioning import layout_problems
from moments.stateview import changelog_topic, returns_topic
from moments.topicshape import remake_changelog_command

if TYPE_CHECKING:
    from moments.settings import Settings

INPUT_TOPICS: tuple[EventType, ...] = (
    EventType.TOPUP,
    EventType.ROAMING,
    EventType.COMPLAINT,
    EventType.USAGE,
    EventType.PROFILE,
)

OUTPUT_TOPICS: tuple[str, ...] = ("tasks", "deadletter", "task_outcomes", "task_withdrawals")
"""The topics (`Settings.topic` names) a worker creates at start when they are missing,
with MOMENTS_PARTITIONS partitions, beside its changelog (Faust's) and its returns topic
(`moments.worker.ensure_returns_topic`): an account that may not create topics needs
each of them made beforehand (docs/operations.md, "Against a managed Kafka")."""


def topic_types(settings: Settings) -> dict[str, EventType]:
    """Full input topic name -> the event type it carries."""
    return {settings.topic(t.value): t for t in INPUT_TOPICS}


def partition_layout(settings: Settings, counts: dict[str, int]) -> tuple[str | None, str | None]:
    """What keeps the topics' partition counts from holding the state (a start refuses
    it), and a warning about input topics that do not exist yet or withdrawals
    partitioned otherwise than the tasks (`withdrawals_apart`); `moments check` says the
    same."""
    inputs = list(topic_types(settings))
    changelog = changelog_topic(settings)
    remake = remake_changelog_command(settings, changelog)
    problems = layout_problems(counts, inputs, changelog, settings.partitions, remake)
    returns = returns_topic(settings)
    if (held := counts.get(returns)) is not None and held != settings.partitions:
        problems.append(
            f"the internal topic {returns} has {held} partitions and MOMENTS_PARTITIONS is "
            f"{settings.partitions}: it must be co-partitioned with the input; delete it "
            "(it holds only cooldown returns not yet applied) and start again"
        )
    if problems:
        return "; ".join(problems), None
    warnings: list[str] = []
    if missing := [t for t in inputs if t not in counts]:
        warnings.append(
            f"input topic(s) {', '.join(missing)} do not exist yet: create them with "
            f"MOMENTS_PARTITIONS ({settings.partitions}) partitions before producers write to "
            "them (a broker that creates topics on first use gives them its own default count)"
        )
    tasks, withdrawals = settings.topic("tasks"), settings.topic("task_withdrawals")
    if (said := withdrawals_apart(counts, tasks, withdrawals, settings.partitions)) is not None:
        warnings.append(said)
    return None, "; ".join(warnings) or None


def withdrawals_apart(
    counts: dict[str, int], tasks: str, withdrawals: str, partitions: int
) -> str | None:
    """A warning when the withdrawals topic has (or, missing, will be made with:
    `partitions`, as a worker makes `OUTPUT_TOPICS`) another partition count than the
    tasks topic, or None. Consumers are promised a subscriber's tasks and withdrawals on
    partitions of one number (a group member given partition n of both finds a task's
    withdrawal there); the workers' own work does not depend on it, so a start goes on.
    The outcomes topic's count is not checked: what an outcome reads and writes is in
    Redis, and keyed by subscriber its outcomes stay on one partition at any count
    (docs/architecture.md, "Outcomes")."""
    held, made = counts.get(withdrawals, partitions), counts.get(tasks, partitions)
    if held == made:
        return None
    fix = (
        f"add partitions to {withdrawals} up to {made} (its withdrawals already written stay "
        "where they are)"
        if held < made
        else f"create {withdrawals} again with {made} once every task it names has expired "
        "(consumers read it from its start)"
    )
    return (
        f"{withdrawals} has {held} partitions and {tasks} {made}: a subscriber's withdrawals "
        "are no longer on the partition number of its tasks, as consumers are promised "
        f"(docs/consuming-tasks.md, Withdrawn tasks); {fix}"
    )
