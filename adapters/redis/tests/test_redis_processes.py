"""Two node processes on one redis-server: presence, to_conn emits and server requests across them, and a crash.

The nodes run ``rd_node_app`` through ``python -m superline_zmq_redis.node`` (the runner is part
of what is tested) and are driven over WebSockets only. The presence TTL is short (1.5 s),
so the SIGKILLed node leaves every answer within the test's deadline.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from rd_helpers import eventually
from rd_node_app import Confirmed, Me, Question
from rd_nodes import Nodes
from rd_server import RedisServer

pytestmark = pytest.mark.one_loop

TTL = 1.5
HEARTBEAT = 0.3


@pytest.fixture
async def nodes(redis_server: RedisServer, prefix: str) -> AsyncIterator[Nodes]:
    cluster = Nodes(redis_server.url, prefix, presence_ttl=TTL, heartbeat_interval=HEARTBEAT)
    try:
        yield cluster
    finally:
        await cluster.close()


async def test_two_nodes_share_presence_emits_and_requests(nodes: Nodes) -> None:
    a, b = await nodes.start(), await nodes.start()
    admin_a, admin_b = await nodes.client(a, "admin"), await nodes.client(b, "admin")
    alice = await nodes.client(b, "user", user="alice", rooms="lobby")
    bob = await nodes.client(a, "user", user="bob", rooms="lobby,games")
    notices: list[str] = []
    alice.on("notice", lambda t: notices.append(t.text))
    asked: list[str] = []

    async def confirm(q: Question) -> Confirmed:
        asked.append(q.q)
        return Confirmed(ok=q.q == "ready?")

    alice.implement({"confirm": confirm})
    me_alice: Me = await alice.call("whoami")
    me_bob: Me = await bob.call("whoami")
    assert me_alice.node == b.node_id and me_bob.node == a.node_id

    # presence: both nodes see all four connections (two admins, two users)
    for admin in (admin_a, admin_b):
        await eventually(lambda admin=admin: _equals(admin.call("count"), 4), message="cluster count 4")
        assert {d.id for d in await admin.call("by_user", "alice")} == {me_alice.id}
        assert {d.id for d in await admin.call("room", "lobby")} == {me_alice.id, me_bob.id}
        assert await admin.call("is_online", "bob") and not await admin.call("is_online", "nobody")
        topo = {t.node_id: t for t in await admin.call("topology")}
        assert topo[a.node_id].alive and topo[a.node_id].connections == 2
        assert set(topo[a.node_id].rooms) == {"games", "lobby"} and topo[b.node_id].rooms == ("lobby",)

    # to_conn emit from node A to a connection on node B
    await admin_a.call("emit_to", {"id": me_alice.id, "text": "hi from a"})
    await eventually(lambda: "hi from a" in notices, message=lambda: f"alice got {notices}")
    # a server request asked on node A, answered by the client on node B
    answer: Confirmed = await admin_a.call("ask", {"id": me_alice.id, "q": "ready?"})
    assert answer.ok is True and asked == ["ready?"]
    # a room broadcast from node A reaches the member on node B
    await admin_a.call("broadcast", {"room": "lobby", "text": "room hello"})
    await eventually(lambda: "room hello" in notices, message=lambda: f"alice got {notices}")

    stats = await admin_a.call("stats")
    assert stats["adapter_up"] == 1 and stats["adapter_direct_sent"] >= 2
    assert stats["adapter_publish_failed"] == 0 and stats["adapter_bad_messages"] == 0


async def test_a_killed_node_leaves_presence_within_the_ttl(nodes: Nodes) -> None:
    a, b = await nodes.start(), await nodes.start()
    admin_a = await nodes.client(a, "admin")
    await nodes.client(b, "user", user="carol", rooms="lobby")
    await eventually(lambda: _equals(admin_a.call("count"), 2), message="cluster count 2")
    assert await admin_a.call("is_online", "carol")

    await nodes.kill(b)  # SIGKILL: no leave, its keys stay until the TTL
    killed_at = time.monotonic()
    await eventually(lambda: _equals(admin_a.call("count"), 1), timeout=TTL + 3.0, message="b's connection left")
    took = time.monotonic() - killed_at
    assert took <= TTL + 1.0, f"the dead node stayed {took:.2f} s (ttl {TTL})"
    assert not await admin_a.call("is_online", "carol")
    assert await admin_a.call("room", "lobby") == []
    topo = {t.node_id: t.alive for t in await admin_a.call("topology")}
    assert topo.get(b.node_id) in (False, None) and topo[a.node_id] is True
    # to_conn towards the dead node fails fast instead of hanging
    stats = await admin_a.call("stats")
    assert stats["adapter_up"] == 1


async def test_a_stopped_node_leaves_at_once(nodes: Nodes) -> None:
    a, b = await nodes.start(), await nodes.start()
    admin_a = await nodes.client(a, "admin")
    await nodes.client(b, "user", user="dave")
    await eventually(lambda: _equals(admin_a.call("count"), 2), message="cluster count 2")
    stopped_at = time.monotonic()
    assert await nodes.stop(b) == 0  # SIGTERM: graceful close removes its presence
    await eventually(lambda: _equals(admin_a.call("count"), 1), message="b's connection left")
    assert time.monotonic() - stopped_at < TTL, "a graceful stop must not wait for the TTL"
    assert b.node_id not in {t.node_id for t in await admin_a.call("topology")}


async def _equals(awaitable: object, value: object) -> bool:
    return bool(await awaitable == value)  # type: ignore[misc]
