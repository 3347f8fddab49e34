"""The adapter conformance suite (superline_zmq.testing.conformance) against the in-process adapter."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import eventually

from superline_zmq.adapter import Adapter
from superline_zmq.adapters.memory import MemoryAdapter, MemoryBus
from superline_zmq.ids import make_conn_id, new_node_id
from superline_zmq.presence import ConnDescriptor
from superline_zmq.testing.conformance import AdapterConformance
from superline_zmq.timing import ClusterTiming


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

    async def test_a_crashed_node_is_dead_for_routing_and_presence_at_the_same_moment(self) -> None:
        # the bus reads liveness through the gossip driver, as the ZeroMQ adapter does: a
        # crash is noticed by silence after ttl, never at once, and by both reads together
        ttl = 1.0
        bus = MemoryBus(timing=ClusterTiming.local(), heartbeat_interval=0.1, ttl=ttl)
        a, b = bus.adapter(), bus.adapter()
        await a.start(new_node_id(), lambda c, d: None, lambda s, d: None)
        b_id = new_node_id()
        await b.start(b_id, lambda c, d: None, lambda s, d: None)
        assert a.presence is not None and b.presence is not None
        pa = a.presence
        bob = ConnDescriptor(id=make_conn_id(b_id, 1), role="user", node_id=b_id, connected_at=0.0, user_id="bob")
        b.presence.put(bob)
        await eventually(lambda: pa.is_online("bob"))
        crashed = time.monotonic()
        await b.simulate_crash()
        assert a.is_alive(b_id) and await pa.is_online("bob")  # not announced
        assert a.members() == {b_id: True}

        async def dead_for_both() -> bool:
            alive, online = a.is_alive(b_id), await pa.is_online("bob")  # no await between the two reads
            assert alive == online, f"routing says alive={alive}, presence says online={online}"
            return not alive

        await eventually(dead_for_both, 5 * ttl)
        assert time.monotonic() - crashed >= ttl - 0.1 - 0.05  # last beat at most one interval before
        assert a.members() == {b_id: False}  # dead, not yet forgotten
        assert a.send(b_id, b"x") is False
        await eventually(lambda: a.members() == {}, 5 * ttl)  # then forgotten
        await a.close()
