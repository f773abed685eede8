"""/livez and /readyz: the event loop's heartbeat and the app's readiness."""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from moments.app import not_ready
from moments.embedded import free_port
from moments.health import Health
from moments.metrics_server import serve_metrics
from moments.settings import load_settings

from .fakes import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(100.0)


class TestLiveness:
    def test_starting_counts_as_live_until_the_stall_limit(self, clock: Clock) -> None:
        health = Health(30, clock)
        clock.now += 29
        assert health.live().ok
        assert "starting" in health.live().detail
        clock.now += 2  # the loop never beat: stuck before it ran
        assert not health.live().ok

    def test_a_loop_that_stops_beating_fails_with_the_way_to_find_out_why(
        self, clock: Clock
    ) -> None:
        health = Health(30, clock)
        health.beat()
        clock.now += 12
        assert health.live().ok
        assert "12.0 s ago" in health.live().detail
        clock.now += 19
        verdict = health.live()
        assert not verdict.ok
        assert "31 s" in verdict.detail
        assert "MOMENTS_HEALTH_STALL_SECONDS" in verdict.detail
        assert "the worker's log has the stack it is stuck in" in verdict.detail
        health.beat()
        assert health.live().ok

    def test_a_stuck_loop_s_stack_is_logged_once_per_stall(
        self, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """py-spy needs ptrace, which the pod does not allow, and the restart after the
        failed probe loses the evidence (SRE drill): the metrics thread logs where the
        event loop's thread is stuck."""
        health = Health(30, clock)
        release, beaten = threading.Event(), threading.Event()

        def stuck_in_a_call_that_never_returns() -> None:
            health.beat()
            beaten.set()
            release.wait(10)

        loop = threading.Thread(target=stuck_in_a_call_that_never_returns)
        loop.start()
        try:
            assert beaten.wait(5)
            clock.now += 45
            with caplog.at_level(logging.ERROR, logger="moments.health"):
                # the scrape of /metrics logs it too: where nothing probes /livez
                assert health.stalled_for() == 45
                assert len(caplog.records) == 1
                assert not health.live().ok
                assert not health.ready().ok
        finally:
            release.set()
            loop.join()
        (record,) = caplog.records  # once for the stall, not per probe
        assert "the event loop has not run for 45 s" in record.getMessage()
        assert "in stuck_in_a_call_that_never_returns" in record.getMessage()
        health.beat()
        assert health.stalled_for() == 0.0


class TestReadiness:
    def test_not_ready_until_the_app_says_so_and_never_when_not_live(self, clock: Clock) -> None:
        health = Health(30, clock)
        assert health.ready().ok is False
        assert health.ready().detail == "starting"
        reason: list[str | None] = ["restoring its state from the changelog"]
        health.ready_when(lambda: reason[0])
        health.beat()
        assert health.ready().detail == "restoring its state from the changelog"
        reason[0] = None
        assert health.ready().ok
        clock.now += 31
        assert not health.ready().ok
        assert "event loop" in health.ready().detail

    @pytest.mark.parametrize(
        ("started", "rebalances", "rebalancing", "recovering", "expected"),
        [
            (False, 0, False, False, "connecting to Redis (redis://r:6379/0); "),
            (True, 0, False, False, "joining the consumer group"),
            (True, 0, True, False, "joining the consumer group"),
            (True, 1, True, False, "the consumer group is rebalancing"),
            (True, 2, False, True, "restoring its state from the changelog"),
            (True, 1, False, False, None),
        ],
    )
    def test_the_worker_is_ready_once_started_joined_and_restored(
        self,
        started: bool,
        rebalances: int,
        rebalancing: bool,
        recovering: bool,
        expected: str | None,
    ) -> None:
        runtime = SimpleNamespace(
            ready=SimpleNamespace(is_set=lambda: started),
            starting="connecting to Redis (redis://r:6379/0)",
        )
        app = SimpleNamespace(
            rebalancing_count=rebalances, rebalancing=rebalancing, in_recovery=recovering
        )
        reason = not_ready(app, runtime)  # type: ignore[arg-type]
        if expected is None:
            assert reason is None
        else:
            assert reason is not None
            assert reason.startswith(expected)


def _get(port: int, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def served(clock: Clock) -> Iterator[tuple[int, Health]]:
    """/metrics behind basic auth, with the probes beside it."""
    port = free_port()
    settings = load_settings(
        metrics_host="127.0.0.1", metrics_port=port, metrics_username="prom", metrics_password="pw"
    )
    health = Health(30, clock)
    server = serve_metrics(settings, CollectorRegistry(), health)
    yield port, health
    server.shutdown()
    server.server_close()


class TestServed:
    def test_probes_need_no_login_while_metrics_still_do(self, served: tuple[int, Health]) -> None:
        port, health = served
        health.ready_when(lambda: None)
        health.beat()
        assert _get(port, "/livez") == (200, "ok: event loop ran 0.0 s ago\n")
        assert _get(port, "/readyz") == (200, "ok: in the consumer group with its state restored\n")
        assert _get(port, "/metrics")[0] == 401

    def test_a_stalled_loop_is_503_on_both(self, served: tuple[int, Health], clock: Clock) -> None:
        port, health = served
        health.ready_when(lambda: None)
        health.beat()
        clock.now += 45
        for path in ("/livez", "/readyz"):
            status, body = _get(port, path)
            assert status == 503
            assert body.startswith("fail: the event loop has not run for 45 s")

    def test_not_ready_is_503_with_the_reason_and_still_live(
        self, served: tuple[int, Health]
    ) -> None:
        port, health = served
        health.ready_when(lambda: "joining the consumer group")
        health.beat()
        assert _get(port, "/readyz") == (503, "fail: joining the consumer group\n")
        assert _get(port, "/livez")[0] == 200
