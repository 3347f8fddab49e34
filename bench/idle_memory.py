"""Idle memory per connection: the full superline_zmq server on each transport, beside the raw ceilings.

For each server (default raw, ours, ours-ws, ours-asgi, asgi-raw: the round-trip servers of
request_roundtrip.py, started with `--mem`) and each event loop, it reads the server's RSS after a gc (stdin
`mem`, see benchlib.install_mem_command), has `hb_clients.py` (a separate process) open M idle connections
that answer pings, reads it again, and reports the delta per connection. A second server process started with
`--tracemalloc` gives the traced Python memory per connection the same way. The connection count is the
server's socket-descriptor delta, so it must equal M. Under ASGI, uvicorn's own per-connection memory counts:
it is the server's process. (sio is left out: hb_clients.py speaks superline.v1.)
Usage: python bench/idle_memory.py [--servers raw,ours,ours-ws,ours-asgi,asgi-raw] [--conns 1000]
[--loops asyncio,uvloop] [--json F]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import LineReader, format_table, spawn, stop_process, write_json_report
from request_roundtrip import SERVERS, server_url

BENCH = Path(__file__).resolve().parent
IDLE_CLIENTS = BENCH / "hb_clients.py"
DEFAULT = ("raw", "ours", "ours-ws", "ours-asgi", "asgi-raw")
START_TIMEOUT = 30.0

Record = dict[str, Any]


class Server:
    """A bench server started with `--mem` (stdin piped), stopped by PID."""

    def __init__(self, name: str, loop: str, n: int, traced: bool) -> None:
        script, extra, self.protocol = SERVERS[name]
        opts = ["--port", "0", "--mem", "--max-fds", str(n + 512), *extra]
        opts += ["--uvloop"] if loop == "uvloop" else []
        opts += ["--tracemalloc"] if traced else []
        self.proc = spawn(str(script), opts, stdin_pipe=True)
        self.reader = LineReader(self.proc)
        self.port = int(self.reader.expect("PORT ", START_TIMEOUT))

    def mem(self) -> tuple[int, int, int]:
        """(RSS bytes, traced bytes, socket fds) after a gc in the server."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"mem\n")
        self.proc.stdin.flush()
        rss, traced, socks = self.reader.expect("MEM ", 30).split()
        return int(rss), int(traced), int(socks)

    def stop(self) -> None:
        self.reader.close()
        stop_process(self.proc)


def measure(name: str, loop: str, n: int, traced: bool, settle: float) -> Record:
    """Bytes per idle connection (RSS delta, or the tracemalloc delta) for n connections to one server."""
    what = "traced" if traced else "RSS"
    print(f"- {loop} {name}: idle {what}, {n} connections", file=sys.stderr, flush=True)
    rec: Record = {"loop": loop, "server": name, "measure": what, "conns": n}
    server = clients = None
    try:
        server = Server(name, loop, n, traced)
        rss0, traced0, socks0 = server.mem()
        url = server_url(server.port, server.protocol)
        clients = spawn(str(IDLE_CLIENTS), ["--url", url, "--clients", str(n), "--max-seconds", "120"])
        reader = LineReader(clients)
        ok, failed, _ = reader.expect("CONNECTED ", 120).split()
        reader.close()
        time.sleep(settle)
        rss1, traced1, socks1 = server.mem()
        held = socks1 - socks0
        if int(ok) != n or held != n:
            rec["error"] = f"{ok} connected, {failed} failed, server holds {held} more sockets"
        delta = (traced1 - traced0) if traced else (rss1 - rss0)
        rec.update(kb_per_conn=round(delta / n / 1024, 2), held=held)
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if clients is not None:
            stop_process(clients)
        if server is not None:
            server.stop()
    return rec


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--servers", default=",".join(DEFAULT), help=f"comma-separated subset of: {','.join(DEFAULT)}")
    add("--conns", type=int, default=1000, help="idle connections per measurement")
    add("--loops", default="asyncio,uvloop", help="server event loops")
    add("--settle", type=float, default=1.0, help="seconds to wait after the clients connected")
    add("--json", metavar="PATH", help="also write every run as JSON")
    args = parser.parse_args()
    names = [s for s in args.servers.split(",") if s]
    if unknown := set(names) - set(DEFAULT):
        parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    loops = [x for x in args.loops.split(",") if x]
    runs = [
        measure(name, loop, args.conns, traced, args.settle) for loop in loops for name in names for traced in (0, 1)
    ]
    rows = []
    for loop in loops:
        for name in names:
            cells = {}
            for r in runs:
                if r["loop"] == loop and r["server"] == name:
                    cells[r["measure"]] = "FAILED" if "error" in r else f"{r['kb_per_conn']:.1f}"
            rows.append((loop, name, cells.get("RSS", "-"), cells.get("traced", "-")))
    print(f"idle memory per connection, {args.conns} connections (after a gc in the server); lower is better")
    print(format_table(("loop", "server", "RSS KB/conn", "traced KB/conn"), rows))
    print("(RSS: whole process, C and allocator slack included; traced: Python allocations (tracemalloc),")
    print(" in a second server process)")
    failed = [r for r in runs if "error" in r]
    for r in failed:
        print(f"FAILED {r['loop']} {r['server']} {r['measure']}: {r['error']}")
    write_json_report(args.json, args, runs=runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
