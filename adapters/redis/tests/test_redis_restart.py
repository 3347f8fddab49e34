"""Redis restarts under live traffic: publishes fail fast and are counted, local service goes on,
and after the restart delivery and presence come back without anyone's help."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from rd_helpers import eventually
from rd_node_app import Me, Text, api, build_server
from rd_server import RedisServer
from superline_zmq_redis import RedisAdapter, redis_adapter

from superline_zmq import Client, SocketServer, connect

TIMEOUT = 10.0


class Publisher:
    """A bounded loop broadcasting to a room every few ms; records the slowest broadcast call."""

    def __init__(self, srv: SocketServer, room: str, *, every: float = 0.005, limit: int = 20_000) -> None:
        self.srv = srv
        self.room = room
        self.every = every
        self.limit = limit
        self.sent = 0
        self.slowest = 0.0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self.sent < self.limit:
            t0 = time.perf_counter()
            self.srv.room(self.room).broadcast("notice", Text(f"m{self.sent}"))
            self.slowest = max(self.slowest, time.perf_counter() - t0)
            self.sent += 1
            await asyncio.sleep(self.every)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class Member:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.notices: list[str] = []
        client.on("notice", lambda t: self.notices.append(t.text))


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Any]]:
    made: list[SocketServer] = []
    clients: list[Client] = []

    async def make(url: str, prefix: str) -> tuple[SocketServer, RedisAdapter]:
        adapter = await redis_adapter(
            url,
            prefix=prefix,
            presence_ttl=3.0,
            heartbeat_interval=0.3,
            liveness_poll=0.2,
            command_timeout=2.0,
            reconnect_backoff=(0.02, 0.2),
        )
        srv = build_server(adapter=adapter)
        made.append(srv)
        await srv.listen("127.0.0.1", 0)
        return srv, adapter

    async def client(srv: SocketServer, role: str, **params: str) -> Client:
        c = await connect(api, srv.url, role=role, params=params, reconnect=False, open_timeout=TIMEOUT)
        clients.append(c)
        return c

    make.client = client  # type: ignore[attr-defined]
    yield make
    for c in clients:
        await asyncio.wait_for(c.close(), TIMEOUT)
    for srv in reversed(made):
        await asyncio.wait_for(srv.close(), TIMEOUT)


async def test_redis_restart_under_traffic(make_redis: Callable[..., RedisServer], servers: Any, prefix: str) -> None:
    redis = make_redis()
    srv_a, ad_a = await servers(redis.url, prefix)
    srv_b, ad_b = await servers(redis.url, prefix)
    alice = Member(await servers.client(srv_a, "user", user="alice", rooms="lobby"))  # local to the publisher
    bob = Member(await servers.client(srv_b, "user", user="bob", rooms="lobby"))  # across Redis
    admin_a = await servers.client(srv_a, "admin")
    await eventually(lambda: _count(srv_a, 3), TIMEOUT, message="presence of 3 connections")

    pub = Publisher(srv_a, "lobby")
    pub.start()
    try:
        await eventually(lambda: len(bob.notices) >= 5, TIMEOUT, message="cross-node delivery before the outage")

        # --- the outage: SIGTERM the redis-server by PID
        await asyncio.to_thread(redis.stop)
        await eventually(lambda: not ad_a.up and not ad_b.up, TIMEOUT, message="both adapters notice")
        failed = ad_a.statistics()["publish_failed"]
        local = len(alice.notices)
        # publishes keep failing fast and are counted; nothing queues up
        await eventually(lambda: ad_a.statistics()["publish_failed"] >= failed + 20, TIMEOUT, message="counted")
        assert ad_a.statistics()["queue"] == 0 and ad_a.statistics()["queue_bytes"] == 0
        # local connections keep working: the room's local member still hears, requests are answered
        await eventually(lambda: len(alice.notices) >= local + 20, TIMEOUT, message="local delivery goes on")
        me: Me = await alice.client.call("whoami", timeout=TIMEOUT)
        assert me.node == srv_a.node_id
        # to_conn towards the other node fails at once (no hang); the server counts the drop
        await admin_a.call("emit_to", {"id": f"{srv_b.node_id}.1", "text": "lost"}, timeout=TIMEOUT)

        # --- Redis comes back on the same port, empty
        await asyncio.to_thread(redis.start, redis.port)
        await eventually(lambda: ad_a.up and ad_b.up, TIMEOUT, message="both adapters reconnect")
        assert ad_a.statistics()["reconnects"] >= 1 and ad_b.statistics()["reconnects"] >= 1
        assert ad_b.statistics()["resubscribed"] >= 2  # lobby and bob's user channel
        # re-subscribed channels deliver again
        seen = len(bob.notices)
        await eventually(lambda: len(bob.notices) >= seen + 5, TIMEOUT, message="cross-node delivery recovers")
        # each node rewrote its presence into the empty Redis
        await eventually(lambda: _count(srv_a, 3), TIMEOUT, message="node a reads the presence back")
        await eventually(lambda: _count(srv_b, 3), TIMEOUT, message="node b reads the presence back")
        assert {d.user_id for d in await srv_b.cluster.room("lobby")} == {"alice", "bob"}
        # the view of live nodes follows within liveness_poll (both nodes re-announced themselves)
        await eventually(lambda: ad_a.is_alive(srv_b.node_id) and ad_b.is_alive(srv_a.node_id), 2.0)
    finally:
        await pub.stop()
    # a blocked publish would take command_timeout (2 s); this only allows for the scheduler
    assert pub.slowest < 0.25, f"a broadcast call took {pub.slowest * 1000:.1f} ms (publish must never block)"
    assert bob.notices == sorted(set(bob.notices), key=bob.notices.index)  # no duplicates


async def _count(srv: SocketServer, n: int) -> bool:
    try:
        return bool(await srv.cluster.count() == n)
    except ConnectionError:
        return False
