"""Checking event payloads before they are produced: would a worker take them?

For upstream teams: each line of a file is one record value, checked by the worker's own
`moments.decoding.decode` (so the verdict is the worker's, reason and message included),
keyed by its `subscriber_id` as a producer keyed by subscriber id would send it, and held
to the worker's clock check (an event dated further ahead of now than a worker takes is
`future`: 15 minutes, or MOMENTS_LATENESS_SECONDS when shorter, `refusals.allowed_ahead`). The
event type comes from `--type` or from the line's `type` field (as `moments simulate
--to-file` writes it; `task_outcome` too); a worker ignores that field, like any unknown one.

For dispatch consumers: `--type task_outcome` checks task outcomes the same way, by the
worker's `moments.outcomes.decode_outcome` and its clock check. What needs the worker's
ledger (`unknown_task`, `subscriber_mismatch`) is not checked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, NamedTuple

import orjson

from moments.decoding import (
    UTF8_BOM,
    decode,
    deletion_form,
    stream_json,
    utf16_form,
    whole_characters,
)
from moments.filenames import gzipped
from moments.models import EventType
from moments.records import OUTCOME_EVENT_TYPE, DeadLetter, RawRecord, RejectReason
from moments.refusals import LATENESS, allowed_ahead, too_far_ahead

DEFAULT_AHEAD_S = allowed_ahead(int(LATENESS.total_seconds()))
"""How far ahead of its clock a worker with the default MOMENTS_LATENESS_SECONDS takes an
event (seconds); `events check` passes its configuration's (`check_lines`)."""

NO_TYPE = "no_type"
"""The reason for a line whose event type is unknown (not a worker's reason: a worker
knows the type from the topic)."""

OUTCOME = OUTCOME_EVENT_TYPE
INVALID_JSON = RejectReason.INVALID_JSON.value
"""`--type task_outcome`: the lines are task outcomes (`moments.task-outcomes`)."""
_TYPES = {t.value: t for t in EventType}
_NOT_JSON = object()


class LineVerdict(NamedTuple):
    line: int
    event_type: str
    """The type the line was checked as; empty when none was known."""
    reason: str | None
    """None when a worker takes the line; else a dead-letter reason or `NO_TYPE`."""
    error: str = ""
    message: str = ""
    deletion: bool = False
    """A profile line a worker takes as a deletion (JSON `null`): it erases the subscriber
    its record key names, and warns that a null value is the form compaction removes."""


@dataclass
class CheckTally:
    """Lines checked, by event type, and the refused ones by type and reason."""

    checked: Counter[str] = field(default_factory=Counter)
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    deletions: int = 0
    """Profile lines taken as deletions (`LineVerdict.deletion`)."""

    def add(self, verdict: LineVerdict) -> None:
        self.checked[verdict.event_type] += 1
        self.deletions += verdict.deletion
        if verdict.reason is not None:
            self.refused[verdict.event_type, verdict.reason] += 1

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


def no_type_said(named: object, outcomes: bool = False) -> str:
    """What a line naming no event type is told (`named`: its `type` value, None when it
    has none or is `null`): the same words in `events check` and in the history readers
    of the backtest, `rules test` and `state seed` (`rulecheck.event_type_of`).
    `outcomes`: `task_outcome` is a type to give too (`events check`, not the readers)."""
    types = ", ".join(types_said(outcomes))
    if isinstance(named, str) and named and (meant := _type_meant(named, outcomes)):
        # `TopUp`, `top_up`: a line with a type, told to give one
        return (
            f"unknown type {named!r}; did you mean {meant!r}? Write it so, or give --type ({types})"
        )
    what = f"unknown type {named!r}" if named not in (None, "") else "no event type"
    return f'{what}: give --type ({types}) or a "type" field'


def _type_meant(named: str, outcomes: bool) -> str | None:
    """The type `named` is another spelling of (`TopUp`, `top_up`, `Usage`), or None."""
    from rules.hints import closest  # on this error's path only: it loads the rule language

    return closest(named, types_said(outcomes))


def types_said(outcomes: bool = False) -> list[str]:
    """The types a line may be given, by `--type` or its `type` field: the event types,
    and `task_outcome` where outcomes are read (`events check`)."""
    return [*_TYPES, OUTCOME] if outcomes else [*_TYPES]


STDIN = "-"
"""The name of standard input among the files (`moments events check -`)."""


def utf16_said(
    path: PurePath | str, head: bytes, jsonl: bool = False, piped: bool = False
) -> str | None:
    """What a file of UTF-16 text is told (None: it is none), from its first bytes: a
    byte-order mark (FF FE, FE FF: Excel's "Unicode Text", Notepad's "Unicode"), or ASCII
    with every other byte zero (saved without the mark). One test and one message for
    the history readers (`backtest`, `rules test`, `state seed`: as CSV it was told "not
    UTF-8 (byte 0xff)", as JSON lines a dump of its bytes and "no JSON lines file", and
    one without the mark "add a `type` column") and `events check` (every line refused
    as `invalid_json`, the encoding not named). `jsonl`: the reader takes JSON lines
    only (`events check`), so a `.txt` converts to a `.jsonl`, not a `.csv`; `path` "-"
    is standard input, and `piped` a named pipe (`<(kcat ...)`): no file to convert (it
    was told `iconv ... /dev/fd/63 > 63-utf8.jsonl`), converted on its way in."""
    if (form := utf16_form(head)) is None:
        return None
    how, encoding = form
    iconv = f"iconv -f {encoding} -t UTF-8"
    if str(path) == STDIN or piped:
        where = "on standard input" if str(path) == STDIN else "from a pipe"
        return (
            f"{path}: UTF-16 text {where} ({how}); events are read as UTF-8, and a worker "
            "refuses a UTF-16 record as invalid_json: a producer encodes the JSON text as "
            f"UTF-8; UTF-16 text is checked piped through `{iconv}` on its way in"
        )
    path = PurePath(path)
    stem = PurePath(path.stem) if gzipped(path) else path  # events.csv.gz: events.csv
    # JSON lines stay JSON lines; CSV, and a tab-separated .txt, become a .csv
    kind = ".jsonl" if jsonl or stem.suffix.lower() == ".jsonl" else ".csv"
    name = stem.stem
    if gzipped(path):
        convert = f"zcat {path} | {iconv} | gzip > {name}-utf8{kind}.gz"
    else:
        convert = f"{iconv} {path} > {name}-utf8{kind}"
    save = (
        "save it as UTF-8 (Notepad: Save As, Encoding UTF-8)"
        if kind == ".jsonl"
        else 'save it from Excel as "CSV UTF-8 (Comma delimited)"'
    )
    return (
        f'{path}: UTF-16 text ({how}), as Excel saves "Unicode Text" (Notepad, '
        f'"Unicode"); events files are read as UTF-8: {save}, or convert it: {convert}'
    )


_LONE_CR = re.compile(rb"\r(?!\n)")


def cr_only(line: bytes) -> bool:
    """Whether a line (as read, up to an LF) is lines ended by CR alone: a CR that ends
    no CRLF splits it into several non-blank pieces, the first a whole JSON value. Only
    asked of a refused line: a value a worker takes may hold a CR as whitespace."""
    pieces = [p for p in _LONE_CR.split(line.strip()) if p.strip()]
    if len(pieces) < 2:
        return False
    try:
        orjson.loads(pieces[0])
    except orjson.JSONDecodeError:
        return False
    return True


def cr_only_said(path: PurePath | str, piped: bool = False) -> str:
    """What a file of JSON lines ended by CR alone (`cr_only`) is told, with the way to
    convert it (`path` "-": standard input; `piped`: a named pipe, no file to convert).
    CSV files are read whatever their line endings."""
    tr = "tr '\\r' '\\n'"
    said = (
        "its lines end in CR alone (\\r, as old Mac OS text does), so they read as one "
        "line; JSON lines end in LF (\\n) or CRLF: "
    )
    if str(path) == STDIN or piped:
        return said + f"pipe them through `{tr}` on their way in"
    path = PurePath(path)
    if gzipped(path):
        name = PurePath(path.stem).stem
        return said + f"convert it: zcat {path} | {tr} | gzip > {name}-lf.jsonl.gz"
    return said + f"convert it: {tr} < {path} > {path.stem}-lf.jsonl"


def check_lines(
    lines: Iterable[bytes],
    event_type: EventType | None,
    now: float | None = None,
    file: bool = True,
    outcomes: bool = False,
    ahead_s: int = DEFAULT_AHEAD_S,
    path: str = STDIN,
    piped: bool = False,
) -> Iterator[LineVerdict]:
    """A verdict for each non-blank line, numbered from 1 (blank lines count); with
    `now` (epoch seconds), an event dated further ahead than a worker takes (`ahead_s`:
    `allowed_ahead` of the worker's MOMENTS_LATENESS_SECONDS) is `future`.
    A `file`'s byte-order mark is the file's, dropped as the backtest drops it; records
    piped from a topic (`kcat ... | moments events check -`) keep theirs, refused.
    `outcomes`: the lines are task outcomes (`event_type` is not read). A refused line
    of lines ended by CR alone (`cr_only`) is told so, with the fix for `path` (`piped`:
    a named pipe): it was told "more than one JSON value", the line endings not named."""
    for number, raw in enumerate(lines, 1):
        if file and number == 1 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM) :]
        value = raw.strip()
        if value:
            if outcomes:
                verdict = check_outcome(number, value, now, ahead_s)
            else:
                verdict = check_value(number, value, event_type, now, ahead_s)
            if verdict.reason == INVALID_JSON and cr_only(value):
                # The worker's "more than one JSON value: send each as a record of its
                # own" is true of the bytes, not of the file they came from.
                verdict = verdict._replace(message=cr_only_said(path, piped))
            yield verdict


def check_outcome(
    number: int, value: bytes, now: float | None = None, ahead_s: int = DEFAULT_AHEAD_S
) -> LineVerdict:
    """A task outcome's verdict as a worker reads it (`decode_outcome`, then its clock),
    keyed by its `subscriber_id`; not what needs the ledger (`unknown_task`,
    `subscriber_mismatch`)."""
    from moments.outcomes import decode_outcome  # with the dispatch sink: only when asked

    record = RawRecord(OUTCOME, 0, number, _key_of(value), value)
    result = decode_outcome(record)
    if not isinstance(result, DeadLetter) and now is not None:
        at = int(result.occurred_at.timestamp())
        if at > now + ahead_s:  # as `handle_outcomes` checks it
            result = too_far_ahead(record, OUTCOME, at, int(now), ahead_s)
    if isinstance(result, DeadLetter):
        return LineVerdict(number, OUTCOME, result.reason.value, result.error_class, result.message)
    return LineVerdict(number, OUTCOME, None)


def _key_of(value: bytes) -> bytes | None:
    """The key a consumer keying by subscriber id gives the value (None: it names none)."""
    doc = _as_read(value)
    sub = doc.get("subscriber_id") if isinstance(doc, dict) else None
    return str(sub).encode() if sub is not None else None


def _as_read(value: bytes) -> Any:
    """The JSON in `value` as far as its key and type go, or `_NOT_JSON`: orjson's reading,
    else the stream parser's (NaN, Infinity: `stream_json`), else with each lone surrogate
    escape read as U+FFFD (`whole_characters`, as an outcome's decoder reads a note cut in
    an emoji). The verdict is the worker's, on the bytes as they are; read by orjson alone,
    an outcome the worker takes was judged unkeyed (`missing_key`) or of no type."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        pass
    for form in (value, whole_characters(value)):
        if form is None:
            continue
        try:
            return stream_json(form)
        except ValueError:
            pass
    return _NOT_JSON


def check_value(
    number: int,
    value: bytes,
    event_type: EventType | None,
    now: float | None = None,
    ahead_s: int = DEFAULT_AHEAD_S,
) -> LineVerdict:
    doc = _as_read(value)  # NaN or Infinity: the worker's parser reads them, so its key
    # and type count; so do a lone surrogate's, which a task outcome's decoder reads
    if event_type is None and (doc is _NOT_JSON or not isinstance(doc, dict | None)):
        # A worker's verdict, the same for any type (`null` is a profile deletion)
        refused = decode(RawRecord("", 0, number, None, value), EventType.USAGE)
        if isinstance(refused, DeadLetter):
            return LineVerdict(
                number, "", refused.reason.value, refused.error_class, refused.message
            )
    if event_type is EventType.PROFILE and deletion_form(value) is not None:
        # JSON null: a deletion names its subscriber in the record key alone, which a line
        # has not; keyed as the contract asks (as every line is judged), a worker erases
        # that subscriber. It was refused here as `missing_key`, on bytes a worker took.
        return LineVerdict(number, event_type.value, None, deletion=True)
    if not isinstance(doc, dict):  # `decode` says what is wrong with it, as a worker would
        doc = {}
    if event_type is None:
        named = doc.get("type")
        if named == OUTCOME:  # as `--type task_outcome`: a worker ignores the field
            return check_outcome(number, value, now, ahead_s)
        event_type = _TYPES.get(named) if isinstance(named, str) else None
        if event_type is None:
            said = no_type_said(named, outcomes=True)
            return LineVerdict(number, "", NO_TYPE, "NoEventType", said)
    sub = doc.get("subscriber_id")
    key = str(sub).encode() if sub is not None else None
    record = RawRecord(event_type.value, 0, number, key, value)
    result = decode(record, event_type)
    if result is not None and not isinstance(result, DeadLetter) and now is not None:
        at = int(result.occurred_at.timestamp())
        if at > now + ahead_s:  # as the worker's clock check (moments.refusals)
            result = too_far_ahead(record, event_type, at, int(now), ahead_s)
    if isinstance(result, DeadLetter):
        return LineVerdict(
            number, event_type.value, result.reason.value, result.error_class, result.message
        )
    return LineVerdict(number, event_type.value, None)
