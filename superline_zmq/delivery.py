"""Writing frames to connections: one at a time or the same bytes to many, under backpressure.

Every write is synchronous and never waits for the peer: the frame goes to the
connection's write buffer through the transport. Before that, the connection's unsent
bytes are compared with :class:`~superline_zmq.session.Backpressure`; over the limit the
frame is dropped (counted) or the connection is closed with 1013 (counted), and a peer too
slow to take even the close frame is cut off after a grace period. So a slow or hostile
client can only hurt itself.

A fan-out (a room, a topic, a user) encodes its frame once and hands the same bytes to
one :meth:`~superline_zmq.transport.Connection.fanout` call per transport, which frames
them once where the transport can.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from superline_zmq.logs import RateLimitedLog
from superline_zmq.session import Backpressure, ServerStats
from superline_zmq.tasks import TaskOwner

if TYPE_CHECKING:
    from superline_zmq.connection import ConnCore
    from superline_zmq.transport import Connection

log = logging.getLogger("superline_zmq.server")

#: Seconds a backpressure close waits for the peer's closing handshake before aborting.
SLOW_CLOSE_GRACE = 1.0


class Delivery:
    """Sends frames to this node's connections (see the module docstring)."""

    def __init__(self, backpressure: Backpressure | None, stats: ServerStats, tasks: TaskOwner) -> None:
        self.backpressure = backpressure
        self._stats = stats
        self._tasks = tasks
        self._rlog = RateLimitedLog(log)

    def send(self, conn: ConnCore, data: bytes) -> bool:
        """Write one frame to ``conn`` now; False if it was dropped (closed, or over the limit)."""
        if not conn.session.writable:
            self._stats.dropped_closed += 1
            return False
        link = conn.link
        bp = self.backpressure
        if bp is not None and bp.decide(link.buffered(), len(data)) != "send":
            self._over_limit(conn, len(data))
            return False
        if not link.send(data):
            self._stats.dropped_closed += 1
            return False
        stats = self._stats
        stats.frames_out += 1
        stats.bytes_out += len(data)
        return True

    def fanout(self, members: Iterable[ConnCore], data: bytes, *, enforce: bool = True) -> None:
        """Write the same frame to every member, grouped into one transport fanout call.

        ``enforce=False`` skips the backpressure policy (heartbeat pings).
        """
        bp = self.backpressure
        limit = bp.max_buffered_bytes - len(data) if bp is not None and enforce else None
        ready: list[Connection] = []
        over: list[ConnCore] = []
        closed = 0
        for conn in members:
            if not conn.session.writable:
                closed += 1
                continue
            link = conn.link
            if limit is not None and link.buffered() > limit:
                over.append(conn)
                continue
            ready.append(link)
        if closed:
            self._stats.dropped_closed += closed
        if ready:
            kind = type(ready[0])
            mixed = any(type(link) is not kind for link in ready)
            stats = self._stats
            stats.frames_out += len(ready)
            stats.bytes_out += len(ready) * len(data)
            if not mixed:
                ready[0].fanout(ready, data)
            else:  # members on several transports (rare): one fanout call per transport
                groups: dict[type, list[Connection]] = {}
                for link in ready:
                    groups.setdefault(type(link), []).append(link)
                for links in groups.values():
                    links[0].fanout(links, data)
        for conn in over:
            self._over_limit(conn, len(data))

    def _over_limit(self, conn: ConnCore, size: int) -> None:
        bp = self.backpressure
        assert bp is not None
        if bp.on_exceed == "drop":
            self._stats.dropped_backpressure += 1
            self._rlog.log(
                logging.WARNING,
                "bp_drop",
                "dropped a %d-byte frame to %s: over %d buffered bytes",
                size,
                conn.id,
                bp.max_buffered_bytes,
            )
            return
        if not conn.session.closing():
            return  # already closing: its frames are dropped above
        self._stats.closed_backpressure += 1
        self._rlog.log(
            logging.WARNING, "bp_close", "closing %s with 1013: over %d buffered bytes", conn.id, bp.max_buffered_bytes
        )
        self._tasks.spawn(close_or_abort(conn.link, 1013, "backpressure limit exceeded", SLOW_CLOSE_GRACE))


async def close_or_abort(link: Connection, code: int, reason: str, grace: float) -> None:
    """Close with ``code``; a peer that does not finish the closing handshake within ``grace`` is cut off."""
    try:
        async with asyncio.timeout(grace):
            await link.close(code, reason)
    except TimeoutError:
        link.abort()
