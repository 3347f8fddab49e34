"""Shared helpers for the bench scripts: child processes, line I/O, /proc CPU time, percentiles, tables."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

CLK_TCK: int = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parent.parent


def use_checkout() -> None:
    """Make this checkout's `superline_zmq` importable when the scripts run as `python bench/x.py`."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(1, str(REPO_ROOT))


def install_loop(use_uvloop: bool) -> str:
    """Install uvloop as the event loop policy if asked; return the loop name in use."""
    if use_uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    return "asyncio"


def announce_port(port: int) -> None:
    """Print the `PORT <n>` line the orchestrator waits for."""
    print(f"PORT {port}", flush=True)


def add_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set `stop` on SIGTERM or SIGINT."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (all threads) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    # comm (field 2) may contain spaces or parens: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_seconds() -> float:
    """Machine-wide non-idle CPU time (user, nice, system, steal; all CPUs) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[7]) / CLK_TCK


def wait_quiet(max_wait: float, threshold: float = 0.15, sample: float = 0.25) -> float:
    """Wait up to `max_wait` s for machine-wide busy CPU under `threshold` CPUs; return the last load seen."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0 = system_busy_seconds()
        time.sleep(sample)
        load = (system_busy_seconds() - busy0) / sample
        if load < threshold or time.monotonic() >= deadline:
            return load


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence; nan if empty."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values), max(1, math.ceil(q / 100.0 * len(sorted_values))))
    return float(sorted_values[rank - 1])


class LineReader:
    """Reads stdout lines of a child process with a timeout (no threads)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._proc = proc
        self._fd = proc.stdout.fileno()
        self._buf = b""
        self._eof = False
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)

    def readline(self, timeout: float) -> str | None:
        """Next line without its newline, or None on EOF; TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            if self._eof:
                if not self._buf:
                    return None
                line, self._buf = self._buf, b""
                return line.decode()
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                raise TimeoutError(f"no line from pid {self._proc.pid} within {timeout:.0f}s")
            chunk = os.read(self._fd, 65536)
            if chunk:
                self._buf += chunk
            else:
                self._eof = True
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def expect(self, prefix: str, timeout: float) -> str:
        """Skip lines until one starts with `prefix`; return the rest of it stripped."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(max(0.0, deadline - time.monotonic()))
            if line is None:
                code = self._proc.poll()
                raise RuntimeError(f"pid {self._proc.pid} closed stdout (exit {code}) before {prefix!r}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
            print(f"  [pid {self._proc.pid}] {line}", file=sys.stderr)

    def close(self) -> None:
        """Unregister the selector (the pipe itself is closed with the process)."""
        self._sel.close()


def spawn(
    script: str, args: Sequence[str], stdin_pipe: bool = False, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `python <script> <args>` with the current interpreter; stdout piped, stderr inherited.

    `env` adds variables to (or overrides them in) the parent's environment.
    """
    return subprocess.Popen(
        [sys.executable, script, *args],
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env={**os.environ, **env} if env else None,
        start_new_session=True,  # keep Ctrl-C in the terminal from reaching children directly
    )


def stop_process(proc: subprocess.Popen[bytes], deadline: float = 5.0) -> int:
    """SIGTERM the process by PID, SIGKILL it if still alive after `deadline` s; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(deadline)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()
    return proc.returncode


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to `needed` (capped at the hard limit); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


async def wait_parent(tag: str) -> None:
    """Child side of `run_synced`: print `tag` and block until the parent writes a line on stdin."""
    print(tag, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def run_synced(
    script: str,
    args: Sequence[str],
    watch: Mapping[str, int],
    ready_timeout: float,
    done_timeout: float,
    result_timeout: float = 30.0,
) -> tuple[str, dict[str, float], float]:
    """Run a child that prints READY / DONE (waiting for a stdin line at each) and then one JSON line.

    The parent reads the CPU time of every process in `watch` (name -> pid), of the child itself (as
    "child") and of the whole machine (as "machine", all CPUs busy), right after READY and right after DONE,
    so the deltas cover only the measured window.
    Returns (the JSON line, CPU seconds per name over the window, wall seconds of the window). The child
    is stopped by PID in every case.
    """
    proc = spawn(script, args, stdin_pipe=True)
    reader = LineReader(proc)
    pids = {**watch, "child": proc.pid}
    assert proc.stdin is not None
    try:
        reader.expect("READY", ready_timeout)
        cpu0, t0 = {k: cpu_seconds(p) for k, p in pids.items()}, time.monotonic()
        cpu0["machine"] = system_busy_seconds()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        reader.expect("DONE", done_timeout)
        cpu1, t1 = {k: cpu_seconds(p) for k, p in pids.items()}, time.monotonic()
        cpu1["machine"] = system_busy_seconds()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        line = "{" + reader.expect("{", result_timeout)
        proc.wait(result_timeout)
    finally:
        reader.close()
        stop_process(proc)
    return line, {k: cpu1[k] - cpu0[k] for k in cpu0}, t1 - t0


def format_table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 2) -> str:
    """A plain-text table: the first `left` columns left-aligned, the rest right-aligned."""
    lines = [tuple(str(c) for c in head), *(tuple(str(c) for c in r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for k, line in enumerate(lines):
        cells = zip(line, widths, strict=True)
        out.append("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(cells)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


async def serve_until_stopped(srv: Any, port: int, transport: str | None = None) -> None:
    """Listen with a superline server on 127.0.0.1:`port`, announce the port, run until SIGTERM/SIGINT.

    `transport` ("fast", "websockets", "asgi"; None = the library's default) goes to `srv.listen`.
    """
    stop = asyncio.Event()
    add_stop_signals(asyncio.get_running_loop(), stop)
    await srv.listen("127.0.0.1", port, transport=transport)
    try:
        announce_port(srv.port)
        await stop.wait()
    finally:
        await srv.close()


async def serve_asgi_until_stopped(app: Any, port: int, max_message_size: int = 1 << 20) -> None:
    """Serve a plain ASGI 3 `app` with uvicorn on 127.0.0.1:`port` until SIGTERM/SIGINT.

    Uses the library's own in-process uvicorn hosting (`superline_zmq.transport.uvicorn.serve`, what
    `srv.listen(transport="asgi")` runs), so a raw ASGI app or `socketio.ASGIApp` gets exactly the uvicorn
    config of the `ours-asgi` server: uvicorn's `ws="auto"` (websockets-sansio when `websockets` is
    installed), log level warning, no access log, no lifespan, no uvicorn pings, no permessage-deflate,
    `ws_max_size` = 1 MiB + 1024. The event loop is the one already running (`--uvloop` or asyncio).
    """
    use_checkout()
    from superline_zmq.transport.uvicorn import serve

    stop = asyncio.Event()
    add_stop_signals(asyncio.get_running_loop(), stop)
    listener = await serve(app, "127.0.0.1", port, max_message_size=max_message_size)
    try:
        ws_impl = getattr(listener._server.config, "ws_protocol_class", None)
        print(f"asgi: uvicorn ws implementation {getattr(ws_impl, '__name__', ws_impl)}", file=sys.stderr)
        announce_port(listener.addresses[0][1])
        await stop.wait()
    finally:
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), 10)


def rss_bytes() -> int:
    """Resident set size of this process, from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def socket_fds() -> int:
    """Sockets this process holds open (listeners and the loop's self-pipe included), from /proc/self/fd."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:  # closed meanwhile (the listdir's own fd)
            pass
    return count


def install_mem_command(count: Callable[[], int] = socket_fds) -> None:
    """Answer `mem` lines on stdin with `MEM <rss bytes> <traced bytes> <count()>`, after a gc.

    `count` defaults to the open socket descriptors. Traced is 0 unless tracemalloc runs. For the
    idle-memory measurements (idle_memory.py, transport_compare.py); stdin must be a pipe.
    """
    import gc
    import tracemalloc

    loop = asyncio.get_running_loop()

    def on_stdin() -> None:
        line = sys.stdin.readline()
        if not line:
            loop.remove_reader(sys.stdin)
        elif line.strip() == "mem":
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
            print(f"MEM {rss_bytes()} {traced} {count()}", flush=True)

    loop.add_reader(sys.stdin, on_stdin)


TRANSPORTS = ("fast", "websockets", "asgi")


def server_cli(
    doc: str,
    main: Callable[..., Coroutine[Any, Any, None]],
    *,
    max_fds: int | None = None,
    transport: bool = False,
) -> None:
    """The shared command line of the bench servers: ``--port``, ``--uvloop``, ``--mem``, ``--tracemalloc``,
    ``--max-fds`` (default `max_fds`, else 4096).

    With `transport` (the library's servers) it also takes ``--transport fast|websockets|asgi`` (default
    fast) and calls ``main(port, transport)``; otherwise ``main(port)``.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--mem", action="store_true", help="answer `mem` on stdin (idle_memory.py)")
    parser.add_argument("--tracemalloc", action="store_true", help="trace Python allocations (for `mem`)")
    if transport:
        parser.add_argument("--transport", choices=TRANSPORTS, default="fast", help="srv.listen transport")
    parser.add_argument("--max-fds", type=int, default=max_fds or 4096, help="raise RLIMIT_NOFILE to this")
    args = parser.parse_args()
    raise_fd_limit(args.max_fds)
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()

    async def run() -> None:
        if args.mem:
            install_mem_command()
        await (main(args.port, args.transport) if transport else main(args.port))

    install_loop(args.uvloop)
    asyncio.run(run())


async def sio_connect(ws: Any) -> str:
    """The Socket.IO 5 connect over an open Engine.IO 4 WebSocket: open packet, `40`, wait for `40{...}`
    (answering pings); returns the session id. Capped at 20 s."""
    async with asyncio.timeout(20):
        opened = await ws.recv()
        if not isinstance(opened, str) or not opened.startswith("0"):
            raise RuntimeError(f"expected an Engine.IO open packet, got {opened!r}")
        await ws.send("40")
        while True:
            msg = await ws.recv()
            if msg == "2":
                await ws.send("3")
            elif isinstance(msg, str) and msg.startswith("40"):
                return str(json.loads(msg[2:] or "{}").get("sid", ""))


def write_json_report(path: str | None, args: Any, **parts: Any) -> None:
    """Write `parts` as JSON to `path` (if given), under a `config` of the command line, Python, CPUs and load."""
    if not path:
        return
    import platform

    config = {k: v for k, v in vars(args).items() if k != "json"}
    config.update(python=platform.python_version(), cpus=os.cpu_count(), loadavg=os.getloadavg())
    Path(path).write_text(json.dumps({"config": config, **parts}, indent=2, ensure_ascii=False) + "\n")
