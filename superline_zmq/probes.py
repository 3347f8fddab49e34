"""Re-probing seeds and forgotten peers with capped, jittered backoff, forever (pure).

Why: a node cut off from the rest (every link broken, the process alive) sees the others
dead and forgets them, and they forget it; each side unsubscribes from the other. When
the links return, nobody would speak first, and the cluster would stay split until a
restart. So a node keeps a list of addresses to ask again (a :class:`Target` each):

- its **seeds** (the endpoints it was started with), for as long as it runs;
- every **forgotten peer** it had an address for (silent past ``forget_after``; not one
  that left gracefully), until it is a member again. The list is bounded (the oldest
  forgotten peer goes first); a forgotten peer whose address a seed already covers is not
  added, so no address is probed twice.

What "ask" means is the caller's: the gossip sends a hello, and whoever listens there
answers with a welcome, which re-admits both sides. Each target has its own backoff: the
first probe ``initial`` after it became a target, then doubling up to ``cap``; each wait
is drawn uniformly from half to all of the nominal one (jitter, from the injected
``random.Random``), so nodes cut off together do not probe in lockstep. While this node
has no live member at all it probes every target on every tick (it has nothing else to
talk to, and a seed that comes up late should be found at once). A target a live member
answers at (the seed is a member; the peer is back) is skipped; its backoff starts over.
Nothing here reads a clock: ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from random import Random

from superline_zmq.ids import NodeId
from superline_zmq.membership import Addr

#: At most this many forgotten peers are remembered for probing (seeds are not counted).
MAX_FORGOTTEN = 256


@dataclass(slots=True)
class Target:
    """An address to probe: a seed (``node`` None) or a forgotten peer."""

    node: NodeId | None
    addr: Addr
    seed: bool
    #: The nominal backoff: the next wait is drawn from half of it to all of it.
    delay: float
    #: When it is due next.
    next_at: float


def covers(addr: Addr, part: Addr) -> bool:
    """Whether ``addr`` includes every endpoint of ``part`` (which is not empty)."""
    return bool(part) and all(addr.get(k) == v for k, v in part.items())


class Prober:
    """The addresses this node keeps probing, each with its own backoff; see the module docstring."""

    def __init__(
        self,
        own: Addr,
        *,
        initial: float,
        cap: float,
        rng: Random,
        limit: int = MAX_FORGOTTEN,
    ) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"need 0 < initial <= cap, got initial={initial} cap={cap}")
        self.own = dict(own)
        self.initial = initial
        self.cap = cap
        self.rng = rng
        self.limit = limit
        self._targets: list[Target] = []

    def __iter__(self) -> Iterator[Target]:
        return iter(list(self._targets))

    def __len__(self) -> int:
        return len(self._targets)

    def add_seed(self, addr: Addr, now: float) -> bool:
        """Probe ``addr`` for as long as this node runs; False if it is ours or already listed."""
        if not addr or covers(self.own, addr) or any(t.seed and t.addr == addr for t in self._targets):
            return False
        self._targets.append(Target(None, dict(addr), True, self.initial, now))
        return True

    def forgotten(self, node: NodeId, addr: Addr | None, now: float) -> bool:
        """``node`` was forgotten at ``addr``: probe it until it is back; False if not added
        (no address, our own, or a seed or another target covers it already)."""
        if addr is None:
            return False
        for t in self._targets:
            if t.node == node or (t.seed and covers(addr, t.addr)) or (addr and t.addr == addr):
                return False
        self._targets.append(Target(node, dict(addr), False, self.initial, self._after(now, self.initial)))
        peers = [t for t in self._targets if not t.seed]
        if len(peers) > self.limit:
            self._targets.remove(peers[0])
        return True

    def due(self, now: float, live: Iterable[tuple[NodeId, Addr]], *, alone: bool) -> list[Target]:
        """The targets to probe now, given the live members (node, address); reschedules them.

        ``alone``: this node has no live member, so every target is due.
        """
        live_nodes: set[NodeId] = set()
        live_endpoints: set[tuple[str, str]] = set()  # endpoints are unique per node
        for n, a in live:
            live_nodes.add(n)
            live_endpoints.update(a.items())
        out = []
        for t in list(self._targets):
            answered = t.addr and all(item in live_endpoints for item in t.addr.items())
            if answered or (t.node is not None and t.node in live_nodes):
                if t.seed:
                    t.delay, t.next_at = self.initial, self._after(now, self.initial)
                else:
                    self._targets.remove(t)  # it is back
                continue
            if not alone and now < t.next_at:
                continue
            out.append(t)
            t.delay = min(self.cap, t.delay * 2) if now >= t.next_at else t.delay
            t.next_at = self._after(now, t.delay)
        return out

    def next_due(self) -> float | None:
        """The earliest time a target comes due (None: no target)."""
        return min((t.next_at for t in self._targets), default=None)

    def _after(self, now: float, delay: float) -> float:
        return now + delay * self.rng.uniform(0.5, 1.0)
