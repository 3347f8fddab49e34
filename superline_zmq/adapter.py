"""The adapter seam: what a server needs from the thing that links it to other nodes.

A server talks to other nodes only through an :class:`Adapter`, so the in-process bus,
the ZeroMQ cluster and a Redis adapter plug in without touching the server core. An
adapter carries three things:

- **channels**: named byte pub/sub (rooms ``r:<room>``, topics ``t:<ns>:<topic>``, users
  ``u:<user>``). A node subscribes a channel only while it has a local member or
  listener; ``publish`` reaches every *other* node subscribed to it. The publishing
  node delivers to its own members itself, at source, with no round trip.
- **direct messages**: bytes to one named node (targeted sends, server → client
  requests and their replies). Connection ids name their node, so nothing is looked
  up on the way.
- **presence** (optional, ``adapter.presence``; None when the adapter has none): the
  cluster-wide directory of connections behind ``srv.cluster`` and ``srv.is_online``.
  The server writes this node's descriptors; reads answer for every live node. A
  presence that also reports what changes (optional again: :class:`PresenceEvents`,
  checked with ``isinstance``) powers ``srv.cluster.on_user`` and ``on_room``; an
  adapter written before it keeps working, without those two.

Delivery is at most once. An adapter never raises from ``publish``/``send`` because a
peer is slow or gone: it drops, counts the drop in :meth:`Adapter.statistics`, and logs
it (rate-limited).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from superline_zmq.ids import NodeId
from superline_zmq.presence import ConnDescriptor, NodeInfo, PresenceChange, UserPresence

#: ``(channel, data)``: a publication from another node on a channel this node holds.
ChannelHandler = Callable[[str, bytes], None]
#: ``(sender, data)``: a direct message from another node.
DirectHandler = Callable[[NodeId, bytes], None]
#: Gets every :class:`~superline_zmq.presence.PresenceChange` of a presence, in order.
ChangeHandler = Callable[[PresenceChange], None]


@runtime_checkable
class Presence(Protocol):
    """The cluster-wide directory of connections, as one node reads and writes it.

    Writes never block (an adapter queues or broadcasts them); this node writes only its
    own connections. Reads answer for live nodes only: a node whose liveness lapsed
    drops out of every answer, and one that closed gracefully is gone at once.
    """

    def put(self, desc: ConnDescriptor) -> None:
        """Add or replace one of this node's connections."""
        ...

    def remove(self, conn_id: str) -> None:
        """Remove one of this node's connections."""
        ...

    async def count(self) -> int:
        """Connections on live nodes."""
        ...

    async def connections(self) -> list[ConnDescriptor]:
        """Every connection on a live node."""
        ...

    async def by_user(self, user_id: str) -> list[ConnDescriptor]:
        """A user's connections on live nodes."""
        ...

    async def room(self, name: str) -> list[ConnDescriptor]:
        """A room's members on live nodes."""
        ...

    async def is_online(self, user_id: str) -> bool:
        """Whether the user has a connection on a live node."""
        ...

    async def topology(self) -> list[NodeInfo]:
        """Every known node with its connection count, rooms and liveness."""
        ...


@runtime_checkable
class Readiness(Protocol):
    """What an adapter may add to the :class:`Adapter` protocol to say whether it has joined.

    Optional: ``/readyz`` asks an adapter that has it; one without it is ready once started.
    """

    def readiness(self) -> str | None:
        """None once this node has joined its cluster, else a short reason why not."""
        ...


@runtime_checkable
class PresenceEvents(Protocol):
    """A presence that reports what changes in what its queries see (optional on a :class:`Presence`).

    Each change is one update's :class:`~superline_zmq.presence.PresenceDiff`: users that
    came online (their first connection on a live node) or went offline (their last one
    gone, or their node died or left), and per room the connections that joined and
    left. Every change is reported exactly once, in the order the presence applied it, so
    a watcher that adds them up holds what the queries answer. None of these block.
    """

    def watch(self, listener: ChangeHandler) -> Callable[[], None]:
        """Call ``listener(change)`` for every change from now on (it must not raise, nor
        block); returns a function that stops it. May start the machinery behind the events
        (await :meth:`watching`)."""
        ...

    async def watching(self) -> None:
        """Return once changes from every node reach the watchers (at once for a replica
        kept in memory; the Redis adapter first loads its mirror)."""
        ...

    def online(self) -> list[UserPresence]:
        """Every user online now, as :meth:`watch` s changes see it (synchronous)."""
        ...

    def members(self, room: str) -> list[ConnDescriptor]:
        """Room ``room``'s members now, as :meth:`watch` s changes see it (synchronous)."""
        ...


@runtime_checkable
class Adapter(Protocol):
    """Links one server to the other nodes of its cluster."""

    #: A short human name for errors and logs (``"memory"``, ``"zeromq"``, ``"redis"``).
    name: str

    @property
    def presence(self) -> Presence | None:
        """The presence directory, or None if this adapter offers none."""
        ...

    async def start(self, node: NodeId, on_channel: ChannelHandler, on_direct: DirectHandler) -> None:
        """Join the cluster as ``node``; inbound traffic goes to the two callbacks."""
        ...

    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``; returns once publications from any node will arrive."""
        ...

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``."""
        ...

    def publish(self, channel: str, data: bytes) -> None:
        """Send ``data`` to every other node subscribed to ``channel`` (never blocks)."""
        ...

    def send(self, node: NodeId, data: bytes) -> bool:
        """Send ``data`` to ``node`` directly; False (dropped and counted) if it is unknown or gone."""
        ...

    def is_alive(self, node: NodeId) -> bool:
        """Whether ``node`` is a live member as far as this node knows (itself included)."""
        ...

    async def close(self) -> None:
        """Leave the cluster: peers learn at once, not after a timeout."""
        ...

    def statistics(self) -> Mapping[str, int]:
        """Counters, drops by reason included, and a few gauges (``channels``, ``members``, ...;
        see :data:`superline_zmq.metrics.ADAPTER_GAUGES`)."""
        ...
