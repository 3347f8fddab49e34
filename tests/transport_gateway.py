"""A small gateway for transport-level tests: authenticate by ``?role=``, echo, and a few commands.

Used in-process by ``test_transport_fast.py`` and inside the ASGI server processes of
``test_transport_asgi.py`` (see ``asgi_app.py``), so the commands are the whole interface:

* ``?role=ok`` is accepted, ``?role=missing`` refused 404, ``?role=slow`` waits for
  :attr:`EchoGateway.release` before being accepted, anything else refused 401;
* on open the connection gets ``welcome`` (before it is started);
* messages are echoed (text as text, binary as binary), except the commands:
  ``close:CODE`` closes with CODE, ``fanout:TEXT`` sends TEXT to every open connection with one
  ``fanout`` call and answers ``fanned:N``, ``stats`` answers a JSON object (open connections,
  close codes seen, largest ``buffered()``), ``flood:N:SIZE`` fanouts N messages of SIZE bytes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from superline_zmq.transport import Accept, Connection, Decision, Handshake, Refuse


class Recorder:
    """The per-connection message handler: records, echoes, runs commands."""

    def __init__(self, gateway: EchoGateway, conn: Connection) -> None:
        self.gateway = gateway
        self.conn = conn
        self.messages: list[bytes | str] = []
        self.closes: list[int | None] = []

    def on_message(self, data: bytes | str) -> None:
        self.messages.append(data)
        gw, conn = self.gateway, self.conn
        text = data if isinstance(data, str) else None
        if text is not None and text.startswith("close:"):
            gw.spawn(conn.close(int(text[6:]), "bye"))
        elif text is not None and text.startswith("fanout:"):
            n = conn.fanout(gw.open_conns(), text[7:].encode())
            conn.send(f"fanned:{n}".encode())
        elif text is not None and text.startswith("flood:"):
            _, count, size = text.split(":")
            payload = b"x" * int(size)
            for _ in range(int(count)):
                conn.fanout(gw.open_conns(), payload)
                gw.note_buffered()
        elif text == "stats":
            conn.send(json.dumps(gw.stats()).encode())
        else:
            conn.send(data.encode() if isinstance(data, str) else data)

    def on_close(self, code: int | None) -> None:
        self.closes.append(code)
        self.gateway.closed.append(code)


class EchoGateway:
    """A :class:`~superline_zmq.transport.Gateway` for tests (see the module docstring)."""

    def __init__(self, *, text: bool = True, max_message_size: int = 64 * 1024, auto_start: bool = True) -> None:
        self.text = text
        self.max_message_size = max_message_size
        self.auto_start = auto_start
        self.handshakes: list[Handshake] = []
        self.conns: list[Connection] = []
        self.recorders: list[Recorder] = []
        self.closed: list[int | None] = []
        self.max_buffered = 0
        self.release = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def decide(self, handshake: Handshake) -> Decision:
        self.handshakes.append(handshake)
        role = handshake.query.get("role")
        if role == "slow":
            await self.release.wait()
            return Accept(handshake)
        if role == "ok":
            return Accept(handshake)
        if role == "missing":
            return Refuse(404, "no such endpoint\n")
        return Refuse(401, "unauthorized\n")

    def open(self, conn: Connection, grant: Any) -> None:
        self.conns.append(conn)
        rec = Recorder(self, conn)
        self.recorders.append(rec)
        conn.send(b"welcome")
        if self.auto_start:
            conn.start(rec)

    def open_conns(self) -> list[Connection]:
        return [c for c in self.conns if c.open]

    def note_buffered(self) -> None:
        self.max_buffered = max([self.max_buffered, *(c.buffered() for c in self.conns if c.open)])

    def stats(self) -> dict[str, Any]:
        return {
            "open": len(self.open_conns()),
            "closed": self.closed,
            "max_buffered": self.max_buffered,
            "buffered": [c.buffered() for c in self.conns if c.open],
            "paths": sorted({h.path for h in self.handshakes}),
            "transports": sorted({h.transport for h in self.handshakes}),
        }

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in a task this gateway keeps until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Abort every connection and wait for the tasks started by commands."""
        for conn in self.conns:
            conn.abort()
        for task in list(self._tasks):
            await asyncio.wait_for(asyncio.shield(task), 10)
