"""`moments config show`: every setting, its effective value and where it came from.

Secrets (`SecretStr` fields) print as `********` and a password inside
MOMENTS_REDIS_URL as `****`: the output can be pasted into a ticket.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from moments.redisurl import redacted_url
from moments.secret_files import file_variable
from moments.settings import Settings

MASK = "********"
UNSET = "(unset)"


@dataclass(frozen=True)
class ConfigLine:
    variable: str
    value: str
    source: str  # "environment", "file <path>", ".env" or "default"


def show_value(name: str, value: Any) -> str:
    """How a value prints: secrets masked, URLs redacted, None as `(unset)`."""
    if value is None:
        return UNSET
    if isinstance(value, SecretStr):
        return MASK
    if name == "redis_url":
        return redacted_url(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k.upper(): v for k, v in dotenv_values(path).items() if v is not None}


def effective_config(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path = Path(".env"),
) -> list[ConfigLine]:
    """One line per setting (nested sections one line per key), in declaration order."""
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    dotenv = _dotenv(dotenv_path)

    def source(variable: str, field_name: str | None, parent: str | None = None) -> str:
        if variable in env or (parent is not None and parent in env):
            return "environment"
        if field_name is not None and (path := env.get(file_variable(field_name))):
            return f"file {path}"
        if variable in dotenv or (parent is not None and parent in dotenv):
            return ".env"
        return "default"

    lines: list[ConfigLine] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        variable = f"MOMENTS_{name.upper()}"
        if isinstance(value, BaseModel):
            for key in type(value).model_fields:
                nested = f"{variable}__{key.upper()}"
                lines.append(
                    ConfigLine(
                        nested,
                        show_value(key, getattr(value, key)),
                        source(nested, None, parent=variable),
                    )
                )
            continue
        lines.append(ConfigLine(variable, show_value(name, value), source(variable, name)))
    return lines


def format_lines(lines: list[ConfigLine]) -> str:
    """`VARIABLE  value  (source)`, aligned."""
    width = max(len(line.variable) for line in lines)
    vwidth = min(48, max(len(line.value) for line in lines))
    return "\n".join(
        f"{line.variable:<{width}}  {line.value:<{vwidth}}  ({line.source})" for line in lines
    )
