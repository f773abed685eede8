"""The input topics, and whether the topics' partition counts can hold the state: what a
worker's start refuses and `moments check` (and `moments state seed`) says, without
importing Faust (~0.6 s of CPU at each `moments check`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moments.enums import EventType
from moments.partitioning import layout_problems
from moments.stateview import changelog_topic, returns_topic

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
    it), and a warning about input topics that do not exist yet; `moments check` says
    the same."""
    inputs = list(topic_types(settings))
    problems = layout_problems(counts, inputs, changelog_topic(settings), settings.partitions)
    returns = returns_topic(settings)
    if (held := counts.get(returns)) is not None and held != settings.partitions:
        problems.append(
            f"the internal topic {returns} has {held} partitions and MOMENTS_PARTITIONS is "
            f"{settings.partitions}: it must be co-partitioned with the input; delete it "
            "(it holds only cooldown returns not yet applied) and start again"
        )
    if problems:
        return "; ".join(problems), None
    if missing := [t for t in inputs if t not in counts]:
        return None, (
            f"input topic(s) {', '.join(missing)} do not exist yet: create them with "
            f"MOMENTS_PARTITIONS ({settings.partitions}) partitions before producers write to "
            "them (a broker that creates topics on first use gives them its own default count)"
        )
    return None, None
