"""A hand-moved clock and a simulated network, for testing gossip machines and their drivers.

Like ``trio.testing``'s ``MockClock`` and memberlist's ``MockTransport``, these ship with
the library so adapters and applications can test cluster behaviour without sockets and
without waiting:

- :class:`FakeClock` is a clock (call it for the time) that moves only when told
  (:meth:`FakeClock.advance`). Its :meth:`FakeClock.sleep` is an asyncio sleep on that
  clock, so a driver given ``clock=fake, sleep=fake.sleep`` runs a minute of beats in
  milliseconds (:meth:`FakeClock.run`).
- :class:`FakeNet` carries gossip between nodes. It hosts pure
  :class:`~superline_zmq.gossip.Gossip` machines (it carries out the actions they return,
  synchronously, when told to :meth:`FakeNet.deliver`) and drivers (each gets a
  :class:`FakeLink` from :meth:`FakeNet.link`, delivered from the event loop with
  ``auto_deliver=True``). A broadcast reaches the nodes that connected to the sender (as
  with PUB/SUB; ``pubsub=False``: everyone); a send reaches its node (``routed=True``: only
  a node the sender connected to, as with ZeroMQ DEALERs); a probe reaches whichever
  node's address matches, connected or not (a hello to a seed's endpoint). Rules drop
  chosen messages
  (:meth:`FakeNet.drop`, :meth:`FakeNet.partition`, :meth:`FakeNet.split`), a paused node
  neither sends nor receives, and every message is counted per sender (bytes on the
  wire and handed over, and number) and, with ``record=True``, logged decoded.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable

from superline_zmq.gossip import (
    Action,
    Addr,
    Broadcast,
    Connect,
    Disconnect,
    Gossip,
    GossipError,
    Message,
    Probe,
    Send,
    decode,
)
from superline_zmq.ids import NodeId

__all__ = ["FakeClock", "FakeLink", "FakeNet", "Rule"]

#: Decides whether a message from ``src`` to ``dst`` is lost.
Rule = Callable[[NodeId, NodeId, Message], bool]


class FakeClock:
    """A monotonic clock that moves only when told; ``sleep`` waits on it, not on real time."""

    #: How many event-loop turns :meth:`run` lets pass after each wake-up (no time passes).
    settle_rounds = 20

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        """Move time forward by ``dt`` seconds and wake every sleeper now due."""
        if dt < 0:
            raise ValueError(f"a monotonic clock cannot go back (dt={dt})")
        self.now += dt
        self._wake()

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds of this clock (yields once if ``delay <= 0``)."""
        if delay <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + delay, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """Tasks sleeping on this clock right now."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    def next_wakeup(self) -> float | None:
        """When the earliest sleeper is due, or None if nobody sleeps."""
        while self._sleepers and self._sleepers[0][2].done():  # cancelled sleeps
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def run(self, duration: float) -> None:
        """Let ``duration`` seconds pass: wake sleepers in deadline order, and after each
        wake-up let the event loop run what they do (``settle_rounds`` turns)."""
        end = self.now + duration
        await self.settle()
        while True:
            due = self.next_wakeup()
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            self._wake()
            await self.settle()
        self.now = end
        await self.settle()

    async def settle(self) -> None:
        """Let the event loop run woken tasks and scheduled callbacks; no time passes."""
        for _ in range(self.settle_rounds):
            await asyncio.sleep(0)

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)


class FakeNet:
    """Routes gossip between pure machines and drivers; see the module docstring.

    ``make`` builds the machine for :meth:`add` (default: a :class:`Gossip` at
    :meth:`addr_of` with ``interval``, ``ttl`` and ``forget_after``, on this net's clock).
    """

    def __init__(
        self,
        clock: FakeClock | None = None,
        *,
        interval: float = 1.0,
        ttl: float = 5.0,
        forget_after: float | None = None,
        pubsub: bool = True,
        routed: bool = False,
        record: bool = True,
        auto_deliver: bool = False,
        make: Callable[[NodeId], Gossip] | None = None,
        max_deliveries: int = 100_000,
    ) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.interval = interval
        self.ttl = ttl
        self.forget_after = forget_after
        self.pubsub = pubsub
        self.routed = routed  # a Send reaches only a node the sender connected to (ZeroMQ DEALERs)
        self.record = record
        self.auto_deliver = auto_deliver
        self.max_deliveries = max_deliveries
        self._make = make
        #: Pure machines, by node (the net carries out the actions they return).
        self.nodes: dict[NodeId, Gossip] = {}
        #: Drivers' receive callbacks, by node (they carry out their actions through a FakeLink).
        self.endpoints: dict[NodeId, Callable[[bytes], object]] = {}
        #: Drivers' addresses, for probes (a pure machine's is its ``addr``).
        self.addrs: dict[NodeId, Addr] = {}
        self.subs: dict[NodeId, set[NodeId]] = defaultdict(set)  # subscriber -> nodes it connected to
        self.queue: deque[tuple[NodeId, NodeId, bytes]] = deque()
        self.paused: set[NodeId] = set()
        self.rules: list[Rule] = []
        #: Every message sent, in order, lost or not (``record=True``).
        self.log: list[tuple[NodeId, NodeId, Message]] = []
        self.delivered: list[tuple[NodeId, NodeId, Message]] = []
        self.lost: list[tuple[NodeId, NodeId, Message]] = []
        self.refused: list[tuple[NodeId, NodeId, Message]] = []  # sends with no route
        self.garbage: list[tuple[NodeId, NodeId, bytes]] = []  # undecodable messages (delivered anyway)
        self.actions: dict[NodeId, list[tuple[float, Action]]] = defaultdict(list)
        #: Bytes and messages sent by each node (every copy of a broadcast counts: the wire).
        self.bytes_sent: Counter[NodeId] = Counter()
        self.messages_sent: Counter[NodeId] = Counter()
        #: Bytes each node handed the network (a broadcast counts once: what a PUB socket is given).
        self.bytes_emitted: Counter[NodeId] = Counter()
        self._scheduled = False

    @staticmethod
    def addr_of(node: str) -> Addr:
        """The address :meth:`add` gives ``node`` by default."""
        return {"pub": f"tcp://{node}:5000", "router": f"tcp://{node}:5001"}

    # ------------------------------------------------------------ setup
    def add(self, *names: str) -> list[Gossip]:
        """New pure machines named ``names`` (built by ``make``), on this net."""
        out = []
        for name in names:
            node = NodeId(name)
            if self._make is not None:
                g = self._make(node)
            else:
                g = Gossip(
                    node,
                    self.addr_of(name),
                    clock=self.clock,
                    interval=self.interval,
                    ttl=self.ttl,
                    forget_after=self.forget_after,
                )
            self.nodes[node] = g
            self.subs[node] = set()
            out.append(g)
        return out

    def link(self, node: NodeId, receive: Callable[[bytes], object], addr: Addr | None = None) -> FakeLink:
        """Attach a driver at ``addr``: ``receive(data)`` gets its messages; it sends through the returned link."""
        self.endpoints[node] = receive
        self.addrs[node] = dict(addr or {})
        self.subs[node] = set()
        return FakeLink(self, node)

    def __getitem__(self, name: str) -> Gossip:
        return self.nodes[NodeId(name)]

    # ------------------------------------------------------------ faults
    def drop(self, rule: Rule, *, once: bool = False) -> Rule:
        """Lose every message matching ``rule`` (only the first one if ``once``); returns the
        rule as installed, for :meth:`heal`."""
        if not once:
            self.rules.append(rule)
            return rule

        def first(src: NodeId, dst: NodeId, msg: Message) -> bool:
            if rule(src, dst, msg):
                self.rules.remove(first)
                return True
            return False

        self.rules.append(first)
        return first

    def partition(self, x: str, y: str) -> Rule:
        """Cut the link between ``x`` and ``y`` both ways."""
        return self.drop(lambda s, d, m: {s, d} == {x, y})

    def split(self, group: Iterable[str]) -> Rule:
        """Cut ``group`` off from every other node, both ways (inside each side all is well)."""
        side = frozenset(group)
        return self.drop(lambda s, d, m: (s in side) != (d in side))

    def heal(self, rule: Rule | None = None) -> None:
        """Remove one rule (as returned by :meth:`drop`), or all of them."""
        if rule is None:
            self.rules.clear()
        else:
            self.rules.remove(rule)

    # ------------------------------------------------------------ running
    def run(self, src: str, actions: Iterable[Action]) -> list[Action]:
        """Carry out ``src``'s actions (queueing its messages) and deliver everything."""
        actions = list(actions)
        self.execute(NodeId(src), actions)
        self.deliver()
        return actions

    def execute(self, src: NodeId, actions: Iterable[Action]) -> bool:
        """Carry out ``src``'s actions, queueing its messages; False if a send had no route."""
        routed = True
        for action in actions:
            if self.record:
                self.actions[src].append((self.clock.now, action))
            if src in self.paused:
                continue  # a paused process says nothing
            if isinstance(action, Broadcast):
                self.bytes_emitted[src] += len(action.data)
                for dst in self._everyone():
                    if dst != src and (not self.pubsub or src in self.subs[dst]):
                        self._queue(src, dst, action.data)
            elif isinstance(action, Send):
                self.bytes_emitted[src] += len(action.data)
                if self._reachable(action.node) and (not self.routed or action.node in self.subs[src]):
                    self._queue(src, action.node, action.data)
                else:
                    routed = False
                    if self.record:
                        self.refused.append((src, action.node, decode(action.data)))
            elif isinstance(action, Connect):
                self.subs[src].add(action.node)
            elif isinstance(action, Disconnect):
                self.subs[src].discard(action.node)
            elif isinstance(action, Probe):
                self.bytes_emitted[src] += len(action.data)
                for dst in self._at(action.node, action.addr):
                    if dst != src:
                        self._queue(src, dst, action.data)
        self._schedule()
        return routed

    def post(self, src: NodeId, dst: NodeId, data: bytes) -> None:
        """Queue one message as if ``src`` reached ``dst``'s endpoint directly (a hello to a seed)."""
        self._queue(src, dst, data)
        self._schedule()

    def deliver(self) -> None:
        """Deliver queued messages (and whatever they provoke) until the network is quiet."""
        for _ in range(self.max_deliveries):
            if not self.queue:
                return
            src, dst, data = self.queue.popleft()
            msg: Message | None = None
            if self.record or self.rules:
                try:
                    msg = decode(data)
                except GossipError:
                    self.garbage.append((src, dst, data))
            if msg is not None and self.record:
                self.log.append((src, dst, msg))
            if dst in self.paused or (msg is not None and any(rule(src, dst, msg) for rule in list(self.rules))):
                if msg is not None and self.record:
                    self.lost.append((src, dst, msg))
                continue
            if msg is not None and self.record:
                self.delivered.append((src, dst, msg))
            machine = self.nodes.get(dst)
            if machine is not None:
                self.execute(dst, machine.receive(data))
                continue
            receive = self.endpoints.get(dst)
            if receive is not None:
                receive(data)
        raise AssertionError("the network never went quiet")

    def join(self, new: str, seed: str) -> None:
        """``new`` knows only ``seed``: it sends it a hello (through the seed's endpoint, never refused)."""
        self.post(NodeId(new), NodeId(seed), self[new].hello())
        self.deliver()

    def tick(self) -> None:
        """Every running pure machine ticks once; then deliver."""
        for node, g in self.nodes.items():
            if node not in self.paused:
                self.execute(node, g.tick())
        self.deliver()

    def step(self, n: int = 1) -> None:
        """Let ``n`` intervals pass, every running pure machine ticking once per interval."""
        for _ in range(n):
            self.clock.advance(self.interval)
            self.tick()

    # ------------------------------------------------------------ looking
    def sent(self, src: str | None = None, dst: str | None = None, kind: type | None = None) -> list[Message]:
        """The messages sent so far (delivered or lost), oldest first (``record=True``)."""
        return [
            m
            for s, d, m in self.log
            if (src is None or s == src) and (dst is None or d == dst) and (kind is None or isinstance(m, kind))
        ]

    def did(self, node: str, since: float = float("-inf")) -> list[Action]:
        """The actions ``node`` carried out since ``since`` (``record=True``)."""
        return [a for t, a in self.actions[NodeId(node)] if t >= since]

    # ------------------------------------------------------------ internals
    def _everyone(self) -> Iterable[NodeId]:
        return itertools.chain(self.nodes, self.endpoints)

    def _at(self, node: NodeId | None, addr: Addr) -> list[NodeId]:
        """Who a probe of ``addr`` reaches: the node listening there (or ``node``, if addressless)."""
        if not addr:
            return [node] if node is not None and self._reachable(node) else []
        found = []
        for n in self._everyone():
            own = self.nodes[n].addr if n in self.nodes else self.addrs.get(n, {})
            if all(own.get(k) == v for k, v in addr.items()):
                found.append(n)
        return found

    def _reachable(self, node: NodeId) -> bool:
        return node in self.nodes or node in self.endpoints

    def _queue(self, src: NodeId, dst: NodeId, data: bytes) -> None:
        self.queue.append((src, dst, data))
        self.bytes_sent[src] += len(data)
        self.messages_sent[src] += 1

    def _schedule(self) -> None:
        if self.auto_deliver and self.queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._deliver_soon)

    def _deliver_soon(self) -> None:
        self._scheduled = False
        self.deliver()


class FakeLink:
    """One driver's side of a :class:`FakeNet` (implements :class:`~superline_zmq.gossip_driver.Link`)."""

    def __init__(self, net: FakeNet, node: NodeId) -> None:
        self.net = net
        self.node = node

    def broadcast(self, data: bytes) -> None:
        self.net.execute(self.node, [Broadcast(data)])

    def send(self, node: NodeId, data: bytes) -> bool:
        return self.net.execute(self.node, [Send(node, data)])

    def connect(self, node: NodeId, addr: Addr) -> None:
        self.net.execute(self.node, [Connect(node, addr)])

    def disconnect(self, node: NodeId) -> None:
        self.net.execute(self.node, [Disconnect(node)])

    def probe(self, node: NodeId | None, addr: Addr, data: bytes) -> None:
        self.net.execute(self.node, [Probe(node, addr, data)])
