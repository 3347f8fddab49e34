"""Cluster convergence benchmark: presence propagation, crash detection and graceful-stop disappearance.

Runs a local 3-node cluster of real node processes (`superline-zmq run cl_app:app`, ZeroMQ adapter, loopback)
through `superline_zmq.testing.LocalCluster`, with the default gossip timings (heartbeat_interval 1.0 s,
ttl 5.0 s) unless told otherwise.

(a) Presence convergence. This driver opens WebSocket clients (`?role=user&user=<unique id>`) on the nodes in
    turn, one at a time, then closes them one at a time (`--events` connects and as many disconnects, a
    `--gap` apart), then does the same with `--burst` clients at once. Every node records, with a hook on its
    presence replica (see cl_app.py), the `time.monotonic()` at which each user became visible / invisible
    there; CLOCK_MONOTONIC is shared by every process of the machine, so the driver compares those marks:

    - propagation = mark on another node - mark on the owning node (the owner's mark is taken when it
      writes its own slice, just before the gossip delta is broadcast);
    - end-to-end = mark on another node - the driver's clock just before `connect()` / `close()`
      (includes the WebSocket handshake or closing handshake, and on connect the `u:<user>` channel
      subscription the server confirms before it publishes the presence descriptor).

    Every event must be seen on every other node (missed = expected - seen, after a bounded settle wait).
(b) Crash detection (`--reps` times, each on a fresh cluster). `--holders` users connect to node 2 and as
    many to node 1. Nodes 0 and 1 start polling `srv.is_online(u)` for node 2's users every ms (and
    `srv.cluster.topology()` for node 2's liveness); node 2 gets SIGKILL at a random point of its beat
    cycle; the delay is the first poll that shows them all gone - the kill time. Then node 1 gets SIGTERM
    (graceful: it closes its connections and announces its leave) and node 0 measures the same for node
    1's users.

Targets: propagation p99 <= 10 ms with 0 missed; crash detection <= ttl + heartbeat_interval; graceful stop
<= 0.5 s ("about immediate"). A benchmark, not a test: it exits 1 only if a run failed.
Usage: python bench/cluster_convergence.py [--quick] [--events N] [--reps R] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import format_table, use_checkout, wait_quiet

use_checkout()

from cl_app import Gone, Marks, WatchGone, api  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

import superline_zmq  # noqa: E402
from superline_zmq.testing.cluster import LocalCluster  # noqa: E402

BENCH = Path(__file__).resolve().parent
APP = "cl_app:app"
PROP_TARGET_MS = 10.0
GRACEFUL_TARGET_S = 0.5


def ms(seconds: float) -> float:
    """Seconds to milliseconds."""
    return seconds * 1000.0


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of an unsorted list; nan if empty."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v), max(1, -(-int(q * len(v)) // 100)))
    return v[k - 1]


class User:
    """One measured client: its node, its socket, and the driver's clock at connect and close."""

    def __init__(self, uid: str, node: int) -> None:
        self.uid = uid
        self.node = node
        self.ws: ClientConnection | None = None
        self.t_connect = 0.0
        self.t_open = 0.0
        self.t_close = 0.0


async def open_user(user: User, url: str) -> None:
    """Connect `user` and read the server's `env` frame (so the handshake is complete)."""
    user.t_connect = time.monotonic()
    user.ws = await connect(
        f"{url}?role=user&user={user.uid}", compression=None, ping_interval=None, open_timeout=10, close_timeout=5
    )
    await asyncio.wait_for(user.ws.recv(), 10)
    user.t_open = time.monotonic()


async def close_user(user: User) -> None:
    """Close `user`'s socket (closing handshake), noting the driver's clock first."""
    user.t_close = time.monotonic()
    if user.ws is not None:
        await asyncio.wait_for(user.ws.close(), 10)


async def admin(url: str) -> superline_zmq.Client:
    """An admin control client on one node (no reconnect)."""
    return await superline_zmq.connect(api, url, role="admin", reconnect=False, timeout=30.0, open_timeout=10.0)


async def all_marks(admins: list[superline_zmq.Client]) -> list[Marks]:
    """Every node's presence marks."""
    return list(await asyncio.gather(*(a.call("marks") for a in admins)))


async def settle(admins: list[superline_zmq.Client], users: list[User], cap: float) -> list[Marks]:
    """Poll the marks until every user was seen up and down on every node, or `cap` s passed."""
    deadline = time.monotonic() + cap
    while True:
        marks = await all_marks(admins)
        done = all(u.uid in m.up and u.uid in m.down for m in marks for u in users)
        if done or time.monotonic() >= deadline:
            return marks
        await asyncio.sleep(0.1)


def analyse(users: list[User], marks: list[Marks], node_ids: list[str]) -> dict[str, Any]:
    """Propagation and end-to-end delays (ms) of connects and disconnects, and what was missed."""
    out: dict[str, Any] = {}
    for kind, attr, t_attr in (("connect", "up", "t_connect"), ("disconnect", "down", "t_close")):
        prop: list[float] = []
        e2e: list[float] = []
        origin: list[float] = []
        missed = 0
        wrong_owner = 0
        for u in users:
            owner_marks: dict[str, float] = getattr(marks[u.node], attr)
            t_owner = owner_marks.get(u.uid)
            t_drv = getattr(u, t_attr)
            if t_owner is not None:
                origin.append(ms(t_owner - t_drv))
            if marks[u.node].owner.get(u.uid, node_ids[u.node]) != node_ids[u.node]:
                wrong_owner += 1
            for j, m in enumerate(marks):
                if j == u.node:
                    continue
                t = getattr(m, attr).get(u.uid)
                if t is None:
                    missed += 1
                    continue
                e2e.append(ms(t - t_drv))
                if t_owner is not None:
                    prop.append(ms(t - t_owner))
        expected = len(users) * (len(marks) - 1)
        out[kind] = {
            "events": len(users),
            "expected": expected,
            "seen": expected - missed,
            "missed": missed,
            "wrong_owner": wrong_owner,
            "prop_ms": summary(prop),
            "e2e_ms": summary(e2e),
            "origin_ms": summary(origin),
        }
    return out


def summary(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max / min of a list of milliseconds."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(pct(values, 50), 3),
        "p99": round(pct(values, 99), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }


async def part_a(cluster: LocalCluster, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """Presence convergence: sequential connects/disconnects, then a burst; marks from every node."""
    urls = cluster.urls
    ids = [n.node_id for n in cluster.nodes]
    admins = [await admin(u) for u in urls]
    try:
        load = wait_quiet(args.quiet_wait)
        seq = [User(f"{tag}s{i}", i % len(urls)) for i in range(args.events)]
        for u in seq:
            await open_user(u, urls[u.node])
            await asyncio.sleep(args.gap)
        await asyncio.sleep(0.2)
        for u in seq:
            await close_user(u)
            await asyncio.sleep(args.gap)
        burst = [User(f"{tag}b{i}", i % len(urls)) for i in range(args.burst)]
        if burst:
            await asyncio.sleep(0.2)
            await asyncio.wait_for(asyncio.gather(*(open_user(u, urls[u.node]) for u in burst)), 30)
            await asyncio.sleep(0.3)
            await asyncio.wait_for(asyncio.gather(*(close_user(u) for u in burst)), 30)
        marks = await settle(admins, seq + burst, args.settle)
        stats = list(await asyncio.gather(*(a.call("stats") for a in admins)))
    finally:
        await asyncio.gather(*(a.close() for a in admins), return_exceptions=True)
    result = {
        "load_before": round(load, 2),
        "sequential": analyse(seq, marks, ids),
        "burst": analyse(burst, marks, ids) if burst else None,
        "mismatches": sum(m.mismatches for m in marks),
        "hooked": all(m.hooked for m in marks),
        "node_stats": [
            {k: v for k, v in s.items() if k.startswith("adapter_gossip_") or k.startswith("adapter_control_")}
            | {"adapter_bad_messages": s.get("adapter_bad_messages", 0)}
            for s in stats
        ],
    }
    return result


async def wait_visible(client: superline_zmq.Client, users: list[str], cap: float) -> bool:
    """Poll `visible` on one node until every user is online there, or `cap` s passed."""
    deadline = time.monotonic() + cap
    while await client.call("visible", users) != len(users):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def gone_record(kind: str, rep: int, victim: int, observer: int, gone: Gone, t0: float, n: int) -> dict[str, Any]:
    """One detection measurement, relative to the signal time `t0` (driver clock)."""
    return {
        "rep": rep,
        "kind": kind,
        "victim": victim,
        "observer": observer,
        "users": n,
        "online_at_arm": gone.online_at_arm,
        "armed_before": gone.t_armed < t0,
        "timed_out": gone.timed_out,
        "detect_s": round(gone.t_gone - t0, 4) if gone.t_gone >= 0 else None,
        "node_dead_s": round(gone.t_node_dead - t0, 4) if gone.t_node_dead >= 0 else None,
        "since_heard_s": round(gone.t_gone - gone.last_heard, 4) if gone.t_gone >= 0 and gone.last_heard >= 0 else None,
        "heard_before_signal_s": round(t0 - gone.last_heard, 4) if gone.last_heard >= 0 else None,
    }


async def part_b(cluster: LocalCluster, args: argparse.Namespace, rep: int) -> list[dict[str, Any]]:
    """SIGKILL node 2 (observed by 0 and 1), then SIGTERM node 1 (observed by 0)."""
    urls = cluster.urls
    ids = [n.node_id for n in cluster.nodes]
    kx = [User(f"k{rep}x{i}", 2) for i in range(args.holders)]
    gx = [User(f"g{rep}x{i}", 1) for i in range(args.holders)]
    admins = [await admin(u) for u in urls[:2]]
    records: list[dict[str, Any]] = []
    try:
        await asyncio.wait_for(asyncio.gather(*(open_user(u, urls[u.node]) for u in kx + gx)), 30)
        names = [u.uid for u in kx + gx]
        for a in admins:
            if not await wait_visible(a, names, 10.0):
                raise RuntimeError("the held users never became visible on every node")
        timeout = args.ttl * 2 + 5
        crash_users = [u.uid for u in kx]
        watch = WatchGone(crash_users, ids[2], 0.001, timeout)
        watches = [asyncio.create_task(a.call("watch_gone", watch, timeout=timeout + 5)) for a in admins]
        # a random phase against the victim's beat, so repetitions cover the range ttl - interval .. ttl
        await asyncio.sleep(0.3 + random.uniform(0.0, args.heartbeat_interval))
        t_kill = time.monotonic()
        await cluster.kill(2)
        for k, w in enumerate(watches):
            records.append(gone_record("SIGKILL", rep, 2, k, await w, t_kill, len(kx)))
        term_users = [u.uid for u in gx]
        watch = asyncio.create_task(
            admins[0].call("watch_gone", WatchGone(term_users, ids[1], 0.001, 10.0), timeout=15.0)
        )
        await asyncio.sleep(0.3)
        t_term = time.monotonic()
        stopping = asyncio.create_task(cluster.stop(1, timeout=15.0))
        records.append(gone_record("SIGTERM", rep, 1, 0, await watch, t_term, len(gx)))
        code = await stopping
        records[-1]["exit_code"] = code
    finally:
        await asyncio.gather(*(a.close() for a in admins), return_exceptions=True)
        for u in kx + gx:
            if u.ws is not None:
                u.ws.transport.abort()
    return records


def new_cluster(args: argparse.Namespace) -> LocalCluster:
    """A 3-node cluster of cl_app with the chosen gossip timings (SIGKILLed on close)."""
    return LocalCluster(APP, 3, heartbeat_interval=args.heartbeat_interval, ttl=args.ttl, cwd=BENCH, ready_timeout=30.0)


def fmt(v: Any, spec: str = ".2f") -> str:
    """A number for the table, '-' when missing."""
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def print_a(a: dict[str, Any]) -> list[str]:
    """Print part (a); return its verdict lines."""
    print(f"(a) presence convergence, 3 nodes (load before: {a['load_before']:.2f} CPUs)")
    head = (
        "phase",
        "event",
        "events",
        "seen/expected",
        "missed",
        "prop p50 ms",
        "prop p99 ms",
        "prop max ms",
        "e2e p50 ms",
        "e2e p99 ms",
        "e2e max ms",
        "owner p50 ms",
    )
    rows = []
    worst_p99 = 0.0
    missed = 0
    for phase in ("sequential", "burst"):
        res = a.get(phase)
        if not res:
            continue
        for kind in ("connect", "disconnect"):
            r = res[kind]
            p, e, o = r["prop_ms"], r["e2e_ms"], r["origin_ms"]
            missed += r["missed"] + r["wrong_owner"]
            worst_p99 = max(worst_p99, p.get("p99", float("inf")))
            rows.append(
                (
                    phase,
                    kind,
                    r["events"],
                    f"{r['seen']}/{r['expected']}",
                    r["missed"],
                    fmt(p.get("p50"), ".3f"),
                    fmt(p.get("p99"), ".3f"),
                    fmt(p.get("max"), ".3f"),
                    fmt(e.get("p50")),
                    fmt(e.get("p99")),
                    fmt(e.get("max")),
                    fmt(o.get("p50")),
                )
            )
    print(format_table(head, rows))
    print("(prop = mark on each other node - mark on the owning node; e2e = mark on each other node - driver")
    print(" clock before connect()/close(); owner = owning node's mark - driver clock; samples = events x 2)")
    print(f"hook/public-API disagreements: {a['mismatches']} (0 expected); hooks installed: {a['hooked']}")
    for k, s in enumerate(a["node_stats"]):
        nz = {key.removeprefix("adapter_"): v for key, v in s.items() if v}
        print(f"node {k} gossip/adapter counters (nonzero): {nz or '{}'}")
    seq = a["sequential"]
    seq_p99 = max(seq["connect"]["prop_ms"].get("p99", float("inf")), seq["disconnect"]["prop_ms"].get("p99", 0))
    ok = seq_p99 <= PROP_TARGET_MS and missed == 0 and a["mismatches"] == 0
    verdicts = [
        f"VERDICT (a) presence propagation p99 {seq_p99:.3f} ms sequential, {worst_p99:.3f} ms worst incl. burst "
        f"(target <= {PROP_TARGET_MS:.0f} ms), missed {missed} (target 0): {'PASS' if ok else 'MISS'}"
    ]
    return verdicts


def print_b(records: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Print part (b); return its verdict lines."""
    print(f"\n(b) failure detection, heartbeat_interval {args.heartbeat_interval} s, ttl {args.ttl} s")
    head = (
        "rep",
        "signal",
        "victim",
        "observer",
        "users",
        "gone after s",
        "node dead after s",
        "gone - last heard s",
        "last heard before signal s",
    )
    rows = [
        (
            r["rep"],
            r["kind"],
            f"node {r['victim']}",
            f"node {r['observer']}",
            r["users"],
            fmt(r["detect_s"], ".3f"),
            fmt(r["node_dead_s"], ".3f"),
            fmt(r["since_heard_s"], ".3f"),
            fmt(r["heard_before_signal_s"], ".3f"),
        )
        for r in records
    ]
    print(format_table(head, rows))
    print("(gone after = first 1 ms poll on the observer where srv.is_online() is false for every user of the victim,")
    print(" minus the driver's clock when it sent the signal; node dead = the victim shows alive=False or is absent")
    print(" in srv.cluster.topology(); last heard = the observer's gossip liveness timestamp of the victim)")
    bad = [r for r in records if r["timed_out"] or not r["armed_before"] or r["online_at_arm"] != r["users"]]
    for r in bad:
        print(f"WARNING: rep {r['rep']} {r['kind']} observer {r['observer']}: {r}")
    crash = [r["detect_s"] for r in records if r["kind"] == "SIGKILL" and r["detect_s"] is not None]
    term = [r["detect_s"] for r in records if r["kind"] == "SIGTERM" and r["detect_s"] is not None]
    crash_target = args.ttl + args.heartbeat_interval
    n_crash = sum(1 for r in records if r["kind"] == "SIGKILL")
    n_term = sum(1 for r in records if r["kind"] == "SIGTERM")
    ok_c = len(crash) == n_crash > 0 and max(crash) <= crash_target
    ok_t = len(term) == n_term > 0 and max(term) <= GRACEFUL_TARGET_S
    return [
        f"VERDICT (b) crash detection max {fmt(max(crash) if crash else None, '.3f')} s over {len(crash)} observations "
        f"(target <= ttl + interval = {crash_target:.1f} s): {'PASS' if ok_c else 'MISS'}",
        f"VERDICT (b) graceful stop disappearance max {fmt(max(term) if term else None, '.3f')} s over {len(term)} "
        f"observations (target <= {GRACEFUL_TARGET_S} s): {'PASS' if ok_t else 'MISS'}",
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Part (a) on the first cluster, part (b) on it and on `reps - 1` fresh ones; returns the report."""
    report: dict[str, Any] = {"a": None, "b": [], "errors": []}
    t_start = time.monotonic()
    tag = f"c{os.getpid() % 10000}"
    for rep in range(1, args.reps + 1):
        cluster = new_cluster(args)
        try:
            await cluster.start()
            print(f"- cluster {rep}: pids {cluster.pids}", file=sys.stderr, flush=True)
            if rep == 1 and args.events > 0:
                report["a"] = await asyncio.wait_for(part_a(cluster, args, tag), 120)
            report["b"].extend(await asyncio.wait_for(part_b(cluster, args, rep), 4 * args.ttl + 60))
        except Exception as exc:  # keep going: report it
            report["errors"].append(f"rep {rep}: {type(exc).__name__}: {exc}")
            print(f"FAILED rep {rep}: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            await cluster.close()
    verdicts = []
    if report["a"]:
        verdicts += print_a(report["a"])
    if report["b"]:
        verdicts += print_b(report["b"], args)
    print()
    for v in verdicts:
        print(v)
    for e in report["errors"]:
        print(f"FAILED {e}")
    print(f"(total {time.monotonic() - t_start:.1f} s)")
    return report


def main() -> int:
    """Parse options and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 30+30 events, burst 15, 1 rep (< 20 s)")
    parser.add_argument("--events", type=int, default=120, help="sequential connects (and as many disconnects)")
    parser.add_argument("--gap", type=float, default=0.015, help="seconds between sequential events")
    parser.add_argument("--burst", type=int, default=60, help="clients connected (then closed) at once")
    parser.add_argument("--settle", type=float, default=3.0, help="max wait for the last marks")
    parser.add_argument("--reps", type=int, default=3, help="crash/graceful repetitions (fresh cluster each)")
    parser.add_argument("--holders", type=int, default=20, help="users held on each victim node")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0, help="gossip beat (s)")
    parser.add_argument("--ttl", type=float, default=5.0, help="gossip TTL (s)")
    parser.add_argument("--quiet-wait", type=float, default=3.0, help="wait up to this long for an idle machine")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    if args.quick:
        args.events, args.burst, args.reps, args.holders, args.quiet_wait = 30, 15, 1, 10, 0.5
    args.events = max(0, min(args.events, 2000))
    args.burst = max(0, min(args.burst, 500))
    args.reps = max(1, min(args.reps, 10))
    report = asyncio.run(run(args))
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        config.update(python=platform.python_version(), cpus=os.cpu_count(), loadavg=os.getloadavg())
        Path(args.json).write_text(json.dumps({"config": config, **report}, indent=2) + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
