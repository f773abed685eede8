"""Masking personal data for logs and human-readable output."""

from __future__ import annotations

import re


def mask_msisdn(number: str) -> str:
    """`13800138001` -> `138****8001`: enough to tell lines apart, not to dial."""
    if len(number) <= 7:
        return "*" * len(number)
    return f"{number[:3]}{'*' * (len(number) - 7)}{number[-4:]}"


_QUOTED_NUMBER = re.compile(r"'([0-9]{5,})'")


def mask_quoted_numbers(text: str) -> str:
    """A dead letter's message with the numbers it quotes masked: `record key
    '13000000000' differs from subscriber_id '15100000049'` names two subscribers."""
    return _QUOTED_NUMBER.sub(lambda m: f"'{mask_msisdn(m.group(1))}'", text)
