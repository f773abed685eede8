"""The live table of `moments tasks tail`: newest first, bounded, masked, merged moments shown."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from moments.taskboard import TaskBoard


def _task(n: int, channel: str = "sms", related: list[str] | None = None) -> dict[str, Any]:
    return {
        "task_id": f"{n:032x}",
        "subscriber_id": f"1380013{n:04d}",
        "priority": 2,
        "channel": channel,
        "action": "act",
        "triggered_at": "2026-12-03T10:00:00+08:00",
        "moment": {"type": f"type_{n}"},
        "related": [{"moment": {"type": r}} for r in related or []],
        "deferred": {"reason": "merge_window", "until": "x"} if related else None,
    }


def _text(board: TaskBoard) -> str:
    console = Console(record=True, width=300)
    console.print(board.render())
    return console.export_text()


def test_newest_first_bounded_and_counted() -> None:
    board = TaskBoard(rows=3)
    for n in range(5):
        board.add(_task(n, channel="manager" if n % 2 else "sms"))
    text = _text(board)
    assert "type_4" in text
    assert "type_1" not in text  # only the last three rows stay
    assert text.index("type_4") < text.index("type_3") < text.index("type_2")
    assert "5 task(s)" in text
    assert "manager 2  sms 3" in text


def test_ids_masked_and_merged_moments_listed() -> None:
    board = TaskBoard()
    board.add(_task(7, channel="outbound_call", related=["complaint"]))
    text = _text(board)
    assert "13800130007" not in text
    assert "138****0007" in text
    assert "type_7 + complaint" in text
    assert "merge_window" in text
    assert "moments merged into a task: 1" in text


def test_fields_are_shown_escaped_not_as_terminal_codes_or_markup() -> None:
    """A record anyone may write to the task topic: its fields reached the terminal raw
    (`ESC [2J` cleared the screen, an OSC 52 set the clipboard, a right-to-left override
    reversed the row) and `[...]` in them was read as rich markup."""
    task = _task(1, channel="sms\x1b]52;c;ZXZpbA==\x07")
    task["moment"] = {"type": "a\x1b[2Jb\u202e[bold red]X[/]"}
    task["task_id"] = "[link=https://evil.example]t[/link]"
    board = TaskBoard()
    board.add(task)
    terminal = io.StringIO()
    Console(file=terminal, width=300, force_terminal=True).print(board.render())
    written = terminal.getvalue()
    for raw in ("\x1b[2J", "\x1b]52", "\x07", "\u202e", "\x1b]8;"):  # \x1b]8; a link
        assert raw not in written
    text = _text(board)
    assert "a\\x1b[2Jb\\u202e[bold red]X[/]" in text
    assert "[link=https://evil.example]t[/link]" in text
    assert "sms\\x1b]52;c;ZXZpbA==\\x07" in text
