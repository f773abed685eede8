"""The dispatch policy's capacity regions match whatever the case, as the rules' do
(moments.placetext): an `nj` task took the `*` pool's slots, or none, beside NJ's limit."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from moments.exceptions import ConfigError
from moments.models import Channel
from sinks.capacity import CapacityLimiter
from sinks.memory import MemorySlots
from sinks.policy import DispatchPolicy, load_policy


def test_a_capacity_region_matches_whatever_the_case_and_keeps_its_name() -> None:
    """An `nj` task took NJ's slots (it took the `*` pool's, or none); the pool, hence
    the Redis counter `cap:NJ:...`, is named as the policy writes it."""
    policy = DispatchPolicy.model_validate(
        {"capacity": {"NJ": {"sms": 1}, "*": {"sms": 5}, "sz": {"sms": 2}}}
    )
    assert policy.pool("nj", Channel.SMS) == ("NJ", 1)
    assert policy.pool("Sz", Channel.SMS) == ("sz", 2)
    assert policy.pool("WX", Channel.SMS) == ("*", 5)
    assert policy.limit("nJ", Channel.SMS) == 1
    slots = MemorySlots()
    at_ = dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC)
    taken = asyncio.run(
        CapacityLimiter(slots, policy).take_many(
            [("t1", "nj", Channel.SMS, 1), ("t2", "NJ", Channel.SMS, 1)], at_
        )
    )
    assert [(s.taken, s.pool) for s in taken] == [(True, "NJ"), (False, "NJ")]
    assert {key.region for key in slots.used} == {"NJ"}


def test_two_capacity_regions_differing_only_in_case_are_refused_at_the_second(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("capacity:\n  NJ:\n    sms: 3\n  SZ: {sms: 2}\n  nj:\n    manager: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    said = str(caught.value)
    assert f"{path}:5:3: capacity: nj: the same region as 'NJ'" in said
    assert "list it once, as 'NJ'" in said
