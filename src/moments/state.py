"""Per-subscriber state: one compact record, serialised with orjson and compressed with
zstd against a trained dictionary (moments.statezip).

One record per subscriber (not one table entry per metric) keeps changelog
writes to one per subscriber per batch. Replays are harmless: every update is
guarded by the last applied offset per source topic and partition and by a short ring
of recent event ids per source, so at-least-once input never double-applies an event.

Windowed aggregates live here too, as fixed rings (`series`), rather than in
Faust windowed tables, which do not expire after a rebalance and can be lost on
restart (faust-streaming #385, #412); see docs/architecture.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson

from moments.statezip import (
    MisnamedRecordError,
    NewerRecordError,
    StateFormatError,
    pack,
    unpack,
)

MAX_OPEN = 16
"""Complaints remembered (open ones and recent resolutions); more is as good as many."""
RECENT_EVENT_IDS = {"u": 8}
"""How many recent event-id digests a subscriber keeps per source to drop events
delivered again: 8 of the frequent usage events, `RECENT_EVENT_IDS_ELSE` of each other
source. Digests hardly compress: rings of 8 for every source took a simulated week's
records from 350 to 526 bytes a subscriber on average; these sizes, to 432."""
RECENT_EVENT_IDS_ELSE = 2
STORED_KEYS = frozenset("abcdefghjklnopqrstwxyG")
"""The keys of a stored record (`SubscriberState.to_json`, read by `from_bytes`), one
letter a field: `moments state decode` refuses a document with any other."""
ERASED_KEPT_S = 90 * 86400
"""How long a record started after a profile tombstone remembers the erasure (`erased`),
in event time: as long as the dispatch stores keep the `forgotten` mark
(sinks.relevance.FACTS_TTL_S)."""


DIGEST_CHARS = 10
"""The length of an `event_digest`: a ring of them is stored as one string of them."""


def event_digest(event_id: str) -> str:
    """A short, stable digest of an event id: 5 bytes of blake2b, hex. Among the 8 of a
    ring, another id matches by chance once in ~10^11 events."""
    return hashlib.blake2b(event_id.encode(), digest_size=5).hexdigest()


class DamagedRecordError(StateFormatError):
    """Stored bytes that hold no record (not zstd or JSON, cut short, no JSON object): none
    of it can be read. Whoever reads it begins the subscriber afresh and counts it
    (`moments_state_records_damaged_total`); a record a newer version wrote is another case
    (`NewerRecordError`). Or a record whose frame names a dictionary it was not written
    with (the id damaged), read with its own (`MisnamedRecordError`): `record`, kept and
    counted (`FRAME_DICTIONARY`)."""

    def __init__(self, message: str, record: SubscriberState | None = None) -> None:
        super().__init__(message)
        self.record = record


UNREADABLE = "unreadable"
"""What `Detector.process` says was reset of a record `DamagedRecordError` refused: all of it."""
FRAME_DICTIONARY = "dictionary id"
"""What it says was reset of a record whose frame named a dictionary it was not written
with (`DamagedRecordError.record`): the id, the record written back naming its own."""


PROFILE_AT_ANY = "*"
"""The `SubscriberState.profile_at` key that dates every profile field not named in it."""


MARK_ID_CHARS = 8
"""A cooldown mark names its task by this many hex characters of the task id: the
marks it must tell apart are one subscriber's, of one rule, in one second."""


def mark_id(task_id: str) -> str:
    """What `SubscriberState.fired_by` holds for a task (ids are blake2b hex digests)."""
    return task_id[:MARK_ID_CHARS]


SHADOW_MARK = "s"
"""What `SubscriberState.fired_by` holds for a mark a shadow judgement set (a rule in
`mode: shadow`, or any rule before `MOMENTS_LIVE_FROM`): no hex digest, so no task's. It
holds the rule's shadow judgements back, as the live rule would be; a live judgement
passes it: nobody was contacted."""


@dataclass(slots=True)
class SubscriberState:
    """Everything the detector remembers about one subscriber."""

    first_seen: dict[str, int] = field(default_factory=dict)
    """First-time keys (`<rule tag>:<value>`) -> event time (epoch seconds) last seen."""
    offsets: dict[str, int] = field(default_factory=dict)
    """Source (event type code) and partition (`u3`) -> highest offset applied; guards
    re-reads after a crash. Per partition: an event produced to another partition than
    its key's has offsets of its own, which say nothing of the right partition's."""
    recent: dict[str, list[str]] = field(default_factory=dict)
    """Source -> digests of its latest event ids, newest last; guards events delivered
    again. Per source: ids are unique per upstream system, not across them, and a burst
    of usage events must not push a complaint's id out."""
    profile: dict[str, Any] = field(default_factory=dict)
    """Profile fields as last sent on the profile topic (JSON-ready values)."""
    profile_at: dict[str, int] = field(default_factory=dict)
    """Profile field -> `occurred_at` (epoch seconds) of the update that last set or
    cleared it: each field is the latest update's that carried it (last writer wins per
    field, moments.tracking.profile_update), so two CRM services' partial updates read
    out of order do not refuse each other. `PROFILE_AT_ANY` (`*`) dates every field not
    named: a record written before fields had times has it, at its latest profile time
    (`seen["p"]`), and refuses an older update for any field, as it did then. Stored as
    seconds before `seen["p"]` (mostly 0: compact)."""
    series: dict[str, list[float]] = field(default_factory=dict)
    """Series tag -> ring: [newest window index, then each window's slots, newest first];
    and `hotline`: calls to a competitor's hotline per day (moments.risk.HOTLINE_CALLS)."""
    last: dict[str, str] = field(default_factory=dict)
    """Rule tag -> last value of a `changed` field (e.g. the IMEI)."""
    last_at: dict[str, int] = field(default_factory=dict)
    """Rule tag -> event time of `last[tag]`: a value dated before it, read late (two feeds
    out of order, within the lateness), says what the line showed then, not what it shows
    now. Absent for a value kept before its time was."""
    fired: dict[str, int] = field(default_factory=dict)
    """Rule tag -> event time it last created a task (cooldowns)."""
    fired_by: dict[str, str] = field(default_factory=dict)
    """Rule tag -> which task set `fired[tag]` (`mark_id` of its task id): a cooldown
    given back removes the mark only while it is that task's (moments.cooldowns). Marks
    are kept to the second, and a later task of the rule may set the same second. Absent
    for a mark set before it was kept, or by a shadow rule (no task)."""
    shadowed: dict[str, str] = field(default_factory=dict)
    """`<rule tag>.<kind>` -> the occurrence of that kind (`silent`, `birthday`,
    `contract_expiry`, `holiday`, ...: its text before the first `:`) a judgement of the
    rule in `mode: shadow` last fired on, for a rule whose moments are judged again on
    later looks (a silence, a special day: `CompiledRule.judged_again`). Gone live, the
    rule's first live judgement of that occurrence is its first, counted in
    `moments_detected_total`, not the moment judged again (moments.sweep); a live
    judgement of the rule's occurrence of that kind removes it (`note_judged`). Per kind:
    a rule of several occasions fires on two the same day (a contract's end and New
    Year), and one kept per rule tag (as written before) held the last alone, so the
    other's first live judgement went uncounted. Removed by a live judgement, the first
    judgement of the rule put in `mode: shadow` since is its first in the shadow figures."""
    leads: dict[str, list[Any]] = field(default_factory=dict)
    """Rule tag -> `[occurrence, local day ordinal]`: the contract's end the rule fired on
    at that day's last look (moments.sweep), kept until a look where it fires on none.
    The next day's look tells by it that the moment was judged the day before when a
    profile update since took away the profile that look read: re-judged with the new
    one, an update before a day's look counted the moment detected once more."""
    changed_after_look: int = 0
    """Ordinal of the local day last looked at (`special_day`) when a profile update was
    applied after that look (0: none since): the next day's look judges that day by
    `leads`, the profile that look read being gone, whatever the update's date. Dated
    before the day and read after its look (a CRM feed behind), an update went unseen by
    a check of `seen["p"]` against the day's end (moments.sweep)."""
    seen: dict[str, int] = field(default_factory=dict)
    """Source code -> latest event time seen (absence)."""
    closed: dict[str, int] = field(default_factory=dict)
    """Period -> the first window not yet closed (window-close evaluation)."""
    roaming: dict[str, Any] = field(default_factory=dict)
    """While abroad: the visited place's zone (`z`) and/or UTC offset minutes (`o`)."""
    complaints: dict[str, int] = field(default_factory=dict)
    """Complaints opened and not yet resolved: id -> event time of its latest record
    (opened or updated), the latest last, at most MAX_OPEN. A resolved one is kept as its
    resolution's time negated, only while a late record older than it could still be
    applied (the lateness): such a record must not reopen it (moments.tracking.track).
    Written before the times were kept, a list of ids: each then dates from the
    subscriber's latest complaint record."""
    special_day: int = 0
    """Ordinal of the local day whose special days were last looked at (0: never)."""
    region: str = ""
    """The region (city) the subscriber's latest event named, kept while the profile names
    none: their region for rules with no event (close-time, special days) and on tasks.
    ("" while the profile names one; a profile region cleared later leaves none until an
    event names one again.)"""
    watermark: int = 0
    """Latest event time applied (epoch seconds); older than it minus lateness is late."""
    erased: int = 0
    """When a profile tombstone erased the subscriber before this record began (epoch
    seconds; 0: none known): an event dated at or before it is the erased subscriber's,
    read late, and is dropped. Forgotten once the record's event time is `ERASED_KEPT_S` past it."""
    stamp: tuple[int, ...] | None = field(default=None, compare=False)
    """The record's fencing stamp (moments.fence): set by the store when it saves the
    record for a changelog; `()` for a record read without one; None for a record made
    here, not read."""
    damaged: str = field(default="", compare=False)
    """What of the stored record was reset when it was read (`UNREADABLE`, or the fields
    `mend` reset); "" for a record read whole or made here. Set by the window sweep's read
    (`FaustTableStore.items`), which writes such a record back and counts it."""

    def erased_by(self, at: int) -> bool:
        """True when an event dated `at` came before the erasure this record began after."""
        erased = self.erased
        return erased != 0 and at <= erased and self.watermark - erased <= ERASED_KEPT_S

    def shadow_judged(self, tag: str, occurrence: str) -> bool:
        """Whether the rule (`tag`) last judged `occurrence` in `mode: shadow` (`shadowed`)."""
        shadowed = self.shadowed
        if not shadowed:
            return False
        key = f"{tag}.{occurrence.partition(':')[0]}"
        return shadowed.get(key, shadowed.get(tag)) == occurrence  # by tag, written before

    def note_judged(self, tag: str, occurrence: str, shadow: bool) -> None:
        """Note a judgement of the rule (`tag`) that fired on `occurrence`: in shadow, so
        that its first live one counts it; live, which removes that note (its next look
        judges it again), for this occurrence's kind only."""
        shadowed = self.shadowed
        if shadow:
            shadowed[f"{tag}.{occurrence.partition(':')[0]}"] = occurrence
        elif shadowed:
            shadowed.pop(f"{tag}.{occurrence.partition(':')[0]}", None)
        if shadowed.get(tag) == occurrence:  # kept per rule tag before
            del shadowed[tag]

    def is_replay(self, source: str, partition: int, offset: int | None, digest: str) -> bool:
        """True when the event was read before: its partition's offset, or its id
        (`event_digest`) among the source's recent ones."""
        # `in`, not `get`: no call (every event passes here)
        key = f"{source}{partition}"
        if offset is not None and key in self.offsets and offset <= self.offsets[key]:
            return True
        return source in self.recent and digest in self.recent[source]

    def applied(self, source: str, partition: int, offset: int | None, digest: str | None) -> None:
        """Note the event's offset as read and, with a digest, its id as applied. An
        event refused for its time (a dead letter `future` or `late`) notes only its
        offset: its replay once due, or a corrected re-send, has the same id and must
        still be applied.

        Every id applied goes to the new end of the ring, out-of-order ones too: a
        producer's retry within the ring's size of arrivals is caught whatever the order.
        The price is a re-send of more events than the ring holds: each re-sent event the
        ring forgot is applied again and pushes out the id of the next, so the whole
        re-send is applied again (docs/producing-events.md, "Sending again"; counted in
        `moments_events_out_of_order_total`). Putting such ids at the old end stopped
        that, but then a late event's own retry was applied twice (re-check review)."""
        if offset is not None:
            self.offsets[f"{source}{partition}"] = offset
        if digest is None:
            return
        if source in self.recent:
            ring = self.recent[source]
        else:
            self.recent[source] = ring = []
        ring.append(digest)
        if len(ring) > RECENT_EVENT_IDS.get(source, RECENT_EVENT_IDS_ELSE):
            del ring[0]

    def to_bytes(self) -> bytes:
        """The record as stored: its JSON, compressed (see moments.statezip)."""
        return pack(self.to_json())

    def to_json(self) -> bytes:
        # Written out field by field: this runs for every changed subscriber of every batch.
        doc: dict[str, Any] = {"o": self.offsets, "r": _stored_rings(self.recent)}
        if self.first_seen:
            doc["f"] = self.first_seen
        if self.profile:
            doc["p"] = self.profile
        if self.profile_at or "p" in self.seen:  # none: a record of before (`_profile_at`)
            doc["q"] = _stored_profile_at(self.profile_at, self.seen.get("p", 0), self.profile)
        if self.series:
            doc["s"] = self.series
        if self.last:
            doc["l"] = self.last
        if self.last_at:
            doc["t"] = self.last_at
        if self.fired:
            doc["x"] = self.fired
        if self.fired_by:
            doc["y"] = self.fired_by
        if self.shadowed:
            doc["h"] = self.shadowed
        if self.leads:
            doc["j"] = self.leads
        if self.changed_after_look:
            doc["b"] = self.changed_after_look
        if self.seen:
            doc["n"] = self.seen
        if self.closed:
            doc["c"] = self.closed
        if self.roaming:
            doc["g"] = self.roaming
        if self.complaints:
            doc["k"] = self.complaints
        if self.watermark:
            doc["w"] = self.watermark
        if self.special_day:
            doc["d"] = self.special_day
        if self.erased:
            doc["e"] = self.erased
        if self.region:
            doc["a"] = self.region
        if self.stamp:
            doc["G"] = self.stamp
        return orjson.dumps(doc)

    @classmethod
    def from_bytes(cls, data: bytes) -> SubscriberState:
        """A stored record (compressed, or plain JSON as written before compression).

        Bytes that hold no record raise `DamagedRecordError`, one a newer version wrote
        `NewerRecordError`. A record whose fields have shapes the detector never writes (a
        damaged or hand-edited one) is read as it is: `mend` finds and resets them where
        such a record made the detector fail (`Detector.process`), so a sound record is not
        checked field by field on every read."""
        try:
            doc = orjson.loads(unpack(data))
            return cls(
                first_seen=doc.get("f", {}),
                offsets=doc.get("o", {}),
                recent=_rings(doc.get("r")),
                profile=doc.get("p", {}),
                profile_at=_profile_at(doc.get("q"), doc.get("n"), doc.get("p")),
                series=doc.get("s", {}),
                last=doc.get("l", {}),
                last_at=doc.get("t", {}),
                fired=doc.get("x", {}),
                fired_by=doc.get("y", {}),
                shadowed=doc.get("h", {}),
                leads=doc.get("j", {}),
                changed_after_look=doc.get("b", 0),
                seen=doc.get("n", {}),
                closed=doc.get("c", {}),
                roaming=doc.get("g", {}),
                complaints=_complaints(doc.get("k"), doc.get("n")),
                watermark=doc.get("w", 0),
                special_day=doc.get("d", 0),
                erased=doc.get("e", 0),
                region=doc.get("a", ""),
                stamp=_stamp(doc.get("G")),
            )
        except NewerRecordError:
            raise
        except MisnamedRecordError as exc:
            raise DamagedRecordError(str(exc), cls.from_bytes(exc.json)) from exc
        except (ValueError, AttributeError) as exc:  # orjson's, unpack's; a doc of no object
            what = exc if isinstance(exc, StateFormatError) else type(exc).__name__
            raise DamagedRecordError(f"no subscriber record ({what})") from exc

    def faults(self) -> list[str]:
        """The fields whose shape is none the detector writes (a damaged or hand-edited
        record), by name; [] for a sound record. Each is a reason the detector would
        raise on it (a time that is no number, a ring that is no list of digests, a
        profile field its model refuses...), so a record that passes fails no event for its
        shape. Not run on every read: `Detector.process` asks it where a record failed."""
        bad = [name for name, check in _SHAPES if not check(getattr(self, name))]
        if not isinstance(self.profile, dict) or _profile_faults(self.profile):
            bad.append("profile")
        return bad

    def mend(self) -> list[str]:
        """Reset the fields `faults` names, keeping the rest: of a profile, only the fields
        its model refuses go; of a field of entries that stand alone (`_ENTRIES`: a rule
        tag's, a partition's, a complaint's), only the damaged entries; another field's
        entry for the same key that describes one thing with a dropped one goes too, or is
        made consistent with it (`_pair_up`). Returns the fields reset (in part or whole),
        then the other fields so changed.

        Whole, a field lost its sound entries with the damaged one: a ring nothing reads (a
        rule no longer in force) or a first-time key of no time took every series' history
        or every first-time key with it when anything else made the record mended."""
        bad = self.faults()
        fresh = SubscriberState()
        dropped: dict[str, list[str] | None] = {}  # field -> entries dropped (None: all)
        for name in bad:
            value = getattr(self, name)
            if name == "profile" and isinstance(value, dict):
                for key in _profile_faults(value):
                    value.pop(key, None)
            elif (sound := _ENTRIES.get(name)) is not None and type(value) is dict:
                gone = dropped[name] = [key for key, entry in value.items() if not sound(entry)]
                for key in gone:
                    del value[key]
            else:
                setattr(self, name, getattr(fresh, name))
                dropped[name] = None
        if "profile_at" in bad and "p" in self.seen:  # as a record of before they were kept
            self.profile_at = {PROFILE_AT_ANY: self.seen["p"]}
        return bad + [name for name in self._pair_up(dropped) if name not in bad]

    def _pair_up(self, dropped: dict[str, list[str] | None]) -> list[str]:
        """Make the entries that describe one thing with those `mend` dropped (`dropped`:
        field -> keys, None for all) consistent with it; returns the fields changed.

        - A cooldown mark's task (`fired_by`) goes with its time (`fired`): kept alone, a
          re-judged moment (a silence, a contract's lead) took the mark for its own and set
          none (moments.taskmaking), and the rule held no cooldown. A time whose task was
          dropped stays: a mark of before tasks were named, which holds back all the same.
        - A series' begin (`<tag>.b`, rules.series) goes with its ring: kept alone, a
          "fewer than" test read the windows since it as empty and fired for a customer
          whose events the ring held. A begin dropped leaves the ring's first window as
          where the history began (later: the test waits longer).
        - A changed value (`last`) whose time (`last_at`) was dropped is dated at the
          latest event time applied (`watermark`, at or after its own): undated, an old
          handset's record read late was a "new handset". A value dropped leaves its time,
          which still tells such a record, and the next newer value is the baseline.
        - The latest profile time (`seen["p"]`), dropped, is the fields' latest
          (`profile_at`), as every update that sets one writes both.

        Leads (`leads`), the shadow trials' notes (`shadowed`), offsets and rings of
        recent ids are read alone: one missing is one not known (a lead of before they
        were kept, an event guarded by the other), consistent with the rest."""
        changed = []
        if "fired" in dropped:  # never written without its time
            orphans = [tag for tag in self.fired_by if tag not in self.fired]
            for tag in orphans:
                del self.fired_by[tag]
            if orphans:
                changed.append("fired_by")
        if rings := dropped.get("series"):  # whole (None): the begins went with the rings
            from rules.series import BEGUN

            begins = [f"{tag}{BEGUN}" for tag in rings if f"{tag}{BEGUN}" in self.series]
            for tag in begins:
                del self.series[tag]
        if "last_at" in dropped and self.watermark:
            times = dropped["last_at"]  # whole (None): every value is undated now
            for tag in self.last if times is None else times:
                if tag in self.last and tag not in self.last_at:
                    self.last_at[tag] = self.watermark
        if "seen" in dropped and "p" not in self.seen and self.profile_at:
            self.seen["p"] = max(self.profile_at.values())
        return changed


def _number(value: Any) -> bool:
    return isinstance(value, int | float)


def _text(value: Any) -> bool:
    return type(value) is str


def _digests(ring: Any) -> bool:
    return type(ring) is list and all(type(d) is str for d in ring)


def _numbers(ring: Any) -> bool:
    return type(ring) is list and all(map(_number, ring))


def _lead(lead: Any) -> bool:
    return type(lead) is list and len(lead) == 2 and type(lead[0]) is str and _number(lead[1])


def _each(entry: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """A dict whose every value `entry` passes (event times, offsets, rings...)."""
    return lambda value: type(value) is dict and all(map(entry, value.values()))


def _roaming_ok(value: Any) -> bool:
    return (
        type(value) is dict
        and type(value.get("z", "")) is str
        and _number(value.get("o", 0))
        and type(value.get("c", "")) is str
    )


_ENTRIES: dict[str, Callable[[Any], bool]] = {
    "first_seen": _number,
    "offsets": _number,
    "recent": _digests,
    "series": _numbers,
    "last": _text,
    "last_at": _number,
    "fired": _number,
    "fired_by": _text,
    "shadowed": _text,
    "leads": _lead,
    "seen": _number,
    "closed": _number,
    "complaints": _number,
}
"""The fields whose entries stand alone (a rule tag's, a partition's, a source's, a
complaint's), with what each entry must be: `SubscriberState.mend` drops a damaged entry
and keeps the others. The profile fields' times (`profile_at`) are not among them: one
reset alone would leave its field undated, open to an older update; all are dated again
at the latest profile time."""

_SHAPES: tuple[tuple[str, Callable[[Any], bool]], ...] = (
    ("first_seen", _each(_number)),
    ("offsets", _each(_number)),
    ("recent", _each(_digests)),
    ("profile_at", _each(_number)),
    ("series", _each(_numbers)),
    ("last", _each(_text)),
    ("last_at", _each(_number)),
    ("fired", _each(_number)),
    ("fired_by", _each(_text)),
    ("shadowed", _each(_text)),
    ("leads", _each(_lead)),
    ("changed_after_look", _number),
    ("seen", _each(_number)),
    ("closed", _each(_number)),
    ("roaming", _roaming_ok),
    ("complaints", _each(_number)),
    ("special_day", _number),
    ("region", _text),
    ("watermark", _number),
    ("erased", _number),
)
"""What `SubscriberState.faults` checks each field against (the profile apart)."""


def _profile_faults(profile: dict[str, Any]) -> list[str]:
    """The stored profile's fields its model refuses (as an update carrying them would be)."""
    from pydantic import ValidationError

    from moments.models import ProfileEvent

    try:
        ProfileEvent.model_validate(
            {**profile, "event_id": "stored", "subscriber_id": "10000", "occurred_at": _AT}
        )
    except ValidationError as exc:
        return sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]} & profile.keys())
    return []


_AT = "2026-01-01T00:00:00+00:00"


def _stamp(stored: Any) -> tuple[int, ...]:
    """A record's fencing stamp (`G`, moments.fence); `()` for none."""
    return tuple(stored) if isinstance(stored, list) else ()


def _stored_profile_at(
    times: dict[str, int], base: int, profile: dict[str, Any]
) -> dict[str, int] | list[Any]:
    """`profile_at` as stored (`q`): seconds before `base` (`seen["p"]`). When every field
    of the profile has a time, `[usual, {the others}]`: the profile's fields not named are
    `usual` seconds before (a profile is mostly set by one update, a field or two changed
    since); one a field cost a week's records 37 bytes each, the largest part of their
    growth since 2026-12-05 (docs/performance-log.md, thirty-first session)."""
    if not profile or not profile.keys() <= times.keys():
        # a field dated by `*` alone (a record of before) stays so
        return {name: base - at for name, at in times.items()}
    counts: dict[int, int] = {}  # in the profile's order: on a tie, the first field's
    for name in profile:
        at = times[name]
        counts[at] = counts.get(at, 0) + 1
    usual = max(counts, key=counts.__getitem__) if len(counts) > 1 else at
    others = {name: base - at for name, at in times.items() if at != usual or name not in profile}
    return [base - usual, others]


def _profile_at(stored: Any, seen: Any, profile: Any = None) -> dict[str, int]:
    """The profile fields' times of a record (`q`, `_stored_profile_at`). One written
    before they were kept dates every field at its latest profile time: an update older
    than it is refused whatever it carries, as it was then. So does a malformed `q` (a
    corrupt record: never written so), which raised and failed every batch with the
    subscriber's events."""
    latest = seen.get("p") if isinstance(seen, dict) else None
    base = latest or 0
    try:
        if isinstance(stored, list):
            usual, named = stored
            times = dict.fromkeys(profile or (), base - usual)
            times.update((name, base - ago) for name, ago in named.items())
            return times
        if isinstance(stored, dict):
            return {name: base - ago for name, ago in stored.items()}
    except (ValueError, TypeError, AttributeError):
        pass
    return {} if latest is None else {PROFILE_AT_ANY: latest}


def _stored_rings(recent: dict[str, list[str]]) -> dict[str, Any]:
    """The recent-id rings as stored: each as one string of its digests, without the
    quotes and commas of a list (30 bytes a record of a simulated week, compressed). The
    detector's digests are all `DIGEST_CHARS` long; a ring whose length says otherwise (a
    test's) stays a list."""
    stored: dict[str, Any] = {}
    for source, ring in recent.items():
        joined = "".join(ring)
        stored[source] = joined if len(joined) == DIGEST_CHARS * len(ring) else ring
    return stored


def _rings(stored: Any) -> dict[str, list[str]]:
    """The recent-id rings of a record (`_stored_rings`; a list as written before
    2026-12-07); a record written before they were kept per source (one list) gives none:
    ids seen before an upgrade are not guarded after it. Nor is a source whose ring is
    malformed (a corrupt record: a string of no whole number of digests, which was cut
    into a short last one, or neither string nor list): its offsets still guard re-reads."""
    if not isinstance(stored, dict):
        return {}
    rings = {}
    for source, ring in stored.items():  # runs for each record read: cut at C speed
        if isinstance(ring, str):
            cut = _CUTS.get(len(ring))
            if cut is not None:
                ring = [ring] if len(ring) == DIGEST_CHARS else list(cut(ring))
            elif len(ring) % DIGEST_CHARS:
                continue
            else:
                ring = [ring[i : i + DIGEST_CHARS] for i in range(0, len(ring), DIGEST_CHARS)]
        elif not isinstance(ring, list):
            continue
        rings[source] = ring
    return rings


_CUTS = {
    count * DIGEST_CHARS: itemgetter(
        *(slice(i * DIGEST_CHARS, (i + 1) * DIGEST_CHARS) for i in range(count))
    )
    for count in range(1, 17)
}
"""What cuts a stored ring of 1 to 16 digests (by its length) into them."""


def _complaints(stored: Any, seen: Any) -> dict[str, int]:
    """The open complaints of a record; one written before their times were kept (a list of
    ids) dates each from the subscriber's latest complaint record, the latest it can be:
    none lapses sooner than it should."""
    if isinstance(stored, dict):
        return stored
    if not stored or not isinstance(stored, list):  # none, or a damaged record's (`faults`)
        return {}
    latest = seen.get("c", 0) if isinstance(seen, dict) else 0
    return dict.fromkeys((c for c in stored if type(c) is str), latest)
