"""The YAML shape of a rules file, as pydantic models (validated before any event is read)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from moments.models import Channel, EventType, Family
from rules.durations import parse_duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpecModel(_Strict):
    family: Family
    type: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    channel: Channel
    priority: int = Field(ge=1, le=5)
    action: str = Field(min_length=1)
    ttl: str = "24h"
    description: str = Field(min_length=1)

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str) -> str:
        parse_duration(value)
        return value


class FirstTimeSpec(_Strict):
    key: str = Field(description="Event field whose first value per subscriber fires the rule")
    lookback: str | None = Field(default=None, description="e.g. 60d; unset means ever")

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


class RuleSpec(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$", max_length=64)
    version: int = Field(default=1, ge=1)
    description: str = Field(min_length=1)
    on: list[EventType] = Field(min_length=1)
    when: dict[str, Any] = Field(default_factory=dict)
    first_time: FirstTimeSpec | None = None
    task: TaskSpecModel


class RulesFile(_Strict):
    rules: list[RuleSpec] = Field(default_factory=list)
