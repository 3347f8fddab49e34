"""Shared by the Redis comparison scripts: payload and control shapes and the sequence checker.

Both systems carry the same `tick` payload (`seq`, `t_ns` = the sender's `time.monotonic_ns()`, `pad`) and
run the same send loop shape on node A; only the transport-specific call differs.
"""

from __future__ import annotations

import msgspec

ROOM = "bench"
#: Padding so that one encoded tick event is about 100 bytes on the wire.
PAD = "x" * 32


class Tick(msgspec.Struct):
    """The `tick` event payload."""

    seq: int
    t_ns: int
    pad: str


class Start(msgspec.Struct):
    """`start` input: send `count` ticks (`mode` "room": broadcast to the room; "direct": to_conn emits to
    `targets` round-robin, each target with its own sequence), yielding every `batch`, for at most `seconds`."""

    mode: str
    count: int
    batch: int = 50
    seconds: float = 30.0
    targets: list[str] = []


class Started(msgspec.Struct):
    """`start` result: how many ticks went out and the sender's monotonic marks."""

    sent: int
    t_first_ns: int
    t_sent_ns: int
    time_capped: bool
    waited_for_queue: int = 0


class SeqCheck:
    """One receiver's view of its sequence: every number once and in order, or the difference is counted."""

    __slots__ = ("dup_or_reordered", "gaps", "next", "received")

    def __init__(self) -> None:
        self.next = 0
        self.received = 0
        self.gaps = 0
        self.dup_or_reordered = 0

    def see(self, seq: int) -> None:
        self.received += 1
        if seq == self.next:
            self.next += 1
        elif seq > self.next:
            self.gaps += seq - self.next
            self.next = seq + 1
        else:
            self.dup_or_reordered += 1

    def reset(self) -> None:
        self.next = self.received = self.gaps = self.dup_or_reordered = 0
