"""`moments check` names a `MOMENTS_*` variable that sets nothing (a misspelt setting), as
a starting worker and `moments config show` do: the check is what on-call runs in a
worker's pod to ask "would it start with what it is given?", and it said every row `ok`
while `MOMENTS_REDIS_ULR` (meant as `MOMENTS_REDIS_URL`) left the default Redis in force."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moments.check import Finding, Verdict, run_checks
from moments.settings import load_settings


async def settings_rows() -> list[Finding]:
    # Nothing listens on port 1: Kafka and Redis fail at once, the other rows are offline.
    settings = load_settings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0")
    return [f for f in await run_checks(settings, timeout_s=1) if f.step == "settings"]


async def test_a_misspelt_variable_in_the_environment_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the working directory's
    monkeypatch.setenv("MOMENTS_REDIS_ULR", "redis://redis-2:6379/0")
    (row,) = await settings_rows()
    assert row.verdict is Verdict.WARN
    assert "MOMENTS_REDIS_ULR is not a setting and is ignored" in row.detail
    assert "did you mean MOMENTS_REDIS_URL?" in row.detail


async def test_a_misspelt_variable_in_dotenv_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MOMENTS_TOPICS__TOPUPS=billing.topup\n")
    (row,) = await settings_rows()
    assert row.verdict is Verdict.WARN
    assert "MOMENTS_TOPICS__TOPUPS (in .env) is not a setting" in row.detail
    assert "did you mean MOMENTS_TOPICS__TOPUP?" in row.detail


async def test_no_row_when_every_variable_is_a_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for variable in [v for v in os.environ if v.upper().startswith("MOMENTS_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("MOMENTS_LOG_LEVEL", "INFO")
    assert await settings_rows() == []
