"""What `moments run` shows of its worker's log: the rules (and dispatch policy) reloads.

An analyst trying rules on `moments run` saves the rules file and waits: the worker
reloads it, or refuses it with `file:line:column: message` lines, but only in its log
file, so the terminal said nothing either way and a refused file looked taken. The run
follows the log and prints those records as they come, in the text format or the JSON
one (`MOMENTS_LOG_FORMAT`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

TEXT_RECORD = re.compile(
    r"^\[(?P<time>[^\]]+)\] \[(?P<pid>\d+)\] \[(?P<level>[A-Z]+)\] (?P<logger>[\w.]+): "
    r"(?P<message>.*)$"
)
"""The first line of a record in the text format (`logformat.TEXT_FORMAT`); the lines
after it, up to the next such line, are more of its message."""

RELOAD_LOGGER = "moments.reload"
"""Every record of it is about a reload: refused, reloaded, or failed (a bug)."""

RUNTIME_LOGGER = "moments.runtime"
RUNTIME_RELOAD_MESSAGES = ("rules change:", "rule(s) ", "the dispatch policy names")
"""The runtime's records of a reload: what changed, a rule changed without a new
version, a policy that no longer fits the rules."""

READ_LIMIT = 1 << 20
"""Most bytes read from the log at one poll: a worker logging fast is caught up with over
several polls, never read whole into memory."""


@dataclass(frozen=True)
class LogRecord:
    level: str
    logger: str
    message: str


def is_reload(record: LogRecord) -> bool:
    """Whether a record says what became of a reload of the rules or the policy."""
    if record.logger == RELOAD_LOGGER:
        return True
    return record.logger == RUNTIME_LOGGER and record.message.startswith(RUNTIME_RELOAD_MESSAGES)


def shown(record: LogRecord) -> str:
    """A record as the run prints it: its level and message, without the time and pid the
    terminal does not need (the log keeps them)."""
    lines = [line.rstrip() for line in record.message.rstrip().splitlines()]
    return f"worker {record.level}: " + "\n".join(lines)


@dataclass
class ReloadFollower:
    """Reads the worker's log as it grows and gives back its reload records.

    A text record's message may go on over several lines (a refusal lists one problem a
    line), so a record is given back once the next record begins, or at the poll after it
    when nothing more came: the worker writes a record whole."""

    path: Path
    offset: int = 0
    partial: bytes = b""
    lines: list[str] = field(default_factory=list)
    """The record being read, first line first, in the text format."""

    def poll(self) -> list[LogRecord]:
        """The reload records completed since the last poll, in order."""
        chunk = self._read()
        if not chunk:
            return self._keep([self._close_record()])
        data = self.partial + chunk
        *complete, self.partial = data.split(b"\n")
        records: list[LogRecord | None] = []
        for raw in complete:
            line = raw.decode("utf-8", errors="replace")
            if line.startswith("{"):
                records.append(self._close_record())
                records.append(_json_record(line))
            elif TEXT_RECORD.match(line):
                records.append(self._close_record())
                self.lines = [line]
            elif self.lines:
                self.lines.append(line)
        return self._keep(records)

    def _read(self) -> bytes:
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                chunk = log.read(READ_LIMIT)
        except OSError:
            return b""
        self.offset += len(chunk)
        return chunk

    def _close_record(self) -> LogRecord | None:
        if not self.lines:
            return None
        first, *more = self.lines
        self.lines = []
        match = TEXT_RECORD.match(first)
        if match is None:  # pragma: no cover - only matching lines start a record
            return None
        message = "\n".join([match["message"], *more])
        return LogRecord(match["level"], match["logger"], message)

    @staticmethod
    def _keep(records: list[LogRecord | None]) -> list[LogRecord]:
        return [r for r in records if r is not None and is_reload(r)]


def _json_record(line: str) -> LogRecord | None:
    """A line of the JSON log (`logformat.json_formatter`), or None for one that is not."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    level, logger, message = data.get("level"), data.get("logger"), data.get("message")
    if not (isinstance(level, str) and isinstance(logger, str) and isinstance(message, str)):
        return None
    return LogRecord(level, logger, message)
