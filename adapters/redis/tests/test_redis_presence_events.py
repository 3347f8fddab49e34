"""Presence events on the Redis adapter: its presence is a ``PresenceEvents`` fed by ``p:presence``.

Adapters in this process on one redis-server. A :class:`Fold` adds up the changes a
node's watcher gets (strict about duplicates) and must equal what that node's Redis
queries answer; the last test runs ``srv.cluster.on_user`` end to end on a server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from rd_helpers import DEFAULT_TIMEOUT, eventually
from rd_node_app import api, build_server
from rd_server import RedisServer
from superline_zmq_redis import RedisAdapter, redis_adapter

from superline_zmq import PresenceChange, PresenceEvents, UserPresence, connect
from superline_zmq.ids import make_conn_id, new_node_id
from superline_zmq.presence import ConnDescriptor

FAST = {"presence_ttl": 0.6, "heartbeat_interval": 0.15, "liveness_poll": 0.1, "forget_after": 1.2}


class Fold:
    """What a watcher knows, added up from its changes."""

    def __init__(self) -> None:
        self.online: dict[str, int] = {}
        self.rooms: dict[str, set[str]] = {}
        self.users: list[tuple[str, bool, str, int, bool]] = []

    def __call__(self, change: PresenceChange) -> None:
        for up in change.diff.users:
            self.users.append((up.user_id, up.online, up.node_id, up.connections, change.initial))
            if up.online:
                assert up.user_id not in self.online, f"{up.user_id} online twice"
                self.online[up.user_id] = up.connections
            else:
                assert self.online.pop(up.user_id, None) is not None, f"{up.user_id} offline, never online"
        for rd in change.diff.rooms:
            members = self.rooms.setdefault(rd.room, set())
            for d in rd.leaves:
                members.remove(d.id)
            for d in rd.joins:
                assert d.id not in members
                members.add(d.id)

    async def matches(self, presence: Any) -> bool:
        conns: list[ConnDescriptor] = await presence.connections()
        if set(self.online) != {d.user_id for d in conns if d.user_id is not None}:
            return False
        rooms = self.rooms.keys() | {r for d in conns for r in d.rooms}
        return all(self.rooms.get(r, set()) == {d.id for d in conns if r in d.rooms} for r in rooms)


class Node:
    def __init__(self, adapter: RedisAdapter) -> None:
        self.adapter = adapter
        self.id = new_node_id()

    @property
    def presence(self) -> Any:
        return self.adapter.presence

    def desc(self, seq: int, user: str | None = None, rooms: tuple[str, ...] = ()) -> ConnDescriptor:
        return ConnDescriptor(
            id=make_conn_id(self.id, seq), role="user", node_id=self.id, connected_at=float(seq), user_id=user,
            rooms=rooms,
        )  # fmt: skip

    async def watch(self, fold: Callable[[PresenceChange], None]) -> Callable[[], None]:
        presence = self.presence
        assert isinstance(presence, PresenceEvents)
        off = presence.watch(fold)
        await asyncio.wait_for(presence.watching(), DEFAULT_TIMEOUT)
        return off


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[..., Any]]:
    made: list[Node] = []

    async def make(url: str, prefix: str, **options: Any) -> Node:
        node = Node(await redis_adapter(url, prefix=prefix, **options))
        made.append(node)
        await node.adapter.start(node.id, lambda c, d: None, lambda s, d: None)
        return node

    yield make
    for node in made:
        await node.adapter.close()


def users(fold: Fold) -> list[tuple[str, bool, str, int, bool]]:
    return fold.users


async def test_every_change_from_every_node_once_in_order(redis_server: RedisServer, nodes: Any, prefix: str) -> None:
    a, b = await nodes(redis_server.url, prefix), await nodes(redis_server.url, prefix)
    b.presence.put(b.desc(1, "ann", ("lobby",)))
    await eventually(lambda: _count(a, 1))
    fold = Fold()
    await a.watch(fold)
    assert users(fold) == [("ann", True, b.id, 1, True)]  # the state as it was: initial
    a.presence.put(a.desc(1, "ann", ("lobby",)))  # a second device, then the first goes: nothing
    await eventually(lambda: _count(a, 2))
    b.presence.remove(make_conn_id(b.id, 1))
    a.presence.put(a.desc(2, "bob"))
    a.presence.put(a.desc(2, "bob", ("lobby",)))  # a room change: its descriptor replaced
    lobby = {make_conn_id(a.id, 1), make_conn_id(a.id, 2)}

    async def settled() -> bool:
        # puts reach Redis a moment later: compare the fold with Redis once Redis has them all
        in_redis = {d.id for d in await a.presence.room("lobby")} == lobby
        return in_redis and await fold.matches(a.presence)

    await eventually(settled, message=lambda: f"{fold.online} {fold.rooms}")
    assert users(fold) == [("ann", True, b.id, 1, True), ("bob", True, a.id, 1, False)]
    assert fold.rooms["lobby"] == lobby
    a.presence.remove(make_conn_id(a.id, 1))
    await eventually(lambda: ("ann", False, a.id, 0, False) in users(fold))
    assert a.adapter.statistics()["mirror_watcher_errors"] == 0


async def test_a_crash_goes_offline_after_the_ttl_and_a_leave_at_once(
    redis_server: RedisServer, nodes: Any, prefix: str
) -> None:
    a, b, c = [await nodes(redis_server.url, prefix, **FAST) for _ in range(3)]
    b.presence.put(b.desc(1, "bob", ("lobby",)))
    c.presence.put(c.desc(1, "cat"))
    fold = Fold()
    await a.watch(fold)
    await eventually(lambda: set(fold.online) == {"bob", "cat"})
    await eventually(lambda: fold.matches(a.presence))
    crashed = time.monotonic()
    await b.adapter.simulate_crash()
    await eventually(lambda: "bob" not in fold.online, 3.0)
    assert time.monotonic() - crashed <= FAST["presence_ttl"] + FAST["liveness_poll"] + 0.5
    assert fold.rooms["lobby"] == set()
    left = time.monotonic()
    await c.adapter.close()
    await eventually(lambda: "cat" not in fold.online)
    assert time.monotonic() - left < FAST["presence_ttl"]  # the leave, not the ttl
    await eventually(lambda: a.adapter.statistics()["nodes_forgotten"] >= 1, 3.0)  # the crashed one
    assert [u for u in users(fold) if u[0] == "bob"] == [("bob", True, b.id, 1, True), ("bob", False, b.id, 0, False)]


async def test_what_was_missed_while_the_subscriber_was_away_is_read_again(
    redis_server: RedisServer, nodes: Any, prefix: str
) -> None:
    a = await nodes(redis_server.url, prefix, reconnect_backoff=(0.2, 0.4))
    b = await nodes(redis_server.url, prefix)
    fold = Fold()
    await a.watch(fold)
    b.presence.put(b.desc(1, "ann"))
    await eventually(lambda: "ann" in fold.online)
    raw = aioredis.from_url(redis_server.url)
    try:
        reads = a.adapter.statistics()["mirror_reads"]
        killed = await raw.client_kill_filter(_type="pubsub")
        assert killed >= 1
        b.presence.remove(make_conn_id(b.id, 1))  # while a's subscriber may be away
        b.presence.put(b.desc(2, "bob"))
        await eventually(lambda: a.adapter.statistics()["mirror_reads"] > reads and a.adapter.up)
        await eventually(lambda: fold.matches(a.presence), message=lambda: f"{fold.online}")
        assert set(fold.online) == {"bob"}
    finally:
        await raw.aclose()


async def test_on_user_on_a_server(redis_server: RedisServer, prefix: str) -> None:
    servers = [build_server(adapter=await redis_adapter(redis_server.url, prefix=prefix, **FAST)) for _ in range(2)]
    got: list[UserPresence] = []
    sub = servers[0].cluster.on_user(got.append)  # before it starts
    clients = []
    try:
        for srv in servers:
            await srv.listen("127.0.0.1", 0)
        await asyncio.wait_for(sub.ready, DEFAULT_TIMEOUT)
        params = {"user": "ann"}
        clients.append(await connect(api, servers[1].url, role="user", params=params, reconnect=False))
        await eventually(lambda: [(u.user_id, u.online) for u in got] == [("ann", True)])
        assert got[0].node_id == servers[1].node_id and got[0].connections == 1
        await clients.pop().close()
        await eventually(lambda: [(u.user_id, u.online) for u in got] == [("ann", True), ("ann", False)])
    finally:
        for c in clients:
            await c.close()
        for srv in servers:
            await srv.close()


async def _count(node: Node, n: int) -> bool:
    return bool(await node.presence.count() == n)
