"""Tansu keeps a consumer-group leader that left mid-rebalance, so a worker stopping
on Tansu does not send LeaveGroup (`MOMENTS_LEAVE_GROUP_ON_STOP`, docs/tansu.md).

Found in CI: in test_scale_out the first worker (the group's leader) was stopped two
seconds after a third joined, before it had joined again; its LeaveGroup left the group
forming with a leader gone, and the other two joined and synced every five seconds for
two minutes with no partition (300 of 600 tasks missing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest

from moments.embedded import TansuBroker, free_port
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import wait_for_metric

pytestmark = [pytest.mark.integration]

MEMBER_ID_REQUIRED = 79
REBALANCE_IN_PROGRESS = 27
SESSION_MS = 3000


class RawMember:
    """A consumer-group member speaking the protocol itself: join, sync, leave, silence."""

    def __init__(self, client: AIOKafkaClient, node: int, group: str) -> None:
        self.client, self.node, self.group = client, node, group
        self.member_id = ""
        self.leader_id = ""
        self.generation = -1
        self.members: list[str] = []

    async def join(self) -> None:
        while True:
            request = JoinGroupRequest(
                self.group, SESSION_MS, SESSION_MS, self.member_id, None, "consumer",
                [("range", b"meta")],
            )  # fmt: skip
            response = await self.client.send(self.node, request)
            self.member_id = response.member_id
            if response.error_code != MEMBER_ID_REQUIRED:
                break
        assert response.error_code == 0, response
        self.leader_id, self.generation = response.leader_id, response.generation_id
        self.members = [member[0] for member in response.members]

    async def sync(self) -> int:
        """SyncGroup, with every member's assignment when this member leads; the error code."""
        leads = self.leader_id == self.member_id
        assignments = [(member, b"partitions") for member in self.members] if leads else []
        request = SyncGroupRequest(self.group, self.generation, self.member_id, None, assignments)
        response = await self.client.send(self.node, request)
        return int(response.error_code)

    async def leave(self) -> None:
        response = await self.client.send(self.node, LeaveGroupRequest(self.group, self.member_id))
        assert response.error_code == 0, response


async def _leader_after(broker: TansuBroker, group: str, *, leaves: bool) -> tuple[str, int]:
    """A leads a formed group; B joins (the group forms again, A still its leader); A
    leaves (LeaveGroup) or goes silent past its session. Who B then finds leading, and
    B's SyncGroup error code, after three joins."""
    client = AIOKafkaClient(bootstrap_servers=broker.bootstrap)
    await client.bootstrap()
    try:
        node = next(iter(client.cluster.brokers())).nodeId
        a, b = RawMember(client, node, group), RawMember(client, node, group)
        await a.join()
        assert a.leader_id == a.member_id
        assert await a.sync() == 0
        await b.join()
        assert b.leader_id == a.member_id  # forming again, A still leads
        if leaves:
            await a.leave()
        else:
            await asyncio.sleep(SESSION_MS / 1000 + 1)  # A's heartbeats stop
        code = -1
        for _ in range(3):
            await b.join()
            code = await b.sync()
        leader = "A" if b.leader_id == a.member_id else "B" if b.leader_id == b.member_id else "?"
        return leader, code
    finally:
        await client.close()


async def test_tansu_keeps_a_leader_that_left_while_the_group_formed(
    tansu_broker: TansuBroker,
) -> None:
    """The broker fact the setting is for: after A's LeaveGroup, B is told A leads and
    its SyncGroup is refused, again and again; after A's silence, B leads and syncs. When
    a Tansu release fixes the former, this test fails: then the auto setting of
    `MOMENTS_LEAVE_GROUP_ON_STOP` can leave on Tansu too."""
    assert await _leader_after(tansu_broker, "left-group", leaves=True) == (
        "A",
        REBALANCE_IN_PROGRESS,
    )
    assert await _leader_after(tansu_broker, "silent-group", leaves=False) == ("B", 0)


@pytest.mark.slow
@pytest.mark.parametrize(("setting", "leaves"), [(None, False), (True, True)], ids=["auto", "true"])
async def test_a_worker_on_tansu_leaves_the_group_as_the_setting_says(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tansu_broker: TansuBroker,
    setting: bool | None,
    leaves: bool,
) -> None:
    """Unset on Tansu (which refuses a producer id), a stopping worker sends no LeaveGroup
    and says so; `true` sends it (aiokafka logs its answer). aiokafka sends none in a
    group's generation 0 (Tansu's first), so a second worker joins first: the first joins
    again, in a later generation."""
    ports = free_port(), free_port()
    settings = make_settings(
        kafka_bootstrap=tansu_broker.bootstrap, metrics_port=ports[0], leave_group_on_stop=setting
    )
    await topics_for(settings)
    worker = start_worker(settings)
    await wait_for_metric(ports[0], "moments_consumer_assigned_partitions", {}, 1, wait_s=90)
    start_worker(settings.model_copy(update={"metrics_port": ports[1]}))
    # The rebalance over (a stop during its assignment could end the process first).
    rejoined = r"Successfully synced group \S+ with generation [1-9](?s:.*)after the rebalance"
    await worker.wait_for_log(rejoined, wait_s=90)
    worker.stop()
    log = worker.log()
    assert worker.proc.returncode == 0, log[-3000:]
    assert ("LeaveGroup request succeeded" in log) is leaves, log[-3000:]
    assert ("without LeaveGroup" in log) is not leaves, log[-3000:]
