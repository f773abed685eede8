"""Masking personal data in what the commands print for people to read."""

from __future__ import annotations

import pytest

from moments.pii import mask_msisdn, mask_quoted_numbers


class TestMaskMsisdn:
    @pytest.mark.parametrize(
        ("number", "expected"),
        [("13800138001", "138****8001"), ("97531", "*****"), ("1234567", "*******")],
    )
    def test_keeps_three_and_four_digits_of_a_long_number_only(
        self, number: str, expected: str
    ) -> None:
        assert mask_msisdn(number) == expected


class TestMaskQuotedNumbers:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "record key '13000000000' differs from subscriber_id '15100000049'",
                "record key '130****0000' differs from subscriber_id '151****0049'",
            ),
            ('record key "13000000000" differs', 'record key "130****0000" differs'),
            (r"key \"13000000000\" in a JSON string", r"key \"130****0000\" in a JSON string"),
            (r"key \'97531\' and \\\"97532\\\"", r"key \'*****\' and \\\"*****\\\""),
        ],
    )
    def test_numbers_in_any_quotes(self, text: str, expected: str) -> None:
        """`deadletter show` printed a number in double quotes (a JSON value an error
        quotes) or in escaped ones (JSON inside a string) whole: only single quotes were
        read."""
        assert mask_quoted_numbers(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "offset 123456 of partition 3",
            "'1234' is under 5 digits",
            "'13000000000\" opens with one quote and closes with another",
            "task 'c7f406e2d4b383b24203ade1be2217af'",
        ],
    )
    def test_what_is_no_quoted_id_stays(self, text: str) -> None:
        assert mask_quoted_numbers(text) == text
