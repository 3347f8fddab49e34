"""The ASGI transport: a :class:`~superline_zmq.transport.Gateway` as an ASGI 3 application.

Theory of operation. An ASGI server (uvicorn, hypercorn, ...) owns the sockets, the HTTP
parsing and the WebSocket framing, and calls the application once per connection with a
``scope`` and two coroutines, ``receive`` and ``send``. :class:`AsgiEndpoint` is that
application:

* ``websocket`` scope: after ``websocket.connect`` the gateway decides on a
  :class:`~superline_zmq.transport.Handshake` made from the scope (headers, query string,
  client address, and the path *below* the mount point; ``transport="websocket"``, since the
  client speaks WebSocket whatever serves it).
  A refusal is an HTTP response with the gateway's status when the server offers the
  ``websocket.http.response`` extension (uvicorn with any of its WebSocket implementations,
  hypercorn); otherwise it is ``websocket.close`` with 1008 before accept, which the ASGI spec
  makes the server answer with a plain HTTP 403 (e.g. Daphne). Accepted, the connection is an
  :class:`AsgiLink`: the application call itself reads (``receive``) and delivers to the
  gateway's handler once started; one writer task per connection drains an outbound queue
  into ``send``, so :meth:`AsgiLink.send` never waits and :meth:`AsgiLink.buffered` is the
  bytes queued and not yet taken by the server. Inbound messages larger than
  ``gateway.max_message_size`` close the connection with 1009 (checked here: the server has
  its own, usually larger, limit, e.g. uvicorn ``--ws-max-size`` 16 MiB).
* ``http`` scope: the optional ``http`` hook (health checks), else 404 in plain text.
* ``lifespan`` scope: runs ``on_startup`` / ``on_shutdown`` and answers
  ``lifespan.startup.complete`` / ``.failed`` and ``lifespan.shutdown.complete`` / ``.failed``.
  Starlette does not forward lifespan to mounted apps: mounted, start and close the server in
  your own lifespan; standalone (``uvicorn module:app``) pass them here.

Mounting. Under ``Starlette(routes=[Mount("/ws", app=endpoint)])`` clients dial ``/ws/``
(Starlette's Mount matches the prefix followed by a slash) and the gateway sees the path
``/``; ``root_path`` is stripped the same way as Starlette does, whether the server puts the
mount point into ``path`` (ASGI 3, current Starlette) or not.

What ASGI cannot do. There is no way to drop a TCP connection: :meth:`AsgiLink.abort`
forgets what is queued, reports 1006 to the handler at once and ends the application call;
the server then closes the socket its own way (uvicorn closes TCP without a close frame,
hypercorn sends 1011). Servers also differ in the code they report on ``websocket.disconnect``
(hypercorn says 1006 even after a client's clean close, 1000 after ours): when we sent a close
frame the handler gets our code, else the server's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from superline_zmq.transport import (
    Accept,
    Connection,
    Gateway,
    Handshake,
    HttpHandler,
    HttpReply,
    MessageHandler,
    Refuse,
    format_peer,
)

log = logging.getLogger("superline_zmq.transport.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]

_OPEN, _CLOSING, _CLOSED = 0, 1, 2
_HTTP_RESPONSE = "websocket.http.response"


#: Bytes a connection may queue in one loop turn, before its writer runs, without counting as
#: unsent (see :meth:`AsgiLink.buffered`).
BURST_ALLOWANCE = 1 << 20

class ScopeHeaders(Mapping[str, str]):
    """Case-insensitive read-only view of an ASGI scope's headers (last value of a repeated one)."""

    __slots__ = ("_h",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._h = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}

    def __getitem__(self, key: str) -> str:
        return self._h[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._h)

    def __len__(self) -> int:
        return len(self._h)


def route_path(scope: Scope) -> str:
    """The path below ``root_path`` (as Starlette computes it), ``/`` at the mount point."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :]
    return path or "/"


def handshake_of(scope: Scope) -> Handshake:
    """The :class:`~superline_zmq.transport.Handshake` of a ``websocket`` (or ``http``) scope."""
    client = scope.get("client")
    query = scope.get("query_string", b"")
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    return Handshake(
        transport="websocket",
        headers=ScopeHeaders(scope.get("headers") or ()),
        query=dict(parse_qsl(query, keep_blank_values=True)),
        peer=format_peer(tuple(client)) if client else "?",
        path=route_path(scope),
    )


def _utf8_size_over(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes in UTF-8 (encoding only when it must)."""
    n = len(text)
    if n > limit:
        return True
    if 4 * n <= limit:
        return False
    return len(text.encode()) > limit


class AsgiLink:
    """One accepted ASGI WebSocket as a :class:`~superline_zmq.transport.Connection`."""

    __slots__ = (
        "__weakref__",
        "_closed",
        "_code",
        "_endpoint",
        "_gate",
        "_handler",
        "_max",
        "_queue",
        "_queued",
        "_receive",
        "_reported",
        "_send",
        "_sent_code",
        "_state",
        "_stopping",
        "_stuck",
        "_task",
        "_text",
        "_waiter",
        "_writer",
        "peer",
    )

    def __init__(self, endpoint: AsgiEndpoint, receive: Receive, send: Send, peer: str) -> None:
        gateway = endpoint.gateway
        self._endpoint = endpoint
        self._receive = receive
        self._send = send
        self._text = gateway.text
        self._max = gateway.max_message_size
        self.peer = peer
        self._state = _OPEN
        self._code: int | None = None
        self._sent_code: int | None = None
        self._handler: MessageHandler | None = None
        self._reported = False
        self._stopping = False  # abort() asked the application call to end
        self._queue: deque[tuple[Message, int]] = deque()
        self._queued = 0
        self._stuck = False
        self._waiter: asyncio.Future[None] | None = None
        self._gate: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    # -- Connection -------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._state == _OPEN

    @property
    def close_code(self) -> int | None:
        return self._code if self._state == _CLOSED else None

    def send(self, data: bytes) -> bool:
        """Queue one message for the writer task (never waits); False once closing."""
        if self._state != _OPEN:
            return False
        if self._text:
            self._push({"type": "websocket.send", "text": data.decode()}, len(data))
        else:
            self._push({"type": "websocket.send", "bytes": data}, len(data))
        return True

    def buffered(self) -> int:
        """Bytes queued and not yet accepted by the server's ``send``, as backpressure sees them.

        While the writer is stuck in the server's ``send`` (a peer that does not read), all of
        them. Otherwise the writer simply has not run yet in this loop turn (a burst of
        writes, which the server will take at once), and only what exceeds
        :data:`BURST_ALLOWANCE` counts, so a burst is not mistaken for a slow peer but
        memory stays bounded.
        """
        if self._stuck:
            return self._queued
        return max(0, self._queued - BURST_ALLOWANCE)

    def fanout(self, conns: Sequence[Connection], data: bytes) -> int:
        """Queue one shared ASGI message (decoded once) on every open connection among ``conns``."""
        n = len(data)
        message: Message = (
            {"type": "websocket.send", "text": data.decode()}
            if self._text
            else {"type": "websocket.send", "bytes": data}
        )
        count = 0
        for conn in conns:
            if type(conn) is AsgiLink:
                if conn._state == _OPEN:
                    conn._push(message, n)
                    count += 1
            elif conn.send(data):
                count += 1
        return count

    def start(self, handler: MessageHandler) -> None:
        if self._handler is not None:
            raise RuntimeError("this connection was already started")
        self._handler = handler
        if self._state == _CLOSED:
            asyncio.get_running_loop().call_soon(self._report_close)
        self._open_gate()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Queue a close after what is queued and wait for the end, at most ``close_timeout`` s, then abort."""
        self._begin_close(code, reason)
        try:
            await asyncio.wait_for(self.wait_closed(), self._endpoint.close_timeout)
        except TimeoutError:
            self._endpoint.stats["close_timeouts"] += 1
            self.abort()
            await self.wait_closed()

    def abort(self) -> None:
        """Forget what is queued, report 1006 now and end the application call (see the module doc)."""
        if self._state == _CLOSED:
            return
        self._finish(1006)
        self._stopping = True
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._open_gate()

    async def wait_closed(self) -> None:
        if self._state == _CLOSED:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    # -- the application call ---------------------------------------------------------------

    async def run(self) -> None:
        """Read until ``websocket.disconnect``, delivering to the handler once started."""
        self._task = asyncio.current_task()
        try:
            if self._handler is None and self._state == _OPEN:
                self._gate = asyncio.get_running_loop().create_future()
                await self._gate
            await self._read()
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            task = self._task
            if task is not None:
                task.uncancel()
        finally:
            self._task = None
            self._finish(None)
            writer = self._writer
            if not writer.done():
                writer.cancel()  # stuck in the server's send: what it held is dropped
                await asyncio.wait([writer])

    async def _read(self) -> None:
        receive = self._receive
        limit = self._max
        while self._state != _CLOSED:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                if self._state != _OPEN:
                    continue  # we are closing: nothing more is delivered
                text = message.get("text")
                if text is not None:
                    data: bytes | str = text
                    too_big = _utf8_size_over(text, limit)
                else:
                    data = message.get("bytes") or b""
                    too_big = len(data) > limit
                if too_big:
                    self._endpoint.stats["too_big"] += 1
                    self._begin_close(1009, "message too big")
                    continue
                handler = self._handler
                if handler is not None:
                    try:
                        handler.on_message(data)
                    except Exception:
                        log.exception("message handler of %s failed", self.peer)
            elif kind == "websocket.disconnect":
                code = message.get("code")
                self._finish(int(code) if code is not None else 1005)
                return

    def _finish(self, code: int | None) -> None:
        """The connection is over (``code`` None: the call ended without a disconnect message)."""
        if self._state == _CLOSED:
            return
        if self._sent_code is not None:
            code = self._sent_code
        self._code = code if code is not None else 1006
        self._state = _CLOSED
        self._queue.clear()
        self._queued = 0
        self._wake()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._report_close()

    def _report_close(self) -> None:
        if self._reported or self._handler is None or self._state != _CLOSED:
            return
        self._reported = True
        try:
            self._handler.on_close(self._code)
        except Exception:
            log.exception("close handler of %s failed", self.peer)

    def _open_gate(self) -> None:
        gate = self._gate
        if gate is not None and not gate.done():
            gate.set_result(None)

    # -- the writer ---------------------------------------------------------------------------

    def _begin_close(self, code: int, reason: str) -> None:
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        self._sent_code = code
        self._push({"type": "websocket.close", "code": code, "reason": reason}, 0)
        self._open_gate()  # read the end even if never started

    def _push(self, message: Message, n: int) -> None:
        self._queue.append((message, n))
        self._queued += n
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _write_loop(self) -> None:
        """Drain the queue into the server's ``send``, one message at a time, until the close."""
        queue, send = self._queue, self._send
        loop = asyncio.get_running_loop()
        while self._state != _CLOSED:
            if not queue:
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
                continue
            message, n = queue.popleft()
            self._stuck = True  # seen by others only if send() suspends: the peer is not reading
            try:
                await send(message)
            except Exception as exc:  # the server refuses: the connection is gone
                log.debug("send to %s failed: %r", self.peer, exc)
                return
            finally:
                self._stuck = False
                self._queued = max(0, self._queued - n)
            if message["type"] == "websocket.close":
                return


class AsgiEndpoint:
    """An ASGI 3 application serving a :class:`~superline_zmq.transport.Gateway` (see the module doc)."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
        http: HttpHandler | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        self.gateway = gateway
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.http = http
        #: Seconds :meth:`AsgiLink.close` waits for the server to report the end before aborting.
        self.close_timeout = close_timeout
        self.closing = False
        self.links: set[AsgiLink] = set()
        self.stats = {"accepted": 0, "refused": 0, "refused_by_close": 0, "too_big": 0, "close_timeouts": 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"unsupported ASGI scope type {kind!r}")

    # -- the Listener side (for a server that treats this like its other transports) ----------

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """None of ours: the ASGI server listens."""
        return []

    def close(self) -> None:
        """Refuse new handshakes with 503 from now on (open connections are the gateway's to close)."""
        self.closing = True

    async def wait_closed(self) -> None:
        """Wait until every accepted connection is closed."""
        while self.links:
            conn = next(iter(self.links))
            await conn.wait_closed()
            if conn in self.links:
                await asyncio.sleep(0)  # closed, but not yet forgotten (that runs from the loop): never spin

    def statistics(self) -> dict[str, int]:
        """Counters since start: handshakes accepted and refused, oversize closes, close timeouts."""
        return {**self.stats, "connections": len(self.links)}

    # -- scopes ---------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        handshake = handshake_of(scope)
        try:
            decision = await self.gateway.decide(handshake)
        except Exception:
            log.exception("deciding on the upgrade from %s failed", handshake.peer)
            decision = Refuse(500, "Internal Server Error\n")
        if self.closing:
            decision = Refuse(503, "The server is shutting down.\n")
        if isinstance(decision, Refuse):
            self.stats["refused"] += 1
            await self._refuse(scope, send, decision)
            return
        assert isinstance(decision, Accept)
        try:
            await send({"type": "websocket.accept"})
        except OSError:  # gone before the accept went out
            return
        self.stats["accepted"] += 1
        link = AsgiLink(self, receive, send, handshake.peer)
        self.links.add(link)
        try:
            try:
                self.gateway.open(link, decision.grant)
            except Exception:
                log.exception("opening the connection from %s failed", link.peer)
                link.abort()
            await link.run()
        finally:
            self.links.discard(link)

    async def _refuse(self, scope: Scope, send: Send, decision: Refuse) -> None:
        if _HTTP_RESPONSE in (scope.get("extensions") or {}):
            body = decision.body.encode()
            own = {name.lower() for name, _ in decision.headers}
            headers = [(b"content-length", str(len(body)).encode())]
            if "content-type" not in own:
                headers.append((b"content-type", b"text/plain; charset=utf-8"))
            headers += [(name.lower().encode(), value.encode()) for name, value in decision.headers]
            await send({"type": "websocket.http.response.start", "status": decision.status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            self.stats["refused_by_close"] += 1
            reason = decision.body.strip().encode()[:123].decode(errors="ignore")
            await send({"type": "websocket.close", "code": 1008, "reason": reason})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        reply = None
        if self.http is not None:
            reply = await self.http(handshake_of(scope))
        if reply is None:
            reply = HttpReply(404, "Not Found\n")
        body = reply.body.encode()
        fields = {"content-type": reply.content_type, "content-length": str(len(body))}
        fields.update((name.lower(), value) for name, value in reply.headers)  # the reply's own win
        headers = [(name.encode(), value.encode()) for name, value in fields.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "lifespan.startup":
                if not await self._run_hook(self.on_startup, "startup", send):
                    return
            elif kind == "lifespan.shutdown":
                await self._run_hook(self.on_shutdown, "shutdown", send)
                return

    async def _run_hook(self, hook: Hook | None, phase: str, send: Send) -> bool:
        try:
            if hook is not None:
                await hook()
        except Exception as exc:
            log.exception("lifespan %s failed", phase)
            await send({"type": f"lifespan.{phase}.failed", "message": f"{type(exc).__name__}: {exc}"})
            return False
        await send({"type": f"lifespan.{phase}.complete"})
        return True


__all__ = ["AsgiEndpoint", "AsgiLink", "ScopeHeaders", "handshake_of", "route_path"]
