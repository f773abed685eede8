"""docs/consuming-tasks.md tells a dispatch consumer what the code does: the page follows
the code's statuses and dead-letter reasons (a change of either without the other fails
here)."""

from __future__ import annotations

import re
from pathlib import Path

from moments.models import OutcomeStatus
from moments.records import RejectReason

PAGE = (Path(__file__).parents[2] / "docs" / "consuming-tasks.md").read_text()


def section(heading: str) -> str:
    """The text under a `## ` or `### ` heading, up to the next heading."""
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#)", PAGE, re.S | re.M)
    assert match is not None, f"no heading {heading!r}"
    return match.group(1)


def test_every_outcome_status_has_a_row_in_which_status() -> None:
    """An SMS gateway's receipts (`delivered`, `expired`) are no statuses: the page maps
    them (dispatch consumer review)."""
    rows = [line for line in section("Which status").splitlines() if line.startswith("| ")]
    statuses = {m for row in rows for m in re.findall(r"\| `([a-z_]+)`", row)}
    assert statuses == {s.value for s in OutcomeStatus}


def test_every_reason_an_outcome_is_refused_for_is_named() -> None:
    page = section("Reporting back") + section("Which status") + section("What the detector checks")
    outcome_reasons = {
        RejectReason.INVALID_EVENT,
        RejectReason.MISSING_KEY,
        RejectReason.KEY_MISMATCH,
        RejectReason.FUTURE,
        RejectReason.SUBSCRIBER_MISMATCH,
        RejectReason.UNKNOWN_TASK,
    }
    for reason in outcome_reasons:
        assert f"`{reason.value}`" in page, reason
