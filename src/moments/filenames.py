"""What a history file's name says of its format: gzip (`.gz`) and CSV (`.csv`, or
`.csv.gz`), whatever the case of the extension (`EXPORT.CSV`, `EVENTS.JSONL.GZ`: Windows
tools and mainframe exports write them in capitals; read as JSON lines, such a CSV was
refused as "no JSON lines file: name a CSV file .csv", and a gzip file as binary junk).

Only the standard library: `moments events check` and `moments simulate` ask it before
they import anything else."""

from __future__ import annotations

from pathlib import Path, PurePath


def gzipped(path: PurePath | str) -> bool:
    """The name ends in `.gz` (`.GZ` too)."""
    return str(path).lower().endswith(".gz")


def is_csv(path: PurePath | str) -> bool:
    """The name ends in `.csv` or `.csv.gz`, in any case."""
    name = str(path).lower()
    return name.removesuffix(".gz").endswith(".csv")


def close_rules_path(path: Path) -> str:
    """`; did you mean 'my-rules/low-balance.yaml'?` for a rules path that is not there but
    close to a rules file (`.yml` for `.yaml`) or folder (`my-rule/`) beside where it
    points; or empty. A misspelt rule id or field was told the close one, a misspelt rules
    path only "check the path"."""
    import difflib

    try:
        near = [
            p.name
            for p in path.parent.iterdir()
            if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in (".yaml", ".yml"))
        ]
    except OSError:  # its folder is not there either
        return ""
    close = difflib.get_close_matches(path.name, near, n=1, cutoff=0.75)
    return f"; did you mean {str(path.parent / close[0])!r}?" if close else ""
