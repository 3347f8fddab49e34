"""Shared by the broadcast fan-out scripts: payload and control shapes, the paced send loop, drain wait.

All servers run the same `run_start` loop and differ only in the `send(seq)` they pass: the library's
`room.broadcast("tick", Tick(...))`, one msgspec encode plus `websockets.broadcast(conns, ...)`, or (ASGI,
python-socketio) a coroutine function that awaits each member's `send` / `sio.emit`.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import time
from collections.abc import Awaitable, Callable

import msgspec

ROOM = "bench"
#: Set to a directory to make the servers cProfile each `start` window (the last one wins).
PROFILE_ENV = "BENCH_PROFILE_DIR"


class Tick(msgspec.Struct):
    """The `tick` event payload: sequence number, send time (`time.time_ns()`), padding."""

    seq: int
    t_ns: int
    pad: str


class Start(msgspec.Struct):
    """`start` request input: send `count` ticks, yielding every `batch`, for at most `seconds`.

    `rate` > 0 paces the ticks to that many per second (0 = as fast as the server can go). `payload_bytes`
    sizes `pad` so that the encoded `Tick` is about that long. `drain_seconds` caps the wait for the
    server's write buffers to empty after the last tick.
    """

    count: int
    batch: int = 10
    seconds: float = 10.0
    rate: float = 0.0
    payload_bytes: int = 64
    drain_seconds: float = 20.0


class Started(msgspec.Struct):
    """`start` result: how many ticks went out, to how many members, and the server's wall-clock marks."""

    sent: int
    members: int
    t_first_ns: int
    t_sent_ns: int
    t_drained_ns: int
    drained: bool
    time_capped: bool


class TickFrame(msgspec.Struct, tag_field="t", tag="evt"):
    """The superline.v1 `evt` frame for `tick`, the same bytes the library's `EvtOut` produces."""

    e: str
    d: Tick


def make_pad(payload_bytes: int) -> str:
    """Padding that makes an encoded Tick (19-digit t_ns, short seq) about `payload_bytes` long."""
    base = len(msgspec.json.encode(Tick(0, time.time_ns(), "")))
    return "x" * max(0, payload_bytes - base)


async def wait_drained(buffered: Callable[[], int], cap: float) -> bool:
    """Poll `buffered()` (total unsent bytes) every 5 ms until it is 0 or `cap` s pass; True if drained."""
    deadline = time.monotonic() + cap
    while buffered() > 0:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def run_start(
    args: Start,
    send: Callable[[int], Awaitable[None] | None],
    members: Callable[[], int],
    buffered: Callable[[], int],
    tag: str,
) -> Started:
    """Call `send(seq)` for seq = 0..count-1 in batches, then wait for the write buffers to drain.

    `send` may return an awaitable (an ASGI `send`, `sio.emit`): it is awaited before the next tick.

    Bounded by count and by `args.seconds`; yields to the loop after every batch (sleeping to keep the
    pace when `args.rate` > 0). With $BENCH_PROFILE_DIR set, the whole window is cProfiled into
    `<dir>/<tag>-n<members>.pstats`.
    """
    prof_dir = os.environ.get(PROFILE_ENV)
    prof = cProfile.Profile() if prof_dir else None
    n_members = members()
    batch = max(1, args.batch)
    if prof is not None:
        prof.enable()
    t_first = time.time_ns()
    start = time.perf_counter()
    deadline = start + args.seconds
    sent = 0
    capped = False
    while sent < args.count:
        for _ in range(min(batch, args.count - sent)):
            pending = send(sent)
            if pending is not None:
                await pending
            sent += 1
        now = time.perf_counter()
        if now >= deadline:
            capped = sent < args.count
            break
        delay = (start + sent / args.rate - now) if args.rate > 0 else 0.0
        await asyncio.sleep(max(0.0, delay))
    t_sent = time.time_ns()
    drained = await wait_drained(buffered, args.drain_seconds)
    t_drained = time.time_ns()
    if prof is not None and prof_dir:
        prof.disable()
        path = os.path.join(prof_dir, f"{tag}-n{n_members}.pstats")
        pstats.Stats(prof).dump_stats(path)
    return Started(sent, n_members, t_first, t_sent, t_drained, drained, capped)
