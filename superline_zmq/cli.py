"""``superline-zmq``: run an app as a cluster node, a local cluster, or the built-in demo.

Commands::

    superline-zmq run MODULE:APP [--adapter zeromq|redis] [--ws HOST:PORT] [--bind ENDPOINT] [--seed ENDPOINT ...]
                                 [--advertise ENDPOINT] [--metrics HOST:PORT] [--json] [--config FILE]
                                 [--curve-cert NAME.key_secret --curve-allow DIR]
    superline-zmq cluster MODULE:APP --nodes N [--host 127.0.0.1] [--ws-port BASE]
                      [--curve | --curve-cert NAME.key_secret --curve-allow DIR]
    superline-zmq demo [--nodes 3] [--clients 24] [--duration S] [--interval 1.0] [--no-curve]
    superline-zmq keygen NAME [--dir DIR]
    superline-zmq --version

**Configuration.** Every option is also read from an environment variable
(``SUPERLINE_`` + its name: ``--log-level`` is ``SUPERLINE_LOG_LEVEL``, the ``MODULE:APP``
argument ``SUPERLINE_APP``; ``--help`` names each) and from a TOML file (``--config FILE``
or ``SUPERLINE_CONFIG``; keys are the long flags without dashes: ``log-level = "debug"``,
``seed = ["tcp://10.0.0.1:7001"]``). A flag beats the environment, which beats the file,
which beats the default. An invalid value, from wherever it came, is refused with a
message naming its source and exit code 2. See :mod:`superline_zmq.config`.

Every command takes ``--timing local|lan`` (a :class:`~superline_zmq.ClusterTiming`
preset, or a JSON object of its fields): ``run`` defaults to ``lan`` (beat 1 s, dead
after 5 s), ``cluster`` and ``demo``, which run on loopback, to ``local`` (beat 0.2 s,
dead after 1 s). ``--heartbeat-interval``, ``--ttl`` and ``--forget-after`` override the
preset's values.

``run`` imports ``MODULE`` (the current directory is on ``sys.path``) and takes ``APP``:
a :class:`~superline_zmq.SocketServer`, or a zero-argument callable (sync or async)
returning one. It swaps in the adapter (``--adapter zeromq``, the default, or ``redis``
with ``--redis-url`` and the Redis adapter installed: ``pip install superline-zmq-redis``;
``superline-zmq-redis`` is the same command), listens, answers ``/healthz`` and
``/readyz`` on the WebSocket port (``--no-health`` turns that off), serves ``/metrics``,
``/healthz`` and ``/readyz`` on ``--metrics HOST:PORT`` (extra ``superline-zmq[metrics]``),
and prints one JSON line to stdout once serving (``pub`` and ``router``: the endpoints
peers are told, i.e. ``--advertise``/``--advertise-pub`` when given)::

    {"event": "ready", "node_id": "...", "ws": "ws://127.0.0.1:8080/", "pub": "tcp://...",
     "router": "tcp://...", "pid": 1234}

With ``--advertise`` and ``--json`` it first prints ``{"event": "bound", "pub": ...,
"router": ...}`` with the bound endpoints, as soon as the sockets are bound (before
joining), so a harness that forwards the advertised endpoints
(:mod:`superline_zmq.testing.faults`) knows where to.

(``"metrics": "http://..."`` too with ``--metrics``; the Redis adapter's line has
``"prefix"`` instead of ``pub``/``router``.) With ``--json`` it also prints
``{"event": "member", "node": ..., "alive": ...}`` whenever its view of the cluster
changes, ``{"event": "left", "node": ...}`` when a member is gone, and
``stopping``/``stopped`` lines; without it, human-readable logs go to stderr
(``--log-format json``: one JSON object per line). SIGTERM or SIGINT drains: new
connections are refused with 503 (``/readyz`` too), requests in flight may finish for up
to ``--drain`` seconds (10; sooner once none is left), then connections close with 1001,
the node leaves the cluster (peers learn at once) and exits 0. A close that takes longer
than ``--shutdown-timeout`` after the drain exits 1, and a second signal exits 1 at once.

CURVE (docs/security.md). ``--curve-cert`` (this node's ``NAME.key_secret``) and
``--curve-allow`` (a directory of ``*.key`` public certificates) make every cluster
socket authenticate and encrypt; the ``ready`` line then has ``"key"`` (this node's key
fingerprint). SIGHUP re-reads the allow directory without a restart and prints
``{"event": "reloaded", "added": [...], "removed": [...], "evicted": [...], "allowed": N}``
(or ``reload_failed`` with the ``error``; the old list stays in force). ``keygen`` writes
a pyzmq-compatible certificate pair; ``cluster --curve`` and ``demo`` run on throwaway
keys in a temporary directory, removed when they stop.

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

from superline_zmq import config
from superline_zmq._version import __version__
from superline_zmq.adapter import Adapter
from superline_zmq.health import HealthPaths
from superline_zmq.logs import JsonFormatter
from superline_zmq.server import SocketServer
from superline_zmq.timing import PRESETS, ClusterTiming

if TYPE_CHECKING:
    from superline_zmq.adapters.zeromq import ZeroMQAdapter
    from superline_zmq.curve import CurveConfig
    from superline_zmq.ops_http import OpsServer
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


class RuntimeFailure(Exception):
    """A node could not start for a reason other than its arguments (exit code 1)."""


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


#: ``--log-level`` values.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: The format of human-readable log lines.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def _setup_logging(json_mode: bool, level: str | None, fmt: str = "text") -> None:
    """Log to stderr at ``level`` (default INFO, WARNING with ``--json``), as text or one JSON object a line."""
    lvl = getattr(logging, (level or ("WARNING" if json_mode else "INFO")).upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=lvl, handlers=[handler])  # a no-op where logging is already set up (embedding, tests)


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


def _log_level(value: str) -> str:
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in options:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(options)}, got {value!r}")
        return value

    parse.__name__ = "choice"
    return parse


def _seconds(value: str) -> float:
    """A number of seconds, 0 or more."""
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not f >= 0 or f == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {value!r}")
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
#: Options that belong to one adapter: setting one (flag, env or file) with the other is refused.
ADAPTER_OPTIONS: dict[str, tuple[str, ...]] = {
    "zeromq": (
        "bind",
        "pub_bind",
        "advertise",
        "advertise_pub",
        "seed",
        "timing",
        "ttl",
        "forget_after",
        "curve_cert",
        "curve_allow",
    ),
    "redis": ("redis_url", "redis_prefix", "redis_presence_ttl", "redis_liveness_poll"),
}


class NodeSetup:
    """What an adapter's runner hands ``serve_node``: the adapter, extra ``ready`` fields, a watcher."""

    def __init__(
        self,
        adapter: Adapter,
        ready: Mapping[str, Any],
        watch: Callable[[Stopper], Coroutine[Any, Any, None]] | None,
    ) -> None:
        self.adapter = adapter
        self.ready = ready
        self.watch = watch


async def _zeromq_node(args: argparse.Namespace, out: Output) -> NodeSetup:
    from superline_zmq.adapters.zeromq import zeromq_adapter

    curve = _curve_config(args)
    try:
        adapter = await zeromq_adapter(
            bind=args.bind,
            seeds=list(args.seed),
            pub_bind=args.pub_bind,
            advertise=args.advertise,
            advertise_pub=args.advertise_pub,
            timing=args.timing,
            curve=curve,
        )
    except ValueError as exc:  # bad endpoints or timings
        raise UsageError(str(exc)) from None
    except Exception as exc:  # zmq.ZMQError: an endpoint cannot be bound
        raise RuntimeFailure(f"could not start the ZeroMQ adapter on {args.bind}: {exc}") from None
    endpoints = dict(adapter.endpoints)
    bound = adapter.bound_endpoints
    if bound != endpoints:
        out.event("bound", f"bound pub {bound['pub']}, router {bound['router']}", **bound)
    ready: dict[str, Any] = {"pub": endpoints.get("pub"), "router": endpoints.get("router")}
    if curve is not None:
        ready["key"] = curve.fingerprint
    if not args.json:
        log.info("seeds %s, loop %s", ", ".join(args.seed) or "none", type(asyncio.get_running_loop()).__module__)
    # installed before anything can be reloaded: a SIGHUP must never kill a CURVE node
    reload = _install_reload() if curve is not None else None

    async def watch(stopper: Stopper) -> None:
        tasks = [_watch_members(adapter, out, stopper, args.watch_parent)]
        if reload is not None:
            tasks.append(_watch_reloads(adapter, out, reload))
        try:
            await asyncio.gather(*tasks)
        finally:
            if reload is not None:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    return NodeSetup(adapter, ready, watch)


async def _redis_node(args: argparse.Namespace, out: Output) -> NodeSetup:
    try:  # a separate distribution: imported only when asked for
        redis_adapter = importlib.import_module("superline_zmq_redis").redis_adapter
    except ImportError as exc:
        raise UsageError(
            f"--adapter redis needs the Redis adapter, which is not installed ({exc}): pip install superline-zmq-redis"
        ) from None
    try:
        adapter = await redis_adapter(
            args.redis_url,
            prefix=args.redis_prefix,
            presence_ttl=args.redis_presence_ttl,
            heartbeat_interval=args.heartbeat_interval,
            liveness_poll=args.redis_liveness_poll,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:  # redis-py's ConnectionError / AuthenticationError, a timeout
        raise RuntimeFailure(f"could not reach Redis at {args.redis_url}: {exc!r}") from None
    return NodeSetup(
        adapter,
        {"prefix": args.redis_prefix},
        lambda stopper: _watch_members(adapter, out, stopper, args.watch_parent),
    )


#: ``--adapter`` name -> the coroutine building that adapter from the options.
ADAPTERS: dict[str, Callable[[argparse.Namespace, Output], Coroutine[Any, Any, NodeSetup]]] = {
    "zeromq": _zeromq_node,
    "redis": _redis_node,
}


async def _run(args: argparse.Namespace) -> int:
    out = Output(args.json)
    host, port = args.ws
    try:
        srv = await resolve_server(load_target(args.app), args.app)
        node = await ADAPTERS[args.adapter](args, out)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeFailure as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return await serve_node(
        srv,
        node.adapter,
        app=args.app,
        host=host,
        port=port,
        out=out,
        ready=node.ready,
        shutdown_timeout=args.shutdown_timeout,
        watch=node.watch,
        metrics=args.metrics,
        health=args.health,
        drain=args.drain,
    )


def _curve_config(args: argparse.Namespace) -> CurveConfig | None:
    """``--curve-cert`` and ``--curve-allow`` as a :class:`~superline_zmq.curve.CurveConfig` (both or neither)."""
    cert, allow = getattr(args, "curve_cert", None), getattr(args, "curve_allow", None)
    if cert is None and allow is None:
        return None
    if cert is None or allow is None:
        raise UsageError("--curve-cert and --curve-allow go together (this node's NAME.key_secret and a directory)")
    from superline_zmq.curve import CurveConfig

    try:
        return CurveConfig.from_files(cert, allow)
    except ValueError as exc:  # CurveKeyError
        raise UsageError(str(exc)) from None


def _install_reload() -> asyncio.Event:
    """SIGHUP sets the returned event (the watcher reloads the allow list)."""
    event = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # pragma: no cover - Windows / not main thread
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, event.set)
    return event


async def _watch_reloads(adapter: ZeroMQAdapter, out: Output, reload: asyncio.Event) -> None:
    """On every SIGHUP, re-read the allow directory; a failure is reported and the old list stays."""
    while True:
        await reload.wait()
        reload.clear()
        try:
            change = await adapter.reload_allowed()
        except Exception as exc:  # an unreadable directory or key: keep serving with the old list
            log.error("SIGHUP: could not reload the CURVE allow list (the old one stays in force): %s", exc)
            out.event("reload_failed", f"reload failed: {exc}", error=str(exc))
            continue
        out.event(
            "reloaded",
            f"allow list reloaded: {change.allowed} key(s) allowed, added {sorted(change.added) or 'none'}, "
            f"removed {sorted(change.removed) or 'none'}, evicted {list(change.evicted) or 'none'}",
            added=sorted(change.added),
            removed=sorted(change.removed),
            evicted=list(change.evicted),
            allowed=change.allowed,
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
    metrics: tuple[str, int] | None = None,
    health: bool = True,
    drain: float = 0.0,
) -> int:
    """Serve ``srv`` on ``adapter`` until SIGTERM/SIGINT (or ``watch`` ends), then close it; the exit code.

    The shared tail of every node runner: attach the adapter, answer the health paths on
    the WebSocket port (``health``), start the operations port (``metrics``: ``/metrics``,
    ``/healthz``, ``/readyz``), listen, print the ``ready`` line (``ready`` adds fields),
    and on the first SIGTERM/SIGINT drain for up to ``drain`` seconds (new connections
    refused, requests in flight finish), then close within ``shutdown_timeout`` or exit 1
    (a watchdog makes sure of it). A second signal exits 1 at once.
    """
    try:
        srv.use_adapter(adapter)
    except RuntimeError as exc:
        print(f"{prog}: error: {app}: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(adapter.close(), shutdown_timeout)
        return 2
    if health:
        srv.health_paths = srv.health_paths or HealthPaths()
    else:
        srv.health_paths = None
    ops: OpsServer | None = None
    extra: dict[str, Any] = {}
    if metrics is not None:
        from superline_zmq.ops_http import OpsServer

        try:
            ops = OpsServer(srv)
            await ops.start(*metrics)
        except ImportError as exc:
            print(f"{prog}: error: --metrics: {exc}", file=sys.stderr)
            await _close_quietly(srv, adapter, shutdown_timeout)
            return 2
        except OSError as exc:
            print(f"{prog}: error: could not serve metrics on {metrics[0]}:{metrics[1]}: {exc}", file=sys.stderr)
            await _close_quietly(srv, adapter, shutdown_timeout)
            return 1
        extra["metrics"] = ops.url + "/metrics"
    stopper = Stopper()
    stopper.install()
    try:
        await srv.listen(host, port)
    except Exception as exc:
        print(f"{prog}: error: could not listen on {host}:{port}: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(srv.close(), shutdown_timeout)
        if ops is not None:
            await ops.close()
        return 1
    out.line({"event": "ready", "node_id": srv.node_id, "ws": srv.url, **ready, **extra, "pid": os.getpid()})
    if not out.json_mode:
        fields = {**ready, **extra}
        log.info("node %s serving %s (%s)", srv.node_id, srv.url, ", ".join(f"{k} {v}" for k, v in fields.items()))
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
    _watchdog(drain + shutdown_timeout + 5.0)
    conns, in_flight = len(srv.connections), srv.in_flight()
    if drain > 0:
        message = (
            f"stopping ({stopper.reason}): draining for up to {drain:g} s: new connections refused (503), "
            f"{in_flight} request(s) in flight on {conns} connection(s); then closing them (1001) and leaving"
        )
    else:
        message = f"stopping ({stopper.reason}): closing connections and leaving the cluster"
    out.event("stopping", message, reason=stopper.reason, drain=drain, connections=conns, in_flight=in_flight)
    try:
        try:
            await asyncio.wait_for(srv.close(drain=drain), drain + shutdown_timeout)
        except TimeoutError:
            print(f"{prog}: error: shutdown took longer than {drain + shutdown_timeout:g} s", file=sys.stderr)
            out.event("stopped", "stopped (timeout)", code=1)
            return 1
    finally:
        if ops is not None:
            await ops.close()
    out.event("stopped", "stopped", code=1 if failed else 0)
    return 1 if failed else 0


async def _close_quietly(srv: SocketServer, adapter: Adapter, timeout: float) -> None:
    """Undo ``use_adapter`` before the server started: close the adapter (and the server)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(srv.close(), timeout)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(adapter.close(), timeout)


def _member_view(adapter: Adapter) -> dict[str, bool]:
    """The adapter's members (others) with their liveness: ``members()`` as a dict or a set of live ones."""
    members = getattr(adapter, "members", None)
    if members is None:
        return {}
    view = members()
    if isinstance(view, Mapping):
        return {str(n): bool(alive) for n, alive in view.items()}
    return {str(n): True for n in view}


async def _watch_members(adapter: Adapter, out: Output, stopper: Stopper, parent: int | None) -> None:
    """Report changes of the adapter's member view; stop when the watched parent is gone."""
    seen: dict[str, bool] = {}
    while True:
        current = _member_view(adapter)
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
        if args.curve and (args.curve_cert or args.curve_allow):
            raise UsageError("--curve makes throwaway keys: do not combine it with --curve-cert/--curve-allow")
        curve_args: list[str] = []
        if _curve_config(args) is not None:  # checked here, used by every node
            curve_args = ["--curve-cert", args.curve_cert, "--curve-allow", args.curve_allow]
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
        extra_args=[
            *curve_args,
            *(["--log-level", args.log_level] if args.log_level else []),
            *(["--log-format", args.log_format] if args.log_format != "text" else []),
        ],
        curve=args.curve,
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
        rows = [
            [str(n.index), n.node_id, n.url, n.endpoints.get("router", ""), n.key or "-", str(n.pid)]
            for n in cluster.nodes
        ]
        print(_table(rows, ["node", "node_id", "ws", "router", "key", "pid"]), flush=True)
        if cluster.keys is not None:
            print(f"CURVE on: throwaway keys in {cluster.keys.root} (removed on exit)", flush=True)
        elif curve_args:
            print(f"CURVE on: every node uses {args.curve_cert}, allowing {args.curve_allow}", flush=True)
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
        curve=not args.no_curve,
    )


# ---------------------------------------------------------------------- keygen
def _keygen(args: argparse.Namespace) -> int:
    """Write ``NAME.key`` and ``NAME.key_secret`` (pyzmq's format) into ``--dir``."""
    from superline_zmq.curve import CurveConfig, write_certificate

    try:
        public, secret = write_certificate(args.name, args.dir)
    except (ValueError, FileExistsError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, FileExistsError) else 2
    except OSError as exc:
        print(f"{PROG}: error: cannot write into {args.dir}: {exc}", file=sys.stderr)
        return 1
    key = CurveConfig.from_files(secret, public.parent).fingerprint
    print(f"{public}\tpublic: copy it into the allow directory of every node that admits this one")
    print(f"{secret}\tsecret (mode 0600): this node's --curve-cert; never copy it elsewhere")
    print(f"key fingerprint {key}")
    return 0


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


def build_parser(prog: str = PROG) -> config.LayeredParser:
    """The command line: one table of options per command; each also reads ``SUPERLINE_*`` and ``--config``."""
    P = config.LayeredParser
    epilog = (
        "Every option can also be set by the environment variable shown in brackets, or in a TOML file "
        "(--config FILE or $SUPERLINE_CONFIG) under the option's long name without dashes, e.g. "
        'log-level = "debug" or seed = ["tcp://10.0.0.1:7001"]. A flag beats the environment, '
        "which beats the file, which beats the default."
    )
    common = P(add_help=False)
    common.add_argument("--config", metavar="FILE", layered=False,
                        help="read options from this TOML file [env SUPERLINE_CONFIG]")  # fmt: skip
    common.add_argument("--loop", type=_choice("auto", "asyncio", "uvloop"), default="auto",
                        metavar="auto|asyncio|uvloop",
                        help="event loop: uvloop when installed (auto, the default), or force one")  # fmt: skip
    common.add_argument("--log-level", type=_log_level, default=None, metavar="|".join(LOG_LEVELS),
                        help="logging level on stderr (default info, warning with --json)")  # fmt: skip
    common.add_argument("--log-format", type=_choice("text", "json"), default="text", metavar="text|json",
                        help="log lines as text (default) or one JSON object per line")  # fmt: skip

    gossip = P(add_help=False)
    gossip.add_argument("--timing", default=None, metavar="|".join(PRESETS),
                        help="timing preset, or a JSON object of ClusterTiming fields "
                        "(default: lan for run, local for cluster and demo)")  # fmt: skip
    gossip.add_argument("--heartbeat-interval", type=_positive, default=None, metavar="S",
                        help="seconds between beats (the Redis adapter: between liveness renewals, "
                        "default presence-ttl / 3)")  # fmt: skip
    gossip.add_argument("--ttl", type=_positive, default=None, metavar="S", help="a member unheard for S is dead")
    gossip.add_argument("--forget-after", type=_positive, default=None, metavar="S",
                        help="a member unheard for S is forgotten (default: twice the ttl)")  # fmt: skip

    parser = P(prog=prog, description="Typed WebSocket servers clustered over ZeroMQ.", epilog=epilog)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common, gossip], help="run MODULE:APP as one cluster node", epilog=epilog)
    run.add_argument("app", nargs="?", default=None, metavar="MODULE:APP",
                     help="a SocketServer, or a zero-arg (async) callable returning one")  # fmt: skip
    run.add_argument("--adapter", type=_choice(*ADAPTERS), default="zeromq", metavar="|".join(ADAPTERS),
                     help="how nodes reach each other (default zeromq; redis needs superline-zmq-redis)")  # fmt: skip
    run.add_argument("--ws", type=parse_hostport, default=("127.0.0.1", 0), metavar="HOST:PORT",
                     help="WebSocket listen address (port 0: any free port; default 127.0.0.1:0)")  # fmt: skip
    run.add_argument("--health", action=argparse.BooleanOptionalAction, default=True,
                     help="answer /healthz and /readyz on the WebSocket port (default on)")  # fmt: skip
    run.add_argument("--metrics", type=parse_hostport, default=None, metavar="HOST:PORT",
                     help="serve /metrics, /healthz and /readyz over HTTP here "
                     "(needs superline-zmq[metrics]; default off)")  # fmt: skip
    run.add_argument("--bind", default="tcp://127.0.0.1:0", metavar="ENDPOINT",
                     help="zeromq: router bind endpoint (default tcp://127.0.0.1:0)")  # fmt: skip
    run.add_argument("--pub-bind", default=None, metavar="ENDPOINT", help="zeromq: pub bind endpoint")
    run.add_argument("--advertise", default=None, metavar="ENDPOINT",
                     help="router endpoint peers are told to connect to, when it differs from --bind "
                     "(Docker, NAT, a proxy); --bind may then be a wildcard")  # fmt: skip
    run.add_argument("--advertise-pub", default=None, metavar="ENDPOINT",
                     help="pub endpoint peers are told (default with --advertise: its host, bound port)")  # fmt: skip
    run.add_argument("--seed", action="append", default=[], metavar="ENDPOINT",
                     help="zeromq: router endpoint of an existing member "
                     "(repeatable; in the environment: comma-separated)")  # fmt: skip
    run.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", metavar="URL",
                     help="redis: the server (default redis://127.0.0.1:6379/0)")  # fmt: skip
    run.add_argument("--redis-prefix", default="superline", metavar="PREFIX",
                     help="redis: key and channel prefix of the cluster (default superline)")  # fmt: skip
    run.add_argument("--redis-presence-ttl", type=_positive, default=90.0, metavar="S",
                     help="redis: a node silent this long leaves presence (default 90)")  # fmt: skip
    run.add_argument("--redis-liveness-poll", type=_positive, default=1.0, metavar="S",
                     help="redis: refresh period of the live-node view (default 1)")  # fmt: skip
    run.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                     help="JSON event lines on stdout")  # fmt: skip
    run.add_argument("--drain", type=_seconds, default=10.0, metavar="S",
                     help="on SIGTERM/SIGINT, refuse new connections and let requests in flight finish "
                     "for up to S seconds before closing (default 10; 0: close at once)")  # fmt: skip
    run.add_argument("--shutdown-timeout", type=_positive, default=10.0, metavar="S",
                     help="limit of the close after the drain, before exiting 1 (default 10)")  # fmt: skip
    run.add_argument("--watch-parent", type=int, default=None, layered=False, help=argparse.SUPPRESS)
    _curve_options(run)

    cl = sub.add_parser("cluster", parents=[common, gossip], help="run MODULE:APP as N local node processes",
                        epilog=epilog)  # fmt: skip
    cl.add_argument("app", nargs="?", default=None, metavar="MODULE:APP")
    cl.add_argument("--nodes", type=_bounded_int(1, MAX_NODES), default=3, help="number of nodes (default 3)")
    cl.add_argument("--host", default="127.0.0.1", help="address of every socket (default 127.0.0.1)")
    cl.add_argument("--ws-port", type=_bounded_int(0, 65535), default=0, metavar="BASE",
                    help="node k listens on BASE+k (default 0: any free port)")  # fmt: skip
    cl.add_argument("--seeds", type=_choice("first", "chain"), default="first", metavar="first|chain",
                    help="seed every node with node 0 (first) or node k with node k-1 (chain)")  # fmt: skip
    cl.add_argument("--allow-remote", action=argparse.BooleanOptionalAction, default=False,
                    help="allow a non-loopback --host")  # fmt: skip
    cl.add_argument("--ready-timeout", type=_positive, default=30.0, metavar="S")
    cl.add_argument("--stop-timeout", type=_positive, default=10.0, metavar="S")
    cl.add_argument("--curve", action="store_true", help="CURVE with throwaway keys (removed on exit)")
    _curve_options(cl)

    demo = sub.add_parser("demo", parents=[common, gossip], help="a chat app on a local cluster with simulated users",
                          epilog=epilog)  # fmt: skip
    demo.add_argument("--nodes", type=_bounded_int(1, MAX_NODES), default=3)
    demo.add_argument("--clients", type=_bounded_int(0, MAX_CLIENTS), default=24)
    demo.add_argument("--duration", type=_seconds, default=0.0, metavar="S", help="stop after S seconds (0: Ctrl-C)")
    demo.add_argument("--interval", type=_positive, default=1.0, metavar="S", help="display refresh (default 1)")
    demo.add_argument("--seed", type=int, default=None, env="SUPERLINE_DEMO_SEED",
                      help="random seed of the simulated clients")  # fmt: skip
    demo.add_argument("--no-curve", action="store_true", help="run the cluster transport without CURVE")

    keygen = sub.add_parser("keygen", help="write a CURVE certificate pair NAME.key and NAME.key_secret")
    keygen.add_argument("name", metavar="NAME", help="file name of the pair (e.g. the node's host name)")
    keygen.add_argument("--dir", default=".", help="where to write it (default: the current directory)")
    return parser


def _curve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--curve-cert", default=None, metavar="FILE", help="CURVE: this node's NAME.key_secret (superline-zmq keygen)"
    )
    parser.add_argument(
        "--curve-allow",
        default=None,
        metavar="DIR",
        help="CURVE: directory of the public certificates (*.key) of the nodes admitted; SIGHUP re-reads it",
    )


def _defaults(args: argparse.Namespace, sources: Mapping[str, str] | None = None) -> None:
    """Check the options together and resolve ``--timing`` and the flags overriding it into
    ``args.timing`` (UsageError if inconsistent); ``sources`` says which were set (not defaults)."""
    sources = sources or {}
    if args.command == "keygen":
        return
    if args.command in ("run", "cluster") and not args.app:
        raise UsageError("MODULE:APP is required (as an argument, $SUPERLINE_APP or the config file's app key)")
    if args.command == "run":
        for adapter, dests in ADAPTER_OPTIONS.items():
            if adapter == args.adapter:
                continue
            for dest in dests:
                if sources.get(dest, "default") != "default":
                    flag = "--" + dest.replace("_", "-")
                    raise UsageError(f"{flag} ({_where(sources[dest])}) is an option of --adapter {adapter}, "
                                     f"not {args.adapter}")  # fmt: skip
        if args.adapter != "zeromq":
            return  # the gossip timings are the ZeroMQ adapter's; --heartbeat-interval stays as given
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


def _where(source: str) -> str:
    kind, _, name = source.partition(" ")
    return {"flag": "given as a flag", "env": f"from ${name}", "file": f"from the config file's {name!r}"}.get(
        kind, source
    )


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None, prog: str = PROG) -> config.Parsed:
    """The command line, the environment and the config file resolved and checked (UsageError when bad).

    argparse's own errors (a bad flag) print usage and raise SystemExit(2), as always.
    """
    try:
        parsed = config.parse(build_parser(prog), argv, environ)
    except config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    _defaults(parsed.args, parsed.sources)
    return parsed


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Entry point of ``superline-zmq``; returns the exit code."""
    try:
        args = parse_args(argv, prog=prog).args
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "keygen":
        return _keygen(args)
    _setup_logging(getattr(args, "json", False), args.log_level, args.log_format)
    try:
        factory = loop_factory(args.loop)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
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
