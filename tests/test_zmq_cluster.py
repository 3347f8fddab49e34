"""The ZeroMQ cluster as processes: discovery, start order, crash, pause, garbage on the wire.

Each scenario runs on real node processes (``superline-zmq run presence_app:app``) and
checks behaviour through each node's admin role: presence, targeted sends and server
requests. They are sync tests driving ``asyncio.run``, so they run once, not per loop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from helpers import eventually
from presence_cluster import HEARTBEAT_INTERVAL, TTL, ProcessPresenceCluster

from superline_zmq.testing import LocalCluster

TESTS = Path(__file__).resolve().parent


def run(scenario: Callable[[ProcessPresenceCluster], Awaitable[None]], n: int = 3, **options: Any) -> None:
    async def main() -> None:
        local = LocalCluster(
            "presence_app:app", n, heartbeat_interval=HEARTBEAT_INTERVAL, ttl=TTL, cwd=str(TESTS), **options
        )
        await local.start()
        cluster = ProcessPresenceCluster(local)
        try:
            await scenario(cluster)
        finally:
            await cluster.close()

    asyncio.run(main())


async def _everyone_reaches_everyone(cluster: ProcessPresenceCluster, alive: list[int], tag: str) -> None:
    """A user on each live node; every live node emits to each of them and asks each a question."""
    users = {k: await cluster.user(k, f"{tag}{k}") for k in alive}
    for k in alive:
        admin = await cluster.admin(k)
        for j, u in users.items():
            await eventually(lambda admin=admin, j=j: admin.call("is_online", f"{tag}{j}"))
            await admin.call("emit_to", {"id": u.id, "text": f"{k}->{j}"})
            assert (await admin.call("ask", {"id": u.id, "q": "ready?"})).ok is True
    for j, u in users.items():
        for k in alive:
            await u.expect(f"{k}->{j}")
        assert len(u.notices) == len(alive)  # nothing lost, nothing doubled


def test_discovery_through_a_single_seed() -> None:
    # node 2 knows only node 1, which knows only node 0: node 2 must still reach node 0
    async def scenario(cluster: ProcessPresenceCluster) -> None:
        await _everyone_reaches_everyone(cluster, [0, 1, 2], "s")

    run(scenario, seeds="chain")


def test_seed_started_last() -> None:
    async def scenario(cluster: ProcessPresenceCluster) -> None:
        await _everyone_reaches_everyone(cluster, [0, 1, 2], "r")

    run(scenario, start_order="reversed")


def test_a_sigkilled_node_vanishes_and_the_survivors_lose_nothing() -> None:
    async def scenario(cluster: ProcessPresenceCluster) -> None:
        doomed = await cluster.user(2, "doomed")
        admin0 = await cluster.admin(0)
        await eventually(lambda: admin0.call("is_online", "doomed"))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await cluster.crash(2)
        for k in (0, 1):
            admin = await cluster.admin(k)
            await eventually(lambda admin=admin: _offline(admin, "doomed"), timeout=TTL + HEARTBEAT_INTERVAL + 2)
        assert loop.time() - t0 > TTL / 3, "a crash must be detected by silence, not announced"
        await admin0.call("emit_to", {"id": doomed.id, "text": "lost"})
        assert (await admin0.call("stats"))["dropped_unknown_node"] == 1  # counted, not silent
        await _everyone_reaches_everyone(cluster, [0, 1], "k")

    run(scenario)


def test_a_paused_node_catches_up_on_what_it_missed() -> None:
    # SIGSTOP past the peers' forget time: they drop it and stop sending to it, so every
    # delta of the pause is lost to it and it must pull the slices when it resumes.
    async def scenario(cluster: ProcessPresenceCluster) -> None:
        leaving = await cluster.user(0, "leaving")
        admin2 = await cluster.admin(2)
        await eventually(lambda: admin2.call("is_online", "leaving"))
        cluster.local.pause(2)
        try:
            admin0 = await cluster.admin(0)
            await eventually(lambda: _topology_lacks(admin0, cluster.node_id(2)), timeout=4 * TTL + 2)
            await leaving.close()
            arrived = [await cluster.user(k, f"new{k}") for k in (0, 1)]
        finally:
            cluster.local.resume(2)
        for user in ("new0", "new1"):
            await eventually(lambda user=user: admin2.call("is_online", user), timeout=4 * TTL + 2)
        await eventually(lambda: _offline(admin2, "leaving"), timeout=4 * TTL + 2)
        assert len(arrived) == 2
        await _everyone_reaches_everyone(cluster, [0, 1, 2], "p")  # and it is a full member again

    run(scenario)


def test_garbage_on_a_nodes_endpoints_is_counted_and_it_keeps_serving() -> None:
    async def scenario(cluster: ProcessPresenceCluster) -> None:
        target = cluster.local.nodes[1]
        ctx = zmq.asyncio.Context()
        try:
            # a rogue DEALER: wrong frame counts, unknown kinds, undecodable gossip and data
            dealer = ctx.socket(zmq.DEALER)
            dealer.connect(target.endpoints["router"])
            for frames in ([b"junk"], [b"g", b"x", b"", b"\xc1\xc1"], [b"z", b"a", b"b", b"c"], [b"d"] * 7):
                await dealer.send_multipart(frames)
            # a rogue subscriber sending odd subscription messages to the XPUB
            xsub = ctx.socket(zmq.XSUB)
            xsub.connect(target.endpoints["pub"])
            await xsub.send(b"\x01" + b"\xff" * 40)
            await xsub.send(b"\x07nonsense")
        finally:
            ctx.destroy(linger=2000)  # let the garbage reach the node before closing
        # raw TCP bytes that are not ZMTP at all
        for endpoint in (target.endpoints["router"], target.endpoints["pub"]):
            host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)))
        admin1 = await cluster.admin(1)

        seen: list[dict[str, int]] = []

        async def counted() -> bool:
            seen[:] = [await admin1.call("stats")]
            return seen[0]["adapter_bad_messages"] >= 4

        await eventually(counted, message=lambda: f"stats: {seen}")
        await _everyone_reaches_everyone(cluster, [0, 1, 2], "g")

    run(scenario)


async def _offline(admin: Any, user: str) -> bool:
    return bool(await admin.call("is_online", user) is False)


async def _topology_lacks(admin: Any, node_id: str) -> bool:
    return all(t.node_id != node_id or not t.alive for t in await admin.call("topology"))
