"""A validator's own words reach the user without pydantic's "Value error, " prefix, in
every place a `ValidationError` becomes a message: `gating.timezone: Value error,
'Mars/Base' is not...` read as a crash report, and the settings' messages (already
without it) read otherwise than the rules' and the dispatch policy's."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from moments.check import _policy
from moments.errortext import error_text
from moments.exceptions import ConfigError
from moments.settings import Settings
from rules.catalog import load_rules
from rules.exceptions import RulesError
from sinks.policy import load_policy

CATALOG = Path(__file__).resolve().parents[2] / "src" / "rules" / "catalog" / "default.yaml"


class _Counted(BaseModel):
    count: int

    @field_validator("count")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("write a count of 1 or more")
        return value


class TestErrorText:
    def test_a_validators_message_is_its_own_words(self) -> None:
        with pytest.raises(ValidationError) as err:
            _Counted(count=0)
        assert error_text(err.value.errors()[0]) == "write a count of 1 or more"

    def test_pydantics_own_messages_are_kept(self) -> None:
        with pytest.raises(ValidationError) as err:
            _Counted(count="many")
        assert error_text(err.value.errors()[0]).startswith("Input should be a valid integer")


def test_the_dispatch_policy_says_the_validators_words(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("timezone: Mars/Base\ncapacity:\n  default:\n    sms: -1\n")
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    said = str(err.value)
    assert "Value error" not in said, said
    assert f"{path}:1:11: timezone: 'Mars/Base' is not an IANA time zone" in said, said
    assert f"{path}:4:10: capacity.default.sms: -1 is too small: write a number >= 0" in said


def test_moments_check_says_a_bad_policy_without_the_prefix(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("hours:\n  outbound_call: 09:00-09:00\n")
    finding, policy = _policy(Settings(dispatch_policy=path))
    assert policy is None
    assert "Value error" not in finding.detail, finding.detail
    assert f"{path}:2:18: hours.outbound_call: 09:00-09:00: start and end" in finding.detail


def test_a_rules_file_says_the_validators_words(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    text = CATALOG.read_text()
    assert "      ttl: 24h\n" in text  # the catalog's first rule's, changed below
    path.write_text(text.replace("      ttl: 24h\n", "      ttl: 0h\n", 1))
    with pytest.raises(RulesError) as err:
        load_rules(path)
    said = str(err.value)
    assert "Value error" not in said, said
    assert "task.ttl: '0h' is no time at all; give it some, e.g. 24h" in said, said
