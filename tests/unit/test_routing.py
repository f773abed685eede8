"""rules.routing: a bucket holds every rule whose `when:` passes, in the original order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from moments.models import EventType
from rules.predicates import Predicate, all_of, field_test
from rules.routing import Routes, route, text_keys

from .catalogs import default_rules

TEXTS = ["voice", "data", "sms", "5", "5.0", "10000"]
VALUES = st.one_of(st.none(), st.sampled_from(TEXTS), st.integers(0, 10), st.floats(0, 10))


@dataclass(frozen=True)
class Event:
    kind: Any
    status: Any


@dataclass(frozen=True)
class Item:
    n: int
    when: dict[str, Any]
    test: Predicate


def filter_tests() -> st.SearchStrategy[Any]:
    scalar = st.one_of(st.sampled_from(TEXTS), st.integers(0, 10), st.just(5.0))
    return st.one_of(
        scalar,
        st.lists(scalar, min_size=1, max_size=3),
        st.fixed_dictionaries({"gte": st.integers(0, 10)}),
        st.fixed_dictionaries({"ne": scalar}),
    )


whens = st.dictionaries(st.sampled_from(["kind", "status"]), filter_tests(), max_size=2)


def items_of(specs: list[dict[str, Any]]) -> list[Item]:
    return [
        Item(n, spec, all_of([field_test(f, t) for f, t in spec.items()]))
        for n, spec in enumerate(specs)
    ]


@given(st.lists(whens, max_size=8), st.lists(st.builds(Event, VALUES, VALUES), max_size=20))
def test_candidates_lose_no_rule_that_passes_and_keep_the_order(
    specs: list[dict[str, Any]], events: list[Event]
) -> None:
    items = items_of(specs)
    routes = route(items, lambda i: text_keys(i.when))
    for event in events:
        candidates = routes.candidates(event)
        assert [i.n for i in candidates] == sorted(i.n for i in candidates)
        # A stand-in with values the models would refuse: the predicates read it by getattr.
        passed = [i.n for i in candidates if i.test(event)]  # type: ignore[arg-type]
        assert passed == [i.n for i in items if i.test(event)]  # type: ignore[arg-type]


def test_an_event_meets_only_the_rules_of_its_bucket() -> None:
    items = items_of([{"kind": "voice"}, {"kind": ["data", "sms"]}, {"status": "opened"}, {}])
    routes = route(items, lambda i: text_keys(i.when))
    assert routes.field == "kind"
    assert [i.n for i in routes.candidates(Event("voice", None))] == [0, 2, 3]
    assert [i.n for i in routes.candidates(Event("sms", None))] == [1, 2, 3]
    assert [i.n for i in routes.candidates(Event("bill_query", None))] == [2, 3]
    # Not text (a number, a missing field): every rule, its filter decides.
    assert [i.n for i in routes.candidates(Event(None, None))] == [0, 1, 2, 3]
    assert [i.n for i in routes.candidates(Event(5, None))] == [0, 1, 2, 3]


def test_filters_with_operators_only_are_not_bucketed() -> None:
    items = items_of([{"kind": {"prefix": "vo"}}, {}])
    routes = route(items, lambda i: text_keys(i.when))
    assert routes == Routes(tuple(items))


def test_the_catalog_routes_usage_events_by_kind() -> None:
    rules = default_rules()
    usage = rules.routes[EventType.USAGE]
    assert usage.field == "kind"
    voice = {r.id for r in usage.candidates(Event("voice", None))}
    every = {r.id for r in rules.by_event_type[EventType.USAGE]}
    assert voice < every  # a voice call skips the rules for bill queries, orders, failures
