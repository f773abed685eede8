"""`MOMENTS_<NAME>_FILE` variables: a setting's value read from a file.

The convention of Docker and Kubernetes secrets: mount the secret as a file and
point `MOMENTS_KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka` at it, so the value
never sits in the process environment. Works for every top-level setting.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from moments.exceptions import ConfigError

PREFIX = "MOMENTS_"
SUFFIX = "_FILE"


def file_variable(field_name: str) -> str:
    """`kafka_sasl_password` -> `MOMENTS_KAFKA_SASL_PASSWORD_FILE`."""
    return f"{PREFIX}{field_name.upper()}{SUFFIX}"


def _environ_upper() -> dict[str, str]:
    return {k.upper(): v for k, v in os.environ.items()}


def secret_file_of(field_name: str) -> str | None:
    """The file `MOMENTS_<NAME>_FILE` names for the setting, as `FileVariablesSource`
    reads it (None: the value, if any, was given otherwise): for a client that reads a
    rotated secret again, as `moments.connections.redis_client` does."""
    return _environ_upper().get(file_variable(field_name))


MAX_SECRET_BYTES = 64 * 1024
"""A password, a URL or a path is far shorter; a PEM bundle is no setting's value."""


LINE_BREAK = re.compile(r"\r\n|\r|\n")


def read_secret_file(variable: str, path: str) -> str:
    """The file's text without its trailing line breaks; a `ConfigError` naming `variable`.
    Read up to `MAX_SECRET_BYTES`, so that a wrong path (/dev/zero, a log file) is refused
    rather than read into memory until the process dies (a pipe, as `<(vault read ...)`
    gives, is still read). A file of more than one line is refused, its content unsaid:
    no setting's value spans lines, and a two-line password was only refused by Redis or
    Kafka as a wrong one."""
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
        if len(data) > MAX_SECRET_BYTES:
            raise ConfigError(
                f"invalid configuration:\n  {variable}: {path} holds more than "
                f"{MAX_SECRET_BYTES:,} bytes, which is no setting's value; point it at the "
                "file that holds only the value"
            )
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"invalid configuration:\n  {variable}: cannot read {path} ({reason}); "
            "point it at a readable UTF-8 file that holds the value"
        ) from None
    value = text.rstrip("\r\n")
    lines = len(LINE_BREAK.split(value))
    if lines > 1:
        raise ConfigError(
            f"invalid configuration:\n  {variable}: {path} holds {lines} lines; a setting's "
            "value is one line (a trailing line break is fine): keep only the value in the file"
        )
    return value


class FileVariablesSource(PydanticBaseSettingsSource):
    """Reads `MOMENTS_<NAME>_FILE` for each field; refuses a value given both ways."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.read_from: dict[str, str] = {}
        """field name -> the file it was read from."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        env = _environ_upper()
        variable = file_variable(field_name)
        path = env.get(variable)
        if path is None:
            return None, field_name, False
        direct = f"{PREFIX}{field_name.upper()}"
        if direct in env:
            raise ConfigError(
                f"invalid configuration:\n  {direct} and {variable} are both set; keep one of them"
            )
        self.read_from[field_name] = path
        return read_secret_file(variable, path), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values
