"""One pending-request table: ids, deadlines and owners of requests awaiting an answer (pure).

Three things in this library wait for answers, and all three use this table: a client's
calls (owner: the connection they were sent on, or nothing while queued offline), a
server's requests to its clients (owner: the connection asked) and a node's requests to
connections on other nodes (owner: the node asked). Each entry has an id allocated here,
a deadline on the driver's clock, and an opaque ``waiter`` (a future, a callback: the
table never looks at it). The table decides; the driver acts:

- :meth:`PendingTable.resolve` takes the entry an answer is for, or None for a late,
  unknown or misdirected answer (the caller counts it);
- :meth:`PendingTable.expire` takes every entry past its deadline, and
  :meth:`PendingTable.next_deadline` says when to call it next (one timer per table,
  not one per request);
- :meth:`PendingTable.drop_owner` takes every entry of an owner that is gone (a closed
  connection, a dead node), :meth:`PendingTable.drop_all` everything (shutdown).

Nothing here reads a clock: deadlines are absolute times the caller computed.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator
from typing import Any, Generic, TypeVar

W = TypeVar("W")


class Pending(Generic[W]):
    """One request awaiting its answer."""

    __slots__ = ("deadline", "id", "meta", "name", "owner", "waiter")

    def __init__(self, id: int, name: str, owner: Hashable, deadline: float | None, waiter: W, meta: Any) -> None:
        self.id = id
        #: What was asked (for error messages: ``Request 'confirm' timed out``).
        self.name = name
        #: Who must answer; :meth:`PendingTable.drop_owner` fails its entries together.
        self.owner = owner
        #: Absolute time on the driver's clock, or None for no deadline.
        self.deadline = deadline
        #: The driver's handle on whoever waits (opaque to the table).
        self.waiter = waiter
        #: Anything the driver keeps with the entry (e.g. the answer's decoder).
        self.meta = meta

    def __repr__(self) -> str:
        return f"<Pending {self.id} {self.name!r} owner={self.owner!r} deadline={self.deadline}>"


class PendingTable(Generic[W]):
    """Requests awaiting answers, by id; ids start at 1 and are never reused by one table."""

    def __init__(self) -> None:
        self._entries: dict[int, Pending[W]] = {}
        self._by_owner: dict[Hashable, dict[int, None]] = {}  # insertion-ordered id sets
        self._deadlines: list[tuple[float, int]] = []  # a heap; entries already gone are skipped lazily
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, id: object) -> bool:
        return id in self._entries

    def __iter__(self) -> Iterator[Pending[W]]:
        return iter(list(self._entries.values()))

    def next_id(self) -> int:
        """Allocate an id without opening an entry (a request that will not wait for an answer)."""
        self._seq += 1
        return self._seq

    def open(
        self, name: str, waiter: W, *, owner: Hashable = None, deadline: float | None = None, meta: Any = None
    ) -> Pending[W]:
        """Open an entry under a fresh id."""
        entry = Pending(self.next_id(), name, owner, deadline, waiter, meta)
        self._entries[entry.id] = entry
        self._by_owner.setdefault(owner, {})[entry.id] = None
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, entry.id))
        return entry

    def get(self, id: int) -> Pending[W] | None:
        """The open entry with this id, or None."""
        return self._entries.get(id)

    def resolve(self, id: int, owner: Hashable = None, *, check_owner: bool = True) -> Pending[W] | None:
        """Take the entry answered by ``owner``; None if unknown, already done, or owned by another."""
        entry = self._entries.get(id)
        if entry is None or (check_owner and entry.owner != owner):
            return None
        self._take(entry)
        return entry

    def cancel(self, id: int) -> Pending[W] | None:
        """Take an entry whose waiter gave up (cancelled); None if already gone."""
        entry = self._entries.get(id)
        if entry is not None:
            self._take(entry)
        return entry

    def set_owner(self, id: int, owner: Hashable) -> None:
        """Move an entry to another owner (a queued call that has just been sent)."""
        entry = self._entries[id]
        ids = self._by_owner.get(entry.owner)
        if ids is not None:
            ids.pop(id, None)
            if not ids:
                del self._by_owner[entry.owner]
        entry.owner = owner
        self._by_owner.setdefault(owner, {})[id] = None

    def owned_by(self, owner: Hashable) -> list[Pending[W]]:
        """The open entries of ``owner``, oldest first (not taken)."""
        return [self._entries[i] for i in self._by_owner.get(owner, ())]

    def owners(self) -> list[Hashable]:
        """Everyone who owes an answer right now."""
        return list(self._by_owner)

    def drop_owner(self, owner: Hashable) -> list[Pending[W]]:
        """Take every entry of ``owner`` (it is gone), oldest first."""
        ids = self._by_owner.pop(owner, None)
        if not ids:
            return []
        return [self._entries.pop(i) for i in ids]

    def drop_all(self) -> list[Pending[W]]:
        """Take every entry (shutdown), oldest first."""
        entries = sorted(self._entries.values(), key=lambda e: e.id)
        self._entries.clear()
        self._by_owner.clear()
        self._deadlines.clear()
        return entries

    def expire(self, now: float) -> list[Pending[W]]:
        """Take every entry whose deadline is at or before ``now``, earliest first."""
        out: list[Pending[W]] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, id = heapq.heappop(heap)
            entry = self._entries.get(id)
            if entry is not None and entry.deadline is not None and entry.deadline <= now:
                self._take(entry)
                out.append(entry)
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline of an open entry: when :meth:`expire` has work next (None: never)."""
        heap = self._deadlines
        while heap and heap[0][1] not in self._entries:
            heapq.heappop(heap)  # the entry was answered: forget its deadline now
        return heap[0][0] if heap else None

    def _take(self, entry: Pending[W]) -> None:
        del self._entries[entry.id]
        ids = self._by_owner.get(entry.owner)
        if ids is not None:
            ids.pop(entry.id, None)
            if not ids:
                del self._by_owner[entry.owner]
        # its heap slot is dropped lazily (next_deadline / expire), so taking stays O(1)
        if len(self._deadlines) > 64 and len(self._deadlines) > 4 * len(self._entries):
            self._deadlines = [(d, i) for d, i in self._deadlines if i in self._entries]
            heapq.heapify(self._deadlines)
