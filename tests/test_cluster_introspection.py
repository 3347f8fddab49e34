"""Cluster introspection: ``srv.cluster.*`` and ``srv.is_online`` on every node of a cluster.

Runs on a lone server and on clusters (see tests/presence_cluster.py), driving each node
through its admin role, so the same tests run on nodes in other processes.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import eventually
from presence_cluster import PresenceCluster, StartCluster

from superline_zmq import SuperlineError, create_socket_server
from superline_zmq.presence import ConnDescriptor


def _ids(descs: list[ConnDescriptor]) -> set[str]:
    return {d.id for d in descs}


async def _on_every_node(cluster: PresenceCluster, name: str, arg: Any, pred: Any) -> None:
    for k in range(cluster.nodes):
        admin = await cluster.admin(k)

        async def check(admin: Any = admin) -> Any:
            value = await admin.call(name, arg)
            return pred(value)

        await eventually(check, message=f"node {k}: {name}({arg!r}) never satisfied the test")


async def test_count_and_connections_span_every_node(pcluster: PresenceCluster) -> None:
    users = [await pcluster.user(k % pcluster.nodes, f"u{k}") for k in range(4)]
    await pcluster.count_everywhere(4)
    admin = await pcluster.admin(0)
    descs: list[ConnDescriptor] = await admin.call("connections")
    assert {d.id for d in descs if d.role == "user"} == {u.id for u in users}
    # oldest first, and each names the node that holds it
    assert [d.connected_at for d in descs] == sorted(d.connected_at for d in descs)
    for d in descs:
        assert d.node_id == d.id.split(".")[0]


async def test_admins_count_too(pcluster: PresenceCluster) -> None:
    admin = await pcluster.admin(0)
    await eventually(lambda: _count_is(admin, 1))  # the admin connection itself
    descs = await admin.call("connections")
    assert [d.role for d in descs] == ["admin"]


async def _count_is(admin: Any, n: int) -> bool:
    return bool(await admin.call("count") == n)


async def test_descriptor_fields(pcluster: PresenceCluster) -> None:
    k = pcluster.nodes - 1
    u = await pcluster.user(k, "alice", plan="pro", rooms="lobby,dev")
    await _on_every_node(pcluster, "by_user", "alice", lambda v: len(v) == 1)
    d: ConnDescriptor = (await (await pcluster.admin(0)).call("by_user", "alice"))[0]
    assert d.id == u.id
    assert d.node_id == pcluster.node_id(k)
    assert d.user_id == "alice"
    assert d.rooms == ("dev", "lobby")  # joined in on_connection, before the snapshot
    assert d.extra == {"plan": "pro"}
    flat = d.to_dict()
    assert flat["plan"] == "pro" and flat["user_id"] == "alice" and flat["rooms"] == ["dev", "lobby"]
    # ctx is never serialized, and live values stay node-local
    assert "ctx" not in flat and "last_pong_at" not in flat


async def test_by_user_finds_every_device_on_any_node(pcluster: PresenceCluster) -> None:
    devices = [await pcluster.user(k % pcluster.nodes, "bob") for k in range(3)]
    await pcluster.user(0, "carol")
    await _on_every_node(pcluster, "by_user", "bob", lambda v: _ids(v) == {d.id for d in devices})
    await _on_every_node(pcluster, "is_online", "bob", bool)
    await _on_every_node(pcluster, "is_online", "nobody", lambda v: v is False)
    await _on_every_node(pcluster, "by_user", "nobody", lambda v: v == [])


async def test_disconnect_is_reflected_everywhere(pcluster: PresenceCluster) -> None:
    u = await pcluster.user(pcluster.nodes - 1, "dave")
    await _on_every_node(pcluster, "is_online", "dave", bool)
    await u.close()
    await _on_every_node(pcluster, "is_online", "dave", lambda v: v is False)
    await _on_every_node(pcluster, "by_user", "dave", lambda v: v == [])


async def test_room_membership_changes_are_reflected(pcluster: PresenceCluster) -> None:
    k = pcluster.nodes - 1
    a = await pcluster.user(0, "a", rooms="lobby")
    b = await pcluster.user(k, "b")
    await _on_every_node(pcluster, "room", "lobby", lambda v: _ids(v) == {a.id})
    await (await pcluster.admin(k)).call("join", {"id": b.id, "room": "lobby"})
    await _on_every_node(pcluster, "room", "lobby", lambda v: _ids(v) == {a.id, b.id})
    await _on_every_node(pcluster, "by_user", "b", lambda v: v and v[0].rooms == ("lobby",))
    await (await pcluster.admin(0)).call("leave", {"id": a.id, "room": "lobby"})
    await _on_every_node(pcluster, "room", "lobby", lambda v: _ids(v) == {b.id})
    await b.close()
    await _on_every_node(pcluster, "room", "lobby", lambda v: v == [])


async def test_topology_lists_every_node_with_counts_and_rooms(pcluster: PresenceCluster) -> None:
    n = pcluster.nodes
    for k in range(n):
        for _ in range(k + 1):
            await pcluster.user(k, f"t{k}", rooms=f"room{k}")
        await pcluster.admin(k)
    want = {pcluster.node_id(k): (k + 2, (f"room{k}",)) for k in range(n)}  # k + 1 users and one admin

    def ok(topo: list[Any]) -> bool:
        return {t.node_id: (t.connections, t.rooms) for t in topo} == want and all(t.alive for t in topo)

    await _on_every_node(pcluster, "topology", None, ok)


async def test_graceful_close_removes_a_nodes_connections_at_once(multi: PresenceCluster) -> None:
    last = multi.nodes - 1
    await multi.user(0, "stay")
    await multi.user(last, "go")
    await multi.count_everywhere(2, nodes=[0])
    await multi.stop(last)
    admin = await multi.admin(0)
    # immediately, not after the TTL: poll well inside it
    await eventually(lambda: _online_is(admin, "go", False), timeout=multi.ttl / 2)
    topo = await admin.call("topology")
    assert multi.node_id(last) not in {t.node_id for t in topo}
    assert await admin.call("is_online", "stay") is True


async def test_a_crashed_node_drops_out_after_the_ttl(multi: PresenceCluster) -> None:
    last = multi.nodes - 1
    await multi.user(0, "stay")
    await multi.user(last, "crash")
    await multi.count_everywhere(2, nodes=[0])
    await multi.crash(last)
    admin = await multi.admin(0)
    loop = __import__("asyncio").get_running_loop()
    t0 = loop.time()
    await eventually(lambda: _online_is(admin, "crash", False), timeout=multi.ttl * 4)
    elapsed = loop.time() - t0
    assert elapsed > multi.ttl / 3, f"gone after {elapsed:.3f}s: a crash must not look like a graceful leave"
    assert await admin.call("count") == 1 + len(multi._admins)  # the user "stay" and the admins
    topo = {t.node_id: t.alive for t in await admin.call("topology")}
    assert topo.get(multi.node_id(last)) in (False, None)  # shown dead until forgotten
    assert topo[multi.node_id(0)] is True


async def _online_is(admin: Any, user: str, want: bool) -> bool:
    return bool(await admin.call("is_online", user) is want)


async def test_an_adapter_without_presence_is_a_clear_error() -> None:
    class NoPresence:
        name = "bare"
        presence = None

    from presence_app import api

    srv = create_socket_server(api, adapter=NoPresence())  # type: ignore[arg-type]
    with pytest.raises(SuperlineError, match=r"'bare' adapter \(NoPresence\) has no presence"):
        await srv.cluster.count()
    with pytest.raises(SuperlineError, match="has no presence"):
        await srv.is_online("u1")


async def test_describe_conn_errors_are_reported_and_the_connection_lives(make_presence_cluster: StartCluster) -> None:
    from presence_app import api

    from superline_zmq import connect

    errors: list[BaseException] = []
    srv = create_socket_server(
        api,
        authenticate=lambda hs: ("user", dict(hs.query)),
        identify=lambda conn: conn.ctx.get("user"),
        describe_conn=lambda conn: {"id": "spoofed", "x": object() if "obj" in conn.ctx else 1},
        on_error=lambda exc, conn: errors.append(exc),
    )
    await srv.listen("127.0.0.1", 0)
    try:
        client = await connect(api, srv.url, role="user", params={"user": "eve"}, reconnect=False)
        await eventually(lambda: errors)
        assert "reserved field(s) ['id']" in str(errors[0])
        assert srv.statistics()["presence_errors"] == 1
        descs = await srv.cluster.by_user("eve")
        assert len(descs) == 1 and descs[0].extra == {}  # published without the bad fields
        await client.close()
    finally:
        await srv.close()


async def test_a_crashed_node_comes_back_only_by_beating_again(make_presence_cluster: StartCluster) -> None:
    # (memory and process clusters alike: a node that left never returns under its id)
    cluster = await make_presence_cluster(2)
    await cluster.user(1, "x")
    await cluster.count_everywhere(1, nodes=[0])
    await cluster.stop(1)
    admin = await cluster.admin(0)
    await eventually(lambda: _online_is(admin, "x", False), timeout=cluster.ttl / 2)
    stats = await admin.call("stats")
    assert stats["adapter_gossip_left"] >= 1
