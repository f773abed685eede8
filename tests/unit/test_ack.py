"""`moments tasks ack` writes only task ids the worker takes: 32 lowercase hex."""

from __future__ import annotations

import asyncio

import pytest

from moments.ack import AckError, ack_task
from moments.cli import main
from moments.models import OutcomeStatus
from moments.settings import Settings


class TestTaskIdForm:
    """An id of another form is refused before any connection, naming where ids are."""

    @pytest.mark.parametrize("task_id", ["nope", "ABC", "0" * 31, "0" * 32 + "\n"])
    def test_the_command_refuses_it(self, task_id: str, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["tasks", "ack", task_id, "--status", "accepted"])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "is not a task id (32 lowercase hex characters)" in err
        assert "moments tasks tail --json" in err

    def test_the_function_refuses_it(self) -> None:
        with pytest.raises(AckError, match="32 lowercase hex"):
            asyncio.run(
                ack_task(
                    Settings(), "abc\n[CRITICAL] forged", OutcomeStatus.DECLINED, "13800138001"
                )
            )
