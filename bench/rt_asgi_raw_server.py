"""ASGI ceiling server: superline.v1 `echo` answered by a minimal raw ASGI 3 app under uvicorn.

The ASGI counterpart of rt_raw_server.py: accepts every WebSocket, sends `{"t":"env","d":null}`, then answers
every `req` for `echo` with a `res` (one long-lived msgspec decoder and encoder), one message at a time, each
reply one `await send({"type": "websocket.send", "text": ...})`. uvicorn is configured exactly as
`srv.listen(transport="asgi")` configures it (benchlib.serve_asgi_until_stopped).
Usage: python bench/rt_asgi_raw_server.py --port 0 [--uvloop]  (prints `PORT <n>`, exits on SIGTERM)
"""

from __future__ import annotations

from typing import Any

import msgspec
from benchlib import serve_asgi_until_stopped, server_cli
from rt_raw_server import DECODER, ENCODER, Err, Res

ENV_FRAME = '{"t":"env","d":null}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app: WebSocket echo of superline.v1 requests; 404 for plain HTTP."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["type"] != "websocket":
        return
    if (await receive())["type"] != "websocket.connect":
        return
    decode, encode = DECODER.decode, ENCODER.encode
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": ENV_FRAME})
    while True:
        msg = await receive()
        if msg["type"] != "websocket.receive":  # websocket.disconnect
            return
        raw = msg.get("text")
        if raw is None:
            raw = msg.get("bytes") or b""
        try:
            req = decode(raw)
        except msgspec.DecodeError:  # not a well-formed echo `req` (pong, junk): ignore
            continue
        if req.m == "echo":
            out = encode(Res(req.i, req.d))
        else:
            out = encode(Err(req.i, "NOT_FOUND", f"Unknown message: {req.m}"))
        await send({"type": "websocket.send", "text": out.decode()})


async def main(port: int) -> None:
    """Serve `app` with uvicorn on 127.0.0.1:`port` until SIGTERM/SIGINT."""
    await serve_asgi_until_stopped(app, port)


def cli() -> None:
    """Parse arguments and run the server."""
    server_cli(__doc__ or "", main)


if __name__ == "__main__":
    cli()
