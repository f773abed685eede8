"""What `moments rules validate` warns of in a rule set it accepts: likely mistakes that
are not errors (a tier no subscriber has, say), so the file still loads."""

from __future__ import annotations

import difflib

from rules.catalog import RuleSet

CONTRACT_TIERS = ("diamond", "gold", "silver", "standard")
"""The tiers the contract names (profile `tier`, e.g. ...): an operator may have more."""


def warnings(rules: RuleSet) -> list[str]:
    """One line per override tier outside the contract's (`tier: [glod]` matched nobody,
    silently: analyst review), and per description naming `{previous_at}`, which a
    first-time rule's first moment ever has not (it stayed in the text as written)."""
    out = []
    for rule in rules.rules:
        for i, override in enumerate(rule.overrides):
            for tier in sorted(override.tiers or ()):
                if tier in CONTRACT_TIERS:
                    continue
                close = difflib.get_close_matches(tier, CONTRACT_TIERS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                out.append(
                    f"{rule.id}: overrides[{i}] tier {tier!r} is none of the contract's tiers "
                    f"({', '.join(CONTRACT_TIERS)}); {hint}it applies only to profiles whose "
                    "tier says so"
                )
        if "{previous_at" in rule.task.description:
            out.append(
                f"{rule.id}: the task description uses {{previous_at}}, which only a moment "
                "seen before has: on a subscriber's first time ever the rule fires too, and "
                "the text shows '{previous_at}' as written; word it for both, or leave it out"
            )
    return out
