"""The adapter conformance suite (superline_zmq.testing.conformance) against the in-process adapter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import eventually

from superline_zmq.adapter import Adapter
from superline_zmq.adapters.memory import MemoryAdapter, MemoryBus
from superline_zmq.ids import new_node_id
from superline_zmq.testing.conformance import AdapterConformance


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
