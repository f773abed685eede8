"""The dispatch policy read for a command, its refusals sorted by the README's exit
codes: a policy file read and found wanting is `InputRefusedError` (exit 1, as rules
refused), a path given wrong stays a `ConfigError` (exit 2)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from moments.exceptions import ConfigError, InputRefusedError
from sinks.policy import DispatchPolicy, check_rule_ids, load_policy


@contextmanager
def _found_wanting(path: Path | None) -> Iterator[None]:
    """A `ConfigError` about a policy file that is there and readable becomes
    `InputRefusedError`: its problems are in the file, not in the path or a setting."""
    try:
        yield
    except InputRefusedError:
        raise
    except ConfigError as exc:
        if path is not None and path.is_file() and os.access(path, os.R_OK):
            raise InputRefusedError(str(exc)) from None
        raise


def read_policy(path: Path | None) -> DispatchPolicy:
    """`load_policy`, a file found wanting refused as input (exit 1)."""
    with _found_wanting(path):
        return load_policy(path)


def check_policy_rules(
    path: Path | None,
    policy: DispatchPolicy,
    rule_ids: Iterable[str],
    moment_types: Iterable[str] = (),
) -> None:
    """`check_rule_ids`, a key naming no rule refused as input (exit 1)."""
    with _found_wanting(path):
        check_rule_ids(path, policy, rule_ids, moment_types)
