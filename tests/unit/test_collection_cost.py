"""What collecting the suite costs: `make test`'s four workers each import every test
file and run only a quarter of them, so work done at a module's import is paid four
times."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def run_at_import(body: list[ast.stmt]) -> list[ast.AST]:
    """What of these statements runs when the module is imported: all but the bodies of
    functions (a class's body runs, a decorator and a default value too)."""
    nodes: list[ast.AST] = []
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            nodes += [*statement.decorator_list, statement.args]
        elif isinstance(statement, ast.ClassDef):
            nodes += [*statement.decorator_list, *statement.bases]
            nodes += run_at_import(statement.body)
        else:
            nodes.append(statement)
    return nodes


def calls_at_import(tree: ast.Module, name: str) -> list[int]:
    """The lines that call `name` when the module is imported."""
    found = (n for top in run_at_import(tree.body) for n in ast.walk(top))
    calls = (n for n in found if isinstance(n, ast.Call))
    return sorted(c.lineno for c in calls if isinstance(c.func, ast.Name) and c.func.id == name)


def test_no_test_module_loads_the_rules_at_import() -> None:
    """Three modules loaded the packaged catalog at import (`RULES = load_rules()`,
    ~0.15 CPU-s each in every process that collected them); `tests.unit.catalogs.
    default_rules()` loads it once per process, when a test first asks."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "load_rules(" in text:
            for line in calls_at_import(ast.parse(text), "load_rules"):
                found.append(f"{path.relative_to(TESTS.parent)}:{line}")
    assert found == [], "call load_rules inside a test, or use tests.unit.catalogs.default_rules"


def test_what_runs_at_import_counts_and_a_function_body_does_not() -> None:
    tree = ast.parse(
        "RULES = load_rules()\n"
        "@given(st.sampled_from(load_rules().rules))\n"
        "def test_a(r):\n"
        "    load_rules()\n"
        "class TestB:\n"
        "    X = load_rules()\n"
        "    def test_c(self, rules=load_rules()):\n"
        "        load_rules()\n"
    )
    assert calls_at_import(tree, "load_rules") == [1, 2, 6, 7]
