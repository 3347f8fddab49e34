"""The in-process adapter: one node alone, or several servers in one process.

A lone server gets a private :class:`MemoryBus` by default. Give several servers one
shared ``MemoryBus()`` and they form a cluster (each keeps its own node id) — the
cheapest way to test cluster behaviour in your own suite. Deliveries are scheduled on
the event loop, never run inside the sender's call, so re-entrancy behaves as it would
over a real network.

Presence runs the same gossip state machine as the ZeroMQ cluster (beats, numbered
deltas, pulls on a gap, leave on close), with the bus as its transport, so a crashed
node (:meth:`MemoryAdapter.simulate_crash`) drops out after the bus's ``ttl`` exactly
as a dead process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from superline_zmq import gossip as g
from superline_zmq.adapter import ChannelHandler, DirectHandler
from superline_zmq.ids import NodeId
from superline_zmq.logs import RateLimitedLog

log = logging.getLogger("superline_zmq.memory")


class MemoryBus:
    """The shared medium of in-process nodes: channel subscriptions and node addresses."""

    def __init__(self, *, heartbeat_interval: float = 1.0, ttl: float = 5.0) -> None:
        if not 0 < heartbeat_interval < ttl:
            raise ValueError(f"need 0 < heartbeat_interval < ttl, got {heartbeat_interval} and {ttl}")
        #: Every node beats this often (seconds) ...
        self.heartbeat_interval = heartbeat_interval
        #: ... and one silent for this long is dead (its connections leave every query).
        self.ttl = ttl
        self.nodes: dict[NodeId, MemoryAdapter] = {}
        self._subs: dict[str, set[NodeId]] = {}

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
            "bad_gossip": 0,
        }
        self._rlog = RateLimitedLog(log)
        self._gossip: g.Gossip | None = None
        self._beat: asyncio.Task[None] | None = None
        #: Presence over the bus (available once started).
        self.presence: g.GossipPresence | None = None

    async def start(self, node: NodeId, on_channel: ChannelHandler, on_direct: DirectHandler) -> None:
        if self.node is not None:
            raise RuntimeError("this adapter is already started; make one adapter per server")
        if node in self.bus.nodes:
            raise RuntimeError(f"node id {node} is already on this bus")
        self.node = node
        self._on_channel = on_channel
        self._on_direct = on_direct
        bus = self.bus
        self._gossip = g.Gossip(node, interval=bus.heartbeat_interval, ttl=bus.ttl, clock=time.monotonic)
        self.presence = g.GossipPresence(self._gossip, self._execute)
        bus.nodes[node] = self
        hello = self._gossip.hello()
        loop = asyncio.get_running_loop()
        for peer in list(bus.nodes.values()):
            if peer is not self:
                loop.call_soon(peer._gossip_in, hello)
        self._beat = loop.create_task(self._beat_loop(bus.heartbeat_interval))

    async def _beat_loop(self, interval: float) -> None:
        while self._gossip is not None:
            self._execute(self._gossip.tick())
            await asyncio.sleep(interval)

    def _gossip_in(self, data: bytes) -> None:
        if self._gossip is None:
            return
        try:
            actions = self._gossip.receive(data)
        except g.GossipError as exc:
            self._stats["bad_gossip"] += 1
            self._rlog.log(logging.WARNING, "gossip", "dropped a gossip message: %s", exc)
            return
        self._execute(actions)

    def _execute(self, actions: list[g.Action]) -> None:
        if self.node is None or self.bus.nodes.get(self.node) is not self:
            return  # closed or crashed: a dead node says nothing
        loop = asyncio.get_running_loop()
        for action in actions:
            if isinstance(action, g.Broadcast):
                for peer in list(self.bus.nodes.values()):
                    if peer is not self:
                        loop.call_soon(peer._gossip_in, action.data)
            elif isinstance(action, g.Send):
                target = self.bus.nodes.get(action.node)
                if target is not None:
                    loop.call_soon(target._gossip_in, action.data)
            # Connect / Disconnect: the bus reaches every node already

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
        if peer is None or peer._on_direct is None or self.node is None or self.bus.nodes.get(self.node) is not self:
            self._stats["dropped_unknown_node"] += 1
            self._rlog.log(logging.WARNING, "unknown", "dropped a direct message to unknown node %s", node)
            return False
        self._stats["direct_sent"] += 1
        asyncio.get_running_loop().call_soon(peer._on_direct, self.node, data)
        return True

    def is_alive(self, node: NodeId) -> bool:
        return node in self.bus.nodes

    async def close(self) -> None:
        if self._gossip is not None and self.bus.nodes.get(self.node) is self:  # type: ignore[arg-type]
            self._execute(self._gossip.leave())
        await self._detach()

    async def simulate_crash(self) -> None:
        """For tests: vanish from the bus without telling anyone, as a killed process would.

        Peers keep this node's connections in their presence view until the bus's
        ``ttl`` passes without a beat.
        """
        await self._detach()

    async def _detach(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
        for channel in list(self._channels):
            await self.unsubscribe(channel)
        if self.node is not None and self.bus.nodes.get(self.node) is self:
            del self.bus.nodes[self.node]
        self._on_channel = self._on_direct = None
        self._gossip = None

    def statistics(self) -> Mapping[str, int]:
        stats = dict(self._stats, channels=len(self._channels))
        if self._gossip is not None:
            stats.update({f"gossip_{k}": v for k, v in self._gossip.stats.items()})
            stats["members"] = len(self._gossip.peers)
        return stats

    @property
    def channels(self) -> frozenset[str]:
        """Channels this node holds right now."""
        return frozenset(self._channels)
