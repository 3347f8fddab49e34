"""Heartbeats: their compact wire form, and how beats stretch to keep within ``beat_budget``.

Every member hears every beat, so a node receives ``members * beat size`` bytes per beat:
the one cost of the mesh that grows with its size. A beat is 15 bytes plus a varint;
past the budget a node beats every second tick (never rarer than twice per ``ttl``),
while ticks — which notice a silent member — stay at ``interval``, so failure detection
keeps its bound. Pure machines over a FakeNet on a fake clock, as in test_gossip.py, with
node ids shaped like real ones (16 hex digits) so beats take their compact form.
"""

from __future__ import annotations

import itertools
import logging
import math

import pytest
from gossip_net import assert_converged, join_all

from superline_zmq import ClusterTiming
from superline_zmq.gossip import (
    COMPACT_BEAT,
    Connect,
    Disconnect,
    Gossip,
    GossipError,
    Heartbeat,
    Hello,
    Leave,
    Message,
    Peer,
    Pull,
    Welcome,
    decode,
    digest_of,
    encode,
    encode_beat,
)
from superline_zmq.gossip_driver import GossipDriver
from superline_zmq.ids import NodeId
from superline_zmq.presence import ConnDescriptor, Delta, Snapshot
from superline_zmq.testing import FakeClock, FakeNet

INTERVAL, TTL = 1.0, 5.0
N0, N1, N2, N3, N4, N5 = (f"{i:016x}" for i in range(6))


def desc(cid: str, node: str) -> ConnDescriptor:
    return ConnDescriptor(id=cid, role="user", node_id=node, connected_at=0.0)


# ---------------------------------------------------------------- the compact form
@pytest.mark.parametrize(
    ("seq", "size"),
    [(0, 16), (127, 16), (128, 17), (2**14 - 1, 17), (2**14, 18), (2**28 - 1, 19), (2**32, 20), (2**64 - 1, 25)],
)
def test_a_beat_is_15_bytes_and_its_sequence_as_a_varint(seq: int, size: int) -> None:
    hb = Heartbeat("0123456789abcdef", seq, 2**48 - 1)
    data = encode(hb)
    assert data == encode_beat(hb) and data[0] == COMPACT_BEAT
    assert len(data) == size
    assert data[1:9] == bytes.fromhex("0123456789abcdef")
    assert decode(data) == hb


@pytest.mark.parametrize(
    "hb",
    [
        Heartbeat("A", 1, 5),  # not 16 hex digits: a custom node id
        Heartbeat("0123456789ABCDEF", 1, 5),  # upper case would not come back the same
        Heartbeat("0123456789abcde", 1, 5),
        Heartbeat("0123456789abcdef", 1, 2**48),  # a digest wider than the compact form's
        Heartbeat("0123456789abcdef", -1, 5),
    ],
)
def test_a_beat_that_does_not_fit_the_compact_form_goes_as_msgpack(hb: Heartbeat) -> None:
    data = encode(hb)
    assert data[0] != COMPACT_BEAT
    assert decode(data) == hb


@pytest.mark.parametrize(
    "msg",
    [
        Hello("0123456789abcdef", {"router": "tcp://127.0.0.1:1"}, 3),
        Welcome("0123456789abcdef", {}, [Peer("0123456789abcdef", {})]),
        Pull("0123456789abcdef"),
        Leave("0123456789abcdef"),
        Delta("0123456789abcdef", 1, remove="x"),
        Snapshot("0123456789abcdef", 1, []),
        Heartbeat("A", 1, 1),
    ],
)
def test_no_other_message_starts_with_the_compact_beat_byte(msg: Message) -> None:
    assert encode(msg)[0] != COMPACT_BEAT
    assert decode(encode(msg)) == msg


BODY = bytes([COMPACT_BEAT]) + bytes(14)  # type byte, node id, digest: everything but the sequence


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (bytes([COMPACT_BEAT]), "expected 16 to 25"),
        (BODY, "expected 16 to 25"),  # no sequence at all
        (BODY + b"\x80", "truncated sequence"),
        (BODY + b"\x80\x00", "overlong sequence"),
        (BODY + b"\x05\x05", "bytes after the sequence"),
        (BODY + b"\xff" * 9 + b"\x02", "over 64 bits"),
        (BODY + b"\xff" * 10 + b"\x01", "expected 16 to 25"),
    ],
)
def test_a_malformed_compact_beat_is_a_gossip_error_that_says_what(data: bytes, why: str) -> None:
    with pytest.raises(GossipError, match=why):
        decode(data)


def test_a_digest_fits_the_compact_form() -> None:
    views = [[Peer(f"{i:016x}", FakeNet.addr_of(str(i))) for i in range(n)] for n in range(1, 50)]
    digests = {digest_of(v) for v in views}
    assert len(digests) == len(views) and all(0 <= d < 2**48 for d in digests)


# ---------------------------------------------------------------- the budget
def net_with(budget: float | None, *names: str) -> FakeNet:
    """A converged cluster of ``names`` (joined through the first) whose nodes have ``budget``."""
    clock = FakeClock()

    def make(node: NodeId) -> Gossip:
        return Gossip(node, FakeNet.addr_of(node), clock=clock, interval=INTERVAL, ttl=TTL, beat_budget=budget)

    return join_all(FakeNet(clock, interval=INTERVAL, ttl=TTL, make=make), names, lambda n: desc(f"{n}.1", n), steps=3)


def beats(net: FakeNet) -> dict[NodeId, int]:
    return {n: g.stats["beats"] for n, g in net.nodes.items()}


def test_beats_stretch_to_every_second_tick_past_the_budget_and_nobody_is_taken_for_dead() -> None:
    # 4 members hear each 16-byte beat: 64 B per beat, over a 40 B/s budget, so every second tick
    net = net_with(40.0, N0, N1, N2, N3, N4)
    assert all(g.beat_every(16, 4) == 2 for g in net.nodes.values())
    before, syncs = beats(net), sum(g.stats["syncs"] for g in net.nodes.values())
    net.step(30)
    assert {n: b - before[n] for n, b in beats(net).items()} == dict.fromkeys(net.nodes, 15)
    assert sum(g.stats["syncs"] for g in net.nodes.values()) == syncs  # views agree: nothing to reconcile
    assert all(g.stats["beats_over_budget"] == 0 for g in net.nodes.values())
    assert_converged(net)  # 30 s of half the beats: every member still alive everywhere
    wire = sum(net.bytes_sent.values())
    net.step(10)
    assert (sum(net.bytes_sent.values()) - wire) / len(net.nodes) / (10 * INTERVAL) <= 40.0


def test_with_room_in_the_budget_or_without_one_every_tick_beats() -> None:
    for budget in (64.0, None):
        net = net_with(budget, N0, N1, N2, N3, N4)
        before = beats(net)
        net.step(10)
        assert {n: b - before[n] for n, b in beats(net).items()} == dict.fromkeys(net.nodes, 10), budget


def test_a_crash_is_still_seen_within_ttl_and_one_tick_when_beats_are_stretched() -> None:
    net = net_with(40.0, N0, N1, N2, N3, N4)
    net.step(1)  # whichever tick the victim's last beat was, the bound is from its last message
    victim = NodeId(N2)
    last_heard = {n: g.membership.get(victim).heard_at for n, g in net.nodes.items() if n != victim}  # type: ignore[union-attr]
    net.paused.add(victim)
    seen_dead: dict[NodeId, float] = {}
    for _ in range(int(TTL / INTERVAL) + 3):
        net.step()
        for n in last_heard:
            if n not in seen_dead and not net[n].alive(victim):
                seen_dead[n] = net.clock()
    assert seen_dead.keys() == last_heard.keys()
    for n, at in seen_dead.items():
        assert TTL <= at - last_heard[n] <= TTL + INTERVAL, (n, at - last_heard[n])
    assert_converged(net)


def test_a_view_change_beats_at_the_next_tick_whatever_the_schedule() -> None:
    net = net_with(40.0, N0, N1, N2, N3)  # 3 members * 16 B = 48 B per beat: every second tick
    seed = net[N0]
    # find a tick right after the seed's scheduled beat, so its next one is not due
    for _ in range(3):
        b = seed.stats["beats"]
        net.step()
        if seed.stats["beats"] > b:
            break
    else:
        raise AssertionError("the seed never beat")
    syncs = sum(g.stats["syncs"] for g in net.nodes.values())
    [g] = net.add(N5)
    net.run(N5, g.put(desc(f"{N5}.1", N5)))
    net.join(N5, N0)  # the seed's view changes now
    b = seed.stats["beats"]
    net.step()
    assert seed.stats["beats"] == b + 1  # not skipped: its digest changed
    net.step()  # members synced with the seed and learned the newcomer within the same round
    assert_converged(net)
    # one sync per member with the seed, and two more while the last views settle (the
    # seed's and the newcomer's with N1): not a second round of one per member
    assert sum(g.stats["syncs"] for g in net.nodes.values()) - syncs == 3 + 2


def test_a_lost_last_delta_is_repaired_by_the_next_stretched_beat() -> None:
    net = net_with(40.0, N0, N1, N2, N3, N4)
    lost = net.drop(lambda src, dst, msg: isinstance(msg, Delta) and dst == N1)
    net.run(N0, net[N0].put(desc(f"{N0}.late", N0)))
    net.heal(lost)
    assert net[N1].replica.seq_of(NodeId(N0)) < net[N0].local.seq
    net.step(2)  # at most two ticks to N0's next beat, whose sequence makes N1 pull
    assert_converged(net)


def test_beats_never_stretch_past_two_per_ttl_and_going_over_the_budget_is_counted() -> None:
    net = net_with(1.0, N0, N1, N2, N3, N4)  # a budget no beat fits
    g = net[N0]
    assert g.max_beat_every == 2 and g.beat_every(16, 4) == 2
    assert Gossip(NodeId(N0), clock=FakeClock(), interval=1.0, ttl=9.0).max_beat_every == 4
    assert Gossip(NodeId(N0), clock=FakeClock(), interval=1.0, ttl=1.5).max_beat_every == 1
    net.step(40)
    assert_converged(net)
    assert all(g.stats["beats_over_budget"] > 0 for g in net.nodes.values())


@pytest.mark.parametrize("budget", [0.0, -1.0, math.inf, math.nan])
def test_a_budget_must_be_a_positive_number_of_bytes(budget: float) -> None:
    with pytest.raises(ValueError, match="beat_budget"):
        Gossip(NodeId(N0), clock=FakeClock(), beat_budget=budget)
    with pytest.raises(ValueError, match="beat_budget"):
        ClusterTiming(beat_budget=budget)


def test_cluster_timing_carries_the_budget_and_its_spec_round_trips() -> None:
    assert ClusterTiming.lan().beat_budget == ClusterTiming.local().beat_budget == 2048.0
    with pytest.raises(ValueError, match="beat_budget"):
        ClusterTiming(beat_budget=True)  # type: ignore[arg-type]
    for t in (ClusterTiming(beat_budget=None), ClusterTiming(beat_budget=512.0)):
        assert ClusterTiming.from_spec(t.to_spec()) == t


async def test_a_driver_over_the_budget_warns(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    net = FakeNet(clock, auto_deliver=True)
    timing = ClusterTiming(beat_budget=1.0)
    drivers = []
    for name in (N0, N1, N2):
        node = NodeId(name)
        holder: list[GossipDriver] = []
        link = net.link(node, lambda data, h=holder: h[0].receive(data), FakeNet.addr_of(name))
        d = GossipDriver(node, link, addr=FakeNet.addr_of(name), timing=timing, clock=clock, sleep=clock.sleep)
        holder.append(d)
        drivers.append(d)
    with caplog.at_level(logging.WARNING, logger="superline_zmq"):
        for d in drivers:
            d.start()
        for d in drivers[1:]:
            net.post(d.node, drivers[0].node, d.hello())
        await clock.run(5 * timing.heartbeat_interval)
    try:
        assert all(d.statistics()["gossip_beats_over_budget"] > 0 for d in drivers)
        assert any("beat_budget" in r.getMessage() and "2 members" in r.getMessage() for r in caplog.records)
    finally:
        for d in drivers:
            await d.close(leave=False)


# ---------------------------------------------------------------- links that broke one way
def test_a_member_heard_only_directly_for_a_ttl_gets_its_links_remade_once_per_ttl() -> None:
    # B's broadcasts stop reaching A (a subscription its side refused once and nobody retried)
    # while B keeps talking to A directly: A would keep B alive on that alone and lose every
    # presence delta and publication B broadcasts. A re-makes its links to B instead.
    net = net_with(None, N0, N1, N2)
    a, b = net[N0], NodeId(N1)
    cut = net.drop(lambda src, dst, msg: src == b and dst == N0 and isinstance(msg, Heartbeat | Delta))
    relinked: list[float] = []
    cut_at = net.clock()
    for _ in range(int(3 * TTL / INTERVAL)):
        a.receive(encode(Pull(N1)))  # B asks A for its slice every beat: first-hand, direct
        net.step()
        if [x for x in net.did(N0, since=net.clock()) if isinstance(x, Connect | Disconnect)]:
            relinked.append(net.clock())
        assert a.alive(b)
    assert a.stats["relinks"] == len(relinked) >= 2
    assert all(later - earlier > TTL for earlier, later in itertools.pairwise(relinked))  # once per ttl
    assert relinked[0] - cut_at <= TTL + 2 * INTERVAL  # the first a ttl (and a tick) after its last beat
    net.heal(cut)
    net.step(2)
    before = a.stats["relinks"]
    net.step(int(3 * TTL / INTERVAL))
    assert a.stats["relinks"] == before  # its beats arrive again: nothing more to mend
    assert_converged(net)


def test_a_healthy_mesh_and_a_member_back_from_the_dead_are_never_relinked() -> None:
    net = net_with(40.0, N0, N1, N2, N3, N4)  # stretched beats: every second tick
    net.step(30)
    net.paused.add(NodeId(N2))
    net.step(int(TTL / INTERVAL) + 2)
    net.paused.discard(NodeId(N2))
    net.step(10)
    assert_converged(net)
    assert all(g.stats["relinks"] == 0 for g in net.nodes.values())


@pytest.mark.parametrize("how", ["pull", "direct"])
def test_first_hand_news_outside_beats_brings_a_dead_member_back_and_a_stranger_stays_out(how: str) -> None:
    # a member's pull of our slice (a gossip message), or a direct message outside gossip
    # (Gossip.heard_from: the adapter's call from a member): either is first-hand
    net = net_with(None, N0, N1, N2)
    a = net[N0]
    net.paused.add(NodeId(N1))
    net.step(int(TTL / INTERVAL) + 1)
    assert not a.alive(NodeId(N1))
    net.paused.discard(NodeId(N1))

    def news(node: str) -> list[str]:
        actions = a.receive(encode(Pull(node))) if how == "pull" else a.heard_from(NodeId(node))
        return [type(x).__name__ for x in actions]

    answer = ["Send"] if how == "pull" else []  # a pull is answered, whoever asks directly
    assert news(N1) == answer and a.alive(NodeId(N1))  # it reached us: alive, its links kept
    assert news(N4) == answer and NodeId(N4) not in a.peers and not a.alive(NodeId(N4))  # not membership
