"""Each warning of `moments rules validate` led with the line of its rule's `- id:`,
whatever it was about: in a rule of forty lines, the tier misspelt in its fourth override
or the param read by no condition had to be looked for. A warning points at the item it
is about where the rules file says where that is (ruamel keeps each node's line)."""

from __future__ import annotations

from rules.catalog import load_texts
from rules.lint import warnings

RULES = """\
rules:
  - id: calls
    description: d
    on: [usage]
    condition:
      all:
        - {field: kind, eq: voice}
        - field: counterparty
          in:
            - '10000'
            - hot
    params:
      least: 5
      hot: "10010"
    overrides:
      - region: nj
        params: {hot: "10011"}
      - tier:
          - gold
          - glod
        params: {least: 3}
    task:
      family: anomaly
      type: t
      channel: sms
      priority: 3
      action: a
      ttl: 1d
      description: calls
  - id: back
    description: d
    on: [roaming]
    condition: {first_time: country, lookback: 60d}
    task:
      family: first_time
      type: b
      channel: sms
      priority: 3
      action: a
      ttl: 24h
      description: "Back, last {previous_at}"
"""


def _line(said: str) -> int:
    return int(said.split(":")[1])


def test_each_warning_points_at_its_item() -> None:
    said = warnings(load_texts([("r.yaml", RULES)]))
    by_what = {
        next(w for w in ("tier 'glod'", "in: 'hot'", "param 'least'", "{previous_at}") if w in s): s
        for s in said
    }
    assert len(said) == len(by_what) == 4, said
    assert _line(by_what["tier 'glod'"]) == 20  # the list's item, not the rule's `- id:`
    assert _line(by_what["in: 'hot'"]) == 11
    assert _line(by_what["param 'least'"]) == 13
    assert _line(by_what["{previous_at}"]) == 41
    assert all(s.startswith("r.yaml:") for s in said)


def test_a_flow_style_item_points_at_its_line() -> None:
    """Written on one line (`tier: [glod]`), the item is on that line."""
    text = RULES.replace(
        "      - tier:\n          - gold\n          - glod\n", "      - tier: [glod]\n"
    )
    (tier,) = [s for s in warnings(load_texts([("r.yaml", text)])) if "tier 'glod'" in s]
    assert _line(tier) == 18


def test_an_anchored_item_points_at_its_line_where_an_alias_reuses_it() -> None:
    """An anchor's items stand at the path that defines them, the first in the file; an
    alias after it is pointed at as written (`tier: *tiers`). The rule was walked last item
    first, so the alias's path took the anchor's lines and the anchor's own warning fell
    back to its `tier:` key's line."""
    text = RULES.replace(
        "      - tier:\n          - gold\n          - glod\n        params: {least: 3}\n",
        "      - tier: &tiers\n          - gold\n          - glod\n        params: {least: 3}\n"
        "      - tier: *tiers\n        region: sh\n        params: {least: 4}\n",
    )
    said = [s for s in warnings(load_texts([("r.yaml", text)])) if "tier 'glod'" in s]
    assert [(_line(s), s.split(": ")[2].split()[0]) for s in said] == [
        (20, "overrides[1]"),  # the anchor's item, `- glod`
        (22, "overrides[2]"),  # the alias, `- tier: *tiers`
    ]
