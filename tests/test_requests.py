"""The pending-request table (pure): ids, owners, deadlines, late answers."""

from __future__ import annotations

from superline_zmq.requests import PendingTable


def test_ids_start_at_one_and_are_never_reused() -> None:
    t: PendingTable[str] = PendingTable()
    a = t.open("a", "wa")
    b = t.open("b", "wb")
    assert (a.id, b.id) == (1, 2)
    assert t.resolve(1) is a
    assert t.open("c", "wc").id == 3
    assert t.next_id() == 4 and 4 not in t


def test_resolve_takes_the_entry_once_and_checks_its_owner() -> None:
    t: PendingTable[str] = PendingTable()
    e = t.open("confirm", "w", owner="conn-1")
    assert t.resolve(e.id, "conn-2") is None  # another connection answering: not its request
    assert t.resolve(e.id, "conn-1") is e
    assert t.resolve(e.id, "conn-1") is None  # a late duplicate
    assert t.resolve(99, "conn-1") is None  # never asked
    assert len(t) == 0 and t.owners() == []


def test_resolve_without_an_owner_check() -> None:
    t: PendingTable[str] = PendingTable()
    e = t.open("x", "w", owner=5)
    assert t.resolve(e.id, check_owner=False) is e


def test_expire_takes_entries_past_their_deadline_in_order() -> None:
    t: PendingTable[str] = PendingTable()
    late = t.open("late", "w", deadline=30.0)
    early = t.open("early", "w", deadline=10.0)
    never = t.open("never", "w")
    assert t.next_deadline() == 10.0
    assert t.expire(9.99) == []
    assert t.expire(10.0) == [early]
    assert t.next_deadline() == 30.0
    assert t.expire(100.0) == [late]
    assert t.next_deadline() is None
    assert list(t) == [never]


def test_an_answered_entry_does_not_expire_and_its_deadline_is_forgotten() -> None:
    t: PendingTable[str] = PendingTable()
    a = t.open("a", "w", deadline=1.0)
    t.open("b", "w", deadline=2.0)
    t.resolve(a.id)
    assert t.next_deadline() == 2.0
    assert [e.name for e in t.expire(5.0)] == ["b"]


def test_drop_owner_takes_only_that_owners_entries() -> None:
    t: PendingTable[str] = PendingTable()
    a1 = t.open("a1", "w", owner="A", deadline=5.0)
    b1 = t.open("b1", "w", owner="B")
    a2 = t.open("a2", "w", owner="A")
    assert t.owners() == ["A", "B"]
    assert t.drop_owner("A") == [a1, a2]
    assert t.drop_owner("A") == []
    assert list(t) == [b1] and t.owners() == ["B"]
    assert t.expire(10.0) == []  # a dropped entry's deadline is gone too


def test_set_owner_moves_a_queued_entry_to_the_connection_it_was_sent_on() -> None:
    t: PendingTable[str] = PendingTable()
    q = t.open("queued", "w")  # owner None: not sent yet
    assert t.owned_by(None) == [q]
    t.set_owner(q.id, 7)
    assert t.owned_by(None) == [] and t.owned_by(7) == [q]
    assert t.drop_owner(7) == [q]


def test_cancel_and_drop_all() -> None:
    t: PendingTable[str] = PendingTable()
    a = t.open("a", "w", deadline=1.0)
    b = t.open("b", "w", owner="x")
    assert t.cancel(a.id) is a and t.cancel(a.id) is None
    assert t.drop_all() == [b]
    assert len(t) == 0 and t.next_deadline() is None and t.owners() == []


def test_many_answered_entries_do_not_grow_the_deadline_heap_without_bound() -> None:
    t: PendingTable[int] = PendingTable()
    for k in range(10_000):
        e = t.open("r", k, deadline=float(k))
        t.resolve(e.id)
    assert len(t._deadlines) <= 65  # compacted as it goes
    assert t.next_deadline() is None
