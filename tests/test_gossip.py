"""The membership and presence gossip state machine (pure: bytes in, actions out).

Two to four :class:`Gossip` instances run against each other over
:class:`~superline_zmq.testing.FakeNet`, the test kit's network that carries out their
actions synchronously: a :class:`Broadcast` reaches the members that connected to the
sender (PUB/SUB: a node hears another's broadcasts only after it was told to
:class:`Connect` to it), a :class:`Send` reaches its node directly (with ``routed=True``
only a node the sender connected to, as ZeroMQ DEALERs do; a hello always reaches its
seed). Chosen messages can be dropped to simulate loss, and a node can be paused (it
neither ticks, sends nor receives). Time is a :class:`~superline_zmq.testing.FakeClock`
shared by all nodes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import msgspec
import pytest
from gossip_net import assert_converged, conns, join_all, members

from superline_zmq.gossip import (
    Action,
    Addr,
    Broadcast,
    Connect,
    Disconnect,
    Gossip,
    GossipError,
    GossipPresence,
    Heartbeat,
    Hello,
    Leave,
    Message,
    Peer,
    Pull,
    Send,
    Welcome,
    decode,
    digest_of,
    encode,
)
from superline_zmq.ids import NodeId
from superline_zmq.membership import Liveness
from superline_zmq.presence import ConnDescriptor, Delta, NodeInfo, Snapshot
from superline_zmq.testing import FakeClock, FakeNet

INTERVAL = 1.0
TTL = 5.0
FORGET = 2 * TTL  # the default forget_after

A, B, C, D = NodeId("A"), NodeId("B"), NodeId("C"), NodeId("D")


Clock = FakeClock


def addr_of(node: str) -> Addr:
    return FakeNet.addr_of(node)


def desc(
    cid: str, node: str, *, user: str | None = None, rooms: tuple[str, ...] = (), at: float = 0.0
) -> ConnDescriptor:
    return ConnDescriptor(id=cid, role="user", node_id=node, connected_at=at, user_id=user, rooms=rooms)


def Net(*, pubsub: bool = True, routed: bool = False, forget_after: float | None = None) -> FakeNet:
    """A network of Gossip nodes at :func:`addr_of` with this module's timings, on a fresh clock."""
    return FakeNet(FakeClock(), interval=INTERVAL, ttl=TTL, forget_after=forget_after, pubsub=pubsub, routed=routed)


def pulling(g: Gossip) -> list[NodeId]:
    """Nodes ``g`` has an outstanding pull to."""
    return [m.node for m in g.membership if m.pull_sent_at is not None]


def hearsay(g: Gossip) -> list[NodeId]:
    """Members ``g`` knows only by hearsay."""
    return [m.node for m in g.membership if m.state is Liveness.HEARSAY]


def tombstones(g: Gossip) -> dict[NodeId, Liveness]:
    """Nodes ``g`` holds a tombstone for (left or forgotten)."""
    return {m.node: m.state for m in g.membership if m.state in (Liveness.LEFT, Liveness.FORGOTTEN)}


def last_beat(net: FakeNet, src: str, dst: str | None = None) -> list[str]:
    """The live members ``src`` advertised in the last heartbeat it sent (to ``dst``): the
    view whose digest that heartbeat carried (a member syncing with it gets this list)."""
    beat = net.sent(src=src, dst=dst, kind=Heartbeat)[-1]
    assert isinstance(beat, Heartbeat)
    g = net[src]
    assert beat.digest == g.digest == digest_of(g.view)
    return [p.node for p in g.view if p.node != src]


def cluster(*names: str, pubsub: bool = True, forget_after: float | None = None) -> FakeNet:
    """A converged cluster: every node joined through the first, each with one connection."""
    net = Net(pubsub=pubsub, forget_after=forget_after)
    return join_all(net, names, lambda n: desc(f"{n.lower()}1", n, user=f"user-{n}", rooms=("lobby",)), steps=2)


# ---------------------------------------------------------------- construction and codec
@pytest.mark.parametrize(("interval", "ttl"), [(0.0, 5.0), (-1.0, 5.0), (5.0, 5.0), (6.0, 5.0), (1.0, 0.0)])
def test_constructor_needs_interval_below_ttl(interval: float, ttl: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        Gossip(A, interval=interval, ttl=ttl, clock=Clock())


def test_constructor_defaults() -> None:
    clock = Clock()
    g = Gossip(A, interval=0.5, ttl=2.0, clock=clock)
    assert g.addr == {} and g.peers == {}
    assert g.replica.ttl == 2.0 and g.replica.forget_after == 4.0
    assert g.alive(A) and not g.alive(B)
    addr = addr_of("A")
    g2 = Gossip(A, addr, forget_after=7.0, clock=clock)
    addr["pub"] = "changed"
    assert g2.addr == addr_of("A")  # copied, not aliased
    assert g2.replica.forget_after == 7.0
    with pytest.raises(ValueError, match=r"forget_after \(3.0\) must be at least ttl \(5.0\)"):
        Gossip(A, addr, forget_after=3.0, clock=clock)  # would forget nodes still alive


@pytest.mark.parametrize(
    "msg",
    [
        Hello("A", addr_of("A")),
        Welcome("A", addr_of("A"), [Peer("B", addr_of("B")), Peer("C", {})]),
        Heartbeat("A", 7, 2**64 - 1),
        Pull("A"),
        Leave("A"),
        Delta("A", 3, put=desc("a1", "A", user="u", rooms=("r",))),
        Delta("A", 4, remove="a1"),
        Snapshot("A", 4, [desc("a2", "A")]),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"not msgpack at all",
        msgspec.msgpack.encode(["nope", "A"]),  # unknown tag
        msgspec.msgpack.encode(["beat", "A", {}, 1, []]),  # the retired full-list beat
        msgspec.msgpack.encode(["hb", "A"]),  # fields missing
        msgspec.msgpack.encode(["hb", "A", "seven", 1]),  # wrong type
        msgspec.msgpack.encode({"node": "A"}),  # not the array form
        msgspec.msgpack.encode(42),
        encode(Heartbeat("A", 1, 2**63))[:-3],  # truncated
    ],
)
def test_malformed_bytes_raise_gossip_error(data: bytes) -> None:
    g = Gossip(B, addr_of("B"), clock=Clock())
    with pytest.raises(GossipError, match="malformed gossip message") as err:
        g.receive(data)
    assert isinstance(err.value, ValueError)
    assert g.peers == {} and g.replica.nodes() == [B]


# ---------------------------------------------------------------- local writes
def test_put_and_remove_broadcast_deltas_and_apply_locally() -> None:
    g = Gossip(A, addr_of("A"), clock=Clock())
    [put] = g.put(desc("a1", "A", user="u"))
    assert isinstance(put, Broadcast)
    assert decode(put.data) == Delta("A", 1, put=desc("a1", "A", user="u"))
    assert conns(g) == ["a1"] and g.replica.is_online("u")
    assert g.remove("nope") == []
    [rm] = g.remove("a1")
    assert isinstance(rm, Broadcast) and decode(rm.data) == Delta("A", 2, remove="a1")
    assert conns(g) == [] and g.replica.seq_of(A) == 2 == g.local.seq
    with pytest.raises(ValueError):
        g.put(desc("b1", "B"))


def test_hello_leave_and_beat_messages() -> None:
    g = Gossip(A, addr_of("A"), clock=Clock())
    assert decode(g.hello()) == Hello("A", addr_of("A"))
    assert g.leave() == [Broadcast(encode(Leave("A")))]
    g.put(desc("a1", "A"))
    [beat] = g.tick()
    assert isinstance(beat, Broadcast)
    assert decode(beat.data) == Heartbeat("A", 1, digest_of([Peer("A", addr_of("A"))]))
    assert len(beat.data) < 40  # constant-size, whatever the cluster's size


def test_pull_is_answered_with_the_whole_slice() -> None:
    g = Gossip(A, addr_of("A"), clock=Clock())
    g.put(desc("a1", "A"))
    g.put(desc("a2", "A"))
    g.remove("a1")
    [reply] = g.receive(encode(Pull("Z")))  # even from a stranger: it asked directly
    assert isinstance(reply, Send) and reply.node == "Z"
    assert decode(reply.data) == Snapshot("A", 3, [desc("a2", "A")])
    assert g.stats["snapshots_served"] == 1
    assert g.peers == {}  # a pull is not membership


def test_own_echoed_messages_are_ignored() -> None:
    g = Gossip(A, addr_of("A"), clock=Clock())
    echoes = [a.data for a in g.put(desc("a1", "A")) + g.tick() + g.leave() if isinstance(a, Broadcast)]
    echoes += [g.hello(), encode(Pull("A")), encode(Snapshot("A", 9, [])), encode(Delta("A", 2, remove="a1"))]
    echoes.append(encode(Welcome("A", addr_of("A"), [Peer("B", addr_of("B"))])))
    for data in echoes:
        assert g.receive(data) == []
    assert conns(g) == ["a1"] and g.replica.seq_of(A) == 1
    assert g.peers == {} and g.alive(A)
    assert g.stats == {
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
        "beats": 1,
        "beats_skipped": 0,
        "beats_over_budget": 0,
    }


def test_hearsay_about_ourselves_is_ignored() -> None:
    g = Gossip(A, addr_of("A"), clock=Clock())
    actions = g.receive(encode(Welcome("B", addr_of("B"), [Peer("A", {"pub": "elsewhere"})])))
    assert A not in g.peers
    assert Connect(A, {"pub": "elsewhere"}) not in actions
    assert [a for a in actions if isinstance(a, Connect)] == [Connect(B, addr_of("B"))]


# ---------------------------------------------------------------- joining
def test_join_through_one_seed_learns_members_from_the_welcome() -> None:
    net = Net()
    a, b, c = net.add("A", "B", "C")
    net.run("A", a.put(desc("a1", "A", user="ann")))
    net.run("B", b.put(desc("b1", "B", user="bob", rooms=("lobby",))))
    net.join("B", "A")
    net.step()
    assert members(a) == ["B"] and members(b) == ["A"]

    net.run("C", c.put(desc("c1", "C", user="cat", rooms=("lobby",))))
    net.join("C", "A")  # C knows only A
    assert net.sent(src="C", kind=Hello) and all(m.node == "C" for m in net.sent(src="C", kind=Hello))
    assert [d for s, d, m in net.delivered if s == "C" and isinstance(m, Hello)] == ["A"]
    [welcome] = net.sent(src="A", dst="C", kind=Welcome)
    assert isinstance(welcome, Welcome)
    assert {p.node: p.addr for p in welcome.members} == {"B": addr_of("B"), "C": addr_of("C")}
    assert Connect(B, addr_of("B")) in net.did("C")
    # C already has everyone's slice: it pulled A (the seed) and B (from the welcome)
    assert sorted(conns(c)) == ["a1", "b1", "c1"]
    assert members(c) == ["A", "B"]
    # B has not heard of C yet: only A's next beat tells it
    assert C not in b.peers and not b.replica.known(C)
    assert sorted(conns(b)) == ["a1", "b1"]

    net.step()
    assert C in b.peers and sorted(conns(b)) == ["a1", "b1", "c1"]
    assert [m.node for m in net.sent(src="B", dst="C", kind=Pull)] == ["B"]
    assert [d.id for d in b.replica.room("lobby")] == ["b1", "c1"]
    assert b.replica.is_online("cat") and c.replica.is_online("bob") and a.replica.is_online("cat")
    net.step()
    assert_converged(net)
    assert [n.node_id for n in c.replica.topology()] == ["A", "B", "C"]
    assert all(n.alive for g in (a, b, c) for n in g.replica.topology())


def test_join_through_one_seed_learns_later_members_from_its_beat() -> None:
    net = Net()
    a, b, c = net.add("A", "B", "C")
    net.run("C", c.put(desc("c1", "C")))
    net.join("C", "A")
    net.step()
    assert members(c) == ["A"] and members(a) == ["C"]
    net.run("B", b.put(desc("b1", "B")))
    net.join("B", "A")  # B learns C from A's welcome...
    assert sorted(conns(b)) == ["b1", "c1"]
    assert B not in c.peers  # ...but C only from A's next beat
    assert "b1" not in conns(c)
    net.step()
    assert B in c.peers and "b1" in conns(c)
    assert "B" in last_beat(net, "A", "C")
    net.step()
    assert_converged(net)


JOIN_ORDERS = {
    "star": [("B", "A"), ("C", "A"), ("D", "A")],
    "chain": [("B", "A"), ("C", "B"), ("D", "C")],
    "reverse-star": [("A", "D"), ("B", "D"), ("C", "D")],
    "two-islands-merge": [("C", "A"), ("D", "B"), ("B", "C")],
    "late-seed": [("D", "C"), ("B", "D"), ("A", "B")],
}


@pytest.mark.parametrize("order", JOIN_ORDERS.values(), ids=JOIN_ORDERS.keys())
@pytest.mark.parametrize("step_between", [False, True], ids=["back-to-back", "beats-between"])
@pytest.mark.parametrize("routed", [False, True], ids=["any-send", "routed-send"])
def test_start_order_does_not_matter(order: list[tuple[str, str]], step_between: bool, routed: bool) -> None:
    # routed: a node can answer a pull only once it knows the puller (as with ZeroMQ), so
    # some snapshots are lost on the way in and the stuck-pull retry has to do its work
    net = Net(routed=routed)
    net.add("A", "B", "C", "D")
    for name in "ABCD":
        net.run(name, net[name].put(desc(f"{name.lower()}1", name, user=f"u{name}")))
    for new, seed in order:
        net.join(new, seed)
        net.run(new, net[new].put(desc(f"{new.lower()}2", new, rooms=("r",))))
        if step_between:
            net.step()
    net.step(3)
    # with routed sends, pulls to members that did not know the puller yet went unanswered
    assert bool(net.refused) == routed
    assert all(isinstance(m, Snapshot) for _, _, m in net.refused)
    assert_converged(net)
    for g in net.nodes.values():
        assert len(g.replica.connections()) == 4 + len(order)
        assert [d.id for d in g.replica.room("r")] == sorted(f"{n.lower()}2" for n, _ in order)
        assert [n.node_id for n in g.replica.topology() if n.alive] == ["A", "B", "C", "D"]
    # and nothing is left hanging
    assert all(not pulling(g) and not hearsay(g) for g in net.nodes.values())


# ---------------------------------------------------------------- deltas, gaps, pulls
def test_a_lost_delta_is_repaired_by_a_pull_on_the_next_gap() -> None:
    net = cluster("A", "B", "C")
    a, b, c = net["A"], net["B"], net["C"]
    net.drop(lambda s, d, m: d == "B" and isinstance(m, Delta), once=True)
    net.run("A", a.put(desc("a2", "A", user="ann")))
    assert "a2" not in conns(b) and "a2" in conns(c)
    pulls = b.stats["pulls"]
    net.run("A", a.put(desc("a3", "A")))  # seq jumps: B pulls A's slice right away
    assert b.stats["gaps"] == 1 and b.stats["pulls"] == pulls + 1
    assert net.sent(src="B", dst="A", kind=Pull)[-1] == Pull("B")
    assert {"a2", "a3"} <= set(conns(b)) and b.replica.is_online("ann")
    assert b.replica.seq_of(A) == a.local.seq == 3
    assert c.stats["gaps"] == 0
    assert_converged(net)


def test_a_lost_remove_is_repaired_by_the_next_beat() -> None:
    net = cluster("A", "B")
    a, b = net["A"], net["B"]
    net.drop(lambda s, d, m: d == "B" and isinstance(m, Delta), once=True)
    net.run("A", a.remove("a1"))
    assert "a1" in conns(b)  # B has missed it and nothing else is coming...
    net.step()  # ...until A's beat carries seq 2 > 1
    assert "a1" not in conns(b)
    assert b.stats["gaps"] == 0
    assert net.sent(src="B", dst="A", kind=Pull)[-1] == Pull("B")
    assert_converged(net)


def test_stale_and_duplicate_deltas_are_ignored() -> None:
    net = cluster("A", "B")
    a, b = net["A"], net["B"]
    [first] = a.put(desc("a2", "A", user="x"))
    [second] = a.remove("a2")
    assert isinstance(first, Broadcast) and isinstance(second, Broadcast)
    assert b.receive(first.data) == []
    assert b.receive(first.data) == []  # duplicate
    assert b.receive(second.data) == []
    assert b.receive(first.data) == []  # stale: must not bring a2 back
    assert b.receive(second.data) == []
    assert "a2" not in conns(b) and not b.replica.is_online("x")
    assert b.stats["stale"] == 3
    assert b.stats["gaps"] == 0
    # a stale snapshot is ignored too
    assert b.receive(encode(Snapshot("A", 1, [desc("old", "A")]))) == []
    assert "old" not in conns(b) and b.stats["stale"] == 4


def test_a_delta_that_arrives_during_a_pull_does_not_pull_again() -> None:
    net = cluster("A", "B")
    a, b = net["A"], net["B"]
    net.drop(lambda s, d, m: d == "B" and isinstance(m, Delta) and m.seq == 2, once=True)
    net.drop(lambda s, d, m: d == "B" and isinstance(m, Snapshot), once=True)
    net.run("A", a.put(desc("a2", "A")))
    net.run("A", a.put(desc("a3", "A")))  # gap: pull, whose answer is lost
    net.run("A", a.put(desc("a4", "A")))  # gap again, but a pull is outstanding
    assert b.stats["gaps"] == 2
    assert len(net.sent(src="B", dst="A", kind=Pull)) == 2  # the join's one, the gap's one
    assert pulling(b) == [A]


def test_a_stuck_pull_is_retried_after_two_intervals() -> None:
    net = cluster("A", "B")
    a, b = net["A"], net["B"]
    net.drop(lambda s, d, m: s == "A" and d == "B" and isinstance(m, Delta), once=True)
    net.drop(lambda s, d, m: s == "A" and d == "B" and isinstance(m, Snapshot), once=True)
    before = len(net.sent(src="B", dst="A", kind=Pull))
    net.run("A", a.put(desc("a2", "A")))
    net.step()  # A's beat shows seq 2: B pulls, the snapshot is lost
    assert len(net.sent(src="B", dst="A", kind=Pull)) == before + 1
    assert "a2" not in conns(b)
    net.step()  # one interval later: not yet; another beat with seq 2 does not pull again
    assert len(net.sent(src="B", dst="A", kind=Pull)) == before + 1
    assert "a2" not in conns(b)
    net.step()  # two intervals after the pull: retried on tick
    assert len(net.sent(src="B", dst="A", kind=Pull)) == before + 2
    assert "a2" in conns(b)
    assert A not in pulling(b)
    net.step(3)
    assert len(net.sent(src="B", dst="A", kind=Pull)) == before + 2  # answered: no more retries


# ---------------------------------------------------------------- liveness
def test_a_silent_member_is_dead_after_ttl_then_forgotten() -> None:
    net = cluster("A", "B", "C")
    a, c = net["A"], net["C"]
    net.paused.add(B)  # crashed or paused: not a word from now on
    last = net.clock.now  # B's last beat
    for _ in range(int(TTL)):
        net.step()
        assert a.alive(B) and "b1" in conns(a)
    net.step()  # ttl + 1 interval of silence
    assert net.clock.now - last > TTL
    for g in (a, c):
        assert not g.alive(B)
        assert members(g) == sorted({"A", "C"} - {g.node})
        assert "b1" not in conns(g) and g.replica.count() == 2
        assert g.replica.get("b1") is None and g.replica.by_user("user-B") == []
        assert not g.replica.is_online("user-B")
        assert [d.id for d in g.replica.room("lobby")] == ["a1", "c1"]
        assert NodeInfo(node_id="B", connections=1, rooms=("lobby",), alive=False) in g.replica.topology()
        assert B in g.peers  # still a member we talk to, just dead
    assert last_beat(net, "A", "C") == ["C"]  # the dead are not gossiped

    while net.clock.now - last < FORGET:
        net.step()
        assert B in a.peers and Disconnect(B) not in net.did("A")
    net.step()  # now silent for more than forget_after
    for name, g in (("A", a), ("C", c)):
        assert Disconnect(B) in net.did(name, since=net.clock.now)
        assert B not in g.peers and not g.replica.known(B)
        assert [n.node_id for n in g.replica.topology()] == ["A", "C"]
        assert g.stats["expired"] == 1
        assert B not in net.subs[g.node]
    since = net.clock.now + INTERVAL
    net.step(3)
    assert Disconnect(B) not in net.did("A", since=since)  # dropped once
    assert_converged(net)


def test_hearsay_does_not_keep_a_dead_member_alive() -> None:
    net = cluster("A", "B", "C")
    a, c = net["A"], net["C"]
    net.partition("A", "B")  # B is fine, and C keeps saying so
    net.step(int(TTL) + 1)
    assert c.alive(B)
    assert "B" in last_beat(net, "C", "A")
    assert not a.alive(B) and "b1" not in conns(a)


def test_a_dead_member_that_beats_again_is_taken_back() -> None:
    net = cluster("A", "B")
    a, b = net["A"], net["B"]
    net.paused.add(B)
    net.step(int(TTL) + 1)
    assert not a.alive(B)
    net.paused.discard(B)
    net.run("B", b.put(desc("b2", "B")))  # its first word is a delta: enough to be alive again
    assert a.alive(B) and sorted(conns(a)) == ["a1", "b1", "b2"]
    assert members(a) == ["B"]
    net.step()
    assert [x for x in net.did("A") if isinstance(x, Connect | Disconnect)] == [Connect(B, addr_of("B"))]
    assert_converged(net)


def test_a_member_only_heard_of_is_given_up_after_forget_after() -> None:
    net = Net()
    a, _, c = net.add("A", "G", "C")
    net.join("G", "A")
    net.paused.add(NodeId("G"))  # G vanishes right after joining
    start = net.clock.now
    net.join("C", "A")  # A's welcome still lists G as alive
    G = NodeId("G")
    assert G in c.peers and not c.alive(G) and not c.replica.known(G)
    assert Connect(G, addr_of("G")) in net.did("C")
    assert [n.node_id for n in c.replica.topology()] == ["A", "C"]
    while net.clock.now - start < FORGET:
        net.step()
        assert G in c.peers
        assert "G" not in last_beat(net, "C")
    assert len(net.sent(src="C", dst="G", kind=Pull)) > 1  # retried meanwhile
    net.step()
    assert G not in c.peers and Disconnect(G) in net.did("C", since=net.clock.now)
    assert G not in pulling(c) and G not in hearsay(c)
    assert c.stats["expired"] == 1
    pulls = len(net.sent(src="C", dst="G", kind=Pull))
    net.step(3)
    assert len(net.sent(src="C", dst="G", kind=Pull)) == pulls  # no more pulls to the gone
    assert members(c) == ["A"] and members(a) == ["C"]


# ---------------------------------------------------------------- leaving
def test_a_graceful_leave_drops_the_node_at_once_and_for_good() -> None:
    net = cluster("A", "B", "C")
    a, b, c = net["A"], net["B"], net["C"]
    # B's last words before leaving, delivered late below
    [late_delta] = b.put(desc("b2", "B"))
    late_beat = next(x for x in b.tick() if isinstance(x, Broadcast))
    late_snap = encode(b.local.snapshot())
    assert isinstance(late_delta, Broadcast)

    net.drop(lambda s, d, m: d == "C" and isinstance(m, Leave), once=True)  # C misses it
    now = net.clock.now
    net.run("B", b.leave())
    net.paused.add(B)
    assert Disconnect(B) in net.did("A", since=now)
    assert B not in a.peers and not a.replica.known(B) and not a.alive(B)
    assert "b1" not in conns(a) and not a.replica.is_online("user-B")
    assert [n.node_id for n in a.replica.topology()] == ["A", "C"]
    assert a.stats["left"] == 1
    assert c.alive(B)  # C did not hear it

    # B's own late messages do not bring it back
    for data in (late_delta.data, late_beat.data, late_snap):
        assert a.receive(data) == []
    assert B not in a.peers and not a.replica.known(B) and "b2" not in conns(a)

    # nor does C's hearsay, while C still believes in B
    since = net.clock.now
    net.step(2)
    assert "B" in last_beat(net, "C", "A")
    assert not [x for x in net.did("A", since=since) if isinstance(x, Connect)]
    assert B not in a.peers and not a.replica.known(B)
    # C gives B up in its own time; then everyone agrees
    net.step(int(FORGET))
    assert B not in c.peers
    assert_converged(net)
    assert not [x for x in net.did("A", since=since) if isinstance(x, Connect)]


def test_an_evicted_node_is_dropped_at_once_and_only_its_own_hello_brings_it_back() -> None:
    # what a node does when an operator revokes a member's key: nothing is sent, the
    # member is gone from this node's routing and queries at once, whatever it or
    # others say, until it introduces itself again (over CURVE: once it is allowed again)
    net = cluster("A", "B", "C")
    a = net["A"]
    late_beat = next(x for x in net["B"].tick() if isinstance(x, Broadcast))
    actions = a.evict(B)
    assert actions == [Disconnect(B)]
    assert a.stats["evicted"] == 1
    assert B not in a.peers and not a.alive(B) and not a.replica.known(B)
    assert [n.node_id for n in a.replica.topology()] == ["A", "C"]
    assert tombstones(a) == {B: Liveness.LEFT}
    assert a.receive(late_beat.data) == []  # its own late words do not count
    assert a.receive(encode(Welcome("C", addr_of("C"), [Peer("B", addr_of("B"))]))) == []  # nor hearsay
    assert B not in a.peers
    assert a.evict(A) == [] and a.alive(A)  # never itself
    assert Connect(B, addr_of("B")) in a.receive(net["B"].hello())  # its hello: trusted again
    assert a.alive(B)


def test_a_leave_from_an_unknown_node_still_blocks_its_late_messages() -> None:
    g = Gossip(A, addr_of("A"), clock=Clock())
    assert g.receive(encode(Leave("B"))) == []  # nothing to disconnect
    assert g.stats["left"] == 1
    assert g.receive(encode(Heartbeat("B", 3, 0))) == []
    assert g.receive(encode(Welcome("B", addr_of("B"), []))) == []
    assert g.receive(encode(Delta("B", 1, put=desc("b1", "B")))) == []
    assert g.receive(encode(Welcome("C", addr_of("C"), [Peer("B", addr_of("B"))]))) == [
        Connect(C, addr_of("C")),
        Send(C, encode(Pull("A"))),
    ]
    assert B not in g.peers and not g.replica.known(B)


def test_a_late_welcome_from_a_left_node_does_not_readmit_it() -> None:
    # C said hello to B; B answered, then left; the welcome arrives after the leave.
    g = Gossip(C, addr_of("C"), clock=Clock())
    assert g.receive(encode(Leave("B"))) == []
    actions = g.receive(encode(Welcome("B", addr_of("B"), [Peer("A", addr_of("A"))])))
    assert B not in g.peers and not g.replica.known(B) and not g.alive(B)
    assert Connect(B, addr_of("B")) not in actions
    assert Connect(A, addr_of("A")) in actions  # the members it named are still worth a try


def test_a_left_node_that_says_hello_again_is_admitted() -> None:
    # A hello is first-hand: a node that left and came back (same id) joins like anyone.
    net = cluster("A", "B")
    a, b = net["A"], net["B"]
    net.run("B", b.leave())
    assert B not in a.peers
    net.join("B", "A")
    assert B in a.peers and a.alive(B)
    net.step()
    assert_converged(net)


def test_tombstones_are_bounded_by_forget_after() -> None:
    clock = Clock()
    g = Gossip(A, addr_of("A"), clock=clock)
    g.receive(encode(Leave("B")))
    clock.advance(FORGET)
    g.prune_tombstones()
    assert g.receive(encode(Welcome("B", addr_of("B"), []))) == []  # still within the window
    clock.advance(0.5)
    g.prune_tombstones()
    assert tombstones(g) == {} and g.membership.get(B) is None
    assert Connect(B, addr_of("B")) in g.receive(encode(Welcome("B", addr_of("B"), [])))


# ---------------------------------------------------------------- forgotten, then back
def test_a_forgotten_node_that_beats_again_is_readmitted_and_repulled() -> None:
    # Broadcast reaches every node (like the in-process bus): the resumed node's beat arrives.
    net = cluster("A", "B", "C", pubsub=False)
    a, b, c = net["A"], net["B"], net["C"]
    net.paused.add(B)
    net.run("B", b.put(desc("b2", "B", user="late")))  # said while paused: lost
    net.step(int(FORGET) + 1)
    assert not a.replica.known(B) and B not in a.peers and B not in c.peers
    assert tombstones(a) == {B: Liveness.FORGOTTEN}

    net.paused.discard(B)
    since = net.clock.now + INTERVAL
    net.step()
    for name, g in (("A", a), ("C", c)):
        did = net.did(name, since=since)
        assert Connect(B, addr_of("B")) in did
        assert did.count(Send(B, encode(Pull(name)))) == 1  # pulled once, not once per message
        assert g.alive(B) and sorted(conns(g)) == ["a1", "b1", "b2", "c1"]
        assert g.replica.is_online("late")
        assert g.replica.seq_of(B) == b.local.seq == 2
    net.step()
    assert_converged(net)


def test_hearsay_about_a_forgotten_node_does_not_resurrect_it() -> None:
    net = cluster("A", "B", "C")
    a, c = net["A"], net["C"]
    net.partition("A", "B")  # B is alive, and C keeps telling A so
    net.step(int(FORGET) + 1)
    assert not a.replica.known(B) and B not in a.peers
    forgotten_at = net.clock.now
    assert c.alive(B)
    while net.clock.now - forgotten_at < FORGET:
        net.step()
        assert "B" in last_beat(net, "C", "A")
        assert B not in a.peers and not a.replica.known(B)
        assert not [x for x in net.did("A", since=forgotten_at + INTERVAL) if isinstance(x, Connect)]
    assert "b1" not in conns(a) and "b1" in conns(c)
    # the tombstone is bounded: once it lapses, hearsay is listened to again (here, in vain)
    net.step()
    assert Connect(B, addr_of("B")) in net.did("A", since=net.clock.now)
    assert not a.alive(B)


def test_a_direct_message_lifts_the_tombstone_of_a_forgotten_node() -> None:
    net = cluster("A", "B")
    a = net["A"]
    net.paused.add(B)
    net.step(int(FORGET) + 1)
    assert tombstones(a) == {B: Liveness.FORGOTTEN}
    net.paused.discard(B)
    a.receive(encode(Snapshot("B", 1, [desc("b1", "B")])))
    assert B not in tombstones(a)
    assert a.replica.known(B) and "b1" in conns(a)


def test_a_delta_from_a_node_we_cannot_address_yet() -> None:
    clock = Clock()
    g = Gossip(A, addr_of("A"), clock=clock)
    X = NodeId("X")
    # the first word from X is a delta with a gap: pull, but X is no member until it says
    # where it is (its hello, its welcome) or a member names it
    assert g.receive(encode(Delta("X", 2, put=desc("x2", "X")))) == [Send(X, encode(Pull("A")))]
    assert X not in g.peers and not g.alive(X)
    assert g.stats["gaps"] == 1
    clock.advance(2 * INTERVAL)
    assert [type(x) for x in g.tick()] == [Broadcast]  # no retry: we cannot reach X yet
    assert g.receive(encode(Heartbeat("X", 2, 0))) == []  # alive, still no address: nothing to do
    assert X not in g.peers and not g.alive(X)
    actions = g.receive(encode(Welcome("X", addr_of("X"), [])))
    assert actions == [Connect(X, addr_of("X")), Send(X, encode(Pull("A")))]
    assert g.alive(X)
    g.receive(encode(Snapshot("X", 2, [desc("x1", "X"), desc("x2", "X")])))
    assert conns(g) == ["x1", "x2"] and not pulling(g)


def test_gossip_presence_turns_writes_into_deltas_and_reads_locally() -> None:
    net = cluster("A", "B")
    a, b = net["A"], net["B"]

    def execute(actions: list[Action]) -> None:
        net.run("A", actions)

    presence = GossipPresence(a, execute)
    presence.put(desc("a2", "A", user="ann", rooms=("ops",)))
    assert "a2" in conns(b) and b.replica.is_online("ann")
    presence.remove("a2")
    presence.remove("a2")  # unknown by now: nothing sent
    assert "a2" not in conns(b)
    assert len(net.sent(src="A", dst="B", kind=Delta)) == 2

    async def reads() -> tuple[object, ...]:
        return (
            await presence.count(),
            [d.id for d in await presence.connections()],
            [d.id for d in await presence.by_user("user-B")],
            [d.id for d in await presence.room("lobby")],
            await presence.is_online("user-B"),
            await presence.is_online("ann"),
            [n.node_id for n in await presence.topology()],
        )

    assert asyncio.run(reads()) == (2, ["a1", "b1"], ["b1"], ["a1", "b1"], True, False, ["A", "B"])


# ---------------------------------------------------------------- addresses
def test_a_new_address_reconnects() -> None:
    net = cluster("A", "B")
    a, b = net["A"], net["B"]
    b.addr = {"pub": "tcp://B:6000"}
    since = net.clock.now + INTERVAL
    net.step()
    assert [x for x in net.did("A", since=since) if isinstance(x, Connect | Disconnect)] == [
        Disconnect(B),
        Connect(B, {"pub": "tcp://B:6000"}),
    ]
    assert a.peers[B] == {"pub": "tcp://B:6000"}
    net.step()
    assert not [x for x in net.did("A", since=since + INTERVAL) if isinstance(x, Connect | Disconnect)]
    assert_converged(net)


def test_message_counts_stay_small_in_a_quiet_cluster() -> None:
    net = cluster("A", "B", "C")
    n = len(net.delivered)
    net.step(10)
    kinds = Counter(type(m).__name__ for _, _, m in net.delivered[n:])
    assert kinds == {"Heartbeat": 10 * 3 * 2}  # heartbeats only: no pulls, no deltas, no syncs
    assert all(not pulling(g) for g in net.nodes.values())


# ---------------------------------------------------------------- resumed, restarted, readdressed
def _routed_cluster(*names: str) -> FakeNet:
    net = Net(routed=True)
    net.add(*names)
    for name in names:
        net.run(name, net[name].put(desc(f"{name.lower()}1", name)))
    for name in names[1:]:
        net.join(name, names[0])
    net.step(3)
    assert_converged(net)
    return net


@pytest.mark.parametrize("buffered_beats_first", [True, False], ids=["beats-first", "tick-first"])
def test_a_node_paused_past_forget_after_rejoins_over_pubsub(buffered_beats_first: bool) -> None:
    # Over PUB/SUB the others unsubscribed from B when they forgot it, so B's beats no
    # longer reach them; B must notice it is not listed and introduce itself again.
    net = _routed_cluster("A", "B", "C")
    b = net["B"]
    net.paused.add(B)
    net.step(int(FORGET) + 2)
    assert B not in net["A"].peers and B not in net["C"].peers
    assert B not in net.subs[A] and B not in net.subs[C]
    net.paused.discard(B)
    if buffered_beats_first:  # the beats queued in B's SUB socket are read before B's timer fires
        for name in ("A", "C"):
            net.run(name, net[name].tick())
    net.step(6)
    assert_converged(net)
    assert b.stats["stalls"] == 1  # B knew its silence was its own, and kept its peers
    assert sorted(conns(net["A"])) == ["a1", "b1", "c1"]


def test_a_restart_reusing_its_node_id_replaces_the_old_slice() -> None:
    net = cluster("A", "B")
    net.run("B", net["B"].put(desc("b2", "B")))
    assert sorted(conns(net["A"])) == ["a1", "b1", "b2"]
    # B restarts with the same id (node_id= pinned): a fresh slice whose sequence restarts
    old = net["B"]
    fresh = Gossip(B, addr_of("B"), interval=INTERVAL, ttl=TTL, clock=net.clock)
    net.nodes[B] = fresh
    net.subs[B] = set()
    net.run("B", fresh.put(desc("b9", "B")))
    assert fresh.local.seq < old.local.seq
    net.join("B", "A")
    net.step(2)
    assert sorted(conns(net["A"])) == ["a1", "b9"]


def test_hearsay_never_overrides_an_address_heard_first_hand() -> None:
    net = cluster("A", "B", "C")
    a = net["A"]
    stale = Welcome("C", addr_of("C"), [Peer("B", {"pub": "tcp://old:1", "router": "tcp://old:2"})])
    actions = a.receive(encode(stale))
    assert not any(isinstance(x, Connect | Disconnect) and x.node == B for x in actions)
    assert a.peers[B] == addr_of("B")
    moved = {"pub": "tcp://B:6000", "router": "tcp://B:6001"}
    actions = a.receive(encode(Welcome("B", moved, [])))
    assert Disconnect(B) in actions and Connect(B, moved) in actions  # first-hand: B moved


# ---------------------------------------------------------------- partitions heal themselves
#: Re-probing in these tests: first after 1 s, doubling (jittered) up to 4 s.
REPROBE_MAX = 4.0


def _probing_cluster(*names: str, seeds: dict[str, list[str]] | None = None) -> FakeNet:
    """A converged ZeroMQ-like cluster (routed sends, PUB/SUB) whose nodes re-probe up to REPROBE_MAX."""

    def make(node: NodeId) -> Gossip:
        return Gossip(
            node,
            addr_of(node),
            clock=clock,
            interval=INTERVAL,
            ttl=TTL,
            seeds=[{"router": addr_of(s)["router"]} for s in (seeds or {}).get(node, [])],
            reprobe_max=REPROBE_MAX,
        )

    clock = FakeClock()
    net = FakeNet(clock, interval=INTERVAL, ttl=TTL, routed=True, make=make)
    return join_all(net, names, lambda n: desc(f"{n.lower()}1", n, user=f"user-{n}"), steps=3)


def is_converged(net: FakeNet) -> bool:
    try:
        assert_converged(net)
    except AssertionError:
        return False
    return True


def _forgotten_by_all(net: FakeNet, cut_off: set[str]) -> bool:
    """Every node has forgotten every node on the other side, tombstones lapsed included."""
    for n, g in net.nodes.items():
        for other in net.nodes:
            if (n in cut_off) != (other in cut_off) and g.membership.get(other) is not None:
                return False
    return True


@pytest.mark.parametrize(
    "cut_off",
    [{"C"}, {"A"}, {"A", "B"}],
    ids=["one-node", "the-seed-everyone-joined-through", "two-islands"],
)
def test_a_partition_longer_than_forget_after_heals_without_a_restart(cut_off: set[str]) -> None:
    net = _probing_cluster("A", "B", "C", "D")
    cut = net.split(cut_off)
    # long enough for each side to forget the other and for the tombstones to lapse
    net.step(int(2 * FORGET) + 2)
    assert _forgotten_by_all(net, cut_off)
    for n, g in net.nodes.items():
        assert sorted(members(g)) == sorted(m for m in net.nodes if (m in cut_off) == (n in cut_off) and m != n)
    probes = sum(g.stats["probes"] for g in net.nodes.values())
    assert probes > 0
    net.heal(cut)
    # the next probe of each forgotten peer is at most REPROBE_MAX away; then a welcome
    # re-admits both sides, which pull each other's slices
    healed_after = None
    for beats in range(1, int(REPROBE_MAX / INTERVAL) + 4):
        net.step()
        if is_converged(net):
            healed_after = beats
            break
    assert healed_after is not None, "the cluster did not heal"
    for g in net.nodes.values():
        assert sorted(conns(g)) == ["a1", "b1", "c1", "d1"]
        assert all(g.replica.is_online(f"user-{n}") for n in "ABCD")


def test_probing_backs_off_to_the_cap_and_never_stops() -> None:
    net = _probing_cluster("A", "B")
    net.split({"B"})
    net.step(int(FORGET) + 2)  # A forgets B
    a = net["A"]
    start = net.clock()
    sent: list[float] = []
    for _ in range(60):
        before = a.stats["probes"]
        net.step()
        if a.stats["probes"] > before:
            sent.append(net.clock() - start)
    gaps = [t1 - t0 for t0, t1 in itertools.pairwise(sent)]
    # A is alone (no live member): it probes its forgotten peer every beat
    assert gaps and all(g == INTERVAL for g in gaps)
    # with another live member, it backs off instead, to at most REPROBE_MAX, forever
    net2 = _probing_cluster("A", "B", "C")
    net2.split({"B"})
    net2.step(int(FORGET) + 2)
    a2 = net2["A"]
    times = []
    for _ in range(80):
        before = a2.stats["probes"]
        net2.step()
        if a2.stats["probes"] > before:
            times.append(net2.clock())
    gaps2 = [t1 - t0 for t0, t1 in itertools.pairwise(times)]
    assert len(times) >= 80 * INTERVAL / REPROBE_MAX - 1  # never stops
    assert all(g <= REPROBE_MAX + INTERVAL for g in gaps2)  # capped (ticks round up to a beat)
    assert max(gaps2) > INTERVAL  # and backed off


def test_a_seed_that_is_a_live_member_is_not_probed() -> None:
    net = _probing_cluster("A", "B", "C", seeds={"B": ["A"], "C": ["A"]})
    before = {n: g.stats["probes"] for n, g in net.nodes.items()}
    net.step(20)
    assert {n: g.stats["probes"] for n, g in net.nodes.items()} == before


def test_a_node_started_before_its_seed_joins_once_the_seed_is_up() -> None:
    net = _probing_cluster("B", seeds={"B": ["A"]})  # A does not exist yet
    b = net["B"]
    net.step(3)
    assert b.stats["probes"] >= 3  # alone: the seed is probed every beat
    [a] = net.add("A")
    net.run("A", a.put(desc("a1", "A")))
    net.step()
    assert members(a) == ["B"] and members(b) == ["A"]  # the next probe found it
    net.step(2)  # A's first pull went out before B knew A (refused): retried two beats on
    assert_converged(net)
