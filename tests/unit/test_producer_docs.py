"""docs/producing-events.md states the limits a producer's records are held to: the page
follows the code's figures (a change of either without the other fails here)."""

from __future__ import annotations

from pathlib import Path

from moments.decoding import MAX_MESSAGE_BYTES
from moments.models import MONEY_DIGITS, ProfileEvent
from moments.records import RejectReason
from moments.refusals import LATENESS, MAX_FUTURE
from moments.state import RECENT_EVENT_IDS, RECENT_EVENT_IDS_ELSE

PAGE = (Path(__file__).parents[2] / "docs" / "producing-events.md").read_text()


def test_the_figures_are_the_codes() -> None:
    assert f"at most **{MAX_MESSAGE_BYTES // 1024} KiB**" in PAGE
    assert f"**{int(MAX_FUTURE.total_seconds() // 60)} minutes**" in PAGE
    assert f"**{int(LATENESS.total_seconds() // 3600)} hour**" in PAGE
    assert f"the last {RECENT_EVENT_IDS['u']} usage ids" in PAGE
    assert f"the last {RECENT_EVENT_IDS_ELSE} of each other topic" in PAGE
    assert MONEY_DIGITS == 9  # "below a billion yuan"
    assert "below a billion yuan" in PAGE
    for name in ("quiet_hours", "opt_out"):
        assert ProfileEvent.model_fields[name].metadata[0].max_length == 8
    assert "at most 8 entries" in PAGE


def test_every_reason_of_an_input_event_is_named() -> None:
    outcomes_only = {RejectReason.SUBSCRIBER_MISMATCH, RejectReason.UNKNOWN_TASK}  # consuming-tasks
    for reason in set(RejectReason) - outcomes_only:
        assert f"`{reason.value}`" in PAGE
