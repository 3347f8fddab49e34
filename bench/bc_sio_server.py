"""python-socketio server for the broadcast benchmark: `AsyncServer(async_mode="asgi")` + `socketio.ASGIApp`.

Events: `join` (enter room "bench"; ack: the room size), `start` (bc_common's paced loop, each tick one
`await sio.emit("tick", {"seq", "t_ns", "pad"}, room="bench")`; ack: the `Started` fields). Served by uvicorn
with the same config as `srv.listen(transport="asgi")` (benchlib.serve_asgi_until_stopped). Clients speak
Engine.IO 4 / Socket.IO 5 (bc_receiver.py --protocol sio); a tick arrives as `42["tick",{...}]`. The drain
wait after the loop waits for every Engine.IO socket's outgoing packet queue to be empty.
Needs `pip install python-socketio` (bench only).
Usage: python bench/bc_sio_server.py --port 0 [--uvloop]  (prints `PORT <n>`, exits on SIGTERM)
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from bc_common import ROOM, Start, make_pad, run_start
from benchlib import serve_asgi_until_stopped, server_cli


def make_app() -> Any:
    """The Socket.IO server with `join` / `start` handlers, wrapped as an ASGI app."""
    import socketio

    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)
    members: set[str] = set()

    @sio.event
    async def join(sid: str, *_: Any) -> int:
        await sio.enter_room(sid, ROOM)
        members.add(sid)
        return len(members)

    @sio.event
    async def disconnect(sid: str, *_: Any) -> None:
        members.discard(sid)

    @sio.event
    async def start(sid: str, data: Any) -> Any:
        args = msgspec.convert(data, Start)
        pad = make_pad(args.payload_bytes)
        time_ns = time.time_ns

        def send(seq: int) -> Any:
            return sio.emit("tick", {"seq": seq, "t_ns": time_ns(), "pad": pad}, room=ROOM)

        def buffered() -> int:  # packets queued in Engine.IO, not yet written
            return sum(s.queue.qsize() for s in list(sio.eio.sockets.values()))

        return msgspec.to_builtins(await run_start(args, send, lambda: len(members), buffered, "sio"))

    return socketio.ASGIApp(sio)


async def main(port: int) -> None:
    """Serve the Socket.IO app with uvicorn on 127.0.0.1:`port` until SIGTERM/SIGINT."""
    await serve_asgi_until_stopped(make_app(), port)


def cli() -> None:
    """Parse arguments and run the server."""
    server_cli(__doc__ or "", main, max_fds=4096)


if __name__ == "__main__":
    cli()
