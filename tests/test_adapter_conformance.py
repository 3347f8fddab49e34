"""The Adapter Protocol's semantics, checked against any adapter (no server involved).

:class:`AdapterConformance` is a reusable suite: subclass it as ``Test<Something>`` and
implement :meth:`AdapterConformance.cluster_factory`, which returns a function making
adapters that all join one cluster. Every ``test_*`` method then runs against that
adapter. Here it runs against :class:`~superline_zmq.adapters.memory.MemoryAdapter`; the
ZeroMQ adapter subclasses it too. (This suite will move to ``superline_zmq.testing`` so
third-party adapters can run it; keep it free of anything but the Protocol and pytest.)

"Nothing arrived" is asserted after a sentinel from the same publisher has arrived at
every other subscriber, never after a sleep: the adapter delivers one publisher's
messages in order (checked by :meth:`AdapterConformance.test_one_publishers_messages_arrive_in_order`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from helpers import eventually

from superline_zmq.adapter import Adapter
from superline_zmq.adapters.memory import MemoryAdapter, MemoryBus
from superline_zmq.ids import NodeId, new_node_id

SYNC = "t:shared:__sync__"


class Node:
    """One started adapter and what its two callbacks received."""

    def __init__(self, adapter: Adapter, node: NodeId) -> None:
        self.adapter = adapter
        self.id = node
        self.channel: list[tuple[str, bytes]] = []
        self.direct: list[tuple[NodeId, bytes]] = []
        self.closed = False

    def on_channel(self, channel: str, data: bytes) -> None:
        self.channel.append((channel, data))

    def on_direct(self, sender: NodeId, data: bytes) -> None:
        self.direct.append((sender, data))

    def got(self, channel: str) -> list[bytes]:
        return [d for c, d in self.channel if c == channel]

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.adapter.close()


StartNodes = Callable[[int], Awaitable[list[Node]]]


class AdapterConformance:
    """Adapter Protocol conformance; subclass with ``cluster_factory`` implemented."""

    #: How long a conforming adapter may take to deliver on loopback.
    timeout = 5.0

    def cluster_factory(self) -> Callable[[], Adapter]:
        """A function returning a new, un-started adapter of one shared cluster per call."""
        raise NotImplementedError

    @pytest.fixture
    async def start(self) -> AsyncIterator[StartNodes]:
        """``await start(n)``: n started nodes of one cluster, closed after the test."""
        make = self.cluster_factory()
        nodes: list[Node] = []

        async def start(n: int) -> list[Node]:
            batch = []
            for _ in range(n):
                node = Node(make(), new_node_id())
                await node.adapter.start(node.id, node.on_channel, node.on_direct)
                nodes.append(node)
                batch.append(node)
            return batch

        yield start
        for node in nodes:
            await node.close()

    async def sync(self, publisher: Node, others: list[Node], tag: bytes) -> None:
        """Publish a sentinel on :data:`SYNC` and wait until ``others`` (subscribed) have it."""
        publisher.adapter.publish(SYNC, tag)
        await eventually(lambda: all(tag in n.got(SYNC) for n in others), self.timeout)

    # ------------------------------------------------------------------ identity
    async def test_is_an_adapter(self, start: StartNodes) -> None:
        [a] = await start(1)
        assert isinstance(a.adapter, Adapter)
        assert isinstance(a.adapter.name, str) and a.adapter.name
        stats = a.adapter.statistics()
        assert all(isinstance(k, str) and isinstance(v, int) for k, v in stats.items())
        assert "dropped_unknown_node" in stats

    async def test_is_alive_knows_itself_and_its_peers(self, start: StartNodes) -> None:
        a, b = await start(2)
        assert a.adapter.is_alive(a.id)
        await eventually(lambda: a.adapter.is_alive(b.id) and b.adapter.is_alive(a.id), self.timeout)
        assert not a.adapter.is_alive(new_node_id())

    # ------------------------------------------------------------------ channels
    async def test_publish_reaches_other_subscribed_nodes_only(self, start: StartNodes) -> None:
        pub, sub1, sub2, bystander = await start(4)
        for node in (pub, sub1, sub2):
            await node.adapter.subscribe("r:lobby")
        for node in (pub, sub1, sub2, bystander):
            await node.adapter.subscribe(SYNC)
        pub.adapter.publish("r:lobby", b"hello")
        await eventually(lambda: sub1.got("r:lobby") == [b"hello"] == sub2.got("r:lobby"), self.timeout)
        await self.sync(pub, [sub1, sub2, bystander], b"s1")
        # not the publisher (it delivers to its own members itself), not the unsubscribed node
        assert pub.got("r:lobby") == [] and pub.got(SYNC) == []
        assert bystander.got("r:lobby") == []
        assert sub1.got("r:lobby") == [b"hello"]  # exactly once

    async def test_subscribe_returns_once_every_node_reaches_it(self, start: StartNodes) -> None:
        a, b, c = await start(3)
        await c.adapter.subscribe("t:shared:ticks")
        # no wait between subscribe() returning and the publishes
        a.adapter.publish("t:shared:ticks", b"from a")
        b.adapter.publish("t:shared:ticks", b"from b")
        await eventually(lambda: sorted(c.got("t:shared:ticks")) == [b"from a", b"from b"], self.timeout)

    async def test_publish_is_never_delivered_inside_the_call(self, start: StartNodes) -> None:
        a, b = await start(2)
        await b.adapter.subscribe("r:x")
        a.adapter.publish("r:x", b"later")
        assert b.channel == []  # delivered from the event loop, not re-entrantly
        await eventually(lambda: b.got("r:x") == [b"later"], self.timeout)

    async def test_publish_with_no_subscriber_is_a_silent_no_op(self, start: StartNodes) -> None:
        a, b = await start(2)
        await b.adapter.subscribe(SYNC)
        a.adapter.publish("r:nobody", b"x")  # never raises
        await self.sync(a, [b], b"s")
        assert b.got("r:nobody") == []

    async def test_bytes_arrive_unchanged(self, start: StartNodes) -> None:
        a, b = await start(2)
        await b.adapter.subscribe("u:bin")
        payloads = [b"\x00\xff\x00", bytes(range(256)), b"x" * 100_000, '{"t":"pub","c":"é"}'.encode()]
        for p in payloads:
            a.adapter.publish("u:bin", p)
        await eventually(lambda: b.got("u:bin") == payloads, self.timeout)
        assert all(type(d) is bytes for d in b.got("u:bin"))

    async def test_one_publishers_messages_arrive_in_order(self, start: StartNodes) -> None:
        a, b = await start(2)
        await b.adapter.subscribe("r:one")
        await b.adapter.subscribe("r:two")
        sent = []
        for i in range(200):
            channel = "r:one" if i % 3 else "r:two"
            a.adapter.publish(channel, str(i).encode())
            sent.append((channel, str(i).encode()))
        await eventually(lambda: len(b.channel) == len(sent), self.timeout)
        assert b.channel == sent  # in order across channels too

    async def test_unsubscribe_stops_delivery(self, start: StartNodes) -> None:
        a, b, c = await start(3)
        for node in (b, c):
            await node.adapter.subscribe("r:lobby")
            await node.adapter.subscribe(SYNC)
        await b.adapter.unsubscribe("r:lobby")
        await b.adapter.unsubscribe("r:never-subscribed")  # a no-op
        a.adapter.publish("r:lobby", b"after")
        await self.sync(a, [b, c], b"s")
        assert b.got("r:lobby") == []
        assert c.got("r:lobby") == [b"after"]
        # and subscribing again works
        await b.adapter.subscribe("r:lobby")
        a.adapter.publish("r:lobby", b"again")
        await eventually(lambda: b.got("r:lobby") == [b"again"], self.timeout)

    async def test_nodes_keep_separate_channel_sets(self, start: StartNodes) -> None:
        a, b, c = await start(3)
        await b.adapter.subscribe("r:x")
        await c.adapter.subscribe("r:x")
        await c.adapter.unsubscribe("r:x")  # c leaving must not unsubscribe b
        a.adapter.publish("r:x", b"1")
        await eventually(lambda: b.got("r:x") == [b"1"], self.timeout)

    # ------------------------------------------------------------------ direct messages
    async def test_send_to_a_known_node_delivers_with_the_senders_id(self, start: StartNodes) -> None:
        a, b, c = await start(3)
        await eventually(lambda: a.adapter.is_alive(b.id), self.timeout)
        assert a.adapter.send(b.id, b"just for b") is True
        await eventually(lambda: b.direct == [(a.id, b"just for b")], self.timeout)
        assert a.direct == [] and c.direct == []
        assert b.channel == []  # direct messages do not go through channels

    async def test_send_to_an_unknown_node_returns_false_and_counts(self, start: StartNodes) -> None:
        [a] = await start(1)
        before = a.adapter.statistics()["dropped_unknown_node"]
        assert a.adapter.send(new_node_id(), b"x") is False
        assert a.adapter.send(NodeId("not-a-node"), b"x") is False
        assert a.adapter.statistics()["dropped_unknown_node"] == before + 2

    # ------------------------------------------------------------------ leaving
    async def test_close_removes_the_node(self, start: StartNodes) -> None:
        a, b = await start(2)
        await a.adapter.subscribe("r:lobby")
        await eventually(lambda: b.adapter.is_alive(a.id), self.timeout)
        await a.close()
        # peers learn at once, not after a timeout
        await eventually(lambda: not b.adapter.is_alive(a.id), self.timeout)
        before = b.adapter.statistics()["dropped_unknown_node"]
        assert b.adapter.send(a.id, b"gone") is False
        assert b.adapter.statistics()["dropped_unknown_node"] == before + 1
        b.adapter.publish("r:lobby", b"nobody home")  # never raises
        assert a.channel == [] and a.direct == []


class TestMemoryAdapter(AdapterConformance):
    def cluster_factory(self) -> Callable[[], Adapter]:
        return MemoryBus().adapter


class TestMemoryAdapterSpecifics:
    """What the in-process adapter adds on top of the Protocol."""

    async def test_a_lone_adapter_gets_a_private_bus(self) -> None:
        a, b = MemoryAdapter(), MemoryAdapter()
        assert a.bus is not b.bus

    async def test_start_twice_or_a_duplicate_node_id_is_refused(self) -> None:
        bus = MemoryBus()
        a = bus.adapter()
        node = new_node_id()
        await a.start(node, lambda c, d: None, lambda s, d: None)
        with pytest.raises(RuntimeError, match="already started"):
            await a.start(new_node_id(), lambda c, d: None, lambda s, d: None)
        with pytest.raises(RuntimeError, match="already on this bus"):
            await bus.adapter().start(node, lambda c, d: None, lambda s, d: None)
        await a.close()

    async def test_channels_and_counters(self) -> None:
        bus = MemoryBus()
        a, b = bus.adapter(), bus.adapter()
        got: list[Any] = []
        await a.start(new_node_id(), lambda c, d: None, lambda s, d: None)
        await b.start(new_node_id(), lambda c, d: got.append(d), lambda s, d: None)
        await b.subscribe("r:x")
        await b.subscribe("t:shared:y")
        assert b.channels == {"r:x", "t:shared:y"}
        a.publish("r:x", b"1")
        a.publish("r:z", b"2")  # nobody holds it
        assert a.send(b.node, b"d") is True  # type: ignore[arg-type]
        stats = a.statistics()
        assert (stats["published"], stats["delivered"], stats["direct_sent"]) == (2, 1, 1)
        assert b.statistics()["channels"] == 2
        await eventually(lambda: got == [b"1"])
        await b.close()
        assert b.channels == frozenset() and bus._subs == {}
        assert b.node not in bus.nodes
        await a.close()
