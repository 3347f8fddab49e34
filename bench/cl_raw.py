"""The raw baseline of cluster_delivery.py: a hand-written pyzmq hop between two processes A' and B'.

`relay` (B') holds the WebSocket clients: a bare `websockets` server speaking the same superline.v1 subset as
cl_app.py (`env` on accept; `whoami` -> an id; `join` -> a set; `stats`; `profile` is a no-op) plus a ROUTER
and a SUB socket, both bound on 127.0.0.1. What arrives is written to the clients with no decoding:

- ROUTER `[ident, b"e", conn id, frame]` -> `websockets.broadcast((ws,), frame)` (a targeted emit);
- SUB `[b"r:bench\\0", frame]` -> `websockets.broadcast(room, frame)` (a room fan-out);
- ROUTER `[ident, b"q", rid, conn id, input]` -> one `sreq` frame to the connection (input passed as raw
  JSON); the client's `sres` goes back to A' as `[b"a", rid, d]` on a DEALER connected to A's ROUTER.

`sender` (A') is a bare `websockets` control server (`?role=admin` frames `emit`, `ask`, `stats`) with a
DEALER connected to B's ROUTER, an XPUB (NODROP) connected to B's SUB, and a ROUTER of its own for the
answers. Like the library's adapter, every socket carries traffic one way only (a DEALER only sends, a
ROUTER only receives), so sending through a plain (shadow) socket never swallows the edge-triggered read
notification of an awaited receive. At start A' sends `[b"h", its ROUTER endpoint]`; B' connects a DEALER
there and answers `[b"r"]`; A' also waits until B's subscription reaches its XPUB; then it serves.
Its send loops are the ones the library's bench app runs (`cl_common.run_sends` / `run_asks`), each message
being one msgspec encode of the same bytes and one non-blocking `send_multipart` (a refused send is
counted). Both sides use the library's high-water marks (100 000) and drain each readable socket with
non-blocking receives (up to 256 in a row).
Usage: python bench/cl_raw.py relay | sender --router EP --sub EP   (prints `READY {json}`, exits on SIGTERM)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec
import zmq
import zmq.asyncio
from benchlib import add_stop_signals, install_loop
from cl_common import (
    ROOM,
    AskRun,
    Confirmed,
    EmitRun,
    Me,
    Question,
    Tick,
    TickFrame,
    make_pad,
    run_asks,
    run_sends,
)
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

HWM = 100_000
TOPIC = f"r:{ROOM}".encode() + b"\0"
ENV_FRAME = b'{"t":"env","d":null}'
ENCODE = msgspec.json.Encoder().encode


class Req(msgspec.Struct, tag_field="t", tag="req"):
    """A client `req`; `d` decoded per method."""

    i: int
    m: str
    d: msgspec.Raw = msgspec.Raw(b"null")


class SRes(msgspec.Struct, tag_field="t", tag="sres"):
    """A client's answer to a server request."""

    i: int
    d: msgspec.Raw = msgspec.Raw(b"null")


class Pong(msgspec.Struct, tag_field="t", tag="pong"):
    """Heartbeat answer (ignored)."""


class Res(msgspec.Struct, tag_field="t", tag="res"):
    """Server `res`."""

    i: int
    d: Any


class SReqOut(msgspec.Struct, tag_field="t", tag="sreq"):
    """Server `sreq` with a raw (already encoded) input."""

    i: int
    m: str
    d: msgspec.Raw


IN_DECODER = msgspec.json.Decoder(Req | SRes | Pong)
EMIT_DECODER = msgspec.json.Decoder(EmitRun)
ASK_DECODER = msgspec.json.Decoder(AskRun)
CONFIRMED_DECODER = msgspec.json.Decoder(Confirmed)


def make_socket(ctx: zmq.asyncio.Context, kind: int) -> zmq.asyncio.Socket:
    """A socket with the library's high-water marks and LINGER 0."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    return sock


async def drain_loop(sock: zmq.asyncio.Socket, handle: Callable[[list[bytes]], None]) -> None:
    """Await one message, then take up to 255 more without blocking; yield; repeat."""
    sync = zmq.Socket.shadow(sock.underlying)
    recv = sync.recv_multipart
    while True:
        handle(await sock.recv_multipart())
        for _ in range(255):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            handle(frames)
        else:
            await asyncio.sleep(0)


async def relay(stop: asyncio.Event) -> None:
    """B': WebSocket clients + ROUTER + SUB; writes what arrives straight to the clients."""
    ctx = zmq.asyncio.Context()
    router = make_socket(ctx, zmq.ROUTER)
    router.bind("tcp://127.0.0.1:0")
    sub = make_socket(ctx, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, TOPIC)
    sub.bind("tcp://127.0.0.1:0")
    answer_to: dict[bytes, Callable[..., Any]] = {}  # sender ident -> send of a DEALER to its ROUTER
    dealers: list[zmq.asyncio.Socket] = []  # referenced: a collected socket closes and drops its queue
    conns: dict[bytes, ServerConnection] = {}
    room: set[ServerConnection] = set()
    pending: dict[int, tuple[Callable[..., Any], bytes]] = {}
    stats = {"emit_unknown_conn": 0, "ask_unknown_conn": 0, "answer_unknown": 0, "answer_dropped_hwm": 0}
    seq = [0, 0]  # connection ids, server request ids

    def on_router(frames: list[bytes]) -> None:
        kind = frames[1]
        if kind == b"e":
            ws = conns.get(frames[2])
            if ws is None:
                stats["emit_unknown_conn"] += 1
            else:
                broadcast((ws,), frames[3], text=True)
        elif kind == b"q":
            ws = conns.get(frames[3])
            send = answer_to.get(frames[0])
            if ws is None or send is None:
                stats["ask_unknown_conn"] += 1
                return
            seq[1] += 1
            pending[seq[1]] = (send, frames[2])
            broadcast((ws,), ENCODE(SReqOut(seq[1], "confirm", msgspec.Raw(frames[4]))), text=True)
        elif kind == b"h" and frames[0] not in answer_to:
            dealer = make_socket(ctx, zmq.DEALER)
            dealer.connect(frames[2].decode())
            dealers.append(dealer)
            answer_to[frames[0]] = zmq.Socket.shadow(dealer.underlying).send_multipart
            answer_to[frames[0]]([b"r"], zmq.DONTWAIT)

    def on_sub(frames: list[bytes]) -> None:
        broadcast(room, frames[1], text=True)

    async def handle(ws: ServerConnection) -> None:
        seq[0] += 1
        cid = f"raw.{seq[0]:x}".encode()
        conns[cid] = ws
        try:
            await ws.send(ENV_FRAME, text=True)
            while True:
                frame = IN_DECODER.decode(await ws.recv(decode=False))
                if type(frame) is SRes:
                    where = pending.pop(frame.i, None)
                    if where is None:
                        stats["answer_unknown"] += 1
                        continue
                    try:
                        where[0]([b"a", where[1], bytes(frame.d)], zmq.DONTWAIT)
                    except zmq.Again:
                        stats["answer_dropped_hwm"] += 1
                elif type(frame) is Req:
                    if frame.m == "whoami":
                        out: Any = Me(cid.decode(), "raw-relay")
                    elif frame.m == "join":
                        room.add(ws)
                        out = len(room)
                    elif frame.m == "stats":
                        out = dict(stats, connections=len(conns), pending=len(pending))
                    else:
                        out = None
                    await ws.send(ENCODE(Res(frame.i, out)), text=True)
        except ConnectionClosed:
            pass
        finally:
            conns.pop(cid, None)
            room.discard(ws)

    tasks = [asyncio.create_task(drain_loop(router, on_router)), asyncio.create_task(drain_loop(sub, on_sub))]
    async with serve(handle, "127.0.0.1", 0, compression=None, ping_interval=None, max_queue=None) as server:
        port = server.sockets[0].getsockname()[1]
        ready = {"port": port, "router": router.getsockopt_string(zmq.LAST_ENDPOINT)}
        ready["sub"] = sub.getsockopt_string(zmq.LAST_ENDPOINT)
        print("READY " + json.dumps(ready), flush=True)
        await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ctx.destroy(linger=0)


async def sender(stop: asyncio.Event, router_ep: str, sub_ep: str) -> None:
    """A': control WebSocket server whose `emit` / `ask` requests send over DEALER / XPUB to the relay."""
    ctx = zmq.asyncio.Context()
    dealer = make_socket(ctx, zmq.DEALER)
    dealer.connect(router_ep)
    answers = make_socket(ctx, zmq.ROUTER)
    answers.bind("tcp://127.0.0.1:0")
    xpub = make_socket(ctx, zmq.XPUB)
    xpub.setsockopt(zmq.XPUB_NODROP, 1)
    xpub.connect(sub_ep)
    dealer_send = zmq.Socket.shadow(dealer.underlying).send_multipart
    dealer_send([b"h", answers.getsockopt_string(zmq.LAST_ENDPOINT).encode()])
    async with asyncio.timeout(20):
        # the relay's answer DEALER is connected, and its subscription is in force on our XPUB
        while (await answers.recv_multipart())[1] != b"r":
            pass
        while await xpub.recv() != b"\x01" + TOPIC:
            pass
    pub_send = zmq.Socket.shadow(xpub.underlying).send_multipart
    futures: dict[bytes, asyncio.Future[bytes]] = {}
    stats = {"send_dropped_hwm": 0, "answer_late": 0}
    rid = [0]

    def on_answer(frames: list[bytes]) -> None:  # [relay ident, b"a", rid, d]
        fut = futures.pop(frames[2], None)
        if fut is None or fut.done():
            stats["answer_late"] += 1
        else:
            fut.set_result(frames[3])

    def try_send(send: Callable[..., Any], frames: list[bytes]) -> bool:
        try:
            send(frames, zmq.DONTWAIT)
            return True
        except zmq.Again:
            stats["send_dropped_hwm"] += 1
            return False

    async def emit(run: EmitRun) -> Any:
        pad = make_pad(run.payload_bytes)
        mono = time.monotonic_ns
        if run.room:

            def send(seq: int) -> bool:
                return try_send(pub_send, [TOPIC, ENCODE(TickFrame("tick", Tick(seq, mono(), pad)))])

        else:
            target = run.target.encode()

            def send(seq: int) -> bool:
                return try_send(dealer_send, [b"e", target, ENCODE(TickFrame("tick", Tick(seq, mono(), pad)))])

        return await run_sends(run, send)

    async def ask(run: AskRun) -> Any:
        loop = asyncio.get_running_loop()
        mono = time.monotonic_ns
        target = run.target.encode()

        async def one(seq: int) -> Confirmed:
            rid[0] += 1
            key = b"%d" % rid[0]
            fut: asyncio.Future[bytes] = loop.create_future()
            futures[key] = fut
            try:
                if not try_send(dealer_send, [b"q", key, target, ENCODE(Question(seq, mono()))]):
                    raise RuntimeError("dropped")
                async with asyncio.timeout(run.timeout):
                    data = await fut
            finally:
                futures.pop(key, None)
            return CONFIRMED_DECODER.decode(data)

        return await run_asks(run, one)

    async def handle(ws: ServerConnection) -> None:
        try:
            await ws.send(ENV_FRAME, text=True)
            while True:
                frame = IN_DECODER.decode(await ws.recv(decode=False))
                if type(frame) is not Req:
                    continue
                if frame.m == "emit":
                    out: Any = await emit(EMIT_DECODER.decode(frame.d))
                elif frame.m == "ask":
                    out = await ask(ASK_DECODER.decode(frame.d))
                elif frame.m == "stats":
                    out = dict(stats)
                else:
                    out = None
                await ws.send(ENCODE(Res(frame.i, out)), text=True)
        except ConnectionClosed:
            pass

    task = asyncio.create_task(drain_loop(answers, on_answer))
    async with serve(handle, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        print("READY " + json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
        await stop.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    ctx.destroy(linger=0)


async def main(args: argparse.Namespace) -> None:
    """Run the chosen side until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    add_stop_signals(asyncio.get_running_loop(), stop)
    if args.mode == "relay":
        await relay(stop)
    else:
        await sender(stop, args.router, args.sub)


def cli() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("mode", choices=("relay", "sender"))
    parser.add_argument("--router", default="", help="sender: the relay's ROUTER endpoint")
    parser.add_argument("--sub", default="", help="sender: the relay's SUB endpoint")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop")
    args = parser.parse_args()
    if args.mode == "sender" and not (args.router and args.sub):
        parser.error("sender needs --router and --sub")
    install_loop(args.loop == "uvloop")
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
