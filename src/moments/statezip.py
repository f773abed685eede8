"""Subscriber records compressed with zstd and a dictionary trained on typical records.

A record's JSON repeats the same short keys, profile fields, zone names and rule tags
from subscriber to subscriber; alone, 1 KB of it compresses to ~630 bytes, but against
a dictionary of those repeats to about a third (1,075 bytes to ~345 for a simulated
day's records) for ~2 µs each way. That is the table's memory, the changelog's size
and a restart's recovery time.

Each record is one zstd frame naming its dictionary's id. Records written before
compression (plain JSON, `{` first) are still read, so a changelog from an older
version restores as is; each is compressed when next saved. A dictionary is never
changed once records use it: a better one gets a new id, and the old ones stay here
to read what they wrote (`scripts/train_state_dictionary.py`). Dictionary 1 was trained
on the records of 2026-12-04; the fields added since (the profile fields' times, the
cooldown marks' tasks, ...) were new to it, and a simulated week's records grew from
~430 to 492 bytes. Dictionary 2, trained on the records of 2026-12-07, stores them in
~376 (docs/performance-log.md, thirty-first session).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import NoReturn

import zstandard

from moments.logmask import mask_text

CURRENT_DICTIONARY = 2
"""The id of the dictionary new records are written with (`state-dict-<id>.zstd`)."""
KNOWN_DICTIONARIES = (1, 2)
"""Every dictionary id records may name: the current one and those before it."""
MAX_DICTIONARY_ID = 255
"""Dictionary ids are given in turn (`scripts/train_state_dictionary.py`) and stay below
256, one byte in a frame's header: a frame naming a larger one is no version's record."""
LEVEL = 1
"""zstd's level: 3 made records 5% smaller for 20% more time (2.5 against 2.0 µs)."""
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class StateFormatError(ValueError):
    """Bytes that are not a subscriber record this version can read."""


class NewerRecordError(StateFormatError):
    """A record compressed with a dictionary this version does not have: a newer version
    wrote it. Not reset as a damaged record is (moments.state): the worker stops, and
    runs again once it is a version that reads it (docs/operations.md, "Rolling back")."""


class MisnamedRecordError(StateFormatError):
    """A record this version wrote whose frame's header names another dictionary than its
    own (one it lacks, another it has, or none): the id damaged (`json`: the record, read
    with its own dictionary)."""

    def __init__(self, message: str, json: bytes) -> None:
        super().__init__(message)
        self.json = json


@cache
def dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    if dict_id not in KNOWN_DICTIONARIES:
        raise _newer(dict_id)
    data = resources.files("moments").joinpath(f"state-dict-{dict_id}.zstd").read_bytes()
    found = zstandard.ZstdCompressionDict(data)
    if found.dict_id() != dict_id:
        raise StateFormatError(f"state-dict-{dict_id}.zstd holds dictionary {found.dict_id()}")
    return found


class _Codecs(threading.local):
    """zstd's (de)compressor objects are not for concurrent use: one set per thread,
    made on first use (the dictionary is read then, not at import)."""

    def __init__(self) -> None:
        self.compress: Callable[[bytes], bytes] | None = None
        """The compressor's bound method, looked up once: `pack` runs for every record
        saved."""
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {}

    def compressor(self) -> zstandard.ZstdCompressor:
        # Its own copy of the dictionary, digested once for the level, not per record.
        prepared = zstandard.ZstdCompressionDict(dictionary(CURRENT_DICTIONARY).as_bytes())
        prepared.precompute_compress(level=LEVEL)
        return zstandard.ZstdCompressor(
            level=LEVEL,
            dict_data=prepared,
            write_checksum=False,
            write_content_size=True,
            write_dict_id=True,
        )

    def decompressor(self, dict_id: int) -> zstandard.ZstdDecompressor:
        found = self._decompressors.get(dict_id)
        if found is None:
            # 0: a frame without a dictionary (none is written so, but it reads as one)
            data = dictionary(dict_id) if dict_id else None
            found = self._decompressors[dict_id] = zstandard.ZstdDecompressor(dict_data=data)
        return found


_codecs = _Codecs()


def pack(json: bytes) -> bytes:
    """A record's JSON as it is stored."""
    compress = _codecs.compress
    if compress is None:
        compress = _codecs.compress = _codecs.compressor().compress
    return compress(json)


def check() -> None:
    """Fail at start-up, not at the first batch, when this installation cannot write and
    read records (the dictionary file missing from the package)."""
    sample = b'{"o":{},"r":{}}'
    try:
        if unpack(pack(sample)) != sample:
            raise StateFormatError("a record did not read back as written")
    except (OSError, StateFormatError, zstandard.ZstdError) as exc:
        raise StateFormatError(
            f"subscriber records cannot be compressed here ({exc}); the package's "
            f"state-dict-{CURRENT_DICTIONARY}.zstd is missing or damaged: reinstall moments"
        ) from exc


def unpack(stored: bytes) -> bytes:
    """A stored record's JSON (compressed or, from before compression, plain)."""
    if stored[:1] == b"{":
        return stored
    if stored[:4] != ZSTD_MAGIC:
        raise StateFormatError(
            # The first bytes as text, numbers masked: they may be a subscriber's.
            f"not a subscriber record (starts with {mask_text(repr(stored[:8]))}): the state "
            "table or its "
            "changelog holds bytes another program wrote; check MOMENTS_APP_ID"
        )
    try:
        dict_id = zstandard.get_frame_parameters(stored).dict_id
        if dict_id and dict_id not in KNOWN_DICTIONARIES:
            _unknown_dictionary(stored, dict_id)
        try:
            return _codecs.decompressor(dict_id).decompress(stored)
        except zstandard.ZstdError:
            # A one-byte id damaged into another this version has, or into 0 (none: one
            # bit of 2, or of 1): the dictionary it names does not read it, one it has may.
            if stored[4] & 3 == 1:
                _read_under_another(stored, dict_id, "which does not read it")
            raise
    except zstandard.ZstdError as exc:
        raise StateFormatError(f"a subscriber record could not be decompressed: {exc}") from exc


def _unknown_dictionary(stored: bytes, dict_id: int) -> NoReturn:
    """Why a frame naming a dictionary this version lacks cannot be read: a newer
    version's record (`NewerRecordError`), or a damaged one of this version's.

    Nothing in a frame but its dictionary id says which version wrote it (zstd's header
    has no checksum), so the rest of the frame is asked: read with each dictionary this
    version has, under its id, a damaged id of this version's record gives the record
    back whole (its content size checked). A newer version's does not (a dictionary
    trained again: 1,400 tries of another one's records, none read; zstd reads a frame
    with none but its own dictionary); nor does an id larger than any version gives
    (`MAX_DICTIONARY_ID`: the header's size of the id damaged). What cannot be told
    apart is the rest: a frame damaged in its id and elsewhere too still stops the worker
    as a newer version's record (docs/operations.md, "Rolling back")."""
    header = stored[4]
    if header & 3 != 1:  # zstd writes an id in the fewest bytes it fits: one, below 256
        raise StateFormatError(
            f"a subscriber record's frame names dictionary {dict_id} in {(2, 4)[header & 1]} "
            f"bytes, which no version writes (their ids are at most {MAX_DICTIONARY_ID}, "
            "one byte): its header is damaged"
        )
    _read_under_another(stored, dict_id, "which this version does not have")
    raise _newer(dict_id)


def _read_under_another(stored: bytes, named: int, why: str) -> None:
    """Raise `MisnamedRecordError` when one of this version's dictionaries other than
    the one the frame names (`named`, `why` it did not read it) reads the frame under its
    own id: a record of this version's whose one-byte id was damaged."""
    at = 5 if stored[4] & 0x20 else 6  # the id follows the window's size, when there is one
    for known in reversed(KNOWN_DICTIONARIES):
        if known == named:
            continue
        try:
            json = _codecs.decompressor(known).decompress(
                stored[:at] + bytes((known,)) + stored[at + 1 :]
            )
        except zstandard.ZstdError:
            continue
        if json[:1] == b"{":
            raise MisnamedRecordError(
                f"a subscriber record's frame names dictionary {named}, {why}; read with "
                f"dictionary {known}, it is a record of this version's: the id is damaged",
                json,
            )


def _newer(dict_id: int) -> NewerRecordError:
    return NewerRecordError(
        f"a subscriber record was compressed with dictionary {dict_id}, which this "
        f"version does not have (it knows {list(KNOWN_DICTIONARIES)}); run the "
        "version that wrote it, or a newer one"
    )
