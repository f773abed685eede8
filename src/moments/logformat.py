"""The worker's log as one JSON object per line (`MOMENTS_LOG_FORMAT=json`), for a log
collector (Loki, Elasticsearch, Cloud Logging) that would otherwise split Faust's
multi-line tables and tracebacks into separate entries.

Faust sets up the worker's logging itself; `faust_logging_config` is merged into that
setup (Faust's `logging_config` setting), so Faust's, aiokafka's and our own records
all go through the same formatter, after the PII masking of `moments.logmask`.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any

from mode.utils.logging import DEFAULT_COLORS
from pythonjsonlogger.json import JsonFormatter

from moments.logmask import clean_data, clean_text

FIELDS = "%(levelname)s %(name)s %(process)d %(message)s"
RENAMED = {"levelname": "level", "name": "logger", "exc_info": "exception"}

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class CleanJsonFormatter(JsonFormatter):
    """python-json-logger formats a record's traceback afresh from `exc_info`, never
    reading the `exc_text` that `moments.logmask` cleaned: the traceback (its message,
    its source lines) showed subscriber numbers and passwords in clear. Cleaned here as
    the text log's is; the stack of `stack_info=True` too.

    A dict logged as the message is merged into the line as fields and `extra=` values
    are copied as they are, neither through the message the record masks: they showed
    numbers and passwords in clear. Every field is cleaned here (`logmask.clean_data`)."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        cleaned = {
            clean_data(key): value
            if key == "process" and value == record.process  # a pid may have 7 digits
            else clean_data(value, key)
            for key, value in log_data.items()
        }
        log_data.clear()
        log_data.update(cleaned)

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 - logging's name
        return clean_text(str(super().formatException(ei)))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return clean_text(str(super().formatStack(stack_info)))


def json_formatter() -> logging.Formatter:
    """One JSON object per record: level, logger, process, message, the exception's
    traceback as one string when there is one, and the time (ISO 8601, UTC); numbers
    and secrets masked everywhere, as in the text log."""
    return CleanJsonFormatter(FIELDS, rename_fields=RENAMED, timestamp="time")


TEXT_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s] %(name)s: {color}%(message)s %(extra)s"
"""Faust's (mode's) text format with the logger's name: the runbook points at loggers
(`moments.detector_errors`, `moments.stopdeadline`) that mode's own format left out."""


def faust_logging_config(log_format: str = "json") -> dict[str, Any]:
    """Faust's `logging_config` for `MOMENTS_LOG_FORMAT`: `json`, its console handler with
    the JSON formatter, on stderr like the text log and the records written before Faust's
    set-up; `text`, mode's formatters (colours on a terminal) with the logger's name."""
    if log_format == "text":
        return {
            "version": 1,
            "merge": True,  # mode's handlers, levels and root; only the formats change
            "formatters": {
                "default": {
                    "()": "mode.utils.logging.DefaultFormatter",
                    "format": TEXT_FORMAT.format(color=""),
                },
                "colored": {
                    "()": "mode.utils.logging.ExtensionFormatter",
                    "format": TEXT_FORMAT.format(color="%(log_color)s"),
                    "log_colors": DEFAULT_COLORS,
                    "stream": sys.stdout,
                },
            },
        }
    return {
        "version": 1,
        "merge": True,  # into mode's own configuration: levels and root as Faust sets them
        "formatters": {"json": {"()": f"{__name__}.json_formatter"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
    }


def use_text_logs() -> None:
    """The handlers already installed (the CLI's, before Faust's own setup) write the
    layout Faust's will, so a worker's log reads alike from its first line."""
    formatter = logging.Formatter(TEXT_FORMAT.format(color="").removesuffix(" %(extra)s"))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def logs_in_json() -> bool:
    """True when the process logs JSON (`MOMENTS_LOG_FORMAT=json`): a root handler writes
    with the JSON formatter (`use_json_logs` before Faust's set-up, Faust's own after)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def use_json_logs() -> None:
    """The handlers already installed (before Faust's own setup) write JSON too."""
    formatter = json_formatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
