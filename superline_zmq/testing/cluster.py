"""A real cluster of node processes on loopback, for tests, ``superline-zmq cluster`` and the demo.

Each node is ``python -m superline_zmq.cli run APP --json ...``: its own OS process with
its own event loop and ZeroMQ sockets, exactly as in production. This module reads each
child's stdout JSON lines (``ready``, ``member``, ``left``, ...) in a background task,
keeps a per-node event log and membership view, and offers bounded waits on them, so a
test states a condition and a deadline rather than sleeping.

Safety rules, all by PID (never by name):

- every process started is killed on teardown, whether the body returned, raised or was
  cancelled (SIGKILL first is synchronous, so a second cancellation cannot skip it);
- a start failure raises :class:`ClusterError` carrying the failing child's stderr tail;
- children are started in their own session (a terminal's Ctrl-C reaches only the
  parent, which stops them in order) and watch their parent's PID: if the parent dies
  without cleaning up, they shut themselves down;
- an ``atexit`` hook SIGKILLs anything still running when the interpreter exits.

With ``faults=True`` every node's two endpoints are reached through a
:class:`~superline_zmq.testing.faults.FaultProxy` each (the node is started with
``--advertise``/``--advertise-pub`` naming its proxies, so peers connect to those), and the
test can break links: :meth:`LocalCluster.partition` cuts a group of nodes off from the
rest, both ways, with every process alive (Linux: the proxies tell which node opened a
connection from ``/proc``); :meth:`LocalCluster.heal` mends everything;
``node.links.router``/``.pub`` are the proxies themselves, for delays and blackholes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import superline_zmq
from superline_zmq.testing.faults import FaultProxy, client_pid
from superline_zmq.testing.keys import ClusterKeys
from superline_zmq.timing import ClusterTiming

#: How nodes find each other: every node seeds with node 0 (``"first"``), or node k with node k-1.
SeedMode = Literal["first", "chain"]
#: ``"reversed"`` starts the seed(s) last: routers get pre-allocated ports so seeds are known up front.
StartOrder = Literal["normal", "reversed"]
NodeState = Literal["starting", "running", "paused", "stopping", "stopped", "killed", "exited"]

#: PIDs started by any cluster of this process and not yet reaped (for the atexit hook).
_LIVE_PIDS: set[int] = set()

#: Lines of a child's stderr kept for error messages.
STDERR_TAIL = 200
#: Events kept per node (``member`` events and stray output included).
EVENT_LOG = 10_000


class ClusterError(RuntimeError):
    """A node failed to start or exited unexpectedly, or a wait on the cluster timed out."""


def _kill_leftovers() -> None:
    for pid in list(_LIVE_PIDS):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    _LIVE_PIDS.clear()


atexit.register(_kill_leftovers)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def host_port(host: str, port: int) -> str:
    """``host:port``, bracketing an IPv6 address."""
    h = host.strip("[]")
    return f"[{h}]:{port}" if ":" in h else f"{h}:{port}"


def _zmq_host(host: str) -> str:
    # ZeroMQ binds to addresses or interface names, not to host names
    h = host.strip("[]")
    return "127.0.0.1" if h == "localhost" else h


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (another process may take it before you do)."""
    h = _zmq_host(host)
    family = socket.AF_INET6 if ":" in h else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((h, 0))
        return int(s.getsockname()[1])


def _package_root() -> str:
    return str(Path(superline_zmq.__file__).resolve().parent.parent)


class NodeLinks:
    """The proxies in front of one node's advertised endpoints (``faults=True``)."""

    def __init__(self, router: FaultProxy, pub: FaultProxy) -> None:
        #: Where peers' DEALERs (direct messages, hellos) reach the node.
        self.router = router
        #: Where peers' SUB sockets (channels, gossip broadcasts) reach the node.
        self.pub = pub

    def __iter__(self) -> Iterator[FaultProxy]:
        return iter((self.router, self.pub))

    @property
    def endpoints(self) -> dict[str, str]:
        return {"pub": self.pub.endpoint, "router": self.router.endpoint}


class Node:
    """One node process of a :class:`LocalCluster`, as its stdout told us."""

    def __init__(self, index: int, args: list[str]) -> None:
        self.index = index
        #: The command line it was started with.
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        #: ``ws://host:port/`` of its WebSocket server (after ``ready``).
        self.url = ""
        self.node_id = ""
        self.pid = 0
        #: Its CURVE key's fingerprint (after ``ready``; empty without CURVE).
        self.key = ""
        #: ``{"pub": ..., "router": ...}``: its ZeroMQ endpoints (after ``ready``).
        #: ``{"pub": ..., "router": ...}``: the ZeroMQ endpoints peers reach it on (after ``ready``;
        #: its proxies' with ``faults=True``).
        self.endpoints: dict[str, str] = {}
        #: ``{"pub": ..., "router": ...}``: where its sockets are bound (``faults=True``, once it said).
        self.bound: dict[str, str] = {}
        #: The proxies in front of it (``faults=True``), else None.
        self.links: NodeLinks | None = None
        #: Its latest view of the other members: node id -> alive.
        self.members: dict[str, bool] = {}
        #: Every JSON line it printed, in order (``{"event": "raw", "line": ...}`` for others),
        #: each with ``"_t"``: the parent's ``time.monotonic()`` at receipt.
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENT_LOG)
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.state: NodeState = "starting"
        self.returncode: int | None = None
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._stdout_task: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Node {self.index} {self.node_id or '?'} pid={self.pid} {self.state} {self.url}>"

    @property
    def alive_members(self) -> set[str]:
        """Ids of the members this node currently sees alive."""
        return {n for n, alive in self.members.items() if alive}

    @property
    def running(self) -> bool:
        """Started, ready, and neither paused nor on its way out."""
        return self.state == "running"

    @property
    def gone(self) -> bool:
        """The process has exited (whatever the reason)."""
        return self.returncode is not None

    def stderr(self, lines: int = 40) -> str:
        """The last ``lines`` lines of its stderr."""
        return "\n".join(list(self.stderr_tail)[-lines:])

    async def _drain_stderr(self, timeout: float = 1.0) -> None:
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), timeout)

    def _describe_failure(self, what: str) -> str:
        rc = "" if self.returncode is None else f" (exit code {self.returncode})"
        tail = self.stderr() or "(no stderr output)"
        return f"node {self.index} {what}{rc}; command: {' '.join(self.args)}\n--- stderr tail ---\n{tail}"


class LocalCluster:
    """N node processes of one app linked by the ZeroMQ adapter; see :func:`local_cluster`.

    ``timing`` is every node's :class:`~superline_zmq.ClusterTiming` (default
    :meth:`ClusterTiming.local`: beat 0.2 s, dead after 1 s); ``heartbeat_interval`` and
    ``ttl``, if given, override it. ``curve=True`` secures the cluster transport with
    throwaway CURVE keys (a :class:`~superline_zmq.testing.ClusterKeys` in a temporary
    directory, removed on :meth:`close`): node ``k`` runs with certificate ``node{k}`` and
    the shared allow directory, which lists every node's key before the first starts.
    Pass a :class:`~superline_zmq.testing.ClusterKeys` instead to keep the keys yourself.
    """

    def __init__(
        self,
        app: str,
        nodes: int = 3,
        *,
        timing: ClusterTiming | None = None,
        heartbeat_interval: float | None = None,
        ttl: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        ready_timeout: float = 20.0,
        seeds: SeedMode = "first",
        start_order: StartOrder = "normal",
        host: str = "127.0.0.1",
        ws_port: int = 0,
        allow_remote: bool = False,
        python: str | None = None,
        extra_args: Sequence[str] = (),
        graceful_teardown: bool = False,
        stop_timeout: float = 10.0,
        curve: bool | ClusterKeys = False,
        faults: bool = False,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if seeds not in ("first", "chain"):
            raise ValueError(f"seeds must be 'first' or 'chain', not {seeds!r}")
        if start_order not in ("normal", "reversed"):
            raise ValueError(f"start_order must be 'normal' or 'reversed', not {start_order!r}")
        if not allow_remote and not is_loopback(host):
            raise ValueError(f"host {host!r} is not a loopback address; pass allow_remote=True to use it")
        self.app = app
        self.size = nodes
        base = timing if timing is not None else ClusterTiming.local()
        #: The timings every node runs with (passed to each as ``--timing``).
        self.timing = base.override(heartbeat_interval=heartbeat_interval, ttl=ttl)
        self.heartbeat_interval = self.timing.heartbeat_interval
        self.ttl = self.timing.ttl
        self.env = dict(env or {})
        self.cwd = None if cwd is None else str(cwd)
        self.ready_timeout = ready_timeout
        self.seeds: SeedMode = seeds
        self.start_order: StartOrder = start_order
        self.host = host
        self.ws_port = ws_port
        self.python = python or sys.executable
        self.extra_args = list(extra_args)
        self.graceful_teardown = graceful_teardown
        self.stop_timeout = stop_timeout
        #: The cluster's CURVE certificates and allow directory (None: plain ZMTP).
        self.keys: ClusterKeys | None = ClusterKeys() if curve is True else (curve or None)
        self._own_keys = curve is True
        #: Whether every node's endpoints are behind a :class:`FaultProxy` (see the module docstring).
        self.faults = faults
        self._partitioned: set[int] | None = None
        #: The nodes, in start order of their index (``add_node`` appends).
        self.nodes: list[Node] = []
        self._cond = asyncio.Condition()
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<LocalCluster {self.app} nodes={self.nodes!r}>"

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(graceful=self.graceful_teardown)

    @property
    def pids(self) -> list[int]:
        """PIDs of every process this cluster started (exited ones included)."""
        return [n.pid for n in self.nodes if n.pid]

    @property
    def urls(self) -> list[str]:
        """WebSocket URLs of the nodes, by index."""
        return [n.url for n in self.nodes]

    async def start(self) -> LocalCluster:
        """Start every node, wait for all ``ready`` lines and for full convergence.

        On any failure every process started so far is killed and :class:`ClusterError`
        (with the failing child's stderr tail) is raised.
        """
        if self._started:
            raise RuntimeError("this cluster was already started")
        self._started = True
        deadline = time.monotonic() + self.ready_timeout
        if self.keys is not None:  # every key listed before any node starts: no reload needed
            for k in range(self.size):
                self.keys.cert(f"node{k}")
        try:
            if self.start_order == "reversed":
                links: list[NodeLinks | None] = [None] * self.size
                if self.faults:  # the proxies' ports are the advertised routers, known up front
                    links = [await self._links() for _ in range(self.size)]
                    routers = [lk.router.endpoint for lk in links if lk is not None]
                else:
                    ports = [free_port(self.host) for _ in range(self.size)]
                    routers = [f"tcp://{host_port(_zmq_host(self.host), p)}" for p in ports]
                # each one is serving before the next starts: the seeds really are not up yet
                for k in reversed(range(self.size)):
                    seed = [] if k == 0 else [routers[0] if self.seeds == "first" else routers[k - 1]]
                    bind = None if self.faults else routers[k]
                    await self._wait_ready(await self._spawn(seed, bind=bind, index=k, links=links[k]), deadline)
                self.nodes.sort(key=lambda n: n.index)
            else:
                first = await self._spawn([])
                await self._wait_ready(first, deadline)
                if self.seeds == "first":
                    rest = [await self._spawn([first.endpoints["router"]]) for _ in range(1, self.size)]
                    for node in rest:
                        await self._wait_ready(node, deadline)
                else:
                    prev = first
                    for _ in range(1, self.size):
                        prev = await self._spawn([prev.endpoints["router"]])
                        await self._wait_ready(prev, deadline)
            await self.wait_converged(max(0.0, deadline - time.monotonic()))
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self, *, graceful: bool = False, timeout: float | None = None) -> None:
        """Stop every process this cluster started; idempotent, never leaves one running.

        ``graceful``: SIGTERM (and SIGCONT to paused ones), wait up to ``timeout`` (default
        ``stop_timeout``), then SIGKILL the stragglers. Otherwise SIGKILL at once.
        """
        self._closed = True
        live = [n for n in self.nodes if n.proc is not None and n.proc.returncode is None]
        try:
            if graceful and live:
                for n in live:
                    n.state = "stopping"
                    self._signal(n, signal.SIGTERM)
                    self._signal(n, signal.SIGCONT)
                wait = self.stop_timeout if timeout is None else timeout
                await self._wait_exit(live, wait)
        finally:
            # synchronous, so nothing (a second cancellation included) can skip it
            for n in live:
                if n.proc is not None and n.proc.returncode is None:
                    if n.state != "stopping":
                        n.state = "killed"
                    self._signal(n, signal.SIGKILL)
            try:
                await self._wait_exit(live, 5.0)
            finally:
                if self._own_keys and self.keys is not None:
                    self.keys.cleanup()
                for n in self.nodes:
                    for task in (n._stdout_task, n._stderr_task):
                        if task is not None and not task.done():
                            task.cancel()
                tasks = [t for n in self.nodes for t in (n._stdout_task, n._stderr_task) if t is not None]
                if tasks:
                    await asyncio.wait(tasks, timeout=1.0)
                for proxy in self.proxies:
                    await proxy.close()

    # ------------------------------------------------------------------ node control
    async def kill(self, k: int) -> None:
        """SIGKILL node ``k`` and wait until it is reaped (no graceful leave: peers time it out)."""
        node = self.nodes[k]
        node.state = "killed"
        self._signal(node, signal.SIGKILL)
        await self._wait_exit([node], 5.0)

    async def stop(self, k: int, timeout: float = 10.0) -> int:
        """SIGTERM node ``k`` (graceful: it announces its leave) and wait for its exit code.

        SIGKILLs it and raises :class:`ClusterError` if it has not exited within ``timeout``.
        """
        node = self.nodes[k]
        node.state = "stopping"
        self._signal(node, signal.SIGTERM)
        self._signal(node, signal.SIGCONT)
        if not await self._wait_exit([node], timeout):
            self._signal(node, signal.SIGKILL)
            await self._wait_exit([node], 5.0)
            raise ClusterError(node._describe_failure(f"did not stop within {timeout} s after SIGTERM"))
        node.state = "stopped"
        assert node.returncode is not None
        return node.returncode

    def pause(self, k: int) -> None:
        """SIGSTOP node ``k``: it stops beating (peers see it dead after ``ttl``) but keeps its sockets."""
        node = self.nodes[k]
        self._signal(node, signal.SIGSTOP)
        node.state = "paused"

    def resume(self, k: int) -> None:
        """SIGCONT a paused node ``k``."""
        node = self.nodes[k]
        self._signal(node, signal.SIGCONT)
        if node.state == "paused":
            node.state = "running"

    async def add_node(
        self,
        seed: int = 0,
        *,
        wait: bool = True,
        timeout: float | None = None,
        cert: str | os.PathLike[str] | None = None,
        plain: bool = False,
    ) -> Node:
        """Start one more node seeded only by node ``seed``'s router; wait for it to be ready.

        With ``wait`` (the default), also wait until it and every running node see each
        other alive. On a CURVE cluster the new node gets a new certificate
        ``node{index}``, listed in the allow directory and loaded by every running node
        (SIGHUP) before it starts; ``cert`` starts it with that certificate instead
        (listed or not: nothing is reloaded), ``plain=True`` without CURVE at all.
        """
        if self._closed:
            raise RuntimeError("this cluster is closed")
        limit = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        seed_node = self.nodes[seed]
        if not seed_node.endpoints:
            raise ValueError(f"node {seed} has no endpoints (never became ready)")
        curve: tuple[str, str] | None = None
        if self.keys is not None and not plain:
            if cert is None:
                cert = self.keys.cert(f"node{len(self.nodes)}")
                await self.reload_all(timeout=max(0.0, deadline - time.monotonic()))
            curve = (os.fspath(cert), str(self.keys.allow_dir))
        node = await self._spawn([seed_node.endpoints["router"]], curve=curve, plain=plain)
        await self._wait_ready(node, deadline)
        if wait:
            await self.wait_converged(max(0.0, deadline - time.monotonic()))
        return node

    async def reload(self, k: int, timeout: float | None = None) -> dict[str, Any]:
        """SIGHUP node ``k`` (it re-reads its CURVE allow directory) and wait for its ``reloaded`` line.

        Returns that event (``added``, ``removed``, ``evicted``, ``allowed``); raises
        :class:`ClusterError` if the node reports ``reload_failed`` or says nothing in time.
        """
        node = self.nodes[k]
        before = sum(1 for ev in node.events if ev.get("event") in ("reloaded", "reload_failed"))
        self._signal(node, signal.SIGHUP)

        def done(ev: dict[str, Any]) -> bool:
            return ev.get("event") in ("reloaded", "reload_failed")

        await self.wait_until(
            lambda: sum(1 for ev in node.events if done(ev)) > before,
            self.ready_timeout if timeout is None else timeout,
            f"node {k} to reload its allow list",
        )
        ev = [e for e in node.events if done(e)][before]
        if ev["event"] == "reload_failed":
            raise ClusterError(f"node {k} could not reload its allow list: {ev.get('error')}")
        return ev

    async def reload_all(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """:meth:`reload` every running CURVE node, all at once; their ``reloaded`` events in index order.

        (A node without CURVE is left alone: it has nothing to reload, and SIGHUP would end it.)
        """
        running = [n.index for n in self.nodes if n.running and n.key]
        return list(await asyncio.gather(*(self.reload(k, timeout) for k in running)))

    # ------------------------------------------------------------------ faults
    @property
    def proxies(self) -> list[FaultProxy]:
        """Every proxy of the cluster (``faults=True``; else none), node by node, router first."""
        return [p for n in self.nodes if n.links is not None for p in n.links]

    def partition(self, group: Iterable[int]) -> None:
        """Cut the nodes ``group`` (indices) off from the others, both ways: no connection between
        the two sides survives or can be made, until :meth:`heal`. Every process keeps running,
        and each side keeps talking within itself. Needs ``faults=True`` (and Linux)."""
        if not self.faults:
            raise RuntimeError("partition() needs a cluster started with faults=True")
        side = set(group)
        everyone = {n.index for n in self.nodes}
        if side - everyone:
            raise ValueError(f"no such node(s): {sorted(side - everyone)}")
        self._partitioned = side
        for n in self.nodes:
            assert n.links is not None
            others = everyone - side if n.index in side else side
            for proxy in n.links:
                proxy.cut(peers=others)

    def heal(self) -> None:
        """Undo every fault on every proxy (a partition, cuts, delays, blackholes)."""
        self._partitioned = None
        for proxy in self.proxies:
            proxy.heal()

    def proxy_statistics(self) -> dict[str, int]:
        """Every proxy's counters, added up (``active``: connections open through them now)."""
        total: dict[str, int] = {}
        for proxy in self.proxies:
            for key, value in proxy.statistics().items():
                total[key] = total.get(key, 0) + value
        return total

    async def _links(self) -> NodeLinks:
        host = _zmq_host(self.host)
        router, pub = FaultProxy(host=host), FaultProxy(host=host)
        for proxy in (router, pub):
            proxy.identify = self._identifier(proxy)
            await proxy.start()
        return NodeLinks(router=router, pub=pub)

    def _identifier(self, proxy: FaultProxy) -> Callable[[Any], int | None]:
        def identify(peer: Any) -> int | None:
            """The index of the node whose process opened the connection from ``peer``, if any."""
            by_pid = {n.pid: n.index for n in self.nodes if n.pid and not n.gone}
            pid = client_pid(peer, (proxy.host, proxy.port), by_pid)
            return None if pid is None else by_pid[pid]

        return identify

    # ------------------------------------------------------------------ waits
    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str = "a condition") -> None:
        """Wait until ``predicate()`` is true, re-checked on every line a node prints.

        ``predicate`` may raise (e.g. :class:`ClusterError`) to fail at once. Raises
        :class:`ClusterError` at the deadline.
        """
        try:
            async with asyncio.timeout(timeout), self._cond:
                await self._cond.wait_for(predicate)
        except TimeoutError:
            views = "; ".join(f"node {n.index} ({n.state}) sees {n.members}" for n in self.nodes)
            raise ClusterError(f"timed out after {timeout:.1f} s waiting for {what}; {views}") from None

    async def wait_members(self, k: int, n_alive: int, timeout: float | None = None) -> dict[str, bool]:
        """Wait until node ``k`` sees exactly ``n_alive`` live members (itself excluded); return its view."""
        node = self.nodes[k]

        def check() -> bool:
            if node.gone:
                raise ClusterError(node._describe_failure("exited while waited on"))
            return len(node.alive_members) == n_alive

        await self.wait_until(
            check, self.ready_timeout if timeout is None else timeout, f"node {k} to see {n_alive} alive"
        )
        return dict(node.members)

    async def wait_converged(self, timeout: float | None = None, *, nodes: Sequence[int] | None = None) -> None:
        """Wait until every running node sees exactly the other running nodes alive.

        ``nodes``: only these (by index), e.g. leaving out a node that is meant to stay outside.
        """

        def check() -> bool:
            for n in self.nodes:
                if n.gone and n.state in ("starting", "running", "exited"):
                    raise ClusterError(n._describe_failure("exited unexpectedly"))
            running = [n for n in self.nodes if n.running and (nodes is None or n.index in nodes)]
            ids = {n.node_id for n in running}
            return all(n.alive_members == ids - {n.node_id} for n in running)

        await self.wait_until(check, self.ready_timeout if timeout is None else timeout, "the cluster to converge")

    async def wait_event(
        self, k: int, predicate: Callable[[dict[str, Any]], bool], timeout: float | None = None
    ) -> dict[str, Any]:
        """Wait until node ``k`` has printed an event matching ``predicate``; return the first one."""
        node = self.nodes[k]
        found: list[dict[str, Any]] = []

        def check() -> bool:
            for ev in node.events:
                if predicate(ev):
                    found.append(ev)
                    return True
            return False

        await self.wait_until(check, self.ready_timeout if timeout is None else timeout, f"an event from node {k}")
        return found[0]

    # ------------------------------------------------------------------ internals
    def _command(
        self,
        seeds: Sequence[str],
        bind: str | None,
        index: int,
        curve: tuple[str, str] | None = None,
        links: NodeLinks | None = None,
    ) -> list[str]:
        ws_port = self.ws_port + index if self.ws_port else 0
        zhost = _zmq_host(self.host)
        args = [
            self.python,
            "-m",
            "superline_zmq.cli",
            "run",
            self.app,
            "--ws",
            host_port(self.host, ws_port),
            "--bind",
            bind or f"tcp://{host_port(zhost, 0)}",
            "--timing",
            self.timing.to_spec(),
            "--json",
            "--watch-parent",
            str(os.getpid()),
        ]
        for s in seeds:
            args += ["--seed", s]
        if curve is not None:
            args += ["--curve-cert", curve[0], "--curve-allow", curve[1]]
        if links is not None:
            args += ["--advertise", links.router.endpoint, "--advertise-pub", links.pub.endpoint]
        return args + self.extra_args

    def _child_env(self) -> dict[str, str]:
        # The nodes are configured by their command line alone: a SUPERLINE_* setting meant
        # for this process (a config file, a metrics port) would be wrong for every child.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERLINE_")}
        env.update(self.env)
        paths = [_package_root()]
        if self.cwd is not None:
            paths.append(self.cwd)
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    async def _spawn(
        self,
        seeds: Sequence[str],
        *,
        bind: str | None = None,
        index: int | None = None,
        curve: tuple[str, str] | None = None,
        plain: bool = False,
        links: NodeLinks | None = None,
    ) -> Node:
        if self._closed:
            raise RuntimeError("this cluster is closed")
        if index is None:
            index = len(self.nodes)
        if curve is None and self.keys is not None and not plain:
            curve = (str(self.keys.cert(f"node{index}")), str(self.keys.allow_dir))
        if self.faults and links is None:
            links = await self._links()
        node = Node(index, self._command(seeds, bind, index, curve, links))
        node.links = links
        self.nodes.append(node)
        if links is not None and self._partitioned is not None:
            for proxy in links:  # a node added during a partition is not in the cut-off group
                proxy.cut(peers=self._partitioned)
        creating = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *node.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._child_env(),
                cwd=self.cwd,
                start_new_session=True,
                limit=1 << 20,
            )
        )

        def adopt(task: asyncio.Future[asyncio.subprocess.Process]) -> None:
            # runs even if _spawn was cancelled mid-way, so no started process goes untracked
            if task.cancelled() or task.exception() is not None:
                return
            proc = node.proc = task.result()
            node.pid = proc.pid
            _LIVE_PIDS.add(proc.pid)
            node._stderr_task = asyncio.ensure_future(self._read_stderr(node))
            node._stdout_task = asyncio.ensure_future(self._read_stdout(node))
            if self._closed:  # close() ran while it was being created
                self._signal(node, signal.SIGKILL)

        creating.add_done_callback(adopt)
        await asyncio.shield(creating)
        return node

    async def _wait_ready(self, node: Node, deadline: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(node.ready), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            await node._drain_stderr(0.2)
            raise ClusterError(node._describe_failure(f"was not ready within {self.ready_timeout} s")) from None

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def _read_stderr(self, node: Node) -> None:
        assert node.proc is not None and node.proc.stderr is not None
        stream = node.proc.stderr
        while line := await stream.readline():
            node.stderr_tail.append(line.decode(errors="replace").rstrip("\n"))

    async def _read_stdout(self, node: Node) -> None:
        assert node.proc is not None and node.proc.stdout is not None
        stream = node.proc.stdout
        try:
            while True:
                try:
                    line = await stream.readline()
                except ValueError:  # a line over the limit: skip it
                    continue
                if not line:
                    break
                self._on_line(node, line)
                await self._notify()
        finally:
            try:
                rc = await node.proc.wait()
            finally:
                _LIVE_PIDS.discard(node.pid)
            node.returncode = rc
            if node.state in ("starting", "running", "paused"):
                node.state = "exited"
            elif node.state == "stopping":
                node.state = "stopped"
            if not node.ready.done():
                await node._drain_stderr()
                node.ready.set_exception(ClusterError(node._describe_failure("exited before it was ready")))
                node.ready.exception()  # retrieved: the waiter may be gone
            with contextlib.suppress(RuntimeError):  # the loop may be closing
                await self._notify()

    def _on_line(self, node: Node, line: bytes) -> None:
        text = line.decode(errors="replace").strip()
        try:
            ev = json.loads(text)
        except ValueError:
            ev = None
        if not isinstance(ev, dict):
            ev = {"event": "raw", "line": text}
        ev["_t"] = time.monotonic()
        node.events.append(ev)
        kind = ev.get("event")
        if kind == "ready" and not node.ready.done():
            node.url = str(ev.get("ws", ""))
            node.node_id = str(ev.get("node_id", ""))
            node.key = str(ev.get("key", ""))
            node.endpoints = {"pub": str(ev.get("pub", "")), "router": str(ev.get("router", ""))}
            if node.state == "starting":
                node.state = "running"
            node.ready.set_result(ev)
        elif kind == "bound":
            node.bound = {"pub": str(ev.get("pub", "")), "router": str(ev.get("router", ""))}
            if node.links is not None:  # the proxies forward there from now on
                for proxy, key in ((node.links.router, "router"), (node.links.pub, "pub")):
                    host, _, port = node.bound[key].removeprefix("tcp://").rpartition(":")
                    proxy.retarget(host.strip("[]"), int(port))
        elif kind == "member":
            node.members[str(ev.get("node"))] = bool(ev.get("alive"))
        elif kind == "left":
            node.members.pop(str(ev.get("node")), None)

    def _signal(self, node: Node, sig: signal.Signals) -> None:
        proc = node.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)

    async def _wait_exit(self, nodes: Sequence[Node], timeout: float) -> bool:
        """Wait until every node's process is reaped; False at the deadline."""
        waits = [asyncio.ensure_future(n.proc.wait()) for n in nodes if n.proc is not None]
        if not waits:
            return True
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for w in pending:
            w.cancel()
        for n in nodes:
            if n.proc is not None and n.proc.returncode is not None:
                n.returncode = n.proc.returncode
                _LIVE_PIDS.discard(n.pid)
        return not pending


@contextlib.asynccontextmanager
async def local_cluster(
    app: str,
    nodes: int = 3,
    *,
    timing: ClusterTiming | None = None,
    heartbeat_interval: float | None = None,
    ttl: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    ready_timeout: float = 20.0,
    seeds: SeedMode = "first",
    start_order: StartOrder = "normal",
    faults: bool = False,
    **options: Any,
) -> AsyncIterator[LocalCluster]:
    """Run ``app`` (``"module:attr"``) as ``nodes`` real processes on loopback for the block.

    Yields once every node printed its ``ready`` line and every node sees the other
    ``nodes - 1`` alive. ``cwd`` is where the children run (and import ``module`` from);
    ``env`` adds environment variables. ``seeds="first"``: nodes 1.. join through node 0;
    ``"chain"``: node k knows only node k-1 (discovery must go through gossip).
    ``start_order="reversed"``: routers get pre-allocated ports and the nodes start from
    the last, each serving before the next starts, so every seed is down when its node
    joins (joining must retry). ``faults=True`` puts a
    :class:`~superline_zmq.testing.faults.FaultProxy` in front of every node's advertised
    endpoints (:meth:`LocalCluster.partition`, :meth:`LocalCluster.heal`, ``node.links``).
    Every process is SIGKILLed on exit, whatever happened in the block
    (``graceful_teardown=True``: SIGTERM first). Other options go to :class:`LocalCluster`.
    """
    cluster = LocalCluster(
        app,
        nodes,
        timing=timing,
        heartbeat_interval=heartbeat_interval,
        ttl=ttl,
        env=env,
        cwd=cwd,
        ready_timeout=ready_timeout,
        seeds=seeds,
        start_order=start_order,
        faults=faults,
        **options,
    )
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.close(graceful=cluster.graceful_teardown)
