"""Masking personal data for logs and human-readable output."""

from __future__ import annotations


def mask_msisdn(number: str) -> str:
    """`13800138001` -> `138****8001`: enough to tell lines apart, not to dial."""
    if len(number) <= 7:
        return "*" * len(number)
    return f"{number[:3]}{'*' * (len(number) - 7)}{number[-4:]}"
