"""Ceiling server for the broadcast benchmark: a set of connections and `websockets.broadcast`.

Speaks the same superline.v1 subset as bc_ours_server.py: sends `{"t":"env","d":null}` on accept; `req`
`join` adds the connection to a set (answer: set size); `req` `start` runs the same paced loop, each tick
being one msgspec encode of `{"t":"evt","e":"tick","d":Tick}` then `websockets.broadcast(conns, data,
text=True)`. Usage: python bench/bc_raw_server.py --port 0 [--uvloop]  (prints `PORT <n>`, exits on SIGTERM)
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from bc_common import Start, Started, Tick, TickFrame, make_pad, run_start
from benchlib import add_stop_signals, announce_port, server_cli
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed


class Req(msgspec.Struct, tag_field="t", tag="req"):
    """Client `req` frame; `d` is decoded per request name."""

    i: int
    m: str
    d: msgspec.Raw = msgspec.Raw(b"null")


class Res(msgspec.Struct, tag_field="t", tag="res"):
    """Server `res` frame."""

    i: int
    d: int | Started


ENV_FRAME = b'{"t":"env","d":null}'
REQ_DECODER = msgspec.json.Decoder(Req)
START_DECODER = msgspec.json.Decoder(Start)
ENCODE = msgspec.json.Encoder().encode
CONNS: set[ServerConnection] = set()


async def start(args: Start) -> Started:
    """Run the paced broadcast over CONNS."""
    pad = make_pad(args.payload_bytes)
    time_ns = time.time_ns
    conns = CONNS

    def send(seq: int) -> None:
        broadcast(conns, ENCODE(TickFrame("tick", Tick(seq, time_ns(), pad))), text=True)

    def buffered() -> int:
        return sum(ws.transport.get_write_buffer_size() for ws in list(conns) if ws.transport is not None)

    return await run_start(args, send, lambda: len(conns), buffered, "raw")


async def handle(ws: ServerConnection) -> None:
    """Serve one connection: env frame, then `join` / `start` requests until it closes."""
    try:
        await ws.send(ENV_FRAME, text=True)
        while True:
            try:
                req = REQ_DECODER.decode(await ws.recv(decode=False))
            except msgspec.DecodeError:  # pong or junk: ignore
                continue
            if req.m == "join":
                CONNS.add(ws)
                await ws.send(ENCODE(Res(req.i, len(CONNS))), text=True)
            elif req.m == "start":
                result = await start(START_DECODER.decode(req.d))
                await ws.send(ENCODE(Res(req.i, result)), text=True)
    except ConnectionClosed:
        pass
    finally:
        CONNS.discard(ws)


async def main(port: int) -> None:
    """Listen on 127.0.0.1:`port` until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    add_stop_signals(asyncio.get_running_loop(), stop)
    async with serve(handle, "127.0.0.1", port, compression=None, ping_interval=None) as server:
        announce_port(server.sockets[0].getsockname()[1])
        await stop.wait()


def cli() -> None:
    """Parse arguments and run the server."""
    server_cli(__doc__ or "", main, max_fds=4096)


if __name__ == "__main__":
    cli()
