"""What every `moments` command module builds its parser with: the command and group
helpers, the handler type, and the settings loader the commands share.

Only argparse and the standard library at import time: `moments --help`, and every
command's start, build the whole parser, so a client library imported here (or at the
top of a command module) is paid by every command. Commands import theirs when they run."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import re
from collections.abc import Callable
from textwrap import dedent
from typing import TYPE_CHECKING, Any, overload

from moments import eventspan
from moments.exceptions import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from moments.settings import Settings

    Subparsers = argparse._SubParsersAction["Parser"]

Handler = Callable[[argparse.Namespace], int]

SYNONYMS: dict[str, tuple[str, ...]] = {
    "check": ("validate",),
    "lint": ("validate", "check"),
    "verify": ("validate", "check"),
    "validate": ("check",),
    "list": ("show", "pending"),
    "ls": ("show", "pending"),
    "get": ("show",),
    "cat": ("show",),
    "view": ("show",),
    "dump": ("show", "export"),
    "generate": ("export",),
    "follow": ("tail",),
    "watch": ("tail",),
    "compare": ("diff",),
    "describe": ("explain",),
    "start": ("run", "worker"),
    "dlq": ("deadletter",),
    "status": ("check",),
    "health": ("check",),
    "doctor": ("check",),
}
"""Words a user types for a command that is named otherwise here: `rules check` for
`rules validate` (`moments check` and `events check` are checks), `state list` for
`state show`, `dlq` (the dead letters' own headers say `__dlq`) for `deadletter`.
Suggested only where the command they name is one of the choices, before close
spellings (`status` is `check` before it is `state`)."""

SUGGESTED = 3
"""At most this many commands or values suggested for one that is none of the choices."""


def suggestions(value: str, action: argparse.Action) -> list[str]:
    """What `value`, none of `action`'s choices, may have meant, best first. For a
    command: a command of that name one level down (`moments validate`: `moments rules
    validate`), a close spelling (`moments rules valdate`), a word for the same
    (`SYNONYMS`), each as the whole command to type. For an option's value (`--type
    topups`): a close spelling. Empty when nothing is close."""
    import difflib  # on this error only: not paid by every command's start

    choices = [c for c in action.choices or () if isinstance(c, str)]
    # The same word in another case first: difflib compares case, so `DONE_NO_CHANGE` (a
    # dialer's spelling of a status) found nothing close and got the list alone.
    same = [c for c in choices if c.casefold() == value.casefold()]
    close = list(dict.fromkeys(same + difflib.get_close_matches(value, choices, n=SUGGESTED)))
    close = close[:SUGGESTED]
    if not isinstance(action, argparse._SubParsersAction):
        return close
    parsers: dict[str, argparse.ArgumentParser] = dict(action.choices)
    found: list[str] = []
    for parser in parsers.values():  # one level down, by its exact name
        for sub in parser._actions:
            if isinstance(sub, argparse._SubParsersAction) and value in sub.choices:
                found.append(sub.choices[value].prog)
    found += [parsers[word].prog for word in SYNONYMS.get(value, ()) if word in parsers]
    found += [parsers[name].prog for name in close]
    return list(dict.fromkeys(found))[:SUGGESTED]


def unrecognized(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """argparse's "unrecognized arguments" of the command `parser`, with the close
    spellings of each option that is none of its own: `moments backtest --form
    2026-12-01` was told only that, under the usage of `moments` itself."""
    import difflib

    # Compared without their dashes, which every option shares (`--form` was as close
    # to `--to` as to `--from`)
    options = {o.lstrip("-"): o for action in parser._actions for o in action.option_strings}
    said = f"unrecognized arguments: {' '.join(extras)}"
    for extra in extras:
        name = extra.split("=", 1)[0]
        if name.startswith("-") and (
            close := difflib.get_close_matches(name.lstrip("-"), list(options), n=2)
        ):
            said += f"; {name}: did you mean {' or '.join(options[c] for c in close)}?"
    return said


class Parser(argparse.ArgumentParser):
    """The parser of `moments` and of every command under it (argparse makes a command's
    parser of its parent's class): a command or an option's value that is none of the
    choices is told what it may have meant. `moments rules check` was told only "invalid
    choice: 'check' (choose from 'validate', 'explain', 'diff', 'test')"."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is None or value in action.choices or not isinstance(value, str):
            super()._check_value(action, value)
            return
        named = ", ".join(map(repr, action.choices))
        said = f"invalid choice: {value!r}"
        command = isinstance(action, argparse._SubParsersAction)
        # An option typed as a command (`moments version`, `moments rules help`)
        option = f"{self.prog} --{value}" if f"--{value}" in self._option_string_actions else None
        if meant := [m for m in (option,) if command and m] + suggestions(value, action):
            shown = [f"`{m}`" if command else repr(m) for m in meant]
            said += f"; did you mean {' or '.join(shown)}?"
        raise argparse.ArgumentError(action, f"{said} (choose from {named})")


def add_command(
    sub: Subparsers,
    name: str,
    help_: str,
    examples: str,
    handler: Handler,
) -> Parser:
    """`moments ... NAME`: its help is `help_` above the options and `examples` below."""
    p = sub.add_parser(
        name,
        help=help_,
        description=help_,
        epilog="examples:\n" + dedent(examples).strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=handler, command_parser=p)
    return p


def add_group(sub: Subparsers, name: str, help_: str, examples: str) -> Subparsers:
    """A command of subcommands (`moments NAME COMMAND`): alone, it prints its help."""
    p = add_command(sub, name, help_, examples, show_subcommands)
    return p.add_subparsers(title=f"{name} commands", metavar="COMMAND")


def whole(text: str) -> int | None:
    """`text` as a whole number; None for none (`1.5`, `ten`, more digits than int()
    reads: 4,300)."""
    try:
        return int(text)
    except ValueError:
        return None


def shown(text: str) -> str:
    """An option's value as its error repeats it: quoted, cut short (argparse's own
    `invalid positive_int value: '...'` echoed a pasted page whole, and an escape
    sequence reached the terminal as it was)."""
    from rules.durations import echoed

    return echoed(text)


def port_or_off(text: str) -> int:
    """An argparse type: a TCP port, 0 for none (`--metrics-port -5` ended in a traceback,
    `OverflowError: bind(): port must be 0-65535`)."""
    value = whole(text)
    if value is None or not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"{shown(text)}: write a port number from 1 to 65535, or 0 to turn /metrics off"
        )
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more (`--top 0` printed an empty table,
    `--top -1` one without its last row)."""
    value = whole(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{shown(text)}: write a whole number of 1 or more")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (`inf` and `nan` ended in a traceback)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{shown(text)}: write a finite number above 0")
    return value


def show_subcommands(args: argparse.Namespace) -> int:
    """The handler of a group called without a subcommand."""
    args.command_parser.print_help()
    return 2


def stderr_console() -> Console:
    """A command's messages, on stderr: wrapped to a terminal's width, but never where
    stderr is a file or a pipe (systemd's journal, `docker logs`, CI, `2> run.log`), which
    took a line wrapped at 80 columns as two."""
    import sys

    from rich.console import Console

    return Console(stderr=True, soft_wrap=not sys.stderr.isatty())


def command_settings() -> Settings:
    """The settings, with their secrets and (unless MOMENTS_LOG_PII) subscriber numbers
    masked in every log line from here on."""
    from moments.logmask import install_pii_masking
    from moments.settings import load_settings

    settings = load_settings()
    install_pii_masking(
        mask=not settings.log_pii,
        secrets=settings.secret_values(),
        names=settings.log_names(),
    )
    return settings


WHEN_FORMS = "a date (2026-12-01) or RFC 3339 (2026-12-01T08:00:00+08:00)"
AGO_FORMS = "a time ago (30m, 2h, 1d, 2w)"
"""What a time option (`--since`, `--from`, `--to`) takes, as its error says."""
EVENT_SPAN = eventspan.EVENT_SPAN
"""The instants an event may carry (`models.Instant`, which the schemas hold to): a time
option outside them (`--to 9999-12-31` for "no end") ran the backtest's clock day by day
towards it, and `rules test --to` or a `--from 0001-01-01` ended in a traceback."""
WHEN_ECHOED = 40
"""The most characters of a time option's value its error repeats: an RFC 3339 time with
microseconds whole, not pages of digits."""
_AGO = re.compile(r"^(\d+|\d*\.\d+)\s*[A-Za-z]+$")
"""A time ago: digits and a unit (`2h`, `30 min`), or a fraction (`1.5h`, read to be told
the whole number to write: it was told every form, as junk is); a date has no letters, an
RFC 3339 time a dash or colon before its first letter."""


@overload
def parse_when(
    text: str,
    zone: Any,
    flag: str,
    naive: bool = ...,
    now: dt.datetime | None = ...,
    ago: bool = ...,
    since: bool = ...,
) -> dt.datetime: ...
@overload
def parse_when(
    text: None,
    zone: Any,
    flag: str,
    naive: bool = ...,
    now: dt.datetime | None = ...,
    ago: bool = ...,
    since: bool = ...,
) -> None: ...
@overload
def parse_when(
    text: str | None,
    zone: Any,
    flag: str,
    naive: bool = ...,
    now: dt.datetime | None = ...,
    ago: bool = ...,
    since: bool = ...,
) -> dt.datetime | None: ...


def parse_when(
    text: str | None,
    zone: Any,
    flag: str,
    naive: bool = False,
    now: dt.datetime | None = None,
    ago: bool = True,
    since: bool = False,
) -> dt.datetime | None:
    """The one reading of every time option of the commands: a time ago (`30m`, `2h`,
    `1d`, `2w`: before `now`, the wall clock by default; not with `ago` False, for an
    option standing for a setting, which takes none), a date in any ISO form
    (`2026-12-07`, `20261207`: midnight in `zone`) or an RFC 3339 instant with its offset
    (one without is taken in `zone` when `naive`, else refused), within the times events
    carry (`EVENT_SPAN`). A time ago of none (`0h`) is refused, for every option alike;
    `since` (the option selects what came at or after the time) says it selects nothing.
    None for None;
    ConfigError naming the flag and what to write otherwise."""
    if text is None:
        return None
    text = text.strip()
    when = _read_when(text, zone, flag, naive, now, ago, since)
    try:
        inside = EVENT_SPAN[0] <= when < EVENT_SPAN[1]
    except OverflowError:  # 9999-12-31T23:00-08:00 is past the year 9999 in UTC
        inside = False
    if not inside:
        first, end = (t.date().isoformat() for t in EVENT_SPAN)
        raise ConfigError(
            f"{flag} {text!r}: events carry times from {first} to before {end} (UTC), and "
            f"this is {when.isoformat()}: write one in between, or leave {flag} out for no "
            "bound"
        )
    return when


_DATE_SHAPED = re.compile(
    r"^(\d{4})(-?)(\d{2})\2(\d{2})(?:[T ](\d{2}):?(\d{2})(?::?\d{2}(?:\.\d+)?)?)?"
    r"(?:Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)
"""A date (`2026-13-01`, `20261301`) or RFC 3339 time of the right shape, whatever its
numbers: one that does not exist is told which number is wrong, not the forms."""


def no_such_date(text: str) -> str | None:
    """What makes `text`, a date or time of the right shape, none that exists (no month
    13, no 31 November, no 25:00); None when its shape is another or its numbers exist."""
    import calendar

    shaped = _DATE_SHAPED.match(text.strip())
    if shaped is None:
        return None
    year, dash, month, day, hour, minute = shaped.groups()
    written = f"{year}{dash}{month}{dash}{day}"
    if not 1 <= int(month) <= 12:
        return f"{written} is no date: there is no month {month} (months run 01 to 12)"
    if int(day) < 1:
        return f"{written} is no date: days run from 01"
    days = calendar.monthrange(int(year), int(month))[1]
    if int(day) > days:
        name = calendar.month_name[int(month)]
        of = f"{name} {year}" if int(month) == 2 else name  # a leap year's February has 29
        return f"{written} is no date: {of} has {days} days"
    if hour is not None and int(hour) > 23:
        return f"{hour}:{minute} is no time of day: hours run 00 to 23"
    if minute is not None and int(minute) > 59:
        return f"{hour}:{minute} is no time of day: minutes run 00 to 59"
    return None


def _read_when(
    text: str,
    zone: Any,
    flag: str,
    naive: bool,
    now: dt.datetime | None,
    ago: bool,
    since: bool = False,
) -> dt.datetime:
    forms = f"{WHEN_FORMS.replace(' or ', ', ')} or {AGO_FORMS}" if ago else WHEN_FORMS
    if ago and _AGO.match(text):
        from rules.durations import parse_duration

        try:
            before = parse_duration(text)
        except ValueError as exc:
            raise ConfigError(f"{flag} {exc}") from None
        when = ((now or dt.datetime.now(dt.UTC)) - before).astimezone(zone)
        if since and not before:
            raise ConfigError(
                f"{flag} {text!r} is no time ago: it is now, and nothing was rejected after "
                f"it; give a span (2h, 1d), or leave {flag} out for every dead letter"
            )
        if not before:  # as `--since`: `0h` is likelier a span left unfilled than "now"
            raise ConfigError(
                f"{flag} {text!r} is no time ago: it is now; give a span (30m, 2h, 1d), or "
                f"the time itself ({when.isoformat(timespec='seconds')})"
            )
        return when
    with contextlib.suppress(ValueError):  # `20261207` was told to add an offset
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(0), tzinfo=zone)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        from rules.durations import echoed

        said = no_such_date(text) or f"write {forms}"
        raise ConfigError(f"{flag} {echoed(text, WHEN_ECHOED)}: {said}") from None
    if when.tzinfo is None:
        if naive:
            return when.replace(tzinfo=zone)
        raise ConfigError(f"{flag} {text!r}: add an offset, e.g. {text}+08:00, or give a date")
    return when
