"""Targeted sends: ``srv.to_conn(id)`` and ``srv.to_user(uid)`` from any node to any node."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import eventually
from presence_cluster import PresenceCluster


async def _stats(cluster: PresenceCluster, k: int) -> dict[str, int]:
    return dict(await (await cluster.admin(k)).call("stats"))


async def test_to_conn_emit_reaches_that_connection_from_every_node(pcluster: PresenceCluster) -> None:
    target = await pcluster.user(pcluster.nodes - 1, "t")
    bystander = await pcluster.user(0, "b")
    for k in range(pcluster.nodes):
        await (await pcluster.admin(k)).call("emit_to", {"id": target.id, "text": f"from {k}"})
    for k in range(pcluster.nodes):
        await target.expect(f"from {k}")
    # nothing else arrived: the bystander gets a later emit of its own, and nothing before it
    await (await pcluster.admin(0)).call("emit_to", {"id": bystander.id, "text": "mark"})
    await bystander.expect("mark")
    assert bystander.notices == ["mark"]


async def test_to_conn_emit_from_one_node_arrives_in_order(pcluster: PresenceCluster) -> None:
    target = await pcluster.user(pcluster.nodes - 1, "t")
    admin = await pcluster.admin(0)
    for n in range(50):
        await admin.call("emit_to", {"id": target.id, "text": str(n)})
    await target.expect("49")
    assert target.notices == [str(n) for n in range(50)]


async def test_to_user_emit_reaches_every_device_on_every_node(pcluster: PresenceCluster) -> None:
    devices = [await pcluster.user(k % pcluster.nodes, "multi") for k in range(pcluster.nodes + 1)]
    other = await pcluster.user(0, "other")
    for k in range(pcluster.nodes):
        admin = await pcluster.admin(k)
        await eventually(lambda admin=admin: admin.call("is_online", "multi"))
        await admin.call("emit_user", {"user": "multi", "text": f"hi from {k}"})
    for d in devices:
        for k in range(pcluster.nodes):
            await d.expect(f"hi from {k}")
        assert len(d.notices) == pcluster.nodes  # once each, not once per device
    await (await pcluster.admin(0)).call("emit_to", {"id": other.id, "text": "mark"})
    await other.expect("mark")
    assert other.notices == ["mark"]


async def test_to_conn_close_kicks_one_connection_on_any_node(pcluster: PresenceCluster) -> None:
    victim = await pcluster.user(pcluster.nodes - 1, "v")
    keeper = await pcluster.user(pcluster.nodes - 1, "v")
    await (await pcluster.admin(0)).call("close_to", {"id": victim.id, "code": 4000})
    await eventually(lambda: not victim.client.connected)
    await pcluster.count_everywhere(1)
    assert keeper.client.connected
    assert await keeper.client.call("ack") == 1


async def test_to_user_disconnect_kicks_all_of_a_users_connections(pcluster: PresenceCluster) -> None:
    devices = [await pcluster.user(k % pcluster.nodes, "gone") for k in range(pcluster.nodes + 1)]
    keeper = await pcluster.user(0, "keep")
    admin = await pcluster.admin(pcluster.nodes - 1)
    await eventually(lambda: admin.call("is_online", "gone"))
    await admin.call("disconnect_user", {"user": "gone"})
    await eventually(lambda: not any(d.client.connected for d in devices))
    await eventually(lambda: _offline(admin, "gone"))
    assert keeper.client.connected


async def _offline(admin: Any, user: str) -> bool:
    return bool(await admin.call("is_online", user) is False)


async def test_to_conn_of_an_unknown_connection_is_dropped_and_counted(pcluster: PresenceCluster) -> None:
    target = await pcluster.user(pcluster.nodes - 1, "t")
    await target.close()
    admin = await pcluster.admin(0)
    await eventually(lambda: _offline(admin, "t"))
    await admin.call("emit_to", {"id": target.id, "text": "late"})
    await admin.call("close_to", {"id": target.id})
    holder = pcluster.nodes - 1
    await eventually(lambda: _counter_is(pcluster, holder, "dropped_unknown_conn", 2))


async def _counter_is(cluster: PresenceCluster, k: int, name: str, n: int) -> bool:
    return (await _stats(cluster, k)).get(name) == n


async def test_to_conn_to_a_node_that_does_not_exist_is_dropped_and_counted(pcluster: PresenceCluster) -> None:
    admin = await pcluster.admin(0)
    await admin.call("emit_to", {"id": "0123456789abcdef.1", "text": "nowhere"})
    await admin.call("emit_to", {"id": "not-an-id", "text": "nowhere"})
    stats = await _stats(pcluster, 0)
    assert stats["dropped_unknown_node"] == 2, stats


async def test_to_conn_to_a_crashed_node_is_dropped_and_counted(multi: PresenceCluster) -> None:
    last = multi.nodes - 1
    target = await multi.user(last, "t")
    admin = await multi.admin(0)
    await eventually(lambda: admin.call("is_online", "t"))
    await multi.crash(last)
    await eventually(lambda: _offline(admin, "t"), timeout=multi.ttl * 4)
    await admin.call("emit_to", {"id": target.id, "text": "lost"})
    assert (await _stats(multi, 0))["dropped_unknown_node"] == 1


async def test_emit_takes_shared_events_only() -> None:
    from presence_app import build_server

    srv = build_server()
    with pytest.raises(ValueError, match="'ack' is not a shared event; to_conn"):
        srv.to_conn("x.1").emit("ack", None)
    with pytest.raises(ValueError, match="'nope' is not a shared event; to_user"):
        srv.to_user("u").emit("nope", None)
