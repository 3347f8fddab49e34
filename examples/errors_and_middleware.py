"""Errors and middleware, seen from both ends.

The server authenticates a token, logs every operation with one middleware and refuses
muted users with another. The client then runs into each kind of failure and prints the
``SocketError`` it gets: an application error with its own code and data, VALIDATION,
NOT_FOUND, FORBIDDEN, INTERNAL and UNAUTHORIZED.

Run it with ``python3 examples/errors_and_middleware.py``. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from superline_zmq import (
    Auth,
    Conn,
    Handshake,
    MiddlewareInfo,
    Request,
    SocketError,
    connect,
    create_socket_server,
    define_contract,
    request,
)


class Post(msgspec.Struct):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]


class Posted(msgspec.Struct):
    id: int


POST: Request[Post, Posted] = request(Post, Posted)
EXPORT: Request[None, str] = request(None, str)  # declared, not implemented yet
CRASH: Request[None, None] = request(None, None)  # a handler with a bug
BAN: Request[str, bool] = request(str, bool)

api = define_contract(
    shared={"client_to_server": {"post": POST, "export": EXPORT, "crash": CRASH}},
    roles={"user": {}, "admin": {"client_to_server": {"ban": BAN}}},
)


@dataclass
class User:
    name: str
    muted: bool = False


TOKENS = {"t-alice": ("user", User("alice")), "t-bob": ("user", User("bob", muted=True))}


def authenticate(hs: Handshake) -> Auth:
    """Any exception here refuses the upgrade with HTTP 401."""
    try:
        role, user = TOKENS[hs.query.get("token", "")]
    except KeyError:
        raise SocketError("UNAUTHORIZED", "unknown token") from None
    return Auth(role, user)


Next = Callable[[], Awaitable[Any]]


async def log_calls(ctx: User, info: MiddlewareInfo, next: Next) -> Any:
    """Outermost middleware: sees every request and subscribe, and how it ended."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        return await next()  # return what next() returns: that is the reply
    except SocketError as exc:
        outcome = exc.code
        raise
    except Exception:
        outcome = "crashed"
        raise
    finally:
        ms = (time.perf_counter() - started) * 1000
        print(f"    [server] {ctx.name} {info.kind} {info.name!r}: {outcome} in {ms:.1f} ms")


async def refuse_muted(ctx: User, info: MiddlewareInfo, next: Next) -> Any:
    """Runs before validation and the handler, so a muted user's input is never looked at."""
    if ctx.muted and info.kind == "request" and info.name == "post":
        raise SocketError("FORBIDDEN", "you are muted", {"user": ctx.name})
    return await next()


async def main() -> None:
    posts: list[str] = []

    async def post(input: Post, ctx: User, conn: Conn) -> Posted:
        if input.text in posts:
            # An application error: any code string, a message, and JSON-able data.
            raise SocketError("DUPLICATE", "this was already posted", {"id": posts.index(input.text) + 1})
        posts.append(input.text)
        return Posted(id=len(posts))

    async def crash(input: None, ctx: User, conn: Conn) -> None:
        raise KeyError("database password is hunter2")  # must not reach the client

    def on_error(exc: BaseException, conn: Conn | None) -> None:
        print(f"    [server] on_error: {exc!r} on {conn}")

    srv = create_socket_server(api, authenticate=authenticate, use=[log_calls, refuse_muted], on_error=on_error)
    srv.implement({"shared": {"post": post, "crash": crash}})

    async with srv:
        await srv.listen("127.0.0.1", 0)
        alice = await connect(api, srv.url, role="user", params={"token": "t-alice"})
        bob = await connect(api, srv.url, role="user", params={"token": "t-bob"})

        async def attempt(what: str, call: Awaitable[Any]) -> None:
            print(what)
            try:
                print(f"  -> {await call!r}")
            except SocketError as exc:
                print(f"  -> SocketError code={exc.code} message={exc.message!r} data={exc.data!r}")

        await attempt("alice posts", alice.call(POST, Post("hello")))
        await attempt("alice posts the same text again", alice.call(POST, Post("hello")))
        # A Struct instance is sent as is; the server validates it.
        await attempt("alice posts an empty text", alice.call(POST, Post("")))
        # A dict is converted and validated by the client before anything is sent.
        await attempt("alice posts a dict with a number", alice.call(POST, {"text": 42}))
        await attempt("alice calls a request nobody implemented", alice.call(EXPORT))
        # Another role's request: the client's own surface check answers, as the server would.
        await attempt("alice calls an admin request", alice.call("ban", "bob"))
        await attempt("bob (muted) posts", bob.call(POST, Post("hi")))
        await attempt("alice triggers a bug", alice.call(CRASH))
        await attempt("mallory connects with a bad token", connect(api, srv.url, role="user", params={"token": "?"}))

        await alice.close()
        await bob.close()
    print(f"server stats: {srv.statistics()}")


if __name__ == "__main__":
    asyncio.run(main())
