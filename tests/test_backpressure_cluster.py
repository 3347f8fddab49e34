"""Backpressure under cross-node fan-out: a slow reader on one node never slows anyone else.

The single-node policies (close with 1013, drop and count) are in test_server_robustness;
here the frames come from another node through the adapter, by room broadcast and by
``to_conn`` emit, and a fast member on the same node must receive every frame.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import DEFAULT_TIMEOUT, eventually, raw_connect
from presence_app import Text, api, build_server
from presence_cluster import MemoryPresenceCluster

from superline_zmq import connect

LIMIT = 64 * 1024
BIG = "x" * 16 * 1024


async def _cluster(policy: str) -> MemoryPresenceCluster:
    cluster = MemoryPresenceCluster()
    for _ in range(2):
        srv = build_server(
            adapter=cluster.bus.adapter(), backpressure={"max_buffered_bytes": LIMIT, "on_exceed": policy}
        )
        cluster.servers.append(srv)
        await srv.listen("127.0.0.1", 0)
        cluster.urls.append(srv.url)
    return cluster


@pytest.mark.parametrize("policy", ["drop", "close"])
async def test_slow_reader_on_another_node(policy: str) -> None:
    cluster = await _cluster(policy)
    try:
        a, b = cluster.servers
        got: list[str] = []
        fast = await connect(api, b.url, role="user", params={"rooms": "big"}, reconnect=False)
        fast.on("notice", lambda t: got.append(t.text))
        # a slow reader: a raw client whose socket nobody reads, with tiny OS buffers
        slow = await raw_connect(b, "user", query={"rooms": "big"}, max_queue=1)
        slow.ws.transport.pause_reading()
        await eventually(lambda: b.room("big").size == 2)
        await eventually(lambda: _room_size(a, "big", 2))
        slow_id = next(c.id for c in b.local.connections if c.id != fast_id(b, got))
        stats = b.statistics
        sent = 0
        key = "dropped_backpressure" if policy == "drop" else "closed_backpressure"
        for n in range(2000):  # bounded: stops as soon as the policy has acted enough
            a.room("big").broadcast("notice", Text(f"{n}:{BIG}"))
            a.to_conn(slow_id).emit("notice", Text(f"direct {n}"))
            sent += 1
            if n % 10 == 9:
                await eventually(lambda sent=sent: len(got) == sent, timeout=DEFAULT_TIMEOUT)
                if stats()[key] >= (5 if policy == "drop" else 1):
                    break
        assert stats()[key] >= 1, stats()
        assert len(got) == sent and got[-1].startswith(f"{sent - 1}:")  # the fast member lost nothing
        if policy == "close":
            await eventually(lambda: slow_id not in {c.id for c in b.local.connections})
            assert stats()["closed_backpressure"] == 1
        else:
            assert slow_id in {c.id for c in b.local.connections}  # dropped frames, kept the connection
        await fast.close()
        slow.ws.transport.abort()  # else the server's graceful close waits out the slow peer
    finally:
        await cluster.close()


def fast_id(srv: Any, _: Any) -> str:
    """The connection that joined first (the fast client)."""
    return str(min(srv.local.connections, key=lambda c: c.connected_at).id)


async def _room_size(srv: Any, room: str, n: int) -> bool:
    return len(await srv.cluster.room(room)) == n
