"""Cluster delivery benchmark: targeted emits, room fan-out and server requests across two ZeroMQ nodes.

Processes, all on 127.0.0.1:

- ours: two node processes A and B (`superline-zmq run cl_app:app`, ZeroMQ adapter, started and stopped by
  PID through `superline_zmq.testing.LocalCluster`). The receivers are real WebSocket clients connected to
  B; the sending happens *inside A*: a `cl_receiver.py` process asks A's admin role to run the loop
  (`srv.to_conn(id).emit("tick", ...)`, `srv.room("bench").broadcast("tick", ...)`, or
  `srv.to_conn(id).request("confirm", ...)`), so every message crosses A -> ZeroMQ -> B -> WebSocket.
- raw (same run): a hand-written relay of the same bytes, `cl_raw.py`: A' sends over a pyzmq DEALER ->
  ROUTER (targeted, requests) or XPUB -> SUB (room) hop to B', which writes them to the same kind of
  clients with bare `websockets` (`websockets.broadcast`, one connection or the room set).
- curve (same run, with `--curve`): ours again on a second pair of nodes whose cluster transport runs
  under CURVE (`LocalCluster(curve=True)`: throwaway keys, every socket authenticated and encrypted), so
  the report gives what CURVE costs: curve/ours delivered/s and CPU per message on each scenario.

Scenarios (each a fresh receiver process; raw and ours interleaved; `--repeat` runs each):

1. emit: `--emit-count` ticks back to back to one connection on B, then `--paced-count` at `--paced-rate`/s;
2. room: `--room-count` broadcasts back to back to `--members` members on B, then a paced phase;
3. req: `--req-seq` sequential server requests, then `--req-count` with `--concurrency` in flight.

Each tick carries a sequence number and `time.monotonic_ns()` at send (CLOCK_MONOTONIC is shared by the
processes), so the receiver counts lost / duplicate deliveries per client and the send-to-receive latency.
CPU time of the sender, the relay, the receiver and the rest of the machine comes from /proc around each
measured phase. The drop counters of both sides (`statistics()` and the adapter's statistics for ours) are
read around every phase and printed.

Targets: ours/raw delivered/s >= 0.5x on targeted emit and >= 0.7x on room fan-out, 0 lost, and >= 10 000
server requests/s with 32 in flight; with --curve, CURVE costs under 2x (curve/ours delivered/s > 0.5).
`--profile` cProfiles A and B during every phase of ours (figures inflated; use it to see where the time
goes). A benchmark, not a test: exit 1 only if a run failed.
Usage: python bench/cluster_delivery.py [--quick] [--repeat R] [--curve] [--profile] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    LineReader,
    cpu_seconds,
    format_table,
    spawn,
    stop_process,
    system_busy_seconds,
    use_checkout,
    wait_quiet,
)

use_checkout()

from cl_common import PROFILE_ENV  # noqa: E402

from superline_zmq.testing.cluster import LocalCluster  # noqa: E402

BENCH = Path(__file__).resolve().parent
RAW = BENCH / "cl_raw.py"
RECEIVER = BENCH / "cl_receiver.py"
DISTURBED = 15.0  # other CPU % above which a run counts as disturbed
TARGETS = {"emit": 0.5, "room": 0.7}
REQ_TARGET = 10_000.0
CURVE_TARGET = 0.5  # curve/ours delivered/s: CURVE must cost under 2x
# (scenario, phase) rows of the table, in order, with the label shown
ROWS = [
    ("emit", "blast", "to_conn.emit blast"),
    ("emit", "paced", "to_conn.emit paced"),
    ("room", "burst", "room.broadcast burst"),
    ("room", "paced", "room.broadcast paced"),
    ("req", "seq", "to_conn.request seq"),
    ("req", "conc", "to_conn.request conc"),
]


def receiver_args(scenario: str, data: str, control: str, args: argparse.Namespace, profile: bool) -> list[str]:
    """The receiver's command line for one scenario."""
    opts: dict[str, Any] = {"--data-url": data, "--control-url": control, "--scenario": scenario}
    if scenario == "emit":
        opts.update(
            {
                "--warmup": args.emit_warmup,
                "--count": args.emit_count,
                "--batch": args.batch,
                "--paced-count": args.paced_count,
                "--paced-rate": args.paced_rate,
            }
        )
    elif scenario == "room":
        opts.update(
            {
                "--clients": args.members,
                "--warmup": args.room_warmup,
                "--count": args.room_count,
                "--batch": args.room_batch,
                "--paced-count": args.room_paced_count,
                "--paced-rate": args.room_paced_rate,
            }
        )
    else:
        opts.update(
            {
                "--warmup": args.req_warmup,
                "--seq-count": args.req_seq,
                "--conc-count": args.req_count,
                "--concurrency": args.concurrency,
            }
        )
    opts.update({"--seconds": args.seconds, "--idle": args.idle})
    return [*(str(x) for kv in opts.items() for x in kv), "--sync", *(["--profile"] if profile else [])]


def run_receiver(argv: list[str], watch: dict[str, int], timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one receiver; sample CPU of `watch`, the receiver and the machine around each READY/DONE window.

    Returns (its JSON result, {phase: {cpu seconds per name, "wall"}}). The receiver is stopped by PID.
    """
    proc = spawn(str(RECEIVER), argv, stdin_pipe=True)
    reader = LineReader(proc)
    pids = {**watch, "receiver": proc.pid}
    windows: dict[str, Any] = {}
    marks: dict[str, tuple[dict[str, float], float]] = {}
    assert proc.stdin is not None
    deadline = time.monotonic() + timeout
    try:
        while True:
            line = reader.readline(max(0.1, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"receiver exited (code {proc.poll()}) without a result")
            if line.startswith(("READY ", "DONE ")):
                tag, name = line.split(" ", 1)
                cpu = {k: cpu_seconds(p) for k, p in pids.items()}
                cpu["machine"] = system_busy_seconds()
                now = time.monotonic()
                if tag == "READY":
                    marks[name] = (cpu, now)
                else:
                    c0, t0 = marks[name]
                    windows[name] = {k: cpu[k] - c0[k] for k in cpu} | {"wall": now - t0}
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            elif line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                proc.wait(15)
                return result, windows
            else:
                print(f"  [receiver] {line}", file=sys.stderr)
    finally:
        reader.close()
        stop_process(proc)


def bench_one(impl: str, scenario: str, ends: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One receiver run of `scenario` against `impl`; returns the record (with "error" on failure)."""
    load = wait_quiet(args.quiet_wait)
    rec: dict[str, Any] = {"impl": impl, "scenario": scenario, "load_before": round(load, 2)}
    e = ends[impl]
    print(f"- {impl} {scenario} (load before {load:.2f} CPUs)", file=sys.stderr, flush=True)
    try:
        argv = receiver_args(scenario, e["data"], e["control"], args, args.profile and impl == "ours")
        result, windows = run_receiver(argv, {"sender": e["sender_pid"], "relay": e["relay_pid"]}, args.run_timeout)
        rec.update(result)
        for name, w in windows.items():
            ph = rec["phases"].get(name, {})
            wall = w["wall"]
            n = max(1, ph.get("received", ph.get("ok", 0)))
            others = w["machine"] - w["sender"] - w["relay"] - w["receiver"]
            ph.update(
                wall_s=round(wall, 3),
                sender_cpu_pct=round(100 * w["sender"] / wall, 1),
                relay_cpu_pct=round(100 * w["relay"] / wall, 1),
                receiver_cpu_pct=round(100 * w["receiver"] / wall, 1),
                other_cpu_pct=round(100 * max(0.0, others) / wall, 1),
                relay_cpu_us=round(w["relay"] * 1e6 / n, 2),
                sender_cpu_us=round(w["sender"] * 1e6 / n, 2),
            )
            ph["disturbed"] = ph["other_cpu_pct"] > DISTURBED
        if scenario == "room" and rec.get("members") != args.members:
            rec["error"] = f"room has {rec.get('members')} members, expected {args.members}"
    except Exception as exc:  # keep going: report the failure in the table
        rec["error"] = f"{type(exc).__name__}: {exc}"
    return rec


def start_raw(procs: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    """Start the raw relay B' and sender A' (appended to `procs` at once, for cleanup); return their ends."""
    relay = spawn(str(RAW), ["relay"])
    procs.append(relay)
    r_reader = LineReader(relay)
    try:
        info = json.loads(r_reader.expect("READY ", 30))
    finally:
        r_reader.close()
    sender = spawn(str(RAW), ["sender", "--router", info["router"], "--sub", info["sub"]])
    procs.append(sender)
    s_reader = LineReader(sender)
    try:
        s_info = json.loads(s_reader.expect("READY ", 30))
    finally:
        s_reader.close()
    return {
        "data": f"ws://127.0.0.1:{info['port']}/?role=user",
        "control": f"ws://127.0.0.1:{s_info['port']}/?role=admin",
        "sender_pid": sender.pid,
        "relay_pid": relay.pid,
    }


def fmt(v: Any, spec: str = ",.0f") -> str:
    """A number for the table, '-' when missing."""
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def best(records: list[dict[str, Any]], impl: str, scenario: str, phase: str) -> dict[str, Any] | None:
    """The phase record of `impl` with the highest rate among undisturbed runs (any run if all disturbed)."""
    mine = [r for r in records if r["impl"] == impl and r["scenario"] == scenario and "error" not in r]
    phs = [r["phases"][phase] for r in mine if phase in r.get("phases", {})]
    if not phs:
        return None
    calm = [p for p in phs if not p.get("disturbed")] or phs
    return max(calm, key=lambda p: p.get("rate", 0))


def print_report(records: list[dict[str, Any]], args: argparse.Namespace, names: dict[str, str]) -> list[str]:
    """The table, the drop counters, the ratios and the verdict lines (returned)."""
    head = (
        "scenario",
        "impl",
        "count",
        "msgs or req /s",
        "lost",
        "p50 ms",
        "p99 ms",
        "max ms",
        "relay CPU µs/msg",
        "sender CPU %",
        "relay CPU %",
        "rcv CPU %",
        "other CPU %",
    )
    rows = []
    total_lost = 0
    for scenario, phase, label in ROWS:
        for r in records:
            if r["scenario"] != scenario:
                continue
            if "error" in r:
                if phase in ("blast", "burst", "seq"):
                    rows.append((label, r["impl"], "FAILED", *[""] * (len(head) - 3)))
                continue
            ph = r["phases"].get(phase)
            if ph is None:
                continue
            total_lost += max(0, ph.get("lost", 0)) + ph.get("dups", 0)
            count = ph.get("expected", ph.get("count"))
            mark = "*" if ph.get("time_capped") else ""
            rows.append(
                (
                    label,
                    r["impl"] + ("~" if ph.get("disturbed") else ""),
                    f"{fmt(count)}{mark}",
                    fmt(ph.get("rate")),
                    fmt(ph.get("lost"), "d"),
                    fmt(ph.get("p50_ms"), ".2f"),
                    fmt(ph.get("p99_ms"), ".2f"),
                    fmt(ph.get("max_ms"), ".1f"),
                    fmt(ph.get("relay_cpu_us"), ".2f"),
                    fmt(ph.get("sender_cpu_pct")),
                    fmt(ph.get("relay_cpu_pct")),
                    fmt(ph.get("receiver_cpu_pct")),
                    fmt(ph.get("other_cpu_pct")),
                )
            )
    print(format_table(head, rows))
    print("(count = deliveries expected, or requests; msgs/s = unique deliveries / (last receive - first send);")
    print(" req/s = answered requests / loop time; p50/p99 = send-to-receive (ticks) or round trip (requests);")
    print(" paced rows: latency at a fixed rate, their msgs/s is the pace; * = the loop hit --seconds;")
    print(f" ~ = disturbed: other CPU > {DISTURBED:.0f} %; CPU columns only for measured (non-paced) phases)")
    print()
    print("drop counters (deltas during each phase, nonzero only; sender = A / A', relay = B / B'):")
    any_drop = False
    for r in records:
        for name, ph in r.get("phases", {}).items():
            sd, rd = ph.get("sender_drops"), ph.get("relay_drops")
            extra = {k: ph[k] for k in ("dups", "out_of_range", "refused", "wrong") if ph.get(k)}
            if ph.get("errors"):
                extra["errors"] = ph["errors"]
            if sd or rd or extra:
                any_drop = True
                print(f"  {r['impl']} {r['scenario']}/{name}: sender {sd}, relay {rd}, {extra}")
    if not any_drop:
        print("  none")
    for impl in ("ours", "curve", "raw"):
        last = [r for r in records if r["impl"] == impl and "sender_stats" in r]
        if last:
            r = last[-1]
            for side in ("sender", "relay"):
                st = r[f"{side}_stats"]
                drops = {k: v for k, v in st.items() if _dropish(k)}
                nonzero = {k: v for k, v in drops.items() if v}
                keys = (
                    "targeted_sent",
                    "remote_requests",
                    "adapter_direct_sent",
                    "adapter_published",
                    "adapter_direct_received",
                    "adapter_delivered",
                )
                traffic = {k: st[k] for k in keys if st.get(k)}
                print(
                    f"  {impl} {side} at the end: {len(drops)} drop counters, "
                    f"nonzero: {nonzero or 'none'}; traffic {traffic}"
                )
    print()
    parts = []
    for scenario, phase, label in ROWS:
        o, w = best(records, "ours", scenario, phase), best(records, "raw", scenario, phase)
        if o and w and w.get("rate") and phase != "paced":
            cpu = f", relay CPU/msg {o['relay_cpu_us'] / w['relay_cpu_us']:.2f}x" if w.get("relay_cpu_us") else ""
            parts.append(f"{label} {o['rate'] / w['rate']:.2f}x{cpu}")
    if parts:
        print("ours/raw (best undisturbed run of each): " + "; ".join(parts))
    curve_parts = []
    for scenario, phase, label in ROWS:
        c, o = best(records, "curve", scenario, phase), best(records, "ours", scenario, phase)
        if c and o and o.get("rate") and phase != "paced":
            cpu = (
                f", relay CPU/msg {c['relay_cpu_us'] / o['relay_cpu_us']:.2f}x, sender CPU/msg "
                f"{c['sender_cpu_us'] / o['sender_cpu_us']:.2f}x"
                if o.get("relay_cpu_us") and o.get("sender_cpu_us")
                else ""
            )
            curve_parts.append(f"{label} {c['rate'] / o['rate']:.2f}x{cpu}")
    if curve_parts:
        print("curve/ours, what CURVE costs (best undisturbed run of each): " + "; ".join(curve_parts))
    verdicts = []
    for scenario, phase, what in (("emit", "blast", "targeted emit"), ("room", "burst", "room fan-out")):
        o, w = best(records, "ours", scenario, phase), best(records, "raw", scenario, phase)
        if not o or not w or not w.get("rate"):
            verdicts.append(f"VERDICT {what}: n/a (not run, or a run failed)")
            continue
        ratio = o["rate"] / w["rate"]
        cpu = (o["relay_cpu_us"] / w["relay_cpu_us"]) if w.get("relay_cpu_us") else float("nan")
        rcv_bound = w.get("receiver_cpu_pct", 0) >= 90
        note = " [raw run receiver-bound: compare relay CPU/msg]" if rcv_bound else ""
        dist = " [DISTURBED]" if o.get("disturbed") or w.get("disturbed") else ""
        t = TARGETS[scenario]
        verdicts.append(
            f"VERDICT {what}: ours/raw delivered/s {ratio:.2f}x (target >= {t}x) {'PASS' if ratio >= t else 'MISS'}; "
            f"relay CPU/msg ours/raw {cpu:.2f}x; p99 {o['p99_ms']:.1f} vs {w['p99_ms']:.1f} ms{note}{dist}"
        )
    for scenario, phase, what in (("emit", "blast", "targeted emit"), ("room", "burst", "room fan-out")):
        c, o = best(records, "curve", scenario, phase), best(records, "ours", scenario, phase)
        if c is None or o is None or not o.get("rate"):
            continue
        ratio = c["rate"] / o["rate"]
        dist = " [DISTURBED]" if c.get("disturbed") or o.get("disturbed") else ""
        verdicts.append(
            f"VERDICT CURVE cost, {what}: curve/ours delivered/s {ratio:.2f}x, i.e. {1 / ratio:.2f}x slower "
            f"(target < 2x) {'PASS' if ratio > CURVE_TARGET else 'MISS'}; p99 {c['p99_ms']:.1f} vs "
            f"{o['p99_ms']:.1f} ms{dist}"
        )
    o, w = best(records, "ours", "req", "conc"), best(records, "raw", "req", "conc")
    if o:
        raw_txt = f"; raw {w['rate']:,.0f}/s, ours/raw {o['rate'] / w['rate']:.2f}x" if w and w.get("rate") else ""
        ok = o["rate"] >= REQ_TARGET
        verdicts.append(
            f"VERDICT server requests, {args.concurrency} in flight: ours {o['rate']:,.0f}/s (target >= "
            f"{REQ_TARGET:,.0f}/s) {'PASS' if ok else 'MISS'}{raw_txt}"
        )
    else:
        verdicts.append("VERDICT server requests: n/a (not run, or a run failed)")
    ours_lost = sum(
        max(0, ph.get("lost", 0)) + ph.get("dups", 0)
        for r in records
        if r["impl"] in ("ours", "curve")
        for ph in r.get("phases", {}).values()
    )
    verdicts.append(
        f"VERDICT lost (ours and curve, every phase): {ours_lost} (target 0) {'PASS' if ours_lost == 0 else 'MISS'}"
    )
    if total_lost - ours_lost:
        verdicts.append(f"note: the raw baseline lost {total_lost - ours_lost}")
    for r in records:
        if "error" in r:
            verdicts.append(f"FAILED {r['impl']} {r['scenario']}: {r['error']}")
    print(", ".join(f"{k} = {v}" for k, v in names.items()))
    return verdicts


def _dropish(key: str) -> bool:
    return any(w in key for w in ("drop", "misrouted", "bad", "error", "late", "unconfirmed", "unknown", "not_held"))


def print_profiles(profile_dir: str, names: dict[str, str], top: int) -> None:
    """Top functions by own time, per phase and node."""
    who = {v: k for k, v in names.items()}
    for path in sorted(Path(profile_dir).glob("*.pstats")):
        phase, _, node = path.stem.rpartition("-")
        print(f"\n== cProfile {phase} on node {who.get(node, node)} (inflated by profiling) ==")
        pstats.Stats(str(path), stream=sys.stdout).sort_stats("tottime").print_stats(top)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start both setups, run every scenario (interleaved), report; returns the records."""
    t_start = time.monotonic()
    profile_dir = tempfile.mkdtemp(prefix="cl-prof-") if args.profile else None
    env = {PROFILE_ENV: profile_dir} if profile_dir else {}
    cluster = LocalCluster(
        "cl_app:app",
        2,
        heartbeat_interval=1.0,
        ttl=5.0,
        cwd=BENCH,
        env=env,
        ready_timeout=30.0,
        graceful_teardown=True,
    )
    secure = LocalCluster(
        "cl_app:app",
        2,
        heartbeat_interval=1.0,
        ttl=5.0,
        cwd=BENCH,
        env=env,
        ready_timeout=30.0,
        graceful_teardown=True,
        curve=True,
    )
    raw_procs: list[subprocess.Popen[bytes]] = []
    records: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    try:
        ends: dict[str, Any] = {}
        for impl, nodes in (("ours", cluster), ("curve", secure)):
            if impl not in args.impls and impl != "ours":
                continue
            await nodes.start()
            a, b = nodes.nodes
            tag = "" if impl == "ours" else " (CURVE)"
            names.update({f"A{tag}": a.node_id, f"B{tag}": b.node_id})
            ends[impl] = {
                "data": b.url + "?role=user",
                "control": a.url + "?role=admin",
                "sender_pid": a.pid,
                "relay_pid": b.pid,
            }
            print(f"- {impl}: A pid {a.pid}, B pid {b.pid}", file=sys.stderr)
        if "raw" in args.impls:
            ends["raw"] = start_raw(raw_procs)
            print(f"- raw: {[p.pid for p in raw_procs]}", file=sys.stderr)
        for scenario in args.scenarios:
            for k in range(args.repeat):
                order = args.impls if k % 2 == 0 else args.impls[::-1]
                for impl in order:
                    rec = await asyncio.to_thread(bench_one, impl, scenario, ends, args)
                    rec["run"] = k + 1
                    records.append(rec)
    finally:
        for p in raw_procs:
            stop_process(p)
        await cluster.close(graceful=True, timeout=10.0)
        await secure.close(graceful=True, timeout=10.0)
    verdicts = print_report(records, args, names)
    print()
    for v in verdicts:
        print(v)
    if profile_dir:
        print_profiles(profile_dir, names, args.profile_top)
    print(f"(total {time.monotonic() - t_start:.1f} s)")
    return records


def main() -> int:
    """Parse options and run."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run with small counts (< 20 s)")
    p.add_argument("--scenarios", default="emit,room,req", help="comma-separated subset of emit,room,req")
    p.add_argument("--impls", default="raw,ours", help="comma-separated subset of raw,ours,curve")
    p.add_argument("--curve", action="store_true", help="also run ours with CURVE on (adds curve to --impls)")
    p.add_argument("--repeat", type=int, default=2, help="runs per (scenario, impl); the best undisturbed counts")
    p.add_argument("--emit-count", type=int, default=20_000, help="targeted emits back to back")
    p.add_argument("--emit-warmup", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64, help="the sender yields every this many emits")
    p.add_argument("--paced-count", type=int, default=5000, help="targeted emits of the paced phase")
    p.add_argument("--paced-rate", type=float, default=2500.0, help="targeted emits/s of the paced phase")
    p.add_argument("--members", type=int, default=100, help="room members on B")
    p.add_argument("--room-count", type=int, default=2000, help="broadcasts back to back")
    p.add_argument("--room-warmup", type=int, default=100)
    p.add_argument("--room-batch", type=int, default=16, help="the sender yields every this many broadcasts")
    p.add_argument("--room-paced-count", type=int, default=300, help="broadcasts of the paced phase")
    p.add_argument("--room-paced-rate", type=float, default=150.0, help="broadcasts/s of the paced phase")
    p.add_argument("--req-seq", type=int, default=2000, help="sequential server requests")
    p.add_argument("--req-count", type=int, default=20_000, help="server requests with --concurrency in flight")
    p.add_argument("--req-warmup", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0, help="time cap of every send/request loop")
    p.add_argument("--idle", type=float, default=2.0, help="receiver stops waiting after this long without a tick")
    p.add_argument("--run-timeout", type=float, default=120.0, help="cap on one receiver process")
    p.add_argument("--quiet-wait", type=float, default=3.0, help="wait up to this long for an idle machine")
    p.add_argument("--profile", action="store_true", help="cProfile nodes A and B during every phase of ours")
    p.add_argument("--profile-top", type=int, default=25, help="functions shown per profile")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()
    if args.quick:
        args.emit_count, args.emit_warmup, args.paced_count = 5000, 500, 1000
        args.room_count, args.room_warmup, args.room_paced_count, args.room_paced_rate = 300, 20, 50, 100.0
        args.req_seq, args.req_count, args.req_warmup = 500, 4000, 100
        args.quiet_wait, args.idle, args.repeat = 0.3, 1.0, 1
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.impls = [s for s in args.impls.split(",") if s]
    if args.curve and "curve" not in args.impls:
        args.impls.append("curve")
    if "curve" in args.impls and "ours" not in args.impls:
        args.impls.insert(0, "ours")  # the cost of CURVE is measured against ours without it
    impls = {"raw", "ours", "curve"}
    if set(args.scenarios) - {"emit", "room", "req"} or set(args.impls) - impls or not args.impls:
        p.error("bad --scenarios or --impls")
    args.repeat = max(1, min(args.repeat, 5))
    for name in ("emit_count", "room_count", "req_count", "req_seq", "paced_count"):
        setattr(args, name, max(0, min(getattr(args, name), 1_000_000)))
    records = asyncio.run(run(args))
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        config.update(python=platform.python_version(), cpus=os.cpu_count(), loadavg=os.getloadavg())
        Path(args.json).write_text(json.dumps({"config": config, "runs": records}, indent=2) + "\n")
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
