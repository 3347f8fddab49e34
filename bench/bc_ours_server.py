"""superline_zmq server for the broadcast benchmark: `join` puts a connection in room "bench", `start` fans out.

Contract (shared): `join: request(None, int)` -> room size; `start: request(Start, Started)` sends
`Start.count` `tick` events with `srv.room("bench").broadcast("tick", Tick(seq, time.time_ns(), pad))`;
event `tick: event(Tick)`. Clients connect with `?role=user` (default authenticate, default backpressure).
Usage: python bench/bc_ours_server.py --port 0 [--uvloop] [--transport fast|websockets|asgi]
(prints `PORT <n>`, exits on SIGTERM)
"""

from __future__ import annotations

import time
from typing import Any

from bc_common import ROOM, Start, Started, Tick, make_pad, run_start
from benchlib import serve_until_stopped, server_cli, use_checkout

use_checkout()

from superline_zmq import Conn, create_socket_server, define_contract, event, request  # noqa: E402

api = define_contract(
    shared={
        "client_to_server": {"join": request(None, int), "start": request(Start, Started)},
        "server_to_client": {"tick": event(Tick)},
    },
    roles={"user": {}},
)


async def main(port: int, transport: str) -> None:
    """Listen on 127.0.0.1:`port` with `transport` until SIGTERM/SIGINT, then close the server."""
    srv = create_socket_server(api)

    async def join(_: None, ctx: Any, conn: Conn) -> int:
        room = srv.room(ROOM)
        await room.add(conn)
        return room.size

    async def start(args: Start, ctx: Any, conn: Conn) -> Started:
        pad = make_pad(args.payload_bytes)
        time_ns = time.time_ns

        def send(seq: int) -> None:
            srv.room(ROOM).broadcast("tick", Tick(seq, time_ns(), pad))

        def buffered() -> int:
            return sum(c.buffered_bytes for c in srv.room(ROOM).connections)

        return await run_start(args, send, lambda: srv.room(ROOM).size, buffered, "ours")

    srv.implement({"shared": {"join": join, "start": start}})
    await serve_until_stopped(srv, port, transport)


def cli() -> None:
    """Parse arguments and run the server."""
    server_cli(__doc__ or "", main, max_fds=4096, transport=True)


if __name__ == "__main__":
    cli()
