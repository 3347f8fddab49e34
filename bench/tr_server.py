"""Transport benchmark server: one superline.v1 gateway, served by the fast or the websockets transport.

The same `BenchGateway` runs on either transport, so the figures differ only by the transport:
- `req` `echo` is answered with `res` (rt_loadgen.py's load, as rt_raw_server.py does);
- `req` `join` puts the connection in a room, `req` `start` runs bc_common's paced loop where each
  tick is one msgspec encode and one `conn.fanout(room, data)` (bc_receiver.py's load): the fast
  transport frames once and writes the same bytes to every socket, the websockets transport calls
  `websockets.broadcast` (a frame per connection);
- on stdin, `mem` prints `MEM <rss bytes> <traced bytes> <connections>` after a gc (traced is 0
  unless `--tracemalloc`), for the idle-memory measurement.
Usage: python bench/tr_server.py --transport fast|ws [--uvloop] [--tracemalloc] [--port 0]
(prints `PORT <n>`, exits on SIGTERM)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import tracemalloc
from typing import Any

import msgspec
from bc_common import Start, Started, Tick, TickFrame, make_pad, run_start
from benchlib import add_stop_signals, announce_port, install_loop, install_mem_command, raise_fd_limit, use_checkout

use_checkout()

from superline_zmq.transport import Accept, Connection, Decision, Handshake, fast, ws  # noqa: E402


class Text(msgspec.Struct):
    """Payload of the echo request and its reply."""

    text: str


class Req(msgspec.Struct, tag_field="t", tag="req"):
    """Client `req` frame; `d` decoded per request name."""

    i: int
    m: str
    d: msgspec.Raw = msgspec.Raw(b"null")


class Res(msgspec.Struct, tag_field="t", tag="res"):
    """Server `res` frame."""

    i: int
    d: Any


ENV_FRAME = b'{"t":"env","d":null}'
REQ = msgspec.json.Decoder(Req)
TEXT = msgspec.json.Decoder(Text)
START = msgspec.json.Decoder(Start)
ENCODE = msgspec.json.Encoder().encode


class Session:
    """One connection's handler: decode, answer."""

    __slots__ = ("conn", "gw")

    def __init__(self, gw: BenchGateway, conn: Connection) -> None:
        self.gw = gw
        self.conn = conn

    def on_message(self, data: bytes | str) -> None:
        try:
            req = REQ.decode(data)
        except msgspec.DecodeError:  # pong or junk
            return
        if req.m == "echo":
            self.conn.send(ENCODE(Res(req.i, TEXT.decode(req.d))))
        elif req.m == "join":
            self.gw.room.append(self.conn)
            self.conn.send(ENCODE(Res(req.i, len(self.gw.room))))
        elif req.m == "start":
            self.gw.spawn(self.gw.start(self.conn, req.i, START.decode(req.d)))

    def on_close(self, code: int | None) -> None:
        self.gw.conns.discard(self.conn)
        if self.conn in self.gw.room:
            self.gw.room.remove(self.conn)


class BenchGateway:
    """Accepts everyone, sends the env frame, starts at once."""

    text = True
    max_message_size = 1 << 20

    def __init__(self) -> None:
        self.conns: set[Connection] = set()
        self.room: list[Connection] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def decide(self, handshake: Handshake) -> Decision:
        return Accept(None)

    def open(self, conn: Connection, grant: Any) -> None:
        self.conns.add(conn)
        conn.send(ENV_FRAME)
        conn.start(Session(self, conn))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def start(self, conn: Connection, i: int, args: Start) -> None:
        pad = make_pad(args.payload_bytes)
        room = self.room
        time_ns = time.time_ns

        def send(seq: int) -> None:
            if room:
                room[0].fanout(room, ENCODE(TickFrame("tick", Tick(seq, time_ns(), pad))))

        def buffered() -> int:
            return sum(c.buffered() for c in room if c.open)

        result: Started = await run_start(args, send, lambda: len(room), buffered, "transport")
        conn.send(ENCODE(Res(i, result)))


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    add_stop_signals(loop, stop)
    gw = BenchGateway()
    listener: Any
    if args.transport == "fast":
        listener = await fast.serve(gw, "127.0.0.1", args.port)
    else:
        listener, _ = await ws.serve(gw, "127.0.0.1", args.port)
    announce_port(listener.addresses[0][1])

    install_mem_command(lambda: len(gw.conns))
    try:
        await stop.wait()
    finally:
        loop.remove_reader(sys.stdin)
        listener.close()
        for conn in list(gw.conns):
            conn.abort()
        await asyncio.wait_for(listener.wait_closed(), 10)


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transport", choices=("fast", "ws"), required=True)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--tracemalloc", action="store_true", help="trace Python allocations (for `mem`)")
    parser.add_argument("--max-fds", type=int, default=4096, help="raise RLIMIT_NOFILE to this")
    args = parser.parse_args()
    raise_fd_limit(args.max_fds)
    if args.tracemalloc:
        tracemalloc.start()
    install_loop(args.uvloop)
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
