"""The input topics, and whether the topics' partition counts can hold the state: what a
worker's start refuses and `moments check` (and `moments state seed`) says, without
importing Faust (~0.6 s of CPU at each `moments check`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moments.enums import EventType
from moments.partitioning import layout_problems
from moments.stateview import changelog_topic, returns_topic
from moments.topicshape import create_compacted_command, remake_changelog_command

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
    it), and a warning about input topics that do not exist yet or tasks and withdrawals
    topics of another count than MOMENTS_PARTITIONS (`output_counts`); `moments check` says
    the same."""
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
        profile = settings.topic("profile")
        compacted = (
            f", {profile} compacted, as the contract has it: "
            f"{create_compacted_command(settings, profile)}"
            if profile in missing
            else ""
        )
        warnings.append(
            f"input topic(s) {', '.join(missing)} do not exist yet: create them with "
            f"MOMENTS_PARTITIONS ({settings.partitions}) partitions before producers write to "
            "them (a broker that creates topics on first use gives them its own default count)"
            f"{compacted}"
        )
    if (said := output_counts(settings, counts)) is not None:
        warnings.append(said)
    return None, "; ".join(warnings) or None


def judged_outputs(settings: Settings) -> tuple[str, str]:
    """The tasks and withdrawals topics: their partition counts judged by `output_counts`
    (a worker's start, `moments check`), which says them with the fix; the runtime's
    creation of the output topics does not say again a count the start read
    (`moments.worker.judged_counts`)."""
    return settings.topic("tasks"), settings.topic("task_withdrawals")


def output_counts(settings: Settings, counts: dict[str, int]) -> str | None:
    """A warning when the tasks or withdrawals topic has (a topic missing: will be made
    with) another partition count than MOMENTS_PARTITIONS, or the two differ; None when
    both have it. The workers' own work does not depend on these counts (their producer
    hashes each key over the count each topic has), so a start goes on.

    Consumers do: a subscriber's tasks and withdrawals are promised on partitions of one
    number, and a subscriber's records on one partition, so a task re-driven after a
    change of count comes on another partition than its first copy (a consumer that
    remembers ids per partition acts on it twice). The count is judged against
    MOMENTS_PARTITIONS, not against one recorded when a worker first ran: it is the count
    a worker makes a missing topic with, so the only one a deletion followed by a
    worker's start leaves unchanged, and what docs/operations.md tells to create them
    with; a count other than it was made by someone else (a consumer's client or a broker
    on first use, a broker on a write after a deletion), or is the one the workers made
    them with before MOMENTS_PARTITIONS was raised (a scale-out): the two alike, the
    warning says that nothing moved then, and that its fix moves them. A record would
    need a store of its own and a step to accept a new count, and say nothing of a topic
    made wrong at the start. The outcomes topic is not judged: what an outcome reads and
    writes is in Redis, and keyed by subscriber its outcomes stay on one partition at any
    count (docs/architecture.md, "Outcomes")."""
    partitions = settings.partitions
    tasks, withdrawals = judged_outputs(settings)
    made, held = counts.get(tasks, partitions), counts.get(withdrawals, partitions)
    if made == held == partitions:
        return None
    if made != held:
        said = (
            f"{withdrawals} has {held} partitions and {tasks} {made}: a subscriber's "
            "withdrawals are no longer on the partition number of its tasks, as consumers "
            "are promised (docs/consuming-tasks.md, Withdrawn tasks)"
        )
    else:
        said = f"{tasks} and {withdrawals} have {made} partitions"
    fixes = [
        _count_fix(settings, topic, n, once)
        for topic, n, once in (
            (tasks, made, "its consumers have read it to its end"),
            (withdrawals, held, "every task it names has expired (consumers read it whole)"),
        )
        if n != partitions
    ]
    moves = (
        "a change of count moves subscribers to other partition numbers (a task re-driven "
        "after it comes on another partition than its first copy; consumers that keep "
        "anything per partition must start that afresh)"
    )
    if made == held:  # alike: maybe as the workers made them before a scale-out
        return (
            f"{said}; MOMENTS_PARTITIONS is {partitions}, the count a worker makes them "
            "with. If they were made before MOMENTS_PARTITIONS was changed (a scale-out: "
            'docs/operations.md, "Scaling"), they are as the dispatch consumers know them '
            f"and nothing moved: {moves}, so bring them to it only with the dispatch "
            "consumers told, or leave them alike. If a client or a broker made them on first "
            "use, or made again after a deletion, with another count, their subscribers "
            f"moved then: {'; '.join(fixes)}; tell the dispatch consumers "
            '(docs/consuming-tasks.md, "Partition counts")'
        )
    return (
        f"{said}; MOMENTS_PARTITIONS is {partitions}, the count a worker makes them with: "
        "one of another count was made by a client or a broker on first use, or made again "
        f"after a deletion, and {moves}; {'; '.join(fixes)}; tell the dispatch consumers "
        '(docs/consuming-tasks.md, "Partition counts")'
    )


def _count_fix(settings: Settings, topic: str, held: int, once: str) -> str:
    """How `topic`, of `held` partitions, comes to MOMENTS_PARTITIONS: partitions added,
    or (a topic cannot lose partitions) made again once `once`."""
    tool = f"kafka-topics.sh --bootstrap-server {settings.kafka_bootstrap}"
    wanted = settings.partitions
    if held < wanted:
        return (
            f"add partitions to {topic} up to {wanted} (what it holds stays where it is): "
            f"{tool} --alter --topic {topic} --partitions {wanted}"
        )
    return (
        f"create {topic} again with {wanted}, the workers stopped, once {once}: "
        f"{tool} --delete --topic {topic}; {tool} --create --topic {topic} "
        f"--partitions {wanted} --replication-factor {settings.replication_factor}"
    )
