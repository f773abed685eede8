"""Subscriber numbers are masked in every log record, message and traceback alike."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from moments.logmask import install_pii_masking, mask_text
from moments.models import UsageEvent

SUB, IMEI = "13800138001", "356938035643809"


@pytest.fixture
def masking() -> Iterator[None]:
    install_pii_masking(True)
    yield
    install_pii_masking(True)


class TestMaskText:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"key={SUB}", "key=138****8001"),
            (f'"subscriber_id": "{SUB}"', '"subscriber_id": "138****8001"'),
            (f"imei {IMEI}", "imei 356********3809"),
            ("partition 3 offset 123456 pid 4242", "partition 3 offset 123456 pid 4242"),
            ("2026-11-23 10:20:46,123", "2026-11-23 10:20:46,123"),
        ],
    )
    def test_digit_runs_of_msisdn_length(self, text: str, expected: str) -> None:
        assert mask_text(text) == expected


class TestRecords:
    def test_arguments_of_any_logger_are_masked(
        self, masking: None, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO):
            logging.getLogger("aiokafka.conn").info("sent %r to %s", SUB.encode(), SUB)
        assert caplog.records[0].getMessage() == "sent b'138****8001' to 138****8001"
        assert SUB not in caplog.text

    def test_a_traceback_is_masked(self, masking: None, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.ERROR):
            try:
                UsageEvent.model_validate({"subscriber_id": SUB, "imei": "x" + IMEI})
            except ValidationError:
                logging.getLogger("moments.test").exception("bad event")
        assert "ValidationError" in caplog.text
        assert SUB not in caplog.text
        assert IMEI not in caplog.text

    def test_log_pii_turns_it_off(self, masking: None, caplog: pytest.LogCaptureFixture) -> None:
        install_pii_masking(False)
        with caplog.at_level(logging.INFO):
            logging.getLogger("moments.test").info("subscriber %s", SUB)
        assert SUB in caplog.text
