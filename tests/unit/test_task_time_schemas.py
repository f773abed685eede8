"""The task and withdrawal schemas check their times with plain `jsonschema`.

`format: date-time` is checked by `jsonschema` only with a format checker and
`rfc3339-validator` installed; without them a consumer validating tasks with our schemas
checked no time at all. Each time carries the pattern of an event's `occurred_at`, of
the years the detector writes (a task's expiry is a rule's `ttl` after its event).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from moments.models import TIME_PATTERN, WRITTEN_TIME_PATTERN, RelatedMoment, ServiceTask
from moments.schemas import example
from sinks.hours import published
from sinks.payloads import task_bytes

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
BAD_TIMES = [
    "2026-11-22T07:05:00",  # no offset
    "2026-11-22 07:05:00+09:00",  # a space for the T
    "2026-11-22T07:05:00+0900",  # no colon in the offset
    "2026-11-22T07:05+09:00",  # no seconds
    "1764900000",  # Unix time as text
    "22/11/2026 07:05",
    "2026-11-22T07:05:00+09:00\n",
]


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema)  # no format checker: as a consumer's default


def _task() -> dict[str, Any]:
    """A task as the sink publishes it, with a merged moment (`related`) and a deferral."""
    task = ServiceTask.model_validate(example("ServiceTask"))
    other = RelatedMoment(
        task_id="90bd947c9fdac044a8b53075800c7702",
        moment=task.moment,
        priority=task.priority,
        channel=task.channel,
        action=task.action,
        triggered_at=task.triggered_at,
        expires_at=task.expires_at,
        evidence=["ev-2"],
    )
    assert task.deferred is not None
    value: dict[str, Any] = orjson.loads(
        task_bytes(published(task.model_copy(update={"related": [other]})))
    )
    return value


TASK_TIMES = [
    ("triggered_at",),
    ("created_at",),
    ("deliver_after",),
    ("expires_at",),
    ("deferred", "until"),
    ("related", 0, "triggered_at"),
    ("related", 0, "expires_at"),
]
WITHDRAWAL_TIMES = [("occurred_at",), ("withdrawn_at",), ("expires_at",)]


def _set(value: Any, path: tuple[str | int, ...], new: str) -> None:
    *parents, last = path
    for step in parents:
        value = value[step]
    value[last] = new


def _cases() -> Iterator[tuple[str, tuple[str | int, ...]]]:
    yield from (("service-task.schema.json", path) for path in TASK_TIMES)
    yield from (("task-withdrawal.schema.json", path) for path in WITHDRAWAL_TIMES)


def _written(name: str) -> dict[str, Any]:
    if name == "service-task.schema.json":
        return _task()
    value: dict[str, Any] = example("TaskWithdrawal")
    return value


@pytest.mark.parametrize("name", ["service-task.schema.json", "task-withdrawal.schema.json"])
def test_what_the_detector_writes_passes(name: str) -> None:
    assert not list(_validator(name).iter_errors(_written(name)))


@pytest.mark.parametrize(("name", "path"), list(_cases()))
@pytest.mark.parametrize("bad", BAD_TIMES)
def test_a_time_in_another_form_fails_without_a_format_checker(
    name: str, path: tuple[str | int, ...], bad: str
) -> None:
    value = _written(name)
    _set(value, path, bad)
    assert list(_validator(name).iter_errors(value)), f"{'.'.join(map(str, path))}={bad!r}"


def _date_times(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from _date_times(item)
    elif isinstance(node, dict):
        if node.get("format") == "date-time":
            yield node
        for item in node.values():
            yield from _date_times(item)


@pytest.mark.parametrize("path", sorted(SCHEMAS_DIR.glob("*.schema.json")), ids=lambda p: p.name)
def test_every_published_time_has_the_pattern(path: Path) -> None:
    """A time field added later is held to the pattern too, in every schema: an event's
    (a task outcome is one), or the detector's written times' (a task's, a withdrawal's)."""
    schema = json.loads(path.read_text(encoding="utf-8"))
    written = path.name in ("service-task.schema.json", "task-withdrawal.schema.json")
    pattern = WRITTEN_TIME_PATTERN if written else TIME_PATTERN
    assert [node.get("pattern") for node in _date_times(schema)] == [
        pattern for _ in _date_times(schema)
    ]
