"""The presence replica: who is connected where, per node, indexed for cluster queries (pure).

Every node is the single writer of its own *slice* (the descriptors of its own
connections). A :class:`LocalSlice` turns this node's changes into numbered
:class:`Delta` s; a :class:`PresenceReplica` holds every node's slice as last seen,
applies deltas in sequence order (stale or duplicate ones are ignored; a gap asks the
caller to pull a :class:`Snapshot`), and answers queries from indexes by user, by room
and by node, so no query walks every descriptor.

Liveness is part of the replica: each node is *heard* (a beat, a delta, a snapshot);
a node not heard within ``ttl`` is dead, drops out of every query at once, and is shown
as ``alive=False`` in :meth:`PresenceReplica.topology` until it is forgotten. The clock
is injected, so all of this runs in a unit test with no sockets and no sleeping. A
replica that lives inside a larger membership machine (the gossip) is given that
machine's verdict instead (``liveness=``), so routing and presence read one liveness.

Every write returns what it changed in what queries see, as Phoenix's tracker does: a
:class:`PresenceDiff` of users that came online (their first connection on a live node)
or went offline (their last one gone), with their cluster-wide connection count after
the change, and per room the connections that joined and left (a descriptor replaced
while it stays in a room leaves with its old fields and joins with its new ones, so a
listener sees metadata changes). A second device, or a move between nodes that
overlaps, changes no user's online state. Changes to a dead node's slice change nothing
visible; when a node's liveness flips, :meth:`PresenceReplica.liveness_changed` gives
the diff of its whole slice appearing or vanishing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from superline_zmq.ids import NodeId


class ConnDescriptor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A serializable snapshot of one connection, as every node of the cluster sees it.

    ``extra`` holds the fields your ``describe_conn`` hook returned; ``ctx`` is never
    serialized. Live values such as ``last_pong_at`` stay on the owning node.
    """

    id: str
    role: str
    node_id: str
    connected_at: float
    user_id: str | None = None
    rooms: tuple[str, ...] = ()
    extra: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        """The flat form super-line users know: core fields plus ``describe_conn`` fields."""
        d: dict[str, Any] = {"id": self.id, "role": self.role, "node_id": self.node_id}
        d["connected_at"] = self.connected_at
        if self.user_id is not None:
            d["user_id"] = self.user_id
        d["rooms"] = list(self.rooms)
        d.update(self.extra)
        return d


#: Keys ``describe_conn`` may not return: they would shadow the descriptor's own fields.
RESERVED_FIELDS = frozenset(ConnDescriptor.__struct_fields__)


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One node in :meth:`PresenceReplica.topology`."""

    node_id: str
    connections: int
    rooms: tuple[str, ...]
    alive: bool


class Delta(msgspec.Struct, frozen=True, tag="delta", array_like=True):
    """Change number ``seq`` of ``node``'s slice: ``put`` a descriptor, or ``remove`` an id."""

    node: str
    seq: int
    put: ConnDescriptor | None = None
    remove: str | None = None


class Snapshot(msgspec.Struct, frozen=True, tag="snap", array_like=True):
    """``node``'s whole slice as of ``seq``."""

    node: str
    seq: int
    conns: list[ConnDescriptor]


Applied = Literal["applied", "stale", "gap"]


@dataclass(frozen=True)
class UserPresence:
    """``user_id`` came online (``online``: its first connection on a live node) or went
    offline (its last one gone), because of a change on ``node_id``; ``connections`` is
    its count on live nodes after the change."""

    user_id: str
    online: bool
    node_id: str
    connections: int


@dataclass(frozen=True)
class RoomDiff:
    """Connections that joined and left room ``room`` in one replica update, oldest first."""

    room: str
    joins: tuple[ConnDescriptor, ...] = ()
    leaves: tuple[ConnDescriptor, ...] = ()


@dataclass(frozen=True)
class PresenceDiff:
    """What one replica update changed in what queries see (empty: nothing; it is falsy)."""

    users: tuple[UserPresence, ...] = ()
    rooms: tuple[RoomDiff, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.users or self.rooms)

    def room(self, name: str) -> RoomDiff | None:
        """The diff of room ``name``, or None if it did not change."""
        return next((r for r in self.rooms if r.room == name), None)


#: Nothing changed.
NO_CHANGE = PresenceDiff()


@dataclass(frozen=True)
class PresenceChange:
    """One update's diff as a presence reports it to its watchers.

    ``initial``: the diff shows state that was there before this node joined (the slices
    it pulls while it joins), not something that changed while it watched; a listener
    that asked for ``initial=False`` skips it.
    """

    diff: PresenceDiff
    initial: bool = False


@dataclass(frozen=True)
class Update:
    """The result of a write: the ``outcome`` for the writer's bookkeeping, and the ``diff``."""

    outcome: Applied
    diff: PresenceDiff = NO_CHANGE

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"


class LocalSlice:
    """This node's own connections: the single writer, numbering every change."""

    def __init__(self, node: NodeId) -> None:
        self.node = node
        self.seq = 0
        self.conns: dict[str, ConnDescriptor] = {}

    def put(self, desc: ConnDescriptor) -> Delta:
        """Add or replace a descriptor (it must name this node)."""
        if desc.node_id != self.node:
            raise ValueError(f"descriptor {desc.id} names node {desc.node_id}, not this node {self.node}")
        self.conns[desc.id] = desc
        self.seq += 1
        return Delta(self.node, self.seq, put=desc)

    def remove(self, conn_id: str) -> Delta | None:
        """Remove a descriptor; None if it was not there (nothing to tell anyone)."""
        if self.conns.pop(conn_id, None) is None:
            return None
        self.seq += 1
        return Delta(self.node, self.seq, remove=conn_id)

    def snapshot(self) -> Snapshot:
        """The whole slice, for a peer that joined or missed a delta."""
        return Snapshot(self.node, self.seq, list(self.conns.values()))


class _Slice:
    __slots__ = ("conns", "heard_at", "rooms", "seq")

    def __init__(self, now: float) -> None:
        self.seq = 0
        self.conns: dict[str, ConnDescriptor] = {}
        self.rooms: dict[str, int] = {}  # room -> members on this node
        self.heard_at = now


class PresenceReplica:
    """Every node's slice, indexed by user and by room, with per-node liveness.

    ``clock`` is required (this module never reads one). ``liveness``: whether a node is
    alive, decided elsewhere (the gossip's membership); by default the replica decides
    itself from when it last heard each node, with ``ttl``.
    """

    def __init__(
        self,
        node: NodeId,
        *,
        clock: Callable[[], float],
        ttl: float = 5.0,
        forget_after: float | None = None,
        liveness: Callable[[NodeId], bool] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.node = node
        self.ttl = ttl
        #: A dead node stays in topology() (alive=False) until this long after it was last heard.
        self.forget_after = forget_after if forget_after is not None else 2 * ttl
        if self.forget_after < ttl:
            raise ValueError(f"forget_after ({self.forget_after}) must be at least ttl ({ttl})")
        self._clock = clock
        self._liveness = liveness
        self._slices: dict[NodeId, _Slice] = {node: _Slice(clock())}
        self._by_user: dict[str, set[str]] = {}
        self._by_room: dict[str, set[str]] = {}
        self._where: dict[str, NodeId] = {}  # conn id -> node

    # ------------------------------------------------------------------ liveness
    def heard(self, node: NodeId, seq: int | None = None) -> bool:
        """Record that ``node`` is alive; True when ``seq`` shows we are behind (pull a snapshot)."""
        s = self._slices.get(node)
        if s is None:
            s = self._slices[node] = _Slice(self._clock())
        s.heard_at = self._clock()
        return seq is not None and seq > s.seq

    def alive(self, node: NodeId) -> bool:
        """Whether ``node`` was heard within ``ttl``, or ``liveness`` says so (this node always is)."""
        if node == self.node:
            return True
        if self._liveness is not None:
            return self._liveness(node)
        s = self._slices.get(node)
        return s is not None and self._clock() - s.heard_at <= self.ttl

    def seq_of(self, node: NodeId) -> int:
        """The last sequence number applied for ``node`` (0 if none)."""
        s = self._slices.get(node)
        return s.seq if s is not None else 0

    def known(self, node: NodeId) -> bool:
        """Whether the replica holds a slice for ``node``, alive or not."""
        return node in self._slices

    def nodes(self) -> list[NodeId]:
        """Every node with a slice here, alive or not."""
        return list(self._slices)

    def forget(self, node: NodeId) -> Update:
        """Drop ``node``'s slice at once (it left gracefully, or expired).

        Outcome "applied" if a slice was dropped ("stale": there was none); the diff has
        its connections leaving if the node was alive (a dead node's were not visible).
        """
        if node == self.node:
            raise ValueError("a replica cannot forget its own node")
        s = self._slices.get(node)
        if s is None:
            return Update("stale")
        diff = _Diff(self, node) if self.alive(node) else None
        if diff is not None:
            diff.before(s.conns.values())
        del self._slices[node]
        for desc in s.conns.values():
            self._unindex(desc)
            if diff is not None:
                diff.change(desc, None)
        return Update("applied", diff.finish() if diff is not None else NO_CHANGE)

    def liveness_changed(self, node: NodeId, alive: bool) -> PresenceDiff:
        """``node`` just became alive (its slice appears in queries) or dead (it vanishes):
        the diff of that, for a replica whose ``liveness`` is decided elsewhere."""
        s = self._slices.get(node)
        if s is None or node == self.node or not s.conns:
            return NO_CHANGE
        diff = _Diff(self, node)
        sign = 1 if alive else -1
        for desc in s.conns.values():
            if desc.user_id is not None:  # counts now include (alive) or exclude (dead) the slice
                diff.users_before[desc.user_id] = diff.users_before.get(desc.user_id, 0) - sign
            if alive:
                diff.change(None, desc)
            else:
                diff.change(desc, None)
        for user in diff.users_before:
            diff.users_before[user] += self._user_count(user)
        return diff.finish()

    def expire(self) -> list[NodeId]:
        """Forget nodes silent for ``forget_after``; returns them (their connections were no
        longer visible: no diff). Call it now and then."""
        now = self._clock()
        gone = [n for n, s in self._slices.items() if n != self.node and now - s.heard_at > self.forget_after]
        for n in gone:
            self.forget(n)
        return gone

    # ------------------------------------------------------------------ writes
    def apply(self, delta: Delta) -> Update:
        """Apply a delta from its node: in order, ignoring stale ones, reporting gaps.

        Outcome "applied", "stale" or "gap" (nothing changed: pull a snapshot), with the diff.
        """
        node = NodeId(delta.node)
        s = self._slices.get(node)
        if s is None:
            s = self._slices[node] = _Slice(self._clock())
        was_visible = self.alive(node)
        s.heard_at = self._clock()
        outcome: Applied = "applied"
        if delta.seq <= s.seq:
            outcome = "stale"
        elif delta.seq != s.seq + 1:
            outcome = "gap"
        visible = self.alive(node)
        if visible and not was_visible:  # hearing it brought a dead node back: its slice reappears
            if outcome == "applied":
                self._apply_change(node, s, delta)
            return Update(outcome, self.liveness_changed(node, True))
        if outcome != "applied":
            return Update(outcome)
        if not visible:
            self._apply_change(node, s, delta)
            return Update(outcome)
        diff = _Diff(self, node)
        cid = delta.put.id if delta.put is not None else delta.remove
        old = s.conns.get(cid) if cid is not None else None
        diff.before([d for d in (old, delta.put) if d is not None])
        self._apply_change(node, s, delta)
        new = s.conns.get(cid) if cid is not None else None
        diff.change(old, new)
        return Update(outcome, diff.finish())

    def _apply_change(self, node: NodeId, s: _Slice, delta: Delta) -> None:
        s.seq = delta.seq
        if delta.put is not None:
            self._put(node, s, delta.put)
        elif delta.remove is not None:
            self._remove(s, delta.remove)

    def apply_snapshot(self, snap: Snapshot) -> Update:
        """Replace ``snap.node``'s slice unless we already hold a newer one.

        Outcome "applied" or "stale" (we hold a newer one: nothing changed), with the diff.
        """
        node = NodeId(snap.node)
        s = self._slices.get(node)
        if s is None:
            s = self._slices[node] = _Slice(self._clock())
        was_visible = self.alive(node)
        incoming = {d.id: d for d in snap.conns}
        diff = _Diff(self, node)
        diff.before([*s.conns.values(), *incoming.values()])  # counts as they stand, before hearing it
        s.heard_at = self._clock()
        visible = self.alive(node)
        if snap.seq < s.seq:
            revived = visible and not was_visible
            return Update("stale", self.liveness_changed(node, True) if revived else NO_CHANGE)
        old = dict(s.conns) if was_visible else {}
        for cid in [c for c in s.conns if c not in incoming]:
            self._remove(s, cid)
        for desc in incoming.values():
            if s.conns.get(desc.id) != desc:
                self._put(node, s, desc)
        s.seq = snap.seq
        if not visible:
            return Update("applied")
        for cid in old.keys() | s.conns.keys():
            diff.change(old.get(cid), s.conns.get(cid))
        return Update("applied", diff.finish())

    def _put(self, node: NodeId, s: _Slice, desc: ConnDescriptor) -> None:
        if desc.node_id != node:
            return  # a node writes only its own slice; ignore anything else
        old = s.conns.get(desc.id)
        if old is not None:
            self._unindex_from(s, old)
        else:
            other = self._where.get(desc.id)
            if other is not None and other != node:
                return
        s.conns[desc.id] = desc
        self._where[desc.id] = node
        if desc.user_id is not None:
            self._by_user.setdefault(desc.user_id, set()).add(desc.id)
        for room in desc.rooms:
            self._by_room.setdefault(room, set()).add(desc.id)
            s.rooms[room] = s.rooms.get(room, 0) + 1

    def _remove(self, s: _Slice, conn_id: str) -> None:
        old = s.conns.pop(conn_id, None)
        if old is not None:
            self._unindex_from(s, old)

    def _unindex_from(self, s: _Slice, desc: ConnDescriptor) -> None:
        self._unindex(desc)
        for room in desc.rooms:
            n = s.rooms.get(room, 0) - 1
            if n > 0:
                s.rooms[room] = n
            else:
                s.rooms.pop(room, None)

    def _unindex(self, desc: ConnDescriptor) -> None:
        self._where.pop(desc.id, None)
        if desc.user_id is not None:
            _discard(self._by_user, desc.user_id, desc.id)
        for room in desc.rooms:
            _discard(self._by_room, room, desc.id)

    # ------------------------------------------------------------------ reads
    def _user_count(self, user_id: str) -> int:
        """``user_id``'s connections on live nodes."""
        return sum(1 for cid in self._by_user.get(user_id, ()) if self.alive(self._where[cid]))

    def _live(self, ids: Iterable[str]) -> list[ConnDescriptor]:
        out = []
        for cid in ids:
            node = self._where[cid]
            if self.alive(node):
                out.append(self._slices[node].conns[cid])
        return sorted(out, key=_order)

    def online(self) -> list[UserPresence]:
        """Every user with a connection on a live node, as if each had just come online: its
        count, and the node of its oldest connection. Sorted by user."""
        out = []
        for user in sorted(self._by_user):
            live = self._live(self._by_user[user])
            if live:
                out.append(UserPresence(user, True, live[0].node_id, len(live)))
        return out

    def get(self, conn_id: str) -> ConnDescriptor | None:
        """The descriptor of ``conn_id`` if its node is alive."""
        node = self._where.get(conn_id)
        if node is None or not self.alive(node):
            return None
        return self._slices[node].conns[conn_id]

    def count(self) -> int:
        """Connections on live nodes (one step per node, not per connection)."""
        return sum(len(s.conns) for n, s in self._slices.items() if self.alive(n))

    def connections(self) -> list[ConnDescriptor]:
        """Every connection on a live node, oldest first."""
        out = [d for n, s in self._slices.items() if self.alive(n) for d in s.conns.values()]
        return sorted(out, key=_order)

    def by_user(self, user_id: str) -> list[ConnDescriptor]:
        """``user_id``'s connections on live nodes."""
        return self._live(self._by_user.get(user_id, ()))

    def is_online(self, user_id: str) -> bool:
        """Whether ``user_id`` has a connection on a live node."""
        return any(self.alive(self._where[cid]) for cid in self._by_user.get(user_id, ()))

    def room(self, name: str) -> list[ConnDescriptor]:
        """Members of room ``name`` on live nodes."""
        return self._live(self._by_room.get(name, ()))

    def topology(self) -> list[NodeInfo]:
        """Every known node: its connection count, its rooms, and whether it is alive."""
        return [
            NodeInfo(node_id=n, connections=len(s.conns), rooms=tuple(sorted(s.rooms)), alive=self.alive(n))
            for n, s in sorted(self._slices.items())
        ]


def _order(d: ConnDescriptor) -> tuple[float, str]:
    return (d.connected_at, d.id)


def _sorted(descs: Iterable[ConnDescriptor]) -> tuple[ConnDescriptor, ...]:
    return tuple(sorted(descs, key=_order))


def _discard(index: dict[str, set[str]], key: str, value: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(value)
        if not ids:
            del index[key]


class _Diff:
    """Builds one :class:`PresenceDiff`: user counts taken before a change, room moves during it."""

    def __init__(self, replica: PresenceReplica, node: NodeId) -> None:
        self.replica = replica
        self.node = node
        self.users_before: dict[str, int] = {}
        self.joins: dict[str, list[ConnDescriptor]] = {}
        self.leaves: dict[str, list[ConnDescriptor]] = {}

    def before(self, descs: Iterable[ConnDescriptor]) -> None:
        """Note the users these descriptors name, with their counts as they stand (call before changing)."""
        for d in descs:
            if d.user_id is not None and d.user_id not in self.users_before:
                self.users_before[d.user_id] = self.replica._user_count(d.user_id)

    def change(self, old: ConnDescriptor | None, new: ConnDescriptor | None) -> None:
        """One connection went from ``old`` to ``new`` (None: absent), as queries see it.

        Its users must have been noted with :meth:`before`. A replaced descriptor leaves
        every room it was in and joins every room it is in (its fields may have changed).
        """
        if old == new:
            return
        if old is not None:
            for room in old.rooms:
                self.leaves.setdefault(room, []).append(old)
        if new is not None:
            for room in new.rooms:
                self.joins.setdefault(room, []).append(new)

    def finish(self) -> PresenceDiff:
        users = []
        for user in sorted(self.users_before):
            before, after = self.users_before[user], self.replica._user_count(user)
            if (before == 0) != (after == 0):
                users.append(UserPresence(user, after > 0, self.node, after))
        rooms = [
            RoomDiff(room, _sorted(self.joins.get(room, ())), _sorted(self.leaves.get(room, ())))
            for room in sorted(self.joins.keys() | self.leaves.keys())
        ]
        if not users and not rooms:
            return NO_CHANGE
        return PresenceDiff(tuple(users), tuple(rooms))
