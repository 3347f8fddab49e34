"""What the gossip machine's tests share: a cluster converged on a FakeNet, and what converged means."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from superline_zmq.gossip import Gossip
from superline_zmq.presence import ConnDescriptor
from superline_zmq.testing import FakeNet


def members(g: Gossip) -> list[str]:
    """The live members ``g`` knows, itself excluded."""
    return sorted(n for n in g.peers if g.alive(n))


def conns(g: Gossip) -> list[str]:
    return [d.id for d in g.replica.connections()]


def assert_converged(net: FakeNet) -> None:
    """Every running node sees exactly the others alive, every connection, and every slice up to date."""
    running = [n for n in net.nodes if n not in net.paused]
    everything = sorted(d.id for n in running for d in net.nodes[n].local.conns.values())
    for n in running:
        g = net.nodes[n]
        assert members(g) == sorted(m for m in running if m != n), f"{n} members"
        assert sorted(conns(g)) == everything, f"{n} presence"
        for m in running:
            assert g.replica.seq_of(m) == net.nodes[m].local.seq, f"{n}'s seq of {m}"


def join_all(net: FakeNet, names: Sequence[str], conn: Callable[[str], ConnDescriptor], *, steps: int) -> FakeNet:
    """Add ``names`` to ``net`` with one connection each (``conn(name)``), join each through the
    first, run ``steps`` beats, and check they converged."""
    net.add(*names)
    for name in names:
        net.run(name, net[name].put(conn(name)))
    for name in names[1:]:
        net.join(name, names[0])
    net.step(steps)
    assert_converged(net)
    return net
