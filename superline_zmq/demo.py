"""The built-in chat app of ``superline-zmq demo``, and the demo's driver.

The app (``superline_zmq.demo:app``) is small but exercises what a cluster is for:

- ``user`` connections say who they are and which room to start in (``?user=ana&room=dev``);
  ``identify`` names the user, ``describe_conn`` adds the client's ``agent``;
- ``say`` broadcasts a ``message`` to a room on every node, ``join`` moves to another room;
- ``ping`` is a shared *server* request: any node may ask any client, wherever it is
  connected (``srv.to_conn(id).request("ping", ...)``);
- the ``admin`` role reads the cluster: ``overview`` (``srv.cluster.topology()``, counts,
  users online, room sizes) and ``probe`` (ping a random user on any node).

:func:`run_demo` starts the app as a local cluster (real processes, loopback only), runs
a bounded number of simulated users with our own client, and redraws a summary every
``interval`` seconds until ``duration`` has passed or it is stopped. Then it drains one
node while the users still run (:func:`drain_one`: SIGTERM, new connections refused,
requests in flight finished, connections closed with 1001) and stops the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from superline_zmq.client import Client, connect
from superline_zmq.contract import define_contract, event, request, server_request
from superline_zmq.errors import ErrorCode, SocketError, SuperlineError
from superline_zmq.presence import NodeInfo
from superline_zmq.server import Auth, Conn, Handshake, SocketServer, create_socket_server
from superline_zmq.timing import ClusterTiming

if TYPE_CHECKING:
    from superline_zmq.testing.cluster import LocalCluster

#: The rooms of the demo.
ROOMS = ("lobby", "dev", "ops")

LINES = (
    "hello from {node}",
    "anyone around?",
    "deploying in 5",
    "coffee?",
    "ship it",
    "looks good to me",
    "who broke the build",
    "brb",
)


class Say(msgspec.Struct):
    room: str
    text: str


class Said(msgspec.Struct):
    room: str
    node: str


class Message(msgspec.Struct):
    room: str
    user: str
    text: str
    node: str
    at: float


class Me(msgspec.Struct):
    id: str
    node: str
    role: str
    user: str | None
    rooms: list[str]


class Ping(msgspec.Struct):
    sent: float


class Pong(msgspec.Struct):
    user: str


class Overview(msgspec.Struct):
    node: str
    topology: list[NodeInfo]
    connections: int
    users_online: int
    rooms: dict[str, int]
    said: int


class Probe(msgspec.Struct):
    conn: str
    node: str
    user: str | None
    rtt_ms: float
    answer: str


api = define_contract(
    shared={
        "client_to_server": {"whoami": request(None, Me)},
        "server_to_client": {"message": event(Message), "ping": server_request(Ping, Pong)},
    },
    roles={
        "user": {"client_to_server": {"say": request(Say, Said), "join": request(str, list[str])}},
        "admin": {"client_to_server": {"overview": request(None, Overview), "probe": request(None, Probe | None)}},
    },
)


def _authenticate(hs: Handshake) -> Auth:
    return Auth(hs.query.get("role", "user"), dict(hs.query))


def app() -> SocketServer:
    """The demo chat server (entry point of ``superline-zmq run superline_zmq.demo:app``)."""
    said = 0
    rng = random.Random()

    async def on_connection(conn: Conn) -> None:
        if conn.role == "user":
            room = conn.ctx.get("room", "lobby")
            await srv.room(room if room in ROOMS else "lobby").add(conn)

    srv = create_socket_server(
        api,
        authenticate=_authenticate,
        on_connection=on_connection,
        identify=lambda conn: conn.ctx.get("user"),
        describe_conn=lambda conn: {"agent": conn.ctx.get("agent", "unknown")},
    )

    async def whoami(_: None, ctx: Any, conn: Conn) -> Me:
        return Me(conn.id, srv.node_id, conn.role, conn.user_id, sorted(conn.rooms))

    async def say(m: Say, ctx: Any, conn: Conn) -> Said:
        nonlocal said
        if m.room not in conn.rooms:
            raise SocketError(ErrorCode.FORBIDDEN, f"join {m.room!r} before saying something there")
        said += 1
        srv.room(m.room).broadcast(
            "message", Message(m.room, conn.user_id or conn.id, m.text, srv.node_id, time.time())
        )
        return Said(m.room, srv.node_id)

    async def join(room: str, ctx: Any, conn: Conn) -> list[str]:
        if room not in ROOMS:
            raise SocketError(ErrorCode.NOT_FOUND, f"no room {room!r}; rooms: {', '.join(ROOMS)}")
        for other in conn.rooms - {room}:
            srv.room(other).remove(conn)
        await srv.room(room).add(conn)
        return sorted(conn.rooms)

    async def overview(_: None, ctx: Any, conn: Conn) -> Overview:
        topology = await srv.cluster.topology()
        conns = await srv.cluster.connections()
        rooms = dict.fromkeys(ROOMS, 0)
        for d in conns:
            for r in d.rooms:
                rooms[r] = rooms.get(r, 0) + 1
        users = {d.user_id for d in conns if d.role == "user" and d.user_id is not None}
        return Overview(srv.node_id, topology, len(conns), len(users), rooms, said)

    async def probe(_: None, ctx: Any, conn: Conn) -> Probe | None:
        users = [d for d in await srv.cluster.connections() if d.role == "user"]
        if not users:
            return None
        # prefer a connection on another node: the request then crosses the cluster
        remote = [d for d in users if d.node_id != srv.node_id]
        target = rng.choice(remote or users)
        t0 = time.perf_counter()
        pong: Pong = await srv.to_conn(target.id).request("ping", Ping(time.time()), timeout=2.0)
        rtt = (time.perf_counter() - t0) * 1000
        return Probe(target.id, target.node_id, target.user_id, round(rtt, 2), pong.user)

    srv.implement(
        {
            "shared": {"whoami": whoami},
            "user": {"say": say, "join": join},
            "admin": {"overview": overview, "probe": probe},
        }
    )
    return srv


# ---------------------------------------------------------------------- the driver
@dataclass
class DemoStats:
    """What the simulated clients did, counted in the driver's process."""

    said: int = 0
    delivered: int = 0
    sessions: int = 0
    reconnects: int = 0
    errors: int = 0
    online: int = 0


async def _pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True if stopped."""
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def simulate_user(i: int, urls: list[str], stats: DemoStats, rng: random.Random, stop: asyncio.Event) -> None:
    """One simulated user: connect to a random node, chat in a room, now and then reconnect."""
    user = f"user-{i}"
    if await _pause(stop, rng.uniform(0.0, 0.5)):
        return
    while not stop.is_set():
        room = rng.choice(ROOMS)
        url = rng.choice(urls)
        try:
            client = await connect(
                api,
                url,
                role="user",
                params={"user": user, "room": room, "agent": "demo-sim"},
                reconnect=False,
                open_timeout=3.0,
                timeout=3.0,
            )
        except (SuperlineError, OSError):
            stats.errors += 1
            if await _pause(stop, 1.0):
                return
            continue
        stats.sessions += 1
        stats.online += 1

        def count(_: Message) -> None:
            stats.delivered += 1

        client.on("message", count)
        client.implement({"ping": lambda _p: Pong(user)})
        try:
            for _ in range(rng.randint(3, 12)):
                if await _pause(stop, rng.uniform(0.5, 2.0)) or not client.connected:
                    break
                text = rng.choice(LINES).format(node=url)
                await client.call("say", Say(room, text))
                stats.said += 1
        except SuperlineError:
            stats.errors += 1
        finally:
            stats.online -= 1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5.0)
        if stop.is_set() or await _pause(stop, rng.uniform(0.2, 1.0)):
            return
        stats.reconnects += 1


def render(
    *,
    elapsed: float,
    duration: float,
    cluster: LocalCluster,
    clients: int,
    stats: DemoStats,
    overview: Overview | None,
    probe: Probe | None,
    note: str = "",
) -> str:
    """One frame of the demo's display, as text."""
    index = {n.node_id: n for n in cluster.nodes}
    when = f"stops in {max(0.0, duration - elapsed):.0f} s" if duration else "Ctrl-C to stop"
    alive = sum(1 for n in overview.topology if n.alive) if overview else 0
    transport = "CURVE (throwaway keys)" if cluster.keys is not None else "plain ZMTP (no CURVE)"
    lines = [
        f"superline-zmq demo  t={elapsed:5.1f} s  nodes alive {alive}/{len(cluster.nodes)}  "
        f"simulated clients {clients}  ({when})",
        f"cluster transport: {transport}",
        "",
    ]
    header = ["node", "node_id", "alive", "conns", "rooms", "ws", "key"]
    rows: list[list[str]] = []
    if overview is not None:
        for info in sorted(overview.topology, key=lambda t: index[t.node_id].index if t.node_id in index else 99):
            node = index.get(info.node_id)
            rows.append(
                [
                    str(node.index) if node else "?",
                    info.node_id,
                    "yes" if info.alive else "NO",
                    str(info.connections),
                    ",".join(info.rooms) or "-",
                    node.url if node else "",
                    (node.key or "-") if node else "",
                ]
            )
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    lines.append("")
    if overview is not None:
        rooms = " ".join(f"{r}={n}" for r, n in overview.rooms.items())
        lines.append(
            f"cluster: {overview.connections} connections, {overview.users_online} users online; rooms: {rooms}"
        )
    else:
        lines.append("cluster: (no overview yet)")
    lines.append(
        f"messages: {stats.said} said, {stats.delivered} delivered; sessions {stats.sessions}, "
        f"reconnects {stats.reconnects}, client errors {stats.errors}"
    )
    if probe is not None:
        node = index.get(probe.node)
        where = f"node {node.index}" if node else probe.node
        lines.append(
            f"probe: node 0 asked {probe.user or probe.conn} on {where} 'ping' -> {probe.answer} in {probe.rtt_ms} ms"
        )
    if note:
        lines.append(note)
    return "\n".join(lines)


async def drain_one(cluster: LocalCluster, k: int, out: TextIO) -> None:
    """SIGTERM node ``k`` while the simulated users run, and tell what its graceful drain did."""
    node = cluster.nodes[k]
    out.write(
        f"draining node {k} (SIGTERM): it refuses new connections with 503 and lets the requests in flight "
        "finish, then closes its connections with 1001 and leaves the cluster\n"
    )
    out.flush()
    t0 = time.monotonic()
    try:
        code = await cluster.stop(k, timeout=30.0)
    except Exception as exc:  # ClusterError: it did not stop in time (then it was killed)
        out.write(f"node {k} did not drain: {exc}\n")
        return
    stopping = next((e for e in node.events if e.get("event") == "stopping"), {})
    detail = (
        f"{stopping['in_flight']} request(s) were in flight on {stopping['connections']} connection(s); "
        if "in_flight" in stopping
        else ""
    )
    out.write(
        f"node {k} drained and left in {time.monotonic() - t0:.1f} s (exit code {code}): {detail}"
        "its users reconnect to the other nodes\n"
    )
    out.flush()


async def run_demo(
    *,
    nodes: int = 3,
    clients: int = 24,
    duration: float = 0.0,
    interval: float = 1.0,
    timing: ClusterTiming | None = None,
    heartbeat_interval: float | None = None,
    ttl: float | None = None,
    seed: int | None = None,
    stop: asyncio.Event | None = None,
    on_force: list[Callable[[], None]] | None = None,
    out: TextIO | None = None,
    curve: bool = True,
) -> int:
    """Run the demo; returns the exit code (0 when it ran and stopped cleanly).

    ``timing``: the cluster's timings (default :meth:`ClusterTiming.local`;
    ``heartbeat_interval``/``ttl`` override it). ``stop``: set it to end the demo (the
    CLI sets it on SIGINT/SIGTERM). ``on_force``:
    the driver appends a hook that SIGKILLs the cluster's processes (for a forced exit).
    ``curve``: the nodes talk over CURVE with throwaway keys (removed at the end).
    """
    from superline_zmq.testing.cluster import ClusterError, LocalCluster

    out = out or sys.stdout
    stop = stop or asyncio.Event()
    tty = out.isatty()
    rng = random.Random(seed)
    cluster = LocalCluster(
        "superline_zmq.demo:app",
        nodes,
        timing=timing,
        heartbeat_interval=heartbeat_interval,
        ttl=ttl,
        ready_timeout=30.0,
        graceful_teardown=True,
        curve=curve,
    )
    if on_force is not None:

        def kill_all() -> None:
            for pid in cluster.pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

        on_force.append(kill_all)
    stats = DemoStats()
    stop_clients = asyncio.Event()
    sims: list[asyncio.Task[None]] = []
    admin: Client | None = None
    code = 0
    print(f"starting a {nodes}-node local cluster of superline_zmq.demo:app ...", file=sys.stderr, flush=True)
    try:
        starting = asyncio.create_task(cluster.start())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            return 0
        stopped.cancel()
        try:
            starting.result()
        except ClusterError as exc:
            print(f"superline-zmq demo: error: {exc}", file=sys.stderr)
            return 1
        urls = cluster.urls
        admin = await connect(api, urls[0], role="admin", params={"agent": "demo-admin"}, open_timeout=5.0, timeout=3.0)
        sims = [
            asyncio.create_task(simulate_user(i, urls, stats, random.Random(rng.random()), stop_clients))
            for i in range(clients)
        ]
        t0 = time.monotonic()
        overview: Overview | None = None
        probe: Probe | None = None
        while True:
            note = ""
            try:
                overview = await admin.call("overview", timeout=max(1.0, interval))
                if clients:
                    probe = await admin.call("probe", timeout=max(2.5, interval))
            except SuperlineError as exc:
                note = f"(admin request failed: {exc})"
            elapsed = time.monotonic() - t0
            frame = render(
                elapsed=elapsed,
                duration=duration,
                cluster=cluster,
                clients=clients,
                stats=stats,
                overview=overview,
                probe=probe,
                note=note,
            )
            out.write(("\x1b[H\x1b[2J" + frame + "\n") if tty else (frame + "\n\n"))
            out.flush()
            if stop.is_set() or (duration and elapsed >= duration):
                break
            wait = interval if not duration else min(interval, max(0.0, duration - elapsed))
            await _pause(stop, wait)
        if len(cluster.nodes) > 1:
            await drain_one(cluster, len(cluster.nodes) - 1, out)
    finally:
        stop_clients.set()
        if sims:
            _, pending = await asyncio.wait(sims, timeout=8.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        if admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), 5.0)
        await cluster.close(graceful=True, timeout=10.0)
    failed = [n for n in cluster.nodes if n.returncode != 0]
    if failed:
        code = 1
        for n in failed:
            print(f"superline-zmq demo: node {n.index} exited with {n.returncode}\n{n.stderr(10)}", file=sys.stderr)
    print(
        f"demo finished: {len(cluster.nodes)} nodes, {stats.sessions} sessions, {stats.said} messages said, "
        f"{stats.delivered} delivered",
        file=out,
        flush=True,
    )
    return code
