"""Membership and presence gossip as a state machine (pure: bytes in, actions out).

A transport (the in-process bus, ZeroMQ sockets) feeds :class:`Gossip` the messages it
receives and the passing of time, and carries out the :class:`Action` s it returns:
broadcast to every member, send to one member, connect to or disconnect from a member.
Nothing here touches a socket or reads the wall clock, so every rule below is unit
tested with an injected clock.

The rules:

- **Joining.** A new node sends :class:`Hello` to one seed; the seed answers
  :class:`Welcome` with the members it knows, and every node then learns of the newcomer
  from the seed's next :class:`Beat`, which lists the live members. One reachable member
  is enough; nobody holds a static peer list.
- **Liveness.** Every node broadcasts a :class:`Beat` every ``interval``. A node not heard
  from within ``ttl`` is dead (out of every query at once); after ``forget_after`` it is
  forgotten and disconnected. A graceful :class:`Leave` removes it at once. A dead node
  that beats again (a paused process resumed) is taken back; one that left is not.
- **Presence.** Each node writes only its own slice; every change goes out as a
  :class:`~superline_zmq.presence.Delta` numbered by that node. A receiver applies deltas
  in order and ignores stale ones. A gap, or a beat carrying a higher sequence than it
  holds, makes it :class:`Pull` the slice (a :class:`~superline_zmq.presence.Snapshot`)
  directly from its owner, so a missed delta is repaired within one beat. A new member
  pulls every slice as it learns of each node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from superline_zmq.ids import NodeId
from superline_zmq.presence import ConnDescriptor, Delta, LocalSlice, NodeInfo, PresenceReplica, Snapshot

#: How a transport reaches a node (ZeroMQ: its ``pub`` and ``router`` endpoints; the bus: nothing).
Addr = dict[str, str]


class Peer(msgspec.Struct, frozen=True, array_like=True):
    node: str
    addr: Addr


class Hello(msgspec.Struct, frozen=True, tag="hello", array_like=True):
    """A newcomer introduces itself to a seed (sent directly), with its slice's sequence."""

    node: str
    addr: Addr
    seq: int = 0


class Welcome(msgspec.Struct, frozen=True, tag="welcome", array_like=True):
    """A seed's answer to :class:`Hello`: itself and the members it knows."""

    node: str
    addr: Addr
    members: list[Peer]


class Beat(msgspec.Struct, frozen=True, tag="beat", array_like=True):
    """Periodic liveness: the sender's address, its slice's sequence, the live members it knows."""

    node: str
    addr: Addr
    seq: int
    members: list[Peer]


class Pull(msgspec.Struct, frozen=True, tag="pull", array_like=True):
    """Ask a node for its whole slice (sent directly)."""

    node: str


class Leave(msgspec.Struct, frozen=True, tag="leave", array_like=True):
    """A node is leaving gracefully: drop it now."""

    node: str


Message = Hello | Welcome | Beat | Pull | Leave | Delta | Snapshot

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(msg: Message) -> bytes:
    """One gossip message as MessagePack bytes."""
    return _encoder.encode(msg)


def decode(data: bytes) -> Message:
    """Decode a gossip message; raises :class:`GossipError` on anything malformed."""
    try:
        msg: Message = _decoder.decode(data)  # typed or Any, by msgspec release: both check
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise GossipError(f"malformed gossip message ({len(data)} bytes): {exc}") from exc
    return msg


class GossipError(ValueError):
    """A gossip message that cannot be decoded; the transport counts and drops it."""


@dataclass(frozen=True)
class Broadcast:
    """Send ``data`` to every member (PUB)."""

    data: bytes


@dataclass(frozen=True)
class Send:
    """Send ``data`` to ``node`` directly."""

    node: NodeId
    data: bytes


@dataclass(frozen=True)
class Connect:
    """Start talking to a new member at ``addr``."""

    node: NodeId
    addr: Addr


@dataclass(frozen=True)
class Disconnect:
    """Stop talking to ``node``: it left or was forgotten."""

    node: NodeId


Action = Broadcast | Send | Connect | Disconnect


class Gossip:
    """One node's view of the cluster: members, their liveness, and the presence replica."""

    def __init__(
        self,
        node: NodeId,
        addr: Addr | None = None,
        *,
        interval: float = 1.0,
        ttl: float = 5.0,
        forget_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < interval < ttl:
            raise ValueError(f"need 0 < interval < ttl, got interval={interval} ttl={ttl}")
        self.node = node
        self.addr: Addr = dict(addr or {})
        self.interval = interval
        self.ttl = ttl
        self._clock = clock
        self.replica = PresenceReplica(node, ttl=ttl, forget_after=forget_after, clock=clock)
        self.local = LocalSlice(node)
        #: Members we talk to (alive, or dead but not yet forgotten), with their addresses.
        self.peers: dict[NodeId, Addr] = {}
        # node -> (until, left): nodes that left (never re-admitted) or were forgotten
        # (re-admitted only on a direct beat), so stale hearsay cannot resurrect them
        self._tombstones: dict[NodeId, tuple[float, bool]] = {}
        self._pulls: dict[NodeId, float] = {}  # outstanding pulls: node -> sent at
        self._unheard: dict[NodeId, float] = {}  # members known by hearsay only -> since
        self._known_since: dict[NodeId, float] = {}  # when each peer was admitted
        self._rehello: dict[NodeId, float] = {}  # when we last re-introduced ourselves to it
        self._last_tick: float | None = None
        self.stats = {"pulls": 0, "gaps": 0, "stale": 0, "snapshots_served": 0, "left": 0, "expired": 0, "stalls": 0}

    # ------------------------------------------------------------------ outbound
    def hello(self) -> bytes:
        """What to send a seed to join through it."""
        return encode(Hello(self.node, self.addr, self.local.seq))

    def tick(self) -> list[Action]:
        """Call every ``interval``: beat, forget long-dead members, retry stuck pulls."""
        actions: list[Action] = []
        now = self._clock()
        if self._last_tick is not None and now - self._last_tick > self.ttl:
            # We were stalled (a paused process, a blocked loop) longer than the TTL: the
            # silence we measured is ours, not theirs. Give every peer a fresh TTL to be heard
            # again instead of forgetting the whole cluster on resume.
            self.stats["stalls"] += 1
            for node in self.peers:
                if self.replica.known(node):
                    self.replica.heard(node)
        self._last_tick = now
        for node in self.replica.expire():
            self.stats["expired"] += 1
            actions.extend(self._drop(node, left=False))
        now = self._clock()
        for node, since in list(self._unheard.items()):
            if now - since > self.replica.forget_after:  # hearsay never confirmed: give up
                self.stats["expired"] += 1
                actions.extend(self._drop(node, left=False))
        self.prune_tombstones()
        for node, sent in list(self._pulls.items()):
            if now - sent >= 2 * self.interval and node in self.peers:
                actions.append(self._pull(node))
        actions.append(Broadcast(encode(Beat(self.node, self.addr, self.local.seq, self._members()))))
        return actions

    def put(self, desc: ConnDescriptor) -> list[Action]:
        """Add or replace one of this node's connections."""
        delta = self.local.put(desc)
        self.replica.apply(delta)
        return [Broadcast(encode(delta))]

    def remove(self, conn_id: str) -> list[Action]:
        """Remove one of this node's connections."""
        delta = self.local.remove(conn_id)
        if delta is None:
            return []
        self.replica.apply(delta)
        return [Broadcast(encode(delta))]

    def leave(self) -> list[Action]:
        """Leaving gracefully: tell everyone, so they drop this node at once."""
        return [Broadcast(encode(Leave(self.node)))]

    # ------------------------------------------------------------------ inbound
    def receive(self, data: bytes) -> list[Action]:
        """Handle one message from the transport; raises :class:`GossipError` if malformed."""
        msg = decode(data)
        if getattr(msg, "node", None) == self.node:
            return []  # our own message echoed back (a transport may loop back)
        if isinstance(msg, Delta):
            return self._on_delta(msg)
        if isinstance(msg, Beat):
            return self._on_beat(msg)
        if isinstance(msg, Snapshot):
            return self._on_snapshot(msg)
        if isinstance(msg, Pull):
            return self._on_pull(msg)
        if isinstance(msg, Hello):
            return self._on_hello(msg)
        if isinstance(msg, Welcome):
            return self._on_welcome(msg)
        return self._on_leave(msg)

    def _on_delta(self, d: Delta) -> list[Action]:
        node = NodeId(d.node)
        if self._is_left(node):
            return []
        actions = self._admit(node, None, direct=True)
        result = self.replica.apply(d)
        if result == "stale":
            self.stats["stale"] += 1
        elif result == "gap":
            self.stats["gaps"] += 1
            if node not in self._pulls:
                actions.append(self._pull(node))
        return actions

    def _on_beat(self, b: Beat) -> list[Action]:
        node = NodeId(b.node)
        if self._is_left(node):
            return []
        actions = self._admit(node, b.addr, direct=True)
        if self.replica.heard(node, b.seq) and node not in self._pulls:
            actions.append(self._pull(node))
        listed = False
        for p in b.members:
            if p.node == self.node:
                listed = True
            else:
                actions.extend(self._admit(NodeId(p.node), p.addr, direct=False))
        if not listed and node in self.peers:
            # It does not count us as a live member although we hear it: it forgot us (we
            # were paused past its TTL) or has not heard us yet. Introduce ourselves again,
            # at most once every two beats, once it has had time to hear us normally.
            now = self._clock()
            since = self._known_since.setdefault(node, now)
            if now - since >= 2 * self.interval and now - self._rehello.get(node, -1e300) >= 2 * self.interval:
                self._rehello[node] = now
                actions.append(Send(node, self.hello()))
        return actions

    def _on_snapshot(self, s: Snapshot) -> list[Action]:
        node = NodeId(s.node)
        if self._is_left(node):
            return []
        actions = self._admit(node, None, direct=True)
        self._pulls.pop(node, None)
        if not self.replica.apply_snapshot(s):
            self.stats["stale"] += 1
        return actions

    def _on_pull(self, p: Pull) -> list[Action]:
        self.stats["snapshots_served"] += 1
        return [Send(NodeId(p.node), encode(self.local.snapshot()))]

    def _on_hello(self, h: Hello) -> list[Action]:
        node = NodeId(h.node)
        self._tombstones.pop(node, None)  # a hello is first-hand: whoever it is, they are here now
        if self.replica.known(node) and h.seq < self.replica.seq_of(node):
            # a restarted process reusing its node id: its sequence restarted, so drop the
            # old slice and pull the new one
            self._pulls.pop(node, None)
            self.replica.forget(node)
        actions = self._admit(node, h.addr, direct=True)
        if node in self.peers and node not in self._pulls and h.seq > self.replica.seq_of(node):
            actions.append(self._pull(node))
        welcome = Welcome(self.node, self.addr, self._members())
        actions.append(Send(node, encode(welcome)))
        return actions

    def _on_welcome(self, w: Welcome) -> list[Action]:
        actions = self._admit(NodeId(w.node), w.addr, direct=True)
        for p in w.members:
            actions.extend(self._admit(NodeId(p.node), p.addr, direct=False))
        return actions

    def _on_leave(self, msg: Leave) -> list[Action]:
        node = NodeId(msg.node)
        self.stats["left"] += 1
        return self._drop(node, left=True)

    # ------------------------------------------------------------------ membership
    def _admit(self, node: NodeId, addr: Addr | None, *, direct: bool) -> list[Action]:
        """Learn of ``node`` (``direct``: we heard it ourselves); connect and pull if new."""
        if node == self.node:
            return []
        tomb = self._tombstones.get(node)
        if tomb is not None:
            if tomb[1] or not direct:
                return []  # left for good, or forgotten and only talked about
            del self._tombstones[node]
        if direct:
            self.replica.heard(node)
            self._unheard.pop(node, None)
        if node in self.peers:
            if direct and addr is not None and addr != self.peers[node]:  # hearsay may be stale
                self.peers[node] = dict(addr)
                return [Disconnect(node), Connect(node, dict(addr))]
            return []
        if addr is None:
            return []  # a delta or snapshot from a node we cannot address yet; its beat will come
        self.peers[node] = dict(addr)
        self._known_since[node] = self._clock()
        if not direct:
            self._unheard[node] = self._clock()
        return [Connect(node, dict(addr)), self._pull(node)]

    def _pull(self, node: NodeId) -> Send:
        self.stats["pulls"] += 1
        self._pulls[node] = self._clock()
        return Send(node, encode(Pull(self.node)))

    def _drop(self, node: NodeId, *, left: bool) -> list[Action]:
        if node == self.node:
            return []
        self._tombstones[node] = (self._clock() + self.replica.forget_after, left)
        self._pulls.pop(node, None)
        self._unheard.pop(node, None)
        self._known_since.pop(node, None)
        self._rehello.pop(node, None)
        if self.replica.known(node):
            self.replica.forget(node)
        if self.peers.pop(node, None) is None:
            return []
        return [Disconnect(node)]

    def _is_left(self, node: NodeId) -> bool:
        tomb = self._tombstones.get(node)
        return tomb is not None and tomb[1]

    def _members(self) -> list[Peer]:
        return [Peer(n, a) for n, a in self.peers.items() if self.replica.alive(n)]

    def alive(self, node: NodeId) -> bool:
        """Whether ``node`` is a live member (this node always is)."""
        return node == self.node or (node in self.peers and self.replica.alive(node))

    def prune_tombstones(self) -> None:
        """Drop tombstones past their time (cheap; the transport may call it on tick)."""
        now = self._clock()
        for node in [n for n, (until, _) in self._tombstones.items() if until < now]:
            del self._tombstones[node]


class GossipPresence:
    """The adapter seam's presence over :class:`Gossip`: writes become deltas, reads are local."""

    def __init__(self, gossip: Gossip, execute: Callable[[list[Action]], None]) -> None:
        self._gossip = gossip
        self._replica = gossip.replica
        self._execute = execute

    def put(self, desc: ConnDescriptor) -> None:
        self._execute(self._gossip.put(desc))

    def remove(self, conn_id: str) -> None:
        self._execute(self._gossip.remove(conn_id))

    async def count(self) -> int:
        return self._replica.count()

    async def connections(self) -> list[ConnDescriptor]:
        return self._replica.connections()

    async def by_user(self, user_id: str) -> list[ConnDescriptor]:
        return self._replica.by_user(user_id)

    async def room(self, name: str) -> list[ConnDescriptor]:
        return self._replica.room(name)

    async def is_online(self, user_id: str) -> bool:
        return self._replica.is_online(user_id)

    async def topology(self) -> list[NodeInfo]:
        return self._replica.topology()
