"""The worker's text log names each record's logger, as the JSON log does: the runbook
points at loggers (`moments.detector_errors`, `moments.stopdeadline`,
`moments.partitioning`) that an operator greps for."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from mode.utils.logging import setup_logging

from moments.logformat import faust_logging_config


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Faust's set-up replaces the root's handlers and level: put them back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("restored_logging")
class TestTextLog:
    def test_a_line_names_its_logger(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Set up as Faust's worker does it (mode's `setup_logging`, a stream, the config
        the app passes), a record of ours reads `... [WARNING] moments.partitioning: ...`."""
        setup_logging(loglevel="info", logging_config=faust_logging_config("text"))
        logging.getLogger("moments.partitioning").warning("events off their partition")
        logging.getLogger("faust.worker").info("Signal received: 15 (15)")
        err = capsys.readouterr().err
        assert "[WARNING] moments.partitioning: events off their partition" in err, err
        assert "[INFO] faust.worker: Signal received: 15 (15)" in err, err

    def test_json_still_one_object_per_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        setup_logging(loglevel="info", logging_config=faust_logging_config("json"))
        logging.getLogger("moments.stopdeadline").error("stuck")
        line = capsys.readouterr().err.strip()
        assert '"logger": "moments.stopdeadline"' in line, line
        assert '"message": "stuck"' in line, line
