"""Event files for the backtest: JSON lines or CSV, gzip too, read as a stream.

A JSON line is an event with its `type` (topup, roaming, complaint, usage, profile)
beside its fields, as `moments simulate --to-file` writes it. A CSV file has a header
row naming the fields, `type` among them (or given by `default_type`); empty cells are
left out, cells holding JSON arrays or objects are parsed, and so are numbers in the
columns the contract types as numbers (`severity`, `quantity`, ...). Each event becomes the
value a producer would have written (without `type`), with its event time for ordering.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import difflib
import gzip
import heapq
import io
import itertools
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import orjson
from pydantic import BaseModel

from moments.decoding import MAX_MESSAGE_BYTES
from moments.eventcheck import no_type_said, utf16_said
from moments.eventspan import EVENT_SPAN
from moments.filenames import gzipped, is_csv
from moments.models import EVENT_MODELS, EventType
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.refusals import LATENESS
from moments.rulecheck import (
    READABLE_WITHIN,
    TYPES,
    UNREADABLE,
    EventFileError,
    MissingEventTypeError,
    NotAFileError,
    event_type_of,
    json_objects,
)

__all__ = [
    "RAGGED",
    "READABLE_WITHIN",
    "Blank",
    "Cut",
    "EventFile",
    "FileEvent",
    "WholeLines",
    "blank_kind",
    "blank_said",
    "cuts_of",
    "history",
    "in_file_order",
    "merged",
    "ragged_refused",
    "unreadable_lines",
    "unzipped",
]


class FileEvent(NamedTuple):
    """One event of a file (a tuple: one is made per event, and tuples are made fastest)."""

    at: float
    """Event time, epoch seconds: `occurred_at`, or the one a line that is no JSON object
    still names at its top level; 0 when it is missing or unreadable (the detector then
    dead-letters the event, as the stream would, and no window leaves it out)."""
    event_type: EventType
    key: bytes
    value: bytes
    blank: Blank | None = None
    """A CSV row's blank cells in columns its event needs (None: none, or no CSV row)."""
    line: int = 0
    """The line of its file the event was read from (0: not read from a file)."""
    source: str = ""
    """That file, as given (a refused event is named `source:line`)."""


class Blank(NamedTuple):
    """The blank cells of a CSV row in the columns its event needs: the worker refuses
    the event for lacking those fields, in pydantic's words ("Field required"), of a
    column the file has (`blank_said`). Or a ragged row's cells and the header's."""

    where: str
    """`file:line` of the row."""
    columns: tuple[str, ...]
    cells: tuple[int, int] = (0, 0)
    """Of a row with more or fewer cells than the header (ragged), its cells and the
    header's: it is refused whole (`ragged_refused`), as its values may sit in other
    columns than theirs; (0, 0) of a row as long as the header."""

    @property
    def ragged(self) -> bool:
        return self.cells[0] != self.cells[1]


RAGGED = "the row's cells are not the header's"
"""The dead letter's message of a ragged CSV row (`ragged_refused`), told by `blank_said`
with the counts, its line and the fix."""


def ragged_refused(
    records: list[RawRecord], blanks: Mapping[tuple[str, int], Blank]
) -> tuple[list[RawRecord], list[DeadLetter]]:
    """`records` without those of ragged CSV rows, and those refused (invalid_event): a
    row with more cells than the header lost the extra ones, one with fewer had its
    values read into the columns of others, and either made a task without a word."""
    if not blanks:
        return records, []
    refused = [
        DeadLetter(r, r.topic, RejectReason.INVALID_EVENT, "RaggedRow", RAGGED)
        for r in records
        if (b := blanks.get((r.topic, r.offset))) is not None and b.ragged
    ]
    if not refused:
        return records, []
    out = {(d.record.topic, d.record.offset) for d in refused}
    return [r for r in records if (r.topic, r.offset) not in out], refused


def in_file_order(
    records: Sequence[RawRecord], letters: list[DeadLetter], ragged: list[DeadLetter]
) -> list[DeadLetter]:
    """The dead letters of `records` with those of ragged rows (`ragged_refused`) among
    them in the order of their rows, as the refusals are listed, not ahead of the others."""
    if not ragged:
        return letters
    index = {(r.topic, r.offset): i for i, r in enumerate(records)}
    return sorted(
        [*ragged, *letters], key=lambda d: index.get((d.record.topic, d.record.offset), -1)
    )


def blank_said(message: str, blank: Blank | None, first: str | None = None) -> str:
    """A refusal's message with each blank cell's "COLUMN: Field required" told as the
    blank cell it is, naming the column and the row's line (`first`: "first at" that line,
    for a count of refusals alike, said once; `blank_kind` drops the line)."""
    if blank is None:
        return message
    return _cells_said(message, blank, f"first at {first}" if first is not None else blank.where)


def blank_kind(message: str, blank: Blank | None) -> str:
    """`blank_said` without the line: what refusals alike have in common."""
    return message if blank is None else _cells_said(message, blank, None)


def _cells_said(message: str, blank: Blank, where: str | None) -> str:
    """`message` with the "Field required" of `blank`'s columns told as blank cells, or,
    of a ragged row, `RAGGED` told with its cells and the header's (`where`: the line, in
    brackets)."""
    at = f" ({where})" if where is not None else ""
    if blank.ragged:
        cells, header = blank.cells
        return message.replace(
            RAGGED,
            f"the row has {cells} cell(s) where the header has {header}{at}: write a cell "
            "for each column of the header, in its order, an empty one (,,) where there is "
            "no value, and quote a cell holding a comma",
        )
    for column in blank.columns:
        message = message.replace(
            f"{column}: Field required", f"{column}: blank cell in column {column}{at}"
        )
    return _REQUIRED_FIX.sub(lambda m: _blank_fix(m, blank.columns), message, count=1)


_REQUIRED_FIX = re.compile(
    r"\(a (?P<type>[a-z_]+) event must have (?P<fields>[a-z_, ]+): write (?:it|them); "
    r"(?P<rest>each type's fields are in [^)]*)\)"
)
"""`moments.decoding.required_fix` in its brackets: the fix of fields left out."""


def _blank_fix(found: re.Match[str], columns: tuple[str, ...]) -> str:
    """The fix of fields left out told for the blank cells among them as the cells' ("fill
    the cell in"), the others' kept: it said "must have amount: write it" after "blank
    cell in column amount", two messages for one cell."""
    fields = found["fields"].split(", ")
    blank = [f for f in fields if f in columns]
    if not blank:
        return found[0]
    cells = "the cell" if len(blank) == 1 else "the cells"
    said = f"a {found['type']} event must have a value there: fill {cells} in"
    if rest := [f for f in fields if f not in columns]:
        them = "it" if len(rest) == 1 else "them"
        said += f"; it must have {', '.join(rest)} too: write {them}"
    return f"({said}; {found['rest']})"


_TYPES = {t.value: t for t in EventType}
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s"{}\[\]:,]+')
"""A JSON string, a bracket, colon or comma outside one, or a number or literal (what
`_named` walks)."""


def _named(line: bytes, name: str) -> str | None:
    """The text a line that may be no JSON (cut off, a trailing comma) gives the member
    `name` of its top-level object: a member of the same name in a nested object (a
    device's `"type"`) is not it. None when the line names none, or not as a string."""
    want = orjson.dumps(name)
    depth = 0
    key = b""
    wanted = False
    for token in _TOKEN.finditer(line):
        text = token.group()
        if wanted:  # the token after `"name":` at the top level
            if text[:1] != b'"':
                return None
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:  # a lone surrogate
                return None
            return value if isinstance(value, str) else None
        if text == b":":
            wanted = depth == 1 and key == want
        elif text in (b"{", b"["):
            if depth == 0 and text == b"[":
                return None  # an array: no object, no member
            depth += 1
        elif text in (b"}", b"]"):
            depth -= 1
        key = text if text[:1] == b'"' else b""
    return None


NAMED_KEPT = 20
"""Lines that were no JSON object named per file (all are counted)."""

BEHIND_S = LATENESS.total_seconds()
"""A line dated more than this before a line above it in its file puts the file out of
event-time order (`order_said`): the stream takes events that late of another topic or
subscriber, but the backtest's one event time has run on past it."""


_SPAN = (EVENT_SPAN[0].timestamp(), EVENT_SPAN[1].timestamp())
"""The instants an event may name (moments.models.Instant): a time outside them is read
as unreadable, as the detector refuses the event (a year-9999 time made the report's
span a year 10000 and ended the backtest in a ValueError)."""


_fromisoformat = dt.datetime.fromisoformat


def _epoch(value: Any) -> float:
    """`occurred_at` as epoch seconds; 0 when it cannot be placed: unreadable, out of the
    contract's span, or with no UTC offset (the stream refuses it; read in the machine's
    own zone, `--to` placed it by where the backtest ran)."""
    try:
        when = _fromisoformat(value if type(value) is str else str(value))
        at = when.timestamp() if when.tzinfo is not None else 0.0
    except (ValueError, OverflowError):
        return 0.0
    return at if _SPAN[0] <= at < _SPAN[1] else 0.0


def _event(
    doc: dict[str, Any],
    source: str,
    number: int,
    default_type: EventType | None,
    line: bytes | None = None,
) -> FileEvent:
    """The event of a JSON line (`line`: its value as written, `type` and all, which a
    worker ignores) or of a CSV row (its object written as JSON), line `number` of the
    file `source`."""
    event_type = event_type_of(doc, f"{source}:{number}", default_type)
    key = _key(doc.get("subscriber_id"))
    value = line or orjson.dumps(doc)
    return FileEvent(_epoch(doc.get("occurred_at")), event_type, key, value, None, number, source)


def _key(sub: Any) -> bytes:
    if isinstance(sub, str):
        return sub.encode()
    return str(sub).encode() if sub is not None else b""


def _numeric_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields the contract types as JSON numbers only (a count, a quantity): a CSV
    cell is text, which the worker refuses for them, as the schemas do. Money takes a
    number or a decimal string, so its text stays text."""
    numeric = set()
    for name, spec in model.model_json_schema()["properties"].items():
        types = {s.get("type") for s in [spec, *spec.get("anyOf", [])]}
        if types & {"integer", "number"} and "string" not in types:
            numeric.add(name)
    return frozenset(numeric)


NUMERIC_FIELDS = {t: _numeric_fields(model) for t, model in EVENT_MODELS.items()}
REQUIRED_FIELDS = {
    t: frozenset(name for name, f in model.model_fields.items() if f.is_required())
    for t, model in EVENT_MODELS.items()
}
"""The fields each event needs: a blank CSV cell of one is told as blank (`Blank`)."""
FIELD_NAMES = frozenset(
    {"type"}.union(*(model.model_json_schema()["properties"] for model in EVENT_MODELS.values()))
)
"""The names a CSV header cell may give in any case, with spaces around (`Region `)."""
SHARED_REQUIRED = ("event_id", "subscriber_id", "occurred_at")
"""The fields every event type requires: a header without one has every row refused."""


def _header(names: Sequence[str], path: Path) -> list[str]:
    """A CSV header's cells as the fields they name: a spreadsheet's `Type`, `Region` or
    `Balance_After`, or `type ` with a space before the comma, named no field of the
    contract (`Type`: "add a `type` column"; a required field: every row refused; an
    optional one, the region or `balance_after`, dropped without a word). Any other
    name is kept as written (an extra field, as the contract keeps it). Two cells naming
    one field are refused: which one the rows meant cannot be told."""
    out: list[str] = []
    seen: dict[str, str] = {}
    for name in names:
        field = name.strip()
        if field.lower() in FIELD_NAMES:
            field = field.lower()
        if field and field in seen:
            raise EventFileError(
                f"{path}:1: columns {seen[field]!r} and {name!r} both name the field "
                f"{field!r}: keep one of them"
            )
        seen[field] = name
        out.append(field)
    missing = [f for f in SHARED_REQUIRED if f not in seen]
    others = [n for n in out if n and n not in FIELD_NAMES]
    if missing and others:
        # A warehouse's `Subscriber` or `msisdn` column: every row was refused for a
        # missing subscriber_id, and the analyst told to fix the rows, which held it.
        said = []
        for field in missing:
            close = difflib.get_close_matches(field, others, n=1, cutoff=0.6) or [
                n for n in others if difflib.get_close_matches(n.lower(), [field], 1, 0.6)
            ]
            if close:
                said.append(f"{close[0]!r} names no field of the events: did you mean {field!r}?")
        if not said and len(missing) == 1 and len(others) == 1:
            said.append(
                f"{others[0]!r} names no field of the events: if it holds the {missing[0]}, "
                f"name it {missing[0]} in the header row"
            )
        if not said:  # nothing stands in for them: the rows are refused, as a worker would
            return out
        raise EventFileError(
            f"{path}:1: the header row has no {' or '.join(missing)} column, which every "
            f"event needs (each row would be refused); {' '.join(said)}"
        )
    return out


def _cell(text: str, numeric: bool) -> Any:
    if text[:1] in "[{" or numeric:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text  # the worker's refusal names the field
        return value if not numeric or type(value) in (int, float) else text
    return text


class Cut(NamedTuple):
    """Where a gzip history file's data ended early or could not be read on
    (`EventFile.cut`): the whole lines before it were read."""

    path: Path
    line: int
    """The first line not read whole: the one cut, or the first missing."""
    partial: int
    """Bytes of that line read before the data ended (0: it ended between two lines)."""
    last_at: str | None
    """`occurred_at` of the last whole line read, when it names one."""
    why: str
    """`gzip stream truncated`, or what the gzip reader said of data it could not read."""

    def said(self) -> str:
        """`h.jsonl.gz:8: the file ends early: gzip stream truncated; ...; re-copy the file`."""
        read = f"its {self.line - 1:,} line(s) before were read"
        if self.last_at:
            read += f" (the last dated {self.last_at})"
        left = ""
        if self.partial:
            left = f", the {self.partial:,} byte(s) of line {self.line} left out"
        return (
            f"{self.path}:{self.line}: the file ends early: {self.why}; {read}{left}, and "
            "whatever the file held after that is missing: re-copy the file (`gzip -t FILE` "
            "says whether a copy is whole)"
        )


TRUNCATED = "gzip stream truncated"
"""`Cut.why` of compressed data that ends before its end-of-stream marker."""


class WholeLines(io.RawIOBase):
    """The unzipped bytes of a gzip file, whole lines only. When the compressed data ends
    early (a cut-off copy: gzip's EOFError) or cannot be read on (damaged, junk after it),
    the whole lines before count, the cut one is kept out (no dead letter: the stream
    never had that record, the copy lost it) and `cut` says where; a file that is no gzip
    from its first byte still raises BadGzipFile. One call per block, not per line: a
    line is passed on once its newline is read, the last one without it at the end."""

    def __init__(self, unzipped: gzip.GzipFile, path: Path) -> None:
        self._unzipped = unzipped
        self._path = path
        self._held: list[bytes] = []
        """The start of a line whose newline is not read yet, in the blocks read (joined
        once its newline comes: added to as one bytes, a junk line of 32 MB with no
        newline was copied whole at each 64 KiB block, 41 s to read)."""
        self._ready: bytes | memoryview = b""
        """Whole lines (or the start of one, held before) not passed on yet."""
        self._next: memoryview | None = None
        """The whole lines of the last block, passed on after the held start of the first."""
        self._last = memoryview(b"")
        """The last block's whole lines (for the time of the last line, at a cut)."""
        self._any = False
        self.ended: str | None = None
        """Why the data ended early (`Cut.why`), once it did."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """As much of the whole lines read as fits `buffer`, without copying a block more
        than the reader it replaces did (a block is a memoryview, the held line start is
        passed on before it, not joined to it)."""
        ready = self._ready
        while not ready:
            if self._next is not None:
                ready, self._next = self._next, None
                break
            if self.ended is not None:
                return 0
            try:
                block = self._unzipped.read1(len(buffer))
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                if isinstance(exc, gzip.BadGzipFile) and not self._any:
                    raise  # no gzip at all: the reader says so, and the fix
                self.ended = (
                    TRUNCATED
                    if isinstance(exc, EOFError)
                    else f"the gzip data cannot be read on ({exc})"
                )
                return 0
            self._any = True
            if not block:  # the end: the last line is whole without its newline
                ready, self._held = memoryview(b"".join(self._held)), []
                if not ready:
                    return 0
                break
            end = block.rfind(b"\n") + 1
            if not end:  # a line longer than a block
                self._held.append(block)
                continue
            self._last = lines = memoryview(block)[:end]
            if self._held:  # a memoryview: passed on in parts without copying the rest
                ready, self._next = memoryview(b"".join(self._held)), lines
            else:
                ready = lines
            self._held = [block[end:]] if end < len(block) else []
        size = min(len(buffer), len(ready))
        buffer[:size] = ready[:size]
        self._ready = ready[size:]
        return size

    def cut(self, lines: int) -> Cut | None:
        """Where the data ended early, after `lines` lines read (the reader counts them:
        counting newlines here cost a quarter of the time to split the lines)."""
        if self.ended is None:
            return None
        last = bytes(self._last).rstrip()
        last = last[last.rfind(b"\n") + 1 :]
        at = _named(last, "occurred_at") if last else None
        return Cut(self._path, lines + 1, sum(map(len, self._held)), at, self.ended)

    def close(self) -> None:
        self._unzipped.close()
        super().close()


def unzipped(raw: IO[bytes], path: Path) -> tuple[IO[bytes], WholeLines]:
    """The lines of the gzip file `path` opened as `raw`, and the reader that says where
    its data ended early (`WholeLines.cut`). Lines through a BufferedReader: GzipFile's
    own readline is Python code run once a line (2% of a backtest); this one reads the
    gzip stream in blocks. BadGzipFile when it is no gzip at all (`not_gzip`)."""
    whole = WholeLines(gzip.GzipFile(fileobj=raw, mode="rb"), path)
    return cast(IO[bytes], io.BufferedReader(whole, buffer_size=1 << 16)), whole


def not_an_events_file(path: Path, profiles: bool = False) -> str | None:
    """Why `path` cannot be read as an events file, or None: it is missing, a folder, or
    no regular file (a pipe, as `<(zcat a.gz)` gives, or a device), each with what to pass.
    All three read "no such file", which sent the user looking for a typo. `profiles`: the
    file of `--profiles`, named so (a missing one was told to "pass an events file", with
    the events files there and read)."""
    if path.is_file():
        return None
    if profiles and not path.exists():
        return (
            f"{path}: no such file, given to --profiles; pass the profiles snapshot (profile "
            "events, .jsonl or .csv, .gz too), or leave --profiles out when the --events "
            "files hold the profiles"
        )
    if path.is_dir():
        return f"{path}: a folder; pass the files in it ({path}/*.jsonl.gz, say)"
    if path.exists():
        return (
            f"{path}: not a regular file (a pipe, as <(...) gives, or a device); write the "
            "events to a file and pass that"
        )
    return f"{path}: no such file; pass an events file (.jsonl, .csv, .gz)"


def not_gzip(path: Path) -> str:
    """What a file named .gz that is no gzip from its first byte is told."""
    return f"{path}: not gzip data: rename it without .gz if it is plain text"


class EventFile:
    """One file, read line by line; `position` (bytes of the file on disk read so far)
    drives the progress bar, for gzip too."""

    def __init__(
        self, path: Path, default_type: EventType | None = None, profiles: bool = False
    ) -> None:
        """`profiles`: the file of `--profiles` (said so when it is missing)."""
        if (unreadable := not_an_events_file(path, profiles)) is not None:
            raise NotAFileError(unreadable)
        self.path = path
        self.profiles = profiles
        self.source = str(path)
        """The file as given, named in its events (`FileEvent.source`)."""
        self.default_type = default_type
        self.size = path.stat().st_size
        self.is_csv = is_csv(path)
        self._raw: IO[bytes] | None = None
        self._whole: WholeLines | None = None
        self._lines_read = 0
        """Lines read, blank ones too, once all are (where a gzip file cut short ended)."""
        self.unreadable: list[int] = []
        """The first `NAMED_KEPT` numbers of the lines that were no JSON object."""
        self.unreadable_count = 0
        self.untyped: list[int] = []
        """The first `NAMED_KEPT` numbers of the JSON objects left out for naming no event
        type (none, or an unknown one, and none given for the file)."""
        self.untyped_count = 0
        self._untyped_why = ""
        """What is wrong with the first of them (the refusal of a file none of whose
        first lines names a type)."""
        self.until = math.inf
        """The end of the window read (`--to`, set by `history`): a line left out or
        refused that is dated from then on is not counted or named, as the events it
        holds are not replayed; one with no readable time is, whatever the window."""
        self.behind = 0
        """Lines dated over `BEHIND_S` before a line above them (read before `until`): the
        file is not in event-time order (`order_said`)."""
        self.first_behind: tuple[int, float, int, float] | None = None
        """The first of them: (its line, its time, the line above dated latest, its time)."""
        self.not_after = math.inf
        """The latest an event of this file may be dated: the history's first event, for
        the `--profiles` snapshot read before it (`history`); one dated later stops the
        read (`EventFileError`, the line and the fix)."""

    @property
    def position(self) -> int:
        raw = self._raw
        if raw is None:
            return 0
        return self.size if raw.closed else raw.tell()

    @property
    def cut(self) -> Cut | None:
        """Where the file's gzip data ended early or could not be read on, once read (the
        whole lines before it were read and count); None for a file read to its end."""
        return self._whole.cut(self._lines_read) if self._whole is not None else None

    def _lines(self) -> IO[bytes]:
        self._raw = self.path.open("rb")
        self._whole = None
        if gzipped(self.path):
            lines, self._whole = unzipped(self._raw, self.path)
            return lines
        return self._raw

    def __iter__(self) -> Iterator[FileEvent]:
        self.behind, self.first_behind = 0, None
        self.unreadable, self.unreadable_count = [], 0
        self.untyped, self.untyped_count, self._untyped_why = [], 0, ""
        with self._lines() as lines:
            try:
                if utf16 := utf16_said(self.path, cast(io.BufferedReader, lines).peek(4)[:4]):
                    raise EventFileError(utf16)
                yield from self._csv(lines) if self.is_csv else self._jsonl(lines)
            except gzip.BadGzipFile:  # before its first line: `WholeLines` says the rest
                raise EventFileError(not_gzip(self.path)) from None
            finally:
                if self._raw is not None:
                    self._raw.close()

    def _jsonl(self, lines: IO[bytes]) -> Iterator[FileEvent]:
        counted: list[int] = []
        objects = json_objects(lines, self.path, counted)
        if self.default_type is None:
            yield from self._head(objects)
        types = _TYPES
        not_after, until, profiles = self.not_after, self.until, self.profiles
        latest, above = 0.0, 0  # the latest time read before `until`, and its line
        for number, doc, line in objects:
            kind = doc.get("type")
            event_type = types.get(kind) if isinstance(kind, str) else None
            if event_type is None:  # the default type, or none (`--type`, a dead letter)
                event = self._slowly(number, doc, line)
                if event is None:
                    continue
                at = event.at  # `--type`: every line of a topic's records comes this way
            else:
                if profiles and event_type is not EventType.PROFILE:
                    raise self._not_a_profile(number, event_type)
                sub = doc.get("subscriber_id")
                key = sub.encode() if type(sub) is str else _key(sub)
                at = _epoch(doc.get("occurred_at"))
                if at > not_after:
                    raise self._after_history(number, at)
                # The line as written, as the stream takes it: an object written again
                # kept the last of a repeated key (`duplicate_key` on the stream).
                event = FileEvent(at, event_type, key, line, None, number, self.source)
            if at > latest:
                if at < until:
                    latest, above = at, number
            elif at < latest - BEHIND_S and at:
                self._behind(number, at, above, latest)
            yield event
        self._lines_read = counted[-1] if counted else 0

    def _head(self, objects: Iterator[tuple[int, dict[str, Any], bytes]]) -> Iterator[FileEvent]:
        """The lines up to the first with a valid `type`, of a file read without `--type`.
        A file none of whose first `READABLE_WITHIN` lines names a type but some are
        objects (records of one topic, as `kcat` prints them) is refused whole: `--type`
        is the fix; past that, a line without one is left out and counted."""
        seen = untyped = 0
        for seen, (number, doc, line) in enumerate(objects, 1):
            event = self._slowly(number, doc, line)
            if event is not None:
                yield event
                if doc is not UNREADABLE:
                    return
            else:
                untyped += 1
            if seen >= READABLE_WITHIN and untyped:
                break
        if untyped:
            raise self._no_types(seen)

    def _no_types(self, seen: int) -> MissingEventTypeError:
        return MissingEventTypeError(
            f"{self._untyped_why}; none of its first {seen} line(s) names a type (the "
            "records of one topic, as kcat prints them?)"
        )

    def _slowly(self, number: int, doc: dict[str, Any], line: bytes) -> FileEvent | None:
        """A line off the fast path: no JSON object (the stream's dead letter), one of a
        file of one type (`--type`), or one naming no event type (None: left out,
        counted)."""
        where = f"{self.path}:{number}"
        at = 0.0
        if doc is UNREADABLE:
            if line != b"null" or self.default_type is not None:
                return self._unreadable(number, line)
            # A profile deletion on the profile topic, a dead letter on the others: as
            # `events check` says, the line names no type; the topic would decide.
            why = f"{where}: {no_type_said(None)}"
        else:
            try:
                event = _event(doc, self.source, number, self.default_type, line)
            except MissingEventTypeError as exc:
                why = str(exc)
            else:
                if event.at > self.not_after:
                    raise self._after_history(number, event.at)
                return event
            at = _epoch(doc.get("occurred_at"))
        self._left_out(number, why, at)
        return None

    def _behind(self, number: int, at: float, above: int, latest: float) -> None:
        """Count a line dated over `BEHIND_S` before the line `above` it, dated `latest`."""
        self.behind += 1
        if self.first_behind is None:
            self.first_behind = (number, at, above, latest)

    def _not_a_profile(self, number: int, event_type: EventType) -> EventFileError:
        """An event of another type in the `--profiles` snapshot (the history's own file
        given there): it was told it is dated after the history's first event, or, dated
        before, applied as part of the snapshot."""
        return EventFileError(
            f"{self.path}:{number}: a {event_type.value} event in the --profiles snapshot, "
            "which holds profiles only (applied before the events): give this file with "
            "--events, and to --profiles the CRM's profiles"
        )

    def _after_history(self, number: int, at: float) -> EventFileError:
        """A `--profiles` line dated after the history's first event: read first, it moved
        event time on to its date, so the hours before went unswept (windows left open,
        special days not looked at), their tasks were decided at its time, and the
        report began there."""
        return EventFileError(
            f"{self.path}:{number}: dated {_utc(at)}, after the first event of the history "
            f"({_utc(self.not_after)}): --profiles is applied before the events, as the "
            "profiles when the history begins. Date the snapshot at or before its first "
            "event, or give the file with --events (merged by event time)"
        )

    def _left_out(self, number: int, why: str, at: float) -> None:
        """Count and name a line naming no event type, unless dated past the window."""
        self._untyped_why = self._untyped_why or why
        if at >= self.until:
            return
        self.untyped_count += 1
        if len(self.untyped) < NAMED_KEPT:
            self.untyped.append(number)

    def _unreadable(self, number: int, line: bytes) -> FileEvent:
        """A line that is no JSON object, as the value the stream would dead-letter: on the
        topic of the type its top-level object still names (not a nested object's), else
        of the file's default type, else usage (the stream's verdict on bytes that are no
        JSON is the same on every topic); at the time it still names, if any, so that the
        window (`--to`) places it as the events around it. One with no readable time
        cannot be placed: it is counted and named whatever the window (at 0, which the
        merge of files passes on where it stands in its own file)."""
        at = _epoch(_named(line, "occurred_at"))
        if at < self.until:
            self.unreadable_count += 1
            if len(self.unreadable) < NAMED_KEPT:
                self.unreadable.append(number)
        event_type = _TYPES.get(_named(line, "type") or "")
        kind = event_type or self.default_type or EventType.USAGE
        return FileEvent(at, kind, b"", line, None, number, self.source)

    def _csv(self, lines: IO[bytes]) -> Iterator[FileEvent]:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which made the
        # first column "\ufefftype" and the file "without a type column".
        text = io.TextIOWrapper(lines, encoding="utf-8-sig", newline="")
        csv.field_size_limit(max(csv.field_size_limit(), 2 * MAX_MESSAGE_BYTES))
        begun = 1  # the line the row read begins on (the reader's count is off when it fails)
        try:
            head = text.readline()
            if head.lstrip().startswith("{"):  # told of a quote not closed, or `add a type`
                raise EventFileError(
                    f"{self.path}:1: a JSON object, not a CSV header row: JSON lines named "
                    ".csv; name the file .jsonl (.jsonl.gz when gzip)"
                )
            # strict: a quote opened and never closed (`49.90"` typed as `"49.90`) took
            # every line after it into one cell, and those rows were gone without a word.
            # skipinitialspace: a header written `type, subscriber_id` named a column
            # " subscriber_id", and every row was refused for a missing subscriber_id.
            # A spreadsheet set to a European locale saves `;` between cells (a tab-separated
            # export, tabs): read as one column, it was told to "add a `type` column".
            delimiter = ","
            if "," not in head:
                with contextlib.suppress(csv.Error):
                    delimiter = csv.Sniffer().sniff(head, delimiters=";\t").delimiter
            reader = csv.DictReader(
                itertools.chain([head], text),
                strict=True,
                skipinitialspace=True,
                delimiter=delimiter,
            )
            if reader.fieldnames is None:
                return
            reader.fieldnames = _header(reader.fieldnames, self.path)
            if "type" not in reader.fieldnames and self.default_type is None:
                raise MissingEventTypeError(f"{self.path}:1: add a `type` column (one of {TYPES})")
            typed, untyped = False, 0
            latest, above = 0.0, 0  # the latest time read before `until`, and its line
            begun = reader.line_num + 1
            for row in reader:
                # The line this row begins on: a quoted cell may hold line breaks, and the
                # reader's count is where the row ends (a blank line before it is skipped).
                line, begun = reader.line_num - _breaks(row.values()), reader.line_num + 1
                kind = row.get("type")
                event_type = _TYPES.get(kind) if kind else self.default_type
                numeric = NUMERIC_FIELDS[event_type] if event_type else frozenset()
                doc = {
                    k: _cell(v, k in numeric) for k, v in row.items() if k and v not in (None, "")
                }
                needed = REQUIRED_FIELDS[event_type] if event_type else frozenset()
                blank = tuple(k for k, v in row.items() if v == "" and k in needed)
                try:
                    event = _event(doc, self.source, line, self.default_type)
                except MissingEventTypeError as exc:  # an empty or unknown `type` cell
                    self._left_out(line, str(exc), _epoch(doc.get("occurred_at")))
                    untyped += 1
                    first = not typed and self.default_type is None  # all rows so far
                    if first and untyped >= READABLE_WITHIN:
                        raise self._no_types(untyped) from None
                    continue
                typed = True
                if self.profiles and event.event_type is not EventType.PROFILE:
                    raise self._not_a_profile(line, event.event_type)
                # A ragged row: DictReader keys the cells past the header's None (a list),
                # and gives None to the columns past a short row's last cell (restval).
                cells = (0, 0)
                if None in row or None in row.values():
                    extra = row.pop(None, [])
                    cells = (sum(v is not None for v in row.values()) + len(extra), len(row))
                if blank or cells[0] != cells[1]:
                    event = event._replace(blank=Blank(f"{self.path}:{line}", blank, cells))
                at = event.at
                if at > self.not_after:
                    raise self._after_history(line, at)
                if at > latest:
                    if at < self.until:
                        latest, above = at, line
                elif at < latest - BEHIND_S and at:
                    self._behind(line, at, above, latest)
                yield event
            self._lines_read = reader.line_num
            if not typed and untyped and self.default_type is None:
                raise self._no_types(untyped)
        except csv.Error as exc:  # tracebacks before
            fix = (
                "keep cells under 128 KiB, and close the quotes a cell opens"
                if "field limit" in str(exc)
                else "a quote opened in it is not closed as CSV closes one"
            )
            raise EventFileError(
                f"{self.path}:{begun}: cannot read the CSV row that begins here ({exc}): "
                f"{fix}; a cell holding a quote is written in quotes, its quotes doubled "
                '(`"say ""hi"""`)'
            ) from None
        except UnicodeDecodeError as exc:
            line = self._not_utf8()
            raise EventFileError(
                f"{self.path}{f':{line}' if line else ''}: not UTF-8 text (byte "
                f"0x{exc.object[exc.start]:02x} is not UTF-8): save the CSV as UTF-8"
            ) from None

    def _not_utf8(self) -> int:
        """The first line that is not UTF-8 (0: none found): the text reader decodes the
        file a block ahead of the CSV reader, whose count said `near line 1` of a byte on
        line 60."""
        with self.path.open("rb") as raw:
            lines = unzipped(raw, self.path)[0] if gzipped(self.path) else raw
            for number, line in enumerate(lines, 1):
                try:
                    line.decode()
                except UnicodeDecodeError:
                    return number
        return 0


def _breaks(cells: Iterable[Any]) -> int:
    """The line breaks inside a CSV row's cells (`\r\n`, `\n` or `\r`, as the text
    reader ends lines), the cells past the header's in a list."""
    count = 0
    for cell in cells:
        for text in cell if isinstance(cell, list) else (cell,):
            if isinstance(text, str) and ("\n" in text or "\r" in text):
                count += text.count("\n") + text.count("\r") - text.count("\r\n")
    return count


def _utc(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


def merged(files: Iterable[EventFile]) -> Iterator[FileEvent]:
    """The events of several files in event-time order (each file read in its own order:
    write files sorted by time, as the stream would have received them); one file's as it
    reads them, without a merge to pass each through."""
    each = list(files)
    if len(each) == 1:
        return iter(each[0])
    return heapq.merge(*each, key=_at)


def _at(event: FileEvent) -> float:
    return event.at


class CountedEventFile(EventFile):
    """An event file that counts the events read of it (`rules test` tells the events of
    its `--profiles` snapshot from those of `--events` by it)."""

    count = 0

    def __iter__(self) -> Iterator[FileEvent]:
        self.count = 0
        for event in super().__iter__():
            self.count += 1
            yield event


@dataclass
class Window:
    """What `history` kept of the `--events` files (not the `--profiles` snapshot) and
    what it left out for being dated from `--to` on, with the dates of those: a report
    whose period holds no event says how many the files hold and when they are."""

    kept: int = 0
    left_out: int = 0
    first_left_out: float = math.inf
    last_left_out: float = -math.inf

    def leave_out(self, at: float) -> None:
        self.left_out += 1
        self.first_left_out = min(self.first_left_out, at)
        self.last_left_out = max(self.last_left_out, at)


def history(
    files: list[EventFile],
    profiles_first: bool,
    until: float = float("inf"),
    window: Window | None = None,
) -> Iterator[FileEvent]:
    """The events of `files` in event-time order, those dated before `until`; with
    `profiles_first`, the first file (the CRM snapshot of `--profiles`) whole before the
    others, as the subscribers' profiles are when the history begins: none may be dated
    after the others' first event (`EventFile.not_after`), and each is placed at it (its
    value keeps its own time). Placed at their own, a snapshot dated when each profile
    last changed (years back) began event time there: the backtest swept every hour
    since, greeted every birthday of those years, and reported thousands of days. With
    no event at all (profiles seeded alone), the snapshot is placed at its latest date,
    the time it is as of (read twice: once for that date). A file given twice is refused
    (`EventFileError`): its events were replayed twice, every sum and count doubled.
    `window`: where the events kept and those left out from `until` on are counted."""
    seen: dict[Path, Path] = {}
    for file in files:
        if (twice := seen.setdefault(file.path.resolve(), file.path)) is not file.path:
            raise EventFileError(
                f"{file.path}: given twice (as {twice} too): each file is read once; its "
                "events replayed twice doubled every series (spend, calls) the rules read"
            )
    rest = files[1:] if profiles_first else files
    for file in rest:
        file.until = until
    events = merged(rest)
    if profiles_first:
        # The history begins at its first event with a time: a line with none (junk, a
        # time that is no time: `at` 0) before it began it in 1970, so the snapshot was
        # placed at its own dates (years of hours swept, thousands of days reported).
        undated: list[FileEvent] = []
        head = next(events, None)
        while head is not None and not head.at:
            undated.append(head)
            head = next(events, None)
        if head is not None:
            start = head.at
            files[0].not_after = start
            events = itertools.chain(undated, [head], events)
        else:
            start = max((event.at for event in files[0]), default=0.0)
            events = iter(undated)
        if start:
            for event in files[0]:
                yield event._replace(at=start)
        else:
            yield from files[0]
    tally = window if window is not None else Window()
    if until == math.inf:  # no `--to`: every event, without a test of each
        for event in events:
            tally.kept += 1
            yield event
        return
    for event in events:
        if event.at < until:
            tally.kept += 1
            yield event
        else:
            tally.leave_out(event.at)


def unreadable_lines(files: Iterable[EventFile], kept: int = NAMED_KEPT) -> tuple[int, list[str]]:
    """How many lines of `files` were no JSON object (each dead-lettered as the stream
    would), and the first `kept` of them as `file:line`."""
    count, named = 0, []
    for f in files:
        count += f.unreadable_count
        named += [f"{f.path}:{n}" for n in f.unreadable]
    return count, named[:kept]


def untyped_lines(files: Iterable[EventFile], kept: int = NAMED_KEPT) -> tuple[int, list[str]]:
    """How many JSON objects of `files` were left out for naming no event type, and the
    first `kept` of them as `file:line`."""
    count, named = 0, []
    for f in files:
        count += f.untyped_count
        named += [f"{f.path}:{n}" for n in f.untyped]
    return count, named[:kept]


def order_said(files: Iterable[EventFile]) -> list[str]:
    """A warning per file read out of event-time order (`EventFile.behind`), naming its
    first line dated before one above it, and that one (a date far ahead of the lines
    after it is a line out of order too)."""
    out = []
    for f in files:
        if f.first_behind is None:
            continue
        line, at, above, latest = f.first_behind
        gap = latest - at
        span = f"{gap / 86400:,.1f} days" if gap >= 86400 else f"{gap / 3600:.1f} hours"
        out.append(
            f"{f.path}:{line}: dated {_utc(at)}, {span} before line {above} above it "
            f"({_utc(latest)}); {f.behind:,} line(s) of the file are dated over "
            f"{BEHIND_S / 3600:.0f} h before a line above them. The file is not in "
            "event-time order: it is replayed in its order with one event time for the "
            "whole history, which had run on past those lines (hours swept, tasks decided "
            "and released later than they were), so the figures are not the history's. "
            "Sort the file by occurred_at, or correct a date far ahead of the lines after it"
        )
    return out


def cuts_of(files: Iterable[EventFile]) -> list[Cut]:
    """Where each of `files` that ended early was cut (`EventFile.cut`), once read."""
    return [cut for f in files if (cut := f.cut) is not None]


def lines_named(count: int, named: Sequence[str]) -> str:
    """`a.jsonl:4, a.jsonl:9 and 3 more`: the lines named, and how many more there were."""
    more = f" and {count - len(named):,} more" if count > len(named) else ""
    return f"{', '.join(named)}{more}"


def untyped_note(count: int, named: list[str]) -> str | None:
    """The commands' line naming the lines left out for naming no event type, or None."""
    if not count:
        return None
    return f'{count:,} line(s) with no event type, left out (add their "type"): ' + lines_named(
        count, named
    )


def unreadable_note(count: int, named: list[str]) -> str | None:
    """The commands' line naming the lines that were no JSON object, or None."""
    if not count:
        return None
    return f"{count:,} line(s) no JSON object, refused as the stream refuses them: " + (
        lines_named(count, named)
    )


def progress_of(files: list[EventFile]) -> Callable[[], tuple[int, int]]:
    """(bytes read, bytes in all files)."""
    total = sum(f.size for f in files)
    return lambda: (sum(f.position for f in files), total)
