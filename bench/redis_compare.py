"""Cross-node delivery over one redis-server: superline_zmq + its Redis adapter vs python-socketio + AsyncRedisManager.

Two node processes per system, A and B, share one redis-server that this script starts on a free loopback port
(persistence off, in a temporary directory). 100 WebSocket clients (one receiver process, `rd_receiver.py`)
join room "bench" on node B; a control client on node A starts a send loop there:

- **room**: A broadcasts `count` ticks to the room (every one crosses Redis once and fans out to the 100 members
  on B): cross-node room deliveries/s;
- **direct**: A emits `count` ticks to single connections on B, round-robin (superline: `srv.to_conn(id).emit`;
  Socket.IO: `sio.emit(..., to=sid)`): cross-node targeted emits/s.

Every tick carries a per-receiver sequence number: lost = expected - received (gaps, duplicates and reordering
are counted too). Server CPU comes from /proc (utime+stime of A, B and redis-server over the measured window,
bracketed by READY/DONE; see benchlib.run_synced). Both systems run on uvloop (ours through the adapter's node
runner, python-socketio on aiohttp), with the same raw `websockets` clients.

    python bench/redis_compare.py            # both systems, both scenarios, ~1 min on an idle 2-core box
    python bench/redis_compare.py --quick    # a quarter of the work
    python bench/redis_compare.py --systems ours --modes direct --json out.json

Before starting it waits (up to --wait-others seconds, default 300) while another benchmark (`bench/` in a
command line) is running. It needs `redis-server` on PATH, and python-socketio with aiohttp
(`pip install python-socketio aiohttp`) for the Socket.IO side. Exit code 1 if a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import LineReader, format_table, run_synced, spawn, stop_process, wait_quiet

HERE = Path(__file__).resolve().parent
TARGET = 3.0
#: A run during which other processes used more than this much CPU (% of one core) counts as disturbed.
DISTURBED = 15.0


def other_benchmarks() -> list[str]:
    """Command lines of other running processes that look like benchmarks (`bench/` in them)."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if "bench/" in cmd and "redis_compare" not in cmd:
            found.append(f"{entry}: {cmd[:160]}")
    return found


def wait_for_other_benchmarks(limit: float) -> None:
    deadline = time.monotonic() + limit
    others = other_benchmarks()
    while others:
        if time.monotonic() >= deadline:
            print(f"warning: other benchmarks still running after {limit:.0f} s; going ahead:", file=sys.stderr)
            for line in others:
                print(f"  {line}", file=sys.stderr)
            return
        print(f"waiting for {len(others)} other benchmark process(es) to finish ...", file=sys.stderr)
        time.sleep(5)
        others = other_benchmarks()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server on 127.0.0.1 (no persistence), stopped by PID."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            sys.exit("redis-server not found: apt-get install redis-server")
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        sys.exit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        exe = shutil.which("redis-server") or "redis-server"
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
        return next((w[2:] for w in out.split() if w.startswith("v=")), "?")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """One node process of either system; `url` is its WebSocket base URL."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_ours(redis_url: str, prefix: str) -> Node:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "superline_zmq_redis.node", "rd_ours_app:app", "--url", redis_url, "--prefix", prefix,
         "--json", "--loop", "uvloop"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=str(HERE), env=env, start_new_session=True,
    )  # fmt: skip
    reader = LineReader(proc)
    try:
        ready = json.loads("{" + reader.expect("{", 30))
    finally:
        reader.close()
    return Node(proc, ready["ws"])


def start_sio(redis_url: str) -> Node:
    proc = spawn(str(HERE / "rd_sio_server.py"), ["--redis", redis_url, "--uvloop"])
    reader = LineReader(proc)
    try:
        port = int(reader.expect("PORT ", 30))
    finally:
        reader.close()
    return Node(proc, f"ws://127.0.0.1:{port}/")


def run_best(system: str, mode: str, a: Node, b: Node, redis: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    """Run once, again (up to --retries times) while disturbed; the least disturbed run wins."""
    runs: list[dict[str, Any]] = []
    for attempt in range(1 + args.retries):
        wait_quiet(args.quiet_wait)
        r = run_one(system, mode, a, b, redis, args)
        r["attempt"] = attempt + 1
        runs.append(r)
        if r["other_cpu_pct"] <= DISTURBED:
            break
        again = ", running it again" if attempt < args.retries else ""
        print(f"  {system} {mode}: disturbed (other CPU {r['other_cpu_pct']} %){again}", flush=True)
    best = min(runs, key=lambda r: r["other_cpu_pct"])
    best["disturbed"] = best["other_cpu_pct"] > DISTURBED
    best["runs"] = len(runs)
    return best


def run_one(system: str, mode: str, a: Node, b: Node, redis: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    count = args.room_count if mode == "room" else args.direct_count
    rargs = [
        "--system", system, "--mode", mode, "--url-a", a.url, "--url-b", b.url, "--clients", str(args.clients),
        "--count", str(count), "--warmup", str(max(1, count // 10)), "--seconds", str(args.seconds), "--sync",
    ]  # fmt: skip
    watch = {"A": a.pid, "B": b.pid, "redis": redis.proc.pid}
    line, cpu, wall = run_synced(
        str(HERE / "rd_receiver.py"), rargs, watch, ready_timeout=180, done_timeout=args.seconds * 3 + 60
    )
    result: dict[str, Any] = json.loads(line)
    result["cpu_s"] = {k: round(v, 3) for k, v in cpu.items()}
    result["window_s"] = round(wall, 3)
    ours = sum(cpu[k] for k in ("A", "B", "redis", "child"))
    result["other_cpu_pct"] = round(max(0.0, cpu["machine"] - ours) / wall * 100, 1) if wall > 0 else 0.0
    return result


def row(r: dict[str, Any]) -> list[Any]:
    sent = max(1, r["sent"])
    cpu = r["cpu_s"]
    per = lambda k: f"{cpu[k] / sent * 1e6:.1f}"  # noqa: E731
    rate = r["deliveries_per_s"] if r["mode"] == "room" else r["emits_per_s"]
    unit = "deliveries/s" if r["mode"] == "room" else "emits/s"
    return [
        r["system"], f"{r['mode']} x{r['clients']}" if r["mode"] == "room" else "to_conn",
        r["sent"], r["received"], r["lost"], r["gaps"] + r["dup_or_reordered"], f"{rate:,.0f} {unit}",
        per("A"), per("B"), per("redis"), f"{(cpu['A'] + cpu['B']) / sent * 1e6:.1f}",
        f"{(cpu['A'] + cpu['B']) / max(1, r['received']) * 1e6:.2f}",
        f"{cpu['B'] / r['window_s'] * 100:.0f}", f"{cpu['child'] / r['window_s'] * 100:.0f}", r["p50_ms"], r["p99_ms"],
        f"{r['other_cpu_pct']}{' *' if r.get('disturbed') else ''}",
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="ours,sio", help="comma-separated: ours, sio (default both)")
    parser.add_argument("--modes", default="room,direct", help="comma-separated: room, direct (default both)")
    parser.add_argument("--clients", type=int, default=100, help="room members on node B (default 100)")
    parser.add_argument("--room-count", type=int, default=4000, help="broadcasts in the room run (default 4000)")
    parser.add_argument("--direct-count", type=int, default=40000, help="emits in the to_conn run (default 40000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="time cap of each send loop (default 30)")
    parser.add_argument("--quick", action="store_true", help="a quarter of the counts, no retries")
    parser.add_argument("--retries", type=int, default=1, help="extra attempts for a disturbed run (default 1)")
    parser.add_argument("--quiet-wait", type=float, default=3.0, help="wait up to S s for an idle machine per run")
    parser.add_argument("--wait-others", type=float, default=300.0, help="wait up to S s for other benchmarks")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write every result as JSON")
    args = parser.parse_args()
    if args.quick:
        args.room_count = max(1, args.room_count // 4)
        args.direct_count = max(1, args.direct_count // 4)
        args.retries = 0
    systems = [s for s in args.systems.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    wait_for_other_benchmarks(args.wait_others)

    redis = RedisServer()
    results: list[dict[str, Any]] = []
    failed = False
    t0 = time.monotonic()
    try:
        from importlib.metadata import version

        import redis as redis_py

        print(
            f"redis-server {redis.version()} on 127.0.0.1:{redis.port}; redis-py {redis_py.__version__}; "
            f"python-socketio {version('python-socketio')}; aiohttp {version('aiohttp')}; "
            f"{args.clients} clients on node B; nodes on uvloop; {os.cpu_count()} CPUs",
            flush=True,
        )
        for system in systems:
            nodes: list[Node] = []
            try:
                for _ in range(2):
                    ours = system == "ours"
                    nodes.append(start_ours(redis.url, f"bench{os.getpid()}") if ours else start_sio(redis.url))
                a, b = nodes
                for mode in modes:
                    try:
                        r = run_best(system, mode, a, b, redis, args)
                    except Exception as exc:
                        failed = True
                        print(f"{system}/{mode}: FAILED: {exc!r}", file=sys.stderr, flush=True)
                        continue
                    results.append(r)
                    got = f"{r['received']}/{r['expected']}"
                    print(f"  {system:4s} {mode:6s} done: {got} in {r['elapsed_s']} s", flush=True)
            finally:
                for node in nodes:
                    stop_process(node.proc)
    finally:
        redis.stop()

    head = ["system", "scenario", "sent", "delivered", "lost", "disorder", "rate", "A µs/emit", "B µs/emit",
            "redis µs/emit", "A+B µs/emit", "A+B µs/delivery", "B CPU %", "recv CPU %", "p50 ms", "p99 ms",
            "other CPU %"]  # fmt: skip
    print()
    print(format_table(head, [row(r) for r in results]))
    print()
    by = {(r["system"], r["mode"]): r for r in results}
    for mode in modes:
        o, s = by.get(("ours", mode)), by.get(("sio", mode))
        if o is None or s is None:
            continue
        key = "deliveries_per_s" if mode == "room" else "emits_per_s"
        ratio = o[key] / max(1e-9, s[key])
        cpu_ratio = ((s["cpu_s"]["A"] + s["cpu_s"]["B"]) / max(1, s["sent"])) / max(
            1e-12, (o["cpu_s"]["A"] + o["cpu_s"]["B"]) / max(1, o["sent"])
        )
        ok = ratio >= TARGET and o["lost"] == 0 and o["gaps"] == 0 and o["dup_or_reordered"] == 0
        what = "room deliveries/s" if mode == "room" else "to_conn emits/s"
        flag = " (a run was disturbed: other CPU > 15 %)" if o["disturbed"] or s["disturbed"] else ""
        print(
            f"{what:18s} ours/socketio = {ratio:5.2f}x (target >= {TARGET:.0f}x, ours lost {o['lost']}, "
            f"socketio lost {s['lost']}); server CPU per emit socketio/ours = {cpu_ratio:4.1f}x  "
            f"{'PASS' if ok else 'MISS'}{flag}"
        )
    print(f"\ntotal {time.monotonic() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
