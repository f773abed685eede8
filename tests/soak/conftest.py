"""Soak runs (`make soak`, marker `soak`, left out of `make test`): longer fault
sequences under steady load, and throughput figures measured in the same run.

Figures are printed at the end of the run, never asserted on: the machine is shared.
The fixtures of tests/integration (settings, topics, worker processes) are reused.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.conftest import make_settings, start_worker, topics_for

__all__ = ["make_settings", "start_worker", "topics_for"]  # fixtures, used by name

FIGURES: list[str] = []


@pytest.fixture
def report_figure() -> Callable[[str], None]:
    """Record one line for the summary printed after the run."""
    return FIGURES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("soak figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
