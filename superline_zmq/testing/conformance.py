"""The Adapter Protocol's semantics as a reusable pytest suite (no server involved).

Subclass :class:`AdapterConformance` as ``Test<Something>`` in your test suite and
implement :meth:`AdapterConformance.cluster_factory`, which returns a function making
adapters (or awaitables of adapters) that all join one cluster. Every ``test_*`` method
then runs against your adapter::

    from superline_zmq.testing.conformance import AdapterConformance

    class TestMyAdapter(AdapterConformance):
        def cluster_factory(self):
            cluster = MyCluster()
            return cluster.adapter

The in-process, ZeroMQ and Redis adapters all pass it. Tests use pytest-asyncio (auto
mode or the ``asyncio`` marker); this module imports pytest, the rest of
:mod:`superline_zmq.testing` does not.

"Nothing arrived" is asserted after a sentinel from the same publisher has arrived at
every other subscriber, never after a sleep: the adapter delivers one publisher's
messages in order (checked by :meth:`AdapterConformance.test_one_publishers_messages_arrive_in_order`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import pytest

from superline_zmq.adapter import Adapter, PresenceEvents
from superline_zmq.ids import NodeId, make_conn_id, new_node_id
from superline_zmq.presence import ConnDescriptor, PresenceChange
from superline_zmq.testing.wait import eventually

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

    def cluster_factory(self) -> Callable[[], Adapter | Awaitable[Adapter]]:
        """A function returning a new, un-started adapter (or an awaitable of one) per call,
        every one joining the same cluster."""
        raise NotImplementedError

    @pytest.fixture
    async def start(self) -> AsyncIterator[StartNodes]:
        """``await start(n)``: n started nodes of one cluster, closed after the test."""
        make = self.cluster_factory()
        nodes: list[Node] = []

        async def start(n: int) -> list[Node]:
            batch = []
            for _ in range(n):
                made = make()
                adapter: Adapter = await made if inspect.isawaitable(made) else made
                node = Node(adapter, new_node_id())
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

    # ------------------------------------------------------------------ presence
    def _presence(self, node: Node) -> Any:
        presence = node.adapter.presence
        if presence is None:
            pytest.skip(f"the {node.adapter.name!r} adapter offers no presence (allowed by the Protocol)")
        return presence

    @staticmethod
    def _desc(node: Node, seq: int, user: str | None = None, rooms: tuple[str, ...] = ()) -> ConnDescriptor:
        return ConnDescriptor(
            id=make_conn_id(node.id, seq),
            role="user",
            node_id=node.id,
            connected_at=float(seq),
            user_id=user,
            rooms=rooms,
        )

    async def test_presence_writes_are_read_on_every_node(self, start: StartNodes) -> None:
        a, b, c = await start(3)
        pa, pb, pc = self._presence(a), self._presence(b), self._presence(c)
        pa.put(self._desc(a, 1, "u1", ("lobby",)))
        pb.put(self._desc(b, 1, "u1"))
        pb.put(self._desc(b, 2, "u2", ("lobby",)))
        for p in (pa, pb, pc):
            await eventually(partial(_count_is, p, 3), self.timeout, message="every node counts 3")
            assert {d.id for d in await p.by_user("u1")} == {make_conn_id(a.id, 1), make_conn_id(b.id, 1)}
            assert {d.id for d in await p.room("lobby")} == {make_conn_id(a.id, 1), make_conn_id(b.id, 2)}
            assert await p.is_online("u2") and not await p.is_online("nobody")
            topo = {t.node_id: (t.connections, t.alive) for t in await p.topology()}
            assert topo[a.id] == (1, True) and topo[b.id] == (2, True)

    async def test_presence_updates_and_removes_propagate(self, start: StartNodes) -> None:
        a, b = await start(2)
        pa, pb = self._presence(a), self._presence(b)
        pa.put(self._desc(a, 1, "u1"))
        await eventually(lambda: pb.is_online("u1"), self.timeout, message="b sees u1")
        pa.put(self._desc(a, 1, "u1", ("x",)))  # a room joined: the same id, replaced
        await eventually(lambda: _room_size(pb, "x", 1), self.timeout, message="b sees the room change")
        assert await pb.count() == 1
        pa.remove(make_conn_id(a.id, 1))
        await eventually(lambda: _count_is(pb, 0), self.timeout, message="b sees the removal")
        assert not await pb.is_online("u1") and await pb.room("x") == []

    async def test_a_closed_nodes_presence_is_gone_at_once(self, start: StartNodes) -> None:
        a, b = await start(2)
        pa, pb = self._presence(a), self._presence(b)
        pa.put(self._desc(a, 1, "u1"))
        await eventually(lambda: pb.is_online("u1"), self.timeout, message="b sees u1")
        await a.close()
        await eventually(lambda: _count_is(pb, 0), self.timeout, message="a's connections left b's view")
        assert a.id not in {t.node_id for t in await pb.topology()}


    # ------------------------------------------------------------------ presence events
    def _events(self, node: Node) -> PresenceEvents:
        presence = self._presence(node)
        if not isinstance(presence, PresenceEvents):
            pytest.skip(f"the {node.adapter.name!r} adapter's presence reports no changes (allowed by the Protocol)")
        return presence

    async def test_presence_events_report_every_change_once_in_order(self, start: StartNodes) -> None:
        a, b = await start(2)
        pa, pb = self._presence(a), self._events(b)
        changes: list[PresenceChange] = []
        off = pb.watch(changes.append)
        await pb.watching()

        def users() -> list[tuple[str, bool, int]]:
            return [(u.user_id, u.online, u.connections) for c in changes for u in c.diff.users]

        def lobby() -> list[tuple[list[str], list[str]]]:
            out = []
            for c in changes:
                for r in c.diff.rooms:
                    if r.room == "lobby":
                        out.append(([d.id for d in r.joins], [d.id for d in r.leaves]))
            return out

        pa.put(self._desc(a, 1, "u1", ("lobby",)))
        await eventually(lambda: users() == [("u1", True, 1)], self.timeout, message=lambda: f"{users()}")
        pa.put(self._desc(a, 2, "u1"))  # a second device: no user event
        pa.put(self._desc(a, 2, "u1", ("lobby",)))  # its room changes: a join
        pa.remove(make_conn_id(a.id, 1))
        await eventually(lambda: len(lobby()) == 3, self.timeout, message=lambda: f"{lobby()}")
        assert lobby() == [
            ([make_conn_id(a.id, 1)], []),
            ([make_conn_id(a.id, 2)], []),
            ([], [make_conn_id(a.id, 1)]),
        ]
        assert [u.user_id for u in pb.online()] == ["u1"]
        assert [d.id for d in pb.members("lobby")] == [make_conn_id(a.id, 2)]
        pa.remove(make_conn_id(a.id, 2))
        await eventually(lambda: users()[-1:] == [("u1", False, 0)], self.timeout, message=lambda: f"{users()}")
        assert users() == [("u1", True, 1), ("u1", False, 0)]
        assert not any(c.initial for c in changes)
        off()
        pa.put(self._desc(a, 3, "u3"))
        await eventually(lambda: _online(pb, "u3"), self.timeout, message="b sees u3")
        assert users() == [("u1", True, 1), ("u1", False, 0)]  # unsubscribed

    async def test_presence_events_start_from_the_state_found_and_a_close_takes_users_offline(
        self, start: StartNodes
    ) -> None:
        a, b = await start(2)
        pa, pb = self._presence(a), self._events(b)
        pa.put(self._desc(a, 1, "u1"))
        await eventually(lambda: _online(pb, "u1"), self.timeout, message="b sees u1")
        changes: list[PresenceChange] = []
        pb.watch(changes.append)
        await pb.watching()
        assert [u.user_id for u in pb.online()] == ["u1"]  # the state as it stands
        await a.close()
        await eventually(
            lambda: any(not u.online for c in changes for u in c.diff.users), self.timeout, message="u1 offline"
        )
        offline = [(u.user_id, u.node_id) for c in changes for u in c.diff.users if not u.online]
        assert offline == [("u1", a.id)]
        assert pb.online() == []


async def _online(presence: Any, user: str) -> bool:
    return bool(await presence.is_online(user))


async def _count_is(presence: Any, n: int) -> bool:
    return bool(await presence.count() == n)


async def _room_size(presence: Any, room: str, n: int) -> bool:
    return len(await presence.room(room)) == n
