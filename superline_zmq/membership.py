"""Peer liveness: one record per node, its state an enum whose legal moves are a table (pure).

:class:`Membership` is what one node believes about every other node it has heard of.
It never reads a clock: every call that depends on time takes ``now``. It sends nothing
either; :class:`~superline_zmq.gossip.Gossip` turns its answers into actions (connect,
pull, disconnect).

States (:class:`Liveness`) and every legal move (a test checks this list against
:data:`TRANSITIONS`)::

    HEARSAY   -> ALIVE (heard first-hand), LEFT (a leave), FORGOTTEN (unconfirmed past forget_after)
    ALIVE     -> DEAD (silent past ttl), LEFT
    DEAD      -> ALIVE (heard again), LEFT, FORGOTTEN (silent past forget_after)
    LEFT      -> ALIVE (its own hello)
    FORGOTTEN -> ALIVE (heard first-hand), LEFT

A record starts as HEARSAY (named by a member), ALIVE (heard first-hand) or LEFT (a
leave from a node we never knew); a LEFT or FORGOTTEN record is deleted when its
tombstone lapses, and the node is unknown again.

- **HEARSAY**: another member named it (a welcome, a beat); we connect and pull, but
  have not heard it ourselves. Given up (FORGOTTEN) if still unconfirmed after
  ``forget_after``.
- **ALIVE**: heard first-hand (any message) within ``ttl``. A node heard first-hand
  whose address we do not know yet (a delta before its first beat) is ALIVE but no
  *member*: its slice counts in presence, but nothing can be sent to it.
- **DEAD**: silent for more than ``ttl``: out of routing and presence, still connected
  (a paused process that resumes is taken back: DEAD → ALIVE). ALIVE → DEAD needs no
  action, so it is applied whenever the record is read, exactly at ``ttl``.
- **LEFT**: it said :class:`~superline_zmq.gossip.Leave`. Dropped at once; only a
  hello (the node itself, back) re-admits it, never hearsay nor its own late messages.
- **FORGOTTEN**: silent past ``forget_after``: dropped and disconnected. A first-hand
  word re-admits it, at the address it gives or else the one remembered; hearsay does
  not (stale hearsay must not resurrect it).

LEFT and FORGOTTEN are *tombstones*: kept ``forget_after`` so late messages and stale
hearsay cannot undo them, then deleted (:meth:`Membership.prune`), so the table of the
dead stays bounded. :data:`TRANSITIONS` is the only place the legal moves are written;
an illegal move raises :class:`MembershipError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from superline_zmq.ids import NodeId

#: How a transport reaches a node (ZeroMQ: its ``pub`` and ``router`` endpoints; the bus: nothing).
Addr = dict[str, str]


class Liveness(Enum):
    """What this node believes about another node."""

    HEARSAY = "hearsay"
    ALIVE = "alive"
    DEAD = "dead"
    LEFT = "left"
    FORGOTTEN = "forgotten"


HEARSAY, ALIVE, DEAD, LEFT, FORGOTTEN = Liveness

#: The states a record may be created in.
INITIAL: frozenset[Liveness] = frozenset({HEARSAY, ALIVE, LEFT})

#: The legal moves: ``TRANSITIONS[a]`` holds every state a record in ``a`` may move to.
TRANSITIONS: dict[Liveness, frozenset[Liveness]] = {
    HEARSAY: frozenset({ALIVE, LEFT, FORGOTTEN}),
    ALIVE: frozenset({DEAD, LEFT}),
    DEAD: frozenset({ALIVE, LEFT, FORGOTTEN}),
    LEFT: frozenset({ALIVE}),  # only its own hello
    FORGOTTEN: frozenset({ALIVE, LEFT}),
}

#: States of a node we talk to (connected, when it has an address).
TALKING: frozenset[Liveness] = frozenset({HEARSAY, ALIVE, DEAD})
#: Tombstones.
GONE: frozenset[Liveness] = frozenset({LEFT, FORGOTTEN})


class MembershipError(RuntimeError):
    """An illegal liveness move: a bug in the caller, never caused by a peer's message."""


class Admission(Enum):
    """What hearing of a node means for the caller."""

    #: Nothing new: already known (or a node we cannot address yet).
    KNOWN = "known"
    #: A new member, or one back from a tombstone, with an address: connect and pull.
    NEW = "new"
    #: A member heard first-hand at a new address: reconnect.
    MOVED = "moved"
    #: Ignored: ourselves, a node that left, or hearsay about a forgotten node.
    IGNORED = "ignored"


@dataclass(slots=True)
class Member:
    """One node as this node sees it."""

    node: NodeId
    state: Liveness
    #: Where to reach it; None: heard first-hand but never told (no member until its beat).
    addr: Addr | None
    #: When we last heard it first-hand (HEARSAY: when it was first named).
    heard_at: float
    #: When it became a member (an address and a live state); HEARSAY: given up after forget_after.
    known_since: float
    #: When our outstanding pull of its slice went out; None: none outstanding.
    pull_sent_at: float | None = None
    #: LEFT / FORGOTTEN: when the tombstone lapses and the record is deleted.
    until: float | None = None

    @property
    def is_member(self) -> bool:
        """Talked to and addressable: connected, and in this node's view (its digest) when alive."""
        return self.addr is not None and self.state in TALKING


class Membership:
    """Every node this node has heard of, one :class:`Member` each; ``now`` is always an argument."""

    def __init__(self, node: NodeId, *, ttl: float, forget_after: float) -> None:
        if not 0 < ttl <= forget_after:
            raise ValueError(f"need 0 < ttl <= forget_after, got ttl={ttl} forget_after={forget_after}")
        self.node = node
        self.ttl = ttl
        self.forget_after = forget_after
        self._records: dict[NodeId, Member] = {}

    # ------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[Member]:
        """Every record, tombstones included (states as last settled)."""
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def get(self, node: NodeId) -> Member | None:
        """The record of ``node`` as stored (not settled to ``now``), or None."""
        return self._records.get(node)

    def state(self, node: NodeId, now: float) -> Liveness | None:
        """The state of ``node`` at ``now``; None if we hold no record of it."""
        m = self._records.get(node)
        if m is None:
            return None
        self._settle(m, now)
        return m.state

    def alive(self, node: NodeId, now: float) -> bool:
        """Whether ``node`` was heard first-hand within ``ttl`` (address or not)."""
        m = self._records.get(node)
        if m is None:
            return False
        self._settle(m, now)
        return m.state is ALIVE

    def members(self, now: float) -> list[Member]:
        """The nodes we talk to: addressed, alive, dead or known by hearsay."""
        out = []
        for m in self._records.values():
            self._settle(m, now)
            if m.is_member:
                out.append(m)
        return out

    def is_left(self, node: NodeId) -> bool:
        """Whether ``node`` said it is leaving (and the tombstone has not lapsed)."""
        m = self._records.get(node)
        return m is not None and m.state is LEFT

    def pulling(self, node: NodeId) -> bool:
        """Whether a pull of ``node``'s slice is outstanding."""
        m = self._records.get(node)
        return m is not None and m.pull_sent_at is not None

    # ------------------------------------------------------------------ hearing
    def heard(self, node: NodeId, now: float, addr: Addr | None = None, *, hello: bool = False) -> Admission:
        """``node`` spoke to us (``addr``: where it says it is). ``hello``: it introduced itself,
        which lifts even a leave's tombstone."""
        if node == self.node:
            return Admission.IGNORED
        m = self._records.get(node)
        if m is None:
            self._records[node] = Member(node, ALIVE, _copy(addr), now, now)
            return Admission.NEW if addr is not None else Admission.KNOWN
        self._settle(m, now)
        if m.state in GONE:
            if m.state is LEFT and not hello:
                return Admission.IGNORED  # its late messages do not bring it back
            self._move(m, ALIVE)  # first-hand: whoever it is, it is here now; start afresh
            if addr is not None:
                m.addr = dict(addr)
            # (one that speaks without saying where it is keeps the address we remember: a
            # heartbeat is enough to take a resumed process back)
            m.heard_at, m.known_since = now, now
            m.until = m.pull_sent_at = None
            return Admission.NEW if m.addr is not None else Admission.KNOWN
        m.heard_at = now
        if m.state is not ALIVE:
            self._move(m, ALIVE)
        if m.addr is None:
            if addr is None:
                return Admission.KNOWN
            m.addr, m.known_since = dict(addr), now
            return Admission.NEW
        if addr is not None and addr != m.addr:
            m.addr = dict(addr)
            return Admission.MOVED
        return Admission.KNOWN

    def named(self, node: NodeId, addr: Addr, now: float) -> Admission:
        """A member told us of ``node`` at ``addr`` (hearsay: never overrides what we heard ourselves)."""
        if node == self.node:
            return Admission.IGNORED
        m = self._records.get(node)
        if m is None:
            self._records[node] = Member(node, HEARSAY, dict(addr), now, now)
            return Admission.NEW
        if m.state in GONE:
            return Admission.IGNORED  # left, or forgotten and only talked about
        if m.addr is None:  # heard first-hand, now we learn where it is
            m.addr, m.known_since = dict(addr), now
            return Admission.NEW
        return Admission.KNOWN

    def left(self, node: NodeId, now: float) -> bool:
        """``node`` said it is leaving: tombstone it; True if it was a member to disconnect from."""
        if node == self.node:
            return False
        m = self._records.get(node)
        if m is None:
            self._records[node] = Member(node, LEFT, None, now, now, until=now + self.forget_after)
            return False
        connected = m.is_member
        if m.state is not LEFT:
            self._move(m, LEFT)
        self._tombstone(m, now)
        return connected

    def stalled(self, now: float) -> None:
        """We were stalled longer than ``ttl``: the silence was ours, so every member heard
        first-hand gets a fresh ``ttl`` (hearsay is not refreshed: we never heard it)."""
        for m in self._records.values():
            if m.is_member and m.state in (ALIVE, DEAD):
                m.heard_at = now
                if m.state is DEAD:
                    self._move(m, ALIVE)

    # ------------------------------------------------------------------ time passing
    def expire(self, now: float) -> list[tuple[NodeId, bool]]:
        """Forget nodes dead past ``forget_after`` and hearsay never confirmed within it.

        Returns each with whether it had an address (we were connected: disconnect it).
        """
        out = []
        for m in self._records.values():
            self._settle(m, now)
            if (m.state is DEAD and now - m.heard_at > self.forget_after) or (
                m.state is HEARSAY and now - m.known_since > self.forget_after
            ):
                self._move(m, FORGOTTEN)
                self._tombstone(m, now)
                out.append((m.node, m.addr is not None))
        return out

    def prune(self, now: float) -> list[NodeId]:
        """Delete tombstones past their time: those nodes are unknown again. Returns them."""
        gone = [m.node for m in self._records.values() if m.until is not None and m.until < now]
        for node in gone:
            del self._records[node]
        return gone

    # ------------------------------------------------------------------ pulls
    def pull_sent(self, node: NodeId, now: float) -> None:
        """A pull of ``node``'s slice went out at ``now``."""
        m = self._records.get(node)
        if m is not None and m.state not in GONE:
            m.pull_sent_at = now

    def pull_done(self, node: NodeId) -> None:
        """``node``'s snapshot arrived, or its old slice was dropped: no pull outstanding."""
        m = self._records.get(node)
        if m is not None:
            m.pull_sent_at = None

    def pulls_due(self, now: float, after: float) -> list[NodeId]:
        """Members whose pull has been outstanding for ``after`` or longer (ask again)."""
        return [
            m.node
            for m in self._records.values()
            if m.pull_sent_at is not None and m.is_member and now - m.pull_sent_at >= after
        ]

    # ------------------------------------------------------------------ moves
    def _settle(self, m: Member, now: float) -> None:
        if m.state is ALIVE and now - m.heard_at > self.ttl:
            self._move(m, DEAD)

    def _tombstone(self, m: Member, now: float) -> None:
        m.until = now + self.forget_after
        m.pull_sent_at = None

    @staticmethod
    def _move(m: Member, to: Liveness) -> None:
        if to not in TRANSITIONS[m.state]:
            raise MembershipError(f"node {m.node}: {m.state.name} -> {to.name} is not a legal move")
        m.state = to


def _copy(addr: Addr | None) -> Addr | None:
    return None if addr is None else dict(addr)
