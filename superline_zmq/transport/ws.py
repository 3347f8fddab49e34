"""The websockets transport: websockets' own asyncio server and client behind the seam.

Server side, :class:`WebsocketsEndpoint` adapts a :class:`~superline_zmq.transport.Gateway`
to websockets' two hooks: ``process_request`` asks the gateway to decide before the
upgrade (a refusal is an HTTP response, never an upgrade), and ``handler`` hands the open
connection to the gateway and then reads it for the session. Users who run their own
``websockets.serve`` pass these two hooks (``srv.process_request``, ``srv.handler``);
:func:`serve` starts one of our own.

Writes go through ``websockets``' synchronous :func:`~websockets.asyncio.server.broadcast`
(one connection or many), which never waits for the peer. How many bytes are still unsent
comes from the connection's asyncio transport, an attribute websockets does not document:
if a release hides it, :func:`write_buffer_visible` says so, backpressure is off (buffered
bytes read as 0) and one warning is logged; ``tests/test_transport_ws.py`` fails then.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import weakref
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.connection import Connection as WsConnection
from websockets.asyncio.server import Server, ServerConnection, broadcast
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse
from websockets.protocol import State

from superline_zmq.transport import (
    Accept,
    ConnectError,
    Connection,
    Gateway,
    Handshake,
    MessageHandler,
    Refuse,
    format_peer,
)

log = logging.getLogger("superline_zmq.transport")

#: Close code and reason when an embedded handler runs without ``process_request`` and refuses.
EMBEDDED_REFUSAL_CODE = 4401


def _write_buffer(ws: WsConnection) -> asyncio.WriteTransport | None:
    transport = getattr(ws, "transport", None)
    # uvloop's transports have the asyncio methods without subclassing asyncio.WriteTransport.
    return cast(asyncio.WriteTransport, transport) if hasattr(transport, "get_write_buffer_size") else None


_warned_hidden = False


def write_buffer_visible(ws: WsConnection) -> bool:
    """Whether this websockets release lets us read a connection's unsent bytes (backpressure)."""
    return _write_buffer(ws) is not None


class WsLink:
    """A websockets connection (server or client side) as a :class:`~superline_zmq.transport.Connection`."""

    __slots__ = ("__weakref__", "_done", "_handler", "_reader", "_started", "_text", "_transport", "_ws", "peer")

    def __init__(self, ws: WsConnection, *, text: bool) -> None:
        global _warned_hidden
        self._ws = ws
        self._text = text
        self._handler: MessageHandler | None = None
        self._started = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._done = False
        self._transport = _write_buffer(ws)
        if self._transport is None and not _warned_hidden:
            _warned_hidden = True
            log.warning("this websockets release hides its connections' transport: backpressure is off")
        self.peer = format_peer(ws.remote_address)

    def fanout(self, conns: Sequence[Connection], data: bytes) -> int:
        """One ``websockets.broadcast`` call for all of them (it frames per connection)."""
        targets = [c._ws for c in conns if isinstance(c, WsLink)]
        broadcast(targets, data, text=self._text)
        return len(targets)

    @property
    def open(self) -> bool:
        return self._ws.state is State.OPEN

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    def send(self, data: bytes) -> bool:
        if self._ws.state is not State.OPEN:
            return False
        broadcast((self._ws,), data, text=self._text)
        return True

    def buffered(self) -> int:
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def start(self, handler: MessageHandler) -> None:
        if self._handler is not None:
            raise RuntimeError("this connection was already started")
        self._handler = handler
        self._started.set()

    def start_reader(self, handler: MessageHandler) -> None:
        """Client side: start, and read in a task this connection owns (awaited by :meth:`wait_closed`)."""
        self.start(handler)
        self._reader = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Wait for :meth:`start`, then deliver every message; ``on_close`` exactly once at the end."""
        await self._started.wait()
        handler = self._handler
        assert handler is not None
        try:
            async for msg in self._ws:
                handler.on_message(msg)
        except ConnectionClosed:
            pass
        finally:
            self._done = True
            handler.on_close(self._ws.close_code)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)

    def abort(self) -> None:
        transport = getattr(self._ws, "transport", None)
        if transport is not None:
            transport.abort()

    async def wait_closed(self) -> None:
        await self._ws.wait_closed()
        if self._reader is not None:
            await asyncio.shield(self._reader)


def handshake_of(connection: ServerConnection, request: HttpRequest, transport: str = "websocket") -> Handshake:
    """The :class:`~superline_zmq.transport.Handshake` of an upgrade request."""
    url = urlsplit(request.path)
    return Handshake(
        transport=transport,
        headers=HeaderView(request.headers),
        query=dict(parse_qsl(url.query, keep_blank_values=True)),
        peer=format_peer(connection.remote_address),
        path=url.path,
    )


class HeaderView(Mapping[str, str]):
    """Case-insensitive read-only view of request headers (last value of a repeated header)."""

    def __init__(self, headers: Headers) -> None:
        self._h = headers

    def __getitem__(self, key: str) -> str:
        values = self._h.get_all(key)
        if not values:
            raise KeyError(key)
        return values[-1]

    def __iter__(self) -> Any:
        return iter(dict.fromkeys(k.lower() for k in self._h))

    def __len__(self) -> int:
        return len(set(k.lower() for k in self._h))


class WebsocketsEndpoint:
    """A gateway behind websockets' ``process_request`` and ``handler`` hooks."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        # Filled by process_request, taken by handler; weak so a failed upgrade leaves nothing.
        self._grants: weakref.WeakKeyDictionary[ServerConnection, Any] = weakref.WeakKeyDictionary()

    async def process_request(self, connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
        """websockets ``process_request`` hook: the gateway decides before the upgrade."""
        decision = await self._gateway.decide(handshake_of(connection, request))
        if isinstance(decision, Refuse):
            return connection.respond(HTTPStatus(decision.status), decision.body)
        self._grants[connection] = decision.grant
        return None

    async def handler(self, ws: ServerConnection) -> None:
        """websockets connection handler: hand the connection to the gateway, then read it.

        Without ``process_request`` in front (an embedding that forgot it), the gateway
        decides here, after the upgrade: a refusal closes with 4401 and its reason.
        """
        if ws in self._grants:
            grant = self._grants.pop(ws)
        else:
            if ws.request is None:
                await ws.close(EMBEDDED_REFUSAL_CODE, "no handshake request")
                return
            decision = await self._gateway.decide(handshake_of(ws, ws.request))
            if isinstance(decision, Refuse):
                await ws.close(EMBEDDED_REFUSAL_CODE, decision.body.strip().encode()[:123].decode(errors="ignore"))
                return
            grant = decision.grant
        link = WsLink(ws, text=self._gateway.text)
        self._gateway.open(link, grant)
        await link.run()


class WsListener:
    """A websockets server as a :class:`~superline_zmq.transport.Listener`."""

    def __init__(self, server: Server) -> None:
        self._server = server

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._server.sockets]

    def close(self) -> None:
        self._server.close(close_connections=False)

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


async def serve(
    gateway: Gateway, host: str, port: int, *, ssl: ssl_module.SSLContext | None = None
) -> tuple[WsListener, WebsocketsEndpoint]:
    """Listen on ``host:port`` with websockets' own server (compression off, no protocol pings)."""
    endpoint = WebsocketsEndpoint(gateway)
    server = await ws_serve(
        endpoint.handler,
        host,
        port,
        process_request=endpoint.process_request,
        max_size=gateway.max_message_size,
        ping_interval=None,
        compression=None,
        ssl=ssl,
    )
    return WsListener(server), endpoint


async def connect(
    url: str,
    *,
    text: bool,
    max_message_size: int | None,
    open_timeout: float | None,
    ssl: ssl_module.SSLContext | None = None,
) -> WsLink:
    """Open a client WebSocket; raises :class:`~superline_zmq.transport.ConnectError` on any failure.

    ``ConnectError.status`` is the HTTP status when the server refused the upgrade.
    """
    options: dict[str, Any] = {}
    if ssl is not None:
        options["ssl"] = ssl
    try:
        ws: ClientConnection = await ws_connect(
            url,
            max_size=max_message_size,
            ping_interval=None,
            compression=None,
            open_timeout=open_timeout,
            **options,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise ConnectError(f"the server refused the WebSocket upgrade with HTTP {status}", status) from exc
    except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake) as exc:
        raise ConnectError(f"cannot connect to {url}: {exc}") from exc
    return WsLink(ws, text=text)


__all__ = [
    "Accept",
    "ConnectError",
    "HeaderView",
    "Refuse",
    "WebsocketsEndpoint",
    "WsLink",
    "WsListener",
    "connect",
    "handshake_of",
    "serve",
    "write_buffer_visible",
]
