"""python-socketio server for the round-trip benchmark: `AsyncServer(async_mode="asgi")` + `socketio.ASGIApp`.

An `echo` event whose ack returns the data unchanged. Served by uvicorn with the same config as
`srv.listen(transport="asgi")` (benchlib.serve_asgi_until_stopped). Clients speak Engine.IO 4 / Socket.IO 5 on
`/socket.io/?EIO=4&transport=websocket` (rt_loadgen.py --protocol sio). Engine.IO pings every 25 s (default).
Needs `pip install python-socketio` (bench only).
Usage: python bench/rt_sio_server.py --port 0 [--uvloop]  (prints `PORT <n>`, exits on SIGTERM)
"""

from __future__ import annotations

from typing import Any

from benchlib import serve_asgi_until_stopped, server_cli


def make_app() -> Any:
    """The Socket.IO server with its `echo` handler, wrapped as an ASGI app."""
    import socketio

    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)

    @sio.event
    async def echo(sid: str, data: Any) -> Any:
        return data

    return socketio.ASGIApp(sio)


async def main(port: int) -> None:
    """Serve the Socket.IO app with uvicorn on 127.0.0.1:`port` until SIGTERM/SIGINT."""
    await serve_asgi_until_stopped(make_app(), port)


def cli() -> None:
    """Parse arguments and run the server."""
    server_cli(__doc__ or "", main)


if __name__ == "__main__":
    cli()
