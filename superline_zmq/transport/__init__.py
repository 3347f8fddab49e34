"""The transport seam: how a server or a client reaches the network (Protocols and plain data; pure).

A transport turns sockets into whole WebSocket messages and back; everything above it
(sessions, the server and client drivers) sees only these shapes, so the websockets
server, a faster protocol-level server and an ASGI app are interchangeable, and only the
modules of this package import ``websockets``.

Server side, one connection's life:

1. the transport reads an upgrade request and asks the :class:`Gateway` (the server)
   for a :class:`Decision` on its :class:`Handshake`: :class:`Accept` (the upgrade goes
   ahead) or :class:`Refuse` (an HTTP status before the upgrade);
2. once the WebSocket is open it hands the gateway a :class:`Connection`
   (:meth:`Gateway.open`), which may write at once but reads nothing yet;
3. the gateway calls :meth:`Connection.start` with its :class:`MessageHandler` when it is
   ready for frames; from then on every whole message goes to ``on_message`` and, exactly
   once, the end to ``on_close``.

Writes never wait: :meth:`Connection.send` hands one message to the socket's buffer and
:meth:`Connection.buffered` says how much is still unsent, so the caller applies its
backpressure policy. :meth:`Connection.fanout` sends the same bytes to many connections
of one transport, framing them once where the transport can.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from superline_zmq.errors import SuperlineError


@dataclass(frozen=True)
class Handshake:
    """What ``authenticate`` sees of an upgrade request."""

    transport: str
    headers: Mapping[str, str]
    #: The query string as a flat map; a repeated key keeps its last value.
    query: Mapping[str, str]
    #: ``"host:port"`` of the peer.
    peer: str
    path: str = "/"


class Accept(NamedTuple):
    """Let the upgrade go ahead; ``grant`` is the gateway's own record of it (e.g. role and ctx)."""

    grant: Any


class Refuse(NamedTuple):
    """Answer with an HTTP ``status`` and a short ``body`` instead of upgrading.

    A refused upgrade (401, 404, 503), or a plain HTTP answer such as a health check.
    ``headers`` are added to the response, replacing the transport's own of the same name
    (the body is ``text/plain`` unless they say otherwise); ``quiet`` asks the transport
    not to log the response (health probes would flood an access log).
    """

    status: int
    body: str
    headers: tuple[tuple[str, str], ...] = ()
    quiet: bool = False


Decision = Accept | Refuse


class HttpReply(NamedTuple):
    """A plain HTTP answer to a request that is not a WebSocket upgrade (a health probe, say)."""

    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"
    #: More response headers (e.g. ``Cache-Control``), replacing the transport's of the same name.
    headers: tuple[tuple[str, str], ...] = ()


#: Answers plain HTTP requests that reach a WebSocket transport (``GET /healthz``); None lets the
#: transport give its default answer (426 Upgrade Required on a socket, 404 under ASGI).
HttpHandler = Callable[[Handshake], Awaitable[HttpReply | None]]


class MessageHandler(Protocol):
    """What a connection delivers to once started (the server's or client's per-connection driver)."""

    def on_message(self, data: bytes | str, /) -> None:
        """One whole WebSocket message (text as ``str`` or bytes, binary as bytes). Must not raise."""
        ...

    def on_close(self, code: int | None, /) -> None:
        """The connection is closed (``code``: the close code received or sent, None if unknown)."""
        ...


class Connection(Protocol):
    """One open WebSocket connection, server or client side."""

    #: ``host:port`` of the other end.
    peer: str

    @property
    def open(self) -> bool:
        """True until the connection starts closing."""
        ...

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1006 for an abnormal end), else None."""
        ...

    def send(self, data: bytes, /) -> bool:
        """Write one message now (never waits); False if the connection is not open."""
        ...

    def buffered(self) -> int:
        """Bytes written and not yet taken by the operating system."""
        ...

    def fanout(self, conns: Sequence[Connection], data: bytes, /) -> int:
        """Write ``data`` to every one of ``conns`` (all of this connection's transport), framing once
        where the transport can; returns how many took it."""
        ...

    def start(self, handler: MessageHandler, /) -> None:
        """Begin delivering messages to ``handler``; call exactly once."""
        ...

    async def close(self, code: int = 1000, reason: str = "", /) -> None:
        """Close with the closing handshake and wait until the connection is closed."""
        ...

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (the peer sees 1006)."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by either side)."""
        ...


class Gateway(Protocol):
    """The server as a transport sees it."""

    #: Send text frames (JSON) rather than binary ones (MessagePack).
    text: bool
    #: Largest inbound message in bytes; bigger closes the connection with 1009.
    max_message_size: int

    async def decide(self, handshake: Handshake, /) -> Decision:
        """Accept or refuse an upgrade request (authentication happens here)."""
        ...

    def open(self, conn: Connection, grant: Any, /) -> None:
        """A WebSocket accepted with :class:`Accept` ``grant`` is open (must not raise)."""
        ...


class Listener(Protocol):
    """A running accept loop (``listen``)."""

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every listening socket."""
        ...

    def close(self) -> None:
        """Stop accepting new connections (open ones are the gateway's to close)."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the listening sockets and every connection handled are closed."""
        ...


class ConnectError(SuperlineError):
    """A client could not open a WebSocket: ``status`` is the HTTP status of a refused upgrade, else None."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def format_peer(addr: Any) -> str:
    """``host:port`` (``[v6]:port``) of a socket address, or its ``str`` for anything else."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr)


def url_of(host: str, port: int, *, tls: bool = False) -> str:
    """``ws://host:port/`` (``wss://`` with TLS) for a listening address."""
    scheme = "wss" if tls else "ws"
    return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"
