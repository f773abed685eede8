"""`moments run` stops within a bound even when a task will not finish on cancel."""

from __future__ import annotations

import asyncio
import signal

import pytest

from moments import embedded_run


def test_close_loop_waits_for_a_stubborn_task_only_up_to_stop_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded_run, "STOP_S", 0.3)
    loop = asyncio.new_event_loop()
    finished: list[str] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(30)  # a close that hangs
            finished.append("stubborn")

    async def polite() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            finished.append("polite")
            raise

    tasks = [loop.create_task(stubborn()), loop.create_task(polite())]
    loop.run_until_complete(asyncio.sleep(0))  # both started
    embedded_run._close_loop(loop)
    assert finished == ["polite"]  # the stubborn one was not waited for: its close hangs
    assert not tasks[0].done()
    assert tasks[1].cancelled()
    assert loop.is_closed()


def test_ctrl_c_exits_130_and_sigterm_0() -> None:
    """130 for Ctrl-C, as the README's exit codes say (it was 0); SIGTERM, which systemd
    and `docker stop` send to stop it, is a stop asked for: 0."""
    with pytest.raises(KeyboardInterrupt) as sigterm:
        embedded_run._interrupt(signal.SIGTERM, None)
    assert embedded_run.stop_code(sigterm.value) == 0
    assert embedded_run.stop_code(KeyboardInterrupt()) == 130
