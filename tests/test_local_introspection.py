"""Local introspection: ``srv.node_id``, ``srv.local.*`` and ``srv.room(name)`` read this node only."""

from __future__ import annotations

import asyncio

from helpers import eventually
from presence_app import Local, build_server
from presence_cluster import PresenceCluster


async def _local(cluster: PresenceCluster, k: int) -> Local:
    value: Local = await (await cluster.admin(k)).call("local")
    return value


async def test_each_node_sees_only_its_own_connections_rooms(pcluster: PresenceCluster) -> None:
    n = pcluster.nodes
    users = {k: [await pcluster.user(k, f"u{k}", rooms=f"r{k},common") for _ in range(2)] for k in range(n)}
    for k in range(n):
        local = await _local(pcluster, k)
        assert local.node == pcluster.node_id(k)
        user_ids = {c for c in local.connections if c in {u.id for u in users[k]}}
        assert user_ids == {u.id for u in users[k]}
        assert len(local.connections) == 3  # two users and the admin asking
        assert local.rooms == sorted({f"r{k}", "common"})
        assert local.topics == []
        assert local.sizes == {f"r{k}": (2, 2), "common": (2, 2)}


async def test_rooms_and_connections_follow_leaves_and_closes(pcluster: PresenceCluster) -> None:
    k = pcluster.nodes - 1
    a = await pcluster.user(k, "a", rooms="x")
    await (await pcluster.admin(k)).call("leave", {"id": a.id, "room": "x"})
    assert (await _local(pcluster, k)).rooms == []
    await a.close()

    async def gone() -> bool:
        return a.id not in (await _local(pcluster, k)).connections

    await eventually(gone)


async def test_node_id_is_stable_and_conn_ids_name_their_node() -> None:
    srv = build_server()
    node = srv.node_id
    await srv.listen("127.0.0.1", 0)
    try:
        assert srv.node_id == node and len(node) == 16
        from presence_app import api

        from superline_zmq import connect

        clients = [await connect(api, srv.url, role="user", reconnect=False) for _ in range(3)]
        conns = srv.local.connections
        assert len({c.id for c in conns}) == 3
        assert all(c.id.startswith(node + ".") for c in conns)
        assert srv.node_id == node
        # filter the list like any Python list
        assert [c for c in conns if c.role == "user"] == conns
        for c in clients:
            await c.close()
    finally:
        await srv.close()


async def test_room_handle_counts_local_members(pcluster: PresenceCluster) -> None:
    # srv.room(name).size / .connections through the admin's `local` view and the cluster view
    for k in range(pcluster.nodes):
        for _ in range(k + 1):
            await pcluster.user(k, rooms="lobby")
    for k in range(pcluster.nodes):
        local = await _local(pcluster, k)
        assert local.rooms == ["lobby"]
        assert local.sizes == {"lobby": (k + 1, k + 1)}


async def test_local_topics_lists_subscribed_topic_names() -> None:
    import fanout_app

    from superline_zmq import connect

    srv = fanout_app.build_server()
    await srv.listen("127.0.0.1", 0)
    try:
        client = await connect(fanout_app.api, srv.url, role="user", reconnect=False)
        for name in ("ticks", "alerts"):
            sub = client.subscribe(name, lambda _: None)
            await asyncio.wait_for(sub.ready, 5)
        assert srv.local.topics == ["alerts", "ticks"]  # a role topic under its own name
        assert srv.local.rooms == []
        sub = client.subscribe("news", lambda _: None)
        await asyncio.wait_for(sub.ready, 5)
        sub.unsubscribe()
        await eventually(lambda: srv.local.topics == ["alerts", "ticks"])
        await client.close()
        await eventually(lambda: srv.local.topics == [])
    finally:
        await srv.close()
