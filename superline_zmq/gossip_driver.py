"""The one asyncio driver of the gossip machine, shared by the in-process and ZeroMQ adapters.

The decisions live in :class:`~superline_zmq.gossip.Gossip` (pure). An adapter keeps
only its I/O: it implements the four-call :class:`Link` (broadcast, send, connect,
disconnect) and hands every gossip message it receives to :meth:`GossipDriver.receive`.
The driver does the rest, the same way for every adapter:

- it owns the machine and its :class:`~superline_zmq.gossip.GossipPresence` (the
  adapter's ``presence``), and carries out the actions they return on the link;
- it owns one background task, the tick loop, which sleeps on the injected clock exactly
  until :meth:`Gossip.next_deadline` and ticks (beats, forgets, retries pulls, probes
  seeds and forgotten peers);
- malformed messages are counted (``bad_gossip``) and logged, rate-limited, and never
  raise; a link call that raises is logged and counted (``link_errors``) and never stops
  the driver;
- after every call into the machine it hands the presence changes the machine recorded
  to the presence's watchers (:meth:`GossipPresence.watch
  <superline_zmq.gossip.GossipPresence.watch>`), in order; a watcher that raises is
  logged and counted (``watcher_errors``) and never stops the driver or the others. From
  :meth:`start` until the adapter calls :meth:`end_join`, changes are marked initial;
- liveness is read one way, through :meth:`GossipDriver.alive` (routing) and the
  presence replica (queries), both answered by the machine's membership — so a crashed
  node is dead for routing and for presence at the same moment, ``ttl`` after its last
  beat, whatever the transport;
- :meth:`GossipDriver.close` optionally broadcasts the leave, then cancels and awaits the
  tick task: nothing keeps running.

Time is injected (``clock`` and ``sleep``), so a test drives several drivers over a
:class:`~superline_zmq.testing.FakeNet` with a :class:`~superline_zmq.testing.FakeClock`
and no real waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from random import Random
from typing import Protocol

from superline_zmq.gossip import (
    Action,
    Addr,
    Broadcast,
    Connect,
    Disconnect,
    Gossip,
    GossipError,
    GossipPresence,
    Probe,
    Send,
)
from superline_zmq.ids import NodeId
from superline_zmq.logs import RateLimitedLog
from superline_zmq.membership import ALIVE, Liveness
from superline_zmq.timing import ClusterTiming

log = logging.getLogger("superline_zmq.gossip")

#: Sleeps the given seconds on the driver's clock (``asyncio.sleep``, or a fake clock's).
Sleep = Callable[[float], Awaitable[None]]


class Link(Protocol):
    """How the driver reaches other nodes; an adapter implements it over its transport.

    None of these may block. A message that cannot go out is the link's to drop and
    count; the driver never retries a send (the gossip repairs losses itself).
    """

    def broadcast(self, data: bytes) -> None:
        """Send ``data`` to every member (those this node connected to)."""
        ...

    def send(self, node: NodeId, data: bytes) -> bool:
        """Send ``data`` to ``node``; False if it could not go out (no route, queue full)."""
        ...

    def connect(self, node: NodeId, addr: Addr) -> None:
        """Start talking to a new member at ``addr``."""
        ...

    def disconnect(self, node: NodeId) -> None:
        """Stop talking to ``node`` (it left or was forgotten)."""
        ...

    def probe(self, node: NodeId | None, addr: Addr, data: bytes) -> None:
        """Send ``data`` (a hello) to whatever listens at ``addr``, connected or not (a seed,
        a forgotten peer); ``node`` is who was last there, if known. Lost if nobody is."""
        ...


class GossipDriver:
    """Runs one node's :class:`~superline_zmq.gossip.Gossip` on asyncio over a :class:`Link`.

    ``timing`` gives the beat, ``ttl`` and ``forget_after`` (default
    :meth:`ClusterTiming.lan`) and the re-probing backoff. ``seeds``: addresses to join
    through, probed until a member answers there and then, more rarely, forever.
    ``clock``/``sleep``: the time source and a sleep on it (default the monotonic clock and
    ``asyncio.sleep``); ``rng``: the randomness of the probe jitter. Call :meth:`start`
    from a running loop, and :meth:`close` when done.
    """

    def __init__(
        self,
        node: NodeId,
        link: Link,
        *,
        addr: Addr | None = None,
        timing: ClusterTiming | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Random | None = None,
        seeds: Iterable[Addr] = (),
        logger: logging.Logger = log,
    ) -> None:
        timing = timing if timing is not None else ClusterTiming.lan()
        self.node = node
        self.timing = timing
        self.gossip = Gossip(
            node,
            addr,
            clock=clock,
            interval=timing.heartbeat_interval,
            ttl=timing.ttl,
            forget_after=timing.forget_after,
            rng=rng,
            seeds=seeds,
            reprobe_initial=timing.reprobe_initial,
            reprobe_max=timing.reprobe_max,
            beat_budget=timing.beat_budget,
        )
        #: The adapter seam's presence over this node's gossip.
        self.presence = GossipPresence(self.gossip, self.execute)
        self._link = link
        self._clock = clock
        self._sleep = sleep
        self._rlog = RateLimitedLog(logger, clock=clock)
        self._task: asyncio.Task[None] | None = None
        self._joined = asyncio.Event()
        self._closed = False
        self._stats = {"bad_gossip": 0, "link_errors": 0, "tick_errors": 0, "watcher_errors": 0}
        self._emitting = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the tick loop (the first tick, and beat, happens at once)."""
        if self._task is not None or self._closed:
            raise RuntimeError("this gossip driver was already started")
        self.gossip.begin_join()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"gossip tick {self.node}")

    async def close(self, *, leave: bool = True) -> None:
        """Stop: broadcast the leave first if ``leave`` (peers drop this node at once; without
        it they wait ``ttl``, as for a crash), then cancel and await the tick loop. Idempotent."""
        if self._closed:
            return
        if leave and self._task is not None:
            self.execute(self.gossip.leave())
        self._closed = True
        self._joined.set()  # wake whoever waits to join: it will not happen now
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def end_join(self) -> None:
        """The adapter has joined (its ``start`` returns, joined or alone): what this node learns
        from now on is a change, not initial state (see :meth:`Gossip.end_join`)."""
        self.gossip.end_join()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> bool:
        """Whether the tick loop is running (started and not closed)."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        gossip = self.gossip
        while True:
            delay = gossip.next_deadline() - self._clock()
            if delay > 0:
                await self._sleep(delay)
                continue  # woken early or on time: look at the deadline again
            try:
                over = gossip.stats["beats_over_budget"]
                self.execute(gossip.tick())
                if gossip.stats["beats_over_budget"] > over:
                    self._rlog.log(
                        logging.WARNING,
                        "beat_budget",
                        "node %s: %d members make beats exceed beat_budget (%s B/s) even at the longest"
                        " beat interval; the mesh is past its size (see docs/cluster-sizing.md)",
                        self.node,
                        len(gossip.view) - 1,
                        gossip.beat_budget,
                    )
            except Exception as exc:  # a bug: say so, keep beating (peers would see a crash)
                self._stats["tick_errors"] += 1
                self._rlog.log(logging.ERROR, "tick", "gossip tick failed on node %s: %r", self.node, exc)
                await self._sleep(self.timing.heartbeat_interval)  # never spin on a failing tick

    # ------------------------------------------------------------------ traffic
    def hello(self) -> bytes:
        """The hello an adapter sends its seeds (or every node on a bus) to join."""
        return self.gossip.hello()

    def receive(self, data: bytes) -> bool:
        """Handle one gossip message from the link; False if it was malformed (counted, logged).

        Never raises: a hostile or broken peer cannot stop this node.
        """
        if self._closed:
            return True  # a closed (or crashed) node hears nothing
        try:
            actions = self.gossip.receive(data)
        except GossipError as exc:
            self._bad(exc)
            return False
        except Exception as exc:  # anything a hostile message provokes beyond the codec
            self._bad(exc)
            return False
        self.execute(actions)
        if not self._joined.is_set() and self.has_live_member():
            self._joined.set()
        return True

    def execute(self, actions: list[Action]) -> None:
        """Carry out the machine's actions on the link, then hand its recorded presence changes
        to the watchers; a closed driver says nothing."""
        if self._closed:
            self.gossip.take_changes()
            return
        link = self._link
        for action in actions:
            try:
                match action:
                    case Broadcast():
                        link.broadcast(action.data)
                    case Send():
                        link.send(action.node, action.data)
                    case Connect():
                        link.connect(action.node, action.addr)
                    case Disconnect():
                        link.disconnect(action.node)
                    case Probe():
                        link.probe(action.node, action.addr, action.data)
            except Exception as exc:
                self._stats["link_errors"] += 1
                self._rlog.log(logging.ERROR, "link", "failed to carry out %r: %r", action, exc)
        if self.gossip.changes:
            self._emit()

    def _emit(self) -> None:
        if self._emitting:
            return  # a watcher wrote presence: its change goes out after those already taken
        self._emitting = True
        try:
            while self.gossip.changes:
                for change in self.gossip.take_changes():
                    for watcher in self.presence.watchers:
                        try:
                            watcher(change)
                        except Exception as exc:
                            self._stats["watcher_errors"] += 1
                            self._rlog.log(logging.ERROR, "watcher", "a presence watcher raised: %r", exc)
        finally:
            self._emitting = False

    def heard_from(self, node: NodeId) -> None:
        """``node`` reached us outside gossip: it is alive (:meth:`Gossip.heard_from`)."""
        if not self._closed:
            self.execute(self.gossip.heard_from(node))

    def evict(self, node: NodeId) -> None:
        """Drop ``node`` at once, as if it had left (:meth:`Gossip.evict`): its key was revoked."""
        self.execute(self.gossip.evict(node))

    def _bad(self, exc: Exception) -> None:
        self._stats["bad_gossip"] += 1
        self._rlog.log(logging.WARNING, "bad_gossip", "dropped a gossip message: %s", exc)

    # ------------------------------------------------------------------ liveness
    def alive(self, node: NodeId) -> bool:
        """Whether ``node`` is a live member (this node is, until closed)."""
        return not self._closed and self.gossip.alive(node)

    def liveness(self, node: NodeId) -> Liveness | None:
        """What this node believes about ``node`` (None: unknown, or closed)."""
        return None if self._closed else self.gossip.liveness(node)

    def members(self) -> dict[NodeId, Liveness]:
        """The members this node talks to (itself excluded): alive, dead, or known by hearsay."""
        if self._closed:
            return {}
        return {m.node: m.state for m in self.gossip.membership.members(self._clock())}

    def has_live_member(self) -> bool:
        """Whether any other node is a live member."""
        if self._closed:
            return False
        return any(m.state is ALIVE for m in self.gossip.membership.members(self._clock()))

    @property
    def joined(self) -> bool:
        """Whether this node has heard a live member since it started."""
        return self._joined.is_set() and not self._closed

    async def wait_joined(self) -> bool:
        """Wait until a live member is heard (or the driver closes); True if joined."""
        await self._joined.wait()
        return not self._closed

    def statistics(self) -> dict[str, int]:
        """``bad_gossip``, ``link_errors``, ``tick_errors``, ``watcher_errors``; the gauges ``members``
        (known, 0 once closed), ``members_alive`` (of those, alive) and ``presence_connections``
        (connections on live nodes); and the machine's own counters prefixed ``gossip_``."""
        stats = dict(self._stats)
        members = self.members()
        stats["members"] = len(members)
        stats["members_alive"] = sum(1 for state in members.values() if state is ALIVE)
        stats["presence_connections"] = 0 if self._closed else self.gossip.replica.count()
        stats.update({f"gossip_{k}": v for k, v in self.gossip.stats.items()})
        return stats
