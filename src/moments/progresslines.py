"""Progress for a log instead of a terminal: a line every `PROGRESS_EVERY_S`.

rich draws its bars only on a terminal; written to a CI log, a file (`2> run.log`,
`nohup`) or `docker logs`, a `Progress` prints once, when it ends, and a backtest of
three weeks showed nothing for minutes (new user's walk)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

PROGRESS_EVERY_S = 10.0
"""How often a command whose output is no terminal says how far it is."""
CLOCK: Callable[[], float] = time.monotonic
"""The clock `ProgressLines` reads unless given one: a test sets its own, so that whether
a line is due is decided by the test, not by how fast the machine ran the command."""


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes}m{s:02d}s" if minutes else f"{s}s"


class ProgressLines:
    """Says `label: N events in T s (R/s), P% done, about D left` (`N records`: `unit`)
    through `write` at most every `every_s` (`PROGRESS_EVERY_S` unless given) of `clock`
    (`CLOCK` unless given; checking the clock only, cheap enough to call per batch), and
    once more at the end (`finish`)."""

    def __init__(
        self,
        label: str,
        write: Callable[[str], None],
        every_s: float | None = None,
        clock: Callable[[], float] | None = None,
        unit: str = "events",
    ) -> None:
        self.label = label
        self.unit = unit
        self.write = write
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.clock = CLOCK if clock is None else clock
        self.started = self.clock()
        self._next = self.started + self.every_s
        self._said: int | None = None  # the events of the last line, if it read as the last

    def update(self, events: int, fraction: float | None = None) -> None:
        """`events` done so far, `fraction` of the whole (None: unknown)."""
        now = self.clock()
        if now >= self._next:
            self._next = now + self.every_s
            # A line with no share left reads as the last: `finish` need not repeat it.
            self._said = events if fraction is None or not 0 < fraction < 1 else None
            self.write(self.line(events, fraction, now))

    def say(self, text: Callable[[], str]) -> None:
        """`text()` through `write` if a line is due, as `update` writes its own: a step
        that counts no events (a run on in event time after the last of them)."""
        now = self.clock()
        if now >= self._next:
            self._next = now + self.every_s
            self._said = None
            self.write(f"{self.label}: {text()}")

    def finish(self, events: int) -> None:
        """The last line, unless the last one already said every event: a backtest's
        progress call after its run-on made a line due, and the same count came twice
        (`231 s`, then `232 s`)."""
        if events != self._said:
            self.write(self.line(events, None, self.clock()))

    def line(self, events: int, fraction: float | None, now: float) -> str:
        elapsed = now - self.started
        rate = events / elapsed if elapsed > 0 else 0.0
        unit = self.unit.removesuffix("s") if events == 1 else self.unit  # 1 event, 1 record
        text = f"{self.label}: {events:,} {unit} in {elapsed:.0f} s ({rate:,.0f}/s)"
        if fraction is not None and 0 < fraction < 1:
            left = elapsed * (1 - fraction) / fraction
            text += f", {fraction:.0%} done, about {_duration(left)} left"
        return text


def to_console(label: str, console: Console) -> ProgressLines:
    """`ProgressLines` written to a console that is no terminal, each line at once and
    whole (no markup, no wrapping: a log keeps it as it is)."""
    return ProgressLines(label, lambda text: print(text, file=console.file, flush=True))
