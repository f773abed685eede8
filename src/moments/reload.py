"""Hot reload of the rules: a changed file (or SIGHUP) loads them again; a bad file is
refused with its problems and the rules in force stay."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rules.catalog import RuleSet, load_rules, rule_files
from rules.exceptions import RulesError

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]


def signature(path: Path | None) -> Signature:
    """Name, mtime and size of each rules file; follows symlinks (Kubernetes ConfigMaps)."""
    if path is None:
        return ()
    try:
        files = rule_files(path) if path.exists() else []
        out = []
        for f in files:
            st = os.stat(f)
            out.append((str(f), st.st_mtime_ns, st.st_size))
        return tuple(out)
    except OSError:
        return ()


@dataclass
class Reloader:
    """Checks for a change and loads; the caller installs the new rules between batches."""

    path: Path | None
    install: Callable[[RuleSet], None]
    record: Callable[[str, int | None], None]
    """Called with the result ("ok" or "error") and the number of rules now in force."""
    load: Callable[[Path | None], RuleSet] = load_rules
    last: Signature = field(default=())
    requested: bool = False
    loading: bool = False

    def __post_init__(self) -> None:
        self.last = signature(self.path)

    def request(self) -> None:
        """Reload at the next check whatever the files say (SIGHUP)."""
        self.requested = True

    def due(self) -> bool:
        """Whether to load now (asked, or a file changed); the change counts as seen."""
        current = signature(self.path)
        if not self.requested and current == self.last:
            return False
        self.requested = False
        self.last = current
        return True

    def check(self) -> str | None:
        """Reload when asked or when a file changed: "ok", "error", or None (no change)."""
        if not self.due():
            return None
        return self._finish(self._load())

    async def check_off_loop(self) -> str | None:
        """`check`, loading in a thread: a large file takes seconds to parse, which would
        hold the event loop (batches, heartbeats, /livez). The rules are installed here, on
        the loop. A call while a load runs returns None; that load looks again when it
        ends, so a SIGHUP meanwhile is not lost."""
        if self.loading:
            return None
        self.loading = True
        try:
            result = None
            while self.due():
                result = self._finish(await asyncio.to_thread(self._load))
            return result
        finally:
            self.loading = False

    def _load(self) -> RuleSet | None:
        """The rules, or None when refused (logged). Touches nothing shared: runs in a thread."""
        try:
            return self.load(self.path)
        except RulesError as exc:
            log.error("rules reload refused (the rules in force stay):\n%s", exc)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a loader bug must not stop the worker: the rules in force
            # stay (pyo3's PanicException, from a Rust extension out of memory, is no Exception)
            log.exception(
                "rules reload of %s failed unexpectedly (the rules in force stay): a bug in "
                "moments; report it with this traceback and the file (`moments rules "
                "validate` reads it the same way)",
                self.path or "the packaged catalog",
            )
        return None

    def _finish(self, rules: RuleSet | None) -> str:
        if rules is None:
            self.record("error", None)
            return "error"
        self.install(rules)
        log.info("rules reloaded: %d rule(s) from %s", len(rules), self.path or "the catalog")
        self.record("ok", len(rules))
        return "ok"
