"""``superline-zmq``: run an app as a cluster node, a local cluster, or the built-in demo.

Commands::

    superline-zmq run MODULE:APP --ws HOST:PORT --bind ENDPOINT [--seed ENDPOINT ...] [--advertise ENDPOINT] [--json]
    superline-zmq cluster MODULE:APP --nodes N [--host 127.0.0.1] [--ws-port BASE]
    superline-zmq demo [--nodes 3] [--clients 24] [--duration S] [--interval 1.0]

Every command takes ``--timing local|lan`` (a :class:`~superline_zmq.ClusterTiming`
preset, or a JSON object of its fields): ``run`` defaults to ``lan`` (beat 1 s, dead
after 5 s), ``cluster`` and ``demo``, which run on loopback, to ``local`` (beat 0.2 s,
dead after 1 s). ``--heartbeat-interval``, ``--ttl`` and ``--forget-after`` override the
preset's values.

``run`` imports ``MODULE`` (the current directory is on ``sys.path``) and takes ``APP``:
a :class:`~superline_zmq.SocketServer`, or a zero-argument callable (sync or async)
returning one. It swaps in the ZeroMQ adapter, listens, and prints one JSON line to
stdout once serving (``pub`` and ``router``: the endpoints peers are told, i.e.
``--advertise``/``--advertise-pub`` when given)::

    {"event": "ready", "node_id": "...", "ws": "ws://127.0.0.1:8080/", "pub": "tcp://...",
     "router": "tcp://...", "pid": 1234}

With ``--advertise`` and ``--json`` it first prints ``{"event": "bound", "pub": ...,
"router": ...}`` with the bound endpoints, as soon as the sockets are bound (before
joining), so a harness that forwards the advertised endpoints
(:mod:`superline_zmq.testing.faults`) knows where to.

With ``--json`` it also prints ``{"event": "member", "node": ..., "alive": ...}`` whenever
its view of the cluster changes, ``{"event": "left", "node": ...}`` when a member is
gone, and ``stopping``/``stopped`` lines; without it, human-readable logs go to stderr.
SIGTERM or SIGINT closes the server gracefully (peers learn of the leave at once) and
exits 0; a shutdown that takes longer than ``--shutdown-timeout`` exits 1, and a second
signal exits 1 at once.

Exit codes: 0 clean stop, 1 runtime failure, 2 bad usage or an APP that is not a server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from superline_zmq.adapter import Adapter
from superline_zmq.server import SocketServer
from superline_zmq.timing import PRESETS, ClusterTiming

if TYPE_CHECKING:
    from superline_zmq.adapters.zeromq import ZeroMQAdapter
    from superline_zmq.testing.cluster import LocalCluster

log = logging.getLogger("superline_zmq.cli")

PROG = "superline-zmq"

#: How often ``run`` looks at the adapter's member list.
MEMBER_POLL = 0.05
#: Hard limits of ``cluster`` and ``demo`` (everything they start is bounded).
MAX_NODES = 16
MAX_CLIENTS = 500


class UsageError(Exception):
    """Bad arguments or an APP that does not resolve to a server (exit code 2)."""


# ---------------------------------------------------------------------- output
class Output:
    """One-line JSON events on stdout (``--json``) or log records on stderr.

    A closed stdout (the parent died) never crashes the node: output goes to
    ``/dev/null`` from then on and ``broken`` is set.
    """

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.broken = False

    def line(self, obj: dict[str, Any]) -> None:
        """Print ``obj`` as one JSON line on stdout, flushed."""
        if self.broken:
            return
        try:
            sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.broken = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())

    def event(self, kind: str, message: str, **fields: Any) -> None:
        """A JSON event line with ``--json``, else ``message`` logged at INFO."""
        if self.json_mode:
            self.line({"event": kind, **fields})
        else:
            log.info("%s", message)


def _setup_logging(json_mode: bool, level: str | None) -> None:
    lvl = getattr(logging, (level or ("WARNING" if json_mode else "INFO")).upper(), logging.INFO)
    logging.basicConfig(
        level=lvl, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
    )


# ---------------------------------------------------------------------- app loading
def _describe(obj: object) -> str:
    if obj is None:
        return "None"
    if inspect.ismodule(obj):
        return f"the module {obj.__name__!r}"
    if inspect.isclass(obj):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    kind = type(obj)
    return f"a {kind.__module__}.{kind.__qualname__} object ({obj!r:.80})"


def load_target(spec: str) -> object:
    """Import ``MODULE:ATTR`` (``ATTR`` may be dotted) with the current directory on ``sys.path``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:APP (e.g. myapp:app), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UsageError(f"cannot import module {module_name!r} (searched {cwd} and sys.path): {exc}") from None
        raise UsageError(f"importing module {module_name!r} failed: {exc}\n{traceback.format_exc()}") from None
    except Exception as exc:
        raise UsageError(
            f"importing module {module_name!r} raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        ) from None
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


async def resolve_server(obj: object, spec: str) -> SocketServer:
    """``obj`` if it is a server, else what calling it (and awaiting the result) gives."""
    if isinstance(obj, SocketServer):
        return obj
    if not callable(obj):
        raise UsageError(
            f"{spec} is {_describe(obj)}; expected a SocketServer or a zero-argument callable (sync or async) "
            "returning one"
        )
    try:
        result = obj()
        if inspect.isawaitable(result):
            result = await result
    except TypeError as exc:
        raise UsageError(f"calling {spec}() with no arguments failed ({_describe(obj)}): {exc}") from None
    except Exception as exc:
        raise UsageError(f"{spec}() raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}") from None
    if not isinstance(result, SocketServer):
        raise UsageError(f"{spec}() returned {_describe(result)}; expected a SocketServer")
    return result


def parse_hostport(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> ``(host, port)``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _positive(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not f > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return f


def _bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"expected {lo}..{hi}, got {n}")
        return n

    return parse


# ---------------------------------------------------------------------- signals
class Stopper:
    """First SIGTERM/SIGINT: ask for a graceful stop. Second one: ``on_force()``, then exit 1 at once."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason = ""
        #: Called (each once, errors ignored) on the second signal, before exiting.
        self.on_force: list[Callable[[], None]] = []
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                self._installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on the main thread / Windows
                pass

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        self._installed.clear()

    def stop(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.event.is_set():
            log.error("second %s: exiting now", sig.name)
            for hook in self.on_force:
                with contextlib.suppress(Exception):
                    hook()
            os._exit(1)
        self.stop(sig.name)


def _watchdog(seconds: float) -> None:
    """Exit the process with 1 if it still runs ``seconds`` from now (a hung shutdown)."""

    def fire() -> None:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"{PROG}: shutdown did not finish within {seconds:.0f} s; exiting\n")
            sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


# ---------------------------------------------------------------------- run
async def _run(args: argparse.Namespace) -> int:
    out = Output(args.json)
    host, port = args.ws
    try:
        srv = await resolve_server(load_target(args.app), args.app)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from superline_zmq.adapters.zeromq import zeromq_adapter

    try:
        adapter = await zeromq_adapter(
            bind=args.bind,
            seeds=list(args.seed),
            pub_bind=args.pub_bind,
            advertise=args.advertise,
            advertise_pub=args.advertise_pub,
            timing=args.timing,
        )
    except ValueError as exc:  # bad endpoints or timings
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # zmq.ZMQError: an endpoint cannot be bound
        print(f"{PROG}: error: could not start the ZeroMQ adapter on {args.bind}: {exc}", file=sys.stderr)
        return 1
    endpoints = dict(adapter.endpoints)
    bound = adapter.bound_endpoints
    if bound != endpoints:
        out.event("bound", f"bound pub {bound['pub']}, router {bound['router']}", **bound)
    if not args.json:
        log.info("seeds %s, loop %s", ", ".join(args.seed) or "none", type(asyncio.get_running_loop()).__module__)
    return await serve_node(
        srv,
        adapter,
        app=args.app,
        host=host,
        port=port,
        out=out,
        ready={"pub": endpoints.get("pub"), "router": endpoints.get("router")},
        shutdown_timeout=args.shutdown_timeout,
        watch=lambda stopper: _watch_members(adapter, out, stopper, args.watch_parent),
    )


async def serve_node(
    srv: SocketServer,
    adapter: Adapter,
    *,
    app: str,
    host: str,
    port: int,
    out: Output,
    ready: Mapping[str, Any],
    shutdown_timeout: float,
    watch: Callable[[Stopper], Coroutine[Any, Any, None]] | None = None,
    prog: str = PROG,
) -> int:
    """Serve ``srv`` on ``adapter`` until SIGTERM/SIGINT (or ``watch`` ends), then close it; the exit code.

    The shared tail of every node runner (``superline-zmq run``, the Redis adapter's): attach the
    adapter, listen, print the ``ready`` line (``ready`` adds fields), and shut down gracefully
    within ``shutdown_timeout`` or exit 1 (a watchdog makes sure of it).
    """
    try:
        srv.use_adapter(adapter)
    except RuntimeError as exc:
        print(f"{prog}: error: {app}: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(adapter.close(), shutdown_timeout)
        return 2
    stopper = Stopper()
    stopper.install()
    try:
        await srv.listen(host, port)
    except Exception as exc:
        print(f"{prog}: error: could not listen on {host}:{port}: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(srv.close(), shutdown_timeout)
        return 1
    out.line({"event": "ready", "node_id": srv.node_id, "ws": srv.url, **ready, "pid": os.getpid()})
    if not out.json_mode:
        log.info("node %s serving %s (%s)", srv.node_id, srv.url, ", ".join(f"{k} {v}" for k, v in ready.items()))
    tasks: set[asyncio.Task[Any]] = {asyncio.create_task(stopper.event.wait())}
    if watch is not None:
        tasks.add(asyncio.create_task(watch(stopper)))
    failed = False
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("a node watcher failed: %r", outcome)
                failed = True
                stopper.stop("internal error")
    _watchdog(shutdown_timeout + 5.0)
    out.event(
        "stopping", f"stopping ({stopper.reason}): closing connections and leaving the cluster", reason=stopper.reason
    )
    try:
        await asyncio.wait_for(srv.close(), shutdown_timeout)
    except TimeoutError:
        print(f"{prog}: error: shutdown took longer than {shutdown_timeout} s", file=sys.stderr)
        out.event("stopped", "stopped (timeout)", code=1)
        return 1
    out.event("stopped", "stopped", code=1 if failed else 0)
    return 1 if failed else 0


async def _watch_members(adapter: ZeroMQAdapter, out: Output, stopper: Stopper, parent: int | None) -> None:
    """Report changes of the adapter's member view; stop when the watched parent is gone."""
    seen: dict[str, bool] = {}
    while True:
        current = {str(n): bool(alive) for n, alive in adapter.members().items()}
        for node, alive in current.items():
            if seen.get(node) != alive:
                out.event("member", f"member {node} is {'alive' if alive else 'DEAD'}", node=node, alive=alive)
        for node in seen.keys() - current.keys():
            out.event("left", f"member {node} left", node=node)
        seen = current
        if parent is not None and os.getppid() != parent:
            stopper.stop("parent exited")
        if out.broken and out.json_mode:
            stopper.stop("stdout closed")
        await asyncio.sleep(MEMBER_POLL)


# ---------------------------------------------------------------------- cluster
def _check_host(host: str, allow_remote: bool) -> None:
    from superline_zmq.testing.cluster import is_loopback

    if not allow_remote and not is_loopback(host):
        raise UsageError(f"host {host!r} is not a loopback address; pass --allow-remote to use it anyway")


def _kill_children(cluster: LocalCluster) -> Callable[[], None]:
    def kill() -> None:
        for pid in cluster.pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    return kill


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


async def _cluster(args: argparse.Namespace) -> int:
    from superline_zmq.testing.cluster import ClusterError, LocalCluster

    try:
        _check_host(args.host, args.allow_remote)
        load_target(args.app)  # fail fast, with the import error, before starting anything
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    cluster = LocalCluster(
        args.app,
        args.nodes,
        timing=args.timing,
        cwd=os.getcwd(),
        ready_timeout=args.ready_timeout,
        seeds=args.seeds,
        host=args.host,
        ws_port=args.ws_port,
        allow_remote=args.allow_remote,
        extra_args=["--log-level", args.log_level] if args.log_level else (),
    )
    stopper = Stopper()
    stopper.on_force.append(_kill_children(cluster))
    stopper.install()
    try:
        starting = asyncio.create_task(cluster.start())
        stop_wait = asyncio.create_task(stopper.event.wait())
        await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            print(f"{PROG}: {stopper.reason} while starting: stopping", file=sys.stderr)
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            stop_wait.cancel()
            return 0
        try:
            starting.result()
        except ClusterError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            stop_wait.cancel()
            return 1
        rows = [[str(n.index), n.node_id, n.url, n.endpoints.get("router", ""), str(n.pid)] for n in cluster.nodes]
        print(_table(rows, ["node", "node_id", "ws", "router", "pid"]), flush=True)
        print(f"{args.nodes} node(s) ready and converged; Ctrl-C to stop", flush=True)
        watch = asyncio.create_task(_watch_children(cluster))
        await stop_wait
        watch.cancel()
        print(f"{PROG}: {stopper.reason}: stopping {len(cluster.nodes)} node(s)", file=sys.stderr, flush=True)
    finally:
        await cluster.close(graceful=True, timeout=args.stop_timeout)
    failed = [n for n in cluster.nodes if n.returncode != 0]
    for n in failed:
        print(f"{PROG}: node {n.index} (pid {n.pid}) exited with code {n.returncode}", file=sys.stderr)
    if not failed:
        print(f"{PROG}: all {len(cluster.nodes)} node(s) stopped", file=sys.stderr)
    return 1 if failed else 0


async def _watch_children(cluster: LocalCluster) -> None:
    """Log (once each) nodes that exit while the cluster runs, and nodes' views of dead peers."""
    reported: set[int] = set()
    while True:
        for n in cluster.nodes:
            if n.gone and n.index not in reported:
                reported.add(n.index)
                print(
                    f"{PROG}: node {n.index} (pid {n.pid}) exited with code {n.returncode}\n{n.stderr(10)}",
                    file=sys.stderr,
                    flush=True,
                )
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------------- demo
async def _demo(args: argparse.Namespace) -> int:
    from superline_zmq.demo import run_demo

    stopper = Stopper()
    stopper.install()
    return await run_demo(
        nodes=args.nodes,
        clients=args.clients,
        duration=args.duration,
        interval=args.interval,
        timing=args.timing,
        seed=args.seed,
        stop=stopper.event,
        on_force=stopper.on_force,
    )


# ---------------------------------------------------------------------- main
def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop for ``--loop auto|asyncio|uvloop`` (auto: uvloop when installed)."""
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise UsageError("--loop uvloop: uvloop is not installed (pip install 'superline-zmq[uvloop]')") from None
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or force one",
    )
    common.add_argument("--log-level", default=None, help="logging level (default INFO, WARNING with --json)")

    gossip = argparse.ArgumentParser(add_help=False)
    gossip.add_argument("--timing", default=None, metavar="|".join(PRESETS),
                        help="timing preset, or a JSON object of ClusterTiming fields "
                        "(default: lan for run, local for cluster and demo)")  # fmt: skip
    gossip.add_argument("--heartbeat-interval", type=_positive, default=None, metavar="S", help="seconds between beats")
    gossip.add_argument("--ttl", type=_positive, default=None, metavar="S", help="a member unheard for S is dead")
    gossip.add_argument("--forget-after", type=_positive, default=None, metavar="S",
                        help="a member unheard for S is forgotten (default: twice the ttl)")  # fmt: skip

    parser = argparse.ArgumentParser(prog=PROG, description="Typed WebSocket servers clustered over ZeroMQ.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common, gossip], help="run MODULE:APP as one cluster node")
    run.add_argument("app", metavar="MODULE:APP", help="a SocketServer, or a zero-arg (async) callable returning one")
    run.add_argument("--ws", type=parse_hostport, default=("127.0.0.1", 0), metavar="HOST:PORT",
                     help="WebSocket listen address (port 0: any free port; default 127.0.0.1:0)")  # fmt: skip
    run.add_argument("--bind", default="tcp://127.0.0.1:0", metavar="ENDPOINT",
                     help="ZeroMQ router bind endpoint (default tcp://127.0.0.1:0)")  # fmt: skip
    run.add_argument("--pub-bind", default=None, metavar="ENDPOINT", help="ZeroMQ pub bind endpoint")
    run.add_argument("--advertise", default=None, metavar="ENDPOINT",
                     help="router endpoint peers are told to connect to, when it differs from --bind "
                     "(Docker, NAT, a proxy); --bind may then be a wildcard")  # fmt: skip
    run.add_argument("--advertise-pub", default=None, metavar="ENDPOINT",
                     help="pub endpoint peers are told (default with --advertise: its host, bound port)")  # fmt: skip
    run.add_argument("--seed", action="append", default=[], metavar="ENDPOINT",
                     help="router endpoint of an existing member (repeatable)")  # fmt: skip
    run.add_argument("--json", action="store_true", help="JSON event lines on stdout")
    run.add_argument("--shutdown-timeout", type=_positive, default=10.0, metavar="S",
                     help="graceful shutdown limit before exiting 1 (default 10)")  # fmt: skip
    run.add_argument("--watch-parent", type=int, default=None, help=argparse.SUPPRESS)

    cl = sub.add_parser("cluster", parents=[common, gossip], help="run MODULE:APP as N local node processes")
    cl.add_argument("app", metavar="MODULE:APP")
    cl.add_argument("--nodes", type=_bounded_int(1, MAX_NODES), default=3, help="number of nodes (default 3)")
    cl.add_argument("--host", default="127.0.0.1", help="address of every socket (default 127.0.0.1)")
    cl.add_argument("--ws-port", type=_bounded_int(0, 65535), default=0, metavar="BASE",
                    help="node k listens on BASE+k (default 0: any free port)")  # fmt: skip
    cl.add_argument("--seeds", choices=("first", "chain"), default="first",
                    help="seed every node with node 0 (first) or node k with node k-1 (chain)")  # fmt: skip
    cl.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    cl.add_argument("--ready-timeout", type=_positive, default=30.0, metavar="S")
    cl.add_argument("--stop-timeout", type=_positive, default=10.0, metavar="S")

    demo = sub.add_parser("demo", parents=[common, gossip], help="a chat app on a local cluster with simulated users")
    demo.add_argument("--nodes", type=_bounded_int(1, MAX_NODES), default=3)
    demo.add_argument("--clients", type=_bounded_int(0, MAX_CLIENTS), default=24)
    demo.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: Ctrl-C)")
    demo.add_argument("--interval", type=_positive, default=1.0, metavar="S", help="display refresh (default 1)")
    demo.add_argument("--seed", type=int, default=None, help="random seed of the simulated clients")
    return parser


def _defaults(args: argparse.Namespace) -> None:
    """Resolve ``--timing`` and the flags overriding it into ``args.timing`` (UsageError if inconsistent)."""
    spec = args.timing if args.timing is not None else ("local" if args.command in ("cluster", "demo") else "lan")
    try:
        preset = ClusterTiming.from_spec(spec)
        ttl = args.ttl
        if ttl is None and args.heartbeat_interval is not None:
            ttl = max(preset.ttl, 3 * args.heartbeat_interval)  # a slower beat alone stretches the ttl
        timing = preset.override(heartbeat_interval=args.heartbeat_interval, ttl=ttl, forget_after=args.forget_after)
    except ValueError as exc:
        raise UsageError(f"--timing: {exc}") from None
    args.timing = timing
    args.heartbeat_interval, args.ttl = timing.heartbeat_interval, timing.ttl


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``superline-zmq``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        _defaults(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(getattr(args, "json", False), args.log_level)
    try:
        factory = loop_factory(args.loop)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    commands: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "run": _run,
        "cluster": _cluster,
        "demo": _demo,
    }
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(commands[args.command](args))
    except KeyboardInterrupt:  # before the signal handlers were installed
        return 130


if __name__ == "__main__":
    sys.exit(main())
