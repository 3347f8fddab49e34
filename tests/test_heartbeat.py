"""Heartbeat: one timer pings every connection, records ping/pong times, reaps the silent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import eventually, raw_connect
from presence_app import api, build_server
from presence_cluster import MemoryPresenceCluster

from superline_zmq import Conn, Heartbeat, connect


async def _server(**options: Any) -> Any:
    srv = build_server(**options)
    await srv.listen("127.0.0.1", 0)
    return srv


async def test_ticks_ping_every_connection_and_pongs_are_recorded() -> None:
    srv = await _server(heartbeat={"interval": 0.05})
    try:
        clients = [await connect(api, srv.url, role="user", reconnect=False) for _ in range(3)]
        await eventually(lambda: all(c.last_pong_at is not None for c in srv.local.connections))
        for c in srv.local.connections:
            assert c.last_ping_at is not None and c.last_pong_at >= c.last_ping_at  # type: ignore[operator]
        for client in clients:
            await client.close()
    finally:
        await srv.close()


async def test_a_client_that_stops_answering_is_reaped_through_on_disconnect() -> None:
    dropped: list[Conn] = []
    srv = build_server(heartbeat={"interval": 0.05, "max_missed": 2})
    srv._core.on_disconnect = dropped.append  # the app's hook, set after construction for the test
    await srv.listen("127.0.0.1", 0)
    try:
        good = await connect(api, srv.url, role="user", reconnect=False)
        mute = await raw_connect(srv, "user")  # a raw client never answers pings
        await eventually(lambda: srv.statistics()["reaped"] == 1, timeout=5)
        await eventually(lambda: len(dropped) == 1)
        assert dropped[0].close_code is None or dropped[0].close_code == 1006
        assert [c.role for c in srv.local.connections] == ["user"]
        assert good.connected and await good.call("ack") == 1  # the live one is untouched
        with pytest.raises(Exception):  # noqa: B017 - any closed-connection error from websockets
            for _ in range(100):
                await mute.recv_raw(timeout=2)
        await good.close()
    finally:
        await srv.close()


async def test_reaping_counts_consecutive_misses_only() -> None:
    now = [0.0]
    srv = await _server(heartbeat=Heartbeat(interval=3600, max_missed=2), clock=lambda: now[0])
    try:
        raw = await raw_connect(srv, "user")
        conn = srv.local.connections[0]
        srv.tick_heartbeat()
        srv.tick_heartbeat()
        await raw.send({"t": "pong"})  # answering resets the count
        await eventually(lambda: conn.last_pong_at is not None)
        srv.tick_heartbeat()
        srv.tick_heartbeat()
        assert srv.statistics()["reaped"] == 0
        srv.tick_heartbeat()  # third tick sees two unanswered pings
        assert srv.statistics()["reaped"] == 1
        await eventually(lambda: not srv.local.connections)
    finally:
        await srv.close()


async def test_heartbeat_false_never_pings() -> None:
    srv = await _server(heartbeat=False)
    try:
        assert srv.heartbeat is None
        raw = await raw_connect(srv, "user")
        reply = await raw.call(1, "whoami")
        assert reply["t"] == "res"
        assert srv.local.connections[0].last_ping_at is None
    finally:
        await srv.close()


async def test_a_tick_yields_between_batches() -> None:
    import superline_zmq.heartbeat as server_mod

    srv = await _server(heartbeat={"interval": 0.05})
    old = server_mod.HEARTBEAT_BATCH
    server_mod.HEARTBEAT_BATCH = 2
    try:
        clients = [await connect(api, srv.url, role="user", reconnect=False) for _ in range(5)]
        # between two batches of one tick, some connections have a new ping time and some not
        seen_partial = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not seen_partial and loop.time() < deadline:
            pings = {c.last_ping_at for c in srv.local.connections}
            seen_partial = len(pings) > 1
            await asyncio.sleep(0)
        assert seen_partial, "a tick never left the loop between batches"
        for c in clients:
            await c.close()
    finally:
        server_mod.HEARTBEAT_BATCH = old
        await srv.close()


async def test_reaping_on_every_node_of_a_cluster() -> None:
    cluster = MemoryPresenceCluster()
    try:
        for _ in range(2):
            srv = build_server(adapter=cluster.bus.adapter(), heartbeat={"interval": 0.05, "max_missed": 1})
            cluster.servers.append(srv)
            await srv.listen("127.0.0.1", 0)
            cluster.urls.append(srv.url)
        mutes = [await raw_connect(s, "user", query={"user": f"m{k}"}) for k, s in enumerate(cluster.servers)]
        assert len(mutes) == 2
        await eventually(lambda: all(s.statistics()["reaped"] == 1 for s in cluster.servers))
        await eventually(lambda: _offline(cluster.servers[0], "m1"))
    finally:
        await cluster.close()


async def _offline(srv: Any, user: str) -> bool:
    return not await srv.is_online(user)
