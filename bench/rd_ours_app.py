"""The superline side of the Redis comparison: the app node A and node B run (via the Redis adapter's runner).

Run as `python -m superline_zmq_redis.node rd_ours_app:app --url redis://... --prefix bench` from bench/.
`join` puts the connection in room "bench" and answers its connection id; `start` (sent by the receiver's
control connection on node A) runs the send loop: `srv.room("bench").broadcast("tick", ...)` or
`srv.to_conn(id).emit("tick", ...)`, yielding to the event loop every `batch` ticks. If the adapter's outgoing
queue passes 50 000 messages the loop waits for it to drain (counted in `waited_for_queue`), so a run never
loses ticks to a full queue.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rd_common import PAD, ROOM, Start, Started, Tick

from superline_zmq import Conn, SocketServer, create_socket_server, define_contract, event, request

api = define_contract(
    shared={
        "client_to_server": {"join": request(None, str), "start": request(Start, Started)},
        "server_to_client": {"tick": event(Tick)},
    },
    roles={"user": {}},
)

QUEUE_HIGH = 50_000


def app() -> SocketServer:
    srv = create_socket_server(api)

    async def join(_: None, ctx: Any, conn: Conn) -> str:
        await srv.room(ROOM).add(conn)
        return str(conn.id)

    async def start(s: Start, ctx: Any, conn: Conn) -> Started:
        adapter = srv.adapter
        room = srv.room(ROOM)
        targets = [srv.to_conn(t) for t in s.targets]
        n = len(targets)
        if s.mode == "direct" and not n:
            raise ValueError("direct mode needs targets")
        deadline = time.monotonic() + s.seconds
        waited = 0
        t_first = time.monotonic_ns()
        sent = 0
        capped = False
        for i in range(s.count):
            if s.mode == "room":
                room.broadcast("tick", Tick(i, time.monotonic_ns(), PAD))
            else:
                targets[i % n].emit("tick", Tick(i // n, time.monotonic_ns(), PAD))
            sent += 1
            if sent % s.batch == 0:
                await asyncio.sleep(0)
                while getattr(adapter, "queued", 0) > QUEUE_HIGH:
                    waited += 1
                    await asyncio.sleep(0.001)
                if time.monotonic() > deadline:
                    capped = True
                    break
        return Started(sent, t_first, time.monotonic_ns(), capped, waited)

    srv.implement({"shared": {"join": join, "start": start}})
    return srv
