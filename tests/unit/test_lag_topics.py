"""The lag of every topic a worker reads is sampled: the input, the cooldown returns and
the dispatch consumers' outcomes (`moments.task-outcomes` had none, so outcomes the
worker stopped reading looked like a consumer that stopped writing them)."""

from __future__ import annotations

import pytest

from moments.settings import load_settings
from moments.worker import read_beside_input


def test_outcomes_and_returns_are_sampled_with_their_configured_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOMENTS_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("MOMENTS_TOPICS__TASK_OUTCOMES", "dispatch.outcomes")
    monkeypatch.setenv("MOMENTS_APP_ID", "moments-js")
    assert read_beside_input(load_settings()) == [
        "moments-js-cooldown-returns",
        "prod.dispatch.outcomes",
    ]
