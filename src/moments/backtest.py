"""`moments backtest`: replay history through the rules and the dispatch policy, offline.

One code path with the stream: the same `Detector` (engine) over the events in event
time, and the same `TaskSink` deciding dedup, declines, relevance, merge, deferral,
contact cap, capacity and overflow, over in-memory stores (sinks.memory) whose clock
is the event time. Events are cut into slices of at most `tick_s` of event time for
the detector; the sink then takes the slice's tasks one by one at their trigger time,
with the facts of events up to it; waiting tasks are released each at its own time as
event time moves on, and silent subscribers' windows close when event time enters a
new hour (the stream's sweep, over the records due then: moments.backtest_state).
No broker, no Redis. See docs/backtest.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from moments.backtest_input import (
    NAMED_KEPT,
    Blank,
    Cut,
    FileEvent,
    Window,
    blank_kind,
    blank_said,
    in_file_order,
    ragged_refused,
)
from moments.backtest_state import BacktestState
from moments.batchresult import (
    BatchResult,
    give_back_cooldowns,
    made_after,
    take_over_cooldowns,
)
from moments.engine import Detector, StateLoader
from moments.eventclock import SWEEP_BUCKET_S
from moments.exceptions import ConfigError
from moments.models import EventType, InputEvent, ServiceTask
from moments.records import OUT_OF_TIME, RawRecord, SuppressReason
from moments.runon import run_on_refusal
from moments.runtime import record_batch
from moments.store import StateStore
from moments.sweep import sweep
from rules import spec as sp
from rules.catalog import RuleSet
from rules.conditions import waits_for_history
from rules.durations import parse_duration
from sinks.base import Headers
from sinks.cooldowns import CollectedCooldownReturns
from sinks.dispatch import TaskSink
from sinks.memory import MemoryDeferrals, MemoryLedger, MemorySlots, memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from sinks.retry import unretried
from sinks.stores import SlotKey
from sinks.withdrawals import (
    WITHDRAWALS_TOPIC,
    ProfileChange,
    changes_by_fact,
    profile_changes,
)

TASKS_TOPIC = "moments.tasks"
RETURNS_TOPIC = "cooldown-returns"
"""The backtest's stand-in for the worker's internal topic of cooldown returns."""
TICK_S = 60.0
"""Event time per detector slice. Decisions do not wait for the slice's end (each task
is decided at its trigger time), so this only trades batch overhead for memory."""
BATCH_SIZE = 5000
LEDGER_TTL_S = 400 * 86400


class EventTime:
    """The sink's clock in a backtest: the latest event time processed."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, to: float) -> None:
        self.now = max(self.now, to)


@dataclass(frozen=True, slots=True)
class Published:
    at: float
    """Event time the sink published it."""
    payload: bytes


class CollectingProducer:
    """The sink's producer in a backtest: keeps each task with the event time it went, and
    apart from them each withdrawal (`moments.task-withdrawals`)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.sent: list[Published] = []
        self.withdrawn: list[Published] = []

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        if value is not None:
            kept = self.withdrawn if topic == WITHDRAWALS_TOPIC else self.sent
            kept.append(Published(self.clock(), value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def settling_period(rules: RuleSet) -> tuple[float, str]:
    """The longest span a task of these rules holds back later ones for (a cooldown, the
    frequency cap's period), in seconds, and what it is: a warm-up shorter than it
    leaves the first report days with caps and cooldowns a longer history would have
    filled, and with first-time moments it would have spent."""
    spans = [
        (r.task.cooldown.total_seconds(), f"{r.id}'s cooldown")
        for r in rules.rules
        if r.task.cooldown
    ]
    cap = rules.gating.frequency_cap
    if cap is not None:
        spans.append((cap.span.total_seconds(), "the frequency cap's period"))
    return max(spans, default=(0.0, "nothing"))


PERIOD_S = {"day": 86400.0, "week": 7 * 86400.0, "month": 31 * 86400.0}
"""A series window's longest span (a month: 31 days), for how much history fills one."""


@dataclass(frozen=True)
class Memory:
    """How far back a rule reads a subscriber's history, and what a warm-up shorter than
    that leaves out of its first live days."""

    seconds: float
    what: str
    leaves: str
    """What the first live days hold or lack for it, a clause (`they include ...`)."""


DAY_S = 86400.0
_BEGUN = ", judged at a %s's close after the one the history began in"
"""What a close-time test that waits for the history needs beyond its windows
(`longest_memory`)."""


def longest_memory(rules: RuleSet) -> Memory:
    """The rules' longest memory: first-time look-backs, baselines and series or shares.
    What a cut-over's warm-up (`--live-from`) settles. Cooldowns and the frequency cap do
    not count: its moments are all shadow ones, which take no contact and whose cooldowns
    hold no live moment back.

    A window condition reads the windows before the current one and the current one
    from its start: a baseline `windows + 1` of them, a series or share `last`. Counting
    only those before the current one said 93 days settled a 3-month baseline, true of a
    cut-over on the 1st of a month; on the 15th the oldest month averaged began 106 days
    before, and a 100-day warm-up, not warned of, averaged it cut short (a monthly series
    judged at the month's close, `last: 1`, was never measured). Each window counted at
    its longest (a month: 31 days), so a warm-up of that length is enough whatever the
    date.

    A rule judged as a window closes (`evaluate: daily` ...) is judged live first at the
    close of the window ending at a midnight `--live-from`, and one with a test that waits
    for the history (a "fewer than" series, a `sum` or `count` baseline) judges it only
    when the history began before the windows it reads, in a window of its own (read as a
    partial one, as a history begun at midnight is too): the warm-up must begin before
    those windows, a day more (a day's window more; a week's or a month's window then
    begins in the one before). Without it a warm-up of 3 days from midnight left "fewer
    than 1 top-up in 3 days" unjudged at the first live close, unwarned."""
    found = [Memory(0.0, "nothing", "")]
    for r in rules.rules:
        closing = r.period is not None
        for loc, node in sp.walk_at(r.spec.condition):
            if isinstance(node, sp.FirstTimeCond) and node.lookback:
                found.append(
                    Memory(
                        parse_duration(node.lookback).total_seconds(),
                        f"{r.id}'s first-time look-back",
                        "they include first-time moments a longer warm-up would have seen",
                    )
                )
            elif isinstance(node, sp.BaselineCond) and node.baseline in rules.series:
                period = rules.series[node.baseline].period
                more = closing and node.agg in ("sum", "count")
                found.append(
                    Memory(
                        (node.windows + 1) * PERIOD_S[period] + more * DAY_S,
                        f"{r.id}'s {node.windows}-{period} baseline of {node.baseline} and "
                        f"the {period} it judges" + (_BEGUN % period if more else ""),
                        # It said "they include baselines averaged over fewer windows",
                        # which no baseline does: it waits for its windows.
                        "they lack the tasks of baselines, which wait for their windows: a "
                        "subscriber whose history does not cover them makes none",
                    )
                )
            elif isinstance(node, sp.SeriesCond | sp.ShareCond):
                name = node.series if isinstance(node, sp.SeriesCond) else node.share
                if name in rules.series:
                    period = rules.series[name].period
                    more = (
                        closing
                        and isinstance(node, sp.SeriesCond)
                        and waits_for_history(node, loc.count("not") % 2 == 1)
                    )
                    found.append(
                        Memory(
                            node.last * PERIOD_S[period] + more * DAY_S,
                            f"{r.id}'s {node.last}-{period} series of {name}"
                            + (_BEGUN % period if more else ""),
                            "they include series summed over less than the windows they read",
                        )
                    )
    return max(found, key=lambda m: m.seconds)


REFUSALS_KEPT = 100


def waiting_reason(entry: bytes | None) -> tuple[str, str]:
    """(deferral reason, channel) of a waiting task's ledger entry (its state byte, then
    the task parked): `?` for what it does not say."""
    try:
        task = orjson.loads(entry[1:]) if entry else {}
    except orjson.JSONDecodeError:
        task = {}
    deferred = task.get("deferred") if isinstance(task, dict) else None
    reason = deferred.get("reason") if isinstance(deferred, dict) else None
    channel = task.get("channel") if isinstance(task, dict) else None
    return str(reason or "?"), str(channel or "?")


@dataclass
class BacktestResult:
    published: list[Published] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    slots: MemorySlots = field(default_factory=MemorySlots)
    policy: DispatchPolicy = field(default_factory=DispatchPolicy)
    events: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    """What was wrong with the events refused as malformed (`TYPE: message`, the
    worker's words), the first `REFUSALS_KEPT` kinds of message."""
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    """The first `NAMED_KEPT` dead letters as (`file:line`, reason, `TYPE: message`), when
    the backtest was asked to `locate` them (`moments state seed`)."""
    unreadable_count: int = 0
    """Lines of the files that were no JSON object (dead-lettered as the stream would)."""
    unreadable: list[str] = field(default_factory=list)
    """The first of them, as `file:line` (`backtest_input.unreadable_lines`)."""
    untyped_count: int = 0
    """JSON objects of the files naming no event type (and none given): left out."""
    untyped: list[str] = field(default_factory=list)
    """The first of them, as `file:line` (`backtest_input.untyped_lines`)."""
    cuts: list[Cut] = field(default_factory=list)
    """Files whose gzip data ended early: the report holds their lines up to the cut."""
    window: Window = field(default_factory=Window)
    """The `--events` files' events kept and those left out from `--to` on (`history`)."""
    out_of_order: list[str] = field(default_factory=list)
    """A warning per file not in event-time order (`backtest_input.order_said`)."""
    waiting_at_end: int = 0
    waiting_by: Counter[tuple[str, str]] = field(default_factory=Counter)
    """The tasks of `waiting_at_end` by (deferral reason, channel), as their payloads in the
    deferral queue say (`deferred.reason`)."""
    waiting_last_due: float | None = None
    """When the last of them was due (epoch seconds): a `--to` past it releases them all
    (unless a release defers one again)."""
    ledger: dict[str, str] = field(default_factory=dict)
    """Every task id the sink claimed, with its final state (sent, deferred, merged,
    dropped, pending)."""
    first_event: float | None = None
    """Where event time began: the first event read (a later line dated before it is a
    late event; the earliest time would let one line dated a year back, refused as late,
    stretch the report over a year of empty days)."""
    last_event: float | None = None
    """Where event time got to: the latest event read (a late line at a file's end is not
    the end: tasks went out after it)."""
    clock_end: float | None = None
    """Where event time stopped: `--to`, else the latest event (a report's last day ends
    there)."""
    report_to: float | None = None
    """`--to` (epoch seconds) when given: a last day cut by it is the user's choice, not
    the history's end."""
    seconds: float = 0.0
    spent: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    """Seconds by part: `engine` (detection), `sweep` (finding the records due and
    closing their windows), `dispatch` (the sink), `state` (keeping the slice's records);
    the rest of `seconds` is reading the files and the loop."""
    state_bytes: list[int] = field(default_factory=list)
    """Each subscriber's record at the end, as the stream would store it (bytes, sorted):
    capacity planning for the state table and its changelog."""
    report_from: float | None = None
    """Events before this built the engine's state (a warm-up: first-time rules and
    baselines need history); their tasks were not reported, and not dispatched unless
    in the caps' period before it (`Backtest.dispatch_from`)."""
    live_from: float | None = None
    """`--live-from` (epoch seconds): the rehearsed cut-over; moments before it made no task."""
    warmup_events: int = 0
    events_before_live_from: int = 0
    """Events dated before `live_from`: they built the state and made no task."""
    warmup_tasks: int = 0
    """Tasks the warm-up made before its last caps' period, left undispatched."""
    dropped_from_warmup: Counter[str] = field(default_factory=Counter)
    """Moments detected before `report_from` and dropped after it, by moment type: in
    the report period's `moments_tasks_suppressed`, not of the moments it detected."""
    warmup_counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(
        default_factory=dict
    )
    """The metrics' counters when the report period began, to subtract."""
    slots_at_start: dict[SlotKey, tuple[frozenset[str], frozenset[str]]] = field(
        default_factory=dict
    )
    """The capacity slots taken and refused (task ids per key) when the report period
    began, to leave out of its first day: a `--from` within a day (an RFC 3339 instant)
    counted the warm-up hours' slots in that day's capacity rows, beside tasks that count
    only the report's hours."""

    withdrawn: list[Published] = field(default_factory=list)
    """The withdrawals published (`moments.task-withdrawals`), as the stream's."""

    @property
    def reported(self) -> list[Published]:
        """What was published from `report_from` on."""
        start = self.report_from
        return self.published if start is None else [p for p in self.published if p.at >= start]

    @property
    def reported_withdrawals(self) -> list[Published]:
        """The withdrawals published from `report_from` on."""
        start = self.report_from
        return self.withdrawn if start is None else [p for p in self.withdrawn if p.at >= start]

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def tasks(self) -> list[dict[str, Any]]:
        return [orjson.loads(p.payload) for p in self.reported]

    def counter(self, name: str) -> list[tuple[dict[str, str], float]]:
        """A counter's samples over the reported period (labels, value), zeros left out."""
        out = []
        for family in self.metrics.registry.collect():
            if family.name != name:
                continue
            for sample in family.samples:
                if sample.name != f"{name}_total":
                    continue
                key = (name, tuple(sorted(sample.labels.items())))
                value = sample.value - self.warmup_counts.get(key, 0.0)
                if value:
                    out.append((dict(sample.labels), value))
        return out

    def snapshot_counters(self) -> None:
        """Notes the counters and the capacity slots as the report period begins."""
        slots = self.slots
        self.slots_at_start = {
            key: (frozenset(slots.used.get(key, ())), frozenset(slots.refused.get(key, ())))
            for key in set(slots.used) | set(slots.refused)
        }
        self.warmup_counts = {}
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (family.name, tuple(sorted(sample.labels.items())))
                    self.warmup_counts[key] = sample.value


class WarmupAwareSink(TaskSink):
    """The stream's sink, that also counts the moments detected before `--from` and
    dropped after it (`before_report`, by moment type), so that the comparison's figures
    per moment type are those of the moments the report period detected: a task that
    waited across `--from` (quiet hours, a cap, next-day capacity) and was dropped after
    it counted under `suppressed` with no `detected` (the counters are the stream's).
    Used only with `--from`: without it there is nothing to tell apart."""

    report_from: float = float("-inf")
    before_report: Counter[str]

    def _suppressed(self, task: ServiceTask, reason: SuppressReason) -> None:
        super()._suppressed(task, reason)
        if task.triggered_at.timestamp() < self.report_from:
            self.before_report[task.moment.type] += 1


Progress = Callable[[int], None]
"""Called now and then with the number of events read so far."""


class Backtest:
    def __init__(
        self,
        rules: RuleSet,
        policy: DispatchPolicy | None = None,
        tick_s: float = TICK_S,
        batch_size: int = BATCH_SIZE,
        report_from: float | None = None,
        live_from: dt.datetime | None = None,
        locate: bool = False,
    ) -> None:
        """`locate`: name the file and line of the first dead letters (`refused`)."""
        self.policy = policy or DispatchPolicy()
        self.report_from = report_from
        self.clock = EventTime()
        self.stores = memory_stores(self.clock, LEDGER_TTL_S)
        self.producer = CollectingProducer(self.clock)
        self.metrics = Metrics()
        self.detector = Detector(
            rules, {t.value: t for t in EventType}, returns_topic=RETURNS_TOPIC, live_from=live_from
        )
        self.returns = CollectedCooldownReturns(self.detector.cooled_rules)
        self.sink = (TaskSink if report_from is None else WarmupAwareSink)(
            self.producer,
            TASKS_TOPIC,
            self.stores,
            self.metrics,
            self.policy,
            self.clock,
            frequency_cap=lambda: self.detector.rules.gating.frequency_cap,
            task_ttl=lambda rule_id, version: self.detector.rules.task_ttl(rule_id, version),
            returns=self.returns,
            withdrawals_topic=WITHDRAWALS_TOPIC,
            retrying=unretried,  # stores in memory: never away, nothing to wait out
        )
        if isinstance(self.sink, WarmupAwareSink) and report_from is not None:
            self.sink.report_from = report_from
            self.sink.before_report = Counter()  # the warm-up's own: in no figure
        self.state: StateStore = BacktestState()
        """Replaceable by another store (a test's `DictStateStore`): then every record
        is swept every hour, as on the stream."""
        self.tick_s = tick_s
        self.batch_size = batch_size
        self.offsets: Counter[str] = Counter()
        self.blanks: dict[tuple[str, int], Blank] = {}
        """The blank cells of the CSV rows of the batch being read, by record."""
        self.origins: dict[tuple[str, int], str] | None = {} if locate else None
        """With `locate`, the `file:line` of the batch's records, while dead letters are
        still to be named."""
        self.blank_firsts: dict[str, str] = {}
        """A refusal of blank cells without its line -> as told (at the first row's)."""
        self.swept_bucket = -1
        self.reports_days = False
        """Whether a report of every day up to `--to` is made of the result (`run_backtest`):
        then a `--to` past `moments.runon`'s limit is refused whatever the rules."""
        self.result = BacktestResult(self.producer.sent, self.metrics, self._slots(), self.policy)
        self.result.withdrawn = self.producer.withdrawn
        self.result.report_from = report_from
        self.result.live_from = live_from.timestamp() if live_from is not None else None
        self._warming = report_from is not None
        self.dispatch_from = (
            report_from - self.contacts_span(rules) if report_from is not None else None
        )
        """Warm-up tasks before this are not dispatched; from it on they are (not
        reported), so the report begins with the contacts of the caps' period before."""

    def contacts_span(self, rules: RuleSet) -> float:
        """How far back contacts still count at the report's start: the longer of the
        rules' frequency cap and the dispatch policy's contact cap (0: neither)."""
        cap = rules.gating.frequency_cap
        spans = [cap.span.total_seconds() if cap is not None else 0.0]
        if self.policy.contact.max_contacts > 0:
            spans.append(self.policy.contact.period.total_seconds())
        return max(spans)

    @functools.cached_property
    def _deferrals(self) -> MemoryDeferrals:
        """The stores' deferral queue, looked up once: `_advance` asks it at every task and
        fact."""
        deferral = self.stores.deferral
        assert isinstance(deferral, MemoryDeferrals)
        return deferral

    def _slots(self) -> MemorySlots:
        slots = self.stores.slots
        assert isinstance(slots, MemorySlots)
        return slots

    def _ledger_ids(self) -> list[str]:
        ledger = self.stores.ledger
        assert isinstance(ledger, MemoryLedger)
        return list(ledger.entries)

    async def run(
        self,
        events: Iterable[FileEvent],
        progress: Progress | None = None,
        until: float | None = None,
        sweeping: Progress | None = None,
    ) -> BacktestResult:
        """`progress(events)`: the events read so far, after each batch; `sweeping(at)`:
        the event time reached, after each sweep of the run on to `until` past the last
        event (a `--to` a year on swept for minutes, and the bar said nothing)."""
        started = time.perf_counter()
        out = self.result
        batch: list[RawRecord] = []
        batch_start = 0.0
        full_at = batch_size = self.batch_size
        offsets = self.offsets
        topics = {t: t.value for t in EventType}
        tick_s = self.tick_s
        live_from = out.live_from
        origins = self.origins
        for at, event_type, key, value, blank, line, source in events:
            if self._warming and at >= (self.report_from or 0):
                if batch:
                    await self._step(batch)
                    batch = []
                await self._end_warmup()
            if live_from is not None and at >= live_from:
                out.events_before_live_from = out.events
                if self._live_starts_report(live_from):
                    if batch:
                        await self._step(batch)
                        batch = []
                    await self._go_live(live_from)
                live_from = None
            if at and int(at) // SWEEP_BUCKET_S > self.swept_bucket:
                # The hours this event enters begin with their sweeps, before it is applied.
                if batch:
                    await self._step(batch)
                    batch = []
                await self._sweep_through(at)
            # `full_at`: the count of events read at which the batch holds `batch_size`
            # (a count, not a len() of the batch at every event).
            if not batch:
                batch_start, full_at = at, out.events + batch_size
            elif out.events >= full_at or at - batch_start >= tick_s:
                await self._step(batch)
                batch = []
                batch_start, full_at = at, out.events + batch_size
                if progress is not None:
                    progress(out.events)
            topic = topics[event_type]
            offset = offsets[topic]
            offsets[topic] = offset + 1
            batch.append(RawRecord(topic, 0, offset, key or None, value))
            if blank is not None:  # a CSV row's blank cells: its refusal names them
                self.blanks[(topic, offset)] = blank
            if origins is not None and line and len(out.refused) < NAMED_KEPT:
                origins[(topic, offset)] = f"{source}:{line}"
            out.events += 1
            if at:
                if out.first_event is None:
                    out.first_event = at
                if out.last_event is None or at > out.last_event:
                    out.last_event = at  # the latest, as event time: a late line ends nothing
        if live_from is not None:  # every event was before the cut-over
            out.events_before_live_from = out.events
        self._check_run_on(until)
        if batch:
            await self._step(batch)
        if self._warming:
            await self._end_warmup()
        if live_from is not None and self._live_starts_report(live_from):
            # The report begins at the cut-over, after the last event: with --to beyond
            # it, what event time runs on to from there is the report's.
            if until is not None and until > live_from and self.clock.now > 0:
                await self._sweep_through(live_from - 1)
            out.snapshot_counters()
        if until is not None and self.clock.now > 0:  # else no event time to run on from:
            await self._run_on(until, sweeping)  # it swept every hour since 1970 (8 s)
        out.clock_end = until if until is not None else out.last_event
        out.report_to = until
        self._give_back()
        if progress is not None:
            progress(out.events)
        out.waiting_at_end = await self.stores.deferral.waiting()
        out.waiting_by, out.waiting_last_due = await self._waiting_by()
        ledger = self.stores.ledger
        for task_id in list(self._ledger_ids()):
            out.ledger[task_id] = await ledger.state(task_id) or "expired"
        out.seconds = time.perf_counter() - started
        out.state_bytes = sorted(len(state.to_bytes()) for _, state, _ in self.state.items([0]))
        return out

    def _check_run_on(self, until: float | None) -> None:
        """Refuse (ConfigError, naming the fix) to run event time on past the last event
        further than `moments.runon` allows: to `until`, or to a `--from` after it."""
        last = self.result.last_event
        ends = [("--to", until), ("--from", self.report_from if self._warming else None)]
        for flag, end in ends:
            if last is not None and end is not None:
                said = run_on_refusal(
                    self.detector.rules, last, end, flag, self.policy.zone, self.reports_days
                )
                if said is not None:
                    raise ConfigError(said)

    async def _waiting_by(self) -> tuple[Counter[tuple[str, str]], float | None]:
        """The tasks waiting in the deferral queue by (reason, channel), read from the
        payloads the queue holds for them (the ledger's `deferred` entries), and when the
        last is due."""
        due = await self._deferrals.waiting_tasks()
        by: Counter[tuple[str, str]] = Counter()
        for value in await self.stores.ledger.get_many(list(due)):
            by[waiting_reason(value)] += 1
        return by, max(due.values(), default=None)

    async def _end_warmup(self) -> None:
        """The report period begins: the warm-up's last hours are swept, event time moves
        on to it, counters are noted."""
        self._warming = False
        if self.report_from is not None:
            await self._sweep_through(self.report_from - 1)
            await self._advance(self.report_from)
        self.result.warmup_events = self.result.events
        self.result.snapshot_counters()
        if isinstance(self.sink, WarmupAwareSink):  # from here on, the report's
            self.sink.before_report = self.result.dropped_from_warmup

    def _live_starts_report(self, live_from: float) -> bool:
        """Whether the report begins at the cut-over (`--live-from` after `--from`, or
        alone), not at `--from`."""
        return self.report_from is None or self.report_from < live_from

    async def _go_live(self, live_from: float) -> None:
        """The cut-over begins the report: the hours before it are swept (their moments
        are the warm-up's, making no task) and the counters noted, so that the tables
        read from them (suppressed, deferred, merged, shadow moments) count the live
        period only, as its tasks and days do. Counted from the first event, the shadow
        table listed every moment before the cut-over as a shadow rule's."""
        await self._sweep_through(live_from - 1)
        self.result.snapshot_counters()

    async def _step(self, records: list[RawRecord]) -> None:
        self._give_back()
        started = time.perf_counter()
        taken, ragged = ragged_refused(records, self.blanks)
        # As the stream: the erasures of subscribers with no record, then the batch.
        load, has = self._readers()
        erased = await self.sink.subscribers.erasures(self.detector.unrecorded(taken, has))
        result = self.detector.process(taken, load, None, erased)
        result.dead_letters = in_file_order(records, result.dead_letters, ragged)
        self.result.spent["engine"] += time.perf_counter() - started
        await self._dispatch(result)
        self.blanks.clear()  # the batch's, each refused (told) above
        if self.origins is not None:
            self.origins.clear()
        if result.watermarks:
            await self._advance(max(result.watermarks.values()))

    def _readers(self) -> tuple[StateLoader, Callable[[str], bool]]:
        """How the engine reads the records (`load`) and asks whether one is there (`has`):
        a `BacktestState`'s dict's own methods (a call an event, not two: the store's
        method and the dict's), else the store's."""
        state = self.state
        if isinstance(state, BacktestState):
            records = state.records
            return records.get, records.__contains__
        return state.load, state.has

    async def _sweep_through(self, at: float) -> None:
        """The sweeps that begin each hour after the last one swept, up to the hour of
        `at`, each at the hour's start (as `moments rules test` does): run before any
        event of that hour is applied, so that what a sweep finds (a special day's look at
        09:00, a window's close) does not depend on whether other events came between.
        Swept after the event that entered the hour, a 15:00 top-up counted in the 09:00
        look when nothing came between, and the task was dated 15:00."""
        last = int(at) // SWEEP_BUCKET_S
        if self.swept_bucket < 0:
            self.swept_bucket = last  # nothing read yet: nothing to sweep
            return
        await self._sweep_hours(self.swept_bucket + 1, last)

    async def _sweep_hours(self, first: int, last: int, told: Progress | None = None) -> None:
        """The sweeps of hours `first` to `last` (epoch hours), each at the hour's start
        after event time moved on to it (releasing the tasks due on the way, each at its
        own time). Hours at which no record is due (`BacktestState.next_due`) are skipped:
        their sweep would change nothing. Swept one by one, event time run on far past
        the history took an hour's work per hour: `--to` a century on, hours of it."""
        hour = first
        while (hour := self._next_due_hour(hour, last)) <= last:
            mark = hour * SWEEP_BUCKET_S
            await self._advance(mark)
            await self._sweep(mark)
            if told is not None:
                told(mark)
            hour += 1
        if last >= first:
            # To the last hour's start all the same, the cooldowns of the tasks released
            # and dropped on the way given back, as each hour's sweep gave them: before the
            # event that entered the hour is judged, and in the counters a report period
            # beginning then (`--from`, `--live-from`) leaves out.
            await self._advance(last * SWEEP_BUCKET_S)
            self._give_back()
        self.swept_bucket = max(self.swept_bucket, last)

    def _next_due_hour(self, hour: int, last: int) -> int:
        """The first hour from `hour` on whose sweep finds a record due, `last + 1` when
        none up to `last` does; `hour` itself for a store with no index (every record is
        swept every hour)."""
        state = self.state
        if not isinstance(state, BacktestState) or hour > last:
            return hour
        due = state.next_due(self.detector, hour * SWEEP_BUCKET_S)
        return (
            max(hour, math.ceil(due / SWEEP_BUCKET_S)) if due <= last * SWEEP_BUCKET_S else last + 1
        )

    async def _dispatch(self, result: BatchResult) -> None:
        """What the stream's runtime does with a batch (facts, then tasks, then state),
        task by task in trigger order: the stream's batches span milliseconds, so a task
        is decided at its own time, knowing only the facts of events up to then (a top-up
        a minute later must not cancel a low-balance task the stream sent already)."""
        refusals, firsts = self.result.refusals, self.blank_firsts
        for dl in result.dead_letters:
            self.result.dead_letters[dl.reason.value] += 1
            blank = self.blanks.pop((dl.record.topic, dl.record.offset), None)
            where = self.origins and self.origins.get((dl.record.topic, dl.record.offset))
            if where and len(self.result.refused) < NAMED_KEPT:  # a row of a file
                told = blank_said(f"{dl.event_type}: {dl.message}", blank)
                self.result.refused.append((where, dl.reason.value, told))
            if dl.reason not in OUT_OF_TIME:
                said = f"{dl.event_type}: {dl.message}"
                if blank is not None:  # told once per kind, at the first row's line
                    kind = blank_kind(said, blank)
                    said = firsts.setdefault(kind, blank_said(said, blank, blank.where))
                if said in refusals or len(refusals) < REFUSALS_KEPT:
                    refusals[said] += 1
        started = time.perf_counter()
        if result.forgotten:  # as the stream: before the batch's facts
            rule_ids = [r.id for r in self.detector.rules.rules]
            await self.sink.subscribers.forget(
                result.forgotten, rule_ids, result.erased_at, made_after(result)
            )
            gone = profile_changes((), result.forgotten, result.erased_at, self.clock())
            await self.sink.withdrawals.withdraw(gone)
        # Each fact's time read once (not again by a sort key), and the facts in its order
        # (a stable sort, as by time).
        stamps = [fact.occurred_at.timestamp() for fact in result.facts]
        order = sorted(range(len(stamps)), key=stamps.__getitem__)
        facts = [result.facts[n] for n in order]
        times = [stamps[n] for n in order]
        changes = changes_by_fact(facts)  # the batch's, as the stream's: at its end
        done = 0
        if self._warming and self.dispatch_from is not None:
            # The warm-up builds what the engine knows; only its last caps' period
            # dispatches (the contacts the report begins with). First-time rules fire
            # early in a history for every subscriber it shows first: dispatched, those
            # tasks would fill the caps of the first report days.
            start = self.dispatch_from
            early = [t for t in result.tasks if t.triggered_at.timestamp() < start]
            if early:
                self.result.warmup_tasks += len(early)
                result.tasks[:] = [t for t in result.tasks if t.triggered_at.timestamp() >= start]
        dropped: set[str] = set()
        triggered = [task.triggered_at.timestamp() for task in result.tasks]
        order = sorted(range(len(triggered)), key=triggered.__getitem__)  # stable, as by time
        for n in order:
            task, at = result.tasks[n], triggered[n]
            done = await self._facts_until(facts, times, changes, done, at)
            await self._advance(at)
            self.sink.add(task, rejudged=task.task_id in result.rejudged)
            dropped |= await self.sink.flush()
        await self._facts_until(facts, times, changes, done, float("inf"))
        self.result.spent["dispatch"] += time.perf_counter() - started
        started = time.perf_counter()
        give_back_cooldowns(result, dropped)
        take_over_cooldowns(result, self.sink.took_over())
        self.state.save(result.changes)
        self.result.spent["state"] += time.perf_counter() - started
        record_batch(self.metrics, result)

    async def _facts_until(
        self,
        facts: list[InputEvent],
        times: Sequence[float],
        changes: Mapping[int, Sequence[ProfileChange]],
        start: int,
        until: float,
    ) -> int:
        """Record the facts from `start` dated up to `until` (`times`: each fact's, epoch
        seconds), each at its own time, so a
        task released in between sees only the facts before its release; returns where
        it stopped. One call a fact: the clock of the call dates the facts' expiry and the
        waking of a reactivated line's tasks, and facts seldom share a clock reading (none
        did in a week of `moments simulate`), so recording several at once would date them
        otherwise. Each fact's `changes` (`changes_by_fact`: the batch's, so an opt-out
        the batch opts in again withdraws nothing, as in the stream) withdraw after it."""
        i, end = start, len(facts)
        record = self.sink.subscribers.record_facts
        while i < end and (at := times[i]) <= until:
            await self._advance(at)
            await record(facts[i : i + 1])
            if changes and (made := changes.get(i)):  # as the stream, after the fact
                await self.sink.withdrawals.withdraw(made)
            i += 1
        return i

    async def _advance(self, to: float, before: bool = False) -> None:
        """Move event time on to `to`, releasing each waiting task at its own time on the
        way (the stream's release timer does it every few seconds), so it is decided then: on that
        local day's capacity, against the facts known by then. `before`: those due at `to`
        itself wait (`--to`, the end of the period)."""
        deferral = self._deferrals
        while (due := deferral.next_due()) is not None and (due < to if before else due <= to):
            self.clock.advance(due)
            if not await self.sink.release_due():
                break  # nothing was due after all (cannot happen; never spin)
        self.clock.advance(to)

    def _give_back(self) -> None:
        """The cooldowns of the tasks dropped at release since the last slice (dispatch's
        cooldown returns, moments.cooldowns), applied before the next slice or sweep, so
        in event-time order: the releases happened at or before the event time reached.
        As on the stream, through the engine, as records of the returns topic."""
        taken = self.returns.take()
        if not taken:
            return
        started = time.perf_counter()
        offset = self.offsets[RETURNS_TOPIC]
        self.offsets[RETURNS_TOPIC] = offset + len(taken)
        records = [
            RawRecord(RETURNS_TOPIC, 0, offset + n, r.key, r.to_bytes())
            for n, r in enumerate(taken)
        ]
        result = self.detector.process(records, self._readers()[0], None)
        self.state.save(result.changes)
        record_batch(self.metrics, result)
        self.result.spent["state"] += time.perf_counter() - started

    async def _sweep(self, mark: int) -> None:
        self._give_back()
        started = time.perf_counter()
        state = self.state
        records = state.due(self.detector, mark) if isinstance(state, BacktestState) else None
        swept = sweep(
            self.detector,
            state.items([0]) if records is None else records,
            lambda _p: mark,
            None,
            state.reread,
        )
        self.result.spent["sweep"] += time.perf_counter() - started
        await self._dispatch(swept)

    async def _run_on(self, until: float, told: Progress | None = None) -> None:
        """Let event time run on up to `until` after the last event: windows close hour by
        hour and deferred tasks are released, as on a stream that went quiet. What falls
        due at `until` itself (the sweep of the hour it begins: a day's close at midnight;
        a task waiting until then) is the period after it, as the events dated from it
        are: it waits. Swept and released, it was published on a day after the report.
        `told(at)` after each sweep."""
        first = int(self.clock.now) // SWEEP_BUCKET_S + 1
        last = math.ceil(until / SWEEP_BUCKET_S) - 1  # marks < until
        await self._sweep_hours(first, last, told)
        await self._advance(until, before=True)


def run_backtest(
    rules: RuleSet,
    events: Iterable[FileEvent],
    policy: DispatchPolicy | None = None,
    progress: Progress | None = None,
    until: dt.datetime | None = None,
    tick_s: float = TICK_S,
    report_from: dt.datetime | None = None,
    live_from: dt.datetime | None = None,
    sweeping: Progress | None = None,
) -> BacktestResult:
    """Replay `events` (in event-time order) through `rules` and the dispatch `policy`;
    events before `report_from` are a warm-up, events after `until` should be left out
    by the caller (event time runs on to `until`, `sweeping` told each sweep of it).
    Moments dated before `live_from` make no task, as a worker's with
    `MOMENTS_LIVE_FROM`: a rehearsal of the cut-over."""
    start = report_from.timestamp() if report_from is not None else None
    bt = Backtest(rules, policy, tick_s=tick_s, report_from=start, live_from=live_from)
    bt.reports_days = True
    end = until.timestamp() if until is not None else None
    return asyncio.run(bt.run(events, progress, end, sweeping))
