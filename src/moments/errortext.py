"""pydantic's validation errors as the user reads them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

VALUE_ERROR_PREFIX = "Value error, "
"""What pydantic puts before the message of a `ValueError` a validator raises."""


def error_text(error: Mapping[str, Any]) -> str:
    """One error's message (an item of `ValidationError.errors()`), a validator's own
    words without pydantic's "Value error, " prefix: they name the problem and its fix,
    and `timezone: Value error, 'Mars/Base' is not...` read as a crash report."""
    return str(error["msg"]).removeprefix(VALUE_ERROR_PREFIX)
