"""`moments rules test`: run rules over event files offline and say what fires and why.

The same engine as the stream (`run_pipeline`), with event time as the clock: no
broker, no Redis.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from moments.decoding import UTF8_BOM, stream_json
from moments.eventcheck import cr_only, cr_only_said, no_type_said
from moments.exceptions import MomentsError
from moments.filenames import gzipped, is_csv
from moments.models import EventType, Family, ServiceTask
from moments.pii import mask_msisdn
from moments.pipeline import PipelineResult, run_pipeline
from moments.records import RawRecord
from moments.shadow import by_rule
from rules.catalog import RuleSet
from rules.hints import known_fields

TYPES = ", ".join(t.value for t in EventType)


class EventFileError(MomentsError):
    """A line of an events file that cannot be read; names the file and line."""


class NotAFileError(EventFileError):
    """A path given as an events file that is not a file to read (missing, a folder, a
    pipe): the command could not run as set up, exit 2 as a bad option; a line that
    cannot be read is the input found wanting, exit 1."""


class MissingEventTypeError(EventFileError):
    """A line with no event type, and none given for the file."""


READABLE_WITHIN = 20
"""A JSON lines file has a JSON object among its first this many non-blank lines: one
that has none (a CSV named .jsonl, a binary file) is refused whole, not read as that
many dead letters."""

UNREADABLE: dict[str, Any] = {}
"""What `json_objects` yields for a line that is no JSON object (never changed)."""


def json_objects(
    lines: Iterable[bytes], path: Path, counted: list[int] | None = None
) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    """(line number, object, line) for each non-blank line, the line as written (stripped):
    the event's value, as a producer would send it, is the line itself, never the object
    written again (which kept the last of a repeated key, so a line the stream refuses as
    `duplicate_key` was applied, and wrote `1.50` as `1.5`). The object is read by orjson,
    or by the stream's parser when only that reads it (NaN or Infinity: `stream_json`);
    it is `UNREADABLE` when the line is no JSON object (a cut line, a trailing comma,
    binary junk, an array), and the stream's `decode` dead-letters the line as it would
    the record (`invalid_json`...).
    A file with no JSON object among its first `READABLE_WITHIN` non-blank lines raises
    `EventFileError` (it is no JSON lines file). A byte-order mark starting the file is
    dropped (`UTF8_BOM`). `counted` gets the number of lines read, blank ones included,
    once all are (where a gzip file cut short ended)."""
    numbered = enumerate(lines, 1)
    number = 0
    held: list[tuple[int, dict[str, Any], bytes]] = []
    for number, line in numbered:  # up to the first object: is it JSON lines at all?
        if number == 1 and line.startswith(UTF8_BOM):
            line = line[len(UTF8_BOM) :]
        stripped = line.strip()
        if not stripped:
            continue
        doc = _object(stripped)
        held.append((number, doc, stripped))
        if doc is not UNREADABLE:
            yield from held
            break
        if len(held) >= READABLE_WITHIN:
            raise EventFileError(_no_json_lines(path, held))
    else:
        if held:
            raise EventFileError(_no_json_lines(path, held))
        if counted is not None:
            counted.append(number)
        return
    for number, line in numbered:  # the rest, as fast as orjson reads
        stripped = line.strip()
        if not stripped:
            continue
        try:
            doc = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            doc = _object(stripped)
        else:
            if type(doc) is not dict:
                doc = UNREADABLE
        yield number, doc, stripped
    if counted is not None:
        counted.append(number)


def _object(line: bytes) -> dict[str, Any]:
    """The object of one (stripped) line, slowly: `UNREADABLE` when it is no JSON object."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            doc = stream_json(line)  # NaN or Infinity, if the stream's parser reads it
        except ValueError:
            return UNREADABLE
    return doc if type(doc) is dict else UNREADABLE


def _no_json_lines(path: Path, held: list[tuple[int, dict[str, Any], bytes]]) -> str:
    first = held[0][2]
    if cr_only(first):  # "unexpected content after document", the line endings not named
        return f"{path}: {cr_only_said(path, piped=not path.is_file())}"
    if (one := _one_document(path, first)) is not None:
        return one
    if path.suffix.lower() in (".yaml", ".yml"):  # a rules file or a policy, in its place
        return (
            f"{path}: a YAML file (rules or a dispatch policy?), not events: give rules to "
            "--rules (`rules test` takes them as its PATH) and a policy to --policy; "
            "--events takes the history, JSON lines or CSV"
        )
    try:
        orjson.loads(first)
        why = "JSON, but no object"
    except orjson.JSONDecodeError as exc:
        why = f"not JSON: {exc}"
    return (
        f"{path}: none of its first {len(held)} line(s) is a JSON object (line {held[0][0]}, "
        f"{first[:40]!r}: {why}); it is no JSON lines file: name a CSV file .csv, a gzip "
        "file .gz, or export the events as JSON lines (`moments events check "
        f"{path}` gives each line's verdict)"
    )


def one_document_said(path: Path) -> str | None:
    """`_one_document` of a file by its first non-blank line (`events check`, which judges
    each line and so refused every line of a JSON array without naming the file's form);
    None for any other file, or one that cannot be read."""
    import gzip

    if not path.is_file():  # a named pipe was read once, and would wait for more
        return None
    try:
        with gzip.open(path) if gzipped(path) else path.open("rb") as lines:
            first = next((line.strip() for line in lines if line.strip()), b"")
    except (OSError, EOFError):
        return None
    return _one_document(path, first) if first else None


def _one_document(path: Path, first: bytes) -> str | None:
    """What a JSON export of one array (`[{...}, ...]`) or of pretty-printed objects is
    told, with the command that writes it as JSON lines; None for any other file."""
    if first.startswith(b"["):
        what, jq = "a JSON array", "jq -c '.[]'"
    elif first == b"{":
        what, jq = "pretty-printed JSON", "jq -c ."
    else:
        return None
    unzipped = Path(str(path)[:-3]) if gzipped(path) else path
    out = unzipped.with_suffix(".jsonl")
    command = f"zcat {path} | {jq} > {out}" if gzipped(path) else f"{jq} {path} > {out}"
    return (
        f"{path}: {what}, not JSON lines (one event object a line): write it so, e.g. `{command}`"
    )


def event_type_of(doc: dict[str, Any], where: str, default_type: EventType | None) -> EventType:
    """The event's `type` field, removed from `doc` (or `default_type` when it has none);
    `MissingEventTypeError` in the words `events check` uses (`no_type_said`)."""
    named = doc.pop("type", None)
    kind = named or (default_type.value if default_type else None)
    try:
        return EventType(str(kind))
    except ValueError:
        raise MissingEventTypeError(f"{where}: {no_type_said(named)}") from None


def check_rules(
    rules: RuleSet,
    events: Path,
    profiles: Path | None = None,
    until: Any = None,
    event_type: EventType | None = None,
    progress: Callable[[int, int], None] | None = None,
    sweeping: Callable[[int], None] | None = None,
) -> PipelineResult:
    """The rules over event files (JSON lines or CSV, .gz too, read as the backtest reads
    them), in event-time order; `event_type` is that of the lines of `events` without a
    `type` (a topic's records carry none). `profiles`: the snapshot when the history
    begins, read as the backtest and `state seed` read it (`history`): applied at the first
    event, none dated after it. `progress(done, total)`: the events run through the rules
    so far, after each batch; `sweeping(at)`: where event time ran on to, after them, at
    each sweep of a far `until` (`run_pipeline`)."""
    from moments.backtest_input import (
        Blank,
        CountedEventFile,
        EventFile,
        blank_said,
        cuts_of,
        history,
        in_file_order,
        order_said,
        ragged_refused,
        unreadable_lines,
        untyped_lines,
    )

    files = [EventFile(events, event_type)]
    snapshot_file = None
    if profiles is not None:
        snapshot_file = CountedEventFile(profiles, EventType.PROFILE, profiles=True)
        files.insert(0, snapshot_file)
    lines: dict[str, list[int]] = {}
    """The file's line of each record, by topic and offset (the offset counts a topic's
    records: `topup #4` named no line of the file)."""
    records = []
    blanks: dict[tuple[str, int], Blank] = {}
    begins = None
    first = latest = 0.0
    for event in history(files, profiles is not None):
        if begins is None:
            begins = event.at  # the first event's time, where the snapshot is placed
        if not first:
            first = event.at  # a line with no time (0) begins nothing
        latest = max(latest, event.at)
        topic = event.event_type.value
        topic_lines = lines.setdefault(topic, [])
        offset = len(topic_lines)
        topic_lines.append(event.line)
        records.append(RawRecord(topic, 0, offset, event.key or None, event.value))
        if event.blank is not None:
            blanks[(topic, offset)] = event.blank
    snapshot = begins if profiles is not None else None
    total = len(records)
    taken, ragged = ragged_refused(records, blanks)
    result = run_pipeline(
        taken,
        rules,
        now=None,
        until=until,
        begins=snapshot,
        progress=(lambda done: progress(done, total)) if progress is not None else None,
        sweeping=sweeping,
    )
    result.dead_letters = in_file_order(records, result.dead_letters, ragged)
    if blanks:  # a CSV row's blank cells, or a ragged row, told as such with their line
        result.dead_letters = [
            dataclasses.replace(dl, message=blank_said(dl.message, blank))
            if (blank := blanks.get((dl.record.topic, dl.record.offset))) is not None
            else dl
            for dl in result.dead_letters
        ]
    result.unreadable_count, result.unreadable = unreadable_lines(files)
    result.untyped_count, result.untyped = untyped_lines(files)
    result.cuts = cuts_of(files)
    # The snapshot of --profiles is applied whole at the start, in no time order.
    result.out_of_order = order_said(files[1:] if profiles is not None else files)
    result.last_event = latest
    result.first_event = first
    # The snapshot is read whole before the events (`history`): its records come first.
    placed = snapshot_file.count if snapshot_file is not None else 0

    def where(record: RawRecord) -> str:
        snapshot = profiles is not None and record.topic == "profile" and record.offset < placed
        return f"{profiles if snapshot else events}:{lines[record.topic][record.offset]}"

    result.refused_at = [where(dl.record) for dl in result.dead_letters]
    ours = {(r.topic, r.offset) for r in records[placed:]}
    result.events_read, result.profiles_read = total - placed, placed
    result.events_refused = sum(
        (dl.record.topic, dl.record.offset) in ours for dl in result.dead_letters
    )
    return result


def nothing_evaluated(result: PipelineResult, events: Path) -> str | None:
    """Why a `rules test` run tested nothing, or None when it tested something: every
    event of the file was refused (a run that exited 0 having judged no event passed a
    CI job whose cases were all malformed), or no event was read at all, none of the
    `--profiles` snapshot either."""
    refused = result.events_refused
    if result.events_read and refused == result.events_read:
        said = f"nothing was tested: each of the {refused} event(s) of {events} was refused "
        if is_csv(events):  # `events check` reads JSON lines only, and refuses a CSV file
            return (
                f"{said}(reasons above, by row), so no rule was run on any; fix the rows and "
                "run it again"
            )
        return (
            f"{said}(reasons above), so no rule was run on any; fix the events (`moments events "
            f"check {events}` names what is wrong with each line) and run it again"
        )
    if not result.events_read and len(result.dead_letters) == result.profiles_read:
        return (
            f"nothing was tested: {events} holds no event (an empty file?), so no rule "
            "was run; give a file of events, one JSON object (or CSV row) each"
        )
    return None


def _event_id(record: RawRecord) -> str:
    """` (event_id X)` of a refused event that names one: the id can be searched for."""
    try:
        doc = orjson.loads(record.value) if record.value is not None else None
    except orjson.JSONDecodeError:
        return ""
    named = doc.get("event_id") if isinstance(doc, dict) else None
    return f" (event_id {named})" if isinstance(named, str) and named else ""


def _value(value: object) -> str:
    """A param as the description shows it: a threshold written `lt: 10` is read as 10.0,
    and the line said `balance_after_lt=10.0` beside a description saying "below 10"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe_task(task: ServiceTask, mask: bool = True) -> str:
    """One line: when, who, which rule, the values that made it fire, and the task; and
    when the do-not-disturb gates hold it back (quiet hours, a suspended line), until when
    and why, which the line left out: a do-not-disturb rule could not be tested with it."""
    sub = mask_msisdn(task.subscriber_id) if mask else task.subscriber_id
    why = ", ".join(f"{k}={_value(v)}" for k, v in task.moment.params.items())
    held = ""
    if task.deferred is not None:
        until = task.deferred.until.astimezone(task.triggered_at.tzinfo)
        held = f" [held until {until.isoformat()}: {task.deferred.reason}]"
    return (
        f"{task.triggered_at.isoformat()} {sub} {task.moment.rule_id} -> "
        f"{task.moment.type} ({task.channel.value}, priority {task.priority}) "
        f"because {why or 'the event matched'}: {task.moment.description}{held}"
    )


def summary(result: PipelineResult, rules: RuleSet | None = None, until: Any = None) -> list[str]:
    lines = [f"{len(result.tasks)} task(s)"]
    made = Counter(t.moment.rule_id for t in result.tasks)
    for rule, n in made.most_common():
        lines.append(f"  {rule}: {n}")
    # A live rule that made nothing is listed too: else it reads as one never loaded.
    if rules is not None:
        for compiled in rules.rules:
            if not compiled.shadow and compiled.id not in made:
                lines.append(f"  {compiled.id}: 0{_history_needed(compiled, rules)}")
    if result.suppressed:
        held = sum(result.suppressed.values())
        lines.append(f"{held} moment(s) dropped by the gates, no task:")
        for (moment_type, reason), n in sorted(result.suppressed.items()):
            lines.append(f"  {moment_type}: {n} {reason}")
    shadows = [r.id for r in rules.shadows] if rules is not None else []
    if shadows:
        counted = by_rule(result.shadow)
        lines.append(f"{len(shadows)} shadow rule(s), no task made (--shadow-as-live shows them):")
        for rule_id in shadows:
            found = counted.get(rule_id)
            lines.append(f"  {rule_id}: {found.describe() if found else 'no moment'}")
    # Live ones only: a shadow rule makes no task however far event time runs.
    special = [
        r.id
        for r in (rules.rules if rules else ())
        if r.task.family is Family.SPECIAL_DAY and r.id not in shadows
    ]
    if rules is not None and until is None and special and not set(made) & set(special):
        if result.watermark:
            ran = dt.datetime.fromtimestamp(result.watermark, rules.gating.zone)
            where = f"event time ran to {ran:%Y-%m-%d %H:%M} ({rules.gating.timezone})"
        elif result.dead_letters:  # it said "no event was read" of events all refused
            where = "no event was applied (each was refused: see below), so event time did not run"
        else:  # it said 1970-01-01 08:00
            where = "no event was read, so event time did not run"
        lines.append(
            f"no task of the special-day rule(s) {', '.join(special)}: {where}, and a special "
            f"day is looked at when it passes {rules.special.local_hour:02d}:00 local: no "
            "occasion of theirs was due on the days it passed; pass --to with a later time "
            "to look at more days"
        )
    if result.dead_letters:
        lines.append(f"{len(result.dead_letters)} event(s) refused:")
        for n, dl in enumerate(result.dead_letters[:20]):
            # Records run with no file (`run_pipeline`) are named by their count per type.
            at = result.refused_at[n] if n < len(result.refused_at) else None
            named = f"{at}: {dl.event_type}" if at else f"{dl.event_type} #{dl.record.offset + 1}"
            lines.append(f"  {named}{_event_id(dl.record)}: {dl.message}")
        from moments.backtest_input import unreadable_note

        if note := unreadable_note(result.unreadable_count, result.unreadable):
            lines.append(note)
    from moments.backtest_input import untyped_note

    if note := untyped_note(result.untyped_count, result.untyped):
        lines.append(note)
    return lines


PERIODS = {"day": "days", "week": "weeks", "month": "months"}


PERIOD_DAYS = {"day": 1, "week": 7, "month": 31}
"""The longest a window of each period lasts, in days."""


@dataclasses.dataclass(frozen=True)
class BaselineNeed:
    """What a rule's baseline reads of a subscriber's past: `windows` earlier windows of
    `series`, each a `period`."""

    windows: int
    period: str
    series: str

    def said(self) -> str:
        """`its baseline is 7 earlier days of topup_day`."""
        return (
            f"its baseline is {self.windows} earlier "
            f"{PERIODS.get(self.period, self.period)} of {self.series}"
        )

    def days(self) -> int:
        """The history a first judgement needs at least, in days: the windows averaged,
        whole ones after the one the subscriber's history in the series began in (partial,
        not counted), and that first one."""
        return (self.windows + 1) * PERIOD_DAYS.get(self.period, 1)


def baseline_need(rule: Any, rules: RuleSet) -> BaselineNeed | None:
    """The past a rule that compares with the subscriber's own (`baseline:`) reads, which
    a short history cannot show; None for another rule."""
    from rules.spec import BaselineCond, walk_at

    spec = getattr(rule, "spec", None)
    if spec is None:
        return None
    for _, node in walk_at(spec.condition):
        if isinstance(node, BaselineCond) and (series := rules.series.get(node.baseline)):
            return BaselineNeed(node.windows, series.period, node.baseline)
    return None


def _history_needed(rule: Any, rules: RuleSet) -> str:
    """` (its baseline is 7 earlier days of topup_day: ...)` for a rule that compares with
    the subscriber's own past, which a short test history cannot show; else empty."""
    need = baseline_need(rule, rules)
    if need is None:
        return ""
    return f" ({need.said()}: a subscriber with less history makes none)"


REFUSED = "refused"
"""The name `--expect` gives the count of refused events."""


def parse_expectation(text: str) -> tuple[str, int]:
    """`RULE=N` (or `refused=N`) as given to `rules test --expect`."""
    name, sep, count = text.partition("=")
    if not sep or not name or not count.isdigit():
        raise ValueError(
            f"--expect {text!r}: write RULE_ID=COUNT, e.g. --expect low_balance=2 "
            f"(or {REFUSED}=0 for the events refused)"
        )
    return name, int(count)


def parse_expectations(texts: Iterable[str]) -> dict[str, int]:
    """Every `--expect` of `rules test`; a rule given two counts is refused (ValueError):
    the last one was kept and the first dropped without a word, so a test file's
    `--expect low_balance=1 ... --expect low_balance=2` passed on 2 tasks."""
    expected: dict[str, int] = {}
    for text in texts:
        name, count = parse_expectation(text)
        if expected.get(name, count) != count:
            raise ValueError(
                f"--expect names {name} twice, {expected[name]} and {count}: give it one count"
            )
        expected[name] = count
    return expected


def check_expectations(
    result: PipelineResult, rules: RuleSet, expected: dict[str, int]
) -> list[str]:
    """What `rules test --expect` found wrong, one line each (none: all as expected).
    With any expectation, refused events are wrong unless `refused=N` says how many."""
    known = {r.id for r in rules.rules}
    got = Counter(t.moment.rule_id for t in result.tasks)
    wrong = []
    for name, count in expected.items():
        if name == REFUSED:
            continue
        if name not in known:
            wrong.append(f"{name}: no such rule in these rules{known_fields(name, known)}")
        elif got[name] != count:
            said = f"{name}: expected {count} task(s), got {got[name]}"
            wrong.append(said + _held(result, name, rules))
    refused = len(result.dead_letters)
    if refused != expected.get(REFUSED, 0):
        allowed = expected.get(REFUSED, 0)
        wrong.append(f"{REFUSED}: expected {allowed} event(s) refused, got {refused}")
    return wrong


def _held(result: PipelineResult, rule_id: str, rules: RuleSet) -> str:
    """What the gates did with the rule's moments (by its moment type), if anything."""
    rule = next(r for r in rules.rules if r.id == rule_id)
    if rule.shadow:
        return " (it is in mode: shadow, which makes no task; add --shadow-as-live)"
    moment_type = rule.task.moment_type
    held = sorted((why, n) for (t, why), n in result.suppressed.items() if t == moment_type)
    if not held:
        return ""
    return " (the gates dropped " + ", ".join(f"{n} as {why}" for why, n in held) + ")"
