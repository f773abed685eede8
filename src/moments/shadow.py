"""Rules in `mode: shadow` run on live traffic and make no task: what they would have
done is counted (`BatchResult.shadow`, `moments_shadow_moments_total`). Here those counts
are put in words for `moments rules test` and the backtest's report."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

ShadowCounts = Mapping[tuple[str, str, str], int]
"""(rule id, outcome, reason) -> moments; outcome `task`, `deferred` or `suppressed`."""


@dataclass
class ShadowRule:
    """What one shadow rule would have done."""

    tasks: int = 0
    """Moments that would have made a task at once."""
    deferred: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)

    @property
    def moments(self) -> int:
        return self.tasks + self.deferred.total() + self.suppressed.total()

    def describe(self) -> str:
        parts = [f"{self.moments} moment(s): {self.tasks} would make a task now"]
        for label, reasons in (("deferred", self.deferred), ("suppressed", self.suppressed)):
            if reasons:
                detail = ", ".join(f"{why} {n}" for why, n in reasons.most_common())
                parts.append(f"{reasons.total()} {label} ({detail})")
        return ", ".join(parts)


def by_rule(counts: ShadowCounts) -> dict[str, ShadowRule]:
    """The counts per shadow rule, rules in id order."""
    rules: dict[str, ShadowRule] = defaultdict(ShadowRule)
    for (rule_id, outcome, reason), n in counts.items():
        rule = rules[rule_id]
        if outcome == "task":
            rule.tasks += n
        elif outcome == "deferred":
            rule.deferred[reason] += n
        else:
            rule.suppressed[reason] += n
    return dict(sorted(rules.items()))
