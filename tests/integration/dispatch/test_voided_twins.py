"""The confirm's look at a subscriber's facts (`sinks.ledger._SETTLE`, on Redis) and
`sinks.relevance.voided` (the memory ledger's, the backtest's) judge alike, for any facts
hash: an opt-out and an opt-in of the channel (the same second too; one only a newer version
sends on, and the latest update carrying `opt_out`, `opt_list`), a line closed then
active or suspended, a tombstone before or after the task was made (`inf`: not looked at
against one), values written as Redis keeps them (a float's repr, a whole number, more
digits), no hash at all. The same reply (why, and when the change was), the same state
after (pending and unindexed when void, sent and indexed when not)."""

from __future__ import annotations

import asyncio
import math
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from sinks.ledger import TaskLedger, Voided
from sinks.memory import MemoryFacts, MemoryLedger
from sinks.relevance import voided

pytestmark = pytest.mark.integration

SUB = "13800000009"
T0 = 2_000_000_000.0
EXPIRES = T0 + 86400
FIELDS = [
    "forgotten",
    "erased",
    "closed",
    "active",
    "suspended",
    "opt_out:sms",
    "opt_in:sms",
    "opt_out:outbound_call",
    "opt_in:outbound_call",
    "opt_out:wechat",
    "opt_in:wechat",
    "opt_out:WeChat",
    "opt_out:WECHAT",
    "opt_out:SMS",
    "opt_list",
    "topup",
]
times = st.integers(0, 3).map(lambda n: T0 + 10 * n) | st.sampled_from([T0 + 0.25, T0 + 10.125])
forms = st.sampled_from(["repr", "whole", "digits"])
facts = st.dictionaries(st.sampled_from(FIELDS), st.tuples(times, forms), max_size=8)
made = st.sampled_from([math.inf, T0 - 1, T0, T0 + 0.25, T0 + 10, T0 + 30])
channels = st.sampled_from(["sms", "outbound_call", "wechat", "WeChat"])
"""`wechat`: a channel only a newer version sends on (its confirm runs the same script),
whose opt-out an older worker records without an opt-in (docs/operations.md, "Rolling
upgrades"); `WeChat`: the same channel, in another case (`models.channel_key`)."""


def written(at: float, form: str) -> str:
    """How a time may sit in the hash: redis-py writes a float's repr; a whole number
    without its `.0`; or more digits than needed."""
    if form == "whole" and at.is_integer():
        return str(int(at))
    if form == "digits":
        return f"{at:.17g}"
    return repr(at)


async def both(values: dict[str, tuple[float, str]], channel: str, look: float, url: str) -> None:
    stored = {name: float(written(at, form)) for name, (at, form) in values.items()}
    expected: Voided = {}
    if (why := voided(stored, channel, look)) is not None:
        expected["a"] = why

    client = Redis.from_url(url)
    try:
        ledger = TaskLedger(client, f"test:{uuid4().hex[:8]}:", 864000)
        if values:
            mapping: dict[str | bytes, str | bytes] = {
                name: written(at, form) for name, (at, form) in values.items()
            }
            await client.hset(ledger.facts_key(SUB), mapping=mapping)  # type: ignore[arg-type]
        await ledger.claim([("a", b"{}")])
        got = await ledger.confirm(
            ["a"], awaiting={"a": (channel, EXPIRES)}, subscribers={"a": SUB}, made={"a": look}
        )
        assert got == expected
        assert await ledger.state("a") == ("pending" if got else "sent")
        assert await ledger.published_of([SUB], T0) == [[] if got else ["a"]]
    finally:
        await client.aclose()

    clock = lambda: T0  # noqa: E731
    memory_facts = MemoryFacts(clock)
    if stored:
        memory_facts.facts[SUB] = (dict(stored), T0 + 86400)
    memory = MemoryLedger(clock, 864000, memory_facts)
    await memory.claim([("a", b"{}")])
    twin = await memory.confirm(
        ["a"], awaiting={"a": (channel, EXPIRES)}, subscribers={"a": SUB}, made={"a": look}
    )
    assert twin == expected
    assert await memory.state("a") == ("pending" if twin else "sent")
    assert await memory.published_of([SUB], T0) == [[] if twin else ["a"]]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(facts, channels, made)
# An opt-out and an opt-in the same second: opted out (the update naming it is the latest).
@example({"opt_out:sms": (T0, "repr"), "opt_in:sms": (T0, "whole")}, "sms", T0)
# Closed, then active again; closed, then suspended: neither is closed.
@example({"closed": (T0, "repr"), "active": (T0 + 10, "repr")}, "sms", T0)
@example({"closed": (T0 + 10, "repr"), "suspended": (T0 + 10, "repr")}, "sms", T0)
# A tombstone, then a new holder's opt-out: a task made after it is judged by the opt-out.
@example(
    {"forgotten": (T0, "repr"), "erased": (T0 - 5, "repr"), "opt_out:sms": (T0 + 10, "repr")},
    "sms",
    T0 + 0.25,
)
# The engine's fresh task (`inf`) is not looked at against a tombstone.
@example({"forgotten": (T0 + 30, "repr")}, "sms", math.inf)
# No facts hash at all.
@example({}, "sms", T0)
# A newer version's channel opted out, then a later update opting out of nothing: not
# opted out (`opt_list`), though no `opt_in:` says so; and opted out when it is the latest.
@example({"opt_out:wechat": (T0, "repr"), "opt_list": (T0 + 10, "repr")}, "wechat", T0)
@example({"opt_out:wechat": (T0 + 10, "repr"), "opt_list": (T0 + 10, "whole")}, "wechat", T0)
# The same channel in another case: the script looked `opt_out:WeChat` up, not there.
@example({"opt_out:wechat": (T0 + 10, "repr")}, "WeChat", T0)
# An opt-out an earlier build recorded as written (`opt_out:WeChat`): read for a task on
# `WeChat`, the later of it and the lowered field counting, and opted in by `opt_list`.
@example({"opt_out:WeChat": (T0 + 10, "repr"), "opt_list": (T0 + 10, "whole")}, "WeChat", T0)
@example({"opt_out:WeChat": (T0 + 10, "repr"), "opt_out:wechat": (T0, "repr")}, "WeChat", T0)
@example({"opt_out:WeChat": (T0, "repr"), "opt_list": (T0 + 10, "repr")}, "WeChat", T0)
# Read for a task on `wechat` too, whatever the case it was recorded in (`channel_key`, as
# the release reads the hash): the script missed it, the customer was sent a task on the
# channel they had refused.
@example({"opt_out:WeChat": (T0 + 10, "repr"), "opt_list": (T0 + 10, "whole")}, "wechat", T0)
@example({"opt_out:WECHAT": (T0 + 10, "repr"), "opt_out:WeChat": (T0, "repr")}, "wechat", T0)
@example({"opt_out:SMS": (T0 + 10, "repr"), "opt_in:sms": (T0, "repr")}, "sms", T0)
def test_the_confirm_script_judges_as_voided(
    redis_db: str, values: dict[str, tuple[float, str]], channel: str, look: float
) -> None:
    asyncio.run(both(values, channel, look, redis_db))
