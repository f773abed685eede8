"""Fencing the state changelog when it is read: which of two records of one subscriber a
restore keeps.

Without Kafka transactions (Tansu has none) nothing stops a worker losing a partition
from having a changelog write land after the partition's next owner wrote the same
subscriber (docs/architecture.md, "A state write that lands after the next owner's").
The changelog's last record for the key is then the older one. So each record is stamped
with the consumer group generation its writer held the partition in, and every restore
(the bulk read, Faust's per-record recovery, standby copies) keeps, per key, the record
of the highest stamp instead of the last: a record stamped below the one held is stale
and skipped.

A stamp is the generation, `(generation,)`, or `(generation, 1)` for a record its writer
began with nothing held for the key and no deletion of it known (a new subscriber, or a
deletion not remembered): such a record follows any deletion, whatever the stamps (its
writer knew nothing of the tombstone's). A writer that holds a record (or knows a
tombstone) stamped above its own generation sees the group's generation gone back (the
group deleted once empty, its offsets expired; a broker that lost its group state): it
writes that record without a stamp, and the records after it are stamped from there on.
Otherwise every later record, stamped low, would lose to the old ones.

A record with no stamp (written before stamps were, by `moments state seed`, or over a
generation gone back) is always applied, and one held without a stamp fences nothing:
both are taken in log order, as they always were. A tombstone (a deleted subscriber)
carries its stamp in a header only; a value carries it in a header (read without
decompressing) and in its JSON (`G`), which is what a store holding the record knows of
it later.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson

from moments.statezip import MisnamedRecordError, unpack

Stamp = tuple[int, ...]
"""`()`: no stamp; `(generation,)`; `(generation, 1)`: begun with nothing held."""
UNSTAMPED: Stamp = ()
HEADER = "moments-stamp"
"""The changelog record header that carries the stamp: `<generation>[.1]`."""


def next_stamp(held: Stamp | None, generation: int) -> Stamp:
    """The stamp of a record written in consumer generation `generation` over `held`, the
    stamp of the record its writer holds for the key (None: none, or a deletion)."""
    if held is None:
        return (generation, 1)
    try:
        if held and generation < held[0]:  # the group's generation went back
            return UNSTAMPED
    except TypeError:  # a damaged record's stamp (`G` of no numbers): as good as none
        pass
    return (generation,)


def later_wins(later: Stamp, later_deletes: bool, held: Stamp | None, held_deleted: bool) -> bool:
    """Whether a restore takes a record read after the one it holds for the key: `later`
    and `held` their stamps (`held` None: nothing held, or nothing known of it),
    `later_deletes` a tombstone, `held_deleted` the key deleted by a tombstone read before.

    A record stamped below the held one was written by an earlier owner of the partition
    and landed late: skipped. A record (or tombstone) begun with nothing held follows a
    deletion whatever the stamps."""
    if not later or not held:
        return True
    if held_deleted and len(later) > 1:
        return True
    return later[0] >= held[0]


@lru_cache(maxsize=256)
def to_header(stamp: Stamp) -> bytes:
    """The stamp as its header's value. Few stamps recur: each is made once."""
    return ".".join(map(str, stamp)).encode()


@lru_cache(maxsize=256)
def headers_of(stamp: Stamp) -> list[tuple[str, bytes]]:
    """A changelog record's headers for `stamp` (none for no stamp): one list per stamp,
    shared by every record written with it, for the producer to read, never to change."""
    return [(HEADER, to_header(stamp))] if stamp else []


def from_headers(headers: Any) -> Stamp:
    """The stamp among a record's headers (pairs, or a mapping as Faust may give them);
    `()` when there is none or it cannot be read (then the record is taken in log order)."""
    if not headers:
        return UNSTAMPED
    pairs: Iterable[Any] = headers.items() if isinstance(headers, dict) else headers
    for name, value in pairs:
        if name == HEADER and value:
            return parse_header(bytes(value))
    return UNSTAMPED


@lru_cache(maxsize=256)
def parse_header(raw: bytes) -> Stamp:
    """A raw stamp header's stamp (`()`: none, or unreadable). Few stamps recur (one per
    generation an owner wrote in): each is parsed once."""
    try:
        stamp = tuple(int(part) for part in raw.split(b".")) if raw else UNSTAMPED
    except ValueError:
        return UNSTAMPED
    return stamp if len(stamp) in (1, 2) else UNSTAMPED


def stamp_of_value(value: bytes) -> Stamp:
    """The stamp a stored record carries in its JSON (`()`: none, or unreadable: such a
    record fences nothing, and what reads it says what is wrong with it). A record whose
    frame names another dictionary than its own is read whole, as the worker reads it
    (`MisnamedRecordError`): taken for no stamp, a stale record landing after it replaced
    it, and a deletion over it in a generation gone back was stamped, losing to it."""
    try:
        try:
            json = unpack(value)
        except MisnamedRecordError as exc:
            json = exc.json
        found = orjson.loads(json).get("G")
    except (ValueError, AttributeError):
        return UNSTAMPED
    if isinstance(found, list) and len(found) in (1, 2) and all(type(n) is int for n in found):
        return tuple(found)
    return UNSTAMPED


def header_value(headers: Any) -> bytes:
    """The raw stamp header among a record's headers (b"": none), unparsed: a bulk read
    keeps it and parses it only when a key comes again with another."""
    if headers:
        for name, value in headers:
            if name == HEADER and value:
                return value  # type: ignore[no-any-return]
    return b""


class Fold:
    """A changelog read folded to the record a restore keeps per key: the last one, unless
    a record stamped below the one kept comes after it (`later_wins`). Stamps are kept as
    the raw header bytes the read gave (no copy), parsed when a key comes again."""

    __slots__ = ("skipped", "stamps", "values")

    def __init__(self) -> None:
        self.values: dict[bytes, bytes | None] = {}
        self.stamps: dict[bytes, bytes] = {}
        self.skipped = 0
        """Records not taken: stamped below the record kept for their key."""

    def offer(self, key: bytes, value: bytes | None, raw_stamp: bytes) -> None:
        values = self.values
        stamps = self.stamps
        if raw_stamp and key in values:
            held = stamps[key]
            # The same stamp (the same owner, mostly) always follows: parsed only if not.
            if (
                held
                and held != raw_stamp
                and not later_wins(
                    parse_header(raw_stamp), value is None, parse_header(held), values[key] is None
                )
            ):
                self.skipped += 1
                return
        values[key] = value
        stamps[key] = raw_stamp
