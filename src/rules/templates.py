"""Task description templates: `{name}` placeholders filled from values, nothing else.

No attribute access, no indexing, no format specs: a template cannot reach into
objects, so a rules file cannot run code through it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill(template: str, values: Mapping[str, Any]) -> str:
    """Fill `{name}` placeholders from `values`; unknown or odd ones stay as written."""
    return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


def placeholders(template: str) -> list[str]:
    return PLACEHOLDER.findall(template)
