"""The contract and handlers the typed-core tests run against.

``api`` has a shared block and two roles (``user``, ``agent``). ``build_server(**options)``
returns an un-started server with every handler the tests need implemented, except
``unimplemented`` (declared, deliberately left without a handler). The handlers record
what they saw on the returned server's ``app`` attribute (an :class:`AppState`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgspec

from superline_zmq import (
    Conn,
    SocketError,
    create_socket_server,
    define_contract,
    event,
    request,
    server_request,
    topic,
)

#: Text of the exception ``boom`` raises; it must never reach a client.
BOOM_DETAIL = "kaboom: secret internal detail 0xDEADBEEF"


class Greet(msgspec.Struct):
    name: str


class Greeting(msgspec.Struct):
    text: str


class Item(msgspec.Struct):
    id: int
    tags: list[str] = []


class Notice(msgspec.Struct):
    text: str


class Price(msgspec.Struct):
    symbol: str
    price: float


class Alert(msgspec.Struct):
    level: int


class Confirm(msgspec.Struct):
    q: str


class Answer(msgspec.Struct):
    ok: bool


class Whoami(msgspec.Struct):
    role: str
    ctx: Any = None


class Assign(msgspec.Struct):
    ticket: str


api = define_contract(
    shared={
        "client_to_server": {
            "greet": request(Greet, Greeting),
            "echo": request(Item, Item),
            "fail": request(None, None),
            "boom": request(None, None),
            "block": request(None, None),
            "nothing": request(None, None),
            "unimplemented": request(None, None),
        },
        "server_to_client": {
            "notice": event(Notice),
            "prices": topic(Price),
            "secret": topic(Price),
            "big": topic(str),
            "confirm": server_request(Confirm, Answer),
        },
    },
    roles={
        "user": {
            "client_to_server": {"whoami": request(None, Whoami)},
            "server_to_client": {"alerts": topic(Alert), "poll": server_request(None, int)},
        },
        "agent": {
            "client_to_server": {"assign": request(Assign, Answer)},
            "server_to_client": {"tasks": topic(Assign)},
        },
    },
)


@dataclass
class AppState:
    """What the handlers observed; ``release`` unblocks every ``block`` call."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    blocked: int = 0


def build_server(**options: Any) -> Any:
    """An un-started server for ``api`` with the standard handlers implemented."""
    srv = create_socket_server(api, **options)
    state = AppState()
    srv.app = state  # type: ignore[attr-defined]

    async def greet(inp: Greet, ctx: Any, conn: Conn) -> Greeting:
        state.calls.append(("greet", inp))
        return Greeting(f"hello {inp.name}")

    async def echo(inp: Item, ctx: Any, conn: Conn) -> Item:
        state.calls.append(("echo", inp))
        return inp

    async def fail(inp: None, ctx: Any, conn: Conn) -> None:
        state.calls.append(("fail", inp))
        raise SocketError("CONFLICT", "room is taken", {"room": "lobby", "n": 3})

    async def boom(inp: None, ctx: Any, conn: Conn) -> None:
        state.calls.append(("boom", inp))
        raise RuntimeError(BOOM_DETAIL)

    async def block(inp: None, ctx: Any, conn: Conn) -> None:
        state.calls.append(("block", inp))
        state.blocked += 1
        await state.release.wait()

    async def nothing(inp: None, ctx: Any, conn: Conn) -> None:
        state.calls.append(("nothing", inp))
        return None

    async def whoami(inp: None, ctx: Any, conn: Conn) -> Whoami:
        state.calls.append(("whoami", inp))
        return Whoami(conn.role, ctx)

    async def assign(inp: Assign, ctx: Any, conn: Conn) -> Answer:
        state.calls.append(("assign", inp))
        return Answer(True)

    srv.implement(
        {
            "shared": {
                "greet": greet,
                "echo": echo,
                "fail": fail,
                "boom": boom,
                "block": block,
                "nothing": nothing,
            },
            "user": {"whoami": whoami},
            "agent": {"assign": assign},
        }
    )
    return srv
