"""The Python side of the TypeScript-client interop test.

Implements, with our public API, the contract that ``tests/interop/ts_scenarios.mjs``
declares with zod; keep the two in step. ``build_server(**options)`` returns an
un-started server; options go to :func:`superline_zmq.create_socket_server`, except
``log``: a list the app appends ``(kind, ...)`` tuples to (connections, disconnections,
subscribe decisions), so a test can check the server's view of what the client did.
"""

from __future__ import annotations

from typing import Any

import msgspec

from superline_zmq import (
    Auth,
    Conn,
    Handshake,
    SocketError,
    create_socket_server,
    define_contract,
    event,
    request,
    server_request,
    topic,
)

#: The token the scenarios send as the ``token`` query parameter.
TOKEN = "interop-token"
#: Text of the exception ``boom`` raises; must never reach the client.
BOOM_DETAIL = "kaboom: secret internal detail"


class Text(msgspec.Struct):
    text: str


class Ok(msgspec.Struct):
    ok: bool


class Confirm(msgspec.Struct):
    q: str


class Tick(msgspec.Struct):
    n: int


api = define_contract(
    shared={
        "client_to_server": {
            "echo": request(Text, Text),
            "fail": request(Text, Text),
            "boom": request(Text, Text),
            "poke": request(Text, Ok),
            "tick": request(Tick, Ok),
            "ask": request(Text, Ok),
        },
        "server_to_client": {
            "notice": event(Text),
            "ticks": topic(Tick),
            "secret": topic(Tick),
            "confirm": server_request(Confirm, Ok),
        },
    },
    roles={
        "user": {"client_to_server": {"whoami": request(None, Text)}},
        "agent": {"client_to_server": {"report": request(Text, Ok)}},
    },
)


def build_server(*, log: list[tuple[Any, ...]] | None = None, **options: Any) -> Any:
    """A server for ``api``; ``options`` are passed to ``create_socket_server``."""
    events: list[tuple[Any, ...]] = log if log is not None else []

    def authenticate(hs: Handshake) -> Auth:
        if hs.query.get("token") != TOKEN:
            raise SocketError("UNAUTHORIZED", "bad token")
        role = hs.query.get("role", "")
        if role not in api.roles:
            raise SocketError("UNAUTHORIZED", f"unknown role {role!r}")
        return Auth(role=role, ctx={"role": role, "user": hs.query.get("user", "anon")})

    async def on_connection(conn: Conn) -> None:
        events.append(("connect", conn.role))
        conn.emit("notice", Text(text=f"welcome {conn.role}"))

    async def on_disconnect(conn: Conn, *_: Any) -> None:
        events.append(("disconnect", conn.role))

    async def authorize_subscribe(topic_name: str, ctx: Any, conn: Conn) -> bool:
        allowed = topic_name != "secret"
        events.append(("subscribe", topic_name, allowed))
        return allowed

    srv = create_socket_server(
        api,
        authenticate=authenticate,
        on_connection=on_connection,
        on_disconnect=on_disconnect,
        authorize_subscribe=authorize_subscribe,
        **options,
    )

    async def echo(input: Text, ctx: Any, conn: Conn) -> Text:
        return input

    async def fail(input: Text, ctx: Any, conn: Conn) -> Text:
        raise SocketError("NOPE", f"nope: {input.text}", {"reason": "because", "n": 7})

    async def boom(input: Text, ctx: Any, conn: Conn) -> Text:
        raise RuntimeError(BOOM_DETAIL)

    async def poke(input: Text, ctx: Any, conn: Conn) -> Ok:
        conn.emit("notice", Text(text=f"poked:{input.text}"))
        return Ok(ok=True)

    async def tick(input: Tick, ctx: Any, conn: Conn) -> Ok:
        srv.publish("ticks", Tick(n=input.n))
        return Ok(ok=True)

    async def ask(input: Text, ctx: Any, conn: Conn) -> Ok:
        # "go" asks the canonical question; other texts steer the client's handler
        # ("decline" -> typed serr, "bad" -> invalid sres output, "crash" -> INTERNAL).
        q = "ready?" if input.text == "go" else input.text
        answer: Ok = await conn.request("confirm", Confirm(q=q), timeout=5)
        return answer

    async def whoami(input: None, ctx: Any, conn: Conn) -> Text:
        return Text(text=f"{ctx['role']}:{ctx['user']}")

    async def report(input: Text, ctx: Any, conn: Conn) -> Ok:
        events.append(("report", input.text))
        return Ok(ok=True)

    srv.implement(
        {
            "shared": {"echo": echo, "fail": fail, "boom": boom, "poke": poke, "tick": tick, "ask": ask},
            "user": {"whoami": whoami},
            "agent": {"report": report},
        }
    )
    return srv
