"""A task read back from the stores (the deferral queue's release, a re-drive of a publish
never confirmed) as a decision's candidate, with the moments merged into it: `decoded`
is the sink's cache of tasks read back (`Decoded`), `task_ttl` the rules' (a group an
earlier version parked, `sinks.legacy`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import ValidationError

from moments.errortext import error_text
from sinks.legacy import TaskTtl, own_moment
from sinks.payloads import Decoded, StoredTask, by_newer_version, task_bytes
from sinks.routes import Candidate

log = logging.getLogger("sinks.dispatch")


NEWER_WAIT_S = 300.0
"""How long no re-drive looks at a pending task a newer version wrote (`stored_candidate`'s
`newer`) after one that could not send it: a worker of that version takes it then, and
one of this version reads it no more often than this (a rollback leaves it until its
ledger entry expires)."""


def stored_candidate(
    task_id: str,
    payloads: Sequence[bytes],
    decoded: Decoded,
    task_ttl: TaskTtl,
    newer: list[str] | None = None,
) -> Candidate | None:
    """The stored task and its merged members; None (logged, left pending for the
    next re-drive) when a payload no longer fits the model, its id added to `newer` when
    a newer version wrote it (`by_newer_version`: the caller leaves it to such a worker,
    `NEWER_WAIT_S`). A carrier parked by an earlier version as the merged task is read
    back as its own moment (`sinks.legacy`)."""
    try:
        tasks = [decoded.task(p) for p in payloads]
        if len(tasks) > 1 and len({id(t) for t in tasks}) < len(tasks):
            # The same bytes twice in one group: a task apiece, as moments are told
            # apart by identity (`CapacityFitting.fit`, `_kept`).
            tasks = [StoredTask.model_validate_json(p) for p in payloads]
    except ValidationError as exc:
        if newer is not None and by_newer_version(exc):
            log.warning(
                "task %s: written by a newer version (%s); left pending for a worker of "
                "that version, not re-driven here for %.0f s",
                task_id,
                error_text(exc.errors()[0]),
                NEWER_WAIT_S,
            )
            newer.append(task_id)
            return None
        log.error(
            "task %s: stored payload does not fit ServiceTask (%s); it stays pending "
            "and is tried again on every re-drive: run the version that wrote it, or "
            "inspect it with GET on its ledger key",
            task_id,
            error_text(exc.errors()[0]) if exc.errors() else exc,
        )
        return None
    c = Candidate(task_id, tasks, payloads=list(payloads))
    rebuilt = own_moment(task_id, tasks[0], tasks[1:], task_ttl)
    if rebuilt is not None:
        if rebuilt.own is None:
            log.error(
                "task %s: parked by an earlier version as a merged task that no longer "
                "holds its own moment (a copy of %s's is left): its entry is dropped, "
                "the moments merged into it go on without it",
                task_id,
                tasks[0].moment.type,
            )
            c.lost_own = True
        else:
            log.info("task %s: merge group parked by an earlier version, read back", task_id)
            c.tasks[0] = rebuilt.own
            c.payloads[0] = task_bytes(rebuilt.own)
    return c
