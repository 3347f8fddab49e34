"""The in-process adapter: one node alone, or several servers in one process.

A lone server gets a private :class:`MemoryBus` by default. Give several servers one
shared ``MemoryBus()`` and they form a cluster (each keeps its own node id) — the
cheapest way to test cluster behaviour in your own suite. Deliveries are scheduled on
the event loop, never run inside the sender's call, so re-entrancy behaves as it would
over a real network.

Membership and presence run the same gossip machine and the same driver as the ZeroMQ
cluster (:class:`~superline_zmq.gossip_driver.GossipDriver`: beats, numbered deltas,
pulls on a gap, leave on close), with the bus as its link; this module keeps only the
bus's I/O. Liveness is read through the driver, as on ZeroMQ, so a crashed node
(:meth:`MemoryAdapter.simulate_crash`) is dead for routing (``is_alive``) and for
presence at the same moment, ``ttl`` after its last beat, exactly as a killed process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from superline_zmq.adapter import ChannelHandler, DirectHandler
from superline_zmq.gossip import Addr, GossipPresence
from superline_zmq.gossip_driver import GossipDriver
from superline_zmq.ids import NodeId
from superline_zmq.logs import RateLimitedLog
from superline_zmq.membership import ALIVE
from superline_zmq.timing import ClusterTiming

log = logging.getLogger("superline_zmq.memory")


class MemoryBus:
    """The shared medium of in-process nodes: channel subscriptions and node addresses.

    ``timing`` (default :meth:`ClusterTiming.lan`) sets how often nodes beat and when a
    silent one is dead; ``heartbeat_interval=`` / ``ttl=`` override the preset.
    """

    def __init__(
        self,
        *,
        timing: ClusterTiming | None = None,
        heartbeat_interval: float | None = None,
        ttl: float | None = None,
    ) -> None:
        base = timing if timing is not None else ClusterTiming.lan()
        #: The cluster timings every node on this bus uses.
        self.timing = base.override(heartbeat_interval=heartbeat_interval, ttl=ttl)
        self.nodes: dict[NodeId, MemoryAdapter] = {}
        self._subs: dict[str, set[NodeId]] = {}

    @property
    def heartbeat_interval(self) -> float:
        """Every node beats this often (seconds) ..."""
        return self.timing.heartbeat_interval

    @property
    def ttl(self) -> float:
        """... and one silent for this long is dead (out of routing and every query)."""
        return self.timing.ttl

    def adapter(self) -> MemoryAdapter:
        """A new adapter on this bus (one per server)."""
        return MemoryAdapter(self)

    def _publish(self, sender: NodeId, channel: str, data: bytes) -> int:
        nodes = self._subs.get(channel)
        if not nodes:
            return 0
        loop = asyncio.get_running_loop()
        n = 0
        for node in nodes:
            if node != sender:
                peer = self.nodes.get(node)
                if peer is not None and peer._on_channel is not None:
                    loop.call_soon(peer._on_channel, channel, data)
                    n += 1
        return n


class _BusLink:
    """The gossip driver's link over the bus: every node on the bus is reachable, no connecting."""

    def __init__(self, adapter: MemoryAdapter) -> None:
        self._adapter = adapter

    def broadcast(self, data: bytes) -> None:
        me = self._adapter
        if not me._on_bus():
            return  # closed or crashed: a dead node says nothing
        loop = asyncio.get_running_loop()
        for peer in list(me.bus.nodes.values()):
            if peer is not me:
                loop.call_soon(peer._gossip_in, data)

    def send(self, node: NodeId, data: bytes) -> bool:
        me = self._adapter
        target = me.bus.nodes.get(node)
        if target is None or not me._on_bus():
            return False
        asyncio.get_running_loop().call_soon(target._gossip_in, data)
        return True

    def connect(self, node: NodeId, addr: Addr) -> None:
        pass  # the bus reaches every node already

    def disconnect(self, node: NodeId) -> None:
        pass

    def probe(self, node: NodeId | None, addr: Addr, data: bytes) -> None:
        # every node on the bus is reachable by id; one no longer on it (crashed) hears nothing
        if node is not None:
            self.send(node, data)


class MemoryAdapter:
    """An :class:`~superline_zmq.adapter.Adapter` over a :class:`MemoryBus`."""

    name = "memory"

    def __init__(self, bus: MemoryBus | None = None) -> None:
        self.bus = bus if bus is not None else MemoryBus()
        self.node: NodeId | None = None
        self._on_channel: ChannelHandler | None = None
        self._on_direct: DirectHandler | None = None
        self._channels: set[str] = set()
        self._stats = {
            "published": 0,
            "delivered": 0,
            "direct_sent": 0,
            "dropped_unknown_node": 0,
        }
        self._rlog = RateLimitedLog(log)
        self._driver: GossipDriver | None = None
        #: Presence over the bus (available once started).
        self.presence: GossipPresence | None = None

    async def start(self, node: NodeId, on_channel: ChannelHandler, on_direct: DirectHandler) -> None:
        if self.node is not None:
            raise RuntimeError("this adapter is already started; make one adapter per server")
        if node in self.bus.nodes:
            raise RuntimeError(f"node id {node} is already on this bus")
        self.node = node
        self._on_channel = on_channel
        self._on_direct = on_direct
        bus = self.bus
        driver = self._driver = GossipDriver(node, _BusLink(self), timing=bus.timing, logger=log)
        self.presence = driver.presence
        others = [peer for peer in bus.nodes.values() if peer is not self]
        bus.nodes[node] = self
        hello = driver.hello()
        loop = asyncio.get_running_loop()
        for peer in others:
            loop.call_soon(peer._gossip_in, hello)
        driver.start()
        if others:
            # every node on the bus answers the hello on the next turns of the loop: return
            # once one did, so the first sends and queries already see the cluster
            try:
                await asyncio.wait_for(driver.wait_joined(), bus.ttl)
            except TimeoutError:
                self._rlog.log(logging.WARNING, "join", "node %s: no node on the bus answered within ttl", node)
        driver.end_join()  # what this node learns from now on is news, not the state it joined

    def _gossip_in(self, data: bytes) -> None:
        driver = self._driver
        if driver is not None and self._on_bus():
            driver.receive(data)

    def _on_bus(self) -> bool:
        return self.node is not None and self.bus.nodes.get(self.node) is self

    async def subscribe(self, channel: str) -> None:
        if self.node is None:
            raise RuntimeError("the adapter is not started: call srv.listen() or await srv.start() first")
        self._channels.add(channel)
        self.bus._subs.setdefault(channel, set()).add(self.node)

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels or self.node is None:
            return
        self._channels.discard(channel)
        nodes = self.bus._subs.get(channel)
        if nodes is not None:
            nodes.discard(self.node)
            if not nodes:
                del self.bus._subs[channel]

    def publish(self, channel: str, data: bytes) -> None:
        if self.node is None:
            raise RuntimeError("the adapter is not started: call srv.listen() or await srv.start() first")
        if self.bus.nodes.get(self.node) is not self:
            return  # closed or crashed
        self._stats["published"] += 1
        self._stats["delivered"] += self.bus._publish(self.node, channel, data)

    def send(self, node: NodeId, data: bytes) -> bool:
        peer = self.bus.nodes.get(node)
        if (
            not self.is_alive(node)  # unknown, left, or silent past ttl: routing says no
            or peer is None  # crashed and not noticed yet: the bus knows it cannot deliver
            or peer._on_direct is None
            or self.node is None
        ):
            self._stats["dropped_unknown_node"] += 1
            self._rlog.log(logging.WARNING, "unknown", "dropped a direct message to unknown node %s", node)
            return False
        self._stats["direct_sent"] += 1
        asyncio.get_running_loop().call_soon(peer._on_direct, self.node, data)
        return True

    def is_alive(self, node: NodeId) -> bool:
        """Whether ``node`` is a live member, as the gossip sees it (a crash shows after ``ttl``)."""
        driver = self._driver
        return driver is not None and self._on_bus() and driver.alive(node)

    def members(self) -> dict[NodeId, bool]:
        """Members this node knows (itself excluded), each with whether it is alive."""
        driver = self._driver
        if driver is None or not self._on_bus():
            return {}
        return {n: state is ALIVE for n, state in driver.members().items()}

    async def close(self) -> None:
        """Leave the bus: peers drop this node at once. Idempotent."""
        driver = self._driver
        if driver is not None and self._on_bus():
            await driver.close(leave=True)
        await self._detach()

    async def simulate_crash(self) -> None:
        """For tests: vanish from the bus without telling anyone, as a killed process would.

        Peers keep this node alive — for routing and in their presence view — until the
        bus's ``ttl`` passes without a beat, then drop it.
        """
        await self._detach()

    async def _detach(self) -> None:
        if self.node is not None and self.bus.nodes.get(self.node) is self:
            del self.bus.nodes[self.node]  # first: nothing reaches us, nothing leaves us
        if self._driver is not None:
            await self._driver.close(leave=False)
        for channel in list(self._channels):
            await self.unsubscribe(channel)
        self._on_channel = self._on_direct = None

    def readiness(self) -> str | None:
        """None while started and on its bus, else why not (``/readyz`` answers 503 with it)."""
        if self.node is None:
            return "the memory adapter is not started"
        if not self._on_bus():
            return "the memory adapter is closed"
        return None

    def statistics(self) -> Mapping[str, int]:
        stats = dict(self._stats, channels=len(self._channels))
        stats["bad_gossip"] = 0
        if self._driver is not None:
            stats.update(self._driver.statistics())
        return stats

    @property
    def channels(self) -> frozenset[str]:
        """Channels this node holds right now."""
        return frozenset(self._channels)
