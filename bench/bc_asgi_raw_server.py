"""ASGI ceiling server for the broadcast benchmark: a minimal raw ASGI 3 app under uvicorn.

Speaks the same superline.v1 subset as bc_raw_server.py: `{"t":"env","d":null}` on accept; `req` `join` adds
the connection's ASGI `send` callable to a set (answer: set size); `req` `start` runs bc_common's paced loop,
each tick being one msgspec encode of `{"t":"evt","e":"tick","d":Tick}` and then, for every member,
`await send({"type": "websocket.send", "text": data})`: ASGI has no broadcast, so that is the least an ASGI
app can do per delivery. uvicorn is configured as `srv.listen(transport="asgi")` configures it
(benchlib.serve_asgi_until_stopped). ASGI shows no write buffers, so the drain wait after the loop has
nothing to wait for: push/s counts until the last member's `send` returned.
Usage: python bench/bc_asgi_raw_server.py --port 0 [--uvloop]  (prints `PORT <n>`, exits on SIGTERM)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from bc_common import Start, Started, Tick, TickFrame, make_pad, run_start
from bc_raw_server import REQ_DECODER, START_DECODER, Res
from benchlib import serve_asgi_until_stopped, server_cli

Send = Callable[[dict[str, Any]], Awaitable[None]]

ENV_FRAME = '{"t":"env","d":null}'
ENCODE = msgspec.json.Encoder().encode
MEMBERS: set[Send] = set()


async def start(args: Start) -> Started:
    """Run the paced broadcast over MEMBERS."""
    pad = make_pad(args.payload_bytes)
    time_ns = time.time_ns
    members = MEMBERS

    async def send(seq: int) -> None:
        msg = {"type": "websocket.send", "text": ENCODE(TickFrame("tick", Tick(seq, time_ns(), pad))).decode()}
        for member in list(members):
            await member(msg)

    return await run_start(args, send, lambda: len(members), lambda: 0, "asgi-raw")


async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
    """The ASGI app: env frame, then `join` / `start` requests until the connection closes."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["type"] != "websocket" or (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": ENV_FRAME})
    try:
        while True:
            msg = await receive()
            if msg["type"] != "websocket.receive":  # websocket.disconnect
                return
            raw = msg.get("text")
            try:
                req = REQ_DECODER.decode(raw if raw is not None else msg.get("bytes") or b"")
            except msgspec.DecodeError:  # pong or junk: ignore
                continue
            if req.m == "join":
                MEMBERS.add(send)
                await send({"type": "websocket.send", "text": ENCODE(Res(req.i, len(MEMBERS))).decode()})
            elif req.m == "start":
                result = await start(START_DECODER.decode(req.d))
                await send({"type": "websocket.send", "text": ENCODE(Res(req.i, result)).decode()})
    finally:
        MEMBERS.discard(send)


async def main(port: int) -> None:
    """Serve `app` with uvicorn on 127.0.0.1:`port` until SIGTERM/SIGINT."""
    await serve_asgi_until_stopped(app, port)


def cli() -> None:
    """Parse arguments and run the server."""
    server_cli(__doc__ or "", main, max_fds=4096)


if __name__ == "__main__":
    cli()
