"""A real worker, fed good and bad events, leaves no subscriber number, IMEI or counterparty
in its log (at DEBUG) or on /metrics; /metrics answers only with the basic-auth login."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from moments.embedded import free_port
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import produce, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LI, WANG, ZHAO = "13800138001", "13900139002", "13700137003"
CALLED = "8613512345678"
IMEI = "356938035643809"
PERSONAL = (LI, WANG, ZHAO, CALLED, IMEI)
METRICS_USER, METRICS_PASSWORD = "prometheus", "scrape-pw"


def _at(minutes_ago: int) -> str:
    tz = dt.timezone(dt.timedelta(hours=8))
    when = dt.datetime.now(tz) - dt.timedelta(minutes=minutes_ago)
    return when.replace(microsecond=0).isoformat()


def _scrape(port: int, login: tuple[str, str] | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if login is not None:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http://127.0.0.1 built above
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


class TestNoSubscriberDataOutside:
    async def test_logs_and_metrics_carry_no_personal_numbers(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
    ) -> None:
        port = free_port()
        settings = make_settings(
            metrics_port=port,
            log_level="DEBUG",
            metrics_username=METRICS_USER,
            metrics_password=METRICS_PASSWORD,
        )
        await topics_for(settings)
        worker = start_worker(settings)
        roaming = {"roaming_type": "international", "region": "NJ", "occurred_at": _at(5)}
        await produce(
            settings,
            [
                ("roaming", LI, {"event_id": "r1", "subscriber_id": LI, "country": "JP"} | roaming),
                (
                    "roaming",
                    WANG,
                    {"event_id": "r2", "subscriber_id": WANG, "country": "FR"} | roaming,
                ),
                (
                    "usage",
                    ZHAO,
                    {
                        "event_id": "u1",
                        "subscriber_id": ZHAO,
                        "occurred_at": _at(4),
                        "kind": "voice",
                        "quantity": 60,
                        "counterparty": CALLED,
                        "imei": IMEI,
                    },
                ),
                # dead letters whose bytes are full of personal data
                ("roaming", LI, f'{{"subscriber_id": "{LI}", "imei": "{IMEI}", '.encode()),
                (
                    "roaming",
                    WANG,
                    {"event_id": "b2", "subscriber_id": LI, "country": "JP"} | roaming,
                ),
                ("usage", ZHAO, {"event_id": "b3", "subscriber_id": ZHAO, "imei": CALLED}),
            ],
        )
        tasks = await read_topic(settings, "tasks", count=2, wait_s=90)
        assert len(tasks) == 2, worker.log()[-3000:]
        dead = await read_topic(settings, "deadletter", count=3, wait_s=30)
        assert len(dead) == 3
        assert any(LI.encode() in d.value for d in dead if d.value)  # the topic keeps the data

        status, _ = _scrape(port, None)
        assert status == 401
        status, _ = _scrape(port, (METRICS_USER, "wrong"))
        assert status == 401
        status, exposition = _scrape(port, (METRICS_USER, METRICS_PASSWORD))
        assert status == 200
        assert "moments_events_rejected_total" in exposition

        await asyncio.sleep(1)  # the dead-letter log lines follow the produce acknowledgement
        log_text = worker.log()
        assert log_text.count("dead letter:") == 3, log_text[-3000:]
        assert "key_mismatch" in log_text
        for number in PERSONAL:
            assert number not in log_text, f"{number} in the worker log"
            assert number not in exposition, f"{number} on /metrics"
        assert METRICS_PASSWORD not in log_text
