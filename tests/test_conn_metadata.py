"""Connection metadata: id, role, ctx, connected_at, last_ping_at/last_pong_at, on each node."""

from __future__ import annotations

import asyncio

from helpers import eventually
from presence_cluster import MemoryPresenceCluster

from superline_zmq import Conn


async def test_metadata_on_every_node() -> None:
    cluster = MemoryPresenceCluster()
    try:
        from presence_app import build_server

        loop_clock = [1000.0]
        for _ in range(3):
            srv = build_server(adapter=cluster.bus.adapter(), clock=lambda: loop_clock[0])
            cluster.servers.append(srv)
            await srv.listen("127.0.0.1", 0)
            cluster.urls.append(srv.url)
        ids = set()
        for k in range(3):
            loop_clock[0] = 1000.0 + k
            u = await cluster.user(k, f"user{k}", plan="free")
            conn = cluster.servers[k].get(u.id)
            assert isinstance(conn, Conn)
            assert conn.id == u.id and conn.id.startswith(cluster.servers[k].node_id + ".")
            assert conn.role == "user"
            assert conn.ctx == {"role": "user", "user": f"user{k}", "plan": "free"}
            assert conn.user_id == f"user{k}"
            assert conn.connected_at == 1000.0 + k
            assert conn.last_ping_at is None and conn.last_pong_at is None
            ids.add(conn.id)
        assert len(ids) == 3  # unique across the cluster

        srv = cluster.servers[1]
        conn = srv.local.connections[0]
        loop_clock[0] = 2000.0
        srv.tick_heartbeat()
        assert conn.last_ping_at == 2000.0
        loop_clock[0] = 2000.5
        await eventually(lambda: conn.last_pong_at == 2000.5)  # our client answers pings
        assert conn.id == srv.local.connections[0].id  # stable for the connection's life
    finally:
        await cluster.close()


async def test_ids_are_never_reused_on_a_node() -> None:
    from presence_app import api, build_server

    from superline_zmq import connect

    srv = build_server()
    await srv.listen("127.0.0.1", 0)
    try:
        seen = []
        for _ in range(5):
            c = await connect(api, srv.url, role="user", reconnect=False)
            seen.append(srv.local.connections[-1].id)
            await c.close()
            await eventually(lambda: not srv.local.connections)
        assert len(set(seen)) == 5
    finally:
        await asyncio.wait_for(srv.close(), 5)
