"""`moments rules test`: run rules over event files offline and say what fires and why.

The same engine as the stream (`run_pipeline`), with event time as the clock: no
broker, no Redis.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from moments.exceptions import MomentsError
from moments.models import EventType, ServiceTask
from moments.pii import mask_msisdn
from moments.pipeline import PipelineResult, run_pipeline
from moments.records import RawRecord
from moments.shadow import by_rule
from rules.catalog import RuleSet

TYPES = ", ".join(t.value for t in EventType)


class EventFileError(MomentsError):
    """A line of an events file that cannot be read; names the file and line."""


def json_objects(lines: Iterable[str | bytes], path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank JSON line; a line that is not a JSON
    object raises `EventFileError` naming the file and line."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise EventFileError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise EventFileError(f"{path}:{number}: a line must be a JSON object")
        yield number, doc


def event_type_of(doc: dict[str, Any], where: str, default_type: EventType | None) -> EventType:
    """The event's `type` field, removed from `doc` (or `default_type` when it has none)."""
    kind = doc.pop("type", None) or (default_type.value if default_type else None)
    try:
        return EventType(str(kind))
    except ValueError:
        raise EventFileError(f'{where}: add "type": one of {TYPES} (got {kind!r})') from None


def check_rules(
    rules: RuleSet, events: Path, profiles: Path | None = None, until: Any = None
) -> PipelineResult:
    """The rules over event files (JSON lines or CSV, .gz too, read as the backtest reads
    them), in event-time order."""
    from moments.backtest_input import EventFile, merged

    files = [EventFile(events)]
    if profiles is not None:
        files.insert(0, EventFile(profiles, EventType.PROFILE))
    offsets: dict[str, int] = {}
    records = []
    for event in merged(files):
        topic = event.event_type.value
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        records.append(RawRecord(topic, 0, offset, event.key or None, event.value))
    return run_pipeline(records, rules, now=None, until=until)


def describe_task(task: ServiceTask, mask: bool = True) -> str:
    """One line: when, who, which rule, the values that made it fire, and the task."""
    sub = mask_msisdn(task.subscriber_id) if mask else task.subscriber_id
    why = ", ".join(f"{k}={v}" for k, v in task.moment.params.items())
    return (
        f"{task.triggered_at.isoformat()} {sub} {task.moment.rule_id} -> "
        f"{task.moment.type} ({task.channel.value}, priority {task.priority}) "
        f"because {why or 'the event matched'}: {task.moment.description}"
    )


def summary(result: PipelineResult, rules: RuleSet | None = None) -> list[str]:
    lines = [f"{len(result.tasks)} task(s)"]
    for rule, n in Counter(t.moment.rule_id for t in result.tasks).most_common():
        lines.append(f"  {rule}: {n}")
    if result.suppressed:
        held = sum(result.suppressed.values())
        lines.append(f"{held} moment(s) dropped by the gates, no task:")
        for (moment_type, reason), n in sorted(result.suppressed.items()):
            lines.append(f"  {moment_type}: {n} {reason}")
    shadows = [r.id for r in rules.shadows] if rules is not None else []
    if shadows:
        counted = by_rule(result.shadow)
        lines.append(f"{len(shadows)} shadow rule(s), no task made (--shadow-as-live shows them):")
        for rule_id in shadows:
            found = counted.get(rule_id)
            lines.append(f"  {rule_id}: {found.describe() if found else 'no moment'}")
    if result.dead_letters:
        lines.append(f"{len(result.dead_letters)} event(s) refused:")
        for dl in result.dead_letters[:20]:
            lines.append(f"  {dl.event_type} #{dl.record.offset + 1}: {dl.message}")
    return lines
