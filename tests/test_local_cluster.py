"""``superline_zmq.testing``: real node processes on loopback, their views, and teardown.

Timings: nodes beat every ``HB`` s and declare a silent peer dead after ``TTL`` s, so a
killed node must be seen dead within ``TTL + HB`` (plus ``SLACK`` for the 50 ms member
poll, the stdout pipe and a loaded machine). Nothing sleeps: every step waits on a
condition with a deadline. The scenario tests that are about the processes, not about
the test's own event loop, are sync tests driving ``asyncio.run`` so they run once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from helpers import eventually
from presence_app import api

from superline_zmq import Client, connect
from superline_zmq.testing import ClusterError, LocalCluster, local_cluster

# the plugin under test (its module must not be imported here first, or pytest cannot rewrite it)
pytest_plugins = ["superline_zmq.testing.fixtures"]
MakeCluster = Callable[..., Awaitable[LocalCluster]]

TESTS = Path(__file__).resolve().parent
HB = 0.2
TTL = 1.0
SLACK = 0.5


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_cluster_converges_serves_and_sees_a_killed_node_dead(superline_cluster: MakeCluster) -> None:
    cluster = await superline_cluster("presence_app:app", nodes=3, cwd=TESTS, heartbeat_interval=HB, ttl=TTL)
    ids = [n.node_id for n in cluster.nodes]
    assert len(set(ids)) == 3
    for node in cluster.nodes:
        assert node.alive_members == set(ids) - {node.node_id}
        assert node.endpoints["router"].startswith("tcp://127.0.0.1:")
        client = await connect(api, node.url, role="admin", open_timeout=5)
        try:
            me = await client.call("whoami", timeout=5)
            assert me.node == node.node_id

            async def three_alive(client: Client = client) -> bool:
                topology = await client.call("topology", timeout=5)
                return sorted(t.node_id for t in topology if t.alive) == sorted(ids)

            await eventually(three_alive, timeout=5, interval=0.05)
        finally:
            await client.close()

    victim = cluster.nodes[2]
    t0 = time.monotonic()
    await cluster.kill(2)
    assert victim.gone and victim.returncode == -signal.SIGKILL
    for k in (0, 1):
        view = await cluster.wait_members(k, 1, timeout=TTL + HB + SLACK)
        assert view.get(victim.node_id) in (False, None), view
    assert time.monotonic() - t0 < TTL + HB + SLACK


async def test_teardown_kills_every_process_when_the_body_raises_or_is_cancelled() -> None:
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        async with local_cluster("presence_app:app", 2, cwd=TESTS) as cluster:
            pids += cluster.pids
            assert len(pids) == 2 and not any(_gone(p) for p in pids)
            raise RuntimeError("boom")
    assert all(_gone(p) for p in pids), pids

    entered = asyncio.Event()
    held: list[int] = []

    async def body() -> None:
        async with local_cluster("presence_app:app", 1, cwd=TESTS) as cluster:
            held.extend(cluster.pids)
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await asyncio.wait_for(entered.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert held and all(_gone(p) for p in held), held


async def test_a_start_failure_raises_with_the_childs_stderr() -> None:
    cluster = LocalCluster("presence_app:no_such_app", 2, cwd=TESTS)
    with pytest.raises(ClusterError, match="has no attribute 'no_such_app'") as info:
        await cluster.start()
    assert "exit code 2" in str(info.value)
    assert cluster.pids and all(_gone(p) for p in cluster.pids)


def test_chain_discovery_add_node_graceful_stop_and_pause() -> None:
    async def scenario() -> None:
        async with local_cluster(
            "presence_app:app", 3, cwd=TESTS, seeds="chain", heartbeat_interval=HB, ttl=TTL
        ) as cluster:
            # node k knew only node k-1, yet everyone sees everyone: discovery went through gossip
            for k in (1, 2):
                args = cluster.nodes[k].args
                assert args[args.index("--seed") + 1] == cluster.nodes[k - 1].endpoints["router"]
            assert all(len(n.alive_members) == 2 for n in cluster.nodes)

            new = await cluster.add_node(seed=2)
            assert new.index == 3 and all(len(n.alive_members) == 3 for n in cluster.nodes)

            # a graceful stop announces the leave: peers drop it well before the ttl
            assert await cluster.stop(3) == 0
            for k in (0, 1, 2):
                view = await cluster.wait_members(k, 2, timeout=TTL / 2)
                assert view.get(new.node_id) in (False, None)

            # a paused node times out, and is taken back when it beats again
            cluster.pause(1)
            await cluster.wait_members(0, 1, timeout=TTL + HB + SLACK)
            assert cluster.nodes[0].members[cluster.nodes[1].node_id] is False
            cluster.resume(1)
            await cluster.wait_converged(timeout=5)

    asyncio.run(scenario())


def test_reversed_start_order_starts_the_seed_last() -> None:
    async def scenario() -> None:
        async with local_cluster(
            "presence_app:app", 2, cwd=TESTS, start_order="reversed", heartbeat_interval=HB, ttl=TTL
        ) as cluster:
            first, seed = cluster.nodes[1], cluster.nodes[0]
            assert first.events[0]["_t"] < seed.events[0]["_t"]  # node 1 was ready before its seed
            assert first.alive_members == {seed.node_id}

    asyncio.run(scenario())
