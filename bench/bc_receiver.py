"""Receiver for the broadcast benchmark: N raw `websockets` clients in one process, all in room "bench".

Connects N clients (at most `--connect-concurrency` handshakes at a time), has each send `join`, then opens
one control connection (not in the room) that sends `start`. Every client runs a receive loop that decodes
each `tick` and records `time.time_ns() - tick.t_ns` (server and receiver share the machine's clock).
A warm-up `start` runs first and is discarded. Then the measured burst: `--count` ticks as fast as the
server can send them (yielding every `--batch`). After a `start` answers, the receiver waits until every
client has every tick, or until no tick arrived for `--idle` seconds. Then, if `--paced-rate` is set, a
paced phase (one tick every 1/rate s for `--paced-seconds`) measures latency without a backlog. Prints one
JSON line (the paced phase under "paced").
With `--sync` it prints `READY` before and `DONE` after the measured window and waits for a stdin line
at each (see benchlib.run_synced).

`--protocol sio` speaks Engine.IO 4 / Socket.IO 5 instead (to bc_sio_server.py, `--url
ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket`): open packet, `40` (waits for `40{...}`), requests
as `42<id>["join"]` / `42<id>["start",{...}]` answered by `43<id>[...]`, ticks as `42["tick",{...}]`, `2`
answered with `3`. Same client library and loops, so the receiving cost stays comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import msgspec
from bc_common import Start, Started, Tick
from benchlib import install_loop, percentile, raise_fd_limit, sio_connect, wait_parent
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class EvtIn(msgspec.Struct, tag_field="t", tag="evt"):
    """A `tick` event."""

    e: str
    d: Tick


class ResIn(msgspec.Struct, tag_field="t", tag="res"):
    """A request's answer; `d` decoded later by the caller."""

    i: int
    d: msgspec.Raw = msgspec.Raw(b"null")


class ErrIn(msgspec.Struct, tag_field="t", tag="err"):
    """A request's failure."""

    code: str
    m: str = ""
    i: int = 0


class PingIn(msgspec.Struct, tag_field="t", tag="ping"):
    """Server heartbeat (ignored: the library only reaps with `max_missed` set)."""


class EnvIn(msgspec.Struct, tag_field="t", tag="env"):
    """The server's first frame."""

    d: msgspec.Raw = msgspec.Raw(b"null")


DECODER = msgspec.json.Decoder(EvtIn | ResIn | ErrIn | PingIn | EnvIn)
SIO_TICK = msgspec.json.Decoder(tuple[str, Tick])
STARTED_DECODER = msgspec.json.Decoder(Started)
ENCODE = msgspec.json.Encoder().encode


class Stats:
    """Receive counters shared by all client loops (one thread, no locking)."""

    def __init__(self) -> None:
        self.received = 0
        self.other = 0
        self.last_ns = 0
        self.latencies: list[int] = []

    def reset(self) -> None:
        """Forget the warm-up."""
        self.received = self.other = self.last_ns = 0
        self.latencies = []


class Client:
    """One WebSocket in the room, with its own receive count."""

    def __init__(self, ws: ClientConnection, protocol: str = "superline") -> None:
        self.ws = ws
        self.received = 0
        self.protocol = protocol

    async def consume(self, st: Stats) -> None:
        """Receive until the connection closes or the task is cancelled; record each tick."""
        if self.protocol == "sio":
            await self.consume_sio(st)
        else:
            await self.consume_superline(st)

    async def consume_sio(self, st: Stats) -> None:
        """`consume` for Socket.IO: `42["tick",{...}]` events; `2` (ping) answered with `3`."""
        ws = self.ws
        recv, decode, now = ws.recv, SIO_TICK.decode, time.time_ns
        try:
            while True:
                msg = await recv()
                if msg.startswith('42["tick"'):
                    t = now()
                    st.latencies.append(t - decode(msg[2:])[1].t_ns)
                    st.received += 1
                    st.last_ns = t
                    self.received += 1
                elif msg == "2":
                    await ws.send("3")
                else:
                    st.other += 1
        except ConnectionClosed:
            pass

    async def consume_superline(self, st: Stats) -> None:
        """`consume` for superline.v1: `evt` frames."""
        recv, decode, now = self.ws.recv, DECODER.decode, time.time_ns
        try:
            while True:
                frame = decode(await recv(decode=False))
                if type(frame) is EvtIn:
                    t = now()
                    st.latencies.append(t - frame.d.t_ns)
                    st.received += 1
                    st.last_ns = t
                    self.received += 1
                else:
                    st.other += 1
        except ConnectionClosed:
            pass


async def call(ws: ClientConnection, i: int, method: str, data: Any, timeout: float) -> msgspec.Raw:
    """Send `req` `method` and return the `d` of its `res` (frames in between are skipped).

    On a Socket.IO connection (see `open_client`) it emits `method` with ack id `i` and returns the ack's
    first argument as JSON.
    """
    if getattr(ws, "sio", False):
        return await call_sio(ws, i, method, data, timeout)
    await ws.send(ENCODE({"t": "req", "i": i, "m": method, "d": data}), text=True)
    async with asyncio.timeout(timeout):
        while True:
            frame = DECODER.decode(await ws.recv(decode=False))
            if type(frame) is ResIn and frame.i == i:
                return frame.d
            if type(frame) is ErrIn and frame.i == i:
                raise RuntimeError(f"{method} failed: {frame.code} {frame.m}")


async def call_sio(ws: ClientConnection, i: int, event: str, data: Any, timeout: float) -> msgspec.Raw:
    """Emit `event` with ack id `i`; return the ack's first argument as JSON (`2` answered meanwhile)."""
    await ws.send(f"42{i}" + ENCODE([event] if data is None else [event, data]).decode())
    head = f"43{i}["
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.recv()
            if msg == "2":
                await ws.send("3")
            elif msg.startswith(head):
                return msgspec.Raw(ENCODE(msgspec.json.decode(msg[len(head) - 1 :])[0]))


async def open_client(url: str, gate: asyncio.Semaphore, protocol: str = "superline") -> ClientConnection:
    """Connect (under `gate`) and consume the initial `env` frame, or (sio) do the Socket.IO connect."""
    async with gate:
        ws = await connect(
            url, compression=None, proxy=None, ping_interval=None, max_queue=None, open_timeout=20, close_timeout=2
        )
    if protocol == "sio":
        ws.sio = True  # type: ignore[attr-defined]  # read by `call`
        await sio_connect(ws)
        return ws
    first = DECODER.decode(await asyncio.wait_for(ws.recv(decode=False), 20))
    if type(first) is not EnvIn:
        raise RuntimeError(f"expected an env frame first, got {first!r}")
    return ws


async def run_phase(
    control: ClientConnection, i: int, st: Stats, n: int, start: Start, idle: float, cap: float
) -> tuple[Started, bool]:
    """Send `start` (request id `i`), then wait until n * sent ticks arrived (or `idle` s without one, or `cap` s)."""
    t0 = time.monotonic()
    started = STARTED_DECODER.decode(await call(control, i, "start", msgspec.to_builtins(start), cap))
    want = n * started.sent
    last_count, last_change = -1, time.monotonic()
    while st.received < want:
        now = time.monotonic()
        if st.received != last_count:
            last_count, last_change = st.received, now
        elif now - last_change >= idle or now - t0 >= cap:
            return started, False
        await asyncio.sleep(0.01)
    return started, True


def summarize(st: Stats, clients: list[Client], started: Started, complete: bool) -> dict[str, Any]:
    """Delivery counts, rates and latency percentiles of one `start` phase."""
    lat = sorted(st.latencies)
    expected = len(clients) * started.sent
    elapsed = max(1, st.last_ns - started.t_first_ns) / 1e9
    push = max(1, started.t_drained_ns - started.t_first_ns) / 1e9
    return {
        "members": started.members,
        "sent": started.sent,
        "time_capped": started.time_capped,
        "drained": started.drained,
        "complete": complete,
        "expected": expected,
        "received": st.received,
        "lost": expected - st.received,
        "clients_short": sum(1 for c in clients if c.received < started.sent),
        "other_frames": st.other,
        "elapsed_s": round(elapsed, 4),
        "delivered_per_s": round(st.received / elapsed, 1),
        "server_send_s": round((started.t_sent_ns - started.t_first_ns) / 1e9, 4),
        "server_push_s": round(push, 4),
        "server_push_per_s": round(expected / push, 1) if started.drained else None,
        "p50_ms": round(percentile(lat, 50) / 1e6, 3),
        "p99_ms": round(percentile(lat, 99) / 1e6, 3),
        "max_ms": round(lat[-1] / 1e6, 3) if lat else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, join, warm up, measure the burst, then the paced phase; return the result record."""
    n = args.clients
    gate = asyncio.Semaphore(args.connect_concurrency)
    t0 = time.monotonic()
    opens = (open_client(args.url, gate, args.protocol) for _ in range(n))
    sockets = await asyncio.wait_for(asyncio.gather(*opens), 120)
    clients = [Client(ws, args.protocol) for ws in sockets]
    sizes = await asyncio.wait_for(asyncio.gather(*(call(c.ws, 1, "join", None, 60) for c in clients)), 120)
    members = max(int(msgspec.json.decode(s)) for s in sizes)
    control = await open_client(args.url, gate, args.protocol)
    connect_s = time.monotonic() - t0
    st = Stats()
    tasks = [asyncio.create_task(c.consume(st)) for c in clients]
    cap = args.seconds + args.drain + args.idle + 30
    common = {"seconds": args.seconds, "payload_bytes": args.payload, "drain_seconds": args.drain}
    paced_count = round(args.paced_rate * args.paced_seconds)
    result: dict[str, Any] = {"clients": n, "members_at_join": members, "connect_s": round(connect_s, 2)}

    def reset() -> None:
        st.reset()
        for c in clients:
            c.received = 0

    try:
        if args.warmup > 0:
            await run_phase(control, 1, st, n, Start(args.warmup, args.batch, **common), args.idle, cap)
        reset()
        if args.sync:
            await wait_parent("READY")
        burst = Start(args.count, args.batch, **common)
        started, complete = await run_phase(control, 2, st, n, burst, args.idle, cap)
        if args.sync:
            await wait_parent("DONE")
        result.update(summarize(st, clients, started, complete), messages=args.count)
        if paced_count > 0:
            reset()
            paced = Start(paced_count, 1, rate=args.paced_rate, **common)
            started, complete = await run_phase(control, 3, st, n, paced, args.idle, cap)
            result["paced"] = summarize(st, clients, started, complete) | {"rate": args.paced_rate}
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(result), flush=True)
    try:
        await asyncio.wait_for(asyncio.gather(control.close(), *(c.ws.close() for c in clients)), 10)
    except TimeoutError:
        print("receiver: timed out closing connections", file=sys.stderr)
    return result


def cli() -> None:
    """Parse arguments and run the receiver."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="e.g. ws://127.0.0.1:PORT/?role=user")
    parser.add_argument("--protocol", choices=("superline", "sio"), default="superline", help="wire protocol")
    parser.add_argument("--clients", type=int, default=100, help="connections in the room")
    parser.add_argument("--count", type=int, default=1000, help="measured ticks (each goes to every client)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up ticks, not measured")
    parser.add_argument("--batch", type=int, default=10, help="server yields to its loop every this many ticks")
    parser.add_argument("--paced-rate", type=float, default=0.0, help="ticks/s of the paced latency phase (0 = skip)")
    parser.add_argument("--paced-seconds", type=float, default=2.0, help="length of the paced phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="time cap of the server's send loop")
    parser.add_argument("--drain", type=float, default=20.0, help="cap on the server's wait for its buffers")
    parser.add_argument("--idle", type=float, default=3.0, help="stop waiting after this long without a tick")
    parser.add_argument("--payload", type=int, default=64, help="approximate encoded Tick size in bytes")
    parser.add_argument("--connect-concurrency", type=int, default=50, help="handshakes in flight")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="receiver event loop")
    parser.add_argument("--sync", action="store_true", help="READY/DONE handshake with the parent")
    args = parser.parse_args()
    raise_fd_limit(args.clients + 256)
    install_loop(args.loop == "uvloop")
    asyncio.run(run(args))


if __name__ == "__main__":
    cli()
