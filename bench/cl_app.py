"""The bench app both cluster benchmarks run on every node (`superline-zmq run cl_app:app`).

Nodes are separate OS processes, so the benchmarks drive them through requests:

- `user` connections (`?role=user`, optionally `&user=<id>`: `identify` returns it) can call the shared
  `whoami` (their connection id, for `to_conn`), `join` (room "bench"), `stats` and `profile`.
- `admin` connections (`?role=admin`) start the send loops *inside this node*: `emit` (`to_conn(id).emit` or
  `room(name).broadcast`, see `cl_common.run_sends`), `ask` (`to_conn(id).request("confirm", ...)`, see
  `cl_common.run_asks`); and read presence: `marks`, `watch_gone`, `visible`.

Presence marks (for cluster_convergence.py). This reads private attributes, which is acceptable in a bench
app only: once the server has started, `BenchServer` wraps the ZeroMQ adapter's presence replica
(`srv.adapter._driver.gossip.replica`), methods `_put`, `_remove` and `forget`, which every change to the replica's
indexes goes through (deltas, snapshots, a node leaving). For every user id it records the
`time.monotonic()` at which the user first became visible on this node (`_put`) and first stopped being
visible (`_remove`/`forget`), with the public `srv.is_online` semantics checked right there
(`replica.is_online(user)` must be true after a put, false after a remove; a disagreement is counted in
`mismatches`). On the node that owns the connection the same hook fires when the server writes its own
slice, just before the delta is broadcast, so `remote mark - owner mark` is the gossip propagation delay.
A node that crashes is never removed, only timed out (liveness is evaluated at query time), so crash
detection is measured by polling the public API instead (`watch_gone`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from cl_common import (
    ROOM,
    AskResult,
    AskRun,
    Confirmed,
    EmitRun,
    Me,
    ProfileCtl,
    Profiler,
    Question,
    RunResult,
    Tick,
    make_pad,
    run_asks,
    run_sends,
)

from superline_zmq import Auth, Conn, Handshake, SocketServer, define_contract, event, request
from superline_zmq import server_request as s_request
from superline_zmq.presence import ConnDescriptor


class Marks(msgspec.Struct):
    """This node's presence marks: user -> monotonic time it appeared / disappeared here, and its owner."""

    node: str
    up: dict[str, float]
    down: dict[str, float]
    owner: dict[str, str]
    mismatches: int
    hooked: bool


class WatchGone(msgspec.Struct):
    """Poll `srv.is_online(u)` for each of `users` (and `node`'s liveness in `srv.cluster.topology()`)."""

    users: list[str]
    node: str = ""
    poll: float = 0.001
    timeout: float = 15.0


class Gone(msgspec.Struct):
    """When (monotonic s) the watch started, the users all went offline, the node showed dead (-1: never)."""

    t_armed: float
    online_at_arm: int
    t_gone: float
    t_node_dead: float
    #: when this node last heard from `node` (gossip liveness, private state; -1 unknown)
    last_heard: float
    timed_out: bool


api = define_contract(
    shared={
        "client_to_server": {
            "whoami": request(None, Me),
            "join": request(str, int),
            "stats": request(None, dict[str, int]),
            "profile": request(ProfileCtl, None),
        },
        "server_to_client": {"tick": event(Tick), "confirm": s_request(Question, Confirmed)},
    },
    roles={
        "user": {},
        "admin": {
            "client_to_server": {
                "emit": request(EmitRun, RunResult),
                "ask": request(AskRun, AskResult),
                "marks": request(None, Marks),
                "watch_gone": request(WatchGone, Gone),
                "visible": request(list[str], int),
            }
        },
    },
)


class BenchServer(SocketServer):
    """A SocketServer that, once started, records when each user appears and disappears in presence."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.up: dict[str, float] = {}
        self.down: dict[str, float] = {}
        self.owner: dict[str, str] = {}
        self.mismatches = 0
        self.hooked = False

    async def start(self) -> None:
        await super().start()
        self._hook_replica()

    def _replica(self) -> Any:
        driver = getattr(self.adapter, "_driver", None)  # private: the adapter's gossip driver
        return None if driver is None else driver.gossip.replica

    def _hook_replica(self) -> None:
        replica = self._replica()
        if replica is None or self.hooked:
            return
        self.hooked = True
        put, remove, forget = replica._put, replica._remove, replica.forget
        clock = time.monotonic
        up, down, owner = self.up, self.down, self.owner

        def seen_down(desc: ConnDescriptor | None) -> None:
            uid = desc.user_id if desc is not None else None
            if uid is not None and uid not in down:
                down[uid] = clock()
                if replica.is_online(uid):
                    self.mismatches += 1

        def hooked_put(node: Any, s: Any, desc: ConnDescriptor) -> None:
            put(node, s, desc)
            uid = desc.user_id
            if uid is not None and uid not in up:
                up[uid] = clock()
                owner[uid] = desc.node_id
                if not replica.is_online(uid):
                    self.mismatches += 1

        def hooked_remove(s: Any, conn_id: str) -> None:
            desc = s.conns.get(conn_id)
            remove(s, conn_id)
            seen_down(desc)

        def hooked_forget(node: Any) -> Any:
            s = replica._slices.get(node)
            descs = list(s.conns.values()) if s is not None else []
            result = forget(node)
            for desc in descs:
                seen_down(desc)
            return result

        replica._put = hooked_put
        replica._remove = hooked_remove
        replica.forget = hooked_forget

    def last_heard(self, node: str) -> float:
        """When this node last heard from `node` (private gossip state), -1 if unknown."""
        driver = getattr(self.adapter, "_driver", None)
        m = None if driver is None else driver.gossip.membership.get(node)
        return float(m.heard_at) if m is not None else -1.0


def _authenticate(hs: Handshake) -> Auth:
    return Auth(hs.query.get("role", "user"), dict(hs.query))


def build_server(**options: Any) -> BenchServer:
    """An un-started bench server; `options` go to the SocketServer constructor."""
    srv = BenchServer(api, authenticate=_authenticate, identify=lambda conn: conn.ctx.get("user"), **options)
    profiler = Profiler(srv.node_id)

    async def whoami(_: None, ctx: Any, conn: Conn) -> Me:
        return Me(conn.id, srv.node_id)

    async def join(name: str, ctx: Any, conn: Conn) -> int:
        room = srv.room(name or ROOM)
        await room.add(conn)
        return room.size

    async def stats(_: None, ctx: Any, conn: Conn) -> dict[str, int]:
        return {**srv.statistics(), **{f"adapter_{k}": v for k, v in srv.adapter.statistics().items()}}

    async def profile(ctl: ProfileCtl, ctx: Any, conn: Conn) -> None:
        profiler.control(ctl)

    async def emit(run: EmitRun, ctx: Any, conn: Conn) -> RunResult:
        pad = make_pad(run.payload_bytes)
        mono = time.monotonic_ns
        room, target = run.room, run.target

        if room:

            def send(seq: int) -> bool:
                srv.room(room).broadcast("tick", Tick(seq, mono(), pad))
                return True

        else:

            def send(seq: int) -> bool:
                srv.to_conn(target).emit("tick", Tick(seq, mono(), pad))
                return True

        return await run_sends(run, send)

    async def ask(run: AskRun, ctx: Any, conn: Conn) -> AskResult:
        mono = time.monotonic_ns
        target, timeout = run.target, run.timeout

        async def one(seq: int) -> Confirmed:
            answer: Confirmed = await srv.to_conn(target).request("confirm", Question(seq, mono()), timeout=timeout)
            return answer

        return await run_asks(run, one)

    async def marks(_: None, ctx: Any, conn: Conn) -> Marks:
        return Marks(srv.node_id, dict(srv.up), dict(srv.down), dict(srv.owner), srv.mismatches, srv.hooked)

    async def online(users: list[str]) -> int:
        return sum([await srv.is_online(u) for u in users])

    async def visible(users: list[str], ctx: Any, conn: Conn) -> int:
        return await online(users)

    async def watch_gone(w: WatchGone, ctx: Any, conn: Conn) -> Gone:
        clock = time.monotonic
        t_armed = clock()
        at_arm = await online(w.users)
        deadline = t_armed + min(w.timeout, 60.0)
        t_gone = t_dead = heard = -1.0
        while True:
            now = clock()
            if w.node:
                h = srv.last_heard(w.node)
                heard = h if h >= 0 else heard
            if t_gone < 0 and await online(w.users) == 0:
                t_gone = now
            if w.node and t_dead < 0:
                topo = await srv.cluster.topology()
                if not any(n.node_id == w.node and n.alive for n in topo):
                    t_dead = now
            if (t_gone >= 0 and (t_dead >= 0 or not w.node)) or now >= deadline:
                return Gone(t_armed, at_arm, t_gone, t_dead, heard, now >= deadline and t_gone < 0)
            await asyncio.sleep(w.poll)

    srv.implement(
        {
            "shared": {"whoami": whoami, "join": join, "stats": stats, "profile": profile},
            "admin": {"emit": emit, "ask": ask, "marks": marks, "watch_gone": watch_gone, "visible": visible},
        }
    )
    return srv


def app() -> SocketServer:
    """Entry point for `superline-zmq run cl_app:app` (default heartbeat and backpressure)."""
    return build_server()
