"""Receiver and driver of the Redis comparison: N raw WebSocket clients on node B, a control client on node A.

For `--system ours` the clients speak superline.v1 (JSON) to the library's nodes; for `--system sio` they speak
Engine.IO 4 / Socket.IO 5 over a plain WebSocket (`/socket.io/?EIO=4&transport=websocket`: open packet, `40`
namespace connect, `42` events, `43` acks, `2`/`3` ping/pong) to python-socketio nodes. Both use the same
`websockets` client with compression off, so the clients cost the same on both sides.

Each client joins room "bench" on B (its id: the connection id, or the Socket.IO sid). The control client on A
sends `start` (see rd_common.Start): a warm-up run (discarded), then the measured run, bracketed by READY/DONE
with `--sync` (benchlib.run_synced). Every tick's `seq` is checked per client (rd_common.SeqCheck): lost = expected
- received; gaps, duplicates and reordering are counted. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import msgspec
from benchlib import install_loop, percentile, raise_fd_limit, sio_connect, wait_parent
from rd_common import SeqCheck, Start, Started, Tick
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class EvtIn(msgspec.Struct, tag_field="t", tag="evt"):
    e: str
    d: Tick


class ResIn(msgspec.Struct, tag_field="t", tag="res"):
    i: int
    d: msgspec.Raw = msgspec.Raw(b"null")


class ErrIn(msgspec.Struct, tag_field="t", tag="err"):
    code: str
    m: str = ""
    i: int = 0


class PingIn(msgspec.Struct, tag_field="t", tag="ping"):
    pass


class EnvIn(msgspec.Struct, tag_field="t", tag="env"):
    d: msgspec.Raw = msgspec.Raw(b"null")


OURS = msgspec.json.Decoder(EvtIn | ResIn | ErrIn | PingIn | EnvIn)
SIO_TICK = msgspec.json.Decoder(tuple[str, Tick])
ENCODE = msgspec.json.Encoder().encode
OPEN_KW: dict[str, Any] = {
    "compression": None,
    "proxy": None,
    "ping_interval": None,
    "max_queue": None,
    "open_timeout": 20,
    "close_timeout": 2,
}


class Member:
    """One client in the room: its socket, its id on the server, its sequence check."""

    def __init__(self, ws: ClientConnection, ident: str) -> None:
        self.ws = ws
        self.id = ident
        self.seq = SeqCheck()
        self.last_ns = 0


class Stats:
    def __init__(self) -> None:
        self.received = 0
        self.latencies: list[int] = []


# ---------------------------------------------------------------------- superline.v1
async def ours_open(url: str) -> ClientConnection:
    ws = await connect(url + "?role=user", **OPEN_KW)
    first = OURS.decode(await asyncio.wait_for(ws.recv(decode=False), 20))
    if type(first) is not EnvIn:
        raise RuntimeError(f"expected an env frame first, got {first!r}")
    return ws


async def ours_call(ws: ClientConnection, i: int, method: str, data: Any, timeout: float) -> Any:
    await ws.send(ENCODE({"t": "req", "i": i, "m": method, "d": data}), text=True)
    async with asyncio.timeout(timeout):
        while True:
            frame = OURS.decode(await ws.recv(decode=False))
            if type(frame) is ResIn and frame.i == i:
                return msgspec.json.decode(frame.d)
            if type(frame) is ErrIn and frame.i == i:
                raise RuntimeError(f"{method} failed: {frame.code} {frame.m}")


async def ours_consume(m: Member, st: Stats) -> None:
    recv, decode, now = m.ws.recv, OURS.decode, time.monotonic_ns
    try:
        while True:
            frame = decode(await recv(decode=False))
            if type(frame) is EvtIn:
                t = now()
                m.seq.see(frame.d.seq)
                m.last_ns = t
                st.received += 1
                st.latencies.append(t - frame.d.t_ns)
    except ConnectionClosed:
        pass


# ---------------------------------------------------------------------- Socket.IO over a plain WebSocket
async def sio_open(url: str) -> tuple[ClientConnection, str]:
    ws = await connect(url + "socket.io/?EIO=4&transport=websocket", **OPEN_KW)
    return ws, await sio_connect(ws)


async def sio_call(ws: ClientConnection, ack: int, event: str, data: Any, timeout: float) -> Any:
    args = [event] if data is None else [event, data]
    await ws.send(f"42{ack}" + json.dumps(args))
    head = f"43{ack}["
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.recv()
            if msg == "2":
                await ws.send("3")
            elif isinstance(msg, str) and msg.startswith(head):
                return json.loads(msg[len(head) - 1 :])[0]


async def sio_consume(m: Member, st: Stats) -> None:
    recv, decode, now, ws = m.ws.recv, SIO_TICK.decode, time.monotonic_ns, m.ws
    try:
        while True:
            msg = await recv()
            if msg.startswith('42["tick"'):
                _, tick = decode(msg[2:])
                t = now()
                m.seq.see(tick.seq)
                m.last_ns = t
                st.received += 1
                st.latencies.append(t - tick.t_ns)
            elif msg == "2":
                await ws.send("3")
    except ConnectionClosed:
        pass


# ---------------------------------------------------------------------- the run
async def run(args: argparse.Namespace) -> dict[str, Any]:
    ours = args.system == "ours"
    gate = asyncio.Semaphore(50)
    t_connect = time.monotonic()

    async def member() -> Member:
        async with gate:
            if ours:
                ws = await ours_open(args.url_b)
                ident = await ours_call(ws, 1, "join", None, 60)
            else:
                ws, _ = await sio_open(args.url_b)
                ident = await sio_call(ws, 1, "join", None, 60)
        return Member(ws, str(ident))

    members = await asyncio.wait_for(asyncio.gather(*(member() for _ in range(args.clients))), 120)
    if ours:
        control = await ours_open(args.url_a)
    else:
        control, _ = await sio_open(args.url_a)
    connect_s = time.monotonic() - t_connect
    st = Stats()
    consume = ours_consume if ours else sio_consume
    tasks = [asyncio.create_task(consume(m, st)) for m in members]
    targets = [m.id for m in members]
    n = len(members)
    calls = 10

    async def phase(count: int) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        st.received = 0
        st.latencies = []
        for m in members:
            m.seq.reset()
            m.last_ns = 0
        start = Start(args.mode, count, args.batch, args.seconds, targets if args.mode == "direct" else [])
        t0 = time.monotonic_ns()
        cap = args.seconds + args.idle + 60
        if ours:
            raw = await ours_call(control, calls, "start", msgspec.to_builtins(start), cap)
        else:
            raw = await sio_call(control, calls, "start", msgspec.to_builtins(start), cap)
        started = msgspec.convert(raw, Started)
        if args.mode == "room":
            expected = n * started.sent
        else:
            expected = started.sent
        last_count, last_change = -1, time.monotonic()
        complete = True
        while st.received < expected:
            now = time.monotonic()
            if st.received != last_count:
                last_count, last_change = st.received, now
            elif now - last_change >= args.idle:
                complete = False
                break
            await asyncio.sleep(0.005)
        t_last = max((m.last_ns for m in members), default=t0)
        elapsed = max(1, t_last - t0) / 1e9
        lat = sorted(st.latencies)
        return {
            "sent": started.sent,
            "time_capped": started.time_capped,
            "waited_for_queue": started.waited_for_queue,
            "expected": expected,
            "received": st.received,
            "lost": expected - st.received,
            "gaps": sum(m.seq.gaps for m in members),
            "dup_or_reordered": sum(m.seq.dup_or_reordered for m in members),
            "complete": complete,
            "elapsed_s": round(elapsed, 4),
            "send_s": round((started.t_sent_ns - started.t_first_ns) / 1e9, 4),
            "deliveries_per_s": round(st.received / elapsed, 1),
            "emits_per_s": round((st.received if args.mode == "direct" else started.sent) / elapsed, 1),
            "p50_ms": round(percentile(lat, 50) / 1e6, 3),
            "p99_ms": round(percentile(lat, 99) / 1e6, 3),
        }

    result: dict[str, Any] = {"system": args.system, "mode": args.mode, "clients": n, "connect_s": round(connect_s, 2)}
    try:
        if args.warmup > 0:
            result["warmup"] = await phase(args.warmup)
        if args.sync:
            await wait_parent("READY")
        result.update(await phase(args.count))
        if args.sync:
            await wait_parent("DONE")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(result), flush=True)
    try:
        await asyncio.wait_for(asyncio.gather(control.close(), *(m.ws.close() for m in members)), 10)
    except TimeoutError:
        print("receiver: timed out closing connections", file=sys.stderr)
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=("ours", "sio"), required=True)
    parser.add_argument("--mode", choices=("room", "direct"), required=True)
    parser.add_argument("--url-a", required=True, help="node A (the publisher), e.g. ws://127.0.0.1:PORT/")
    parser.add_argument("--url-b", required=True, help="node B (the room members)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--count", type=int, default=1000, help="ticks in the measured run")
    parser.add_argument("--warmup", type=int, default=100, help="ticks in the warm-up run (0: none)")
    parser.add_argument("--batch", type=int, default=50, help="the sender yields every this many ticks")
    parser.add_argument("--seconds", type=float, default=30.0, help="time cap of the send loop")
    parser.add_argument("--idle", type=float, default=5.0, help="stop waiting after this long without a tick")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--sync", action="store_true", help="READY/DONE handshake with the parent")
    args = parser.parse_args()
    raise_fd_limit(args.clients + 256)
    install_loop(args.loop == "uvloop")
    asyncio.run(run(args))


if __name__ == "__main__":
    cli()
