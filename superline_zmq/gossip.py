"""Membership and presence gossip as a state machine (pure: bytes in, actions out).

A driver (:class:`~superline_zmq.gossip_driver.GossipDriver`, shared by the in-process
bus and the ZeroMQ adapter) feeds :class:`Gossip` the messages the transport receives and
calls :meth:`Gossip.tick` at :meth:`Gossip.next_deadline`, and carries out the
:class:`Action` s it returns: broadcast to every member, send to one member, connect to
or disconnect from a member. Nothing here touches a socket, reads a clock or draws a
random number of its own: the clock and the ``random.Random`` are injected, so every
rule below is unit tested with a fake clock over a fake network
(:mod:`superline_zmq.testing.fakes`).

Who is alive is decided in one place, :class:`~superline_zmq.membership.Membership`
(an enum of states with a transition table); the presence replica, routing
(:meth:`Gossip.alive`) and the membership digest in heartbeats all read it.

The rules:

- **Beats are constant-size.** Every node broadcasts a :class:`Heartbeat`: its id, its
  slice's sequence and a 48-bit *digest* of its view (itself and the live members it
  knows, with their addresses; :func:`digest_of`) — 15 bytes plus the sequence as a
  varint on the wire (:func:`encode`), whatever the cluster's size, where a beat used to
  list every member (~80 bytes each).
- **Beats keep within a byte budget.** Every member hears every beat, so a node receives
  ``members * beat size`` bytes per beat. While that fits ``beat_budget`` bytes per
  second (default 2 KiB/s: up to ~120 members) a node beats every ``interval``; beyond,
  it beats every second or third tick (:meth:`Gossip.beat_every`), never less often than
  twice per ``ttl``. A node whose view changed beats at its next tick whatever the
  schedule, so joins and deaths spread as fast as before; ticks (expiry, probes, pulls)
  stay at ``interval``, so detection still takes ``ttl`` plus at most one ``interval``.
- **Views are reconciled on a digest mismatch.** A node whose view (as of its last beat)
  differs from the digest in a member's heartbeat introduces itself to that member
  (:class:`Hello`), which answers :class:`Welcome` with its own address and the members
  it knows. So membership lists travel only when views differ, and a node the sender had
  forgotten (it was paused or cut off) is taken back by the same exchange. A node syncs
  at most once per beat, so a change that reaches members at different moments costs
  each node one welcome per beat while views differ, not one per member.
- **Joining.** A new node sends :class:`Hello` to one seed; the seed answers
  :class:`Welcome` with the members it knows. The seed's view changed, so at its next
  beat every member finds the digests differ, syncs, and learns of the newcomer: one
  reachable member is enough and nobody holds a static peer list; views agree within two
  beats.
- **Liveness.** A node not heard from within ``ttl`` is dead (out of routing and every
  query at once): every node hears every member's heartbeat directly, so detection takes
  ttl plus at most one beat. After ``forget_after`` it is forgotten and disconnected. A
  graceful :class:`Leave` removes it at once. A dead node that beats again (a paused
  process resumed) is taken back; one that left is not (see
  :mod:`superline_zmq.membership` for every state and move).
- **Links heal themselves.** A member that keeps reaching us directly but whose broadcasts
  (beats, deltas) have not reached us for a ``ttl`` is alive with a broken subscription (its side refused
  our connection once, a link died one way): we disconnect from it and connect afresh, at
  most once per ``ttl`` (``relinks``).
- **Partitions heal themselves.** Seeds and forgotten peers are probed again (a
  :class:`Probe`: a hello to whatever listens at that address) with capped, jittered
  backoff, forever (:mod:`superline_zmq.probes`), so two sides that forgot each other
  find each other again once the links return, and re-pull each other's slices; while
  a node has no live member at all it probes every beat.
- **Presence.** Each node writes only its own slice; every change goes out as a
  :class:`~superline_zmq.presence.Delta` numbered by that node. A receiver applies deltas
  in order and ignores stale ones. A gap, or a heartbeat carrying a higher sequence than
  it holds, makes it :class:`Pull` the slice (a :class:`~superline_zmq.presence.Snapshot`)
  directly from its owner, so a missed delta is repaired within one beat. A new member
  pulls every slice as it learns of each node.
- **Presence changes.** Every update that changes what queries see is recorded as a
  :class:`~superline_zmq.presence.PresenceChange` (users online/offline, room joins and
  leaves; :meth:`Gossip.take_changes`), exactly once per change: a write to a slice, a
  node's slice appearing (heard again) or vanishing (silent past ``ttl``, left, or
  replaced by a restarted process). Queries and changes see liveness *as of the last
  refresh* (:meth:`Gossip.refresh`, which every call runs first): a member is dropped
  from both in one step the moment its ``ttl`` lapses, so a count a change reports is
  the count a query gives. Changes made while the node joins (until
  :meth:`Gossip.end_join`, and the first slices of the members it knows then) are marked
  ``initial``: they reveal state that predates this node.

Evolving the wire (as with msgspec structs everywhere here): a new field is appended
with a default, and a tag is never reused for another shape. The ``"beat"`` tag (the
old beat that listed every member) is retired: a node that still sends it is counted in
``bad_gossip`` by this version, so upgrade every node of a cluster together. The same holds
for the compact beat (:func:`encode_beat`): a release before it cannot read it, and its
64-bit digests never match this release's 48-bit ones.
"""

from __future__ import annotations

import hashlib
import math
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from random import Random

import msgspec

from superline_zmq.ids import NodeId
from superline_zmq.membership import ALIVE, Addr, Admission, Liveness, Membership
from superline_zmq.presence import (
    ConnDescriptor,
    Delta,
    LocalSlice,
    NodeInfo,
    PresenceChange,
    PresenceDiff,
    PresenceReplica,
    Snapshot,
    UserPresence,
)
from superline_zmq.probes import Prober
from superline_zmq.timing import check_beat_budget

__all__ = [
    "Action",
    "Addr",
    "Broadcast",
    "Connect",
    "Disconnect",
    "Gossip",
    "GossipError",
    "GossipPresence",
    "Heartbeat",
    "Hello",
    "Leave",
    "Message",
    "Peer",
    "Probe",
    "Pull",
    "Send",
    "Welcome",
    "decode",
    "digest_of",
    "encode",
    "encode_beat",
]


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


class Heartbeat(msgspec.Struct, frozen=True, tag="hb", array_like=True):
    """Periodic liveness, constant-size: the sender, its slice's sequence, the digest of its
    view; sent compact (:func:`encode_beat`)."""

    node: str
    seq: int
    digest: int


class Pull(msgspec.Struct, frozen=True, tag="pull", array_like=True):
    """Ask a node for its whole slice (sent directly)."""

    node: str


class Leave(msgspec.Struct, frozen=True, tag="leave", array_like=True):
    """A node is leaving gracefully: drop it now."""

    node: str


Message = Hello | Welcome | Heartbeat | Pull | Leave | Delta | Snapshot

#: Bytes of beats per second a node lets each member receive, by default (:class:`Gossip`).
DEFAULT_BEAT_BUDGET = 2048.0

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)

#: The first byte of a compact heartbeat. A MessagePack message here is a tagged array
#: (0x90-0x9f, 0xdc, 0xdd), so a positive fixint in front is never mistaken for one.
COMPACT_BEAT = 0x01
_COMPACT_PREFIX = bytes((COMPACT_BEAT,))
DIGEST_BITS = 48
_DIGEST_BYTES = DIGEST_BITS // 8
_NODE_BYTES = 8  # our node ids: 16 hex digits
_SEQ_AT = 1 + _NODE_BYTES + _DIGEST_BYTES  # where the varint sequence starts
_SEQ_MAX_BYTES = 10  # a 64-bit LEB128
_HEX = frozenset(string.hexdigits.lower())


def encode(msg: Message) -> bytes:
    """One gossip message as bytes: MessagePack, except heartbeats (:func:`encode_beat`)."""
    if isinstance(msg, Heartbeat):
        return encode_beat(msg)
    return _encoder.encode(msg)


def encode_beat(hb: Heartbeat) -> bytes:
    """A heartbeat in 15 bytes plus its sequence as a varint, when it fits that form.

    A beat is the one message every member receives from every other, every beat, so it
    gets a fixed binary layout instead of MessagePack's (~32 bytes):
    ``0x01 | node id (8 bytes: the 16 hex digits of ours) | digest (6 bytes, big-endian)
    | seq (unsigned LEB128)``. A node id that is not 16 lowercase hex digits (a custom
    one), or a digest wider than 48 bits, goes as MessagePack instead; :func:`decode`
    reads both.
    """
    node, seq, digest = hb.node, hb.seq, hb.digest
    if (
        len(node) != 2 * _NODE_BYTES
        or not _HEX.issuperset(node)
        or not 0 <= digest < 1 << DIGEST_BITS
        or not 0 <= seq < 1 << 64
    ):
        return _encoder.encode(hb)
    out = bytearray(_COMPACT_PREFIX)
    out += bytes.fromhex(node)
    out += digest.to_bytes(_DIGEST_BYTES, "big")
    while seq >= 0x80:
        out.append((seq & 0x7F) | 0x80)
        seq >>= 7
    out.append(seq)
    return bytes(out)


def _decode_beat(data: bytes) -> Heartbeat:
    lo, hi = _SEQ_AT + 1, _SEQ_AT + _SEQ_MAX_BYTES
    if not lo <= len(data) <= hi:
        raise GossipError(f"malformed compact heartbeat ({len(data)} bytes): expected {lo} to {hi}")
    seq = shift = 0
    for i, byte in enumerate(data[_SEQ_AT:]):
        seq |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if _SEQ_AT + i + 1 != len(data):
                raise GossipError(f"malformed compact heartbeat ({len(data)} bytes): bytes after the sequence")
            if i and not byte:
                raise GossipError(f"malformed compact heartbeat ({len(data)} bytes): overlong sequence")
            if seq >= 1 << 64:
                raise GossipError(f"malformed compact heartbeat ({len(data)} bytes): sequence over 64 bits")
            node, digest = data[1 : 1 + _NODE_BYTES], data[1 + _NODE_BYTES : _SEQ_AT]
            return Heartbeat(node.hex(), seq, int.from_bytes(digest, "big"))
    raise GossipError(f"malformed compact heartbeat ({len(data)} bytes): truncated sequence")


def digest_of(view: list[Peer]) -> int:
    """A 48-bit digest of a view (nodes and their addresses), independent of order."""
    canonical = sorted((p.node, sorted(p.addr.items())) for p in view)
    digest = hashlib.blake2b(msgspec.msgpack.encode(canonical), digest_size=DIGEST_BITS // 8).digest()
    return int.from_bytes(digest, "big")


def decode(data: bytes) -> Message:
    """Decode a gossip message; raises :class:`GossipError` on anything malformed."""
    if data[:1] == _COMPACT_PREFIX:
        return _decode_beat(data)
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


@dataclass(frozen=True)
class Probe:
    """Send ``data`` (a hello) to whatever listens at ``addr``, member or not (``node``: who
    was last there, if anyone we knew; the answer may come from someone else)."""

    node: NodeId | None
    addr: Addr
    data: bytes


Action = Broadcast | Send | Connect | Disconnect | Probe


class Gossip:
    """One node's view of the cluster: members, their liveness, and the presence replica.

    ``clock`` is required and is the only time this machine knows: reads through the
    presence seam (``count``, ``room``, ``alive``) come at any moment without a ``now``,
    so the machine asks the clock it was given rather than taking ``now`` per call; a
    test passes a :class:`~superline_zmq.testing.FakeClock`. ``rng`` is its only source
    of randomness (default: seeded from the node id, so runs are reproducible and nodes
    still differ): it jitters the re-probing of ``seeds`` (addresses to join through and
    to probe forever) and forgotten peers, every ``reprobe_initial`` (default
    ``interval``) doubling up to ``reprobe_max`` (default 30 intervals). ``beat_budget``:
    the bytes per second of beats a node may cause each member to receive (None: beat
    every tick whatever the size; see :meth:`beat_every`).
    """

    def __init__(
        self,
        node: NodeId,
        addr: Addr | None = None,
        *,
        clock: Callable[[], float],
        interval: float = 1.0,
        ttl: float = 5.0,
        forget_after: float | None = None,
        rng: Random | None = None,
        seeds: Iterable[Addr] = (),
        reprobe_initial: float | None = None,
        reprobe_max: float | None = None,
        beat_budget: float | None = DEFAULT_BEAT_BUDGET,
    ) -> None:
        if not 0 < interval < ttl:
            raise ValueError(f"need 0 < interval < ttl, got interval={interval} ttl={ttl}")
        check_beat_budget(beat_budget)
        self.beat_budget = beat_budget
        #: The most ticks between two beats: two beats always fit in ``ttl``.
        self.max_beat_every = max(1, int(ttl / (2 * interval)))
        self._ticks_since_beat = 0
        self._beat_digest: int | None = None  # the digest our last beat carried
        self.node = node
        self.addr: Addr = dict(addr or {})
        self.interval = interval
        self.ttl = ttl
        self._clock = clock
        self.rng = rng if rng is not None else Random(node)
        #: Nodes whose slices queries (and changes) see: alive as of the last refresh.
        self._shown: set[NodeId] = set()
        #: No node in ``_shown`` can have died before this (the earliest ttl lapse; a hint).
        self._next_death = math.inf
        self.replica = PresenceReplica(
            node, ttl=ttl, forget_after=forget_after, clock=clock, liveness=self._shown.__contains__
        )
        #: What changed in what queries see, oldest first, until a driver takes them.
        self.changes: list[PresenceChange] = []
        self._joining = False
        self._awaiting: set[NodeId] = set()  # after end_join: members whose first slice is still initial
        #: Every node we have heard of, with its liveness (the single source of it).
        self.membership = Membership(node, ttl=ttl, forget_after=self.replica.forget_after)
        self.local = LocalSlice(node)
        initial = interval if reprobe_initial is None else reprobe_initial
        self.prober = Prober(
            self.addr,
            initial=initial,
            cap=max(initial, 30 * interval) if reprobe_max is None else reprobe_max,
            rng=self.rng,
        )
        now = clock()
        for seed in seeds:
            self.prober.add_seed(seed, now)
        self._last_tick: float | None = None
        self._awake_at: float | None = None  # the last tick, or the end of a stall: a longer silence is ours
        self._last_sync: float | None = None  # when we last asked a member for its view
        #: When a broadcast (a beat, a delta) of each member last reached us, or it came back
        #: to life; and when we last re-made our links to it because none had for a ttl.
        self._broadcast_at: dict[NodeId, float] = {}
        self._relinked_at: dict[NodeId, float] = {}
        #: This node's view as of its last heartbeat (itself included), and its digest.
        self.view: list[Peer] = [Peer(node, self.addr)]
        self.digest = digest_of(self.view)
        self.stats = {
            "pulls": 0,
            "gaps": 0,
            "stale": 0,
            "snapshots_served": 0,
            "left": 0,
            "expired": 0,
            "stalls": 0,
            "syncs": 0,
            "probes": 0,
            "evicted": 0,
            "relinks": 0,
            "beats": 0,
            "beats_skipped": 0,
            "beats_over_budget": 0,
        }

    @property
    def peers(self) -> dict[NodeId, Addr]:
        """Members we talk to (alive, dead but not forgotten, or known by hearsay), with their addresses."""
        return {m.node: dict(m.addr) for m in self.membership.members(self._clock()) if m.addr is not None}

    def next_deadline(self) -> float:
        """When :meth:`tick` is due next (on the injected clock): one ``interval`` after the
        last tick, or now if it never ran. Everything time-driven happens in a tick."""
        if self._last_tick is None:
            return self._clock()
        return self._last_tick + self.interval

    # ------------------------------------------------------------------ outbound
    def hello(self) -> bytes:
        """What to send a seed to join through it."""
        return encode(Hello(self.node, self.addr, self.local.seq))

    def tick(self) -> list[Action]:
        """Forget long-dead members, retry stuck pulls, probe seeds and forgotten peers that are
        due, and beat; call it at :meth:`next_deadline`."""
        actions: list[Action] = []
        now = self._clock()
        members = self.membership
        self._last_tick = now
        self.refresh()  # a stall, and members whose ttl lapsed: gone from queries, with their changes
        self._awake_at = now
        for node, connected in members.expire(now):
            self.stats["expired"] += 1
            actions.extend(self._forget_slice(node, connected))
            m = members.get(node)
            self.prober.forgotten(node, m.addr if m is not None else None, now)
        members.prune(now)
        for node in members.pulls_due(now, 2 * self.interval):
            actions.append(self._pull(node))
        live = [(m.node, m.addr) for m in members.members(now) if m.state is ALIVE and m.addr is not None]
        actions.extend(self._relink(now, live))
        probes = self.prober.due(now, live, alone=not live)
        if probes:
            hello = self.hello()
            for t in probes:
                self.stats["probes"] += 1
                actions.append(Probe(t.node, dict(t.addr), hello))
        self.view = [Peer(self.node, self.addr), *(Peer(node, addr) for node, addr in live)]
        self.digest = digest_of(self.view)
        beat = encode(Heartbeat(self.node, self.local.seq, self.digest))
        every = self.beat_every(len(beat), len(self.view) - 1)
        self._ticks_since_beat += 1
        if self._ticks_since_beat >= every or self.digest != self._beat_digest:
            self._ticks_since_beat = 0
            self._beat_digest = self.digest
            self.stats["beats"] += 1
            actions.append(Broadcast(beat))
        else:
            self.stats["beats_skipped"] += 1
        return actions

    def _relink(self, now: float, live: list[tuple[NodeId, Addr]]) -> list[Action]:
        """Re-make the links to a member that is alive (it keeps talking to us directly) but
        whose broadcasts have not reached us for a ``ttl``: our subscription to its broadcasts is
        broken while its direct messages get through (a connection its side refused once and
        that was never retried, a half-dead link). Without this, such a member stays alive
        here on its direct messages alone while everything it broadcasts — presence deltas,
        channel publications — is lost. At most once per ``ttl`` per member."""
        actions: list[Action] = []
        for node, addr in live:
            # (every live member has an entry: _heard makes one as it comes to life)
            last = max(self._broadcast_at.setdefault(node, now), self._relinked_at.get(node, -math.inf))
            if now - last > self.ttl:
                self._relinked_at[node] = now
                self.stats["relinks"] += 1
                actions += [Disconnect(node), Connect(node, dict(addr))]
        return actions

    def beat_every(self, beat_size: int, members: int) -> int:
        """Every how many ticks to beat, with ``members`` live members hearing each beat of
        ``beat_size`` bytes: 1 while ``members * beat_size`` per ``interval`` fits
        ``beat_budget``, else the fewest ticks that fit it, at most :attr:`max_beat_every`
        (then the budget is exceeded, counted in ``beats_over_budget``). A view change
        beats at once whatever this says (:meth:`tick`)."""
        if self.beat_budget is None or members <= 0:
            return 1
        needed = math.ceil(members * beat_size / (self.beat_budget * self.interval))
        if needed > self.max_beat_every:
            self.stats["beats_over_budget"] += 1
            return self.max_beat_every
        return max(1, needed)

    def put(self, desc: ConnDescriptor) -> list[Action]:
        """Add or replace one of this node's connections."""
        self.refresh()
        delta = self.local.put(desc)
        self._note(self.replica.apply(delta).diff, own=True)
        return [Broadcast(encode(delta))]

    def remove(self, conn_id: str) -> list[Action]:
        """Remove one of this node's connections."""
        self.refresh()
        delta = self.local.remove(conn_id)
        if delta is None:
            return []
        self._note(self.replica.apply(delta).diff, own=True)
        return [Broadcast(encode(delta))]

    def leave(self) -> list[Action]:
        """Leaving gracefully: tell everyone, so they drop this node at once."""
        return [Broadcast(encode(Leave(self.node)))]

    def evict(self, node: NodeId) -> list[Action]:
        """This node stops trusting ``node`` (its key was revoked): drop it now, as its leave would.

        It is tombstoned LEFT (its slice dropped, out of routing and every query at once,
        disconnected); its late messages and hearsay about it cannot bring it back, only
        its own hello, which the transport lets through again only once it is trusted.
        Nothing is sent: the others decide for themselves.
        """
        if node == self.node:
            return []
        self.stats["evicted"] += 1
        self._forget_slice(node, False)  # while its slice is still visible: its connections leave now
        connected = self.membership.left(node, self._clock())
        return [Disconnect(node)] if connected else []

    # ------------------------------------------------------------------ presence changes
    def refresh(self) -> None:
        """Bring what queries see up to date with liveness now: a member whose ``ttl`` lapsed
        vanishes (its change recorded). Cheap when nothing is due; every call runs it first.

        It also notices a stall: if this machine has not ticked for longer than ``ttl`` (a
        paused process, a blocked loop), the silence it measured is its own, not its peers':
        every peer gets a fresh ``ttl`` to be heard again instead of the whole cluster being
        forgotten on resume.
        """
        now = self._clock()
        if self._awake_at is not None and now - self._awake_at > self.ttl:
            self.stats["stalls"] += 1
            self.membership.stalled(now)
            for node in self._broadcast_at:  # their broadcasts get a fresh ttl as well
                self._broadcast_at[node] = now
            self._awake_at = now
            for node in self.replica.nodes():
                if node != self.node and node not in self._shown and self.membership.alive(node, now):
                    self._show(node, True)
        if now <= self._next_death:
            return
        nxt = math.inf
        for node in list(self._shown):
            m = self.membership.get(node)
            if m is not None and self.membership.alive(node, now):
                nxt = min(nxt, m.heard_at + self.ttl)
            else:
                self._show(node, False)
        self._next_death = nxt

    def take_changes(self) -> list[PresenceChange]:
        """The changes recorded since the last call, oldest first (a driver takes them after
        every call into this machine)."""
        out, self.changes = self.changes, []
        return out

    def begin_join(self) -> None:
        """This node starts joining: the changes it records until :meth:`end_join` are initial."""
        self._joining = True

    def end_join(self) -> None:
        """Joining is over (the adapter's start returns): from now on only the first slices of
        the members being pulled right now are initial; everything else is a change."""
        if not self._joining:
            return
        self._joining = False
        self._awaiting = {m.node for m in self.membership.members(self._clock()) if m.pull_sent_at is not None}

    @property
    def joining(self) -> bool:
        """Whether changes are initial right now (between :meth:`begin_join` and :meth:`end_join`)."""
        return self._joining

    def _note(self, diff: PresenceDiff, initial: bool = False, *, own: bool = False) -> None:
        if diff:
            self.changes.append(PresenceChange(diff, not own and (initial or self._joining)))

    def _show(self, node: NodeId, visible: bool) -> None:
        """``node``'s slice appears in (or vanishes from) what queries see, with its change."""
        if visible:
            self._shown.add(node)
            m = self.membership.get(node)
            if m is not None:
                self._next_death = min(self._next_death, m.heard_at + self.ttl)
        else:
            self._shown.discard(node)
            self._awaiting.discard(node)
        self._note(self.replica.liveness_changed(node, visible))

    # ------------------------------------------------------------------ inbound
    def receive(self, data: bytes) -> list[Action]:
        """Handle one message from the transport; raises :class:`GossipError` if malformed."""
        msg = decode(data)
        if msg.node == self.node:
            return []  # our own message echoed back (a transport may loop back)
        self.refresh()
        match msg:
            case Delta():
                return self._on_delta(msg)
            case Heartbeat():
                return self._on_heartbeat(msg)
            case Snapshot():
                return self._on_snapshot(msg)
            case Pull():
                return self._on_pull(msg)
            case Hello():
                return self._on_hello(msg)
            case Welcome():
                return self._on_welcome(msg)
            case Leave():
                return self._on_leave(msg)

    def _on_delta(self, d: Delta) -> list[Action]:
        node = NodeId(d.node)
        if self.membership.is_left(node):
            return []
        self._broadcast_at[node] = self._clock()
        actions = self._heard(node, None)
        update = self.replica.apply(d)
        self._note(update.diff)
        result = update.outcome
        if result == "stale":
            self.stats["stale"] += 1
        elif result == "gap":
            self.stats["gaps"] += 1
            if not self.membership.pulling(node):
                actions.append(self._pull(node))
        return actions

    def _on_heartbeat(self, hb: Heartbeat) -> list[Action]:
        node = NodeId(hb.node)
        if self.membership.is_left(node):
            return []
        self._broadcast_at[node] = self._clock()
        actions = self._heard(node, None)
        m = self.membership.get(node)
        if m is None or not m.is_member:
            return actions  # heard, but we cannot address it: its hello or a member's welcome will say where
        if hb.seq > self.replica.seq_of(node) and not self.membership.pulling(node):
            actions.append(self._pull(node))
        if hb.digest != self.digest:
            # Our views differ: introduce ourselves, and its welcome brings its view. That
            # also re-admits us if it forgot us (we were paused or cut off past its
            # forget_after). One sync per beat at most, whoever differs.
            now = self._clock()
            if self._last_sync is None or now - self._last_sync >= self.interval:
                self._last_sync = now
                self.stats["syncs"] += 1
                actions.append(Send(node, self.hello()))
        return actions

    def _on_snapshot(self, s: Snapshot) -> list[Action]:
        node = NodeId(s.node)
        if self.membership.is_left(node):
            return []
        actions = self._heard(node, None)
        self.membership.pull_done(node)
        initial = node in self._awaiting  # the first slice of a member known when we joined
        self._awaiting.discard(node)
        update = self.replica.apply_snapshot(s)
        self._note(update.diff, initial)
        if not update.applied:
            self.stats["stale"] += 1
        return actions

    def _on_pull(self, p: Pull) -> list[Action]:
        node = NodeId(p.node)
        # a member's pull is first-hand news that it is alive (a newcomer hears every member
        # this way as they learn of it, before their next beat); a stranger's is not membership
        actions = self._heard_member(node)
        self.stats["snapshots_served"] += 1
        actions.append(Send(node, encode(self.local.snapshot())))
        return actions

    def _on_hello(self, h: Hello) -> list[Action]:
        node = NodeId(h.node)
        if self.replica.known(node) and h.seq < self.replica.seq_of(node):
            # a restarted process reusing its node id: its sequence restarted, so drop the
            # old slice and pull the new one
            self.membership.pull_done(node)
            self._note(self.replica.forget(node).diff)  # the old process's connections are gone
        actions = self._heard(node, h.addr, hello=True)  # first-hand: whoever it is, it is here now
        m = self.membership.get(node)
        if m is not None and m.is_member and not self.membership.pulling(node) and h.seq > self.replica.seq_of(node):
            actions.append(self._pull(node))
        welcome = Welcome(self.node, self.addr, self._members())
        actions.append(Send(node, encode(welcome)))
        return actions

    def _on_welcome(self, w: Welcome) -> list[Action]:
        node = NodeId(w.node)
        actions = self._heard(node, w.addr)
        m = self.membership.get(node)
        if m is not None and m.pull_sent_at is not None and m.known_since < self._clock() and not actions:
            # a member we knew before welcomes us, so it knows us now: the pull it may have
            # been unable to answer while it could not reach us is worth asking again at
            # once rather than in two beats (one just admitted was pulled a moment ago)
            actions.append(self._pull(node))
        for p in w.members:
            actions.extend(self._named(NodeId(p.node), p.addr))
        return actions

    def _on_leave(self, msg: Leave) -> list[Action]:
        node = NodeId(msg.node)
        self.stats["left"] += 1
        self._forget_slice(node, False)  # while its slice is still visible: its connections leave now
        connected = self.membership.left(node, self._clock())
        return [Disconnect(node)] if connected else []

    # ------------------------------------------------------------------ membership
    def _heard(self, node: NodeId, addr: Addr | None, *, hello: bool = False) -> list[Action]:
        """``node`` spoke to us: it is alive; connect and pull if it is a new member."""
        now = self._clock()
        if not self.membership.alive(node, now):
            self._broadcast_at[node] = now  # (back) to life: its broadcasts get a ttl to reach us
        admission = self.membership.heard(node, now, addr, hello=hello)
        if admission is not Admission.IGNORED:
            self.replica.heard(node)  # holds its slice from now on (topology lists it)
            if node not in self._shown and self.membership.alive(node, now):
                self._show(node, True)  # back (or new): its slice appears
        return self._admitted(node, admission)

    def _named(self, node: NodeId, addr: Addr) -> list[Action]:
        """A member named ``node``: connect and pull if we did not know it."""
        return self._admitted(node, self.membership.named(node, addr, self._clock()))

    def _admitted(self, node: NodeId, admission: Admission) -> list[Action]:
        if admission is Admission.NEW:
            m = self.membership.get(node)
            assert m is not None and m.addr is not None
            return [Connect(node, dict(m.addr)), self._pull(node)]
        if admission is Admission.MOVED:
            m = self.membership.get(node)
            assert m is not None and m.addr is not None
            return [Disconnect(node), Connect(node, dict(m.addr))]
        return []

    def _pull(self, node: NodeId) -> Send:
        self.stats["pulls"] += 1
        self.membership.pull_sent(node, self._clock())
        return Send(node, encode(Pull(self.node)))

    def _forget_slice(self, node: NodeId, connected: bool) -> list[Action]:
        """``node`` left or was forgotten: drop its slice, and disconnect if we were connected."""
        self._broadcast_at.pop(node, None)
        self._relinked_at.pop(node, None)
        if self.replica.known(node):
            self._note(self.replica.forget(node).diff)
        self._shown.discard(node)
        self._awaiting.discard(node)
        return [Disconnect(node)] if connected else []

    def _members(self) -> list[Peer]:
        now = self._clock()
        return [Peer(m.node, m.addr) for m in self.membership.members(now) if m.state is ALIVE and m.addr is not None]

    def heard_from(self, node: NodeId) -> list[Action]:
        """``node`` reached us outside gossip (a direct message): first-hand news that it is
        alive, as any gossip message from it would be. Only for a member we can address;
        anyone else is left to its own hello."""
        self.refresh()
        return self._heard_member(node)

    def _heard_member(self, node: NodeId) -> list[Action]:
        """First-hand news from ``node`` that is not a beat: it is alive if it is a member."""
        m = self.membership.get(node)
        return self._heard(node, None) if m is not None and m.is_member else []

    def alive(self, node: NodeId) -> bool:
        """Whether ``node`` is a live member (this node always is)."""
        if node == self.node:
            return True
        m = self.membership.get(node)
        return m is not None and m.addr is not None and self.membership.alive(node, self._clock())

    def liveness(self, node: NodeId) -> Liveness | None:
        """What this node believes about ``node`` now (None: never heard of it, or long gone)."""
        return self.membership.state(node, self._clock())

    def prune_tombstones(self) -> None:
        """Drop tombstones past their time (cheap; :meth:`tick` does it too)."""
        self.membership.prune(self._clock())


class GossipPresence:
    """The adapter seam's presence over :class:`Gossip`: writes become deltas, reads are local.

    It is also a :class:`~superline_zmq.adapter.PresenceEvents`: after every call into the
    machine the driver hands each change it recorded to the :attr:`watchers`, in order.
    Reads refresh liveness first, so a query and the changes agree at every moment.
    """

    def __init__(self, gossip: Gossip, execute: Callable[[list[Action]], None]) -> None:
        self._gossip = gossip
        self._replica = gossip.replica
        self._execute = execute
        self._watchers: list[Callable[[PresenceChange], None]] = []

    def _fresh(self) -> PresenceReplica:
        # liveness as of now; the changes that brings go out (execute hands them over)
        self._gossip.refresh()
        self._execute([])
        return self._replica

    def put(self, desc: ConnDescriptor) -> None:
        self._execute(self._gossip.put(desc))

    def remove(self, conn_id: str) -> None:
        self._execute(self._gossip.remove(conn_id))

    async def count(self) -> int:
        return self._fresh().count()

    async def connections(self) -> list[ConnDescriptor]:
        return self._fresh().connections()

    async def by_user(self, user_id: str) -> list[ConnDescriptor]:
        return self._fresh().by_user(user_id)

    async def room(self, name: str) -> list[ConnDescriptor]:
        return self._fresh().room(name)

    async def is_online(self, user_id: str) -> bool:
        return self._fresh().is_online(user_id)

    async def topology(self) -> list[NodeInfo]:
        return self._fresh().topology()

    # ------------------------------------------------------------------ PresenceEvents
    def watch(self, listener: Callable[[PresenceChange], None]) -> Callable[[], None]:
        """Call ``listener(change)`` for every change from now on; returns the unsubscribe."""
        self._watchers.append(listener)

        def off() -> None:
            if listener in self._watchers:
                self._watchers.remove(listener)

        return off

    async def watching(self) -> None:
        """Changes from every node reach watchers as soon as they watch: nothing to wait for."""

    def online(self) -> list[UserPresence]:
        """Every user online now (synchronous)."""
        self._fresh()
        return self._replica.online()

    def members(self, room: str) -> list[ConnDescriptor]:
        """Room ``room``'s members now (synchronous)."""
        return self._fresh().room(room)

    @property
    def watchers(self) -> list[Callable[[PresenceChange], None]]:
        """The watchers, in the order they subscribed (the driver calls them)."""
        return list(self._watchers)
