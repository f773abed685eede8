"""Open complaints against a naive reference: every complaint record applied kept in a
list, and each complaint open when its latest record in event time is no resolution (a
resolution wins a tie), over random records read out of order, some later than the
lateness allows."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from moments.models import EventType
from moments.refusals import LATENESS
from moments.tracking import open_complaints

from .rules.helpers import NO_GATES, SUB, WELCOME, ev, rules_from, run

START = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
RULES = NO_GATES + "rules:" + WELCOME


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 4 * 3600),  # when it happened, from START
            st.integers(0, 90 * 60),  # how long after it was read (the order read)
            st.sampled_from(["c1", "c2", "c3"]),
            st.sampled_from(["opened", "updated", "resolved"]),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_open_complaints_equal_the_latest_record_of_each(
    items: list[tuple[int, int, str, str]],
) -> None:
    read = sorted(enumerate(items), key=lambda item: (item[1][0] + item[1][1], item[0]))
    events = []
    applied: list[tuple[int, str, str]] = []
    newest: int | None = None
    for _, (offset, _, complaint, status) in read:
        at = int(START.timestamp()) + offset
        events.append(
            ev(
                EventType.COMPLAINT,
                dt.datetime.fromtimestamp(at, dt.UTC).isoformat(),
                complaint_id=complaint,
                category="network",
                severity=2,
                status=status,
            )
        )
        if newest is not None and at < newest - LATENESS.total_seconds():
            continue  # late: refused
        newest = at if newest is None else max(newest, at)
        applied.append((at, complaint, status))
    result = run(rules_from(RULES), events)
    state = result.store.load(SUB)
    assert state is not None
    expected = 0
    for complaint in {c for _, c, _ in applied}:
        records = [(at, status == "resolved") for at, c, status in applied if c == complaint]
        expected += not max(records)[1]  # the latest; at a tie, the resolution
    assert newest is not None
    assert open_complaints(state, newest, None) == expected
