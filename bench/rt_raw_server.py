"""Ceiling server: superline.v1 `echo` request answered by bare `websockets` + msgspec.

Sends `{"t":"env","d":null}` on accept, then answers every `req` for `echo` with a `res`.
Usage: python bench/rt_raw_server.py --port 0 [--uvloop]  (prints `PORT <n>`, exits on SIGTERM)
"""

from __future__ import annotations

import asyncio

import msgspec
from benchlib import add_stop_signals, announce_port, server_cli
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed


class Text(msgspec.Struct):
    """Payload of the echo request and its reply."""

    text: str


class Req(msgspec.Struct, tag_field="t", tag="req"):
    """Client `req` frame, with `d` typed for `echo`."""

    i: int
    m: str
    d: Text


class Res(msgspec.Struct, tag_field="t", tag="res"):
    """Server `res` frame."""

    i: int
    d: Text


class Err(msgspec.Struct, tag_field="t", tag="err"):
    """Server `err` frame (unknown request name)."""

    i: int
    code: str
    m: str


ENV_FRAME = b'{"t":"env","d":null}'
DECODER = msgspec.json.Decoder(Req)
ENCODER = msgspec.json.Encoder()


async def handle(ws: ServerConnection) -> None:
    """Serve one connection: env frame, then decode/answer frames in arrival order."""
    decode, encode, conns = DECODER.decode, ENCODER.encode, (ws,)
    try:
        await ws.send(ENV_FRAME, text=True)
        while True:
            raw = await ws.recv(decode=False)
            try:
                req = decode(raw)
            except msgspec.DecodeError:  # not a well-formed echo `req` (pong, junk): ignore
                continue
            if req.m == "echo":
                out = encode(Res(req.i, req.d))
            else:
                out = encode(Err(req.i, "NOT_FOUND", f"Unknown message: {req.m}"))
            broadcast(conns, out, text=True)  # write without awaiting: no send lock, no drain
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    """Listen on 127.0.0.1:`port` until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    add_stop_signals(asyncio.get_running_loop(), stop)
    async with serve(handle, "127.0.0.1", port, compression=None, ping_interval=None) as server:
        announce_port(server.sockets[0].getsockname()[1])
        await stop.wait()


def cli() -> None:
    """Parse arguments and run the server."""
    server_cli(__doc__ or "", main)


if __name__ == "__main__":
    cli()
