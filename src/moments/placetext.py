"""One rule for matching a region's or a tier's text, wherever the product matches it:
whatever the case (Unicode casefold), so `nj` and `NJ` are one city and `Gold` and `gold`
one tier.

Rule overrides, `when:` filters and `condition:` tests on `region` and `tier` (equality,
`in:`, `not_in:`, `prefix:`), the catalog's fast lookup by a field's text
(rules.routing) and the dispatch policy's capacity regions (sinks.policy) all match
through `place_key`. It lives in `moments`, the package both `rules` and `sinks` build
on, so that they cannot drift apart again: before, an event from `nj` got NJ's
thresholds (overrides folded the case) but not NJ's capacity limit, and
`when: {region: NJ}` missed it. What is matched is folded; what is shown, recorded in a
task's params or named in a Redis counter stays as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PLACE_FIELDS = frozenset({"region", "tier"})
"""The fields (an event's or a profile's) whose text is matched with `place_key`."""


def place_key(text: str) -> str:
    """The text a region or tier is matched by: `NJ`, `nj` and `Nj` are one key."""
    return text.casefold()


def folded(value: Any) -> Any:
    """A text value as `place_key`, any other value (a number, None) as it is."""
    return value.casefold() if isinstance(value, str) else value


def folded_spec(spec: Any) -> Any:
    """A `when:` test of a place field with its texts folded: a value, a list, or a mapping
    of operators; a `$param` is a name, not a place, and is kept as written."""
    if isinstance(spec, list):
        return [folded(v) for v in spec]
    if isinstance(spec, Mapping):
        return {op: folded_spec(arg) for op, arg in spec.items()}
    if isinstance(spec, str) and spec.startswith("$"):
        return spec
    return folded(spec)
