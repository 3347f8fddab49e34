"""Gossip at scale on the pure machine: rounds to converge, and gossip bytes per node per second.

Runs N :class:`~superline_zmq.gossip.Gossip` machines over
:class:`~superline_zmq.testing.FakeNet` (PUB/SUB semantics, routed sends, as ZeroMQ) on a
:class:`~superline_zmq.testing.FakeClock`, with the LAN timings (beat 1 s, ttl 5 s,
forget after 10 s). Nothing sleeps and no socket is opened: a simulated minute of a
200-node cluster takes seconds of CPU. Per size it reports:

- **bootstrap**: beats until N nodes that all said hello to node 0 at once agree;
- **steady**: gossip bytes per node per second over 10 quiet beats, counted two ways:
  *emitted* (what a node hands its transport: a broadcast counts once — the PUB socket
  does the fan-out) and *wire* (every copy a subscriber receives, as TCP carries them).
  Past the default ``beat_budget`` (2 KiB/s per node: above ~120 nodes) beats go every
  second tick, so the wire figure stays under it at 200 nodes;
- **join**: beats until one more node, seeded with node 0, is known alive by everyone
  and knows everyone, presence included (every slice at its owner's sequence), and the
  wire bytes per node that took, beats included;
- **crash**: beats until every survivor sees a silent node dead (bounded by ttl + one
  beat), and the wire bytes per node meanwhile;
- **heal**: beats until a quarter of the nodes, cut off for 7 s (past ttl, before
  forget_after), and the rest agree again once the cut is healed;
- **long heal**: the same after a 22 s cut (both sides forgot each other and their
  tombstones lapsed): only re-probing forgotten peers (capped at 30 s, jittered) can
  bring them back, and the wire bytes per node per second the probes cost meanwhile.

Convergence is checked once per beat, after the beat's traffic settled; a "round" is one
beat. ``tests/test_gossip_sim.py`` asserts the bounds at 8 and 64 nodes.

Usage::

    python bench/gossip_sim.py                  # 8, 64 and 200 nodes
    python bench/gossip_sim.py --sizes 8,64 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from superline_zmq.gossip import Gossip
from superline_zmq.ids import NodeId
from superline_zmq.presence import ConnDescriptor
from superline_zmq.testing import FakeClock, FakeNet

INTERVAL, TTL, FORGET = 1.0, 5.0, 10.0
#: No scenario may take longer than this many beats (every loop that sends is bounded).
MAX_ROUNDS = 60
#: Re-probing's cap (the Gossip default: 30 beats), which bounds the long heal.
REPROBE_MAX = 30 * INTERVAL


@dataclass
class Result:
    nodes: int
    bootstrap_rounds: int
    join_rounds: int
    crash_rounds: int
    crash_seconds: float
    heal_rounds: int
    long_heal_rounds: int
    cut_probe_bytes_per_node_s: float
    join_wire_bytes_per_node: float
    crash_wire_bytes_per_node: float
    emitted_bytes_per_node_s: float
    wire_bytes_per_node_s: float
    steady_messages_per_node_s: float
    cpu_seconds: float


def name(i: int) -> str:
    return f"{i:016x}"  # shaped like real node ids (16 hex digits), so byte counts are real


def make_net() -> FakeNet:
    return FakeNet(FakeClock(), interval=INTERVAL, ttl=TTL, forget_after=FORGET, routed=True, record=False)


def running(net: FakeNet) -> list[NodeId]:
    return [n for n in net.nodes if n not in net.paused]


def converged(net: FakeNet, nodes: Iterable[NodeId] | None = None) -> bool:
    """Every running node (or ``nodes``) sees exactly the others alive and holds their slices up to date."""
    group = sorted(nodes if nodes is not None else running(net))
    members = set(group)
    for n in group:
        g = net.nodes[n]
        if {m for m in g.peers if g.alive(m)} != members - {n}:
            return False
        if any(g.replica.seq_of(m) != net.nodes[m].local.seq for m in group):
            return False
    return True


def rounds_until(net: FakeNet, done: Callable[[], bool]) -> int:
    """Beats until ``done()`` holds (checked after each beat); fails past :data:`MAX_ROUNDS`."""
    for k in range(1, MAX_ROUNDS + 1):
        net.step()
        if done():
            return k
    raise AssertionError(f"not converged within {MAX_ROUNDS} beats")


def add(net: FakeNet, i: int) -> Gossip:
    [g] = net.add(name(i))
    net.run(g.node, g.put(ConnDescriptor(id=f"{name(i)}.1", role="user", node_id=g.node, connected_at=0.0)))
    return g


def bootstrap(n: int) -> tuple[FakeNet, int]:
    """``n`` nodes, each with one connection, that all said hello to node 0 at once, run until
    they agree; returns the net and the beats that took."""
    net = make_net()
    for i in range(n):
        add(net, i)
    for i in range(1, n):
        net.join(name(i), name(0))
    return net, rounds_until(net, lambda: converged(net))


@dataclass
class Steady:
    wire: float  # bytes per node per second, every copy counted
    emitted: float  # bytes per node per second handed to the transport
    messages: float  # messages per node per second, every copy counted


def steady(net: FakeNet, beats: int = 10) -> Steady:
    """Gossip cost over ``beats`` quiet beats (nothing changes: only beats, and whatever else
    the protocol sends), per node per second."""
    n = len(running(net))
    wire0, msgs0 = sum(net.bytes_sent.values()), sum(net.messages_sent.values())
    emitted0 = sum(net.bytes_emitted.values())
    net.step(beats)
    seconds = beats * INTERVAL
    return Steady(
        wire=(sum(net.bytes_sent.values()) - wire0) / n / seconds,
        emitted=(sum(net.bytes_emitted.values()) - emitted0) / n / seconds,
        messages=(sum(net.messages_sent.values()) - msgs0) / n / seconds,
    )


def simulate(n: int, *, steady_beats: int = 10) -> Result:
    """Run every scenario on one ``n``-node cluster; see the module docstring."""
    began = time.process_time()
    net, boot = bootstrap(n)
    seed = name(0)
    quiet = steady(net, steady_beats)

    # a join
    wire0 = sum(net.bytes_sent.values())
    newcomer = add(net, n)
    net.join(newcomer.node, seed)
    join = rounds_until(net, lambda: converged(net))
    join_wire = (sum(net.bytes_sent.values()) - wire0) / (n + 1)

    # a crash (the newcomer's neighbour goes silent for good)
    victim = NodeId(name(n // 2))
    net.paused.add(victim)
    crashed_at = net.clock()
    wire0 = sum(net.bytes_sent.values())
    crash = rounds_until(net, lambda: all(not net.nodes[s].alive(victim) for s in running(net)) and converged(net))
    crash_seconds = net.clock() - crashed_at
    crash_wire = (sum(net.bytes_sent.values()) - wire0) / n

    # a partition between ttl and forget_after, then heal
    island = [NodeId(name(i)) for i in range(1, max(2, (n + 1) // 4 + 1)) if NodeId(name(i)) not in net.paused]
    cut = net.split(island)
    net.step(int((TTL + FORGET) / 2 / INTERVAL) - 1)
    assert not converged(net), "the partition went unnoticed"
    net.heal(cut)
    heal = rounds_until(net, lambda: converged(net))

    # a partition past forget_after and the tombstones' lapse: re-probing heals it
    cut = net.split(island)
    net.step(int(2 * FORGET / INTERVAL) + 2)
    assert not converged(net)
    wire0 = sum(net.bytes_sent.values())
    net.step(10)
    cut_bytes = (sum(net.bytes_sent.values()) - wire0) / n / (10 * INTERVAL)
    net.heal(cut)
    long_heal = rounds_until(net, lambda: converged(net))

    return Result(
        nodes=n,
        bootstrap_rounds=boot,
        join_rounds=join,
        crash_rounds=crash,
        crash_seconds=crash_seconds,
        heal_rounds=heal,
        long_heal_rounds=long_heal,
        cut_probe_bytes_per_node_s=round(cut_bytes, 1),
        join_wire_bytes_per_node=round(join_wire),
        crash_wire_bytes_per_node=round(crash_wire),
        emitted_bytes_per_node_s=round(quiet.emitted, 1),
        wire_bytes_per_node_s=round(quiet.wire, 1),
        steady_messages_per_node_s=round(quiet.messages, 1),
        cpu_seconds=round(time.process_time() - began, 2),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,64,200", help="comma-separated cluster sizes (default 8,64,200)")
    parser.add_argument("--json", action="store_true", help="one JSON object per size")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not args.json:
        print(f"beat {INTERVAL} s, ttl {TTL} s, forget after {FORGET} s; rounds are beats")
        print(
            f"{'nodes':>5} {'boot':>5} {'join':>5} {'crash':>6} {'heal':>5} {'long':>5} {'join B':>8} {'crash B':>8}"
            f" {'emitted B/s':>12} {'wire B/s':>10} {'msgs/s':>7} {'cpu s':>6}"
        )
    for n in sizes:
        r = simulate(n)
        if args.json:
            print(json.dumps(asdict(r)), flush=True)
        else:
            print(
                f"{r.nodes:>5} {r.bootstrap_rounds:>5} {r.join_rounds:>5} {r.crash_rounds:>6} {r.heal_rounds:>5}"
                f" {r.long_heal_rounds:>5} {r.join_wire_bytes_per_node:>8.0f} {r.crash_wire_bytes_per_node:>8.0f}"
                f" {r.emitted_bytes_per_node_s:>12.1f} {r.wire_bytes_per_node_s:>10.1f}"
                f" {r.steady_messages_per_node_s:>7.1f} {r.cpu_seconds:>6.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
