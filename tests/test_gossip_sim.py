"""Convergence bounds of the gossip at 8 and 64 nodes, and the steady-state cost at 200, from
bench/gossip_sim.py (pure machine, fake clock).

The bench prints the figures (and runs 200 nodes); this asserts the bounds the design
promises, which are rounds and bytes — deterministic on a fake clock — never timings.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gossip_sim.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gossip_sim", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gossip_sim", module)
    spec.loader.exec_module(module)
    return module


sim = load()


@functools.cache
def simulate(n: int) -> object:
    return sim.simulate(n)


@pytest.mark.parametrize("n", [8, 64])
def test_convergence_bounds(n: int) -> None:
    r = simulate(n)
    assert r.bootstrap_rounds <= 3, r
    assert r.join_rounds <= 3, r  # a join converges within three beats
    # a crash is seen everywhere within ttl + one beat of the last heartbeat
    assert r.crash_seconds <= sim.TTL + sim.INTERVAL, r
    assert r.heal_rounds <= 3, r  # a cut shorter than forget_after heals within three beats
    # a cut both sides forgot heals by re-probing: within the backoff's cap and a few beats
    assert r.long_heal_rounds <= sim.REPROBE_MAX / sim.INTERVAL + 3, r
    # steady state: constant-size heartbeats only, so a node hands its transport the
    # same few bytes a second whatever the cluster's size, and the wire carries one copy
    # per member
    assert r.emitted_bytes_per_node_s <= 40, r
    assert r.wire_bytes_per_node_s <= 40 * (n - 1), r
    assert r.steady_messages_per_node_s == n - 1, r  # heartbeats only: no syncs, no pulls


def test_a_heartbeat_does_not_grow_with_the_cluster() -> None:
    small, large = simulate(8), simulate(64)
    assert small.emitted_bytes_per_node_s == large.emitted_bytes_per_node_s  # type: ignore[attr-defined]


def test_a_200_node_mesh_costs_each_node_under_2_kib_a_second() -> None:
    # every member hears every beat; 199 * 16 bytes a second is over the default beat_budget
    # (2 KiB/s), so beats go every second tick and the wire carries half as many
    net, rounds = sim.bootstrap(200)
    assert rounds <= 3
    quiet = sim.steady(net)
    assert quiet.wire <= 2048, quiet
    assert quiet.messages == 199 / 2, quiet  # beats only, every second tick: no syncs, no pulls
