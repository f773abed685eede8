"""Hot reload of the rules and the dispatch policy: a changed file (or SIGHUP) loads it
again; a bad file is refused with its problems and what stays in force, named: the rules
(how many, their ids and versions, from which files, loaded when) or the policy's limits.

A change is loaded once it has settled: the same files, sizes and mtimes at two checks in
a row. Files copied into a rules folder one at a time (scp, `cp` of several files) were
otherwise loaded between two copies, when the catalog in between was valid: a new rule
file copied before the gating file that caps it sent its tasks for one check. A
Kubernetes ConfigMap (an atomic swap of the `..data` symlink) settles at once and is
loaded one check later; SIGHUP loads at once (an operator asking)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from moments.exceptions import ConfigError
from moments.risk import SPEND_SERIES
from rules.catalog import RuleSet, load_rules, rule_files
from rules.exceptions import RulesError
from rules.lint import warnings
from sinks.policy import DispatchPolicy, load_policy

T = TypeVar("T")

SHOWN_FILES = 10
"""Files of a rules folder a refusal names; the rest are counted."""

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int, int, int], ...]


def signature(path: Path | None, also: Sequence[Path] = ()) -> Signature:
    """Name, inode, mtime, ctime and size of each rules file, and of the files `also` names
    (the calendar the rules read, `with_also`); follows symlinks (Kubernetes ConfigMaps).
    The ctime too: a copy that keeps the mtime (`cp -p`, `rsync -t`) of a file of the same
    size changed nothing else a check sees."""
    if path is None:
        return ()
    try:
        files = rule_files(path) if path.exists() else []
        return with_also(tuple(_stat(f) for f in files), also)
    except OSError:
        return ()


def with_also(files: Signature, also: Sequence[Path]) -> Signature:
    """`files` (a `signature`) and the files of `also` it does not hold, as `signature`
    says them (raises OSError for one that cannot be read)."""
    held = {name for name, *_ in files}
    return files + tuple(_stat(f) for f in dict.fromkeys(also) if str(f) not in held)


def _stat(f: Path) -> tuple[str, int, int, int, int]:
    st = os.stat(f)
    return (str(f), st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


@dataclass
class FileReloader(Generic[T]):
    """Checks for a change and loads; the caller installs what was loaded between batches."""

    path: Path | None
    install: Callable[[T], None]
    record: Callable[[str, int | None], None]
    """Called with the result ("ok" or "error") and, for rules, how many are in force."""
    load: Callable[[Path | None], T]
    what: str
    """What is reloaded, as the log says it ("rules", "dispatch policy")."""
    refused: tuple[type[Exception], ...]
    """The loader's errors that refuse a file (said as they are, without a traceback)."""
    describe: Callable[[T], tuple[str, int | None]]
    """What was loaded, for the log, and the count `record` gets."""
    current: Callable[[], T | None] = lambda: None
    """What is in force now (the worker's rules or policy): a refusal says what stays."""
    stays: Callable[[T], str] = str
    """What is in force in words, for a refusal."""
    warn: Callable[[T], None] = lambda _: None
    """Logs what a load accepted but likely did not mean (`log_rule_warnings`)."""
    last: Signature = field(default=())
    """The files as last loaded (or as read at start)."""
    installed: Signature = field(default=())
    """The files of what is in force: as read at start, then as last loaded with success."""
    installed_at: float = 0.0
    """When what is in force was loaded (epoch seconds; at start, when this was made)."""
    seen: Signature | None = None
    """The changed files as the previous check saw them, not loaded yet: they are loaded
    when the next check sees them the same (settled), not while a copy may be under way."""
    requested: bool = False
    loading: bool = False

    def __post_init__(self) -> None:
        self.last = self.installed = self.signature()
        self.installed_at = time.time()

    def signature(self) -> Signature:
        """The files as a check sees them (`signature`; none for the packaged default)."""
        return signature(self.path, self.also()) if self.path is not None else ()

    def also(self) -> Sequence[Path]:
        """Files besides `path` whose change reloads it: none here."""
        return ()

    def in_force(self) -> str:
        """What stays in force when a file is refused: `the rules from PATH (a.yaml,
        b.yaml), loaded at ...; 12 rule(s), ...`."""
        where = str(self.path) if self.path else "the packaged default"
        # A folder's files are named below it; read from what was loaded, not from the
        # disk: a folder the worker can no longer stat (EACCES) raised out of the refusal.
        names = [Path(f).name for f, *_ in self.installed if f != str(self.path)]
        if len(names) > SHOWN_FILES:
            shown = ", ".join(names[:SHOWN_FILES])
            where += f" ({len(names)} files: {shown} and {len(names) - SHOWN_FILES} more)"
        elif names:
            where += f" ({', '.join(names)})"
        when = dt.datetime.fromtimestamp(self.installed_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        said = f"the {self.what} from {where}, loaded at {when}"
        value = self.current()
        return said if value is None else f"{said}; {self.stays(value)}"

    def request(self) -> None:
        """Reload at the next check whatever the files say (SIGHUP)."""
        self.requested = True

    def due(self) -> bool:
        """Whether to load now: asked, or a change seen the same by the previous check
        (settled). A change still moving waits for the next check; once due, the files
        count as loaded."""
        current = self.signature()
        if not self.requested:
            if current == self.last:
                self.seen = None  # changed and changed back: nothing to load
                return False
            if current != self.seen:
                self.seen = current  # changed since the previous check: wait until settled
                return False
        self.requested = False
        self.last, self.seen = current, None
        return True

    def check(self) -> str | None:
        """Reload when asked or when a change has settled: "ok", "error", or None (nothing
        to load yet)."""
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

    def _load(self) -> T | None:
        """What the file holds, or None when refused (logged). Touches nothing shared: runs
        in a thread."""
        try:
            return self.load(self.path)
        except self.refused as exc:
            log.error(
                "%s reload refused (what is in force stays: %s):\n%s",
                self.what,
                self.in_force(),
                exc,
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a loader bug must not stop the worker: the rules in force
            # stay (pyo3's PanicException, from a Rust extension out of memory, is no Exception)
            log.exception(
                "%s reload of %s failed unexpectedly (what is in force stays: %s): a bug in "
                "moments; report it with this traceback and the file (`moments check` reads "
                "it the same way)",
                self.what,
                self.path or "the packaged default",
                self.in_force(),
            )
        return None

    def _finish(self, loaded: T | None) -> str:
        if loaded is None:
            self.record("error", None)
            return "error"
        self.install(loaded)
        self.installed, self.installed_at = self.last, time.time()
        said, count = self.describe(loaded)
        log.info("%s reloaded from %s: %s", self.what, self.path or "the packaged default", said)
        self.warn(loaded)
        self.record("ok", count)
        return "ok"


@dataclass
class Reloader(FileReloader[RuleSet]):
    """The rules file or folder (MOMENTS_RULES)."""

    load: Callable[[Path | None], RuleSet] = load_rules
    what: str = "rules"
    refused: tuple[type[Exception], ...] = (RulesError,)
    describe: Callable[[RuleSet], tuple[str, int | None]] = field(
        default=lambda rules: (f"{len(rules)} rule(s)", len(rules))
    )
    stays: Callable[[RuleSet], str] = field(default=lambda rules: rules_in_force(rules))
    warn: Callable[[RuleSet], None] = field(default=lambda rules: log_rule_warnings(rules))

    def also(self) -> Sequence[Path]:
        """The holiday calendar file the rules in force name (outside a rules folder, or
        beside a rules file): an operator's change to it was never loaded (a new day of
        theirs, no greeting) until a rules file changed or SIGHUP."""
        rules = self.current()
        found = rules.special.calendar_file if rules is not None else None
        return (found,) if found is not None else ()


def log_rule_warnings(rules: RuleSet) -> None:
    """Each warning `moments rules validate` prints of rules a worker loaded (at start, at
    each reload), once, at WARNING: a series no rule reads, a param no condition reads
    were said by validate only, and rules deployed without it loaded without a word."""
    for warning in warnings(rules, read_elsewhere=(SPEND_SERIES,)):
        log.warning("rules: warning: %s", warning)


SHOWN_RULES = 10
"""Rules a refusal names by id and version; the rest are counted (moments_rule_info)."""
SHOWN_REGIONS = 10
"""Regions a refused policy's line names with their limits; the rest are counted (a
province's policy lists dozens of cities)."""
SHOWN_DAYS_OFF = 5
"""Runs of days off a refused policy's line names per channel (`closed_days:`); the days of
the rest are counted (a centre closed every Sunday lists 52)."""


def rules_in_force(rules: RuleSet) -> str:
    """`12 rule(s), 11 live and 1 shadow: low_balance v2, ... and 2 more`: what
    `moments_rule_info` shows, in the log line on-call reads."""
    shadow = sum(1 for r in rules.rules if r.shadow)
    named = ", ".join(f"{r.id} v{r.version}" for r in rules.rules[:SHOWN_RULES])
    more = len(rules) - SHOWN_RULES
    return f"{len(rules)} rule(s), {len(rules) - shadow} live and {shadow} shadow: {named}" + (
        f" and {more} more (moments_rule_info)" if more > 0 else ""
    )


@dataclass
class PolicyReloader(FileReloader[DispatchPolicy]):
    """The dispatch policy file (MOMENTS_DISPATCH_POLICY): capacity, merge window, contact
    caps and overflow change without a restart."""

    load: Callable[[Path | None], DispatchPolicy] = load_policy
    what: str = "dispatch policy"
    refused: tuple[type[Exception], ...] = (ConfigError,)
    describe: Callable[[DispatchPolicy], tuple[str, int | None]] = field(
        default=lambda policy: (f"the new one in force, {policy.describe()}", None)
    )
    stays: Callable[[DispatchPolicy], str] = field(
        default=lambda policy: policy.describe(regions=SHOWN_REGIONS, days_off=SHOWN_DAYS_OFF)
    )
