"""What `moments rules validate` warns of (a param no condition reads, a series no rule
reads) is logged by the worker too, once per load, at WARNING, with the file and line:
at start-up and at each hot reload. Rules deployed without `validate` (a ConfigMap edited
in place) loaded without a word, and a rule whose override changed nothing went unseen."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from moments import worker
from moments.reload import Reloader
from moments.settings import load_settings

TASK = (
    "    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a, ttl: 1d,\n"
    "           description: x}\n"
)
RULES = (
    "rules:\n  - id: calls\n    description: d\n    on: [usage]\n"
    "    condition: {field: counterparty, prefix: '10010'}\n    params: {hot: '10010'}\n"
    + TASK
    + "series:\n  unused_week: {on: [usage], period: week}\n"
)
"""`calls` has a param no condition reads (`hot`, line 6); `unused_week` (line 10) no reader."""


def _warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _expected(path: Path) -> list[str]:
    return [
        f"rules: warning: {path}:6: calls: param 'hot' is read by no condition (write $hot "
        "where its value goes): its value and its overrides change nothing",
        f"rules: warning: {path}:10: series 'unused_week' is read by no rule: every "
        "subscriber's record keeps its windows for nothing; read it in a condition, or take "
        "it out",
    ]


class _StopHereError(Exception):
    """Ends `_prepare` at the preflight: what follows needs a broker."""


async def _stop(settings: object) -> None:
    raise _StopHereError


def test_the_worker_logs_them_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RULES)
    monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(worker, "preflight", _stop)
    settings = load_settings(rules=path, metrics_port=0)
    with caplog.at_level(logging.WARNING), pytest.raises(_StopHereError):
        worker._prepare(settings, [])
    assert [w for w in _warned(caplog) if w.startswith("rules: ")] == _expected(path)


def test_a_reload_logs_them_once_per_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RULES)
    reloader = Reloader(path, lambda rules: None, lambda result, count: None)
    path.write_text(RULES + "\n")
    with caplog.at_level(logging.WARNING):
        assert reloader.check() is None  # seen once: not settled yet
        assert reloader.check() == "ok"
        assert reloader.check() is None  # nothing new: nothing said again
    assert _warned(caplog) == _expected(path)
    caplog.clear()
    reloader.request()  # SIGHUP: loaded again, said again
    with caplog.at_level(logging.WARNING):
        assert reloader.check() == "ok"
    assert _warned(caplog) == _expected(path)


def test_a_refused_reload_logs_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bad file is refused and the rules in force stay: their warnings were said at their
    load, and a file not loaded has none to say (its errors are logged instead)."""
    path = tmp_path / "r.yaml"
    path.write_text(RULES)
    reloader = Reloader(path, lambda rules: None, lambda result, count: None)
    path.write_text(RULES.replace("on: [usage]\n    condition", "on: [usage]\n    condtion", 1))
    reloader.request()
    with caplog.at_level(logging.WARNING):
        assert reloader.check() == "error"
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert not [w for w in _warned(caplog) if w.startswith("rules: ")]
