"""A region's or tier's text is matched whatever the case, everywhere it is matched
(moments.placetext): `when:` filters, conditions, the routing lookup (the dispatch
policy's capacity: tests/unit/test_capacity_regions.py). Before, only rule overrides
folded the case: an event from `nj` got NJ's thresholds but missed `when: {region: NJ}`
and NJ's capacity limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moments.models import EventType
from rules.predicates import all_of, field_test
from rules.routing import route, text_keys

from .helpers import at, ev, rules_from, run, usage
from .test_language import fired, one_rule


@pytest.mark.parametrize(
    ("when", "region", "fires"),
    [
        ("{region: NJ}", "nj", 1),
        ("{region: nj}", "NJ", 1),
        ("{region: [Nj, SZ]}", "nJ", 1),
        ("{region: {in: [NJ]}}", "nj", 1),
        ("{region: {eq: NJ}}", "nj", 1),
        ("{region: {ne: NJ}}", "nj", 0),
        ("{region: {not_in: [NJ]}}", "nj", 0),
        ("{region: {prefix: N}}", "nj", 1),
        ("{region: NJ}", "SZ", 0),
        ("{region: {not_in: [NJ]}}", "SZ", 1),
    ],
)
def test_a_when_filter_on_region_matches_whatever_the_case(
    when: str, region: str, fires: int
) -> None:
    text = one_rule(f"    on: [usage]\n    when: {when}\n")
    assert fired(text, [usage(at("2026-11-02"), kind="data", region=region)]) == fires


@pytest.mark.parametrize(
    ("condition", "params", "region", "fires"),
    [
        ("{field: region, eq: NJ}", "", "nj", 1),
        ("{field: region, ne: NJ}", "", "nj", 0),
        ("{field: region, in: [NJ, SZ]}", "", "sz", 1),
        ("{field: region, not_in: [NJ]}", "", "nj", 0),
        ("{field: region, prefix: N}", "", "nj", 1),
        ("{field: region, eq: $city}", "    params: {city: NJ}\n", "nj", 1),
        ("{field: region, in: $cities}", "    params: {cities: 'NJ, SZ'}\n", "sz", 1),
        ("{field: region, prefix: $p}", "    params: {p: 'N, S'}\n", "nj", 1),
        ("{field: region, eq: NJ}", "", "SZ", 0),
    ],
)
def test_a_condition_on_region_matches_whatever_the_case(
    condition: str, params: str, region: str, fires: int
) -> None:
    text = one_rule(f"    on: [usage]\n{params}    condition: {condition}\n")
    tasks = run(rules_from(text), [usage(at("2026-11-02"), kind="data", region=region)]).tasks
    assert len(tasks) == fires
    if condition.startswith("{field: region, eq"):
        # The task records the event's text as written, not the folded key.
        assert [t.moment.params["region"] for t in tasks] == [region] * fires


def test_a_condition_on_the_profile_tier_matches_whatever_the_case() -> None:
    text = one_rule("    on: [usage]\n    condition: {profile: tier, in: [Gold, diamond]}\n")
    events = [
        ev(EventType.PROFILE, at("2026-11-02", "11:00"), tier="gold"),
        usage(at("2026-11-02", "12:00"), kind="data"),
    ]
    assert fired(text, events) == 1


@dataclass(frozen=True)
class Placed:
    region: Any


@given(
    st.lists(
        st.one_of(st.sampled_from(["NJ", "nj", "SZ"]), st.lists(st.sampled_from(["Nj", "sz"]))),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(["NJ", "nj", "nJ", "SZ", "sz", "WX"]),
)
def test_the_routing_lookup_by_region_loses_no_rule_that_passes(
    tests: list[Any], region: str
) -> None:
    """The bucket of `nj` holds the rules of `when: {region: NJ}` (the lookup was by the
    exact text, so they were never run for it)."""
    whens = [{"region": t} for t in tests if t != []]
    items = [(n, all_of([field_test("region", w["region"])])) for n, w in enumerate(whens)]
    routes = route(items, lambda i: text_keys(whens[i[0]]))
    event = Placed(region)
    passing = [n for n, test in items if test(event)]  # type: ignore[arg-type]
    assert [n for n, test in routes.candidates(event) if test(event)] == passing  # type: ignore[arg-type]
    assert passing == [n for n, w in enumerate(whens) if region.casefold() in _texts(w)]


def _texts(when: dict[str, Any]) -> set[str]:
    test = when["region"]
    return {t.casefold() for t in (test if isinstance(test, list) else [test])}
