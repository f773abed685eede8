"""A worker's start that fails leaves the signal handlers as it found them: a caller in
the same process (tests, an embedding program) kept `_sighup_while_starting`, and the
SIGHUP it had noted made its next start ask for a reload nobody had requested."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator

import pytest

from moments import worker
from moments.exceptions import ConfigError
from moments.settings import Settings


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The start sets the root handlers' format: put it back after."""
    root = logging.getLogger()
    formatters = [(handler, handler.formatter) for handler in root.handlers]
    try:
        yield
    finally:
        for handler, formatter in formatters:
            handler.setFormatter(formatter)


def own_handler(signum: int, frame: object) -> None:
    """The caller's handler, which a failed start must give back."""


@pytest.mark.usefixtures("restored_logging")
def test_a_failed_start_restores_the_signal_handlers_and_forgets_a_sighup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def sighup_then_fail(environ: object, dotenv: object = None) -> list[str]:
        os.kill(os.getpid(), signal.SIGHUP)  # `systemctl reload` while the worker starts
        raise ConfigError("MOMENTS_RULES: no such file")

    monkeypatch.setattr(worker, "unknown_variables", sighup_then_fail)
    signums = (signal.SIGHUP, signal.SIGTERM, *worker.STACK_SIGNALS)
    before = {signum: signal.signal(signum, own_handler) for signum in signums}
    try:
        with pytest.raises(ConfigError):
            worker.run_worker(Settings(), [])
        assert {signum: signal.getsignal(signum) for signum in signums} == dict.fromkeys(
            signums, own_handler
        )
        assert worker._hup_while_starting == []  # the next start asks for no reload
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
