"""Whether a stopping worker sends LeaveGroup (`MOMENTS_LEAVE_GROUP_ON_STOP`): the
decision and the close without it. The broker side (Tansu keeps a leader that left
mid-rebalance) is in tests/integration/test_group_leave.py."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from moments.consumer import stay_in_group
from moments.producer import is_idempotent, leaves_group


@pytest.mark.parametrize(
    ("setting", "idempotent", "leaves"),
    [
        (None, True, True),  # Apache Kafka granted a producer id
        (None, False, False),  # Tansu refused it
        (None, None, False),  # stopped before the producer started: the safe side
        (True, False, True),  # set: as set
        (False, True, False),
    ],
)
def test_leaves_group(setting: bool | None, idempotent: bool | None, leaves: bool) -> None:
    assert leaves_group(setting, idempotent) is leaves


async def test_is_idempotent_tells_the_producer_apart() -> None:
    granted = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", enable_idempotence=True)
    plain = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", enable_idempotence=False)
    assert is_idempotent(granted)
    assert not is_idempotent(plain)


class _Coordinator:
    """The two members of aiokafka's GroupCoordinator that `stay_in_group` uses."""

    def __init__(self) -> None:
        self.generation = 3
        self.member_id = "member-1"
        self.left = False

    def reset_generation(self) -> None:
        self.generation, self.member_id = -1, ""

    async def _maybe_leave_group(self) -> None:
        self.left = True
        self.reset_generation()


class _Consumer:
    def __init__(self, coordinator: _Coordinator | None) -> None:
        self._coordinator = coordinator


async def test_stay_in_group_forgets_the_membership_without_leaving() -> None:
    coordinator = _Coordinator()
    stay_in_group(_Consumer(coordinator))
    await coordinator._maybe_leave_group()
    assert not coordinator.left
    assert (coordinator.generation, coordinator.member_id) == (-1, "")
