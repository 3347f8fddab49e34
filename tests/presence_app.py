"""The app the introspection, presence and targeted-send tests run on every kind of cluster.

Nodes may live in this process or in other OS processes (``superline-zmq run
presence_app:app``), so tests never touch a node's Python objects: they drive each node
through its ``admin`` role, whose requests call the server API being tested
(``srv.cluster.count()``, ``srv.to_conn(id).request(...)``, ...) and return the result.

- ``user`` connections say who they are in the query string: ``?role=user&user=u1&plan=pro
  &rooms=a,b``. ``identify`` returns ``user``; ``describe_conn`` adds ``plan``;
  ``on_connection`` joins the listed rooms (before the presence snapshot is taken).
- ``confirm`` is a shared server request; ``notice`` a shared event; ``whoami`` tells a
  client its connection id and node.
- Every node records its presence events from the start (``srv.cluster.on_user``, and
  ``on_room`` for :data:`WATCHED_ROOMS`, both with ``initial=True``); the admin request
  ``events`` returns them, oldest first, with the node's monotonic clock at each.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from superline_zmq import (
    Auth,
    Conn,
    Handshake,
    RoomDiff,
    SocketServer,
    UserPresence,
    create_socket_server,
    define_contract,
    event,
    request,
)
from superline_zmq import server_request as s_request
from superline_zmq.presence import ConnDescriptor, NodeInfo

#: Rooms whose presence events every node records.
WATCHED_ROOMS = ("lobby", "watched")


class Text(msgspec.Struct):
    text: str


class Question(msgspec.Struct):
    q: str


class Confirmed(msgspec.Struct):
    ok: bool


class Me(msgspec.Struct):
    id: str
    node: str
    role: str
    user: str | None


class Target(msgspec.Struct):
    id: str


class EmitTo(msgspec.Struct):
    id: str
    text: str


class CloseTo(msgspec.Struct):
    id: str
    code: int = 1000


class AskTo(msgspec.Struct):
    id: str
    q: str
    timeout: float = 5.0
    name: str = "confirm"


class UserMsg(msgspec.Struct):
    user: str
    text: str = ""


class RoomMsg(msgspec.Struct):
    room: str
    text: str = ""


class Membership(msgspec.Struct):
    id: str
    room: str


class Local(msgspec.Struct):
    node: str
    connections: list[str]
    rooms: list[str]
    topics: list[str]
    #: srv.room(name).size and len(srv.room(name).connections) for each local room
    sizes: dict[str, tuple[int, int]] = {}


class UserState(msgspec.Struct):
    acks: int = 0


class PresenceEvent(msgspec.Struct, kw_only=True):
    """One presence event a node's listener got: a user's (``user`` set) or a room's (``room`` set)."""

    at: float  # the node's time.monotonic()
    user: str | None = None
    online: bool = False
    node: str = ""
    connections: int = 0
    room: str | None = None
    joins: list[str] = []
    leaves: list[str] = []


api = define_contract(
    shared={
        "client_to_server": {"whoami": request(None, Me)},
        "server_to_client": {
            "notice": event(Text),
            "sync": event(int),
            "confirm": s_request(Question, Confirmed),
            "bad_confirm": s_request(Question, Confirmed),
        },
    },
    roles={
        "user": {"data": UserState, "client_to_server": {"ack": request(None, int)}},
        "admin": {
            "client_to_server": {
                "count": request(None, int),
                "connections": request(None, list[ConnDescriptor]),
                "by_user": request(str, list[ConnDescriptor]),
                "room": request(str, list[ConnDescriptor]),
                "topology": request(None, list[NodeInfo]),
                "is_online": request(str, bool),
                "local": request(None, Local),
                "emit_to": request(EmitTo, None),
                "close_to": request(CloseTo, None),
                "ask": request(AskTo, Confirmed),
                "emit_user": request(UserMsg, None),
                "disconnect_user": request(UserMsg, None),
                "join": request(Membership, None),
                "leave": request(Membership, None),
                "broadcast": request(RoomMsg, None),
                "stats": request(None, dict[str, int]),
                "events": request(None, list[PresenceEvent]),
            }
        },
    },
)


def _authenticate(hs: Handshake) -> Auth:
    return Auth(hs.query.get("role", "user"), dict(hs.query))


def build_server(**options: Any) -> SocketServer:
    """An un-started server for ``api``; ``options`` go to ``create_socket_server``."""
    options.setdefault("heartbeat", False)

    async def on_connection(conn: Conn) -> None:
        if conn.role == "user":
            conn.data = UserState()
            for room in filter(None, conn.ctx.get("rooms", "").split(",")):
                await srv.room(room).add(conn)

    srv = create_socket_server(
        api,
        authenticate=_authenticate,
        on_connection=on_connection,
        identify=lambda conn: conn.ctx.get("user"),
        describe_conn=lambda conn: {"plan": conn.ctx["plan"]} if "plan" in conn.ctx else {},
        **options,
    )
    recorded: list[PresenceEvent] = []

    def on_user(up: UserPresence) -> None:
        recorded.append(
            PresenceEvent(
                at=time.monotonic(), user=up.user_id, online=up.online, node=up.node_id, connections=up.connections
            )
        )

    def on_room(diff: RoomDiff) -> None:
        joins, leaves = [d.id for d in diff.joins], [d.id for d in diff.leaves]
        recorded.append(PresenceEvent(at=time.monotonic(), room=diff.room, joins=joins, leaves=leaves))

    srv.cluster.on_user(on_user)
    for room in WATCHED_ROOMS:
        srv.cluster.on_room(room, on_room)

    def local_conn(id: str) -> Conn:
        conn = srv.get(id)
        if conn is None:
            raise ValueError(f"{id} is not on node {srv.node_id}")
        return conn

    async def whoami(_: None, ctx: Any, conn: Conn) -> Me:
        return Me(conn.id, srv.node_id, conn.role, conn.user_id)

    async def ack(_: None, ctx: Any, conn: Conn) -> int:
        conn.data.acks += 1
        return int(conn.data.acks)

    async def local(_: None, ctx: Any, conn: Conn) -> Local:
        view = srv.local
        sizes = {r: (srv.room(r).size, len(srv.room(r).connections)) for r in view.rooms}
        return Local(srv.node_id, [c.id for c in view.connections], view.rooms, view.topics, sizes)

    async def emit_to(m: EmitTo, ctx: Any, conn: Conn) -> None:
        srv.to_conn(m.id).emit("notice", Text(m.text))

    async def close_to(m: CloseTo, ctx: Any, conn: Conn) -> None:
        srv.to_conn(m.id).close(m.code)

    async def ask(m: AskTo, ctx: Any, conn: Conn) -> Confirmed:
        answer: Confirmed = await srv.to_conn(m.id).request(m.name, Question(m.q), timeout=m.timeout)
        return answer

    async def emit_user(m: UserMsg, ctx: Any, conn: Conn) -> None:
        srv.to_user(m.user).emit("notice", Text(m.text))

    async def disconnect_user(m: UserMsg, ctx: Any, conn: Conn) -> None:
        srv.to_user(m.user).disconnect()

    async def join(m: Membership, ctx: Any, conn: Conn) -> None:
        await srv.room(m.room).add(local_conn(m.id))

    async def leave(m: Membership, ctx: Any, conn: Conn) -> None:
        srv.room(m.room).remove(local_conn(m.id))

    async def broadcast(m: RoomMsg, ctx: Any, conn: Conn) -> None:
        srv.room(m.room).broadcast("notice", Text(m.text))

    async def stats(_: None, ctx: Any, conn: Conn) -> dict[str, int]:
        return {**srv.statistics(), **{f"adapter_{k}": v for k, v in srv.adapter.statistics().items()}}

    srv.implement(
        {
            "shared": {"whoami": whoami},
            "user": {"ack": ack},
            "admin": {
                "count": lambda _, ctx, conn: srv.cluster.count(),
                "connections": lambda _, ctx, conn: srv.cluster.connections(),
                "by_user": lambda uid, ctx, conn: srv.cluster.by_user(uid),
                "room": lambda name, ctx, conn: srv.cluster.room(name),
                "topology": lambda _, ctx, conn: srv.cluster.topology(),
                "is_online": lambda uid, ctx, conn: srv.is_online(uid),
                "local": local,
                "emit_to": emit_to,
                "close_to": close_to,
                "ask": ask,
                "emit_user": emit_user,
                "disconnect_user": disconnect_user,
                "join": join,
                "leave": leave,
                "broadcast": broadcast,
                "stats": stats,
                "events": lambda _, ctx, conn: list(recorded),
            },
        }
    )
    return srv


def app() -> SocketServer:
    """Entry point for ``superline-zmq run presence_app:app`` (heartbeat from the environment)."""
    interval = os.environ.get("PRESENCE_APP_HEARTBEAT")
    return build_server(heartbeat={"interval": float(interval)} if interval else False)
