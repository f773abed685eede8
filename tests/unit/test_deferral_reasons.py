"""`moments_tasks_deferred_total{reason}`: every reason the detector can defer a task for
is a `DeferralReason`, and each series starts at 0.

The reasons were free strings, so a series was born at its first deferral, with no
sample before it: `rate()` missed that first deferral (a worker's first quiet-hours
night, the first capacity overflow of a region after a restart)."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from prometheus_client import CollectorRegistry

from moments.enums import DeferralReason
from moments.models import DEFERRAL_REASONS
from rules import gating
from sinks.metrics import Metrics

SRC = Path(__file__).resolve().parents[2] / "src"
EMITTERS = [
    "sinks/dispatch.py",
    "sinks/fitting.py",
    "sinks/routes.py",
    "sinks/timegates.py",
    "sinks/contact.py",
    "sinks/caps.py",
    "sinks/parking.py",
    "moments/taskmaking.py",
    "moments/outcomes.py",
]
"""Where a task is parked or given a `Deferral`: the engine's gating, the dispatch sink,
the outcome retries."""


def test_every_reasons_series_starts_at_0() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    samples = {
        s.labels["reason"]: s.value
        for metric in registry.collect()
        if metric.name == "moments_tasks_deferred"
        for s in metric.samples
        if s.name == "moments_tasks_deferred_total"
    }
    assert samples == dict.fromkeys(DeferralReason, 0.0)


def test_the_enum_is_the_contracts_list() -> None:
    assert set(DEFERRAL_REASONS) == set(DeferralReason)


def _literals(node: ast.AST | None) -> set[str]:
    """The strings `node` may give: a constant, or either branch of a conditional."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _literals(node.body) | _literals(node.orelse)
    if isinstance(node, ast.BoolOp):
        return set().union(*(_literals(v) for v in node.values))
    return set()


def _named(target: ast.AST) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    return None


def emitted() -> dict[str, set[str]]:
    """Reason -> where: every string the emitters pass as a deferral's reason (a park's,
    a `Deferral`'s, a contact limiter's) or hold in a variable or field named `reason` or
    `why` (a default included)."""
    found: dict[str, set[str]] = {}

    def add(values: set[str], path: str, node: ast.AST) -> None:
        for value in values:
            found.setdefault(value, set()).add(f"{path}:{getattr(node, 'lineno', 0)}")

    for path in EMITTERS:
        tree = ast.parse((SRC / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _named(node.func)
                if name in ("park", "ContactLimiter") and len(node.args) >= 3:
                    add(_literals(node.args[2]), path, node)
                for keyword in node.keywords:
                    if name in ("park", "Deferral", "ContactLimiter") and keyword.arg == "reason":
                        add(_literals(keyword.value), path, node)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(_named(t) in ("reason", "why") for t in targets):
                    add(_literals(node.value), path, node)
            elif isinstance(node, ast.FunctionDef):
                arguments = node.args.args[len(node.args.args) - len(node.args.defaults) :]
                for argument, default in zip(arguments, node.args.defaults, strict=True):
                    if argument.arg in ("reason", "why"):
                        add(_literals(default), path, node)
    return found


def test_every_reason_the_code_defers_for_is_in_the_enum() -> None:
    found = emitted()
    found.update({r: {"rules/gating.py: Deferring"} for r in typing.get_args(gating.Deferring)})
    assert {"merge_window", "deliver_after", "unreachable_retry", "capacity"} <= set(found)
    found.pop("", None)  # a shadow judgement's "no reason" (taskmaking)
    assert {r: where for r, where in found.items() if r not in set(DeferralReason)} == {}
