"""The gossip driver: several GossipDrivers over a FakeNet, on a FakeClock (no sockets, no real waiting).

Each driver's tick loop sleeps on the fake clock; ``clock.run(seconds)`` wakes them in
deadline order and lets the event loop carry their messages (the net delivers from the
loop, like the in-process bus), so a minute of cluster time takes milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from superline_zmq.gossip import Addr, Heartbeat, Leave, decode, encode
from superline_zmq.gossip_driver import GossipDriver, Link
from superline_zmq.ids import NodeId
from superline_zmq.membership import Liveness
from superline_zmq.presence import ConnDescriptor
from superline_zmq.testing import FakeClock, FakeNet
from superline_zmq.timing import ClusterTiming

TIMING = ClusterTiming(heartbeat_interval=1.0, ttl=5.0, forget_after=10.0)
A, B, C = NodeId("A"), NodeId("B"), NodeId("C")


def desc(cid: str, node: str, user: str) -> ConnDescriptor:
    return ConnDescriptor(id=cid, role="user", node_id=node, connected_at=0.0, user_id=user)


class Cluster:
    """Drivers on one FakeNet and one FakeClock."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.net = FakeNet(self.clock, auto_deliver=True)
        self.drivers: dict[NodeId, GossipDriver] = {}

    def add(
        self, name: str, *, link: Callable[[Link], Link] | None = None, seeds: tuple[str, ...] = ()
    ) -> GossipDriver:
        node = NodeId(name)
        holder: list[GossipDriver] = []
        fake = self.net.link(node, lambda data: holder[0].receive(data), FakeNet.addr_of(name))
        driver = GossipDriver(
            node,
            link(fake) if link is not None else fake,
            addr=FakeNet.addr_of(name),
            timing=TIMING,
            clock=self.clock,
            sleep=self.clock.sleep,
            seeds=[{"router": FakeNet.addr_of(s)["router"]} for s in seeds],
        )
        holder.append(driver)
        self.drivers[node] = driver
        driver.start()
        return driver

    async def join(self, new: str, seed: str) -> None:
        self.net.post(NodeId(new), NodeId(seed), self.drivers[NodeId(new)].hello())
        await self.clock.settle()

    def crash(self, name: str) -> None:
        """The node stops dead: no leave, not a word more either way."""
        self.net.paused.add(NodeId(name))

    async def close(self) -> None:
        for driver in self.drivers.values():
            await driver.close(leave=False)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    yield c
    await c.close()


async def three(cluster: Cluster) -> tuple[GossipDriver, GossipDriver, GossipDriver]:
    a, b, c = cluster.add("A"), cluster.add("B"), cluster.add("C")
    await cluster.join("B", "A")
    await cluster.join("C", "A")
    await cluster.clock.run(2 * TIMING.heartbeat_interval)
    for d in (a, b, c):
        assert {n for n, s in d.members().items() if s is Liveness.ALIVE} == {A, B, C} - {d.node}
        assert d.joined
    return a, b, c


async def test_drivers_join_through_a_seed_and_share_presence(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    b.presence.put(desc("b1", "B", "bob"))
    await cluster.clock.settle()
    for d in (a, b, c):
        assert await d.presence.is_online("bob")
        assert [n.node_id for n in await d.presence.topology()] == ["A", "B", "C"]
        assert d.alive(A) and d.alive(B) and d.alive(C)


async def test_the_tick_loop_sleeps_until_the_next_deadline(cluster: Cluster) -> None:
    a = cluster.add("A")
    await cluster.clock.settle()
    beats = cluster.net.messages_sent[A]  # alone: a beat reaches nobody, so count ticks instead
    assert a.gossip.next_deadline() == cluster.clock() + TIMING.heartbeat_interval  # ticked at once
    assert beats == 0 and a.statistics()["gossip_pulls"] == 0
    ticks: list[float] = []
    real_tick = a.gossip.tick

    def tick() -> list:  # type: ignore[type-arg]
        ticks.append(cluster.clock())
        return real_tick()

    a.gossip.tick = tick  # type: ignore[method-assign]
    start = cluster.clock()
    await cluster.clock.run(10 * TIMING.heartbeat_interval)
    assert ticks == [start + k * TIMING.heartbeat_interval for k in range(1, 11)]  # exactly on time
    assert cluster.clock.sleepers == 1  # and asleep again, until the next one


async def test_a_crashed_driver_is_dead_after_ttl_everywhere_at_once_then_forgotten(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    b.presence.put(desc("b1", "B", "bob"))
    await cluster.clock.settle()
    cluster.crash("B")
    await b.close(leave=False)  # its loop stops too; peers are not told
    last_beat = cluster.clock()  # B's last beat went out at this tick at the latest
    for d in (a, c):
        assert d.alive(B) and await d.presence.is_online("bob")
    # until ttl after its last beat, B is alive for routing and presence alike ...
    while cluster.clock() + 0.5 <= last_beat + TIMING.ttl:
        await cluster.clock.run(0.5)
        for d in (a, c):
            assert d.alive(B) and await d.presence.is_online("bob"), cluster.clock() - last_beat
    # ... and within one more beat it is dead for both, at the same moment
    await cluster.clock.run(TIMING.heartbeat_interval)
    for d in (a, c):
        assert not d.alive(B) and not await d.presence.is_online("bob")
        assert d.liveness(B) is Liveness.DEAD and d.members()[B] is Liveness.DEAD
        assert B in [n.node_id for n in await d.presence.topology()]  # shown dead, not forgotten
    # forgotten (disconnected, out of topology) after forget_after
    await cluster.clock.run(TIMING.forget_time - TIMING.ttl)
    for d in (a, c):
        assert B not in d.members()
        assert d.liveness(B) is Liveness.FORGOTTEN
        assert [n.node_id for n in await d.presence.topology()] == sorted({"A", "C"})
        assert d.statistics()["gossip_expired"] == 1
        assert B not in cluster.net.subs[d.node]  # the link was told to disconnect
    assert a.alive(C) and c.alive(A)


async def test_a_leave_on_close_is_seen_at_once(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    await b.close()  # leave=True
    await cluster.clock.settle()  # no time passes
    for d in (a, c):
        assert not d.alive(B) and d.liveness(B) is Liveness.LEFT
        assert d.statistics()["gossip_left"] == 1
    assert [m for _, _, m in cluster.net.delivered if isinstance(m, Leave)] == [Leave("B"), Leave("B")]


async def test_a_malformed_message_is_counted_logged_and_does_not_stop_the_driver(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, _ = await three(cluster)
    caplog.set_level(logging.WARNING, logger="superline_zmq.gossip")
    for data in (b"\xc1 not msgpack", encode(Heartbeat("B", 1, 2**63))[:-2], b""):
        assert a.receive(data) is False
    assert a.statistics()["bad_gossip"] == 3
    assert sum("dropped a gossip message" in r.getMessage() for r in caplog.records) == 3
    # still beating and listening: a delta from B arrives, and time keeps B alive
    b.presence.put(desc("b1", "B", "bob"))
    sent = cluster.net.messages_sent[A]
    await cluster.clock.run(3 * TIMING.ttl)
    assert await a.presence.is_online("bob") and a.alive(B)
    assert cluster.net.messages_sent[A] > sent
    assert a.running


async def test_malformed_messages_are_logged_rate_limited(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    a = cluster.add("A")
    caplog.set_level(logging.WARNING, logger="superline_zmq.gossip")
    for _ in range(100):
        a.receive(b"\xc1")
    assert a.statistics()["bad_gossip"] == 100
    assert len([r for r in caplog.records if "dropped a gossip message" in r.getMessage()]) == 5  # the burst


async def test_close_leaves_nothing_running(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    tasks = {a._task, b._task, c._task}
    assert all(t is not None and not t.done() for t in tasks)
    assert cluster.clock.sleepers == 3
    for d in (a, b, c):
        await d.close()
        await d.close()  # idempotent
        assert d.closed and not d.running
    assert all(t is not None and t.done() for t in tasks)
    assert cluster.clock.sleepers == 0
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in others if t.get_name().startswith("gossip tick")]
    # a closed driver says and hears nothing, and knows no one
    sent = sum(cluster.net.messages_sent.values())
    a.presence.put(desc("a1", "A", "ann"))
    assert a.receive(b"\xc1") is True and a.statistics()["bad_gossip"] == 0
    await cluster.clock.run(5 * TIMING.heartbeat_interval)
    assert sum(cluster.net.messages_sent.values()) == sent
    assert a.members() == {} and not a.alive(A) and not a.has_live_member()
    assert a.statistics()["members"] == 0


async def test_a_driver_closed_before_it_started_is_closed() -> None:
    clock = FakeClock()
    net = FakeNet(clock, auto_deliver=True)
    d = GossipDriver(A, net.link(A, lambda data: None), timing=TIMING, clock=clock, sleep=clock.sleep)
    await d.close()  # never started: no leave to send, nothing to stop
    assert d.closed and net.messages_sent[A] == 0
    assert await d.wait_joined() is False
    with pytest.raises(RuntimeError, match="already started"):
        d.start()


async def test_a_raising_link_is_counted_and_does_not_stop_the_driver(cluster: Cluster) -> None:
    class Flaky:
        """Sends fail (raise) while ``broken``."""

        def __init__(self, inner: Link) -> None:
            self.inner = inner
            self.broken = True

        def broadcast(self, data: bytes) -> None:
            if self.broken:
                raise OSError("link down")
            self.inner.broadcast(data)

        def send(self, node: NodeId, data: bytes) -> bool:
            return self.inner.send(node, data)

        def connect(self, node: NodeId, addr: Addr) -> None:
            self.inner.connect(node, addr)

        def disconnect(self, node: NodeId) -> None:
            self.inner.disconnect(node)

    flaky: list[Flaky] = []

    def wrap(link: Link) -> Link:
        flaky.append(Flaky(link))
        return flaky[0]

    a = cluster.add("A")
    b = cluster.add("B", link=wrap)
    await cluster.join("B", "A")
    await cluster.clock.run(3 * TIMING.heartbeat_interval)
    assert b.statistics()["link_errors"] >= 3 and b.running
    flaky[0].broken = False
    await cluster.clock.run(2 * TIMING.heartbeat_interval)
    assert a.alive(B) and b.alive(A)


async def test_a_failing_tick_is_counted_and_the_loop_goes_on(cluster: Cluster) -> None:
    a = cluster.add("A")
    await cluster.clock.settle()
    real_tick = a.gossip.tick
    calls = 0

    def tick() -> list:  # type: ignore[type-arg]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return real_tick()

    a.gossip.tick = tick  # type: ignore[method-assign]
    await cluster.clock.run(4 * TIMING.heartbeat_interval)
    assert a.statistics()["tick_errors"] == 1 and calls >= 3 and a.running


async def test_wait_joined_returns_once_a_member_is_alive(cluster: Cluster) -> None:
    a = cluster.add("A")
    b = cluster.add("B")
    waiting = asyncio.ensure_future(b.wait_joined())
    await cluster.clock.settle()
    assert not waiting.done() and not b.joined
    await cluster.join("B", "A")
    assert await asyncio.wait_for(waiting, 5) is True
    assert b.joined and b.has_live_member() and a.alive(B)


async def test_a_driver_started_before_its_seed_joins_once_the_seed_is_up(cluster: Cluster) -> None:
    b = cluster.add("B", seeds=("A",))
    await cluster.clock.run(3 * TIMING.heartbeat_interval)
    assert not b.joined and b.statistics()["gossip_probes"] >= 3  # alone: the seed, every beat
    a = cluster.add("A")
    await cluster.clock.run(TIMING.heartbeat_interval)  # B's next tick probes A, which answers
    assert b.joined and b.alive(A) and a.alive(B)
    probes = b.statistics()["gossip_probes"]
    await cluster.clock.run(10 * TIMING.heartbeat_interval)
    assert b.statistics()["gossip_probes"] == probes  # the seed is a live member: not probed


def test_statistics_merge_the_machines_counters() -> None:
    clock = FakeClock()
    net = FakeNet(clock)
    d = GossipDriver(A, net.link(A, lambda data: None), timing=TIMING, clock=clock, sleep=clock.sleep)
    stats = d.statistics()
    assert {"bad_gossip", "link_errors", "tick_errors", "members", "gossip_pulls", "gossip_expired"} <= set(stats)
    assert all(isinstance(v, int) for v in stats.values())
    assert decode(d.hello()).node == "A"


async def test_changes_reach_every_watcher_in_order_and_a_raising_one_is_counted(cluster: Cluster) -> None:
    a, b, _ = await three(cluster)
    got: list[tuple[str, bool]] = []

    def bad(change: object) -> None:
        raise RuntimeError("boom")

    a.presence.watch(bad)
    off = a.presence.watch(lambda ch: got.extend((u.user_id, u.online) for u in ch.diff.users))
    b.presence.put(desc("b1", "B", "bob"))
    await cluster.clock.settle()
    b.presence.remove("b1")
    await cluster.clock.settle()
    assert got == [("bob", True), ("bob", False)]
    assert a.statistics()["watcher_errors"] == 2
    off()
    b.presence.put(desc("b2", "B", "bea"))
    await cluster.clock.settle()
    assert got == [("bob", True), ("bob", False)]


async def test_a_crash_is_a_change_at_the_tick_after_the_ttl(cluster: Cluster) -> None:
    a, _, c = await three(cluster)
    c.presence.put(desc("c1", "C", "cat"))
    await cluster.clock.settle()
    offline: list[float] = []
    a.presence.watch(lambda ch: offline.extend(cluster.clock() for u in ch.diff.users if not u.online))
    cluster.crash("C")
    crashed = cluster.clock()
    await cluster.clock.run(TIMING.ttl + 2 * TIMING.heartbeat_interval)
    assert len(offline) == 1  # once, by the tick: nobody read presence meanwhile
    assert TIMING.ttl < offline[0] - crashed <= TIMING.ttl + TIMING.heartbeat_interval


async def test_a_watcher_that_writes_presence_sees_its_change_after_those_already_recorded(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    b.presence.put(desc("b1", "B", "bob"))
    c.presence.put(desc("c1", "C", "cat"))
    await cluster.clock.settle()
    seen: list[tuple[str, bool]] = []

    def watcher(change: object) -> None:
        for up in change.diff.users:  # type: ignore[attr-defined]
            seen.append((up.user_id, up.online))
            if not up.online and len(seen) == 1:
                a.presence.put(desc("a1", "A", "ann"))  # a write from inside a watcher

    a.presence.watch(watcher)
    cluster.crash("B")
    cluster.crash("C")  # both die at the same tick: two changes recorded in one step
    await cluster.clock.run(TIMING.ttl + 2 * TIMING.heartbeat_interval)
    assert sorted(seen[:2]) == [("bob", False), ("cat", False)] and seen[2:] == [("ann", True)]
