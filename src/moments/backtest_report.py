"""The backtest's report: tasks per day, capacity needed against configured, what was
suppressed or deferred and why, top rules, and a rule-set comparison; as a dict (JSON),
Markdown, rich tables, a PNG chart and a self-contained HTML page.

Counts of suppressed, deferred and merged tasks are read from the same Prometheus
counters the stream exports (`moments_tasks_suppressed`, ...), so the backtest and a
dashboard over the stream say the same thing.
"""

from __future__ import annotations

import base64
import datetime as dt
import difflib
import html
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.figure import Figure

from moments.backtest import BacktestResult, longest_memory, settling_period
from moments.backtest_input import lines_named
from moments.models import Channel
from moments.placetext import place_key
from rules.catalog import RuleSet, holiday_gaps
from sinks.policy import ANY, DispatchPolicy

DIMENSIONS = ("family", "moment_type", "region", "channel")
NO_REGION = "(none)"


def _fields(task: Mapping[str, Any]) -> dict[str, str]:
    moment = task["moment"]
    return {
        "family": str(moment["family"]),
        "moment_type": str(moment["type"]),
        "region": str(task.get("region") or NO_REGION),
        "channel": str(task["channel"]),
        "rule_id": str(moment["rule_id"]),
    }


def carried(task: Mapping[str, Any]) -> list[str]:
    """The rules of the moments a task carries for rules other than its lead's (merged
    into it, in its `related`); a second moment of the lead's own rule is not another's."""
    lead = str(task["moment"]["rule_id"])
    joined = (str(r["moment"]["rule_id"]) for r in task.get("related") or ())
    return [rule_id for rule_id in joined if rule_id != lead]


def top_rules(led: Counter[str], joined: Counter[str], top: int) -> list[dict[str, Any]]:
    """The rules whose moments reached most customers: the tasks each leads (`tasks`) and
    its moments carried in another rule's task (`merged_into_others`: a call that says
    both). Counted by tasks alone, a rule whose moments mostly joined other rules' calls
    read as making none."""
    published = led + joined
    ranked = sorted(published, key=lambda r: (-published[r], r))[:top]
    return [{"rule_id": r, "tasks": led[r], "merged_into_others": joined[r]} for r in ranked]


def region_names(policy: DispatchPolicy, regions: Iterable[str]) -> dict[str, str]:
    """Each region as the tasks write it -> the one name the report counts it under: `nj`
    and `NJ` are one city (moments.placetext), as for its capacity pool, named as the
    policy's capacity writes it, else as most tasks write it. Counted apart, the tasks per
    region and the unlimited channels' capacity rows split a city's load in two."""
    spellings = Counter(regions)
    by_key: dict[str, list[str]] = {}
    for name in spellings:
        by_key.setdefault(place_key(name), []).append(name)
    listed = {place_key(r): r for r in policy.capacity if r != ANY}
    out: dict[str, str] = {}
    for key, names in by_key.items():
        shown = listed.get(key) or min(names, key=lambda n: (-spellings[n], n))
        out.update(dict.fromkeys(names, shown))
    return out


def build_report(result: BacktestResult, top: int = 10) -> dict[str, Any]:
    """Every figure of the report, JSON-ready."""
    zone = result.policy.zone
    per_day: dict[str, Counter[tuple[str, str]]] = {d: Counter() for d in DIMENSIONS}
    rules: Counter[str] = Counter()  # tasks each rule's moment leads
    joined: Counter[str] = Counter()  # each rule's moments carried in another's task
    sent: Counter[tuple[str, str, str]] = Counter()  # (day, region, channel)
    reported = [(p.at, orjson.loads(p.payload)) for p in result.reported]
    names = region_names(result.policy, (_fields(task)["region"] for _, task in reported))
    for at, task in reported:
        f = _fields(task)
        f["region"] = names[f["region"]]
        day = dt.datetime.fromtimestamp(at, zone).date().isoformat()
        for d in DIMENSIONS:
            per_day[d][(day, f[d])] += 1
        rules[f["rule_id"]] += 1
        joined.update(carried(task))
        sent[(day, f["region"], f["channel"])] += 1
    suppressed: Counter[str] = Counter()
    suppressed_by_type: list[dict[str, Any]] = []
    for labels, value in result.counter("moments_tasks_suppressed"):
        suppressed[labels["reason"]] += int(value)
        suppressed_by_type.append({**labels, "tasks": int(value)})
    deferred = {labels["reason"]: int(v) for labels, v in result.counter("moments_tasks_deferred")}
    merged = {labels["moment_type"]: int(v) for labels, v in result.counter("moments_tasks_merged")}
    overflow = [
        {**labels, "tasks": int(v)} for labels, v in result.counter("moments_tasks_overflow")
    ]
    shadow = [
        {**labels, "moments": int(v)}
        for labels, v in result.counter("moments_shadow_moments")
        if int(v)
    ]
    return {
        "summary": {
            "events": reported_events(result),
            "warmup_events": result.warmup_events,
            "events_before_live_from": result.events_before_live_from,
            "warmup_tasks": result.warmup_tasks,
            "report_from": _iso(result.report_from, zone),
            "report_start": _iso(report_start(result), zone)
            if result.report_from is not None or result.live_from is not None
            else None,
            "tasks": len(result.reported),
            "tasks_withdrawn": len(result.reported_withdrawals),
            "first_event": _iso(result.first_event, zone),
            "last_event": _iso(result.last_event, zone),
            "waiting_at_end": result.waiting_at_end,
            "waiting_at_end_by": [
                {"reason": reason, "channel": channel, "tasks": n}
                for (reason, channel), n in sorted(result.waiting_by.items())
            ],
            "dead_letters": dict(result.dead_letters),
            "unreadable_lines": {"count": result.unreadable_count, "first": result.unreadable},
            "untyped_lines": {"count": result.untyped_count, "first": result.untyped},
            "files_ended_early": [
                {"file": str(c.path), "line": c.line, "last_event": c.last_at, "why": c.why}
                for c in result.cuts
            ],
            "seconds": round(result.seconds, 3),
            "seconds_by_part": {
                **{k: round(v, 3) for k, v in sorted(result.spent.items())},
                "reading and the rest": round(result.seconds - sum(result.spent.values()), 3),
            },
            "events_per_second": round(result.rate),
            "timezone": result.policy.timezone,
            "state_bytes_per_subscriber": state_sizes(result.state_bytes),
        },
        "tasks_per_day": {
            d: [
                {"day": day, d: value, "tasks": n} for (day, value), n in sorted(per_day[d].items())
            ]
            for d in DIMENSIONS
        },
        "capacity": capacity_rows(result, sent),
        "suppressed": dict(sorted(suppressed.items())),
        "suppressed_by_moment_type": sorted(
            suppressed_by_type, key=lambda r: (r["reason"], r["moment_type"])
        ),
        "deferred": dict(sorted(deferred.items())),
        "merged": dict(sorted(merged.items())),
        "overflow": sorted(overflow, key=lambda r: (r["policy"], r["moment_type"])),
        "top_rules": top_rules(rules, joined, top),
        "shadow": sorted(shadow, key=lambda r: (r["rule_id"], r["outcome"], r["reason"])),
        "days": report_days(result, {day for day, _ in per_day["family"]}),
        "partial_days": (partial := partial_days(result)),
        "notes": partial_days_note(
            partial,
            starts_at=report_start_cause(result),
            ends_at="history" if result.report_to is None else "--to",
        )
        + waiting_note(result),
    }


def waiting_by_said(rows: Iterable[Mapping[str, Any]]) -> str:
    """`merge_window: manager 1; quiet_hours: call 1, sms 2` of `waiting_at_end_by` rows."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_reason[str(r["reason"])].append(f"{r['channel']} {int(r['tasks']):,}")
    return "; ".join(f"{reason}: {', '.join(said)}" for reason, said in sorted(by_reason.items()))


def waiting_note(result: BacktestResult) -> list[str]:
    """The tasks still waiting in the deferral queue when event time stopped, by reason
    and channel, and the `--to` that publishes them (the local day after the last is due:
    what falls due at `--to` itself still waits); none when none waits. A first-time user
    saw a night's top-up make a task in `rules test` and none in the backtest."""
    if not result.waiting_at_end:
        return []
    zone = result.policy.zone
    stopped = "--to" if result.report_to is not None else "the last event"
    rows = [
        {"reason": reason, "channel": channel, "tasks": n}
        for (reason, channel), n in sorted(result.waiting_by.items())
    ]
    text = (
        f"{result.waiting_at_end:,} task(s) were still waiting when event time stopped at "
        f"{stopped} ({_iso(result.clock_end, zone)}), by reason and channel: "
        f"{waiting_by_said(rows)}. They are in neither tasks.jsonl nor the tasks per day"
    )
    last = result.waiting_last_due
    if last is None:
        return [text + "."]
    after = dt.datetime.fromtimestamp(last, zone).date() + dt.timedelta(days=1)
    return [
        text + f": give --to {after.isoformat()} (the last is due {_iso(last, zone)}) to let "
        "event time run on and publish them (a release may defer one again: a cap, "
        "capacity)."
    ]


WHOLE_DAY_SLACK_S = 3600.0
"""A report day the history misses less than this of, at either end, counts as whole."""


def reported_events(result: BacktestResult) -> int:
    """The events dated from the report's start: after the warm-up before `--from` and the
    events before `--live-from`, whichever ends later (a cut-over's report counted every
    event of the history, the months before it too, beside tasks of the live days)."""
    return result.events - max(result.warmup_events, result.events_before_live_from)


def report_start(result: BacktestResult) -> float | None:
    """Where the report's days begin: the latest of `--from`, `--live-from` (no task is
    made before the cut-over: its days were rows of zeros the means per day counted) and
    the first event (None: none of them)."""
    starts = [
        t for t in (result.report_from, result.live_from, result.first_event) if t is not None
    ]
    return max(starts) if starts else None


def report_start_cause(result: BacktestResult) -> str:
    """What began the report (`report_start`): `--from`, `--live-from` or `history` (its
    first event)."""
    start = report_start(result)
    if start is not None and start == result.report_from:
        return "--from"
    if start is not None and start == result.live_from:
        return "--live-from"
    return "history"


def partial_days(result: BacktestResult) -> dict[str, str]:
    """The report's first and last local days when the history covers them in part:
    `{"2026-12-08": "to 10:05"}`. The report begins at `--from`, `--live-from` or the
    first event, whichever is latest, and ends where event time stopped (`--to`, else the
    last event)."""
    zone = result.policy.zone
    start, end = report_start(result), result.clock_end
    if start is None or end is None or end <= start:
        return {}
    first = dt.datetime.fromtimestamp(start, zone)
    last = dt.datetime.fromtimestamp(end, zone)
    out: dict[str, str] = {}
    if first.timestamp() - _midnight(first.date(), zone) > WHOLE_DAY_SLACK_S:
        out[first.date().isoformat()] = f"from {first:%H:%M}"
    begun = end - _midnight(last.date(), zone)  # 0: it stopped at midnight, the day before whole
    if begun > 0 and _midnight(last.date() + dt.timedelta(days=1), zone) - end > WHOLE_DAY_SLACK_S:
        day = last.date().isoformat()
        out[day] = f"{out[day]} to {last:%H:%M}" if day in out else f"to {last:%H:%M}"
    return out


def report_days(result: BacktestResult, seen: Iterable[str]) -> list[str]:
    """Every local day of the report, from its first to where event time stopped, those
    with no task included (the per-day tables and their means count them), and any other
    day a task was published on."""
    zone = result.policy.zone
    days = set(seen)
    start, end = report_start(result), result.clock_end
    if start is not None and end is not None and end >= start:
        day = dt.datetime.fromtimestamp(start, zone).date()
        last = dt.datetime.fromtimestamp(end, zone).date()
        if end == _midnight(last, zone) and last > day:  # stopped at midnight: not that day
            last -= dt.timedelta(days=1)
        while day <= last:
            days.add(day.isoformat())
            day += dt.timedelta(days=1)
    return sorted(days)


def _midnight(day: dt.date, zone: ZoneInfo) -> float:
    return dt.datetime.combine(day, dt.time(0), zone).timestamp()


def partial_days_note(
    partial: Mapping[str, str],
    *,
    starts_at: str = "history",
    ends_at: str = "history",
) -> list[str]:
    """What the per-day figures of a day covered in part are, and what would make it
    whole: one note, or none. `starts_at` says what began the report (`history`, its
    first event; `--from`; `--live-from`), `ends_at` what ended it (`history`, its last
    event; `--to`): a mid-day `--from` is the report's start, the hours before it warm-up,
    not a history covering part of a day, and a mid-day `--to` is the user's choice, not
    a history to be given a whole day of events. The tasks still waiting at the end are
    `waiting_note`'s, said once."""
    if not partial:
        return []
    first, first_span = next(iter(partial.items()))
    last, span = list(partial.items())[-1]
    cut_at_start = first_span.startswith("from")
    cut_at_end = span.startswith("to") or " to " in span
    by_history = (not cut_at_start or starts_at == "history") and (
        not cut_at_end or ends_at == "history"
    )
    days = ", ".join(f"{day} {span}" for day, span in partial.items())
    text = (
        f"The {'history' if by_history else 'report'} covers part of a day: {days}. "
        + ("That day's figures" if len(partial) == 1 else "Those days' figures")
        + " (tasks, capacity needed) count only those hours, and the means per day count "
        + ("it" if len(partial) == 1 else "each")
        + " as a whole day."
    )
    next_day = (dt.date.fromisoformat(first) + dt.timedelta(days=1)).isoformat()
    if cut_at_start and starts_at != "history":
        at = first_span.removeprefix("from ").split(" to ")[0]
        text += f" The report starts at {starts_at} {at} on {first}"
        if starts_at == "--from":
            # The report's only day: --from the next one would leave every event out.
            later = "" if " to " in first_span else f", or --from {next_day}"
            text += (
                " (the events before it built state, the warm-up): a --from at midnight"
                f" (--from {first}{later}) reports whole days."
            )
        else:  # the cut-over: moments before it made no task
            text += " (the cut-over: moments before it made no task)."
    if cut_at_end:
        to = span.split("to ")[-1]
        after = (dt.date.fromisoformat(last) + dt.timedelta(days=1)).isoformat()
        if ends_at == "--to":
            text += f" Event time stopped at --to {to} on {last}: "
            text += (
                f"--to {after} reports that day whole"
                if span.startswith("from")  # the report's only day: --to it leaves all out
                else f"--to {last} leaves that day out, --to {after} reports it whole"
            )
            text += "."
        else:
            text += f" Event time stopped at {to} on {last}: "
            if span.startswith("from") and starts_at == "history":
                text += "the history is shorter than a day; give it a whole day of events."
            elif span.startswith("from"):  # --to that day would leave the report out
                text += (
                    "the history ends within the report's only day;"
                    " give it the rest of that day's events."
                )
            else:
                text += f"leave that day out with --to {last}, or give it a whole day of events."
    return [text]


def report_warnings(result: BacktestResult, rules: RuleSet) -> list[str]:
    """What keeps the report's figures from meaning what they seem: said in the terminal
    and at the top of report.md and report.html (and in report.json), the files that are
    shared (the warm-up's was said in the terminal only)."""
    out: list[str] = list(result.out_of_order)
    start = result.report_from
    zone = result.policy.zone
    live = result.live_from
    if live is not None and (start is None or start < live):  # the report begins at it
        if result.first_event is not None:  # its warm-up ends there, not at --from
            out.extend(_cut_over_warning(live - result.first_event, rules))
    elif start is not None and result.first_event is not None and reported_events(result):
        warm = start - result.first_event
        settle, what = settling_period(rules)
        if warm < settle:
            days = f"{settle / 86400:.0f} days"
            said = (  # before the first event: not a warm-up of "-5.7 days"
                f"--from is at or before the first event ({_iso(result.first_event, zone)}): "
                f"there is no warm-up, where {what} ({days}) needs one that long"
                if warm <= 0
                else f"The warm-up before --from is {warm / 86400:.1f} days, shorter than "
                f"{what} ({days})"
            )
            # Both ways: it said only "count first-time moments and free contacts a
            # longer history would have used up", and with a long cooldown the report's
            # first days held fewer tasks, the warm-up's moments holding theirs back.
            out.append(
                f"{said}: the first days of the report are off either way, counting "
                "first-time moments and free contacts a longer history would have used up, "
                "or missing moments that cooldowns the warm-up began all at once hold back. "
                f"Start --from at least {settle / 86400:.0f} days after the first event "
                "(simulate a longer history if need be)."
            )
    if result.first_event is not None and result.clock_end is not None:
        gaps = holiday_gaps(rules, _date(result.first_event, zone), _date(result.clock_end, zone))
        if gaps is not None:
            out.append(gaps)
    if failed := result.dead_letters.get("detector_error", 0):
        out.append(
            f"{failed:,} event(s) failed in the detector (dead letters `detector_error`: a "
            "bug of moments; report it). The backtest keeps the part of each such event "
            "applied before the fault, where a worker undoes it, so its figures for those "
            "subscribers may differ from the stream's."
        )
    return out


def empty_period(
    result: BacktestResult,
    start: str | None,
    end: str | None,
    files: Sequence[Path],
    live_said: str | None = None,
) -> str | None:
    """Why the report period holds no event of `--events` (`start`, `end` and
    `live_said`: `--from`, `--to` and `--live-from` as given), with the events' count and
    dates and the fix; None when it holds one. A report of zeros then is no quiet week:
    the command fails on it."""
    window, zone = result.window, result.policy.zone
    total = window.kept + window.left_out
    if total == 0:
        if result.events:  # `--profiles` alone: event time runs on from them to `--to`
            return None
        named = ", ".join(str(p) for p in files)
        return (
            f"nothing to report: {named} {'holds' if len(files) == 1 else 'hold'} no event "
            "(an empty file? every line without a `type`?); give the history's events, one "
            "JSON object a line or a CSV row under a header"
        )
    first = min(result.first_event or math.inf, window.first_left_out)
    last = max(result.last_event or -math.inf, window.last_left_out)
    if not math.isfinite(first) or not math.isfinite(last):  # no line with a time
        return None
    span = f"the {total:,} events of the history run from {_iso(first, zone)} to {_iso(last, zone)}"
    if window.kept == 0:
        return (
            f"nothing to report: every event is from --to {end} on "
            f"({_iso(result.report_to, zone)}): {span}. Give a later --to (after "
            f"{_day(first, zone)}) or a history that begins before {end}"
        )
    after_to = f", {window.left_out:,} of them from --to {end} on" if window.left_out else ""
    live = result.live_from
    if live is not None and _live_starts_report(result) and result.events_before_live_from:
        if result.events > result.events_before_live_from:
            return None
        # As --from after every event: the cut-over begins the report, and no event is
        # in it; with a --to past it, event time ran on to empty days (it exited 0).
        live_said = live_said or _iso(live, zone)
        return (
            f"nothing to report: every event is before --live-from {live_said} "
            f"({_iso(live, zone)}): {span}{after_to}. Give an earlier --live-from "
            f"({_day(last, zone)} or before) or a history that reaches past {live_said}"
        )
    if start is None or result.events > result.warmup_events:
        return None
    return (
        f"nothing to report: every event is before --from {start} "
        f"({_iso(result.report_from, zone)}): {span}{after_to}. Give an earlier --from "
        f"({_day(last, zone)} or before) or a history that reaches past {start}"
    )


def _live_starts_report(result: BacktestResult) -> bool:
    """Whether the report begins at `--live-from` (alone, or after `--from`)."""
    live = result.live_from
    return live is not None and (result.report_from is None or result.report_from < live)


def _day(at: float, zone: ZoneInfo) -> str:
    return _date(at, zone).isoformat()


def _date(at: float, zone: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(at, zone).date()


def unused_regions(policy: DispatchPolicy, capacity: Iterable[Mapping[str, Any]]) -> list[str]:
    """A warning naming the regions the policy's capacity lists that no task of the report
    asked for (`capacity` rows: a pool's, or an unlimited channel's tasks by region): a
    typo (`NY` for NJ) or a region the history does not cover, whose limits the report
    cannot have tried. Regions are matched whatever the case (moments.placetext): tasks
    from `nj` tried NJ's limits."""
    seen = {str(r["region"]) for r in capacity}
    if not seen:
        # No task in the report at all (every event before --from, say): each region of
        # the policy was named, its history's NJ included, with "correct a typo".
        return []
    tried = {place_key(r) for r in seen}
    unused = [r for r in policy.capacity if r != ANY and place_key(r) not in tried]
    if not unused:
        return []

    by_key: dict[str, str] = {}
    for r in sorted(seen - {ANY}):
        by_key.setdefault(place_key(r), r)

    def named(region: str) -> str:
        close = difflib.get_close_matches(place_key(region), sorted(by_key), n=1)
        return f"{region} (did you mean {by_key[close[0]]}?)" if close else region

    return [
        f"The dispatch policy's capacity names region(s) no task of this history came from: "
        f"{', '.join(named(r) for r in unused)}. Their limits were never tried (regions are "
        "matched whatever the case): correct a typo, or backtest a history of those "
        "regions."
    ]


def _cut_over_warning(warm: float, rules: RuleSet) -> list[str]:
    """With `--live-from` (and no `--from`, or one before it: the report begins at the
    cut-over, the state built from the first event): a warm-up shorter than the rules' longest
    memory (first-time look-backs, baselines, series over several windows; not cooldowns:
    the warm-up takes no contact and its cooldowns hold no live moment) is what the
    rehearsal is about, not a fault of the report, so it is said as what going live after
    that warm-up would send."""
    memory = longest_memory(rules)
    if warm >= memory.seconds:
        return []
    if warm <= 0:
        return [
            "--live-from is at or before the first event: there is no warm-up, and every "
            "moment is live. This rehearses a cold start: the first days' tasks are the "
            "first-time moments a start with no history would send."
        ]
    days = f"{memory.seconds / 86400:.0f} days"
    return [
        f"The warm-up before --live-from is {warm / 86400:.1f} days, shorter than "
        f"{memory.what} ({days}). The tasks of the first live days are the prediction "
        "for going live after this warm-up, not an artefact of the report: "
        f"{memory.leaves}. Rehearse a --live-from at least {days} after the first event "
        "to see a longer one (seed the state from history where it is longer)."
    ]


def capacity_rows(
    result: BacktestResult, sent: Mapping[tuple[str, str, str], int]
) -> list[dict[str, Any]]:
    """Per local day, region and channel: tasks that wanted a slot (`needed`), those asking
    for the first time (`new`: a task refused and deferred asks again the next day, so
    `needed` counts it on both), those that got one (`taken`), the configured limit (None:
    unlimited, where `needed` is what was sent)."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    slots = result.slots
    zone = result.policy.zone
    start = report_start(result)
    first = None if start is None else dt.datetime.fromtimestamp(start, zone).date()
    asked: dict[tuple[str | None, Channel], set[str]] = {}  # ids that asked on a day before
    for key in sorted(set(slots.used) | set(slots.refused), key=lambda k: k.day):
        # The report's first day counts the decisions from its start on, as its tasks
        # do: the slots the warm-up took or was refused that day are left out.
        taken_before, refused_before = result.slots_at_start.get(key, (frozenset(), frozenset()))
        everyone = slots.used.get(key, set()) | slots.refused.get(key, set())
        used = slots.used.get(key, set()) - taken_before
        wanting = used | (slots.refused.get(key, set()) - refused_before)
        before = asked.setdefault((key.region, key.channel), set())
        new = len(wanting - before - taken_before - refused_before)
        before |= everyone
        if first is not None and key.day < first:
            continue
        if not wanting:
            continue  # every decision of that day's pool was the warm-up's
        region = key.region or NO_REGION
        rows[(key.day.isoformat(), region, key.channel.value)] = {
            "needed": len(wanting),
            "new": new,
            "taken": len(used),
            "configured": result.policy.limit(key.region, key.channel),
        }
    for (day, region, channel), n in sent.items():
        limited = result.policy.pool(None if region == NO_REGION else region, Channel(channel))
        if limited is None and (day, region, channel) not in rows:  # (else in its pool's row)
            rows[(day, region, channel)] = {"needed": n, "new": n, "taken": n, "configured": None}
    return [{"day": d, "region": r, "channel": c, **v} for (d, r, c), v in sorted(rows.items())]


def _iso(at: float | None, zone: ZoneInfo) -> str | None:
    return None if at is None else dt.datetime.fromtimestamp(at, zone).isoformat()


def pivot(
    rows: Iterable[Mapping[str, Any]], column: str, every_day: Sequence[str] | None = None
) -> tuple[list[str], list[str], dict[tuple[str, str], int]]:
    """(days, column values, counts) of per-day rows; `every_day`: the report's days,
    those with no task included."""
    counts = {(str(r["day"]), str(r[column])): int(r["tasks"]) for r in rows}
    days = sorted({d for d, _ in counts} | set(every_day or ()))
    values = sorted({v for _, v in counts})
    return days, values, counts


# --- rule-set comparison --------------------------------------------------------------


@dataclass
class RuleDiff:
    added: int = 0
    removed: int = 0
    changed: int = 0
    merged_into_others: tuple[int, int] = (0, 0)
    """The rule's moments carried in other rules' tasks, baseline and candidate: a rule
    whose moments only join other rules' calls leads no task, and read `0 0 0`, as one
    that does nothing."""
    what_changed: Counter[str] = field(default_factory=Counter)
    """The task fields that differ in its changed tasks, each with the number of tasks
    (`quiet_hours`, `deliver_after`, `moment.params`): a quiet-hours window added to the
    gating read `changed 49` on every rule, with nothing to tell it from a threshold that
    moved but diffing the two task files."""


@dataclass
class Comparison:
    per_rule: dict[str, RuleDiff] = field(default_factory=dict)
    presence: dict[str, str] = field(default_factory=dict)
    """Rule id -> `new` (the candidate's only; `new, shadow` for one in shadow),
    `removed` (the baseline's only), `now shadow` or `now live` (in both, its mode
    changed) or `in both`, for every rule of either catalog: a new rule that made no task
    is listed too, with zeros (one in both, only if changed)."""

    def totals(self) -> RuleDiff:
        out = RuleDiff()
        for d in self.per_rule.values():
            out.added += d.added
            out.removed += d.removed
            out.changed += d.changed
            out.what_changed.update(d.what_changed)
            before, after = out.merged_into_others
            out.merged_into_others = (
                before + d.merged_into_others[0],
                after + d.merged_into_others[1],
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        t = self.totals()
        return {
            "totals": {
                "added": t.added,
                "removed": t.removed,
                "changed": t.changed,
                **({"what_changed": _by_count(t.what_changed)} if t.what_changed else {}),
                "merged_into_others": list(t.merged_into_others),
            },
            "per_rule": [
                {
                    "rule_id": r,
                    "added": d.added,
                    "removed": d.removed,
                    "changed": d.changed,
                    **({"what_changed": _by_count(d.what_changed)} if d.what_changed else {}),
                    **({"rule": self.presence[r]} if r in self.presence else {}),
                    **(
                        {"merged_into_others": list(d.merged_into_others)}
                        if any(d.merged_into_others)
                        else {}
                    ),
                }
                for r, d in sorted(self.per_rule.items())
            ],
        }


def moment_figures(result: BacktestResult) -> dict[str, dict[str, int]]:
    """Per moment type, of the moments the reported period detected: how many (`detected`),
    those `suppressed` (by the gates or dispatch) and those `published` (leading a task or
    merged into one). A rule whose moments all stop at the gates makes no task, and a
    comparison of tasks alone showed it as nothing at all. With `--from`, a moment of the
    warm-up dropped or published after it is in neither (it made `suppressed` and
    `published` add up to more than `detected`: 456 detected, 475 suppressed)."""
    out: dict[str, dict[str, int]] = {}

    def row(moment_type: str) -> dict[str, int]:
        return out.setdefault(moment_type, {"detected": 0, "suppressed": 0, "published": 0})

    for labels, value in result.counter("moments_detected"):
        row(labels["moment_type"])["detected"] += int(value)
    for labels, value in result.counter("moments_tasks_suppressed"):
        row(labels["moment_type"])["suppressed"] += int(value)
    for moment_type, n in result.dropped_from_warmup.items():
        row(moment_type)["suppressed"] -= n
    start = result.report_from
    for task in result.tasks():  # a moment merged into another's task was published too
        for one in [task, *(task.get("related") or ())]:  # each with its own time
            if start is None or dt.datetime.fromisoformat(one["triggered_at"]).timestamp() >= start:
                row(str(one["moment"]["type"]))["published"] += 1
    return out


def compare_moments(
    baseline: Mapping[str, Mapping[str, int]], candidate: Mapping[str, Mapping[str, int]]
) -> list[dict[str, Any]]:
    """Each moment type's figures in both runs, `[baseline, candidate]`, changed ones only."""
    rows = []
    for moment_type in sorted(set(baseline) | set(candidate)):
        old, new = baseline.get(moment_type, {}), candidate.get(moment_type, {})
        pair = {k: [old.get(k, 0), new.get(k, 0)] for k in ("detected", "suppressed", "published")}
        if any(b != c for b, c in pair.values()):
            rows.append({"moment_type": moment_type, **pair})
    return rows


CHANGE_IGNORES = ("created_at",)
"""Not a change: when the task object was built (the same instant in both runs anyway)."""


def compare(
    baseline: Sequence[bytes],
    candidate: Sequence[bytes],
    rule_sets: tuple[RuleSet, RuleSet] | None = None,
) -> Comparison:
    """Tasks the candidate rules add, remove or change (same id, other content), per rule;
    with the two catalogs (`rule_sets`: baseline, candidate), a rule only in one is
    listed even with no task, and said so."""
    old = {t["task_id"]: t for t in map(orjson.loads, baseline)}
    new = {t["task_id"]: t for t in map(orjson.loads, candidate)}
    out = Comparison()
    if rule_sets is not None:
        in_baseline = {r.id: r.shadow for r in rule_sets[0].rules}
        for rule in rule_sets[1].rules:
            if rule.id not in in_baseline:
                label = "new, shadow" if rule.shadow else "new"
            elif rule.shadow != in_baseline[rule.id]:  # its tasks all removed, or all added
                label = "now shadow" if rule.shadow else "now live"
            else:
                label = "in both"
            out.presence[rule.id] = label
        gone = set(in_baseline) - set(out.presence)
        out.presence.update(dict.fromkeys(sorted(gone), "removed"))
        out.per_rule.update({r: RuleDiff() for r, p in out.presence.items() if p != "in both"})

    def diff(task: Mapping[str, Any]) -> RuleDiff:
        return out.per_rule.setdefault(str(task["moment"]["rule_id"]), RuleDiff())

    for task_id, task in new.items():
        before = old.get(task_id)
        if before is None:
            diff(task).added += 1
        elif fields := changed_fields(before, task):
            of_rule = diff(task)
            of_rule.changed += 1
            of_rule.what_changed.update(fields)
    for task_id, task in old.items():
        if task_id not in new:
            diff(task).removed += 1
    before = Counter(r for t in old.values() for r in carried(t))
    after = Counter(r for t in new.values() for r in carried(t))
    for rule_id in sorted(before | after):
        d = out.per_rule.get(rule_id)
        if d is None and before[rule_id] == after[rule_id]:
            continue  # in both, leading the same tasks and joining as many
        d = out.per_rule.setdefault(rule_id, RuleDiff())
        d.merged_into_others = (before[rule_id], after[rule_id])
    return out


def short_history_notes(
    comparison: Mapping[str, Any], result: BacktestResult, rules: RuleSet
) -> list[str]:
    """A note for each new rule of the candidate that made no task and compares with the
    subscriber's own past over more than the history holds: it read `big_topup (new) 0 0 0`
    and no more, where `rules test` says `(its baseline is 7 earlier days of topup_day: a
    subscriber with less history makes none)` (analyst walk, on a 3-day simulation)."""
    from moments.rulecheck import baseline_need

    if result.first_event is None or result.last_event is None:
        return []
    held = (result.last_event - result.first_event) / 86400
    by_id = {rule.id: rule for rule in rules.rules}
    notes = []
    for row in comparison.get("per_rule", ()):
        if row.get("rule") != "new" or row["added"] or any(row.get("merged_into_others", ())):
            continue
        need = baseline_need(by_id.get(row["rule_id"]), rules)
        if need is None or held >= need.days():
            continue
        notes.append(
            f"{row['rule_id']} (new) made no task: {need.said()}, whole ones after the one "
            f"a subscriber's history in it begins in, so a first judgement needs about "
            f"{need.days()} days of history, and this one holds {held:.1f}: give a longer "
            f"history (moments simulate --duration {_weeks_for(need.days())}w) to see what "
            "it makes."
        )
    return notes


def suppressed_notes(report: Mapping[str, Any], rules: RuleSet) -> list[str]:
    """A note for each new rule of the candidate that made no task while its moments of
    the report period were detected and suppressed: it read `big_topup (new) 0 0 0`, with
    `detected 0 -> 1,078, suppressed 0 -> 1,078` further down and no word of why (analyst
    walk: a 30-day cooldown, set by its moments of a 15-day warm-up). Says the reasons,
    and of a cooldown that it runs from the warm-up's moments too. Only for a rule whose
    moment type no other rule of the candidate makes (the tables count by type)."""
    comparison = report.get("comparison", {})
    detected = {
        row["moment_type"]: row["detected"][1] for row in comparison.get("per_moment_type", ())
    }
    makers = Counter(rule.task.moment_type for rule in rules.rules)
    by_id = {rule.id: rule for rule in rules.rules}
    notes = []
    for row in comparison.get("per_rule", ()):
        rule = by_id.get(row["rule_id"])
        if row.get("rule") != "new" or row["added"] or any(row.get("merged_into_others", ())):
            continue
        if rule is None or makers[rule.task.moment_type] != 1:
            continue
        kind = rule.task.moment_type
        reasons = {
            r["reason"]: r["tasks"]
            for r in report.get("suppressed_by_moment_type", ())
            if r["moment_type"] == kind
        }
        if not detected.get(kind) or not reasons:
            continue
        said = ", ".join(f"{reason} {n:,}" for reason, n in sorted(reasons.items(), key=_most))
        note = (
            f"{rule.id} (new) made no task: its {detected[kind]:,} moment(s) of the report "
            f"period were suppressed ({said}; the table Suppressed by reason)."
        )
        cooldown = rule.task.cooldown
        if "cooldown" in reasons and cooldown is not None:
            note += (
                f" Its cooldown, {_days_said(cooldown)}, runs from its moments before --from "
                "too (the warm-up's, dispatched or not): a subscriber it fired for then has "
                "no task from it until the cooldown ends. Warm up for longer than the "
                "cooldown, or shorten it, to see what it makes."
            )
        notes.append(note)
    return notes


def _most(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _days_said(span: dt.timedelta) -> str:
    """`30 days`, `36 hours`: a cooldown as a person reads it."""
    if span % dt.timedelta(days=1) == dt.timedelta(0):
        return f"{span.days} days" if span.days != 1 else "1 day"
    hours = span / dt.timedelta(hours=1)
    return f"{hours:g} hours"


def _weeks_for(days: int) -> int:
    """Weeks of history to simulate for a baseline of `days`: those days and a week of
    judgements after them, 3 at least (it said 3 whatever the baseline: a rule comparing a
    week with the 4 before, 35 days, still made no task on 21)."""
    return max(3, -(-days // 7) + 1)


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The fields of a task that differ between two runs, `moment`'s by its own keys
    (`moment.params`, `moment.description`): none when they are the same task."""
    out = []
    for key in sorted((set(before) | set(after)) - set(CHANGE_IGNORES)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key == "moment" and isinstance(old, Mapping) and isinstance(new, Mapping):
            out += [f"moment.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        else:
            out.append(key)
    return out


def _by_count(fields: Counter[str]) -> dict[str, int]:
    """`{field: tasks}`, the most frequent first (then by name)."""
    return dict(sorted(fields.items(), key=lambda kv: (-kv[1], kv[0])))


# --- rendering ------------------------------------------------------------------------


def _table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    cells = [[_cell(v) for v in row] for row in rows]
    table = Table(title=title, title_justify="left", collapse_padding=True, pad_edge=False)
    for i, h in enumerate(headers):
        # A value keeps its width (a header wraps instead): in 80 columns the capacity
        # table showed `2026-12…` and `outboun…`, the day and channel cut.
        widest = max((len(row[i]) for row in cells), default=0)
        table.add_column(h, justify="left" if i == 0 else "right", min_width=min(widest, 24))
    for row in cells:
        table.add_row(*row)
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "unlimited"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def sections(
    report: Mapping[str, Any], terminal: bool = False
) -> list[tuple[str, list[str], list[list[Any]]]]:
    """The report's tables as (title, headers, rows): one source for terminal, Markdown
    and HTML. `terminal`: the per-day tables of moment type, region and channel, and
    the daily capacity rows, are summed up per value (the files have them in full)."""
    out: list[tuple[str, list[str], list[list[Any]]]] = []
    s = report["summary"]
    ran = [[name, value] for name, value in report.get("run", {}).items() if value is not None]
    out.append(
        (
            "Summary",
            ["figure", "value"],
            [
                *ran,
                ["report from", s.get("report_start") or s["report_from"] or "the first event"],
                # The per-day tables' days are the policy zone's: said in the shared files.
                ["days (tasks, capacity) are local days of", s["timezone"]],
                ["events reported (from the report's start)", s["events"]],
                *(
                    [
                        ["warm-up events (before --from)", s["warmup_events"]],
                        [
                            "warm-up tasks not dispatched (before the caps' period)",
                            s.get("warmup_tasks", 0),
                        ],
                    ]
                    if s["report_from"] is not None
                    else []
                ),
                *(
                    [
                        [
                            "events before --live-from (state built, no task)",
                            s.get("events_before_live_from", 0),
                        ]
                    ]
                    if report.get("run", {}).get("--live-from")
                    else []
                ),
                ["tasks published", s["tasks"]],
                *(
                    [["tasks withdrawn after publishing", withdrawn]]
                    if (withdrawn := s.get("tasks_withdrawn"))
                    else []
                ),
                ["first event", s["first_event"]],
                ["last event", s["last_event"]],
                ["still waiting at the end", _waiting(s)],
                ["dead letters", _dead_letters(s["dead_letters"])],
                *(
                    [["lines no JSON object (dead letters)", _unreadable(unreadable)]]
                    if (unreadable := s.get("unreadable_lines", {})).get("count")
                    else []
                ),
                *(
                    [["lines with no event type (left out)", _unreadable(untyped)]]
                    if (untyped := s.get("untyped_lines", {})).get("count")
                    else []
                ),
                *(
                    [["files ended early (read to the line)", _ended(ended)]]
                    if (ended := s.get("files_ended_early"))
                    else []
                ),
                ["events/s", s["events_per_second"]],
                [
                    "state per subscriber, bytes (mean / p99 / max)",
                    "{mean} / {p99} / {max}".format(**s["state_bytes_per_subscriber"]),
                ],
                *[[f"  seconds: {k}", v] for k, v in s["seconds_by_part"].items()],
            ],
        )
    )
    partial: Mapping[str, str] = report.get("partial_days", {})
    for dim in DIMENSIONS:
        days, values, counts = pivot(report["tasks_per_day"][dim], dim, report.get("days"))
        if terminal and dim != "family":
            out.append(_per_value(dim, days, values, counts, partial))
            continue
        rows = [
            [
                day_label(d, partial),
                *(counts.get((d, v), 0) for v in values),
                sum(counts.get((d, v), 0) for v in values),
            ]
            for d in days
        ]
        out.append((f"Tasks per day by {dim.replace('_', ' ')}", ["day", *values, "total"], rows))
    cap = [
        [
            day_label(r["day"], partial),
            r["region"],
            r["channel"],
            r["needed"],
            r["new"],
            r["taken"],
            r["configured"],
        ]
        for r in report["capacity"]
    ]
    if terminal:
        out.append(_capacity_peaks(report["capacity"], partial))
    else:
        out.append(
            (
                "Capacity needed vs configured",
                ["day", "region", "channel", "needed", "new", "taken", "configured"],
                cap,
            )
        )
    out.append(
        _or_none(
            "Suppressed by reason",
            ["reason", "moment type", "tasks"],
            [
                [r["reason"], r["moment_type"], r["tasks"]]
                for r in report["suppressed_by_moment_type"]
            ],
            "None were suppressed: no moment or task was dropped, by the gates or dispatch.",
        )
    )
    out.append(
        _or_none(
            "Deferred by reason",
            ["reason", "deferrals"],  # decisions: a task waiting twice counts twice
            [[k, v] for k, v in report["deferred"].items()],
            "None were deferred: no task waited, for the gates or dispatch.",
        )
    )
    if report.get("overflow"):
        out.append(
            (
                "Overflow: moments over their channel's capacity, by what became of them",
                ["policy", "moment type", "tasks"],
                [[r["policy"], r["moment_type"], r["tasks"]] for r in report["overflow"]],
            )
        )
    out.append(
        _or_none(
            "Merged: moments that joined a subscriber's waiting task (the group's highest "
            "priority leads the task it makes, the others are in its `related`)",
            ["moment type of the one that joined", "tasks"],
            [[k, v] for k, v in report["merged"].items()],
            "None were merged: no moment joined a waiting task.",
        )
    )
    out.append(
        _or_none(
            "Top rules by volume: tasks each leads, and its moments carried in another rule's task",
            ["rule", "tasks", "merged into others"],
            [[r["rule_id"], r["tasks"], r["merged_into_others"]] for r in report["top_rules"]],
            "No rule made a task.",
        )
    )
    if report.get("shadow"):
        out.append(
            (
                "Shadow rules: what they would have done (no task made)",
                ["rule", "outcome", "reason", "moments"],
                [[r["rule_id"], r["outcome"], r["reason"], r["moments"]] for r in report["shadow"]],
            )
        )
    if "comparison" in report:
        c = report["comparison"]
        out.append(
            (
                "Compared with the baseline rules: tasks each rule leads, added, removed and "
                "changed; its moments carried in other rules' tasks, baseline -> candidate",
                ["rule", "added", "removed", "changed", "merged into others"],
                [
                    [
                        _rule_label(r),
                        r["added"],
                        r["removed"],
                        r["changed"],
                        _arrow(r.get("merged_into_others", (0, 0))),
                    ]
                    for r in [*c["per_rule"], {"rule_id": "total", **c["totals"]}]
                ],
            )
        )
        changes = [
            [r["rule_id"], name, n]
            for r in c["per_rule"]
            for name, n in r.get("what_changed", {}).items()
        ]
        out.append(
            _or_none(
                "What changed in the changed tasks: the task fields that differ, per rule, "
                "and in how many of its tasks (moment.params: a threshold or a value the "
                "rule read)",
                ["rule", "field", "tasks"],
                changes,
                "No task changed: every task both rule sets publish is the same, field for "
                "field (those only one publishes are the added and removed above).",
            )
        )
        if "per_moment_type" in c:
            out.append(
                _or_none(
                    "Moments by type, baseline -> candidate (the changed ones)",
                    ["moment type", "detected", "suppressed", "published"],
                    [
                        [
                            r["moment_type"],
                            *(_arrow(r[k]) for k in ("detected", "suppressed", "published")),
                        ]
                        for r in c["per_moment_type"]
                    ],
                    "No moment type changed: each was detected, suppressed and published as "
                    "often with the baseline rules as with these.",
                )
            )
    return out


def _or_none(
    title: str, headers: list[str], rows: list[list[Any]], none: str
) -> tuple[str, list[str], list[list[Any]]]:
    """A table of counts, or, with no row, the line `none` says instead (no headers: each
    renderer prints it under the title). Its headers alone read as a table cut off."""
    return (title, headers, rows) if rows else (title, [], [[none]])


def _rule_label(row: Mapping[str, Any]) -> str:
    """`big_topup (new)`, `legacy (removed)`; a rule in both catalogs by its id alone."""
    presence = row.get("rule", "in both")
    return str(row["rule_id"]) if presence == "in both" else f"{row['rule_id']} ({presence})"


def _arrow(pair: Sequence[int]) -> str:
    return f"{pair[0]:,}" if pair[0] == pair[1] else f"{pair[0]:,} -> {pair[1]:,}"


def day_label(day: str, partial: Mapping[str, str]) -> str:
    """`2026-12-08 (to 10:05)` for a day the history covers in part, else the day."""
    return f"{day} ({partial[day]})" if day in partial else day


def _per_value(
    dim: str,
    days: list[str],
    values: list[str],
    counts: Mapping[tuple[str, str], int],
    partial: Mapping[str, str] | None = None,
) -> tuple[str, list[str], list[list[Any]]]:
    partial = partial or {}
    rows: list[list[Any]] = []
    for v in values:
        daily = [counts.get((d, v), 0) for d in days]
        peak = max(range(len(days)), key=lambda i: daily[i])
        mean = sum(daily) / len(days)  # 0.3, not 0, for 2 tasks in 6 days
        rows.append(
            [
                v,
                sum(daily),
                round(mean, 1) if mean < 10 else round(mean),
                daily[peak],
                day_label(days[peak], partial),
            ]
        )
    rows.sort(key=lambda r: -int(r[1]))
    inpart = sum(1 for d in days if d in partial)
    part = f", {inpart} of them in part" if inpart else ""
    title = f"Tasks by {dim.replace('_', ' ')} ({len(days)} day(s){part}; per day in report.md)"
    return title, [dim.replace("_", " "), "total", "mean/day", "peak/day", "peak day"], rows


def _capacity_peaks(
    rows: Iterable[Mapping[str, Any]], partial: Mapping[str, str] | None = None
) -> tuple[str, list[str], list[list[Any]]]:
    """Per region and channel: the most tasks a day brought (`new`: what to staff for;
    `needed` also counts each task refused before and asking again, so it grows with the
    backlog a short capacity makes) against the limit, the days that brought more than
    it, the tasks that asked (each once, on its first day) and the refusals (a task
    refused on two days is two: decisions, not tasks). A day the history covers in part
    is marked `*`: its demand is those hours' only."""
    partial = partial or {}
    by: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        by.setdefault((str(r["region"]), str(r["channel"])), []).append(r)
    out: list[list[Any]] = []
    for (region, channel), days in sorted(by.items()):
        peak = max(days, key=lambda r: int(r["new"]))
        limit = peak["configured"]
        over = sum(1 for r in days if limit is not None and r["new"] > limit)
        refused = sum(int(r["needed"]) - int(r["taken"]) for r in days)
        new = sum(int(r["new"]) for r in days)
        day = str(peak["day"]) + ("*" if peak["day"] in partial else "")
        out.append([region, channel, limit, peak["new"], day, over, new, refused])
    return (
        "Capacity needed vs configured (busiest day, * in part; every day in report.md)",
        ["region", "channel", "limit", "peak new", "peak day", "over", "tasks", "refusals"],
        out,
    )


def _waiting(summary: Mapping[str, Any]) -> str:
    """`2 (merge_window: manager 1; quiet_hours: sms 1)`, or `0`."""
    total = int(summary["waiting_at_end"])
    rows = summary.get("waiting_at_end_by") or []
    return f"{total:,} ({waiting_by_said(rows)})" if total and rows else f"{total:,}"


def _dead_letters(by_reason: Mapping[str, int]) -> str:
    """`3 (invalid_event 2, invalid_json 1)`, or `0`."""
    total = sum(by_reason.values())
    if not total:
        return "0"
    return f"{total:,} (" + ", ".join(f"{r} {n:,}" for r, n in sorted(by_reason.items())) + ")"


def _unreadable(lines: Mapping[str, Any]) -> str:
    """`2: a.jsonl:4, a.jsonl:9`, with `and N more` past the ones named."""
    return f"{lines['count']:,}: " + lines_named(lines["count"], lines["first"])


def _ended(cuts: list[Mapping[str, Any]]) -> str:
    """`h.jsonl.gz:845 (gzip stream truncated)`, one per file cut short."""
    return ", ".join(f"{c['file']}:{c['line']} ({c['why']})" for c in cuts)


def print_report(report: Mapping[str, Any], console: Console) -> None:
    for title, headers, rows in sections(report, terminal=True):
        if headers:
            console.print(_table(title, headers, rows))
        else:  # a line instead of an empty table (`_or_none`)
            console.print(title, style="italic", highlight=False)
            console.print(rows[0][0], highlight=False)


def markdown(report: Mapping[str, Any]) -> str:
    parts = ["# Backtest report", ""]
    parts += [f"> **Warning:** {warning}\n" for warning in report.get("warnings", ())]
    parts += [f"> **Note:** {note}\n" for note in report.get("notes", ())]
    for title, headers, rows in sections(report):
        if not headers:  # a line instead of an empty table (`_or_none`)
            parts += [f"## {title}", "", str(rows[0][0]), ""]
            continue
        parts += [f"## {title}", "", "| " + " | ".join(headers) + " |"]
        parts.append("|" + "|".join("---" for _ in headers) + "|")
        parts += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
        parts.append("")
    return "\n".join(parts)


def chart_png(report: Mapping[str, Any]) -> bytes:
    """Tasks per day (or per week, month, year: `chart_unit`) by family, stacked bars
    (matplotlib, Agg: no display needed)."""
    fig = chart_figure(report)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


CHART_HEADROOM = 1.08
"""The y axis reaches this much above the tallest day: at its top exactly, that day's bar
ran into the frame, its top edge unreadable (analyst walk)."""

CHART_MAX_BARS = 92
"""Up to this many days (three months) the chart draws a bar per day; past it, a bar per
week, else per month, else per year, the first with at most this many bars. Half an inch
per day, ten years of `--to` drew a PNG 183,100 px wide (two years took 48.7 s to draw);
92 bars make at most 5,050 px. The report's tables stay per day."""

CHART_UNITS = ("day", "week", "month", "year")


def _bin_start(day: str, unit: str) -> str:
    """The first day of the week (a Monday), month or year `day` falls in, as its label."""
    if unit == "week":
        date = dt.date.fromisoformat(day)
        return (date - dt.timedelta(days=date.weekday())).isoformat()
    return {"day": day, "month": day[:7], "year": day[:4]}[unit]


def _bin_length(start: str, unit: str) -> int:
    """The days in the week, month or year that begins at `start` (a `_bin_start`)."""
    if unit == "week":
        return 7
    if unit == "year":
        year = int(start)
        return (dt.date(year + 1, 1, 1) - dt.date(year, 1, 1)).days
    first = dt.date.fromisoformat(f"{start}-01")
    return ((first + dt.timedelta(days=31)).replace(day=1) - first).days


def chart_unit(days: Sequence[str]) -> str:
    """What one bar of the chart is: `day` up to `CHART_MAX_BARS` days, else the first of
    week, month, year that draws at most that many bars (year past it: 92 years)."""
    for unit in CHART_UNITS[:-1]:
        if len({_bin_start(d, unit) for d in days}) <= CHART_MAX_BARS:
            return unit
    return CHART_UNITS[-1]


def chart_title(unit: str) -> str:
    """The chart's title, naming what one bar is (also the HTML page's alt text)."""
    if unit == "week":
        return "Tasks per week (Monday to Sunday) by family"
    return f"Tasks per {unit} by family"


def chart_bins(
    report: Mapping[str, Any],
) -> tuple[str, list[str], list[str], dict[tuple[str, str], int]]:
    """(unit, bar labels, families, counts per (label, family)) of the chart: per day,
    labels as the tables write them; per week, month or year, its first day, month or year,
    `(part)` under a bar the report covers in part (the range begins or ends inside it, or
    one of its days is covered in part)."""
    days, families, counts = pivot(report["tasks_per_day"]["family"], "family", report.get("days"))
    partial = report.get("partial_days", {})
    unit = chart_unit(days)
    if unit == "day":
        return unit, days, families, counts
    covered: Counter[str] = Counter(_bin_start(d, unit) for d in days)
    in_part = {b for b, n in covered.items() if n < _bin_length(b, unit)}
    in_part |= {_bin_start(d, unit) for d in partial}
    binned: Counter[tuple[str, str]] = Counter()
    for (day, family), n in counts.items():
        binned[_bin_start(day, unit), family] += n
    label = {b: f"{b} (part)" if b in in_part else b for b in covered}
    labels = [label[b] for b in sorted(covered)]
    return unit, labels, families, {(label[b], f): n for (b, f), n in binned.items()}


def chart_figure(report: Mapping[str, Any]) -> Figure:
    """The figure `chart_png` draws: the legend outside the bars, on their right (inside,
    at the top right, it hid the last days' tops on a week of similar days)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    unit, days, families, counts = chart_bins(report)
    # 1.5 in. more than the bars take, for the legend beside them
    fig = Figure(figsize=(max(6.0, 0.5 * len(days) + 3) + 1.5, 4.5), dpi=100)
    ax = fig.subplots()
    xs = list(range(len(days)))
    bottom = [0] * len(days)
    for family in families:
        heights = [counts.get((d, family), 0) for d in days]
        ax.bar(xs, heights, bottom=bottom, label=family)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    partial = report.get("partial_days", {}) if unit == "day" else {}
    ax.set_xticks(xs, [day_label(d, partial).replace(" (", "\n(") for d in days])
    ax.set_title(chart_title(unit))
    ax.set_ylabel("tasks")
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_ylim(0, max(max(bottom, default=0), 1) * CHART_HEADROOM)
    if families:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def chart_html(report: Mapping[str, Any], png: bytes) -> list[str]:
    """The chart on the HTML page: the PNG as a data URI, its alt text naming what one bar
    is, and past `CHART_MAX_BARS` days a note that the tables stay per day."""
    image = base64.b64encode(png).decode()
    body: list[str] = []
    unit = chart_unit(pivot(report["tasks_per_day"]["family"], "family", report.get("days"))[0])
    alt = html.escape(chart_title(unit), quote=True)
    body.append(f'<img alt="{alt}" src="data:image/png;base64,{image}">')
    if unit != "day":
        body.append(
            f'<p class="note">One bar of the chart is a {unit} (the range has more than '
            f"{CHART_MAX_BARS} days); the tables below are per day.</p>"
        )
    return body


def html_page(report: Mapping[str, Any], png: bytes) -> str:
    """One file: the chart as a data URI, every table inline, no external assets."""
    body = [
        "<h1>Backtest report</h1>",
    ]
    body += [
        f'<p class="warning"><strong>Warning:</strong> {html.escape(w)}</p>'
        for w in report.get("warnings", ())
    ]
    body += [
        f'<p class="note"><strong>Note:</strong> {html.escape(n)}</p>'
        for n in report.get("notes", ())
    ]
    body += chart_html(report, png)
    for title, headers, rows in sections(report):
        if not headers:  # a line instead of an empty table (`_or_none`)
            body.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(str(rows[0][0]))}</p>")
            continue
        body.append(f"<h2>{html.escape(title)}</h2><table><thead><tr>")
        body += [f"<th>{html.escape(h)}</th>" for h in headers]
        body.append("</tr></thead><tbody>")
        for row in rows:
            body.append(
                "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
            )
        body.append("</tbody></table>")
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        ".warning{background:#fff3cd;border:1px solid #e0b000;padding:.5em .8em}"
        ".note{background:#eef4fb;border:1px solid #9bb8d9;padding:.5em .8em}"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Backtest report</title><style>{style}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )


def state_sizes(sizes: list[int]) -> dict[str, int]:
    """Mean, 99th percentile and largest of the records' sizes (sorted; 0s when none)."""
    if not sizes:
        return {"subscribers": 0, "mean": 0, "p99": 0, "max": 0}
    p99 = sizes[min(len(sizes) - 1, int(len(sizes) * 0.99))]
    return {
        "subscribers": len(sizes),
        "mean": round(sum(sizes) / len(sizes)),
        "p99": p99,
        "max": sizes[-1],
    }
