"""The worker's text log names each record's logger, as the JSON log does: the runbook
points at loggers (`moments.detector_errors`, `moments.stopdeadline`,
`moments.partitioning`) that an operator greps for."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from mode.utils.logging import setup_logging

from moments.cli import main
from moments.exceptions import ConfigError
from moments.logformat import TEXT_FORMAT, faust_logging_config, json_formatter, use_text_logs
from rules.exceptions import RuleProblem, RulesError


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


@pytest.mark.usefixtures("restored_logging")
class TestRefusedAtStart:
    """A worker with JSON logs (the Kubernetes ConfigMap's) that stops at start wrote its
    reason as plain lines: `moments: rules refused:` and the problem on the next line, two
    entries in a log collector, neither JSON, the second without the first's context."""

    @pytest.fixture
    def json_log(self) -> io.StringIO:
        """The root's one handler writes JSON, as after a worker's `use_json_logs`."""
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(json_formatter())
        logging.getLogger().handlers[:] = [handler]
        return stream

    def test_rules_refused_is_one_json_record(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        json_log: io.StringIO,
    ) -> None:
        def refuse(settings: object, extra: object) -> None:
            raise RulesError([RuleProblem("rules/default.yaml", 47, 7, "unknown channel")])

        monkeypatch.setattr("moments.worker.run_worker", refuse)
        assert main(["worker"]) == 1
        assert capsys.readouterr().err == ""
        lines = json_log.getvalue().strip().splitlines()
        assert len(lines) == 1, lines
        record = json.loads(lines[0])
        assert record["level"] == "ERROR"
        assert record["message"] == (
            "moments: rules refused:\nrules/default.yaml:47:7: unknown channel"
        )

    def test_a_setting_refused_is_one_json_record(
        self, monkeypatch: pytest.MonkeyPatch, json_log: io.StringIO
    ) -> None:
        def refuse(settings: object, extra: object) -> None:
            raise ConfigError("MOMENTS_PARTITIONS: the input topics have 8 partitions")

        monkeypatch.setattr("moments.worker.run_worker", refuse)
        assert main(["worker"]) == 2
        record = json.loads(json_log.getvalue().strip())
        assert record["message"].startswith("moments: MOMENTS_PARTITIONS: the input"), record

    def test_a_setting_refused_on_reading_is_json_when_the_log_is(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        restored_logging: None,
    ) -> None:
        """The commonest refusal, a setting's value, comes before the worker has set its
        log up: it was plain lines for a worker whose MOMENTS_LOG_FORMAT says json."""
        stream = io.StringIO()
        logging.basicConfig(stream=stream, force=True, format="%(levelname)s %(message)s")
        monkeypatch.setenv("MOMENTS_LOG_FORMAT", "JSON")
        monkeypatch.setenv("MOMENTS_LATENESS_SECONDS", "an hour")
        assert main(["worker"]) == 2
        assert capsys.readouterr().err == ""
        (line,) = stream.getvalue().strip().splitlines()
        record = json.loads(line)
        assert record["level"] == "ERROR"
        assert record["message"].startswith("moments: invalid configuration:\n  ")
        assert "MOMENTS_LATENESS_SECONDS" in record["message"]

    def test_a_text_log_keeps_the_plain_lines(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        def refuse(settings: object, extra: object) -> None:
            raise RulesError([RuleProblem("rules/default.yaml", 47, 7, "unknown channel")])

        monkeypatch.setattr("moments.worker.run_worker", refuse)
        assert main(["worker"]) == 1
        err = capsys.readouterr().err
        assert err == "moments: rules refused:\nrules/default.yaml:47:7: unknown channel\n"


@pytest.mark.usefixtures("restored_logging")
def test_the_lines_before_faust_sets_up_read_like_the_rest() -> None:
    """A worker's first lines (`metrics on ...`, a broker awaited) came through the CLI's
    own format, `2026-12-06 01:37:29,815 INFO moments.worker: ...`, and the rest through
    Faust's: one log, two layouts for a collector's parser. They share one now."""
    stream = io.StringIO()
    logging.basicConfig(stream=stream, force=True, format="%(levelname)s %(message)s")
    use_text_logs()
    logging.getLogger("moments.worker").warning("metrics on http://0.0.0.0:9308/metrics")
    early = stream.getvalue().strip()
    pattern = r"\[[-0-9 :,]+\] \[\d+\] \[(\w+)\] ([\w.]+): (.*)"
    assert re.fullmatch(pattern, early), early
    assert re.fullmatch(
        pattern + " ",
        TEXT_FORMAT.format(color="")
        % {
            "asctime": "2026-12-06 01:49:38,500",
            "process": 19419,
            "levelname": "INFO",
            "name": "moments.runtime",
            "message": "runtime ready",
            "extra": "",
        },
    )


def test_the_settings_and_readme_name_every_field_a_json_line_has() -> None:
    """`Settings.log_format`'s description listed time, level, logger, message and
    exception: not `process`, which every line has and the README and operations.md
    named."""
    import sys
    from pathlib import Path

    from moments.settings import Settings

    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("moments.x", logging.ERROR, __file__, 1, "m", (), exc_info)
    fields = set(json.loads(json_formatter().format(record)))
    described = Settings.model_fields["log_format"].description or ""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if "`MOMENTS_LOG_FORMAT`" in line)
    assert fields == {"time", "level", "logger", "process", "message", "exception"}
    assert [f for f in sorted(fields) if not re.search(rf"\b{f}\b", described)] == []
    assert [f for f in sorted(fields) if f"`{f}`" not in row] == []
