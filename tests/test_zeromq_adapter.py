"""The ZeroMQ adapter: the Adapter conformance suite, then what ZeroMQ adds (127.0.0.1 only).

Nothing here sleeps for correctness: every wait is :func:`helpers.eventually` or a
receive with a deadline. Raw ``zmq`` sockets play misbehaving peers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import zmq
import zmq.asyncio
from helpers import eventually

from superline_zmq import gossip as g
from superline_zmq.adapter import Adapter
from superline_zmq.adapters.zeromq import GOSSIP_TOPIC, TOKEN_PREFIX, ZeroMQAdapter, zeromq_adapter
from superline_zmq.ids import NodeId, make_conn_id, new_node_id
from superline_zmq.presence import ConnDescriptor
from superline_zmq.testing.conformance import AdapterConformance, Node
from superline_zmq.testing.faults import FaultProxy
from superline_zmq.timing import ClusterTiming

#: Fast gossip for these tests (a crash is noticed after ttl).
FAST: dict[str, Any] = {"heartbeat_interval": 0.05, "ttl": 0.5}
LOCAL = "tcp://127.0.0.1:0"


class TestZeroMQAdapter(AdapterConformance):
    """The Protocol's semantics over real sockets: every node seeded with the first one."""

    def cluster_factory(self) -> Callable[[], Adapter]:
        first: list[ZeroMQAdapter] = []

        def make() -> Adapter:
            # the constructor binds synchronously; the harness calls this inside its loop
            seeds = [first[0].endpoints["router"]] if first else []
            adapter = ZeroMQAdapter(LOCAL, seeds, heartbeat_interval=0.1, ttl=2.0)
            first.append(adapter)
            return adapter

        return make


class Peer(Node):
    """A started ZeroMQ adapter and what its callbacks received."""

    adapter: ZeroMQAdapter

    def __init__(self, adapter: ZeroMQAdapter, node: NodeId) -> None:
        super().__init__(adapter, node)

    def stat(self, key: str) -> int:
        return self.adapter.statistics()[key]

    @property
    def router(self) -> str:
        return self.adapter.endpoints["router"]


MakePeer = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def make_peer() -> AsyncIterator[MakePeer]:
    """``await make_peer(*seeds, **options)``: a started adapter (FAST gossip by default)."""
    adapters: list[ZeroMQAdapter] = []

    async def make(*seeds: str, bind: str = LOCAL, start: bool = True, **options: Any) -> Peer:
        opts = {**FAST, **options}
        adapter = await zeromq_adapter(bind, list(seeds), **opts)
        adapters.append(adapter)
        peer = Peer(adapter, new_node_id())
        if start:
            await adapter.start(peer.id, peer.on_channel, peer.on_direct)
        return peer

    yield make
    for adapter in adapters:
        await asyncio.wait_for(adapter.close(), 10)


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[int], zmq.asyncio.Socket]]:
    """Raw sockets playing peers (closed after the test)."""
    ctx = zmq.asyncio.Context()
    socks: list[zmq.asyncio.Socket] = []

    def make(kind: int) -> zmq.asyncio.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        socks.append(sock)
        return sock

    yield make
    for sock in socks:
        sock.close(linger=0)
    ctx.term()


def free_port() -> int:
    """A free port below the ephemeral range, so no outgoing connection (nor a TCP
    self-connect while a node retries it) takes it before the test binds it."""
    for _ in range(100):
        port = random.randrange(20_000, 32_000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


async def recv(sock: zmq.asyncio.Socket, timeout: float = 5.0) -> list[bytes]:
    return await asyncio.wait_for(sock.recv_multipart(), timeout)


class FakeMember:
    """A raw-socket "member": an XPUB and a ROUTER, introduced to a node by a hello."""

    def __init__(self, make: Callable[[int], zmq.asyncio.Socket], *, answer_markers: bool = True) -> None:
        self.id = NodeId("fa" + new_node_id()[2:])
        self.pub = make(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.pub.bind(LOCAL)
        self.router = make(zmq.ROUTER)
        self.router.bind(LOCAL)
        self.dealer = make(zmq.DEALER)
        self.answer_markers = answer_markers
        self.subscriptions: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def addr(self) -> dict[str, str]:
        return {
            "pub": self.pub.getsockopt_string(zmq.LAST_ENDPOINT),
            "router": self.router.getsockopt_string(zmq.LAST_ENDPOINT),
        }

    async def join(self, node: Peer) -> None:
        """Say hello to ``node`` and wait until its subscriber is connected to our XPUB."""
        self.dealer.connect(node.router)
        hello = g.encode(g.Hello(self.id, self.addr))
        await self.dealer.send_multipart([b"g", self.id.encode(), b"", hello])
        self._task = asyncio.get_running_loop().create_task(self._serve())
        await eventually(lambda: b"\x01" + GOSSIP_TOPIC in self.subscriptions)
        await eventually(lambda: node.adapter.is_alive(self.id))

    async def _serve(self) -> None:
        while True:
            [msg] = await self.pub.recv_multipart()
            self.subscriptions.append(msg)
            if self.answer_markers and msg[:2] == b"\x01" + TOKEN_PREFIX:
                await self.pub.send_multipart([msg[1:], self.id.encode()])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# ---------------------------------------------------------------------- identity
async def test_name_endpoints_and_lifecycle(make_peer: MakePeer) -> None:
    pub_port = free_port()
    a = await make_peer(pub_bind=f"tcp://127.0.0.1:{pub_port}", start=False)
    ad = a.adapter
    assert ad.name == "zeromq"
    eps = ad.endpoints
    assert set(eps) == {"pub", "router"}
    assert eps["pub"] == f"tcp://127.0.0.1:{pub_port}"
    assert eps["router"].startswith("tcp://127.0.0.1:") and not eps["router"].endswith(":0")
    assert ad.node is None and ad.presence is None and ad.members() == {}
    assert not ad.is_alive(a.id)
    assert ad.send(a.id, b"x") is False  # not started: unknown, counted
    assert a.stat("direct_dropped_unknown") == 1
    with pytest.raises(RuntimeError, match="not started"):
        await ad.subscribe("r:x")
    await ad.start(a.id, a.on_channel, a.on_direct)
    assert ad.node == a.id and isinstance(ad.presence, g.GossipPresence)
    assert ad.is_alive(a.id) and ad.members() == {}
    with pytest.raises(RuntimeError, match="already started"):
        await ad.start(new_node_id(), a.on_channel, a.on_direct)
    stats = ad.statistics()
    for key in (
        "published",
        "publish_dropped_hwm",
        "direct_sent",
        "direct_dropped_unknown",
        "direct_dropped_hwm",
        "bad_messages",
        "channels",
        "members",
        "gossip_pulls",
    ):
        assert key in stats, key
    await ad.close()
    await ad.close()  # idempotent
    assert not ad.is_alive(a.id)
    ad.publish("r:x", b"after close")  # a no-op, never raises
    assert ad.send(a.id, b"x") is False


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="heartbeat_interval"):
        await zeromq_adapter(LOCAL, heartbeat_interval=1.0, ttl=1.0)
    with pytest.raises(ValueError, match="wildcard"):
        await zeromq_adapter("tcp://*:0")
    with pytest.raises(ValueError, match="pub_bind"):
        await zeromq_adapter("inproc://x")
    # a never-started adapter closes cleanly
    ad = await zeromq_adapter(LOCAL)
    await ad.close()


# ---------------------------------------------------------------------- membership
async def test_discovery_through_a_single_seed(make_peer: MakePeer) -> None:
    a = await make_peer()
    b = await make_peer(a.router)
    c = await make_peer(a.router)  # knows only a
    await eventually(lambda: c.adapter.members() == {a.id: True, b.id: True})
    await eventually(lambda: b.adapter.members() == {a.id: True, c.id: True})
    assert a.adapter.members() == {b.id: True, c.id: True}
    # c reaches b directly, and on a channel (b must know c to receive from it)
    assert c.adapter.send(b.id, b"hi b") is True
    await eventually(lambda: b.direct == [(c.id, b"hi b")])
    await b.adapter.subscribe("r:x")
    c.adapter.publish("r:x", b"from c")
    await eventually(lambda: b.got("r:x") == [b"from c"])
    assert b.stat("members") == 2


async def test_a_seed_started_last_is_retried(make_peer: MakePeer) -> None:
    port = free_port()
    seed = f"tcp://127.0.0.1:{port}"
    c = await make_peer(seed, start=False, ttl=5.0)
    starting = asyncio.get_running_loop().create_task(c.adapter.start(c.id, c.on_channel, c.on_direct))
    await eventually(lambda: c.stat("hellos") >= 3)  # said hello, again and again, to nobody
    assert not starting.done() and c.adapter.members() == {}
    a = await make_peer(bind=seed)
    await asyncio.wait_for(starting, 5)  # start() returns once a seed answered
    assert c.adapter.is_alive(a.id)
    await eventually(lambda: a.adapter.is_alive(c.id))


async def test_start_gives_up_waiting_for_absent_seeds_but_keeps_trying(make_peer: MakePeer) -> None:
    port = free_port()
    began = time.monotonic()
    c = await make_peer(f"tcp://127.0.0.1:{port}", ttl=0.3)  # waits at most ttl
    assert time.monotonic() - began < 3
    assert c.adapter.members() == {}
    a = await make_peer(bind=f"tcp://127.0.0.1:{port}")
    await eventually(lambda: c.adapter.is_alive(a.id) and a.adapter.is_alive(c.id))


async def test_graceful_close_is_seen_at_once(make_peer: MakePeer) -> None:
    # a long ttl: only the leave can explain b dropping out quickly
    a = await make_peer(heartbeat_interval=0.05, ttl=30.0)
    b = await make_peer(a.router, heartbeat_interval=0.05, ttl=30.0)
    assert b.adapter.presence is not None and a.adapter.presence is not None
    b.adapter.presence.put(desc(b.id, 1, "bob"))
    await eventually(lambda: a.adapter.presence.is_online("bob"))  # type: ignore[union-attr]
    await b.adapter.close()
    await eventually(lambda: not a.adapter.is_alive(b.id), 2.0)
    assert b.id not in a.adapter.members()
    assert not await a.adapter.presence.is_online("bob")
    assert [n.node_id for n in await a.adapter.presence.topology()] == [a.id]
    assert a.adapter.send(b.id, b"gone") is False


async def test_presence_put_on_one_node_is_seen_on_the_others(make_peer: MakePeer) -> None:
    a = await make_peer()
    b = await make_peer(a.router)
    c = await make_peer(a.router)
    pa, pb, pc = (p.adapter.presence for p in (a, b, c))
    assert pa is not None and pb is not None and pc is not None
    d = desc(a.id, 1, "alice", rooms=("lobby",))
    pa.put(d)

    async def everywhere(user: str) -> bool:
        return all([await p.is_online(user) for p in (pa, pb, pc)])

    await eventually(lambda: everywhere("alice"))
    assert await pb.by_user("alice") == [d] == await pc.room("lobby")
    assert await pc.count() == 1
    pa.remove(d.id)

    async def nowhere(user: str) -> bool:
        return not any([await p.is_online(user) for p in (pa, pb, pc)])

    await eventually(lambda: nowhere("alice"))


async def test_a_crashed_node_goes_dead_after_ttl(make_peer: MakePeer) -> None:
    ttl = 0.3
    a = await make_peer(heartbeat_interval=0.05, ttl=ttl)
    b = await make_peer(a.router, heartbeat_interval=0.05, ttl=ttl)
    assert b.adapter.presence is not None and a.adapter.presence is not None
    b.adapter.presence.put(desc(b.id, 1, "bob"))
    await eventually(lambda: a.adapter.presence.is_online("bob"))  # type: ignore[union-attr]
    crashed = time.monotonic()
    await b.adapter.simulate_crash()  # no leave
    await eventually(lambda: not a.adapter.is_alive(b.id), 5.0)
    # last heard at most one beat before the crash, so never sooner than ttl - interval
    assert time.monotonic() - crashed >= ttl - 0.05 - 0.02
    assert not await a.adapter.presence.is_online("bob")
    assert a.adapter.send(b.id, b"x") is False
    assert a.adapter.members().get(b.id) is False  # dead, not yet forgotten ...
    await eventually(lambda: b.id not in a.adapter.members(), 5.0)  # ... then forgotten


# ---------------------------------------------------------------------- channels
async def test_channel_names_are_not_prefix_matched(make_peer: MakePeer) -> None:
    a = await make_peer()
    b = await make_peer(a.router)
    await b.adapter.subscribe("r:a")
    a.adapter.publish("r:ab", b"not for b")
    a.adapter.publish("r:", b"not for b either")
    a.adapter.publish("r:a", b"sentinel")  # same publisher, so after the two above
    await eventually(lambda: b.got("r:a") == [b"sentinel"])
    assert b.channel == [("r:a", b"sentinel")]
    assert b.adapter.channels == {"r:a"} and b.stat("channels") == 1


async def test_a_new_nodes_first_publications_reach_channels_held_before_it_joined(make_peer: MakePeer) -> None:
    a = await make_peer()
    await a.adapter.subscribe("r:x")  # alone: nothing to confirm
    b = await make_peer(a.router)
    await b.adapter.subscribe("r:x")
    c = await make_peer(a.router)  # knows b only by hearsay when welcomed
    c.adapter.publish("r:x", b"first")  # no wait between start() returning and publishing
    await eventually(
        lambda: a.got("r:x") == [b"first"] == b.got("r:x"),
        message=lambda: f"a got {a.got('r:x')}, b got {b.got('r:x')}; c join_unconfirmed={c.stat('join_unconfirmed')}",
    )
    assert c.stat("join_unconfirmed") == 0


async def test_subscribe_gives_up_on_a_member_that_never_confirms(make_peer: MakePeer, raw: Any) -> None:
    a = await make_peer()
    fake = FakeMember(raw, answer_markers=False)
    await fake.join(a)
    a.adapter.subscribe_timeout = 0.3
    began = time.monotonic()
    await a.adapter.subscribe("r:x")
    assert 0.25 <= time.monotonic() - began < 3
    assert a.stat("subscribe_unconfirmed") == 1
    assert b"\x01r:x\0" in fake.subscriptions  # the subscription itself did go out
    await fake.stop()


async def test_a_failing_callback_does_not_stop_delivery(make_peer: MakePeer) -> None:
    a = await make_peer()
    got: list[bytes] = []

    def on_channel(channel: str, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("handler bug")
        got.append(data)

    b = await make_peer(a.router, start=False)
    await b.adapter.start(b.id, on_channel, b.on_direct)
    await b.adapter.subscribe("r:x")
    a.adapter.publish("r:x", b"boom")
    a.adapter.publish("r:x", b"fine")
    await eventually(lambda: got == [b"fine"])
    assert b.stat("handler_errors") == 1


# ---------------------------------------------------------------------- robustness
async def test_malformed_publications_are_counted_and_dropped(make_peer: MakePeer, raw: Any) -> None:
    a = await make_peer()
    fake = FakeMember(raw)
    await fake.join(a)
    await a.adapter.subscribe("r:x")  # the fake answers the marker
    assert a.stat("subscribe_unconfirmed") == 0
    before = a.stat("bad_messages")
    bad_gossip = a.stat("bad_gossip")
    for frames in (
        [GOSSIP_TOPIC],  # one frame
        [GOSSIP_TOPIC, b"a", b"b"],  # three frames
        [GOSSIP_TOPIC, b"\xc1 not msgpack"],  # undecodable gossip
        [GOSSIP_TOPIC, g.encode(g.Pull("x"))[:-1]],  # truncated gossip
        [GOSSIP_TOPIC + b"zz", b"x"],  # matches the gossip prefix, is nothing
        [b"r:x\0", b"a", b"b"],  # a held channel, three frames
    ):
        await fake.pub.send_multipart(frames)
    await fake.pub.send_multipart([b"r:x\0", b"good"])  # same connection: after the bad ones
    await eventually(lambda: a.got("r:x") == [b"good"])
    assert a.stat("bad_messages") == before + 6
    assert a.stat("bad_gossip") == bad_gossip + 2
    assert a.adapter.is_alive(fake.id)
    # the node keeps working with real peers too
    b = await make_peer(a.router)
    await b.adapter.subscribe("r:y")
    a.adapter.publish("r:y", b"still fine")
    await eventually(lambda: b.got("r:y") == [b"still fine"])
    await fake.stop()


async def test_malformed_direct_messages_are_counted_and_dropped(make_peer: MakePeer, raw: Any) -> None:
    a = await make_peer()
    dealer = raw(zmq.DEALER)
    dealer.connect(a.router)
    node = a.id.encode()
    before = a.stat("bad_messages")
    for frames in (
        [b"d"],  # wrong frame count
        [b"d", b"someone", node, b"x", b"extra"],  # wrong frame count
        [b"q", b"someone", node, b"x"],  # unknown kind
        [b"g", b"someone", b"", b"\xc1 not msgpack"],  # undecodable gossip
        [b"d", b"", node, b"x"],  # no sender
        [b"d", b"\xff\xfe", node, b"x"],  # undecodable sender
    ):
        await dealer.send_multipart(frames)
    await dealer.send_multipart([b"d", b"someone", b"0123456789abcdef", b"not for a"])  # misrouted
    await dealer.send_multipart([b"s", b"someone", node, b"not a token"])  # malformed sync request
    # a member with an address nobody can connect to: admitted by gossip, but no route
    nowhere = NodeId(new_node_id())
    hello = g.encode(g.Hello(nowhere, {"pub": "junk", "router": "junk"}))
    await dealer.send_multipart([b"g", nowhere.encode(), b"", hello])
    await dealer.send_multipart([b"d", b"someone", node, b"fine"])
    await eventually(lambda: a.direct == [(NodeId("someone"), b"fine")])
    assert a.stat("bad_messages") == before + 8
    assert a.stat("direct_misrouted") == 1
    assert a.adapter.is_alive(nowhere) and a.adapter.send(nowhere, b"x") is False
    # the node keeps working with real peers
    b = await make_peer(a.router)
    await eventually(lambda: b.adapter.is_alive(a.id))
    assert b.adapter.send(a.id, b"real") is True
    await eventually(lambda: (b.id, b"real") in a.direct)


async def test_send_to_an_unknown_or_departed_node_returns_false_and_counts(make_peer: MakePeer) -> None:
    a = await make_peer()
    b = await make_peer(a.router)
    await eventually(lambda: a.adapter.is_alive(b.id))
    assert a.adapter.send(new_node_id(), b"x") is False
    assert a.stat("direct_dropped_unknown") == 1 == a.stat("dropped_unknown_node")
    assert a.adapter.send(a.id, b"to myself") is True  # delivered from the loop
    assert a.direct == []
    await eventually(lambda: a.direct == [(a.id, b"to myself")])
    await b.adapter.close()
    await eventually(lambda: not a.adapter.is_alive(b.id))
    assert a.adapter.send(b.id, b"x") is False
    assert a.stat("direct_dropped_unknown") == 2


async def test_full_queues_drop_and_count_without_blocking(make_peer: MakePeer, raw: Any) -> None:
    a = await make_peer(sndhwm=1, rcvhwm=1)
    # a subscriber that never reads: a's XPUB queue to it fills up
    sub = raw(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.RCVBUF, 4096)
    sub.setsockopt(zmq.SUBSCRIBE, b"r:slow\0")
    sub.connect(a.adapter.endpoints["pub"])
    fake = FakeMember(raw)
    fake.router.setsockopt(zmq.RCVHWM, 1)  # a member whose ROUTER is never read either
    fake.router.setsockopt(zmq.RCVBUF, 4096)
    await fake.join(a)
    payload = b"x" * 256 * 1024

    async def fill(step: Callable[[], None], counter: str) -> None:
        for i in range(2000):
            step()  # never raises, never blocks
            if a.stat(counter):
                return
            if i % 10 == 9:
                await asyncio.sleep(0.001)  # let ZeroMQ's I/O thread move what it can
        raise AssertionError(f"{counter} never counted")

    await fill(lambda: a.adapter.publish("r:slow", payload), "publish_dropped_hwm")
    results: list[bool] = []
    await fill(lambda: results.append(a.adapter.send(fake.id, payload)), "direct_dropped_hwm")
    assert results[-1] is False and all(results[:-1])
    # a slow subscriber of one channel holds up neither gossip nor other peers (a's
    # queues hold one message here, so a publication may still be dropped now and then)
    b = await make_peer(a.router)
    await eventually(lambda: b.adapter.is_alive(a.id) and a.adapter.is_alive(b.id))
    await b.adapter.subscribe("r:fast")

    def delivered() -> bool:
        if not b.got("r:fast"):
            a.adapter.publish("r:fast", b"ok")
        return b"ok" in b.got("r:fast")

    await eventually(delivered)
    await fake.stop()


def desc(node: NodeId, seq: int, user: str, rooms: tuple[str, ...] = ()) -> ConnDescriptor:
    return ConnDescriptor(
        id=make_conn_id(node, seq), role="user", node_id=node, connected_at=time.time(), user_id=user, rooms=rooms
    )


async def test_a_forgotten_peer_is_probed_at_its_router_until_something_answers(
    make_peer: MakePeer, raw: Any
) -> None:
    # Re-probing heals partitions: once a forgets b, it keeps saying hello at b's ROUTER
    # endpoint (a short-lived DEALER per probe), whoever listens there now.
    fast = ClusterTiming(heartbeat_interval=0.05, ttl=0.3, forget_after=0.6, reprobe_initial=0.05, reprobe_max=0.2)
    a = await make_peer(timing=fast)
    b = await make_peer(a.router, timing=fast)
    await eventually(lambda: a.adapter.is_alive(b.id))
    endpoint = b.router
    await b.adapter.simulate_crash()
    await eventually(lambda: b.id not in a.adapter.members(), 5.0)  # forgotten
    listener = raw(zmq.ROUTER)
    listener.bind(endpoint)  # something new listens where b was
    _, kind, sender, target, payload = await recv(listener)
    assert (kind, sender, target) == (b"g", a.id.encode(), b"")  # no target: whoever is there
    hello = g.decode(payload)
    assert isinstance(hello, g.Hello) and hello.node == a.id and hello.addr == a.adapter.endpoints
    assert a.stat("hellos") >= 1 and a.stat("gossip_probes") >= 1  # (a may have probed before we bound)


async def test_stretched_beats_keep_a_real_mesh_whole_and_a_crash_is_still_seen(make_peer: MakePeer) -> None:
    # A beat budget no beat fits: on the local() timings every node beats every second tick
    # (0.4 s, two beats per ttl: the most beats stretch), over real sockets. Nobody is taken
    # for dead meanwhile, and a crash is still noticed by the ticks, which stay at 0.2 s.
    tight = dataclasses.replace(ClusterTiming.local(), beat_budget=1.0)
    timing = {"timing": tight, "heartbeat_interval": tight.heartbeat_interval, "ttl": tight.ttl}
    a = await make_peer(**timing)
    b = await make_peer(a.router, **timing)
    c = await make_peer(a.router, **timing)
    peers = [a, b, c]

    def whole() -> bool:
        return all(p.adapter.is_alive(q.id) for p in peers for q in peers if q is not p)

    await eventually(whole, 5.0)
    beats = {p.id: (p.stat("gossip_beats"), p.stat("gossip_beats_skipped")) for p in peers}
    deadline = asyncio.get_running_loop().time() + 10 * tight.heartbeat_interval
    while asyncio.get_running_loop().time() < deadline:  # 2 s of stretched beats, sampled
        assert whole(), {p.id: p.adapter.members() for p in peers}
        await asyncio.sleep(tight.heartbeat_interval / 4)
    for p in peers:
        sent, skipped = (p.stat("gossip_beats") - beats[p.id][0], p.stat("gossip_beats_skipped") - beats[p.id][1])
        assert skipped >= 3 and abs(sent - skipped) <= 2, (sent, skipped)  # about every other tick
        assert p.stat("gossip_beats_over_budget") > 0 and p.stat("gossip_expired") == 0
    await c.adapter.simulate_crash()
    await eventually(lambda: not a.adapter.is_alive(c.id) and not b.adapter.is_alive(c.id), 5.0)
    assert a.adapter.is_alive(b.id) and b.adapter.is_alive(a.id)


# ---------------------------------------------------------------------- advertise, partitions
async def test_advertised_endpoints_are_what_peers_are_told() -> None:
    ad = await zeromq_adapter("tcp://0.0.0.0:0", advertise="tcp://127.0.0.1:7101")  # a wildcard bind is fine now
    try:
        bound = ad.bound_endpoints
        assert bound["router"].startswith("tcp://0.0.0.0:") and bound["pub"].startswith("tcp://0.0.0.0:")
        pub_port = bound["pub"].rpartition(":")[2]
        # the PUB on the advertised host with its bound port, unless advertise_pub says otherwise
        assert ad.endpoints == {"router": "tcp://127.0.0.1:7101", "pub": f"tcp://127.0.0.1:{pub_port}"}
    finally:
        await ad.close()
    ad = await zeromq_adapter(LOCAL, advertise="tcp://10.0.0.5:7001", advertise_pub="tcp://10.0.0.5:7002")
    try:
        assert ad.endpoints == {"router": "tcp://10.0.0.5:7001", "pub": "tcp://10.0.0.5:7002"}
        assert ad.bound_endpoints != ad.endpoints
    finally:
        await ad.close()
    with pytest.raises(ValueError, match="wildcard"):
        await zeromq_adapter(LOCAL, advertise="tcp://*:7001")
    with pytest.raises(ValueError, match="advertise must be an endpoint"):
        await zeromq_adapter(LOCAL, advertise="10.0.0.5:7001")
    with pytest.raises(ValueError, match="one endpoint"):
        await zeromq_adapter(LOCAL, advertise="tcp://10.0.0.5:7001", advertise_pub="tcp://10.0.0.5:7001")


@pytest.mark.parametrize("direction", ["in", "out"])
async def test_zmtp_heartbeats_tear_down_a_half_open_link_from_either_end(make_peer: MakePeer, direction: str) -> None:
    # b's SUB reaches a's XPUB through a proxy. "in" silences b -> a: only a can notice (b still
    # hears a's beats), from the TTL b's pings carry or its own rarer pings. "out" silences
    # a -> b: a's pings and b's go unanswered. Either way the link is torn down within about a
    # ttl, and b's SUB reconnects once the proxy is healed. (The proxy closes both ends when one
    # does, so which end noticed first is not observable here.)
    router, pub = await FaultProxy().start(), await FaultProxy().start()
    try:
        a = await make_peer(advertise=router.endpoint, advertise_pub=pub.endpoint, start=False)
        for proxy, key in ((router, "router"), (pub, "pub")):
            host, _, port = a.adapter.bound_endpoints[key][len("tcp://") :].rpartition(":")
            proxy.retarget(host, int(port))
        await a.adapter.start(a.id, a.on_channel, a.on_direct)
        b = await make_peer(a.router)
        await eventually(lambda: a.adapter.is_alive(b.id) and b.adapter.is_alive(a.id))
        await eventually(lambda: pub.active == 1)
        closed = pub.statistics()["closed"]
        pub.blackhole(direction)
        await eventually(lambda: pub.statistics()["closed"] > closed, 3 * a.adapter.ttl + 2.0)
        pub.heal(direction)
        # b's SUB connects again (a handshake begun in the dark is given up after HANDSHAKE_IVL)
        # and subscribes: a's publications reach it again (bounded: 100 markers, 10 s at most)
        await b.adapter.subscribe("r:after")
        for attempt in range(100):
            a.adapter.publish("r:after", b"marker %d" % attempt)
            if await _within(lambda attempt=attempt: ("r:after", b"marker %d" % attempt) in b.channel, 0.1):
                break
        else:
            raise AssertionError(f"a's publications never reached b again: {pub.statistics()}")
    finally:
        await router.close()
        await pub.close()


async def _within(predicate: Callable[[], bool], timeout: float) -> bool:
    try:
        await eventually(predicate, timeout)
    except AssertionError:
        return False
    return True


async def test_a_partition_through_proxies_heals_by_itself(make_peer: MakePeer) -> None:
    # Both nodes reachable only through proxies (advertise=); cut both, past forget_after:
    # each forgets the other; heal: they find each other again, presence re-pulled both ways.
    fast = ClusterTiming(heartbeat_interval=0.05, ttl=0.3, forget_after=0.6, reprobe_initial=0.05, reprobe_max=0.3)
    proxies: list[FaultProxy] = []

    async def proxied(*seeds: str) -> Peer:
        router, pub = await FaultProxy().start(), await FaultProxy().start()
        proxies.extend((router, pub))
        peer = await make_peer(*seeds, timing=fast, advertise=router.endpoint, advertise_pub=pub.endpoint, start=False)
        for proxy, key in ((router, "router"), (pub, "pub")):
            host, _, port = peer.adapter.bound_endpoints[key][len("tcp://") :].rpartition(":")
            proxy.retarget(host, int(port))
        await peer.adapter.start(peer.id, peer.on_channel, peer.on_direct)
        return peer

    try:
        a = await proxied()
        b = await proxied(a.router)
        assert a.router == proxies[0].endpoint
        await eventually(lambda: a.adapter.members() == {b.id: True} and b.adapter.members() == {a.id: True})
        assert a.adapter.presence is not None and b.adapter.presence is not None
        a.adapter.presence.put(desc(a.id, 1, "ann"))
        b.adapter.presence.put(desc(b.id, 1, "bob"))
        await eventually(lambda: _online_both(a, "bob", b, "ann"))
        sockets = (a.stat("sockets"), b.stat("sockets"))
        for p in proxies:
            p.cut()
        await eventually(lambda: a.adapter.members() == {} and b.adapter.members() == {}, 5.0)  # forgotten
        assert not await b.adapter.presence.is_online("ann")
        b.adapter.presence.put(desc(b.id, 2, "bea"))  # said while cut off
        for p in proxies:
            p.heal()
        await eventually(lambda: a.adapter.members() == {b.id: True} and b.adapter.members() == {a.id: True}, 5.0)
        await eventually(lambda: _online_both(a, "bea", b, "ann"))
        assert (a.stat("sockets"), b.stat("sockets")) == sockets
        await b.adapter.subscribe("r:x")  # and the channels work again, both ways
        a.adapter.publish("r:x", b"after")
        await eventually(lambda: b.got("r:x") == [b"after"])
        assert a.adapter.send(b.id, b"direct") is True
        await eventually(lambda: (a.id, b"direct") in b.direct)
    finally:
        for p in proxies:
            await p.close()


async def _online_both(a: Peer, a_sees: str, b: Peer, b_sees: str) -> bool:
    assert a.adapter.presence is not None and b.adapter.presence is not None
    return await a.adapter.presence.is_online(a_sees) and await b.adapter.presence.is_online(b_sees)
