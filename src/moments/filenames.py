"""What a history file's name says of its format: gzip (`.gz`) and CSV (`.csv`, or
`.csv.gz`), whatever the case of the extension (`EXPORT.CSV`, `EVENTS.JSONL.GZ`: Windows
tools and mainframe exports write them in capitals; read as JSON lines, such a CSV was
refused as "no JSON lines file: name a CSV file .csv", and a gzip file as binary junk).

Only the standard library: `moments events check` and `moments simulate` ask it before
they import anything else."""

from __future__ import annotations

from pathlib import PurePath


def gzipped(path: PurePath | str) -> bool:
    """The name ends in `.gz` (`.GZ` too)."""
    return str(path).lower().endswith(".gz")


def is_csv(path: PurePath | str) -> bool:
    """The name ends in `.csv` or `.csv.gz`, in any case."""
    name = str(path).lower()
    return name.removesuffix(".gz").endswith(".csv")
