"""Settings are validated at start with a message naming the variable and the fix."""

from __future__ import annotations

import pytest

from moments.exceptions import ConfigError
from moments.settings import load_settings


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MOMENTS_KAFKA_BOOTSTRAP", "MOMENTS_REDIS_URL", "MOMENTS_TOPIC_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.metrics_port == 9308
    assert settings.topic("tasks") == "moments.tasks"


def test_a_bad_bootstrap_names_the_variable_and_the_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_KAFKA_BOOTSTRAP", "localhost")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "MOMENTS_KAFKA_BOOTSTRAP" in str(err.value)
    assert "host:port" in str(err.value)


def test_a_topics_section_that_is_not_json_says_how_to_set_one_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOMENTS_TOPICS", "billing.topup")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "MOMENTS_TOPICS__TOPUP=" in str(err.value)


def test_one_topic_is_renamed_with_the_nested_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_TOPICS__TOPUP", "billing.topup")
    monkeypatch.setenv("MOMENTS_TOPIC_PREFIX", "staging.")
    settings = load_settings()
    assert settings.topic("topup") == "staging.billing.topup"
    assert settings.topic("usage") == "staging.telecom.usage"
