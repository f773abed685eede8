"""The packaged rule catalog, loaded once per test process and only by a test that uses it.

A module that loaded it at import (`RULES = load_rules()`) paid ~0.15 CPU-s in every
process that collected it: `make test`'s four workers each collect every test file, and
only one of them runs the file."""

from __future__ import annotations

from functools import cache

from rules.catalog import RuleSet, load_rules


@cache
def default_rules() -> RuleSet:
    """`load_rules()`'s packaged catalog, the same object for every caller in a process.
    A RuleSet is frozen and nothing the tests call changes its indexes, so sharing it is
    as sharing the module-level one was."""
    return load_rules()
