"""Running the app's code for a request or a subscribe: middleware, validation, handler, authorization.

The order is the protocol's (PROTOCOL §5): the name was already found (else ``NOT_FOUND``,
decided by the session), then the middleware chain, then input validation
(``VALIDATION`` with msgspec's path-bearing message and an issue list), then the handler.
A middleware that returns without calling ``next()`` is a bug in the app and raises.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from superline_zmq import wire
from superline_zmq.errors import ErrorCode, SocketError
from superline_zmq.session import Route
from superline_zmq.tasks import maybe_await
from superline_zmq.validation import validation_error

if TYPE_CHECKING:
    from superline_zmq.handles import Conn

Next = Callable[[], Awaitable[Any]]
Middleware = Callable[[Any, "MiddlewareInfo", Next], Awaitable[Any]]


@dataclass(frozen=True)
class MiddlewareInfo:
    """What a middleware learns of the operation it wraps."""

    kind: Literal["request", "subscribe"]
    name: str
    conn: Conn


class Dispatcher:
    """Calls the app: middleware chain, input validation, handler, ``authorize_subscribe``."""

    def __init__(
        self,
        middleware: Sequence[Middleware],
        authorize_subscribe: Callable[[str, Any, Conn], Any] | None,
        null: bytes,
    ) -> None:
        self.middleware = tuple(middleware)
        self.authorize_subscribe = authorize_subscribe
        self._null = null

    async def request(self, conn: Conn, frame: wire.Req, route: Route) -> Any:
        """The handler's result for ``frame``; raises what the chain raised."""
        if self.middleware:
            return await self._chain(
                conn, MiddlewareInfo("request", frame.m, conn), lambda: self._call(conn, frame, route)
            )
        return await self._call(conn, frame, route)

    async def _call(self, conn: Conn, frame: wire.Req, route: Route) -> Any:
        try:
            value = wire.payload(frame.d, route.decoder, self._null)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, f"input of {frame.m!r}") from exc
        result = route.handler(value, conn.ctx, conn)
        return await result if inspect.isawaitable(result) else result

    async def subscribe(self, conn: Conn, name: str) -> None:
        """Authorize a subscribe; raises ``FORBIDDEN`` (or what the chain raised) to refuse it."""
        if self.middleware:
            await self._chain(conn, MiddlewareInfo("subscribe", name, conn), lambda: self._authorize(conn, name))
        else:
            await self._authorize(conn, name)

    async def _authorize(self, conn: Conn, name: str) -> None:
        if self.authorize_subscribe is None:
            return
        if not await maybe_await(self.authorize_subscribe(name, conn.ctx, conn)):
            raise SocketError(ErrorCode.FORBIDDEN, f"Subscribe denied: {name}")

    async def _chain(self, conn: Conn, info: MiddlewareInfo, final: Next) -> Any:
        middleware = self.middleware
        reached = False

        async def step(k: int) -> Any:
            nonlocal reached
            if k == len(middleware):
                reached = True
                return await final()
            return await middleware[k](conn.ctx, info, lambda: step(k + 1))

        result = await step(0)
        if not reached:
            raise RuntimeError(f"a middleware returned without calling next() or raising ({info.kind} {info.name})")
        return result
