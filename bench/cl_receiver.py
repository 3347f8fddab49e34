"""Receiver of cluster_delivery.py: real WebSocket clients on the relay node, driving the sender node.

Opens `--clients` raw `websockets` clients on `--data-url` (node B, or the raw relay B'; compression off, no
client pings, `max_queue=None` so reading never pauses) and one control client on `--control-url` (node A's
admin role, or the raw sender A'). Each client asks `whoami` for its connection id and runs a receive loop
that decodes every frame: a `tick` is checked against its phase's sequence numbers (per-client bitmap:
unique, duplicate, out of range) and its latency recorded (`time.monotonic_ns() - tick.t_ns`); a `sreq`
(`confirm`) is answered at once with `{"ok": true, "seq": <its seq>}`.

Scenarios (each phase: the control client sends one request; the sender node runs the loop inside itself;
then the receiver waits until everything expected arrived or nothing arrived for `--idle` s):

- `emit`: warm-up, then `--count` ticks back to back to one connection (`to_conn(id).emit`), then
  `--paced-count` ticks at `--paced-rate` per second;
- `room`: every client joins room "bench"; warm-up, `--count` broadcasts back to back, then paced;
- `req`: warm-up, `--seq-count` sequential `to_conn(id).request("confirm")`, then `--conc-count` with
  `--concurrency` in flight.

Before and after each phase it reads `stats` from both sides (the drop counters' deltas go in the result).
With `--sync` it prints `READY <phase>` / `DONE <phase>` around each measured phase and waits for a stdin
line at each; with `--profile` it brackets each phase with `profile start/stop` requests on both sides.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import msgspec
from benchlib import install_loop, raise_fd_limit, wait_parent
from cl_common import (
    ROOM,
    AskResult,
    AskRun,
    Confirmed,
    EmitRun,
    Me,
    ProfileCtl,
    Question,
    RunResult,
    Tick,
    drop_counters,
    percentile,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class EvtIn(msgspec.Struct, tag_field="t", tag="evt"):
    """A `tick` event."""

    e: str
    d: Tick


class SReqIn(msgspec.Struct, tag_field="t", tag="sreq"):
    """A server request (`confirm`)."""

    i: int
    m: str
    d: Question


class ResIn(msgspec.Struct, tag_field="t", tag="res"):
    """A request's answer."""

    i: int
    d: msgspec.Raw = msgspec.Raw(b"null")


class ErrIn(msgspec.Struct, tag_field="t", tag="err"):
    """A request's failure."""

    code: str
    m: str = ""
    i: int = 0


class PingIn(msgspec.Struct, tag_field="t", tag="ping"):
    """Server heartbeat (ignored)."""


class EnvIn(msgspec.Struct, tag_field="t", tag="env"):
    """The first frame."""

    d: msgspec.Raw = msgspec.Raw(b"null")


class SResOut(msgspec.Struct, tag_field="t", tag="sres"):
    """The answer to a server request."""

    i: int
    d: Confirmed


class ReqOut(msgspec.Struct, tag_field="t", tag="req"):
    """A request."""

    i: int
    m: str
    d: Any = None


DECODER = msgspec.json.Decoder(EvtIn | SReqIn | ResIn | ErrIn | PingIn | EnvIn)
ENCODE = msgspec.json.Encoder().encode


class Phase:
    """Counters of the current phase, shared by every client's loop (one thread)."""

    def __init__(self, count: int = 0) -> None:
        self.count = count
        self.unique = 0
        self.dups = 0
        self.out_of_range = 0
        self.sreqs = 0
        self.last_ns = 0
        self.lat: list[int] = []


class Peer:
    """One WebSocket: requests with futures, and the receive loop."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: dict[int, asyncio.Future[msgspec.Raw]] = {}
        self.next_i = 0
        self.seen = bytearray()
        self.phase = Phase()
        self.task: asyncio.Task[None] | None = None

    def reset(self, phase: Phase) -> None:
        """Start counting a new phase of `phase.count` sequence numbers."""
        self.phase = phase
        self.seen = bytearray(phase.count)

    async def call(self, method: str, data: Any = None, timeout: float = 30.0) -> msgspec.Raw:
        """Send `req` `method` and wait for its `res` (the receive loop resolves it)."""
        self.next_i += 1
        i = self.next_i
        fut: asyncio.Future[msgspec.Raw] = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        try:
            await self.ws.send(ENCODE(ReqOut(i, method, data)), text=True)
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self.pending.pop(i, None)

    async def loop(self) -> None:
        """Receive until closed or cancelled."""
        recv, decode, now = self.ws.recv, DECODER.decode, time.monotonic_ns
        send = self.ws.send
        try:
            while True:
                frame = decode(await recv(decode=False))
                kind = type(frame)
                if kind is EvtIn:
                    t = now()
                    tick = frame.d  # type: ignore[union-attr]
                    ph = self.phase
                    seq = tick.seq
                    if 0 <= seq < len(self.seen):
                        if self.seen[seq]:
                            ph.dups += 1
                        else:
                            self.seen[seq] = 1
                            ph.unique += 1
                    else:
                        ph.out_of_range += 1
                    ph.lat.append(t - tick.t_ns)
                    ph.last_ns = t
                elif kind is SReqIn:
                    q = frame.d  # type: ignore[union-attr]
                    self.phase.sreqs += 1
                    await send(ENCODE(SResOut(frame.i, Confirmed(True, q.seq))), text=True)  # type: ignore[union-attr]
                elif kind is ResIn or kind is ErrIn:
                    fut = self.pending.get(frame.i)  # type: ignore[union-attr]
                    if fut is not None and not fut.done():
                        if kind is ResIn:
                            fut.set_result(frame.d)  # type: ignore[union-attr]
                        else:
                            fut.set_exception(RuntimeError(f"{frame.code}: {frame.m}"))  # type: ignore[union-attr]
        except ConnectionClosed:
            pass


async def open_peer(url: str, gate: asyncio.Semaphore) -> Peer:
    """Connect (under `gate`), skip the `env` frame, start the receive loop."""
    async with gate:
        ws = await connect(
            url, compression=None, proxy=None, ping_interval=None, max_queue=None, open_timeout=20, close_timeout=2
        )
    first = DECODER.decode(await asyncio.wait_for(ws.recv(decode=False), 20))
    if type(first) is not EnvIn:
        raise RuntimeError(f"expected an env frame first, got {first!r}")
    peer = Peer(ws)
    peer.task = asyncio.create_task(peer.loop())
    return peer


def decode(raw: msgspec.Raw, type_: Any) -> Any:
    """Decode a `res` payload."""
    return msgspec.json.decode(raw, type=type_)


def stat_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Nonzero changes of the drop counters."""
    b, a = drop_counters(before), drop_counters(after)
    return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}


class Receiver:
    """The clients, the control connection, and the phases."""

    def __init__(self, args: argparse.Namespace, control: Peer, peers: list[Peer]) -> None:
        self.args = args
        self.control = control
        self.peers = peers
        self.cap = args.seconds + args.idle + 30

    async def stats(self) -> tuple[dict[str, int], dict[str, int]]:
        """The counters of the sender (control side) and of the relay (data side)."""
        a = decode(await self.control.call("stats"), dict[str, int])
        b = decode(await self.peers[0].call("stats"), dict[str, int])
        return a, b

    async def profile(self, action: str, tag: str) -> None:
        """Open/close a cProfile window on both sides (no-op unless they were started to profile)."""
        if self.args.profile:
            ctl = ProfileCtl(action, tag)
            await asyncio.gather(self.control.call("profile", ctl), self.peers[0].call("profile", ctl))

    async def wait_all(self, phase: Phase, expected: int, t0: float) -> bool:
        """Until `expected` unique ticks arrived, or none for `--idle` s, or the cap; True if all did."""
        last, last_change = -1, time.monotonic()
        while phase.unique < expected:
            now = time.monotonic()
            if phase.unique != last:
                last, last_change = phase.unique, now
            elif now - last_change >= self.args.idle or now - t0 >= self.cap:
                return False
            await asyncio.sleep(0.005)
        return True

    async def phase(self, name: str, measured: bool, body: Any) -> dict[str, Any]:
        """Stats before, READY, profile start, `body()`, profile stop, DONE, stats after."""
        before = await self.stats()
        if measured and self.args.sync:
            await wait_parent(f"READY {name}")
        await self.profile("start", name)
        result: dict[str, Any] = await body()
        await self.profile("stop", name)
        if measured and self.args.sync:
            await wait_parent(f"DONE {name}")
        after = await self.stats()
        result["sender_drops"] = stat_delta(before[0], after[0])
        result["relay_drops"] = stat_delta(before[1], after[1])
        return result

    async def ticks(self, run: EmitRun, members: list[Peer]) -> dict[str, Any]:
        """One tick phase: reset, ask the sender, wait for every delivery; summarize."""
        phase = Phase(run.count)
        for p in self.peers:
            p.reset(phase)
        t0 = time.monotonic()
        raw = await self.control.call("emit", msgspec.to_builtins(run), timeout=self.cap)
        res: RunResult = decode(raw, RunResult)
        expected = res.sent * len(members)
        complete = await self.wait_all(phase, expected, t0)
        lat = sorted(phase.lat)
        elapsed = max(1, phase.last_ns - res.t_first_ns) / 1e9
        return {
            "count": run.count,
            "sent": res.sent,
            "refused": res.refused,
            "time_capped": res.time_capped,
            "members": len(members),
            "expected": expected,
            "received": phase.unique,
            "lost": expected - phase.unique,
            "dups": phase.dups,
            "out_of_range": phase.out_of_range,
            "clients_short": sum(1 for p in members if sum(p.seen[: res.sent]) < res.sent),
            "complete": complete,
            "send_s": round((res.t_last_ns - res.t_first_ns) / 1e9, 4),
            "elapsed_s": round(elapsed, 4),
            "rate": round(phase.unique / elapsed, 1),
            "p50_ms": round(percentile(lat, 50) / 1e6, 3),
            "p99_ms": round(percentile(lat, 99) / 1e6, 3),
            "max_ms": round(lat[-1] / 1e6, 3) if lat else None,
        }

    async def asks(self, run: AskRun) -> dict[str, Any]:
        """One request phase: the sender asks, the clients answer; summarize."""
        phase = Phase(0)
        for p in self.peers:
            p.reset(phase)
        raw = await self.control.call("ask", msgspec.to_builtins(run), timeout=run.seconds + run.timeout + 30)
        res: AskResult = decode(raw, AskResult)
        elapsed = max(1, res.t_last_ns - res.t_first_ns) / 1e9
        return {
            "count": run.count,
            "concurrency": run.concurrency,
            "sent": res.sent,
            "ok": res.ok,
            "wrong": res.wrong,
            "errors": res.errors,
            "lost": run.count - res.ok,
            "time_capped": res.time_capped,
            "sreqs_seen": phase.sreqs,
            "elapsed_s": round(elapsed, 4),
            "rate": round(res.ok / elapsed, 1),
            "p50_ms": round(res.p50_us / 1e3, 3),
            "p99_ms": round(res.p99_us / 1e3, 3),
            "max_ms": round(res.max_us / 1e3, 3),
        }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, run the scenario's phases, print the JSON result."""
    gate = asyncio.Semaphore(50)
    n = args.clients if args.scenario == "room" else 1
    peers = await asyncio.wait_for(asyncio.gather(*(open_peer(args.data_url, gate) for _ in range(n))), 120)
    control = await open_peer(args.control_url, gate)
    rcv = Receiver(args, control, peers)
    out: dict[str, Any] = {"scenario": args.scenario, "clients": n, "phases": {}}
    common = {"seconds": args.seconds, "payload_bytes": args.payload}
    try:
        me = [decode(await p.call("whoami"), Me) for p in peers]
        target = me[0].id
        out["relay_node"] = me[0].node
        if args.scenario == "emit":
            warm = EmitRun(args.warmup, target=target, batch=args.batch, **common)
            await rcv.ticks(warm, peers)
            burst = EmitRun(args.count, target=target, batch=args.batch, **common)
            out["phases"]["blast"] = await rcv.phase("blast", True, lambda: rcv.ticks(burst, peers))
            if args.paced_count > 0:
                paced = EmitRun(args.paced_count, target=target, batch=1, rate=args.paced_rate, **common)
                out["phases"]["paced"] = await rcv.phase("paced", False, lambda: rcv.ticks(paced, peers))
        elif args.scenario == "room":
            sizes = await asyncio.gather(*(p.call("join", ROOM) for p in peers))
            out["members"] = max(int(msgspec.json.decode(s)) for s in sizes)
            warm = EmitRun(args.warmup, room=ROOM, batch=args.batch, **common)
            await rcv.ticks(warm, peers)
            burst = EmitRun(args.count, room=ROOM, batch=args.batch, **common)
            out["phases"]["burst"] = await rcv.phase("burst", True, lambda: rcv.ticks(burst, peers))
            if args.paced_count > 0:
                paced = EmitRun(args.paced_count, room=ROOM, batch=1, rate=args.paced_rate, **common)
                out["phases"]["paced"] = await rcv.phase("paced", False, lambda: rcv.ticks(paced, peers))
        else:
            await rcv.asks(AskRun(target, args.warmup, 1, args.timeout, args.seconds))
            seq = AskRun(target, args.seq_count, 1, args.timeout, args.seconds)
            out["phases"]["seq"] = await rcv.phase("seq", True, lambda: rcv.asks(seq))
            conc = AskRun(target, args.conc_count, args.concurrency, args.timeout, args.seconds)
            out["phases"]["conc"] = await rcv.phase("conc", True, lambda: rcv.asks(conc))
        final = await rcv.stats()
        out["sender_stats"], out["relay_stats"] = final
    finally:
        for p in [*peers, control]:
            if p.task is not None:
                p.task.cancel()
        await asyncio.gather(*(p.task for p in [*peers, control] if p.task is not None), return_exceptions=True)
    print(json.dumps(out), flush=True)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.ws.close() for p in [*peers, control])), 10)
    except TimeoutError:
        pass
    return out


def cli() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-url", required=True, help="relay node, e.g. ws://127.0.0.1:PORT/?role=user")
    parser.add_argument("--control-url", required=True, help="sender node, e.g. ws://127.0.0.1:PORT/?role=admin")
    parser.add_argument("--scenario", choices=("emit", "room", "req"), required=True)
    parser.add_argument("--clients", type=int, default=100, help="room members (room scenario)")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up sends/requests (not measured)")
    parser.add_argument("--count", type=int, default=20_000, help="measured sends (emit, room)")
    parser.add_argument("--batch", type=int, default=64, help="the sender yields to its loop every this many sends")
    parser.add_argument("--paced-count", type=int, default=5000, help="sends of the paced phase (0 = skip)")
    parser.add_argument("--paced-rate", type=float, default=2500.0, help="sends/s of the paced phase")
    parser.add_argument("--seq-count", type=int, default=2000, help="sequential requests")
    parser.add_argument("--conc-count", type=int, default=20_000, help="requests with --concurrency in flight")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request timeout")
    parser.add_argument("--seconds", type=float, default=20.0, help="time cap of each send/request loop")
    parser.add_argument("--idle", type=float, default=2.0, help="stop waiting after this long without a tick")
    parser.add_argument("--payload", type=int, default=64, help="approximate encoded Tick size in bytes")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--sync", action="store_true", help="READY/DONE handshake with the parent")
    parser.add_argument("--profile", action="store_true", help="profile start/stop requests around each phase")
    args = parser.parse_args()
    raise_fd_limit(args.clients + 256)
    install_loop(args.loop == "uvloop")
    asyncio.run(run(args))


if __name__ == "__main__":
    cli()
