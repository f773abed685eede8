"""Quantiles from two snapshots of a Prometheus histogram, as `moments bench` reports them."""

from __future__ import annotations

import math

from moments.latency import quantile

INF = float("inf")


def test_quantile_interpolates_inside_the_bucket() -> None:
    before = {0.1: 10.0, 0.5: 10.0, 1.0: 10.0, INF: 10.0}
    # 100 new observations: 50 under 0.1 s, 40 in (0.1, 0.5], 10 in (0.5, 1].
    after = {0.1: 60.0, 0.5: 100.0, 1.0: 110.0, INF: 110.0}
    assert quantile(0.5, before, after) == 0.1
    assert math.isclose(quantile(0.7, before, after), 0.1 + 0.4 * (20 / 40))
    assert math.isclose(quantile(0.99, before, after), 0.5 + 0.5 * (9 / 10))


def test_no_observation_is_nan_and_the_open_bucket_gives_its_floor() -> None:
    same = {0.1: 5.0, INF: 5.0}
    assert math.isnan(quantile(0.5, same, same))
    assert quantile(0.99, {0.1: 0.0, INF: 0.0}, {0.1: 0.0, INF: 3.0}) == 0.1
