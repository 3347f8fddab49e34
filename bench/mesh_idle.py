"""The full mesh at rest, as real processes: idle CPU and gossip bytes per node per second.

Starts N node processes (default 32) of `mesh_app.py` on this machine with
`superline_zmq.testing.LocalCluster` (every node seeded with node 0, LAN timings: beat 1 s,
dead after 5 s), waits until every node sees every other alive, lets the joins settle, then
measures a window in which nothing happens but the cluster keeping itself together:

- **cpu %/node**: user + system CPU of each node process (/proc/<pid>/stat) over the
  window, as a percentage of one core; split into its main thread (the event loop: the
  gossip machine, Python) and the others (ZeroMQ's I/O thread: framing, ZMTP heartbeats);
- **gossip in B/s/node**: gossip bytes each node received (broadcasts on its SUB socket and
  direct messages on its ROUTER; each copy on the wire counts), from `mesh_app`'s counters;
- **gossip out B/s/node**: what each node handed its sockets (a broadcast counts once);
- **tcp B/s/node**: TCP payload bytes each node process sent on all its connections
  (`ss -tinp` `bytes_sent`): gossip plus ZeroMQ framing and ZMTP heartbeats;
- **busy %**: the whole machine's CPU use during the window (other work included), so a
  disturbed run shows.

Every figure is the mean over nodes, with min and max. Run it against another checkout
with `--src DIR` (nodes and this script then import `superline_zmq` from DIR), e.g. the
commit before constant-size beats:

    git archive 0e68e16 | tar -x -C /tmp/before
    python bench/mesh_idle.py --src /tmp/before
    python bench/mesh_idle.py                        # this checkout
    python bench/mesh_idle.py --nodes 16 --window 20 --json out.json

Every process started is killed by PID at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

BENCH = Path(__file__).resolve().parent


def _setup_path(src: str | None) -> None:
    root = str(Path(src).resolve()) if src else str(BENCH.parent)
    sys.path.insert(0, root)
    sys.path.insert(1, str(BENCH))


_BYTES_SENT = re.compile(r"bytes_sent:(\d+)")
_PID = re.compile(r"pid=(\d+)")


def tcp_bytes_sent(pids: set[int]) -> dict[tuple[int, str], int]:
    """``bytes_sent`` of every established TCP socket of ``pids``, keyed by (pid, local->peer)."""
    out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True, text=True, check=True).stdout
    found: dict[tuple[int, str], int] = {}
    lines = out.splitlines()
    for head, info in zip(lines[::2], lines[1::2], strict=False):
        m_pid, m_sent = _PID.search(head), _BYTES_SENT.search(info)
        if m_pid is None:
            continue
        pid = int(m_pid.group(1))
        if pid in pids:
            cols = head.split()
            found[(pid, f"{cols[2]}->{cols[3]}")] = int(m_sent.group(1)) if m_sent else 0
    return found


def main_thread_seconds(pid: int) -> float:
    """User + system CPU time of the process's main thread (the event loop)."""
    from benchlib import CLK_TCK

    with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _stats(values: list[float]) -> tuple[float, float, float]:
    return mean(values), min(values), max(values)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from benchlib import cpu_seconds, raise_fd_limit, system_busy_seconds

    from superline_zmq import ClusterTiming, connect
    from superline_zmq.testing import LocalCluster

    raise_fd_limit(4096)
    timing = ClusterTiming.lan() if args.timing == "lan" else ClusterTiming.local()
    cluster = LocalCluster(
        "mesh_app:app", args.nodes, timing=timing, cwd=str(BENCH), ready_timeout=args.ready_timeout
    )
    started = time.monotonic()
    await cluster.start()
    converged_in = time.monotonic() - started
    clients = []
    try:
        from mesh_app import api

        for node in cluster.nodes:
            clients.append(await connect(api, node.url, role="admin", open_timeout=10.0))
        await asyncio.sleep(args.settle)  # a bench: let the joins' pulls and syncs pass
        pids = {n.pid for n in cluster.nodes}

        async def sample() -> tuple[
            list[dict[str, float]], dict[int, tuple[float, float]], dict[tuple[int, str], int], float
        ]:
            gossip = [await c.call("gossip", timeout=10.0) for c in clients]
            cpu = {pid: (cpu_seconds(pid), main_thread_seconds(pid)) for pid in pids}
            return gossip, cpu, tcp_bytes_sent(pids), system_busy_seconds()

        g0, c0, t0, b0 = await sample()
        w0 = time.monotonic()
        await asyncio.sleep(args.window)
        g1, c1, t1, b1 = await sample()
        window = time.monotonic() - w0
        cpu = [100 * (c1[p][0] - c0[p][0]) / window for p in sorted(pids)]
        loop_cpu = [100 * (c1[p][1] - c0[p][1]) / window for p in sorted(pids)]
        gin = [(b["in_bytes"] - a["in_bytes"]) / (b["t"] - a["t"]) for a, b in zip(g0, g1, strict=True)]
        gout = [(b["out_bytes"] - a["out_bytes"]) / (b["t"] - a["t"]) for a, b in zip(g0, g1, strict=True)]
        msgs = [(b["in_msgs"] - a["in_msgs"]) / (b["t"] - a["t"]) for a, b in zip(g0, g1, strict=True)]
        per_pid: dict[int, int] = dict.fromkeys(pids, 0)
        for key, sent in t1.items():
            per_pid[key[0]] += sent - t0.get(key, 0)
        tcp = [per_pid[p] / window for p in sorted(pids)]
        return {
            "nodes": args.nodes,
            "timing": args.timing,
            "window_s": round(window, 2),
            "converged_in_s": round(converged_in, 1),
            "busy_pct": round(100 * (b1 - b0) / window, 1),
            "cpu_pct": [round(x, 2) for x in _stats(cpu)],
            "cpu_loop_pct": [round(x, 2) for x in _stats(loop_cpu)],
            "cpu_other_pct": [round(x, 2) for x in _stats([a - b for a, b in zip(cpu, loop_cpu, strict=True)])],
            "gossip_in_Bps": [round(x) for x in _stats(gin)],
            "gossip_out_Bps": [round(x) for x in _stats(gout)],
            "gossip_in_msgs_per_s": [round(x, 1) for x in _stats(msgs)],
            "tcp_sent_Bps": [round(x) for x in _stats(tcp)],
        }
    finally:
        for c in clients:
            try:
                await asyncio.wait_for(c.close(), 5.0)
            except Exception:
                pass
        await cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--window", type=float, default=30.0, help="measured seconds (default 30)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after convergence before measuring")
    parser.add_argument("--timing", choices=("lan", "local"), default="lan")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--src", default=None, help="a checkout to import superline_zmq from (default: this one)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    args = parser.parse_args()
    _setup_path(args.src)
    import superline_zmq

    result = {"source": str(Path(superline_zmq.__file__).resolve().parent.parent), **asyncio.run(measure(args))}
    print(f"{result['nodes']} nodes from {result['source']} ({result['timing']} timings), converged in "
          f"{result['converged_in_s']} s; {result['window_s']} s window, machine busy {result['busy_pct']} %")
    head = f"{'per node':22} {'mean':>9} {'min':>9} {'max':>9}"
    print(head)
    print("-" * len(head))
    for key, label in (
        ("cpu_pct", "cpu %"),
        ("cpu_loop_pct", "  main thread %"),
        ("cpu_other_pct", "  other threads %"),
        ("gossip_in_Bps", "gossip in B/s"),
        ("gossip_out_Bps", "gossip out B/s"),
        ("gossip_in_msgs_per_s", "gossip in msgs/s"),
        ("tcp_sent_Bps", "tcp sent B/s"),
    ):
        mean_, lo, hi = result[key]
        print(f"{label:22} {mean_:>9} {lo:>9} {hi:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
