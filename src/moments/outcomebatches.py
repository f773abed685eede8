"""What the outcomes agent does with a batch that fails: its offsets are held, never
committed, and an error that is not an outage stops the worker, as the batch loop's does.

The task outcomes are read by a Faust agent (`take_events`, in `moments.app`), and Faust
acknowledges a batch's events as they leave its generator, whether handled or not; its
commits follow the acknowledgements. An error in `handle_outcomes` (a bug, a Kafka or
Redis refusal: `sinks.retry.with_retry` raises those at once) crashed only the agent, which
Faust's supervisor restarted while the worker ran on, and the batch's offsets were
committed: its outcomes were lost (the retries their `unreachable` should have queued,
the dead letters of the bad ones), and nothing said so but one traceback. An outage never
gets here: `with_retry` waits it out, the batch with it.

Kept out of the Faust wiring so it can be tested without a broker: the consumer's
`hold` and the app's `crash` are given to it.

A hold is never lifted: it is set only on the way to a stop. An error stops the worker
here; a cancellation comes only from Faust stopping the agents (the app stopping): in
faust-streaming 0.15 an agent on shared partitions is not restarted on a rebalance, and
its supervisor restarts its one actor only after that actor crashed, which no error of
the agent's loop does (`consume` catches them all: in `handle`, in making a batch's
records, in taking events from the stream). Lifting it in a worker that ran on would
need the batch read again first (a seek back, which Faust's acknowledgements past it
would overtake).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from faust.types import TP

from moments.records import RawRecord
from sinks.retry import missing_in_aiokafka

log = logging.getLogger(__name__)

Hold = Callable[[Mapping[TP, int]], None]
"""Keeps commits of each partition at or before its offset (`BatchConsumer.hold`)."""

Stop = Callable[[BaseException], Awaitable[None]]
"""Stops the worker, exit code 1 (Faust's `App.crash`, as for a crash of the batch loop)."""


E = TypeVar("E")

Position = tuple[str, int, int]
"""Where an event was read: topic, partition, offset."""


def first_offsets(records: Sequence[RawRecord]) -> dict[TP, int]:
    """Each partition's first offset among `records`: where its reading must start again."""
    return first_of((r.topic, r.partition, r.offset) for r in records)


def first_of(positions: Iterable[Position]) -> dict[TP, int]:
    """Each partition's first offset among these positions."""
    first: dict[TP, int] = {}
    for topic, partition, offset in positions:
        tp = TP(topic, partition)
        if tp not in first or offset < first[tp]:
            first[tp] = offset
    return first


def fix_of(exc: BaseException) -> str:
    """What the log says fixes `exc`: the note `with_retry` put on it, or, for an error
    raised elsewhere, that it is a bug, unless it is aiokafka lacking a protocol version
    or a codec (`sinks.retry.missing_in_aiokafka`)."""
    notes = [str(n) for n in getattr(exc, "__notes__", ()) if str(n).startswith("moments:")]
    if notes:
        return "; ".join(notes)
    missing = missing_in_aiokafka(exc)
    if missing is not None:
        return f"moments: not an outage: {missing}"
    return "moments: not an outage: a bug in moments; report it with this traceback"


class OutcomeBatches:
    """Hands each batch of outcomes to `handle`; one that does not finish is never
    committed past.

    - handled: True; the agent goes on (Faust acknowledges the batch, and commits it).
    - an error (not an outage: those are retried inside `handle`): the batch's partitions
      are held at its first offsets (`hold`), the worker stopped (`stop`, exit code 1)
      with a line naming the fix, and False: the agent takes no other batch. The next
      start reads the batch again: what an outcome does is idempotent
      (`moments.outcomes._first`: a status noted is counted once; a decline sets the same
      key, a retry has a deterministic id, a contact given back is a ZREM), and only its
      dead letters, written at the batch's end, can come twice.
    - cancelled (the worker stopping under a batch waiting on Redis, say): held too, and
      the cancellation goes on. Faust's generator acknowledges the batch as the agent
      leaves it; the stop's last commit must not take it."""

    def __init__(
        self,
        handle: Callable[[Sequence[RawRecord]], Awaitable[None]],
        hold: Hold,
        stop: Stop,
    ) -> None:
        self.handle = handle
        self.hold = hold
        self.stop = stop
        self.failed = False
        """Set by the first batch that failed: the worker is stopping."""

    async def __call__(self, records: Sequence[RawRecord]) -> bool:
        """Handle one batch; False when it failed and the worker is stopping."""
        if self.failed:  # not one more: the worker is stopping
            self.hold(first_offsets(records))
            return False
        try:
            await self.handle(records)
        except asyncio.CancelledError:
            self.hold(first_offsets(records))
            log.info(
                "outcomes: a batch of %d not finished as the agent stopped; not committed, "
                "the next start reads it again",
                len(records),
            )
            raise
        except Exception as exc:
            await self._fail(exc, first_offsets(records), f"the batch's {len(records)} outcome(s)")
            return False
        return True

    async def consume(
        self,
        batches: AsyncIterator[Sequence[E]],
        record_of: Callable[[E], RawRecord],
        position_of: Callable[[E], Position],
    ) -> None:
        """The agent's loop: each batch taken from `batches` (Faust's `take_events`) made
        records (`record_of`) and handled, until one fails or `batches` ends. A failure
        outside `handle` goes the same way as one in it (held, the worker stopped): one
        making a batch's records holds the batch at its events' first offsets
        (`position_of`); one taking events from the stream holds nothing, as none of the
        events it had buffered was yielded, and `take_events` acknowledges only a batch it
        yielded (as the batch leaves it). Raised in the agent, either crashed its actor
        alone: Faust's supervisor restarted it with the batch acknowledged and nothing held,
        the worker ran on, and the batch was committed unhandled."""
        try:
            async for events in batches:
                try:
                    records = [record_of(e) for e in events]
                except Exception as exc:
                    held = first_of(position_of(e) for e in events)
                    await self._fail(exc, held, f"the batch's {len(events)} outcome(s)")
                    return
                if not await self(records):
                    return
        except Exception as exc:
            if self.failed:  # the stop itself failed: the batch is held already
                raise
            await self._fail(exc, {}, "the outcomes read and not handled")

    async def _fail(self, exc: Exception, held: Mapping[TP, int], what: str) -> None:
        """Hold `held`, say so naming the fix, and stop the worker with `exc`."""
        self.hold(held)
        self.failed = True
        log.error(
            "the outcomes agent stopped the worker: %s: %s; %s are not committed, the next "
            "start reads them again (%s)",
            type(exc).__name__,
            exc,
            what,
            fix_of(exc),
        )
        await self.stop(exc)
