"""Transport benchmark: the fast transport vs websockets' own server, same gateway, asyncio and uvloop.

Runs `tr_server.py` (one superline.v1 gateway on `--transport fast` or `--transport ws`) as a process on
127.0.0.1 and measures, for each event loop, from the same run:
- request round trip: server CPU µs per echoed request with 1 and C clients (`rt_loadgen.py`, a separate
  process, as in request_roundtrip.py);
- fanout: server CPU µs per delivery of a tick fanned out to N receivers (`bc_receiver.py` holding all N
  clients in a separate process, as in broadcast.py): one `fanout` call per tick, which is
  `websockets.broadcast` on the ws transport and frame-once on the fast one;
- idle memory per connection: the server's RSS and, in a second server started with tracemalloc, its
  traced Python memory, before and after `hb_clients.py` opens M idle connections (after a gc).
Prints a table and the fast/ws ratios. Usage: python bench/transport_compare.py [--loops asyncio,uvloop]
[--clients 50] [--fanout 100,1000] [--idle 1000] [--rounds 2] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchlib import LineReader, format_table, run_synced, spawn, stop_process, wait_quiet, write_json_report
from broadcast import receiver_args
from request_roundtrip import run_loadgen

BENCH = Path(__file__).resolve().parent
SERVER = BENCH / "tr_server.py"
RECEIVER = BENCH / "bc_receiver.py"
IDLE_CLIENTS = BENCH / "hb_clients.py"
TRANSPORTS = ("ws", "fast")
START_TIMEOUT = 30.0

Record = dict[str, Any]


class Server:
    """A tr_server.py process (stdin piped for `mem`), stopped by PID."""

    def __init__(self, transport: str, loop: str, tracemalloc: bool = False) -> None:
        opts = ["--transport", transport, "--port", "0", "--max-fds", "8192"]
        opts += ["--uvloop"] if loop == "uvloop" else []
        opts += ["--tracemalloc"] if tracemalloc else []
        self.proc = spawn(str(SERVER), opts, stdin_pipe=True)
        self.reader = LineReader(self.proc)
        self.port = int(self.reader.expect("PORT ", START_TIMEOUT))

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/?role=user"

    def mem(self) -> tuple[int, int, int]:
        """(RSS bytes, traced bytes, connections) after a gc in the server."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"mem\n")
        self.proc.stdin.flush()
        rss, traced, conns = self.reader.expect("MEM ", 30).split()
        return int(rss), int(traced), int(conns)

    def stop(self) -> None:
        self.reader.close()
        stop_process(self.proc)


def roundtrip(transport: str, loop: str, clients: list[int], args: argparse.Namespace) -> list[Record]:
    """Server CPU per echoed request, one record per client count, on one server process."""
    out = []
    server = Server(transport, loop)
    try:
        for n in clients:
            wait_quiet(args.quiet_wait)
            print(f"- {loop} {transport}: round trip, {n} client(s)", file=sys.stderr, flush=True)
            rec: Record = {"loop": loop, "transport": transport, "measure": f"echo {n} client(s)"}
            try:
                result = run_loadgen(server.url(), server.proc.pid, n, args)
                rec.update(value=result["server_cpu_us_per_req"], unit="µs/req", rps=result["rps"])
                rec.update(other_cpu_pct=result["other_cpu_pct"], errors=result["errors"])
            except Exception as exc:
                rec["error"] = f"{type(exc).__name__}: {exc}"
            out.append(rec)
    finally:
        server.stop()
    return out


def fanout(transport: str, loop: str, n: int, args: argparse.Namespace) -> Record:
    """Server CPU per delivery of ticks fanned out to n receivers, on a fresh server process."""
    wait_quiet(args.quiet_wait)
    print(f"- {loop} {transport}: fanout to {n}", file=sys.stderr, flush=True)
    rec: Record = {"loop": loop, "transport": transport, "measure": f"fanout to {n}"}
    server = Server(transport, loop)
    try:
        line, cpu, wall = run_synced(
            str(RECEIVER),
            receiver_args(server.url(), n, args),
            {"server": server.proc.pid},
            ready_timeout=180.0,
            done_timeout=args.seconds + args.drain + args.idle + 60,
            result_timeout=args.drain + args.idle + 60,
        )
        result = json.loads(line)
        got = max(1, result["received"])
        rec.update(value=round(cpu["server"] * 1e6 / got, 3), unit="µs/delivery", received=result["received"])
        rec.update(lost=result.get("lost"), members=result.get("members"))
        rec["other_cpu_pct"] = round(100 * max(0.0, cpu["machine"] - cpu["server"] - cpu["child"]) / wall, 1)
        if result.get("members") != n:
            rec["error"] = f"room has {result.get('members')} members, expected {n}"
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
    return rec


def idle_memory(transport: str, loop: str, n: int, traced: bool) -> Record:
    """Bytes per idle connection: RSS delta, or (traced) tracemalloc delta, for n connections."""
    what = "traced" if traced else "RSS"
    print(f"- {loop} {transport}: idle memory ({what}), {n} connections", file=sys.stderr, flush=True)
    rec: Record = {"loop": loop, "transport": transport, "measure": f"idle {what} per conn ({n})"}
    server = Server(transport, loop, tracemalloc=traced)
    clients = None
    try:
        rss0, traced0, _ = server.mem()
        clients = spawn(str(IDLE_CLIENTS), ["--url", server.url(), "--clients", str(n), "--max-seconds", "120"])
        reader = LineReader(clients)
        ok, failed, _ = reader.expect("CONNECTED ", 120).split()
        reader.close()
        rss1, traced1, conns = server.mem()
        if int(ok) != n or conns != n:
            rec["error"] = f"{ok} connected, {failed} failed, server holds {conns}"
        delta = (traced1 - traced0) if traced else (rss1 - rss0)
        rec.update(value=round(delta / n / 1024, 2), unit="KB/conn")
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if clients is not None:
            stop_process(clients)
        server.stop()
    return rec


def best(records: list[Record]) -> Record:
    """Among successful repeats the least disturbed (least CPU used by other processes, in 5 % steps;
    then the lowest value), else the first failure."""
    ok = [r for r in records if "error" not in r]
    return min(ok, key=lambda r: (round(r.get("other_cpu_pct", 0.0) / 5), r["value"])) if ok else records[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--loops", default="asyncio,uvloop", help="server event loops to compare")
    add("--clients", type=int, default=50, help="clients of the concurrent round-trip scenario")
    add("--requests", type=int, default=100_000, help="measured requests per round-trip run")
    add("--seconds", type=float, default=3.0, help="time cap of each measured window")
    add("--warmup", type=int, default=3_000, help="warm-up requests per round-trip run")
    add("--fanout", default="100,1000", help="comma-separated receiver counts")
    add("--deliveries", type=int, default=300_000, help="measured deliveries per fanout run")
    add("--batch", type=int, default=10, help="ticks between yields of the fanout loop")
    add("--drain", type=float, default=15.0, help="cap on the server's wait for empty buffers")
    add("--idle", type=float, default=2.0, help="receiver gives up after this long without a tick")
    add("--payload", type=int, default=64, help="approximate tick payload in bytes")
    add("--idle-conns", type=int, default=1000, help="idle connections for the memory figure (0 = skip)")
    add("--rounds", type=int, default=2, help="repeats of every CPU measurement; the lowest counts")
    add("--quiet-wait", type=float, default=3.0, help="wait up to this long for an idle machine before a run")
    add("--loadgen-loop", choices=("uvloop", "asyncio"), default="uvloop", help="load generator loop")
    add("--receiver-loop", choices=("uvloop", "asyncio"), default="uvloop", help="fanout receiver loop")
    add("--json", metavar="PATH", help="also write every run as JSON")
    args = parser.parse_args()
    args.paced_deliveries, args.paced_seconds = 0.0, 0.0  # broadcast.receiver_args: no paced phase
    loops = [x for x in args.loops.split(",") if x]
    sizes = [int(x) for x in args.fanout.split(",") if x]
    runs: list[Record] = []
    for loop in loops:
        for rnd in range(args.rounds):
            for transport in TRANSPORTS if rnd % 2 == 0 else TRANSPORTS[::-1]:
                runs += roundtrip(transport, loop, [1, args.clients], args)
                runs += [fanout(transport, loop, n, args) for n in sizes]
        if args.idle_conns:
            for transport in TRANSPORTS:
                for traced in (False, True):
                    runs.append(idle_memory(transport, loop, args.idle_conns, traced))
    measures = list(dict.fromkeys(r["measure"] for r in runs))
    rows = []
    for loop in loops:
        for measure in measures:
            pick = {
                t: best([r for r in runs if r["loop"] == loop and r["measure"] == measure and r["transport"] == t])
                for t in TRANSPORTS
            }
            ws, fast = pick["ws"], pick["fast"]
            cells = [("FAILED" if "error" in r else f"{r['value']:g}") for r in (ws, fast)]
            ratio = "-" if "error" in ws or "error" in fast else f"{fast['value'] / max(ws['value'], 1e-9):.2f}x"
            other = "-" if "idle" in measure else f"{max(r.get('other_cpu_pct', 0.0) for r in (ws, fast)):.0f}"
            rows.append((loop, measure, ws.get("unit", ""), *cells, ratio, other))
    print("server CPU per message and idle memory per connection; lower is better; ratio = fast / ws")
    head = ("loop", "measure", "unit", "ws (websockets)", "fast", "fast/ws", "other CPU %")
    print(format_table(head, rows, left=3))
    print("(each cell: the least disturbed of --rounds runs; other CPU % = the larger of the two runs' load from")
    print(" unrelated processes, 100 = one core; idle memory is measured once)")
    failed = [r for r in runs if "error" in r]
    for r in failed:
        print(f"FAILED {r['loop']} {r['transport']} {r['measure']}: {r['error']}")
    write_json_report(args.json, args, runs=runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
