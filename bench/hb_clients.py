"""Clients for the heartbeat benchmark: N raw `websockets` connections in one process that answer every ping.

Each client skips the server's first `{"t":"env",...}` frame, then answers every `{"t":"ping"}` text frame
with `{"t":"pong"}` (PROTOCOL §3.1) and ignores anything else. It connects at most `--connect-concurrency`
at a time (each handshake capped at `--connect-timeout` s), prints `CONNECTED <ok> <failed> <seconds>`, and
runs until SIGTERM/SIGINT (or `--max-seconds`), then prints one JSON line with its counters and exits.
Usage: python bench/hb_clients.py --url 'ws://127.0.0.1:PORT/?role=user' --clients 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import msgspec
from benchlib import add_stop_signals, install_loop, raise_fd_limit
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PING = b'{"t":"ping"}'
PONG = b'{"t":"pong"}'


class Counters:
    """Shared by all client loops (one thread, no locking)."""

    def __init__(self) -> None:
        self.pings = 0
        self.other = 0
        self.closed = 0
        self.errors: dict[str, int] = {}

    def error(self, exc: BaseException) -> None:
        """Count a failure by exception type."""
        key = type(exc).__name__
        self.errors[key] = self.errors.get(key, 0) + 1


def is_ping(msg: bytes) -> bool:
    """True for a `ping` frame (fast path on the exact bytes, else a real decode)."""
    if msg == PING:
        return True
    try:
        frame = msgspec.json.decode(msg)
    except msgspec.DecodeError:
        return False
    return isinstance(frame, dict) and frame.get("t") == "ping"


async def open_client(url: str, gate: asyncio.Semaphore, timeout: float) -> ClientConnection:
    """Connect under `gate` and consume the `env` frame."""
    async with gate:
        ws = await connect(url, compression=None, proxy=None, ping_interval=None, open_timeout=timeout, close_timeout=1)
    first = msgspec.json.decode(await asyncio.wait_for(ws.recv(decode=False), timeout))
    if not (isinstance(first, dict) and first.get("t") == "env"):
        await ws.close()
        raise RuntimeError(f"expected an env frame first, got {first!r}")
    return ws


async def answer(ws: ClientConnection, st: Counters) -> None:
    """Answer pings until the connection closes or the task is cancelled."""
    recv, send = ws.recv, ws.send
    try:
        while True:
            msg = await recv(decode=False)
            if isinstance(msg, bytes) and is_ping(msg):
                st.pings += 1
                await send(PONG, text=True)
            else:
                st.other += 1
    except ConnectionClosed:
        st.closed += 1


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect all clients, answer pings until stopped, return the counters."""
    stop = asyncio.Event()
    add_stop_signals(asyncio.get_running_loop(), stop)
    st = Counters()
    gate = asyncio.Semaphore(args.connect_concurrency)
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(open_client(args.url, gate, args.connect_timeout) for _ in range(args.clients)), return_exceptions=True
    )
    sockets: list[ClientConnection] = []
    for r in results:
        if isinstance(r, BaseException):
            st.error(r)
        else:
            sockets.append(r)
    connect_s = time.monotonic() - t0
    failed = args.clients - len(sockets)
    print(f"CONNECTED {len(sockets)} {failed} {connect_s:.2f}", flush=True)
    tasks = [asyncio.create_task(answer(ws, st)) for ws in sockets]
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except TimeoutError:
        print("hb_clients: --max-seconds reached", file=sys.stderr)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = {
        "clients": args.clients,
        "connected": len(sockets),
        "failed": failed,
        "connect_s": round(connect_s, 2),
        "pings": st.pings,
        "pongs": st.pings,
        "other_frames": st.other,
        "closed_by_server": st.closed,
        "errors": st.errors,
    }
    # print before returning: the interpreter may take a moment to tear down N sockets afterwards
    print(json.dumps(result), flush=True)
    return result


def cli() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", required=True, help="e.g. ws://127.0.0.1:PORT/?role=user")
    parser.add_argument("--clients", type=int, default=1000, help="connections to open")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="handshakes in flight")
    parser.add_argument("--connect-timeout", type=float, default=30.0, help="cap on one handshake + env frame")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="exit on its own after this long")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="client event loop")
    args = parser.parse_args()
    raise_fd_limit(args.clients + 256)
    install_loop(args.loop == "uvloop")
    asyncio.run(run(args))


if __name__ == "__main__":
    cli()
