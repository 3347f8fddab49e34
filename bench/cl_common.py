"""Shared by the cluster benchmarks: payload and control shapes, the send and request loops, small helpers.

The library's bench app (`cl_app.py`, run as node processes) and the raw relay (`cl_raw.py`) run the same
loops and differ only in the callable they pass: `srv.to_conn(id).emit(...)` / `srv.room(name).broadcast(...)`
/ `srv.to_conn(id).request(...)` on one side, one msgspec encode plus a raw pyzmq send on the other.
Every timestamp is `time.monotonic_ns()` (CLOCK_MONOTONIC, shared by all processes of one machine).
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

ROOM = "bench"
#: Set to a directory to make the nodes cProfile the windows the receiver brackets with `profile` requests.
PROFILE_ENV = "BENCH_PROFILE_DIR"
#: Counter names that mean "something was not delivered" (summed for the report).
DROP_WORDS = ("drop", "misrouted", "bad", "error", "late", "unconfirmed", "closed_backpressure", "not_held")


class Tick(msgspec.Struct):
    """The `tick` event payload: sequence number, send time (`time.monotonic_ns()`), padding."""

    seq: int
    t_ns: int
    pad: str


class TickFrame(msgspec.Struct, tag_field="t", tag="evt"):
    """The superline.v1 `evt` frame for `tick`: the same bytes the library's `EvtOut` produces."""

    e: str
    d: Tick


class Question(msgspec.Struct):
    """The `confirm` server request's input."""

    seq: int
    t_ns: int


class Confirmed(msgspec.Struct):
    """The `confirm` server request's answer (the client echoes `seq`)."""

    ok: bool
    seq: int


class Me(msgspec.Struct):
    """`whoami`: the connection's id (what `to_conn` takes) and its node."""

    id: str
    node: str


class EmitRun(msgspec.Struct):
    """Send `count` ticks to connection `target` (`room` empty) or to room `room`.

    Yield to the loop every `batch` sends; `rate` > 0 paces to that many sends/s; stop after `seconds`.
    """

    count: int
    target: str = ""
    room: str = ""
    batch: int = 64
    rate: float = 0.0
    seconds: float = 10.0
    payload_bytes: int = 64


class RunResult(msgspec.Struct):
    """What a send loop did: sends attempted, sends the transport refused, monotonic marks (ns)."""

    sent: int
    refused: int
    t_first_ns: int
    t_last_ns: int
    time_capped: bool


class AskRun(msgspec.Struct):
    """Ask connection `target` the `confirm` server request `count` times, `concurrency` at a time."""

    target: str
    count: int
    concurrency: int = 1
    timeout: float = 5.0
    seconds: float = 20.0


class AskResult(msgspec.Struct):
    """What a request loop did: answers, failures by kind, round-trip percentiles (µs), marks (ns)."""

    sent: int
    ok: int
    wrong: int
    errors: dict[str, int]
    p50_us: float
    p99_us: float
    max_us: float
    t_first_ns: int
    t_last_ns: int
    time_capped: bool


class ProfileCtl(msgspec.Struct):
    """`profile` request: `start` a cProfile window, or `stop` it and dump `<dir>/<tag>-<who>.pstats`."""

    action: str
    tag: str = ""


def make_pad(payload_bytes: int) -> str:
    """Padding that makes an encoded Tick (19-digit t_ns, short seq) about `payload_bytes` long."""
    base = len(msgspec.json.encode(Tick(0, time.monotonic_ns(), "")))
    return "x" * max(0, payload_bytes - base)


def percentile(sorted_values: list[float] | list[int], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a sorted list; nan if empty."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values), max(1, -(-int(q * len(sorted_values)) // 100)))
    return float(sorted_values[k - 1])


async def run_sends(run: EmitRun, send: Callable[[int], bool]) -> RunResult:
    """Call `send(seq)` for seq = 0..count-1, yielding every `batch` (pacing to `rate`), capped at `seconds`.

    `send` returns False when the transport refused the message (counted, not retried).
    """
    batch = max(1, run.batch)
    refused = 0
    sent = 0
    capped = False
    t_first = time.monotonic_ns()
    start = time.perf_counter()
    deadline = start + run.seconds
    while sent < run.count:
        for _ in range(min(batch, run.count - sent)):
            if not send(sent):
                refused += 1
            sent += 1
        now = time.perf_counter()
        if now >= deadline:
            capped = sent < run.count
            break
        delay = (start + sent / run.rate - now) if run.rate > 0 else 0.0
        await asyncio.sleep(max(0.0, delay))
    return RunResult(sent, refused, t_first, time.monotonic_ns(), capped)


async def run_asks(run: AskRun, ask: Callable[[int], Awaitable[Confirmed]]) -> AskResult:
    """`concurrency` workers call `ask(seq)` until `count` were asked or `seconds` passed; time each one.

    A failure is counted by its exception's code (`SocketError.code`) or class name; an answer whose
    `seq` is not the one asked counts as `wrong`.
    """
    next_seq = 0
    ok = wrong = 0
    errors: dict[str, int] = {}
    lat: list[int] = []
    deadline = time.perf_counter() + run.seconds
    capped = False

    async def worker() -> None:
        nonlocal next_seq, ok, wrong, capped
        clock = time.perf_counter_ns
        while next_seq < run.count:
            if time.perf_counter() >= deadline:
                capped = True
                return
            seq = next_seq
            next_seq += 1
            t0 = clock()
            try:
                answer = await ask(seq)
            except Exception as exc:
                key = str(getattr(exc, "code", "") or type(exc).__name__)
                errors[key] = errors.get(key, 0) + 1
                continue
            lat.append(clock() - t0)
            if answer.seq == seq and answer.ok:
                ok += 1
            else:
                wrong += 1

    t_first = time.monotonic_ns()
    await asyncio.gather(*(worker() for _ in range(max(1, run.concurrency))))
    t_last = time.monotonic_ns()
    lat.sort()
    return AskResult(
        sent=next_seq,
        ok=ok,
        wrong=wrong,
        errors=errors,
        p50_us=round(percentile(lat, 50) / 1e3, 1),
        p99_us=round(percentile(lat, 99) / 1e3, 1),
        max_us=round(lat[-1] / 1e3, 1) if lat else float("nan"),
        t_first_ns=t_first,
        t_last_ns=t_last,
        time_capped=capped,
    )


class Profiler:
    """A cProfile window opened and closed by `profile` requests; a no-op unless $BENCH_PROFILE_DIR is set."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.dir = os.environ.get(PROFILE_ENV)
        self._prof: cProfile.Profile | None = None

    def control(self, ctl: ProfileCtl) -> None:
        """Start or stop (and dump) the window."""
        if not self.dir:
            return
        if ctl.action == "start":
            if self._prof is None:
                self._prof = cProfile.Profile()
                self._prof.enable()
        elif self._prof is not None:
            self._prof.disable()
            pstats.Stats(self._prof).dump_stats(os.path.join(self.dir, f"{ctl.tag}-{self.who}.pstats"))
            self._prof = None


def drop_counters(stats: dict[str, Any]) -> dict[str, int]:
    """The counters of a statistics map whose names mean a message was not delivered."""
    return {k: int(v) for k, v in stats.items() if any(w in k for w in DROP_WORDS) and isinstance(v, int)}
