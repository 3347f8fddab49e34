"""Load generator: C raw `websockets` clients, each calling superline.v1 `echo` sequentially.

Each client connects (skipping the server's initial `env` frame), runs its share of the warm-up, then its
share of `--requests` or until `--seconds` elapse, whichever comes first. Prints one JSON line with
requests/s and round-trip latency percentiles (µs). With `--sync` it prints `READY` before and `DONE` after
the measured window and waits for a stdin line at each, so a parent can sample CPU counters around it.

`--protocol sio` speaks Engine.IO 4 / Socket.IO 5 instead (to rt_sio_server.py, `--url
ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket`): open packet, `40` namespace connect (waits for the
server's `40{...}`), each call `42<id>["echo",{"text":...}]` answered by `43<id>[{...}]`, `2` answered with `3`.
Same client library, same sequential pattern, so the client-side cost stays comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time

import msgspec
from benchlib import install_loop, percentile, sio_connect, wait_parent
from websockets.asyncio.client import ClientConnection, connect


class Frame(msgspec.Struct):
    """Server frame, decoded just far enough to correlate it (`d` is skipped)."""

    t: str
    i: int = 0


FRAME_DECODER = msgspec.json.Decoder(Frame)
PONG = '{"t":"pong"}'


class Client:
    """One sequential superline.v1 client on its own WebSocket."""

    protocol = "superline"

    def __init__(self, ws: ClientConnection, text: str) -> None:
        self.ws = ws
        self.next_id = 1
        self.errors = 0
        self.latencies_ns: list[int] = []
        payload = msgspec.json.encode({"text": text}).decode()
        self._head = '{"t":"req","i":'
        self._tail = ',"m":"echo","d":' + payload + "}"

    async def call(self) -> int:
        """Send one `echo` request, wait for its answer; return the round trip in ns."""
        i = self.next_id
        self.next_id += 1
        ws = self.ws
        t0 = time.perf_counter_ns()
        await ws.send(self._head + str(i) + self._tail)
        while True:
            frame = FRAME_DECODER.decode(await ws.recv(decode=False))
            if frame.t == "ping":  # server heartbeat: answer and keep waiting
                await ws.send(PONG)
            elif frame.t in ("res", "err"):
                break
        elapsed = time.perf_counter_ns() - t0
        if frame.t != "res" or frame.i != i:
            self.errors += 1
        return elapsed

    async def run(self, count: int, deadline_ns: int, record: bool) -> int:
        """Make up to `count` calls, stopping after `deadline_ns`; return the end time in ns."""
        lat = self.latencies_ns
        for _ in range(count):
            rt = await self.call()
            if record:
                lat.append(rt)
            if time.perf_counter_ns() >= deadline_ns:
                break
        return time.perf_counter_ns()


class SioClient(Client):
    """One sequential Socket.IO client: `echo` emitted with an ack id, the ack awaited."""

    protocol = "sio"

    def __init__(self, ws: ClientConnection, text: str) -> None:
        super().__init__(ws, text)
        self._tail = '["echo",' + msgspec.json.encode({"text": text}).decode() + "]"

    async def call(self) -> int:
        """Emit one `echo` with ack id i, wait for `43<i>[...]`; return the round trip in ns."""
        i = self.next_id
        self.next_id += 1
        ws = self.ws
        t0 = time.perf_counter_ns()
        await ws.send("42" + str(i) + self._tail)
        while True:
            msg = await ws.recv()
            if msg == "2":  # Engine.IO ping: answer and keep waiting
                await ws.send("3")
            elif msg.startswith("43"):
                break
        elapsed = time.perf_counter_ns() - t0
        j = msg.find("[")
        if j < 0 or msg[2:j] != str(i):
            self.errors += 1
        return elapsed


async def open_client(url: str, text: str, protocol: str = "superline") -> Client:
    """Connect and consume the initial `env` frame (superline) or do the Socket.IO connect (sio)."""
    ws = await connect(url, compression=None, proxy=None, ping_interval=None, max_size=1 << 20)
    if protocol == "sio":
        await sio_connect(ws)
        return SioClient(ws, text)
    first = FRAME_DECODER.decode(await ws.recv(decode=False))
    if first.t != "env":
        raise RuntimeError(f"expected an env frame first, got {first.t!r}")
    return Client(ws, text)


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Connect, warm up, measure; return the result record."""
    n = args.clients
    clients = await asyncio.gather(*(open_client(args.url, args.text, args.protocol) for _ in range(n)))
    far = time.perf_counter_ns() + 60 * 10**9
    await asyncio.gather(*(c.run(math.ceil(args.warmup / n), far, False) for c in clients))
    if args.sync:
        await wait_parent("READY")
    start = time.perf_counter_ns()
    deadline = start + int(args.seconds * 1e9)
    ends = await asyncio.gather(*(c.run(math.ceil(args.requests / n), deadline, True) for c in clients))
    if args.sync:
        await wait_parent("DONE")
    await asyncio.gather(*(c.ws.close() for c in clients))
    lat = sorted(x for c in clients for x in c.latencies_ns)
    elapsed = (max(ends) - start) / 1e9
    return {
        "clients": n,
        "requests": len(lat),
        "errors": sum(c.errors for c in clients),
        "elapsed_s": round(elapsed, 4),
        "time_capped": len(lat) < math.ceil(args.requests / n) * n,
        "rps": round(len(lat) / elapsed, 1),
        "p50_us": round(percentile(lat, 50) / 1000, 1),
        "p99_us": round(percentile(lat, 99) / 1000, 1),
        "mean_us": round(sum(lat) / len(lat) / 1000, 1) if lat else None,
        "max_us": round(lat[-1] / 1000, 1) if lat else None,
    }


def cli() -> None:
    """Parse arguments, run the load, print the JSON result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="e.g. ws://127.0.0.1:PORT/?role=user")
    parser.add_argument("--protocol", choices=("superline", "sio"), default="superline", help="wire protocol")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients (each sequential)")
    parser.add_argument("--requests", type=int, default=50_000, help="measured requests, all clients")
    parser.add_argument("--seconds", type=float, default=8.0, help="time cap of the measured window")
    parser.add_argument("--warmup", type=int, default=2_000, help="warm-up requests, all clients")
    parser.add_argument("--text", default="hello world", help="echo payload text")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="client event loop")
    parser.add_argument("--sync", action="store_true", help="READY/DONE handshake with the parent")
    args = parser.parse_args()
    install_loop(args.loop == "uvloop")
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    cli()
