"""Errors of the rule language: each problem carries its file, line and column."""

from __future__ import annotations

from dataclasses import dataclass

from moments.exceptions import MomentsError


@dataclass(frozen=True, slots=True)
class RuleProblem:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class RulesError(MomentsError):
    """A rules file was refused; `problems` lists every error found, not just the first."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RulesPathError(RulesError):
    """The rules path given is not there or cannot be opened: the command could not run
    as set up (exit 2, as a bad option), not a rules file found wanting (exit 1)."""
