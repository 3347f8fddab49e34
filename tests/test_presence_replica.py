"""The presence replica and the local slice (pure: no sockets, injected clock, no sleeping)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from superline_zmq import gossip
from superline_zmq.ids import NodeId
from superline_zmq.presence import (
    NO_CHANGE,
    RESERVED_FIELDS,
    ConnDescriptor,
    Delta,
    LocalSlice,
    NodeInfo,
    PresenceDiff,
    PresenceReplica,
    Snapshot,
    Update,
)
from superline_zmq.testing import FakeClock

A = NodeId("A")
B = NodeId("B")
C = NodeId("C")
TTL = 5.0


def Clock(now: float = 100.0) -> FakeClock:
    return FakeClock(now)


def desc(
    cid: str,
    node: str = "A",
    *,
    user: str | None = None,
    rooms: tuple[str, ...] = (),
    at: float = 0.0,
    **extra: Any,
) -> ConnDescriptor:
    return ConnDescriptor(
        id=cid, role="user", node_id=node, connected_at=at, user_id=user, rooms=rooms, extra=dict(extra)
    )


def ids(descs: list[ConnDescriptor]) -> list[str]:
    return [d.id for d in descs]


def make(node: NodeId = A, *, forget_after: float | None = None) -> tuple[PresenceReplica, FakeClock]:
    clock = Clock()
    return PresenceReplica(node, ttl=TTL, forget_after=forget_after, clock=clock), clock


class Remote:
    """A remote node's writer: a LocalSlice whose deltas we feed to the replica under test."""

    def __init__(self, replica: PresenceReplica, node: NodeId) -> None:
        self.replica = replica
        self.local = LocalSlice(node)

    def put(self, d: ConnDescriptor) -> Delta:
        delta = self.local.put(d)
        assert self.replica.apply(delta).outcome == "applied"
        return delta

    def remove(self, cid: str) -> Delta:
        delta = self.local.remove(cid)
        assert delta is not None
        assert self.replica.apply(delta).outcome == "applied"
        return delta


# ---------------------------------------------------------------- LocalSlice
def test_local_slice_numbers_every_change() -> None:
    local = LocalSlice(A)
    d1 = local.put(desc("a1"))
    d2 = local.put(desc("a2"))
    d3 = local.put(desc("a1", user="u"))  # replacing counts as a change
    d4 = local.remove("a2")
    assert [d1.seq, d2.seq, d3.seq] == [1, 2, 3]
    assert d4 == Delta("A", 4, remove="a2")
    assert d3.put == desc("a1", user="u") and d3.remove is None
    assert local.seq == 4
    snap = local.snapshot()
    assert snap == Snapshot("A", 4, [desc("a1", user="u")])


def test_local_slice_remove_of_unknown_is_silent() -> None:
    local = LocalSlice(A)
    local.put(desc("a1"))
    assert local.remove("nope") is None
    assert local.seq == 1  # nothing to tell anyone: no number used
    assert local.remove("a1") is not None
    assert local.remove("a1") is None
    assert local.seq == 2


def test_local_slice_refuses_other_nodes_descriptors() -> None:
    local = LocalSlice(A)
    with pytest.raises(ValueError, match="names node B"):
        local.put(desc("b1", "B"))
    assert local.seq == 0 and local.conns == {}


# ---------------------------------------------------------------- descriptors
def test_to_dict_flattens_extra_fields() -> None:
    d = desc("a1", user="alice", rooms=("lobby", "ops"), at=12.5, plan="pro", score=3)
    assert d.to_dict() == {
        "id": "a1",
        "role": "user",
        "node_id": "A",
        "connected_at": 12.5,
        "user_id": "alice",
        "rooms": ["lobby", "ops"],
        "plan": "pro",
        "score": 3,
    }


def test_to_dict_omits_missing_user_and_keeps_empty_rooms() -> None:
    d = desc("a1")
    out = d.to_dict()
    assert "user_id" not in out
    assert out["rooms"] == []
    assert out == {"id": "a1", "role": "user", "node_id": "A", "connected_at": 0.0, "rooms": []}


def test_reserved_fields_are_the_descriptor_fields() -> None:
    assert {"id", "role", "node_id", "connected_at", "user_id", "rooms", "extra"} == RESERVED_FIELDS


@pytest.mark.parametrize(
    "value",
    [
        Delta("A", 7, put=desc("a1", user="u", rooms=("r1", "r2"), at=3.25, plan="pro")),
        Delta("A", 8, remove="a1"),
        Delta("A", 9),
        Snapshot("A", 3, [desc("a1", user="u", rooms=("r",)), desc("a2", at=1.0, tags=["x", "y"])]),
        Snapshot("B", 0, []),
    ],
    ids=["delta-put", "delta-remove", "delta-empty", "snapshot", "snapshot-empty"],
)
def test_msgpack_round_trip(value: Delta | Snapshot) -> None:
    data = msgspec.msgpack.encode(value)
    assert msgspec.msgpack.decode(data, type=type(value)) == value
    # the gossip codec decodes them from the tagged union too
    assert gossip.decode(gossip.encode(value)) == value
    assert gossip.encode(value) == data


def test_descriptor_encoding_omits_defaults() -> None:
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode(desc("a1", at=1.0)))
    assert raw == {"id": "a1", "role": "user", "node_id": "A", "connected_at": 1.0}
    full = msgspec.msgpack.decode(msgspec.msgpack.encode(desc("a1", user="u", rooms=("r",), k=1)))
    assert full["user_id"] == "u" and full["rooms"] == ["r"] and full["extra"] == {"k": 1}


# ---------------------------------------------------------------- writes and indexes
def test_put_indexes_every_query() -> None:
    rep, _ = make()
    mine = Remote(rep, A)
    mine.put(desc("a1", user="alice", rooms=("lobby",), at=2.0))
    mine.put(desc("a2", user="bob", rooms=("lobby", "ops"), at=1.0))
    b = Remote(rep, B)
    b.put(desc("b1", "B", user="alice", rooms=("ops",), at=3.0))

    assert rep.count() == 3
    assert ids(rep.connections()) == ["a2", "a1", "b1"]
    assert ids(rep.by_user("alice")) == ["a1", "b1"]
    assert ids(rep.by_user("bob")) == ["a2"]
    assert rep.by_user("carol") == []
    assert rep.is_online("alice") and rep.is_online("bob")
    assert not rep.is_online("carol")
    assert ids(rep.room("lobby")) == ["a2", "a1"]
    assert ids(rep.room("ops")) == ["a2", "b1"]
    assert rep.room("empty") == []
    assert rep.get("b1") == desc("b1", "B", user="alice", rooms=("ops",), at=3.0)
    assert rep.get("zzz") is None
    assert rep.topology() == [
        NodeInfo(node_id="A", connections=2, rooms=("lobby", "ops"), alive=True),
        NodeInfo(node_id="B", connections=1, rooms=("ops",), alive=True),
    ]
    assert rep.seq_of(A) == 2 and rep.seq_of(B) == 1 and rep.seq_of(C) == 0


def test_connections_ordered_oldest_first_then_by_id() -> None:
    rep, _ = make()
    b = Remote(rep, B)
    b.put(desc("b-z", "B", at=5.0, rooms=("r",), user="u"))
    b.put(desc("b-a", "B", at=5.0, rooms=("r",), user="u"))
    b.put(desc("b-m", "B", at=1.0, rooms=("r",), user="u"))
    b.put(desc("b-0", "B", at=9.0, rooms=("r",), user="u"))
    expected = ["b-m", "b-a", "b-z", "b-0"]
    assert ids(rep.connections()) == expected
    assert ids(rep.room("r")) == expected
    assert ids(rep.by_user("u")) == expected


def test_remove_unindexes_and_room_counts_follow_members() -> None:
    rep, _ = make()
    b = Remote(rep, B)
    b.put(desc("b1", "B", user="u1", rooms=("lobby", "ops")))
    b.put(desc("b2", "B", user="u1", rooms=("lobby",)))
    assert rep.topology()[1].rooms == ("lobby", "ops")

    b.remove("b1")
    assert ids(rep.by_user("u1")) == ["b2"]
    assert ids(rep.room("lobby")) == ["b2"]
    assert rep.room("ops") == []
    assert rep.get("b1") is None
    # lobby still has a member on B; ops has none, so B is no longer in it
    assert rep.topology()[1] == NodeInfo(node_id="B", connections=1, rooms=("lobby",), alive=True)

    b.remove("b2")
    assert rep.count() == 0 and rep.connections() == []
    assert not rep.is_online("u1")
    assert rep.topology()[1] == NodeInfo(node_id="B", connections=0, rooms=(), alive=True)
    # nothing left behind in the indexes
    assert rep._by_user == {} and rep._by_room == {} and rep._where == {}


def test_same_room_on_two_nodes_counted_per_node() -> None:
    rep, _ = make()
    a, b = Remote(rep, A), Remote(rep, B)
    a.put(desc("a1", rooms=("lobby",)))
    b.put(desc("b1", "B", rooms=("lobby",)))
    b.put(desc("b2", "B", rooms=("lobby",)))
    b.remove("b1")
    topo = {n.node_id: n for n in rep.topology()}
    assert topo["A"].rooms == ("lobby",) and topo["B"].rooms == ("lobby",)
    a.remove("a1")
    topo = {n.node_id: n for n in rep.topology()}
    assert topo["A"].rooms == () and topo["B"].rooms == ("lobby",)
    assert ids(rep.room("lobby")) == ["b2"]


def test_replacing_a_descriptor_moves_it_between_users_and_rooms() -> None:
    rep, _ = make()
    b = Remote(rep, B)
    b.put(desc("b1", "B", user="alice", rooms=("lobby", "ops")))
    b.put(desc("b2", "B", user="carol", rooms=("ops",)))
    b.put(desc("b1", "B", user="bob", rooms=("ops", "dev"), at=4.0, plan="pro"))

    assert rep.count() == 2
    assert rep.by_user("alice") == [] and not rep.is_online("alice")
    assert ids(rep.by_user("bob")) == ["b1"]
    assert rep.room("lobby") == []
    assert ids(rep.room("ops")) == ["b2", "b1"]
    assert ids(rep.room("dev")) == ["b1"]
    assert rep.get("b1") == desc("b1", "B", user="bob", rooms=("ops", "dev"), at=4.0, plan="pro")
    topo = rep.topology()[1]
    assert topo.rooms == ("dev", "ops") and topo.connections == 2

    # a user can also go away entirely (anonymous connection)
    b.put(desc("b1", "B", rooms=("ops",)))
    assert rep.by_user("bob") == []
    assert rep.room("dev") == []
    assert rep.topology()[1].rooms == ("ops",)


def test_identical_put_is_idempotent_for_room_counts() -> None:
    rep, _ = make()
    b = Remote(rep, B)
    d = desc("b1", "B", rooms=("r",))
    b.put(d)
    b.put(d)
    b.remove("b1")
    assert rep.topology()[1].rooms == ()
    assert rep.room("r") == []


# ---------------------------------------------------------------- delta ordering
def test_deltas_apply_in_order_and_ignore_stale_and_duplicates() -> None:
    rep, _ = make()
    w = LocalSlice(B)
    d1 = w.put(desc("b1", "B", user="u"))
    d2 = w.put(desc("b2", "B", user="u"))
    d3 = w.remove("b1")
    assert d3 is not None
    assert rep.apply(d1).outcome == "applied"
    assert rep.apply(d2).outcome == "applied"
    assert rep.apply(d2).outcome == "stale"  # duplicate
    assert rep.apply(d1).outcome == "stale"  # old
    assert ids(rep.by_user("u")) == ["b1", "b2"]
    assert rep.apply(d3).outcome == "applied"
    assert rep.apply(d1).outcome == "stale"  # a replayed put must not bring b1 back
    assert ids(rep.by_user("u")) == ["b2"]
    assert rep.seq_of(B) == 3


def test_gap_is_reported_and_changes_nothing() -> None:
    rep, _ = make()
    w = LocalSlice(B)
    d1 = w.put(desc("b1", "B"))
    d2 = w.put(desc("b2", "B"))
    d3 = w.put(desc("b3", "B"))
    assert rep.apply(d1).outcome == "applied"
    assert rep.apply(d3).outcome == "gap"
    assert ids(rep.connections()) == ["b1"]
    assert rep.seq_of(B) == 1
    # the missing delta arrives after all; then the later one applies in order
    assert rep.apply(d2).outcome == "applied"
    assert rep.apply(d3).outcome == "applied"
    assert ids(rep.connections()) == ["b1", "b2", "b3"]


def test_first_delta_from_an_unknown_node_with_seq_above_one_is_a_gap() -> None:
    rep, _ = make()
    w = LocalSlice(B)
    w.put(desc("b1", "B"))
    d2 = w.put(desc("b2", "B"))
    assert rep.apply(d2).outcome == "gap"
    assert rep.known(B)  # heard of, but nothing applied
    assert rep.connections() == []
    assert rep.apply_snapshot(w.snapshot()).applied
    assert ids(rep.connections()) == ["b1", "b2"]


def test_heard_reports_when_we_are_behind() -> None:
    rep, _ = make()
    assert not rep.known(B)
    assert rep.heard(B) is False
    assert rep.known(B) and rep.alive(B)
    assert rep.heard(B, 0) is False
    assert rep.heard(B, 1) is True
    Remote(rep, B).put(desc("b1", "B"))
    assert rep.heard(B, 1) is False
    assert rep.heard(B, 2) is True


# ---------------------------------------------------------------- snapshots
def test_snapshot_replaces_the_slice() -> None:
    rep, _ = make()
    b = Remote(rep, B)
    b.put(desc("b1", "B", user="alice", rooms=("lobby",)))
    b.put(desc("b2", "B", user="bob", rooms=("ops",)))
    snap = Snapshot("B", 9, [desc("b2", "B", user="bob", rooms=("dev",)), desc("b3", "B", user="carol")])
    assert rep.apply_snapshot(snap).applied
    assert rep.seq_of(B) == 9
    assert ids(rep.connections()) == ["b2", "b3"]
    assert rep.get("b1") is None and not rep.is_online("alice")
    assert rep.room("lobby") == [] and rep.room("ops") == []
    assert ids(rep.room("dev")) == ["b2"]
    assert rep.topology()[1] == NodeInfo(node_id="B", connections=2, rooms=("dev",), alive=True)
    # deltas continue from the snapshot's seq
    assert rep.apply(Delta("B", 9, remove="b3")).outcome == "stale"
    assert rep.apply(Delta("B", 10, remove="b3")).outcome == "applied"
    assert ids(rep.connections()) == ["b2"]


def test_older_snapshot_is_ignored_equal_one_is_applied() -> None:
    rep, _ = make()
    w = LocalSlice(B)
    rep.apply(w.put(desc("b1", "B")))
    old = w.snapshot()  # seq 1
    rep.apply(w.put(desc("b2", "B")))
    d3 = w.remove("b1")
    assert d3 is not None
    rep.apply(d3)
    assert rep.seq_of(B) == 3
    assert rep.apply_snapshot(old).outcome == "stale"
    assert ids(rep.connections()) == ["b2"]
    assert rep.seq_of(B) == 3
    assert rep.apply_snapshot(w.snapshot()).applied  # same seq: harmless
    assert ids(rep.connections()) == ["b2"]


def test_empty_snapshot_clears_the_slice() -> None:
    rep, _ = make()
    b = Remote(rep, B)
    b.put(desc("b1", "B", user="u", rooms=("r",)))
    assert rep.apply_snapshot(Snapshot("B", 5, [])).applied
    assert rep.connections() == [] and not rep.is_online("u") and rep.room("r") == []
    assert rep.topology()[1] == NodeInfo(node_id="B", connections=0, rooms=(), alive=True)


# ---------------------------------------------------------------- single writer
def test_a_node_cannot_write_another_nodes_descriptors() -> None:
    rep, _ = make()
    c = Remote(rep, C)
    c.put(desc("c1", "C", user="u"))
    # B claims a descriptor naming C, and one naming itself with C's connection id
    assert rep.apply(Delta("B", 1, put=desc("x", "C", user="u"))).outcome == "applied"
    assert rep.apply(Delta("B", 2, put=desc("c1", "B", user="evil"))).outcome == "applied"
    assert rep.get("x") is None
    assert rep.get("c1") == desc("c1", "C", user="u")
    assert rep.by_user("evil") == []
    assert ids(rep.by_user("u")) == ["c1"]
    assert {n.node_id: n.connections for n in rep.topology()} == {"A": 0, "B": 0, "C": 1}
    # nor through a snapshot
    assert rep.apply_snapshot(Snapshot("B", 3, [desc("y", "C"), desc("c1", "B")])).applied
    assert rep.get("y") is None and rep.get("c1") == desc("c1", "C", user="u")
    # and forgetting B must not disturb C's connection
    rep.forget(B)
    assert rep.get("c1") == desc("c1", "C", user="u")
    assert ids(rep.by_user("u")) == ["c1"]


# ---------------------------------------------------------------- liveness
def test_silent_node_drops_out_of_every_query_after_ttl() -> None:
    rep, clock = make()
    Remote(rep, A).put(desc("a1", user="alice", rooms=("lobby",), at=1.0))
    Remote(rep, B).put(desc("b1", "B", user="bob", rooms=("lobby",), at=2.0))
    Remote(rep, C).put(desc("c1", "C", user="alice", rooms=("lobby",), at=3.0))

    clock.advance(3.0)
    rep.heard(C)  # C keeps beating, B goes silent
    clock.advance(TTL - 3.0)  # exactly ttl since B was last heard: still alive
    assert rep.alive(B)
    assert rep.count() == 3

    clock.advance(0.5)
    assert not rep.alive(B) and rep.alive(C) and rep.alive(A)
    assert rep.count() == 2
    assert ids(rep.connections()) == ["a1", "c1"]
    assert rep.get("b1") is None
    assert rep.by_user("bob") == [] and not rep.is_online("bob")
    assert ids(rep.by_user("alice")) == ["a1", "c1"]
    assert ids(rep.room("lobby")) == ["a1", "c1"]
    assert rep.topology() == [
        NodeInfo(node_id="A", connections=1, rooms=("lobby",), alive=True),
        NodeInfo(node_id="B", connections=1, rooms=("lobby",), alive=False),
        NodeInfo(node_id="C", connections=1, rooms=("lobby",), alive=True),
    ]
    assert rep.known(B) and rep.expire() == []

    # heard again (a paused process resumed): back in every query
    rep.heard(B)
    assert rep.alive(B) and rep.is_online("bob") and rep.count() == 3


@pytest.mark.parametrize("how", ["delta", "snapshot", "stale-delta"])
def test_any_message_from_a_node_counts_as_hearing_it(how: str) -> None:
    rep, clock = make()
    w = LocalSlice(B)
    d1 = w.put(desc("b1", "B"))
    rep.apply(d1)
    clock.advance(TTL + 1)
    assert not rep.alive(B)
    if how == "delta":
        assert rep.apply(w.put(desc("b2", "B"))).outcome == "applied"
    elif how == "snapshot":
        assert rep.apply_snapshot(w.snapshot()).applied
    else:
        assert rep.apply(d1).outcome == "stale"
    assert rep.alive(B)
    assert rep.get("b1") is not None


def test_dead_node_is_forgotten_after_forget_after() -> None:
    rep, clock = make()
    assert rep.forget_after == 2 * TTL
    Remote(rep, B).put(desc("b1", "B", user="u", rooms=("r",)))
    Remote(rep, C).put(desc("c1", "C", user="u", rooms=("r",)))
    clock.advance(9.0)
    rep.heard(C)  # C keeps talking
    clock.advance(2 * TTL - 9.0)  # exactly forget_after since B was heard
    assert rep.expire() == []
    assert rep.known(B)
    clock.advance(0.5)
    assert rep.expire() == [B]
    assert not rep.known(B) and rep.nodes() == [A, C]
    assert [n.node_id for n in rep.topology()] == ["A", "C"]
    assert rep.seq_of(B) == 0
    assert ids(rep.by_user("u")) == ["c1"]
    assert ids(rep.room("r")) == ["c1"]
    assert rep.expire() == []  # already gone
    # a fresh slice starts from scratch if the node ever talks again
    assert rep.apply(Delta("B", 1, put=desc("b9", "B"))).outcome == "applied"
    assert ids(rep.connections()) == ["b9", "c1"]


def test_custom_forget_after() -> None:
    rep, clock = make(forget_after=7.0)
    Remote(rep, B).put(desc("b1", "B"))
    clock.advance(7.0)
    assert rep.expire() == []
    clock.advance(0.25)
    assert rep.expire() == [B]


def test_forget_drops_a_slice_at_once() -> None:
    rep, _ = make()
    Remote(rep, B).put(desc("b1", "B", user="u", rooms=("r",)))
    assert rep.forget(B).applied
    assert rep.forget(B).outcome == "stale"
    assert rep.forget(C).outcome == "stale"
    assert not rep.known(B)
    assert rep.get("b1") is None and rep.by_user("u") == [] and rep.room("r") == []
    assert rep._by_user == {} and rep._by_room == {} and rep._where == {}
    with pytest.raises(ValueError, match="own node"):
        rep.forget(A)


def test_own_node_is_always_alive_and_never_expires() -> None:
    rep, clock = make()
    Remote(rep, A).put(desc("a1", user="me", rooms=("r",)))
    clock.advance(1000.0)
    assert rep.alive(A)
    assert rep.expire() == []
    assert rep.known(A)
    assert ids(rep.connections()) == ["a1"]
    assert rep.is_online("me") and ids(rep.room("r")) == ["a1"]
    assert rep.topology() == [NodeInfo(node_id="A", connections=1, rooms=("r",), alive=True)]


def test_unknown_node_is_not_alive() -> None:
    rep, _ = make()
    assert not rep.alive(B)
    assert not rep.known(B)
    assert rep.nodes() == [A]


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        PresenceReplica(A, ttl=ttl, clock=Clock())


# ---------------------------------------------------------------- what changed (presence diffs)
def users(diff: PresenceDiff) -> list[tuple[str, bool, str, int]]:
    return [(u.user_id, u.online, u.node_id, u.connections) for u in diff.users]


def rooms(diff: PresenceDiff) -> dict[str, tuple[list[str], list[str]]]:
    return {r.room: ([d.id for d in r.joins], [d.id for d in r.leaves]) for r in diff.rooms}


def test_a_users_first_connection_is_online_and_its_last_offline_anywhere() -> None:
    rep, _ = make()
    a, b = LocalSlice(A), LocalSlice(B)
    first = rep.apply(a.put(desc("a1", user="ann", rooms=("lobby",))))
    assert users(first.diff) == [("ann", True, "A", 1)]
    assert rooms(first.diff) == {"lobby": (["a1"], [])}
    # a second device, on another node: no transition, just a room join
    second = rep.apply(b.put(desc("b1", "B", user="ann", rooms=("lobby",))))
    assert users(second.diff) == [] and rooms(second.diff) == {"lobby": (["b1"], [])}
    d = a.remove("a1")
    assert d is not None
    moved = rep.apply(d)  # the overlap of a move between nodes: still online
    assert users(moved.diff) == [] and rooms(moved.diff) == {"lobby": ([], ["a1"])}
    d = b.remove("b1")
    assert d is not None
    gone = rep.apply(d)
    assert users(gone.diff) == [("ann", False, "B", 0)]
    assert rooms(gone.diff) == {"lobby": ([], ["b1"])}
    assert gone.diff.room("lobby") is not None and gone.diff.room("ops") is None


def test_replacing_a_descriptor_diffs_its_rooms_and_user() -> None:
    rep, _ = make()
    w = LocalSlice(B)
    rep.apply(w.put(desc("b1", "B", rooms=("lobby", "ops"))))  # anonymous
    became = rep.apply(w.put(desc("b1", "B", user="bob", rooms=("ops", "dev"))))
    assert users(became.diff) == [("bob", True, "B", 1)]
    # it left lobby; it stays in ops with new fields (leave the old, join the new); it joined dev
    assert rooms(became.diff) == {"dev": (["b1"], []), "lobby": ([], ["b1"]), "ops": (["b1"], ["b1"])}
    [ops] = [r for r in became.diff.rooms if r.room == "ops"]
    assert ops.leaves[0].user_id is None and ops.joins[0].user_id == "bob"
    same = rep.apply(w.put(desc("b1", "B", user="bob", rooms=("ops", "dev"))))
    assert same.outcome == "applied" and not same.diff and same.diff is NO_CHANGE  # nothing visible changed


def test_stale_gap_and_rejected_writes_change_nothing() -> None:
    rep, _ = make()
    w = LocalSlice(B)
    d1 = w.put(desc("b1", "B", user="u"))
    w.put(desc("b2", "B"))
    d3 = w.put(desc("b3", "B", user="v"))
    assert rep.apply(d1).diff
    assert rep.apply(d1) == Update("stale")
    assert rep.apply(d3) == Update("gap")
    # another node's connection claimed in B's slice is ignored, and so is its diff
    assert not rep.apply(Delta("C", 1, put=desc("b1", "C", user="evil"))).diff
    assert rep.apply_snapshot(Snapshot("B", 0, [])) == Update("stale")


def test_a_snapshot_diffs_against_the_slice_it_replaces() -> None:
    rep, _ = make()
    w = LocalSlice(B)
    rep.apply(w.put(desc("b1", "B", user="ann", rooms=("lobby",))))
    rep.apply(w.put(desc("b2", "B", user="bob", rooms=("lobby",))))
    snap = Snapshot("B", 9, [desc("b2", "B", user="bob", rooms=("lobby",)), desc("b3", "B", user="cat", rooms=("x",))])
    u = rep.apply_snapshot(snap)
    assert u.applied
    assert users(u.diff) == [("ann", False, "B", 0), ("cat", True, "B", 1)]
    assert rooms(u.diff) == {"lobby": ([], ["b1"]), "x": (["b3"], [])}  # b2 unchanged: not listed


def test_a_first_snapshot_is_all_joins() -> None:
    rep, _ = make()
    u = rep.apply_snapshot(Snapshot("B", 2, [desc("b1", "B", user="u", rooms=("r",)), desc("b2", "B", user="u")]))
    assert users(u.diff) == [("u", True, "B", 2)] and rooms(u.diff) == {"r": (["b1"], [])}


def test_forgetting_a_live_node_takes_its_connections_away() -> None:
    rep, _ = make()
    Remote(rep, A).put(desc("a1", user="ann", rooms=("lobby",)))
    b = Remote(rep, B)
    b.put(desc("b1", "B", user="ann", rooms=("lobby",), at=2.0))
    b.put(desc("b2", "B", user="bob", rooms=("lobby", "ops"), at=1.0))
    u = rep.forget(B)  # it left gracefully
    assert u.applied
    assert users(u.diff) == [("bob", False, "B", 0)]  # ann is still on A
    assert rooms(u.diff) == {"lobby": ([], ["b2", "b1"]), "ops": ([], ["b2"])}  # oldest first


def test_forgetting_a_dead_node_changes_nothing_visible() -> None:
    rep, clock = make()
    Remote(rep, B).put(desc("b1", "B", user="bob", rooms=("r",)))
    clock.advance(TTL + 1)  # silent: its connections left every query already
    assert not rep.is_online("bob")
    u = rep.forget(B)
    assert u.applied and not u.diff


def test_liveness_changes_make_a_whole_slice_vanish_or_appear() -> None:
    alive = {B: True}
    rep = PresenceReplica(A, clock=Clock(), liveness=lambda n: alive.get(n, False))
    Remote(rep, A).put(desc("a1", user="ann", rooms=("lobby",)))
    b = Remote(rep, B)
    b.put(desc("b1", "B", user="ann", rooms=("lobby",)))
    b.put(desc("b2", "B", user="bob", rooms=("lobby",)))
    alive[B] = False  # the membership says B died
    down = rep.liveness_changed(B, False)
    assert users(down) == [("bob", False, "B", 0)]  # ann is still on A
    assert rooms(down) == {"lobby": ([], ["b1", "b2"])}
    alive[B] = True
    up = rep.liveness_changed(B, True)
    assert users(up) == [("bob", True, "B", 1)]
    assert rooms(up) == {"lobby": (["b1", "b2"], [])}
    assert rep.liveness_changed(C, True) is NO_CHANGE  # nothing known of C
    assert rep.liveness_changed(A, False) is NO_CHANGE  # this node is always alive


def test_a_dead_node_heard_again_brings_its_whole_slice_back() -> None:
    rep, clock = make()
    w = LocalSlice(B)
    rep.apply(w.put(desc("b1", "B", user="bob", rooms=("r",))))
    clock.advance(TTL + 1)
    back = rep.apply(w.put(desc("b2", "B", user="cat")))  # its first word after the silence
    assert users(back.diff) == [("bob", True, "B", 1), ("cat", True, "B", 1)]
    assert rooms(back.diff) == {"r": (["b1"], [])}
    clock.advance(TTL + 1)
    stale = rep.apply(w.put(desc("b3", "B")))
    assert stale.applied and users(stale.diff) == [("bob", True, "B", 1), ("cat", True, "B", 1)]


def test_changes_to_a_dead_nodes_slice_are_silent() -> None:
    alive = {B: True}
    rep = PresenceReplica(A, clock=Clock(), liveness=lambda n: alive.get(n, False))
    w = LocalSlice(B)
    rep.apply(w.put(desc("b1", "B", user="bob")))
    alive[B] = False
    u = rep.apply(w.put(desc("b2", "B", user="cat")))
    assert u.applied and not u.diff
    assert not rep.apply_snapshot(Snapshot("B", 5, [desc("b9", "B", user="dan")])).diff
