"""Turn a rule firing into a ServiceTask with a deterministic id."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from typing import Any

from pydantic import BaseModel

from moments.models import Deferral, InputEvent, Moment, QuietHours, RiskScore, ServiceTask
from moments.state import SubscriberState
from rules.base import Fired
from rules.durations import elapsed_after
from rules.rule import CompiledRule
from rules.templates import fill, placeholders


def task_id(subscriber_id: str, rule_id: str, occurrence: str) -> str:
    """Same subscriber, rule and occurrence: same id, whatever replays or worker made it."""
    digest = hashlib.blake2b(f"{subscriber_id}|{rule_id}|{occurrence}".encode(), digest_size=16)
    return digest.hexdigest()


def build_task(
    rule: CompiledRule,
    fired: Fired,
    subscriber_id: str,
    region: str | None,
    triggered: dt.datetime,
    evidence: list[str],
    state: SubscriberState,
    now: dt.datetime,
    event: InputEvent | None = None,
    *,
    priority: int | None = None,
    risk: RiskScore | None = None,
    deliver_after: dt.datetime | None = None,
    deferred: Deferral | None = None,
    quiet_hours: QuietHours | None = None,
    expires_at: dt.datetime | None = None,
) -> ServiceTask:
    """The task for a firing; the description may name the event's fields and the params.

    The engine passes the priority raised by the risk score, the score, what gating
    decided, the quiet hours it judged and the expiry (when sooner than the rule's
    `ttl`), so the task is built (and validated) once."""
    spec = rule.task
    profile = state.profile
    context = fired.params
    if event is not None:
        names = _placeholders(spec.description)
        if names:
            context = {**shown_fields(event, names), **fired.params}
    extra: dict[str, Any] = {}
    if risk is not None:
        extra["risk"] = risk
    if deferred is not None:
        extra["deferred"] = deferred
    if quiet_hours is not None:
        extra["quiet_hours"] = quiet_hours
    made = task_id(subscriber_id, rule.id, fired.occurrence)
    return ServiceTask(
        task_id=made,
        moment_id=made,  # one moment: its own (given, the model's fallback copies no dict)
        subscriber_id=subscriber_id,
        region=region or profile.get("region") or state.region or None,
        tier=profile.get("tier"),
        manager_id=profile.get("manager_id"),
        moment=moment_of(rule, fill(spec.description, context), fired.params),
        priority=spec.priority if priority is None else priority,
        channel=spec.channel,
        action=spec.action,
        triggered_at=triggered,
        created_at=now,
        deliver_after=max(now, triggered) if deliver_after is None else deliver_after,
        expires_at=elapsed_after(triggered, spec.ttl) if expires_at is None else expires_at,
        evidence=evidence,
        **extra,
    )


_MOMENTS: dict[tuple[Any, ...], Moment] = {}
_MAX_MOMENTS = 4096
_PLAIN = (str, int, bool, type(None))


def moment_of(rule: CompiledRule, description: str, params: dict[str, Any]) -> Moment:
    """The validated Moment for a firing. Firings of a rule mostly repeat the same
    description and params, so a Moment made of the same values is shared (it is frozen):
    validating one was a fifth of building a task.

    Only params of plain values are keyed, by type and value, so a key never merges values
    that validate or serialise differently (1, 1.0 and True; 0.0 and -0.0; nan)."""
    values: list[tuple[str, type, Any]] = []
    for name, value in params.items():
        kind = type(value)
        if kind in _PLAIN or (kind is float and value == value and value != 0.0):
            values.append((name, kind, value))
        else:
            values = []
            break
    else:
        spec = rule.task
        key = (rule.id, rule.version, spec.family, spec.moment_type, description, *values)
        found = _MOMENTS.get(key)
        if found is None:
            if len(_MOMENTS) >= _MAX_MOMENTS:
                _MOMENTS.clear()
            found = _MOMENTS[key] = _new_moment(rule, description, params)
        return found
    return _new_moment(rule, description, params)


def _new_moment(rule: CompiledRule, description: str, params: dict[str, Any]) -> Moment:
    spec = rule.task
    return Moment(
        family=spec.family,
        type=spec.moment_type,
        rule_id=rule.id,
        rule_version=rule.version,
        description=description,
        params=params,
    )


@functools.lru_cache(maxsize=1024)
def _placeholders(template: str) -> frozenset[str]:
    """The names a description template shows (rules are few, so their templates too)."""
    return frozenset(placeholders(template))


def shown_fields(event: InputEvent, names: frozenset[str]) -> dict[str, Any]:
    """`event.model_dump(mode="json", exclude_none=True, include=names)`, reading plain
    strings (a JSON dump leaves them as they are) without the dump."""
    fields = _field_names(type(event))
    extra = event.model_extra or {}
    shown: dict[str, Any] = {}
    rest: set[str] = set()
    for name in names:
        if name in fields:
            value = getattr(event, name)
        elif name in extra:
            value = extra[name]
        else:
            continue
        if type(value) is str:
            shown[name] = value
        elif value is not None:
            rest.add(name)
    if rest:
        shown.update(event.model_dump(mode="json", exclude_none=True, include=rest))
    return shown


@functools.lru_cache(maxsize=64)
def _field_names(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(model.model_fields)
