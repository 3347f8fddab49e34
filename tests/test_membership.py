"""Peer liveness (superline_zmq.membership): the transition table and each move, with ``now`` passed in."""

from __future__ import annotations

import re

import pytest

from superline_zmq import membership as mod
from superline_zmq.ids import NodeId
from superline_zmq.membership import (
    INITIAL,
    TRANSITIONS,
    Admission,
    Liveness,
    Member,
    Membership,
    MembershipError,
)

ME, B = NodeId("A"), NodeId("B")
TTL, FORGET = 5.0, 10.0
ADDR = {"pub": "tcp://b:1", "router": "tcp://b:2"}


def make() -> Membership:
    return Membership(ME, ttl=TTL, forget_after=FORGET)


def test_every_state_has_a_row_and_no_state_moves_to_itself() -> None:
    assert set(TRANSITIONS) == set(Liveness)
    for state, targets in TRANSITIONS.items():
        assert state not in targets and targets <= set(Liveness)
    assert INITIAL == {Liveness.HEARSAY, Liveness.ALIVE, Liveness.LEFT}


def test_the_docstring_lists_exactly_the_table() -> None:
    doc = mod.__doc__ or ""
    rows = dict(re.findall(r"^\s{4}([A-Z]+)\s+-> (.+)$", doc, re.MULTILINE))
    listed = {Liveness[s]: frozenset(Liveness[t] for t in re.findall(r"\b([A-Z]{4,})\b", rows[s])) for s in rows}
    assert listed == TRANSITIONS


@pytest.mark.parametrize(
    ("src", "dst"),
    [(s, d) for s in Liveness for d in Liveness if d not in TRANSITIONS[s] and d is not s],
    ids=lambda s: s.name,
)
def test_an_illegal_move_raises(src: Liveness, dst: Liveness) -> None:
    m = Member(B, src, None, 0.0, 0.0)
    with pytest.raises(MembershipError, match=f"{src.name} -> {dst.name} is not a legal move"):
        Membership._move(m, dst)
    assert m.state is src


def test_hearsay_then_first_hand_then_silence() -> None:
    ms = make()
    assert ms.named(B, ADDR, 0.0) is Admission.NEW
    assert ms.state(B, 0.0) is Liveness.HEARSAY and not ms.alive(B, 0.0)
    assert ms.named(B, {"pub": "elsewhere"}, 1.0) is Admission.KNOWN  # hearsay never moves it
    assert ms.heard(B, 2.0) is Admission.KNOWN
    assert ms.state(B, 2.0) is Liveness.ALIVE
    assert ms.alive(B, 2.0 + TTL)  # exactly ttl: still alive
    assert ms.state(B, 2.0 + TTL + 0.1) is Liveness.DEAD  # settled on read, no tick needed
    assert [m.node for m in ms.members(8.0)] == [B]  # dead members are still talked to
    assert ms.heard(B, 9.0) is Admission.KNOWN and ms.alive(B, 9.0)  # resumed: taken back


def test_a_first_hand_address_change_moves_a_member() -> None:
    ms = make()
    ms.heard(B, 0.0, ADDR)
    assert ms.heard(B, 1.0, {"pub": "new"}) is Admission.MOVED
    assert ms.get(B) is not None and ms.get(B).addr == {"pub": "new"}  # type: ignore[union-attr]


def test_a_node_heard_without_an_address_is_alive_but_no_member_until_it_gives_one() -> None:
    ms = make()
    assert ms.heard(B, 0.0) is Admission.KNOWN
    assert ms.alive(B, 0.0) and ms.members(0.0) == []
    assert ms.heard(B, 1.0, ADDR) is Admission.NEW
    assert [m.node for m in ms.members(1.0)] == [B]


def test_expire_forgets_the_long_dead_and_unconfirmed_hearsay() -> None:
    ms = make()
    ms.heard(B, 0.0, ADDR)
    C = NodeId("C")
    ms.named(C, ADDR, 0.0)
    assert ms.expire(FORGET) == []  # exactly forget_after: kept
    assert sorted(ms.expire(FORGET + 0.1)) == [(B, True), (C, True)]
    assert ms.state(B, 11.0) is Liveness.FORGOTTEN and ms.members(11.0) == []
    assert ms.named(B, ADDR, 12.0) is Admission.IGNORED  # hearsay cannot resurrect it
    assert ms.prune(FORGET + 0.1 + FORGET) == []
    assert sorted(ms.prune(FORGET + 0.2 + FORGET)) == [B, C]  # tombstones lapse
    assert ms.get(B) is None and len(ms) == 0


def test_a_forgotten_node_heard_first_hand_starts_afresh_at_the_address_remembered() -> None:
    ms = make()
    ms.heard(B, 0.0, ADDR)
    ms.pull_sent(B, 0.0)
    ms.expire(20.0)
    assert not ms.pulling(B) and ms.members(20.0) == []
    assert ms.heard(B, 21.0) is Admission.NEW  # a heartbeat (no address): the one we knew
    assert ms.alive(B, 21.0) and [m.addr for m in ms.members(21.0)] == [ADDR]
    assert ms.get(B).known_since == 21.0  # type: ignore[union-attr]
    ms.expire(40.0)
    assert ms.heard(B, 41.0, {"pub": "moved"}) is Admission.NEW  # or the one it gives
    assert [m.addr for m in ms.members(41.0)] == [{"pub": "moved"}]


def test_a_node_never_addressed_and_forgotten_stays_unaddressed() -> None:
    ms = make()
    ms.heard(B, 0.0)  # a delta before any address
    ms.expire(20.0)
    assert ms.heard(B, 21.0) is Admission.KNOWN
    assert ms.alive(B, 21.0) and ms.members(21.0) == []


def test_a_leave_is_final_except_for_a_hello() -> None:
    ms = make()
    ms.heard(B, 0.0, ADDR)
    assert ms.left(B, 1.0) is True  # it was a member: disconnect
    assert ms.left(B, 2.0) is False  # again: nothing more to do, the tombstone is refreshed
    assert ms.get(B).until == 2.0 + FORGET  # type: ignore[union-attr]
    assert ms.heard(B, 3.0, ADDR) is Admission.IGNORED and ms.named(B, ADDR, 3.0) is Admission.IGNORED
    assert ms.is_left(B)
    assert ms.heard(B, 4.0, ADDR, hello=True) is Admission.NEW
    assert ms.alive(B, 4.0) and not ms.is_left(B)


def test_a_leave_from_a_stranger_is_remembered() -> None:
    ms = make()
    assert ms.left(B, 0.0) is False
    assert ms.state(B, 0.0) is Liveness.LEFT
    assert ms.heard(B, 1.0, ADDR) is Admission.IGNORED


def test_a_stall_refreshes_members_heard_first_hand_only() -> None:
    ms = make()
    ms.heard(B, 0.0, ADDR)
    C = NodeId("C")
    ms.named(C, ADDR, 0.0)
    assert ms.state(B, 30.0) is Liveness.DEAD
    ms.stalled(30.0)
    assert ms.alive(B, 30.0) and ms.state(C, 30.0) is Liveness.HEARSAY
    assert ms.get(C).known_since == 0.0  # type: ignore[union-attr]


def test_stuck_pulls_come_due() -> None:
    ms = make()
    ms.heard(B, 0.0, ADDR)
    ms.pull_sent(B, 0.0)
    assert ms.pulling(B) and ms.pulls_due(1.9, 2.0) == [] and ms.pulls_due(2.0, 2.0) == [B]
    ms.pull_done(B)
    assert ms.pulls_due(10.0, 2.0) == []


def test_ourselves_are_never_recorded() -> None:
    ms = make()
    assert ms.heard(ME, 0.0, ADDR) is Admission.IGNORED
    assert ms.named(ME, ADDR, 0.0) is Admission.IGNORED
    assert ms.left(ME, 0.0) is False
    assert len(ms) == 0


@pytest.mark.parametrize(("ttl", "forget"), [(0.0, 1.0), (5.0, 4.0), (-1.0, 1.0)])
def test_bad_timings_are_refused(ttl: float, forget: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        Membership(ME, ttl=ttl, forget_after=forget)
