"""The server's one heartbeat timer: ping every connection, reap the silent ones (PROTOCOL §7).

Each connection's decision (ping it, or reap it after ``max_missed`` unanswered pings) is its
session's (:meth:`~superline_zmq.session.ServerSession.heartbeat`); this only paces the
sweep. A tick pings in batches of :data:`HEARTBEAT_BATCH` spread over the first
:data:`HEARTBEAT_SPREAD` of the interval, so neither the pings nor the pongs they bring
back arrive all at once and 10k connections never hold the event loop for long
(bench/heartbeat.py). The ping frame is encoded once and fanned out to each batch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from superline_zmq import wire
from superline_zmq.logs import RateLimitedLog

if TYPE_CHECKING:
    from superline_zmq.connection import ConnCore
    from superline_zmq.core import Core

log = logging.getLogger("superline_zmq.server")

#: Connections pinged per slice of a heartbeat tick before yielding to the event loop.
HEARTBEAT_BATCH = 100
#: Fraction of the heartbeat interval over which one tick's batches are spread.
HEARTBEAT_SPREAD = 0.5


class HeartbeatTimer:
    """Runs the heartbeat of one server's connections (``core.heartbeat``; None: off)."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._ping = core.encode(wire.Ping())
        self._rlog = RateLimitedLog(log)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start ticking every ``core.heartbeat.interval`` (no-op when off or already running)."""
        if self._core.heartbeat is not None and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Stop ticking (does not wait; :meth:`close` does)."""
        if self.task is not None:
            self.task.cancel()

    async def close(self) -> None:
        """Stop ticking and wait until the timer task has ended."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while (hb := self._core.heartbeat) is not None:
            await asyncio.sleep(hb.interval)
            conns = list(self._core.conns.values())
            batches = range(0, len(conns), HEARTBEAT_BATCH)
            gap = hb.interval * HEARTBEAT_SPREAD / max(len(batches), 1)
            start = loop.time()
            for n, k in enumerate(batches):
                self.batch(conns[k : k + HEARTBEAT_BATCH])
                await asyncio.sleep(max(0.0, start + (n + 1) * gap - loop.time()))

    def tick(self) -> None:
        """One tick now, all connections in one synchronous sweep (about 8 µs per connection)."""
        self.batch(list(self._core.conns.values()))

    def batch(self, conns: list[ConnCore]) -> None:
        """Ping (or reap) each of ``conns``; the pings go out as one fan-out."""
        core = self._core
        hb = core.heartbeat
        max_missed = hb.max_missed if hb is not None else None
        now = core.clock()
        alive: list[ConnCore] = []
        for conn in conns:
            decision = conn.session.heartbeat(now, max_missed)
            if decision == "ping":
                alive.append(conn)
            elif decision == "reap":
                self._rlog.log(
                    logging.INFO, "reap", "terminating %s: %d pings unanswered", conn.id, conn.session.missed
                )
                conn.terminate()
        if alive:
            # pings bypass the backpressure policy: a ping never closes a connection or counts a drop
            core.delivery.fanout(alive, self._ping, enforce=False)
