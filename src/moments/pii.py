"""Masking personal data for logs and human-readable output."""

from __future__ import annotations

import re


def mask_msisdn(number: str) -> str:
    """`13800138001` -> `138****8001`: enough to tell lines apart, not to dial."""
    if len(number) <= 7:
        return "*" * len(number)
    return f"{number[:3]}{'*' * (len(number) - 7)}{number[-4:]}"


_QUOTED_NUMBER = re.compile(r"""(?<!\\)(?P<quote>\\*['"])(?P<digits>[0-9]{5,})(?P=quote)""")
"""5 digits or more between two like quotes, escaped or not: `'13000000000'`, `"..."` (a
JSON value), `\\"...\\"` (JSON inside a string). The opening quote is read from its first
backslash, so the closing one must be escaped alike."""


def mask_quoted_numbers(text: str) -> str:
    """A dead letter's message with the numbers it quotes masked: `record key
    '13000000000' differs from subscriber_id '15100000049'` names two subscribers, as
    does the same error quoting them in double or escaped quotes."""
    return _QUOTED_NUMBER.sub(_mask_quoted, text)


def _mask_quoted(match: re.Match[str]) -> str:
    quote = match.group("quote")
    return f"{quote}{mask_msisdn(match.group('digits'))}{quote}"
