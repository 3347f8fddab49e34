"""The python-socketio side of the Redis comparison: one node (aiohttp) with `AsyncRedisManager`.

`python bench/rd_sio_server.py --redis redis://127.0.0.1:PORT/0 [--uvloop]` prints `PORT <n>` once serving and
exits on SIGTERM. Events: `join` (enter room "bench", ack: the sid), `start` (the send loop: `await
sio.emit("tick", ..., room="bench")` or `await sio.emit("tick", ..., to=sid)`, yielding every `batch`;
ack: the `Started` fields). Every emit goes through Redis (`AsyncRedisManager` publishes each one).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import msgspec
import socketio
from aiohttp import web
from benchlib import add_stop_signals, announce_port, install_loop
from rd_common import PAD, ROOM, Start, Started


async def main(redis_url: str) -> None:
    mgr = socketio.AsyncRedisManager(redis_url)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr, logger=False, engineio_logger=False)
    app = web.Application()
    sio.attach(app)

    @sio.event
    async def join(sid: str, *_: Any) -> str:
        await sio.enter_room(sid, ROOM)
        return sid

    @sio.event
    async def start(sid: str, data: Any) -> dict[str, Any]:
        s = msgspec.convert(data, Start)
        deadline = time.monotonic() + s.seconds
        n = len(s.targets)
        t_first = time.monotonic_ns()
        sent = 0
        capped = False
        for i in range(s.count):
            if s.mode == "room":
                await sio.emit("tick", {"seq": i, "t_ns": time.monotonic_ns(), "pad": PAD}, room=ROOM)
            else:
                await sio.emit("tick", {"seq": i // n, "t_ns": time.monotonic_ns(), "pad": PAD}, to=s.targets[i % n])
            sent += 1
            if sent % s.batch == 0:
                await asyncio.sleep(0)
                if time.monotonic() > deadline:
                    capped = True
                    break
        return msgspec.to_builtins(Started(sent, t_first, time.monotonic_ns(), capped))

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stop = asyncio.Event()
    add_stop_signals(asyncio.get_running_loop(), stop)
    announce_port(int(port))
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis://127.0.0.1:PORT/0")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    install_loop(args.uvloop)
    asyncio.run(main(args.redis))


if __name__ == "__main__":
    cli()
