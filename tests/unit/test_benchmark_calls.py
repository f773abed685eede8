"""The benchmarks call the product as the worker does: a signature that changed under them
left them measuring another path (the sweep with no clean record to retry from) or failing
in the worker they trace (`batch_trace`'s wrapper of `Runtime.handle` took no `owned`)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from moments.runtime import Runtime

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as `python benchmarks/X.py` runs it
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


class TestSweepCost:
    def test_it_sweeps_with_the_store_s_clean_records(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """As `Runtime.sweep` does (`store.reread`): without it a failed record is
        swept again from its half-changed copy, a path the worker never takes."""
        module = _load("sweep_cost", monkeypatch)
        real = module.sweep
        given: list[Any] = []

        def recording(*args: Any, **kwargs: Any) -> Any:
            stored = args[4] if len(args) > 4 else kwargs.get("stored")
            given.append(stored)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, "sweep", recording)
        monkeypatch.setattr(sys, "argv", ["sweep_cost", "--events", "300", "--subscribers", "30"])
        module.main()
        assert "first sweep of the day" in capsys.readouterr().out
        assert len(given) == 2
        assert all(callable(stored) for stored in given)


def _tracer_functions(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[..., Any]]:
    """The wrappers `batch_trace.TRACER` installs in the worker, defined alone."""
    tracer = _load("batch_trace", monkeypatch).TRACER
    defs: list[ast.stmt] = [
        node
        for node in ast.walk(ast.parse(tracer))
        if isinstance(node, ast.AsyncFunctionDef) and node.name.startswith("traced_")
    ]
    namespace: dict[str, Any] = {}
    code = compile(ast.Module(body=defs, type_ignores=[]), "TRACER", "exec")
    exec(code, namespace)  # noqa: S102 - the benchmark's own code
    return {name: f for name, f in namespace.items() if name.startswith("traced_")}


class TestBatchTrace:
    @pytest.mark.parametrize("method", ["handle", "sweep"])
    def test_its_wrappers_take_every_argument_of_the_runtime_s_method(
        self, method: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The batch loop calls `handle(records, store, owned)`: a wrapper that took two
        raised TypeError on every batch of the traced worker."""
        wrapper = _tracer_functions(monkeypatch)[f"traced_{method}"]
        params = list(inspect.signature(getattr(Runtime, method)).parameters)[1:]
        inspect.signature(wrapper).bind(None, *params)  # positionally, as the loop calls
        inspect.signature(wrapper).bind(None, **{p: p for p in params})
