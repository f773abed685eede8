"""A line naming no event type was told other words by the history readers (`backtest`,
`rules test`, `state seed`) than by `events check`: the same words now."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.backtest_input import EventFile
from moments.eventcheck import check_lines
from moments.rulecheck import MissingEventTypeError


def test_a_line_naming_no_type_is_told_the_words_of_events_check(tmp_path: Path) -> None:
    """`events check` said "no event type: give --type (...)"; the backtest, `rules test`
    and `state seed` said `add "type": one of ... (got None)` of the same line."""
    path = tmp_path / "h.jsonl"
    for line in (b'{"type": null, "event_id": "x"}', b"null", b'{"type": "top-up"}'):
        path.write_bytes(line + b'\n{"event_id": "y"}\n')  # a JSON lines file of no type
        with path.open("rb") as lines:
            verdict = next(check_lines(lines, None))
        with pytest.raises(MissingEventTypeError) as refused:
            list(EventFile(path))
        assert str(refused.value).startswith(f"{path}:1: {verdict.message}; "), line
