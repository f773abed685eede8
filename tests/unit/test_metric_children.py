"""A batch's counts through `sinks.metrics.Children`: the series kept, handed out only
while their metric still holds them."""

from __future__ import annotations

import pytest
from prometheus_client import Counter

from moments.batchresult import BatchResult
from moments.models import EventType
from moments.runtime import record_batch
from sinks.metrics import Children, Metrics, drop_series


def _detected(m: Metrics, family: str, moment_type: str) -> float | None:
    labels = {"family": family, "moment_type": moment_type}
    return m.registry.get_sample_value("moments_detected_total", labels)


def _batch() -> BatchResult:
    result = BatchResult()
    result.events[EventType.USAGE] += 3
    result.detected["anomaly", "spend_spike"] += 2
    return result


class TestChildren:
    def test_a_series_is_looked_up_once_then_handed_out_again(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`labels()` (~8 Python calls) makes each series once: later batches' counts
        go to the child kept."""
        m = Metrics()
        looked: list[tuple[object, ...]] = []
        labels = Counter.labels

        def counted(self: Counter, *values: object) -> Counter:
            looked.append(values)
            return labels(self, *values)

        monkeypatch.setattr(Counter, "labels", counted)
        for _ in range(3):
            record_batch(m, _batch())
        assert len(looked) == 2  # one event type, one moment kind
        assert m.registry.get_sample_value(
            "moments_events_total", {"event_type": "usage"}
        ) == pytest.approx(9)
        assert _detected(m, "anomaly", "spend_spike") == pytest.approx(6)

    def test_a_series_dropped_at_a_reload_counts_again_from_zero(self) -> None:
        """A series `drop_series` removed (its moment type gone) and born again later
        is a new one, counted, not the removed child that no scrape sees."""
        m = Metrics()
        record_batch(m, _batch())
        drop_series(m.detected, lambda labels: labels["moment_type"] != "spend_spike")
        assert _detected(m, "anomaly", "spend_spike") is None
        record_batch(m, _batch())
        assert _detected(m, "anomaly", "spend_spike") == pytest.approx(2)

    @pytest.mark.parametrize("how", ["clear", "remove"])
    def test_a_series_removed_any_other_way_is_made_again(self, how: str) -> None:
        """`clear` or `remove` on the metric itself: the child kept is not handed out."""
        m = Metrics()
        children = Children()
        first = children.of(m.detected, "anomaly", "spend_spike")
        first.inc()
        if how == "clear":
            m.detected.clear()
        else:
            m.detected.remove("anomaly", "spend_spike")
        again = children.of(m.detected, "anomaly", "spend_spike")
        assert again is not first
        again.inc(5)
        assert _detected(m, "anomaly", "spend_spike") == pytest.approx(5)
        assert children.of(m.detected, "anomaly", "spend_spike") is again
