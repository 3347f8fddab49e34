"""Re-probing seeds and forgotten peers (superline_zmq.probes): backoff, jitter, the cap, dedupe, bounds."""

from __future__ import annotations

import itertools
from random import Random

import pytest

from superline_zmq.ids import NodeId
from superline_zmq.probes import Prober, covers

OWN = {"pub": "tcp://me:1", "router": "tcp://me:2"}
SEED = {"router": "tcp://seed:2"}
B = NodeId("B")
B_ADDR = {"pub": "tcp://b:1", "router": "tcp://b:2"}


def make(seed: int = 1, *, initial: float = 1.0, cap: float = 8.0, limit: int = 256) -> Prober:
    return Prober(OWN, initial=initial, cap=cap, rng=Random(seed), limit=limit)


def probe_times(
    p: Prober, until: float, *, step: float = 0.25, live: list[tuple[NodeId, dict[str, str]]] | None = None
) -> list[float]:
    times, now = [], 0.0
    while now <= until:
        if p.due(now, live or [(NodeId("X"), {"router": "tcp://x:2"})], alone=False):
            times.append(now)
        now += step
    return times


def test_covers() -> None:
    assert covers(B_ADDR, {"router": "tcp://b:2"}) and covers(B_ADDR, B_ADDR)
    assert not covers(B_ADDR, {"router": "tcp://c:2"}) and not covers(B_ADDR, {})


def test_a_seed_is_probed_at_once_then_backs_off_with_jitter_to_the_cap_forever() -> None:
    p = make()
    assert p.add_seed(SEED, 0.0)
    times = probe_times(p, 200.0)
    assert times[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # each wait is drawn from half to all of the nominal one (1, 2, 4, then the cap 8), so
    # it never exceeds the nominal (plus the polling step) and never falls under half of it
    nominal = [2.0, 4.0, 8.0] + [8.0] * (len(gaps) - 3)
    assert all(n / 2 <= g <= n + 0.25 for g, n in zip(gaps, nominal, strict=True))
    assert len(times) >= 200 / 8  # forever: at least once per cap
    assert len(set(gaps[3:])) > 1  # jittered, not lockstep


def test_jitter_comes_from_the_injected_random() -> None:
    def run(seed: int) -> list[float]:
        p = make(seed)
        p.add_seed(SEED, 0.0)
        return probe_times(p, 100.0)

    assert run(7) == run(7)  # reproducible
    assert run(7) != run(8)  # and different per node


def test_while_alone_every_target_is_probed_every_tick() -> None:
    p = make()
    p.add_seed(SEED, 0.0)
    p.forgotten(B, B_ADDR, 0.0)
    for now in (0.0, 1.0, 2.0, 3.0):
        assert [t.addr for t in p.due(now, [], alone=True)] == [SEED, B_ADDR]


def test_a_target_a_live_member_answers_at_is_skipped() -> None:
    p = make()
    p.add_seed(SEED, 0.0)
    p.forgotten(B, B_ADDR, 0.0)
    seed_member = (NodeId("S"), {"pub": "tcp://seed:1", "router": "tcp://seed:2"})
    assert p.due(100.0, [seed_member, (B, B_ADDR)], alone=False) == []
    assert [t.seed for t in p] == [True]  # the forgotten peer is back: dropped; the seed stays
    # once the seed is no member any more, it is probed again, its backoff started over
    # (the first wait drawn from half to all of ``initial``)
    assert [t.addr for t in p.due(101.0, [], alone=False)] == [SEED]
    assert [t.delay for t in p] == [2.0]


def test_no_address_is_probed_twice_nor_our_own() -> None:
    p = make()
    assert p.add_seed(SEED, 0.0) and not p.add_seed(SEED, 0.0)
    assert not p.add_seed({"router": OWN["router"]}, 0.0)
    seed_node = {"pub": "tcp://seed:1", "router": "tcp://seed:2"}
    assert not p.forgotten(NodeId("S"), seed_node, 0.0)  # the seed covers it
    assert p.forgotten(B, B_ADDR, 0.0) and not p.forgotten(B, B_ADDR, 1.0)
    assert not p.forgotten(NodeId("B2"), B_ADDR, 1.0)  # same address, a new incarnation: once
    assert not p.forgotten(NodeId("C"), None, 0.0)  # nowhere to probe
    assert len(p) == 2


def test_forgotten_peers_are_bounded_oldest_first() -> None:
    p = make(limit=3)
    p.add_seed(SEED, 0.0)
    for i in range(5):
        p.forgotten(NodeId(f"n{i}"), {"router": f"tcp://n{i}:2"}, float(i))
    assert [t.node for t in p] == [None, "n2", "n3", "n4"]


def test_an_addressless_peer_is_matched_by_id() -> None:
    p = make()
    assert p.forgotten(B, {}, 0.0)  # the in-process bus: no addresses, ids reach
    assert [t.node for t in p.due(0.0, [], alone=True)] == [B]
    assert p.due(50.0, [(B, {})], alone=False) == [] and len(p) == 0


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_bad_backoff_is_refused(initial: float, cap: float) -> None:
    with pytest.raises(ValueError, match="initial"):
        Prober(OWN, initial=initial, cap=cap, rng=Random(0))
