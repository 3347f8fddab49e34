"""Presence events on Redis: a local mirror of every node's slice, kept from the announce channel.

Why the announce channel and not keyspace notifications: notifications are off by default
(``notify-keyspace-events``), often cannot be turned on in a managed Redis, carry only a
key's name (every event would cost a read, and the read may already see a later state),
and say nothing about order across keys. Instead every presence script publishes what it
changed on ``p:presence`` in the same atomic step, numbered per node
(:mod:`superline_zmq_redis._scripts`), so a subscriber sees each node's changes in order
and can tell when it missed one.

The mirror is started by the first watcher (``srv.cluster.on_user``/``on_room``); a node
without listeners never subscribes the channel and pays nothing. Starting it subscribes
``p:presence``, then reads every slice (one script), so nothing falls between the two:
messages that arrive meanwhile are held and applied after the read (older ones are stale
by their number). From then on it is a :class:`~superline_zmq.presence.PresenceReplica`
fed in order:

- ``U``/``X`` (a descriptor put, a connection removed) are deltas; a gap in a node's
  numbers (a message lost while the subscriber reconnected) re-reads that node's slice;
  ``R`` (a node registered again: its slice rewritten at once) re-reads it too;
- ``L`` (a graceful leave) drops the node's slice: its users go offline at once;
  ``F`` (forgotten) drops a dead node's, which was no longer visible;
- liveness is the adapter's view of live nodes (its ``alive`` keys, polled every
  ``liveness_poll``, and join/leave announcements): a node whose key expired (a crash)
  vanishes at the next poll, so its users go offline within ``presence_ttl +
  liveness_poll``;
- after the subscriber connection comes back, every slice is read again, and the diff
  against what the mirror held is reported (what changed while it was away).

The first read's changes are marked initial (state that predates the watcher).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import RedisError, ResponseError

from superline_zmq.ids import NodeId
from superline_zmq.logs import RateLimitedLog
from superline_zmq.presence import (
    ConnDescriptor,
    Delta,
    PresenceChange,
    PresenceDiff,
    PresenceReplica,
    Snapshot,
    UserPresence,
)

if TYPE_CHECKING:
    from superline_zmq_redis.adapter import RedisAdapter

log = logging.getLogger("superline_zmq.redis")

_decode_desc = msgspec.msgpack.Decoder(ConnDescriptor).decode
# What a failing connection raises (as the adapter counts it)
_CONN_ERRORS = (RedisError, OSError, TimeoutError, EOFError)


class PresenceMirror:
    """The cluster's presence as this node mirrors it from Redis, for presence events (see the module docstring)."""

    def __init__(self, adapter: RedisAdapter, node: NodeId, channel: bytes) -> None:
        self._a = adapter
        self.node = node
        #: The Redis channel the presence scripts announce on.
        self.channel = channel
        self._shown: set[NodeId] = set()
        self.replica = PresenceReplica(
            node, clock=time.monotonic, ttl=adapter.presence_ttl, liveness=self._shown.__contains__
        )
        self._watchers: list[Callable[[PresenceChange], None]] = []
        #: Subscribed (or subscribing): the subscriber connection holds the channel from now on.
        self.active = False
        self._loaded = asyncio.Event()
        self._held: list[bytes] | None = None  # messages that arrived while the first read ran
        self._wanted: set[NodeId] = set()
        self._want_all = False
        self._task: asyncio.Task[None] | None = None
        self._rlog = RateLimitedLog(log)
        self.stats = {"mirror_reads": 0, "mirror_gaps": 0, "mirror_bad": 0, "mirror_watcher_errors": 0}

    # ------------------------------------------------------------------ watchers
    def watch(self, listener: Callable[[PresenceChange], None]) -> Callable[[], None]:
        self._watchers.append(listener)
        if not self.active:
            self.active = True
            self._held = []
            self._want_all = True
            self._spawn()

        def off() -> None:
            if listener in self._watchers:
                self._watchers.remove(listener)

        return off

    async def watching(self) -> None:
        await self._loaded.wait()

    def online(self) -> list[UserPresence]:
        return self.replica.online()

    def members(self, room: str) -> list[ConnDescriptor]:
        return self.replica.room(room)

    def _emit(self, diff: PresenceDiff, initial: bool = False) -> None:
        if not diff:
            return
        change = PresenceChange(diff, initial)
        for watcher in list(self._watchers):
            try:
                watcher(change)
            except Exception as exc:
                self.stats["mirror_watcher_errors"] += 1
                self._rlog.log(logging.ERROR, "watcher", "a presence watcher raised: %r", exc)

    # ------------------------------------------------------------------ inbound
    def on_message(self, data: bytes) -> None:
        """One announcement from ``p:presence`` (the adapter's subscriber hands it over)."""
        if self._held is not None:
            self._held.append(data)
            return
        self._apply(data)

    def _apply(self, data: bytes) -> None:
        parsed = _parse(data)
        if parsed is None:
            self.stats["mirror_bad"] += 1
            self._rlog.log(logging.WARNING, "bad", "dropped a malformed presence announcement (%d bytes)", len(data))
            return
        kind, node, seq, body = parsed
        if kind in (b"U", b"X"):
            if kind == b"U":
                try:
                    delta = Delta(node, seq, put=_decode_desc(body))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    self.stats["mirror_bad"] += 1
                    self._resync(node)
                    return
            else:
                delta = Delta(node, seq, remove=body.decode(errors="replace"))
            update = self.replica.apply(delta)
            self._emit(update.diff)
            if update.outcome == "gap":
                self.stats["mirror_gaps"] += 1
                self._resync(node)
        elif kind == b"R":
            self._resync(node)
        elif node != self.node:  # L, F: the node left, or was forgotten
            self._forget(node)

    def _forget(self, node: NodeId) -> None:
        if node == self.node:
            return
        if self.replica.known(node):
            self._emit(self.replica.forget(node).diff)  # visible (a leave): its connections go now
        self._shown.discard(node)

    # ------------------------------------------------------------------ liveness
    def sync_liveness(self) -> None:
        """The adapter's set of live nodes changed: slices appear or vanish accordingly."""
        if not self._loaded.is_set():
            return
        alive = {NodeId(n) for n in self._a._alive} - {self.node}
        for node in sorted(self._shown - alive):
            self._shown.discard(node)
            self._emit(self.replica.liveness_changed(node, False))
        for node in sorted(alive - self._shown):
            self._shown.add(node)
            self._emit(self.replica.liveness_changed(node, True))

    # ------------------------------------------------------------------ reading slices
    def resync_all(self) -> None:
        """Read every slice again (the subscriber connection came back: messages may be lost)."""
        if self.active:
            self._want_all = True
            self._spawn()

    def _resync(self, node: NodeId) -> None:
        self._wanted.add(node)
        self._spawn()

    def _spawn(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._reader())

    async def _reader(self) -> None:
        a = self._a
        while (self._want_all or self._wanted) and not a._closing:
            if not a._up:
                await a._up_event.wait()
                continue
            everything, nodes = self._want_all, sorted(self._wanted)
            self._want_all = False
            self._wanted.clear()
            try:
                async with asyncio.timeout(a.command_timeout):
                    if self.channel not in a._on_conn:
                        futs = await a._sub_command(b"SUBSCRIBE", [self.channel], wait=True)
                        if not await futs[0]:
                            raise ConnectionError("the subscriber connection dropped while subscribing")
                    if everything:
                        rows = await a._script("slices")
                    else:
                        rows = []
                        for node in nodes:
                            rows.extend(await a._script("slices", node))
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:  # Redis refused (out of memory, ...): try again a little later
                self._want_all = self._want_all or everything
                self._wanted.update(nodes)
                self._rlog.log(logging.ERROR, "read", "Redis refused a presence read: %r", exc)
                await asyncio.sleep(min(1.0, a.heartbeat_interval))
                continue
            except _CONN_ERRORS as exc:
                # try again once the adapter is back (it reconnects, and re-subscribes the channel)
                self._want_all = self._want_all or everything
                self._wanted.update(nodes)
                a._lost(exc, "presence mirror")
                continue
            self.stats["mirror_reads"] += 1
            self._load(rows, everything)

    def _load(self, rows: list[Any], everything: bool) -> None:
        first = not self._loaded.is_set()
        if first:
            self._shown.update(NodeId(n) for n in self._a._alive if n != self.node)
        seen: set[NodeId] = set()
        for node_b, seq, blobs in rows:
            node = NodeId(node_b.decode() if isinstance(node_b, bytes) else str(node_b))
            seen.add(node)
            descs = []
            for blob in blobs:
                try:
                    descs.append(_decode_desc(blob))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    self.stats["mirror_bad"] += 1
            seq = int(seq)
            if node != self.node and self.replica.known(node) and seq < self.replica.seq_of(node):
                # its numbering restarted (it left or was forgotten, and came back)
                self._emit(self.replica.forget(node).diff)
            self._emit(self.replica.apply_snapshot(Snapshot(node, seq, descs)).diff, first)
        if everything:
            for node in self.replica.nodes():
                if node not in seen and node != self.node:
                    self._forget(node)
        if first:
            held, self._held = self._held or [], None
            for data in held:
                self._apply(data)
            self._loaded.set()
        self.sync_liveness()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._loaded.set()  # whoever waits for it stops waiting


def _parse(data: bytes) -> tuple[bytes, NodeId, int, bytes] | None:
    """``kind, node, seq, data`` of an announcement, or None if malformed."""
    if len(data) < 4:
        return None
    n = data[1]
    head = 2 + n
    colon = data.find(b":", head)
    if n == 0 or colon < 0 or not data[head:colon].isdigit():
        return None
    try:
        node = NodeId(data[2:head].decode())
    except UnicodeDecodeError:
        return None
    return data[:1], node, int(data[head:colon]), data[colon + 1 :]
