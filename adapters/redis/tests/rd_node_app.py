"""The app the two-process and restart tests run on Redis-linked nodes, driven over WebSockets only.

- ``user`` connections say who they are in the query string (``?role=user&user=u1&rooms=a,b``):
  ``identify`` returns ``user``; ``on_connection`` joins the listed rooms before the presence
  descriptor is written.
- ``admin`` connections call the server API under test on their node (``count``, ``by_user``,
  ``room``, ``topology``, ``emit_to``, ``ask``, ``broadcast``, ``stats``) and return the result.
- ``confirm`` is a shared server request the user clients answer; ``notice`` a shared event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from superline_zmq import Auth, Conn, Handshake, SocketServer, create_socket_server, define_contract, event, request
from superline_zmq import server_request as s_request
from superline_zmq.presence import ConnDescriptor, NodeInfo


class Text(msgspec.Struct):
    text: str


class Question(msgspec.Struct):
    q: str


class Confirmed(msgspec.Struct):
    ok: bool


class Me(msgspec.Struct):
    id: str
    node: str
    user: str | None


class EmitTo(msgspec.Struct):
    id: str
    text: str


class AskTo(msgspec.Struct):
    id: str
    q: str
    timeout: float = 5.0


class RoomMsg(msgspec.Struct):
    room: str
    text: str = ""


api = define_contract(
    shared={
        "client_to_server": {"whoami": request(None, Me)},
        "server_to_client": {"notice": event(Text), "confirm": s_request(Question, Confirmed)},
    },
    roles={
        "user": {},
        "admin": {
            "client_to_server": {
                "count": request(None, int),
                "connections": request(None, list[ConnDescriptor]),
                "by_user": request(str, list[ConnDescriptor]),
                "room": request(str, list[ConnDescriptor]),
                "topology": request(None, list[NodeInfo]),
                "is_online": request(str, bool),
                "emit_to": request(EmitTo, None),
                "ask": request(AskTo, Confirmed),
                "broadcast": request(RoomMsg, None),
                "stats": request(None, dict[str, int]),
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
            for room in filter(None, conn.ctx.get("rooms", "").split(",")):
                await srv.room(room).add(conn)

    srv = create_socket_server(
        api,
        authenticate=_authenticate,
        on_connection=on_connection,
        identify=lambda conn: conn.ctx.get("user"),
        **options,
    )

    async def whoami(_: None, ctx: Any, conn: Conn) -> Me:
        return Me(conn.id, srv.node_id, conn.user_id)

    async def emit_to(m: EmitTo, ctx: Any, conn: Conn) -> None:
        srv.to_conn(m.id).emit("notice", Text(m.text))

    async def ask(m: AskTo, ctx: Any, conn: Conn) -> Confirmed:
        answer: Confirmed = await srv.to_conn(m.id).request("confirm", Question(m.q), timeout=m.timeout)
        return answer

    async def broadcast(m: RoomMsg, ctx: Any, conn: Conn) -> None:
        srv.room(m.room).broadcast("notice", Text(m.text))

    async def stats(_: None, ctx: Any, conn: Conn) -> dict[str, int]:
        return {**srv.statistics(), **{f"adapter_{k}": v for k, v in srv.adapter.statistics().items()}}

    srv.implement(
        {
            "shared": {"whoami": whoami},
            "admin": {
                "count": lambda _, ctx, conn: srv.cluster.count(),
                "connections": lambda _, ctx, conn: srv.cluster.connections(),
                "by_user": lambda uid, ctx, conn: srv.cluster.by_user(uid),
                "room": lambda name, ctx, conn: srv.cluster.room(name),
                "topology": lambda _, ctx, conn: srv.cluster.topology(),
                "is_online": lambda uid, ctx, conn: srv.is_online(uid),
                "emit_to": emit_to,
                "ask": ask,
                "broadcast": broadcast,
                "stats": stats,
            },
        }
    )
    return srv


def app() -> SocketServer:
    """Entry point for ``python -m superline_zmq_redis.node rd_node_app:app``."""
    return build_server()
