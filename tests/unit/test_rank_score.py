"""`rank_score`: `claim_order` as one number for the deferral queue's `due` set, and
`merged_rank`: the rank of a waiting task a moment joined (`Joining.rank`)."""

from __future__ import annotations

import datetime as dt
import itertools

from moments.models import RiskScore, ServiceTask
from sinks.capacity import claim_order, merged_rank, rank_score
from tests.integration.dispatch.conftest import task

T0 = dt.datetime(2026, 11, 2, 21, 0, tzinfo=dt.UTC)


def moment(n: int, priority: int, risk: float | None, hours: float) -> ServiceTask:
    t = task(f"t{n}", priority=priority, triggered=T0 + dt.timedelta(hours=hours))
    return t.model_copy(update={"risk": None if risk is None else RiskScore(score=risk, parts=[])})


MOMENTS = [
    moment(n, priority, risk, hours)
    for n, (priority, risk, hours) in enumerate(
        itertools.product([1, 3, 5], [None, 0.01, 60.0, 99.99, 100.0], [0.0, 1.0, 2.5])
    )
]


def test_the_rank_of_a_merged_group_is_the_rank_of_all_its_moments() -> None:
    """A callback (priority 1, 23:00) joining a call of risk 60 made at 21:00 ranks as
    priority 1, risk 60, 21:00: as `claim_order` ranks the group once released. The
    better of the two ranks was the callback's own, and another customer's callback of
    risk 60 made at 22:00 went first."""
    for a, b in itertools.product(MOMENTS, repeat=2):
        assert merged_rank(rank_score([a]), rank_score([b])) == rank_score([a, b]), (a, b)


def test_the_ranks_keep_claim_order() -> None:
    """Lower rank, earlier in `claim_order` (task ids aside: a sorted set orders equal
    ranks by member), for single moments and merged pairs."""
    groups = [[m] for m in MOMENTS] + [
        [a, b] for a, b in zip(MOMENTS[:-7], MOMENTS[7:], strict=True)
    ]
    for x, y in itertools.product(groups, repeat=2):
        if claim_order(x)[:3] < claim_order(y)[:3]:
            assert rank_score(x) < rank_score(y), (x, y)


def test_a_task_parked_without_a_rank_keeps_ranking_by_its_due_time() -> None:
    """A due time (a task an earlier version parked) is below every rank: merged with
    one, the lower stays."""
    due = T0.timestamp()
    assert merged_rank(due, rank_score(MOMENTS[:1])) == due
    assert merged_rank(rank_score(MOMENTS[-1:]), due) == due
