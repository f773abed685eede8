"""The rule language: rule specs loaded from YAML, evaluated as pure callables.

Nothing here imports Faust: rules are plain functions of (event, state, context),
unit-tested without a broker.
"""

from rules.base import EvalContext, Fired, TaskSpec
from rules.catalog import RuleSet, load_rules
from rules.rule import CompiledRule

__all__ = ["CompiledRule", "EvalContext", "Fired", "RuleSet", "TaskSpec", "load_rules"]
