"""The Redis adapter's own behaviour beyond the conformance suite: options, isolation by prefix,
batching, bounded queues, malformed input, crashes, lost data, a hung Redis and lost connections."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from rd_helpers import eventually
from rd_server import RedisServer
from superline_zmq_redis import RedisAdapter, RedisPresenceError, redis_adapter

from superline_zmq.ids import NodeId, make_conn_id, new_node_id
from superline_zmq.presence import ConnDescriptor


class Node:
    def __init__(self, adapter: RedisAdapter) -> None:
        self.adapter = adapter
        self.id = new_node_id()
        self.channel: list[tuple[str, bytes]] = []
        self.direct: list[tuple[NodeId, bytes]] = []

    async def start(self) -> Node:
        await self.adapter.start(self.id, lambda c, d: self.channel.append((c, d)), self._on_direct)
        return self

    def _on_direct(self, sender: NodeId, data: bytes) -> None:
        self.direct.append((sender, data))

    @property
    def presence(self) -> Any:
        assert self.adapter.presence is not None
        return self.adapter.presence

    def got(self, channel: str) -> list[bytes]:
        return [d for c, d in self.channel if c == channel]

    def desc(self, seq: int, user: str | None = None, rooms: tuple[str, ...] = ()) -> ConnDescriptor:
        return ConnDescriptor(
            id=make_conn_id(self.id, seq), role="user", node_id=self.id, connected_at=float(seq), user_id=user,
            rooms=rooms,
        )  # fmt: skip


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[..., Any]]:
    made: list[Node] = []

    async def make(url: str, prefix: str, **options: Any) -> Node:
        node = Node(await redis_adapter(url, prefix=prefix, **options))
        made.append(node)
        return await node.start()

    yield make
    for node in made:
        await node.adapter.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


# ---------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"presence_ttl": 1.0, "heartbeat_interval": 1.0}, "must exceed the heartbeat"),
        ({"presence_ttl": 0}, "presence_ttl must be positive"),
        ({"presence_ttl": 10.0, "forget_after": 5.0}, "forget_after"),
        ({"prefix": ""}, "prefix"),
        ({"prefix": "a b"}, "prefix"),
        ({"max_queue": 0}, "max_queue"),
        ({"reconnect_backoff": (1.0, 0.5)}, "reconnect_backoff"),
        ({"command_timeout": 0}, "command_timeout"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RedisAdapter("redis://127.0.0.1:1/0", **options)


def test_defaults() -> None:
    adapter = RedisAdapter()
    assert adapter.name == "redis" and adapter.prefix == "superline"
    assert adapter.presence_ttl == 90.0 and adapter.heartbeat_interval == 30.0 and adapter.forget_after == 180.0
    assert adapter.presence is None  # until started


# ---------------------------------------------------------------------- isolation
async def test_prefixes_keep_clusters_apart(redis_server: RedisServer, nodes: Any, prefix: str) -> None:
    a1, b1 = await nodes(redis_server.url, prefix + "one"), await nodes(redis_server.url, prefix + "one")
    a2 = await nodes(redis_server.url, prefix + "two")
    for n in (b1, a2):
        await n.adapter.subscribe("r:x")
        await n.adapter.subscribe("t:shared:sync")
    a1.presence.put(a1.desc(1, "u1", ("x",)))
    a1.adapter.publish("r:x", b"for cluster one")
    a2.adapter.publish("t:shared:sync", b"sync")  # a sentinel inside cluster two
    await eventually(lambda: b1.got("r:x") == [b"for cluster one"])
    await eventually(lambda: _is(b1.presence.count(), 1))
    assert a2.got("r:x") == [] and b1.got("t:shared:sync") == []  # nothing crossed
    assert await a2.presence.count() == 0 and not await a2.presence.is_online("u1")
    await eventually(lambda: a1.adapter.is_alive(b1.id))
    assert not a1.adapter.is_alive(a2.id) and not a2.adapter.is_alive(a1.id)
    assert a2.id not in {t.node_id for t in await b1.presence.topology()}


# ---------------------------------------------------------------------- the writer
async def test_publishes_in_one_tick_go_out_as_one_pipeline(redis_server: RedisServer, nodes: Any, prefix: str) -> None:
    a, b = await nodes(redis_server.url, prefix), await nodes(redis_server.url, prefix)
    await b.adapter.subscribe("r:x")
    await eventually(lambda: a.adapter.is_alive(b.id))
    await eventually(lambda: a.adapter.statistics()["queue"] == 0)
    before = a.adapter.statistics()["pipelines"]
    for i in range(500):
        a.adapter.publish("r:x", b"%d" % i)
        if i % 100 == 0:
            assert a.adapter.send(b.id, b"d%d" % i)
    assert a.adapter.queued == 505  # nothing was sent inside the calls
    await eventually(lambda: len(b.got("r:x")) == 500 and len(b.direct) == 5)
    assert a.adapter.statistics()["pipelines"] - before == 1
    assert b.got("r:x") == [b"%d" % i for i in range(500)]
    stats = a.adapter.statistics()
    assert stats["published"] >= 500 and stats["queue"] == 0 and stats["queue_bytes"] == 0


async def test_a_full_queue_drops_and_counts(redis_server: RedisServer, nodes: Any, prefix: str) -> None:
    a = await nodes(redis_server.url, prefix, max_queue=10, max_queue_bytes=10_000)
    b = await nodes(redis_server.url, prefix)
    await b.adapter.subscribe("r:x")
    for _ in range(50):
        a.adapter.publish("r:x", b"m")
    a.adapter.publish("r:x", b"x" * 20_000)  # alone over the byte bound
    stats = a.adapter.statistics()
    assert stats["publish_dropped_queue_full"] == 41 and stats["queue"] == 10
    await eventually(lambda: len(b.got("r:x")) == 10)
    await eventually(lambda: a.adapter.is_alive(b.id))
    for _ in range(10):
        a.adapter.publish("r:x", b"m")
    assert a.adapter.send(b.id, b"over") is False
    assert a.adapter.statistics()["direct_dropped_queue_full"] == 1


# ---------------------------------------------------------------------- malformed input
async def test_malformed_messages_are_dropped_and_counted(
    redis_server: RedisServer, nodes: Any, raw: aioredis.Redis, prefix: str
) -> None:
    a = await nodes(redis_server.url, prefix)
    await a.adapter.subscribe("r:x")
    for channel, data in [
        (f"{prefix}:ch:r:x", b""),
        (f"{prefix}:ch:r:x", b"Z\x01ab"),
        (f"{prefix}:ch:r:x", b"P\x09short"),
        (f"{prefix}:n:{a.id}", b"D"),
        (f"{prefix}:n:{a.id}", b"D\x02\xff\xfepayload"),
        (f"{prefix}:cluster", b"J\x05abc"),
        (f"{prefix}:cluster", b"Q\x01a"),
    ]:
        await raw.publish(channel, data)
    await raw.publish(f"{prefix}:ch:r:x", b"P\x02zzok")  # a well-formed one from a node "zz"
    await eventually(lambda: a.got("r:x") == [b"ok"])
    assert a.adapter.statistics()["bad_messages"] == 7
    assert a.direct == []


# ---------------------------------------------------------------------- crashes
async def test_a_crashed_node_expires_then_is_forgotten(redis_server: RedisServer, nodes: Any, prefix: str) -> None:
    options = {"presence_ttl": 0.6, "heartbeat_interval": 0.15, "liveness_poll": 0.1, "forget_after": 1.2}
    a, b = await nodes(redis_server.url, prefix, **options), await nodes(redis_server.url, prefix, **options)
    a.presence.put(a.desc(1, "u1", ("lobby",)))
    await eventually(lambda: _is(b.presence.count(), 1))
    await eventually(lambda: b.adapter.is_alive(a.id))
    await a.adapter.simulate_crash()
    crashed = time.monotonic()
    await eventually(lambda: _is(b.presence.count(), 0), 3.0)
    assert time.monotonic() - crashed <= 0.6 + 0.5
    assert await b.presence.room("lobby") == [] and not await b.presence.is_online("u1")
    topo = {t.node_id: t for t in await b.presence.topology()}
    assert topo[a.id].alive is False and topo[a.id].connections == 1  # dead, not yet forgotten
    await eventually(lambda: not b.adapter.is_alive(a.id), 2.0)
    assert b.adapter.send(a.id, b"x") is False
    await eventually(lambda: b.adapter.statistics()["nodes_forgotten"] >= 1, 3.0)
    assert a.id not in {t.node_id for t in await b.presence.topology()}


async def test_presence_is_rewritten_when_redis_loses_it(
    redis_server: RedisServer, nodes: Any, raw: aioredis.Redis, prefix: str
) -> None:
    a = await nodes(redis_server.url, prefix, presence_ttl=1.5, heartbeat_interval=0.1)
    b = await nodes(redis_server.url, prefix, presence_ttl=1.5, heartbeat_interval=0.1)
    a.presence.put(a.desc(1, "u1", ("lobby",)))
    a.presence.put(a.desc(2, "u2"))
    a.presence.remove(make_conn_id(a.id, 2))
    await eventually(lambda: _is(b.presence.count(), 1))
    keys = [k async for k in raw.scan_iter(match=f"{prefix}:*")]
    await raw.delete(*keys)  # as a FLUSHALL would, for this cluster only
    await raw.script_flush()  # and the scripts are gone too
    assert await b.presence.count() == 0  # reads reload the scripts
    await eventually(lambda: _is(b.presence.count(), 1), message="a registers again at its next heartbeat")
    assert [d.user_id for d in await b.presence.room("lobby")] == ["u1"]
    # counted when a reads the transaction's reply, which may be just after b sees its effect
    await eventually(lambda: a.adapter.statistics()["presence_resyncs"] >= 1)


# ---------------------------------------------------------------------- faults
async def test_lost_subscriber_connection_is_reopened(
    redis_server: RedisServer, nodes: Any, raw: aioredis.Redis, prefix: str
) -> None:
    a = await nodes(redis_server.url, prefix, reconnect_backoff=(0.01, 0.1))
    b = await nodes(redis_server.url, prefix, reconnect_backoff=(0.01, 0.1))
    await b.adapter.subscribe("r:x")
    await b.adapter.subscribe("u:bob")
    await raw.client_kill_filter(_type="pubsub")  # every subscriber connection, both nodes
    await eventually(lambda: b.adapter.statistics()["reconnects"] >= 1 and b.adapter.up)
    await eventually(lambda: a.adapter.up)
    assert b.adapter.statistics()["resubscribed"] >= 2
    a.adapter.publish("r:x", b"after")
    await eventually(lambda: b.got("r:x") == [b"after"])
    await raw.client_kill_filter(_type="normal")  # the pools' connections: redis-py reconnects them
    a.adapter.publish("u:bob", b"again")
    await eventually(lambda: b.got("u:bob") == [b"again"])


async def test_down_while_subscribing_and_a_hung_redis(make_redis: Callable[..., RedisServer], prefix: str) -> None:
    redis = make_redis()
    options: dict[str, Any] = {"heartbeat_interval": 0.1, "command_timeout": 0.5, "reconnect_backoff": (0.02, 0.1)}
    a = Node(await redis_adapter(redis.url, prefix=prefix, **options))
    b = Node(await redis_adapter(redis.url, prefix=prefix, **options))
    try:
        await a.start()
        await b.start()
        await eventually(lambda: a.adapter.is_alive(b.id))
        # Redis hangs (SIGSTOP): the heartbeat's deadline notices, publishes fail fast meanwhile
        redis.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            await eventually(lambda: not b.adapter.up and not a.adapter.up, 3.0)
            t0 = time.perf_counter()
            for _ in range(100):
                a.adapter.publish("r:late", b"lost")
            assert a.adapter.send(b.id, b"lost") is False
            assert time.perf_counter() - t0 < 0.25  # not blocked by the hung Redis (command_timeout 0.5)
            assert a.adapter.statistics()["publish_failed"] >= 100 and a.adapter.queued == 0
            t0 = time.perf_counter()
            await b.adapter.subscribe("r:late")  # held; subscribed once Redis is back
            assert time.perf_counter() - t0 < 0.25 and "r:late" in b.adapter.channels
            assert b.adapter.statistics()["subscribe_deferred"] >= 1
            with pytest.raises(RedisPresenceError):
                await b.presence.count()
        finally:
            redis.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        await eventually(lambda: a.adapter.up and b.adapter.up, 5.0)
        a.adapter.publish("r:late", b"delivered")
        await eventually(lambda: b.got("r:late") == [b"delivered"])
    finally:
        await a.adapter.close()
        await b.adapter.close()


async def test_close_is_bounded_when_redis_is_gone(make_redis: Callable[..., RedisServer], prefix: str) -> None:
    redis = make_redis()
    a = Node(await redis_adapter(redis.url, prefix=prefix, command_timeout=0.5, reconnect_backoff=(0.02, 0.1)))
    await a.start()
    a.presence.put(a.desc(1, "u1"))
    await asyncio.to_thread(redis.stop)
    await eventually(lambda: not a.adapter.up)
    t0 = time.perf_counter()
    await a.adapter.close()
    assert time.perf_counter() - t0 < 2.0
    a.adapter.publish("r:x", b"after close")  # a no-op, never raises
    assert not a.adapter.is_alive(a.id)


async def _is(awaitable: Any, value: Any) -> bool:
    return bool(await awaitable == value)
