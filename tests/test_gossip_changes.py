"""Presence changes recorded by the gossip machine: every one exactly once, in step with queries.

Pure :class:`Gossip` machines on a :class:`~superline_zmq.testing.FakeNet` and a fake
clock. A :class:`Model` folds the changes a node records (users online/offline, room
joins/leaves) and must always equal what that node's queries answer: it fails on a
duplicate (online twice, a join of a member already in), a miss, or a change that
contradicts the replica. A seeded random walk (writes, moves, crashes, partitions
longer than the forget time, heals, restarts) checks that on every node after every
step.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from superline_zmq.gossip import Gossip
from superline_zmq.ids import NodeId
from superline_zmq.presence import ConnDescriptor, PresenceChange, RoomDiff, UserPresence
from superline_zmq.testing import FakeClock, FakeNet

INTERVAL = 1.0
TTL = 5.0
FORGET = 10.0


def desc(cid: str, node: str, *, user: str | None = None, rooms: tuple[str, ...] = ()) -> ConnDescriptor:
    return ConnDescriptor(id=cid, role="user", node_id=node, connected_at=0.0, user_id=user, rooms=rooms)


class Model:
    """What one node's listeners know, folded from its changes; strict about duplicates."""

    def __init__(self) -> None:
        self.online: dict[str, int] = {}
        self.rooms: dict[str, set[str]] = {}
        self.users: list[UserPresence] = []
        self.room_diffs: list[RoomDiff] = []
        self.initial = 0

    def fold(self, changes: list[PresenceChange]) -> None:
        for change in changes:
            assert change.diff, "an empty change was recorded"
            self.initial += change.initial
            for up in change.diff.users:
                self.users.append(up)
                if up.online:
                    assert up.user_id not in self.online, f"{up.user_id} online twice"
                    assert up.connections > 0
                    self.online[up.user_id] = up.connections
                else:
                    assert up.user_id in self.online, f"{up.user_id} offline but never online"
                    assert up.connections == 0
                    del self.online[up.user_id]
            for rd in change.diff.rooms:
                self.room_diffs.append(rd)
                members = self.rooms.setdefault(rd.room, set())
                for d in rd.leaves:
                    assert d.id in members, f"{d.id} left {rd.room} it was not in"
                    members.remove(d.id)
                for d in rd.joins:
                    assert d.id not in members, f"{d.id} joined {rd.room} twice"
                    members.add(d.id)

    def check(self, g: Gossip) -> None:
        """The folded view equals what ``g``'s queries answer right now."""
        g.refresh()
        self.fold(g.take_changes())
        assert set(self.online) == {u.user_id for u in g.replica.online()}, g.node
        rooms = self.rooms.keys() | {r for d in g.replica.connections() for r in d.rooms}
        for room in rooms:
            assert self.rooms.get(room, set()) == {d.id for d in g.replica.room(room)}, (g.node, room)


def net_make(net: FakeNet, node: str) -> Gossip:
    """A new machine for ``node`` on ``net``, as ``net`` builds them."""
    assert net._make is not None
    return net._make(NodeId(node))


def make_net(*names: str, seeds: bool = True) -> FakeNet:
    clock = FakeClock()

    def make(node: NodeId) -> Gossip:
        return Gossip(
            node,
            FakeNet.addr_of(node),
            clock=clock,
            interval=INTERVAL,
            ttl=TTL,
            forget_after=FORGET,
            seeds=[{"router": FakeNet.addr_of(names[0])["router"]}] if seeds and node != names[0] else [],
            reprobe_max=4.0,
        )

    net = FakeNet(clock, interval=INTERVAL, ttl=TTL, forget_after=FORGET, routed=True, make=make)
    net.add(*names)
    return net


def joined(*names: str) -> tuple[FakeNet, dict[str, Model]]:
    net = make_net(*names)
    for name in names[1:]:
        net.join(name, names[0])
    net.step(3)
    models = {n: Model() for n in names}
    for n in names:
        models[n].check(net[n])
    return net, models


def run(net: FakeNet, node: str, actions: list) -> None:  # type: ignore[type-arg]
    net.run(node, actions)


def online_events(m: Model) -> list[tuple[str, bool, str, int]]:
    return [(u.user_id, u.online, u.node_id, u.connections) for u in m.users]


# ---------------------------------------------------------------- the transitions
def test_first_connection_anywhere_is_online_everywhere_and_a_second_device_fires_nothing() -> None:
    net, models = joined("A", "B", "C")
    run(net, "A", net["A"].put(desc("a1", "A", user="ann", rooms=("lobby",))))
    run(net, "B", net["B"].put(desc("b1", "B", user="ann", rooms=("lobby",))))  # a second device
    run(net, "B", net["B"].remove("b1"))
    for n in "ABC":
        models[n].check(net[n])
        assert online_events(models[n]) == [("ann", True, "A", 1)]
        assert [([d.id for d in r.joins], [d.id for d in r.leaves]) for r in models[n].room_diffs] == [
            (["a1"], []),
            (["b1"], []),
            ([], ["b1"]),
        ]
    run(net, "A", net["A"].remove("a1"))
    for n in "ABC":
        models[n].check(net[n])
        assert online_events(models[n])[-1] == ("ann", False, "A", 0)


def test_an_overlapping_move_between_nodes_fires_nothing() -> None:
    net, models = joined("A", "B", "C")
    run(net, "A", net["A"].put(desc("a1", "A", user="ann")))
    run(net, "B", net["B"].put(desc("b1", "B", user="ann")))  # the phone comes up ...
    run(net, "A", net["A"].remove("a1"))  # ... before the laptop goes
    for n in "ABC":
        models[n].check(net[n])
        assert online_events(models[n]) == [("ann", True, "A", 1)]


def test_a_crashed_nodes_users_go_offline_within_ttl_and_one_beat_once() -> None:
    net, models = joined("A", "B", "C")
    run(net, "C", net["C"].put(desc("c1", "C", user="cat", rooms=("lobby",))))
    for n in "ABC":
        models[n].check(net[n])
    net.paused.add(NodeId("C"))
    crashed_at = net.clock()
    gone_at: dict[str, float] = {}
    while len(gone_at) < 2:
        net.step()
        for n in "AB":
            changes = net[n].take_changes()  # only what the ticks recorded: no read has refreshed
            models[n].fold(changes)
            if changes and n not in gone_at:
                gone_at[n] = net.clock()
        assert net.clock() - crashed_at <= TTL + 2 * INTERVAL
    for n in "AB":
        assert TTL < gone_at[n] - crashed_at <= TTL + INTERVAL
        assert online_events(models[n])[-1] == ("cat", False, "C", 0)
        assert [d.id for d in models[n].room_diffs[-1].leaves] == ["c1"]
        net.step(int(FORGET))  # then forgotten: nothing more to say
        models[n].check(net[n])
        assert online_events(models[n]).count(("cat", False, "C", 0)) == 1


def test_a_graceful_leave_takes_its_users_offline_at_once() -> None:
    net, models = joined("A", "B", "C")
    run(net, "C", net["C"].put(desc("c1", "C", user="cat", rooms=("lobby",))))
    for n in "AB":
        models[n].check(net[n])
    run(net, "C", net["C"].leave())
    for n in "AB":
        changes = net[n].take_changes()  # no tick, no refresh: the leave itself
        models[n].fold(changes)
        assert [(u.user_id, u.online) for c in changes for u in c.diff.users] == [("cat", False)]
        models[n].check(net[n])


def test_a_node_heard_again_brings_its_users_back_and_what_changed_meanwhile() -> None:
    net, models = joined("A", "B")
    run(net, "B", net["B"].put(desc("b1", "B", user="bob")))
    run(net, "B", net["B"].put(desc("b2", "B", user="bea")))
    models["A"].check(net["A"])
    cut = net.split({"B"})
    net.step(int(TTL) + 1)  # dead, not forgotten
    models["A"].check(net["A"])
    assert models["A"].online == {}
    run(net, "B", net["B"].remove("b2"))  # lost
    run(net, "B", net["B"].put(desc("b3", "B", user="bo")))  # lost
    net.heal(cut)
    net.step(2)
    models["A"].check(net["A"])
    assert set(models["A"].online) == {"bob", "bo"}  # bea left while it was cut off: never back


def test_a_restarted_process_reusing_its_id_takes_the_old_users_offline() -> None:
    net, models = joined("A", "B")
    run(net, "B", net["B"].put(desc("b1", "B", user="bob")))
    run(net, "B", net["B"].put(desc("b2", "B", user="bea")))
    models["A"].check(net["A"])
    fresh = Gossip(NodeId("B"), FakeNet.addr_of("B"), clock=net.clock, interval=INTERVAL, ttl=TTL)
    net.nodes[NodeId("B")] = fresh
    net.subs[NodeId("B")] = set()
    run(net, "B", fresh.put(desc("b9", "B", user="bob")))
    net.join("B", "A")
    net.step(2)
    models["A"].check(net["A"])
    assert set(models["A"].online) == {"bob"}


def test_what_a_newcomer_learns_while_it_joins_is_initial() -> None:
    net = make_net("A", "B")
    run(net, "A", net["A"].put(desc("a1", "A", user="ann")))
    net.join("B", "A")
    net.step(2)
    [c] = net.add("C")
    c.begin_join()
    net.join("C", "A")
    c.end_join()  # the adapter's start returns: the welcome came, the pulls are out
    net.step(2)
    run(net, "B", net["B"].put(desc("b1", "B", user="bob")))
    changes = c.take_changes()
    initial = sorted(u.user_id for ch in changes if ch.initial for u in ch.diff.users)
    later = sorted(u.user_id for ch in changes if not ch.initial for u in ch.diff.users)
    assert (initial, later) == (["ann"], ["bob"])


def test_a_node_that_joins_later_is_news_not_initial() -> None:
    net, _ = joined("A", "B")
    a = net["A"]
    [c] = net.add("C")
    run(net, "C", c.put(desc("c1", "C", user="cat")))  # before anyone knows C
    net.join("C", "B")
    net.step(3)
    changes = a.take_changes()
    assert [(u.user_id, ch.initial) for ch in changes for u in ch.diff.users] == [("cat", False)]


# ---------------------------------------------------------------- the random walk
USERS = ["u0", "u1", "u2", "u3"]
ROOMS = ("r0", "r1", "r2")


@pytest.mark.parametrize("seed", range(12))
def test_changes_always_add_up_to_what_queries_answer(seed: int) -> None:
    rng = random.Random(seed)
    names = ["A", "B", "C", "D"]
    net, models = joined(*names)
    next_id = 0
    cut = None
    for _ in range(160):
        op = rng.random()
        node = rng.choice(names)
        g = net[node]
        if op < 0.35:
            next_id += 1
            rooms = tuple(r for r in ROOMS if rng.random() < 0.4)
            run(net, node, g.put(desc(f"{node.lower()}{next_id}", node, user=rng.choice(USERS), rooms=rooms)))
        elif op < 0.5 and g.local.conns:
            run(net, node, g.remove(rng.choice(sorted(g.local.conns))))
        elif op < 0.6 and g.local.conns:  # a room change: the descriptor is replaced
            old = g.local.conns[rng.choice(sorted(g.local.conns))]
            rooms = tuple(r for r in ROOMS if rng.random() < 0.5)
            run(net, node, g.put(msgspec.structs.replace(old, rooms=rooms)))
        elif op < 0.65 and cut is None:
            cut = net.split(rng.sample(names, rng.choice([1, 2])))
        elif op < 0.7 and cut is not None:
            net.heal(cut)
            cut = None
        elif op < 0.73:
            net.paused.add(NodeId(node))  # a crash (or a long pause)
        elif op < 0.78:
            net.paused.discard(NodeId(node))
        elif op < 0.8 and cut is None and not net.paused:  # a graceful restart, reusing the node id
            # (everyone hears the leave; a restart that reuses a crashed node's id is another story:
            # members that miss the new process's hello keep the old slice until the new one
            # numbers past it)
            run(net, node, g.leave())
            fresh = net.nodes[NodeId(node)] = net_make(net, node)
            net.subs[NodeId(node)] = set()
            models[node] = Model()  # a new process: new listeners
            fresh.begin_join()
            net.join(node, rng.choice([n for n in names if n != node]))
            fresh.end_join()
        else:
            net.step(rng.choice([1, 1, 2, 6, 12]))
        for n in names:
            if NodeId(n) not in net.paused:
                models[n].check(net[n])
    if cut is not None:
        net.heal(cut)
    net.paused.clear()
    net.step(20)
    everything = {d.id for g in net.nodes.values() for d in g.local.conns.values()}
    for n in names:
        models[n].check(net[n])
        assert {d.id for d in net[n].replica.connections()} == everything  # converged, no ghosts
