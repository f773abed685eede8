"""Where a key of a rules file belongs, for the message about a key where it is not allowed.

`cooldown:` written level with a rule's `on:` was answered "unknown field
'rules.0.cooldown'; did you mean 'cooldown'?" (analyst review): the key is right, its
place is wrong, and the message now says which place takes it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from functools import cache

from pydantic import BaseModel

from rules import spec as sp
from rules.gating import FrequencyCap, GatingPolicy, SuspendedPolicy
from rules.operators import OPERATORS

Path = Sequence[str | int]

_CONDITION_OF: dict[str, type[BaseModel]] = {
    "field": sp.FieldCond,
    "profile": sp.ProfileCond,
    "first_time": sp.FirstTimeCond,
    "changed": sp.ChangedCond,
    "series": sp.SeriesCond,
    "baseline": sp.BaselineCond,
    "share": sp.ShareCond,
    "absence": sp.AbsenceCond,
    "occasion": sp.OccasionCond,
    "all": sp.AllCond,
    "any": sp.AnyCond,
    "not": sp.NotCond,
}
_CONDITIONS = tuple(_CONDITION_OF.values())

PLACES: dict[str, tuple[str, tuple[type[BaseModel], ...]]] = {
    "top": ("the top level of the file (not indented)", (sp.RulesFile,)),
    "rule": ("a rule, level with its id: and on:", (sp.RuleSpec,)),
    "task": ("the rule's task:, indented under it", (sp.TaskSpecModel,)),
    "override": ("an override under overrides:", (sp.OverrideSpec,)),
    "condition": ("a condition (under condition:, all:, any: or not:)", _CONDITIONS),
    "series": ("a series under series:", (sp.SeriesSpec,)),
    "special_days": ("special_days:", (sp.SpecialDaysSpec,)),
    "gating": ("gating:", (GatingPolicy,)),
    "frequency_cap": ("gating: frequency_cap:", (FrequencyCap,)),
    "suspended": ("gating: suspended:", (SuspendedPolicy,)),
}
"""Each place a key may stand in a rules file: how to say it, and its models."""

_FAMILY = {
    "rule": "rules",
    "task": "rules",
    "override": "rules",
    "condition": "rules",
    "gating": "gating",
    "frequency_cap": "gating",
    "suspended": "gating",
}
"""Places of one section: a key out of place in a rule is looked for in a rule's places
first (`when` under `condition:` belongs to the rule, not to a series)."""


@cache
def keys_of(place: str) -> frozenset[str]:
    """The keys a place takes, by their YAML names."""
    return frozenset(
        info.alias or name
        for model in PLACES[place][1]
        for name, info in model.model_fields.items()
    )


def place_of(parent: Path) -> str | None:
    """The place of the map at `parent` (a rules-file location without union tags)."""
    if not parent:
        return "top"
    last = parent[-1]
    before = parent[-2] if len(parent) > 1 else None
    if len(parent) == 2 and parent[0] == "rules" and isinstance(last, int):
        return "rule"
    if len(parent) == 3 and parent[0] == "rules" and last == "task":
        return "task"
    if before == "overrides" and isinstance(last, int):
        return "override"
    if last in ("condition", "not") or (before in ("all", "any") and isinstance(last, int)):
        return "condition" if parent[0] == "rules" else None
    if len(parent) == 2 and parent[0] == "series":
        return "series"
    if tuple(parent) == ("gating",):
        return "gating"
    if tuple(parent) == ("gating", "frequency_cap"):
        return "frequency_cap"
    if tuple(parent) == ("gating", "suspended"):
        return "suspended"
    if tuple(parent) == ("special_days",):
        return "special_days"
    return None


def _homes(key: str, here: str | None) -> list[str]:
    """The places that take `key` (but `here`), those of `here`'s section first."""
    found = [p for p in PLACES if p != here and key in keys_of(p)]
    family = _FAMILY.get(here or "")
    near = [p for p in found if family is not None and _FAMILY.get(p) == family]
    return near or found


def meant(written: str, choices: Sequence[str]) -> str:
    """`; did you mean 'country'?` for `contry` among `choices` (also for a value written in
    another case, `SMS`), or empty: a misspelt field or value was answered with the list
    alone, a dozen names to read against the one written."""
    close = closest(written, choices)
    return f"; did you mean {close!r}?" if close is not None else ""


def closest(written: str, choices: Sequence[str]) -> str | None:
    """The one of `choices` that `written` is a misspelling of (or written in another
    case), or None."""
    close = difflib.get_close_matches(written.lower(), list(choices), n=1, cutoff=0.75)
    return close[0] if close and close[0] != written else None


def known_fields(written: str, fields: Iterable[str]) -> str:
    """`; known: a, b, c` after a field name that is none of `fields`, or `; did you mean
    'country'? (known: ...)` when one is close to it."""
    known = sorted(fields)
    hint = meant(written, known)
    return f"{hint} (known: {', '.join(known)})" if hint else f"; known: {', '.join(known)}"


def unknown_key(path: Path, kind: str | None = None) -> str:
    """The hint for key `path[-1]`, not allowed in the map at `path[:-1]`: where it
    belongs, the key meant, or the tests a condition takes. `kind` is the condition's
    (`series`, `first_time`, ...) when the map is one."""
    key = str(path[-1]) if path else ""
    here = place_of(path[:-1])
    if here == "condition" and kind in sp.CONDITION_KINDS and key in keys_of("condition"):
        model = _CONDITION_OF[kind]
        takes = ", ".join(info.alias or name for name, info in model.model_fields.items())
        return f"a {kind}: condition takes no {key!r} (it takes {takes})"
    homes = _homes(key, here)
    if homes:
        where = " or ".join(PLACES[p][0] for p in homes)
        # `series:`, `gating:`: the place's own colon, not a second one before the hint
        # ("is no key of a series under series:: it belongs in ...").
        what = PLACES[here][0].split(" (")[0].split(",")[0].rstrip(":") if here else "this map"
        return f"{key!r} is no key of {what}: it belongs in {where}; move it there"
    names = sorted({k for p in PLACES for k in keys_of(p)} | OPERATORS)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    if close:
        meant = close[0]
        own = here is not None and meant in keys_of(here)
        elsewhere = _homes(meant, here) if here is not None and not own else []
        belongs = f" (it belongs in {PLACES[elsewhere[0]][0]})" if elsewhere else ""
        return f"did you mean {meant!r}?{belongs}"
    if any(p in ("condition", "when", "all", "any", "not") for p in path):
        return f"a test is one of {', '.join(sorted(OPERATORS))} (docs/rules.md)"
    return "check the spelling against docs/rules.md"
