"""Subscriber numbers masked in every log record, whoever logs it.

Installed as the logging record factory, so it covers our loggers, Faust's,
aiokafka's and any handler Faust's worker sets up later: each record's message
(when formatted) and traceback text have runs of 7 to 20 digits, the shape of an MSISDN, IMEI
or counterparty number, replaced by `mask_msisdn` (`139****1234`). Offsets of
7 digits and more are masked too: the price of not knowing which number is
personal. `MOMENTS_LOG_PII=true` turns masking off for debugging.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from moments.pii import mask_msisdn

DIGIT_RUN = re.compile(r"(?<!\d)\d{7,20}(?!\d)")

_FORMATTER = logging.Formatter()
_lock = threading.Lock()
_state = {"installed": False, "mask": True}


def mask_text(text: str) -> str:
    """Every run of 7 to 20 digits masked, the rest unchanged."""
    return DIGIT_RUN.sub(lambda m: mask_msisdn(m.group(0)), text)


class MaskedLogRecord(logging.LogRecord):
    """A record whose message is masked when it is formatted (not before: records
    that no handler emits cost nothing more)."""

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        return mask_text(super().getMessage())


def mask_record(record: logging.LogRecord) -> None:
    """Mask the record's message when formatted, and its traceback and stack now."""
    if type(record) is logging.LogRecord:
        record.__class__ = MaskedLogRecord
    else:  # another library's record class: render it now
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error report
            return
        record.msg, record.args = mask_text(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = mask_text(_FORMATTER.formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = mask_text(record.exc_text)
    if record.stack_info:
        record.stack_info = mask_text(record.stack_info)


def install_pii_masking(mask: bool = True) -> None:
    """Mask (or, with False, stop masking) subscriber numbers in all log records from now on."""
    with _lock:
        _state["mask"] = mask
        if _state["installed"]:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _state["mask"]:
                mask_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _state["installed"] = True
