"""docs/consuming-tasks.md tells a dispatch consumer what the code does: the page follows
the code's statuses and dead-letter reasons (a change of either without the other fails
here)."""

from __future__ import annotations

import re
from pathlib import Path

from moments.models import DEFERRAL_REASONS, OutcomeStatus, ServiceTask
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


SRC = Path(__file__).parents[2] / "src"


def call_args(text: str, call: str) -> list[str]:
    """The argument text of every `call(` in `text`, nested parentheses and all."""
    found = []
    for match in re.finditer(re.escape(call) + r"\(", text):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        found.append(text[match.end() : i - 1])
    return found


def literals(text: str) -> set[str]:
    return set(re.findall(r'"([a-z_]+)"', text))


def deferral_reasons_in_code() -> set[str]:
    """Every reason a Deferral is built with: literal ones, and those reaching it through
    a park (`Writes.park`'s reason, a contact's, a gate's). The sinks package is read as
    one text, so that moving a method or a dataclass between its modules keeps it found."""
    sinks = "\n".join(path.read_text() for path in sorted((SRC / "sinks").glob("*.py")))
    gating = (SRC / "rules" / "gating.py").read_text()
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        for args in call_args(path.read_text(), "Deferral"):
            found |= set(re.findall(r'^reason="([a-z_]+)"', args))
    for args in call_args(sinks, "w.park"):  # the reason is the third argument
        found |= literals(args) - {"reason"}
    # w.park(r, ..., reason): the task's own deferral or this default
    found |= set(re.findall(r'reason = task\.deferred\.reason if .* else "([a-z_]+)"', sinks))
    # w.park(..., fit.why): capacity's next day, or a part's channel hours
    found |= set(re.findall(r'why: str = "([a-z_]+)"', sinks))
    # w.park(r, contact.free_at, contact.reason): the limiters' reasons
    found |= set(re.findall(r'reason: str = "([a-z_]+)"', sinks))
    for args in call_args(sinks, "ContactLimiter"):
        found |= literals(args)
    # the engine's Deferral(reason=decision.reason): a gate's defer
    for args in call_args(gating, 'GateDecision("defer", '):
        found |= literals(args)
    found |= set(re.findall(r'earliest, reason = opens, "([a-z_]+)"', gating))
    return found


def test_every_deferral_reason_the_code_writes_is_explained() -> None:
    """Real tasks carried reasons the contract's "when do-not-disturb moved it" did not
    cover, and none was listed (dispatch consumer review)."""
    assert deferral_reasons_in_code() == set(DEFERRAL_REASONS)


def test_every_deferral_reason_has_a_row() -> None:
    rows = section("Why a task waited: `deferred`").splitlines()
    listed = {m for row in rows for m in re.findall(r"^\| `([a-z_]+)` \|", row)}
    assert listed == set(DEFERRAL_REASONS)
    description = ServiceTask.model_json_schema()["$defs"]["Deferral"]["properties"]["reason"]
    for reason in DEFERRAL_REASONS:
        assert f"`{reason}`" in description["description"]
