"""The in-process part of `moments bench`: rule cost and state size are measured, not made up."""

from __future__ import annotations

from moments.bench import bench_events
from moments.decoding import decode
from moments.records import DeadLetter, RawRecord
from moments.rulecost import decode_cost, rule_costs, widened

from .catalogs import default_rules


def test_widened_catalog_has_200_distinct_rules() -> None:
    rules = widened(default_rules(), 200)
    assert len(rules) == 200
    assert len({r.id for r in rules.rules}) == 200
    assert len({r.tag for r in rules.rules}) == 200


def test_rule_costs_measure_three_rule_sets_on_the_same_events() -> None:
    costs = rule_costs(list(bench_events(2000, 200)))
    assert [c.rules for c in costs] == [0, len(default_rules()), 200]
    assert all(c.events_per_s > 0 for c in costs)
    assert costs[0].state_bytes < costs[1].state_bytes  # rules keep more per subscriber


def test_decoding_alone_is_measured_on_events_that_validate() -> None:
    # The figure is the floor only if it times the full validation, not the reject path.
    events = list(bench_events(2000, 200))
    decoded = [decode(RawRecord(t.value, 0, i, k, v), t) for i, (t, k, v) in enumerate(events)]
    assert all(not isinstance(d, DeadLetter) and d is not None for d in decoded)
    assert decode_cost(events) > 0
