"""The re-drive timer's steps, each run whatever an earlier one raised.

A step waits out a dependency away or busy inside itself (`sinks.retry`: retried with
back-off), so what comes out of one is an error waiting cannot fix: a Kafka refusal (an
ACL, a topic deleted) or a bug. Raised at once, it skipped the steps after it on every
tick: a withdrawals topic refused for good left every unanswered task unexpired and
uncounted. Each error is still raised (the timer fails as before, the worker stops:
docs/operations.md, "The worker stops: not an outage"), once every step has run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

Step = tuple[str, Callable[[], Awaitable[object]]]
"""What a step does (for its note: "releasing due tasks") and the call that does it."""


async def run_each(steps: Sequence[Step], timer: str) -> None:
    """Await each of `steps` in turn, whatever an earlier one raised; then raise what they
    raised: the one error itself (its notes, the fix `sinks.retry` named, kept), or
    several in an ExceptionGroup. Each error gets a note naming `timer` and its step.
    Only `Exception`: a cancellation (the worker stopping) ends the tick at once."""
    failed: list[Exception] = []
    for what, step in steps:
        try:
            await step()
        except Exception as exc:  # raised below, once the other steps ran
            exc.add_note(
                f"moments: raised by the {timer} while {what}; its other steps ran all the same"
            )
            failed.append(exc)
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise ExceptionGroup(f"{len(failed)} steps of the {timer} failed", failed)
