"""The socket server: accepts WebSocket connections and dispatches superline.v1 frames.

Theory of operation. Each connection has one reader task that decodes frames with one
long-lived typed decoder and dispatches on the frame's type: requests and subscribes run
as their own tasks (replies may come back out of order, as in super-line), everything
else is handled inline. Every write is synchronous and never waits for the peer: a frame
is handed to the connection's write buffer, and when that buffer is over
``backpressure.max_buffered_bytes`` the stated policy applies (close with 1013, or drop
and count). So a slow or hostile client can only ever hurt itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, NamedTuple, TypeVar, cast, overload
from urllib.parse import parse_qsl, urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse
from websockets.protocol import State

from superline_zmq import envelope, wire
from superline_zmq.adapter import Adapter, Presence
from superline_zmq.adapters.memory import MemoryAdapter
from superline_zmq.channels import ChannelTable
from superline_zmq.contract import SHARED, Contract, Entry, ServerRequest, Surface
from superline_zmq.errors import ContractError, ErrorCode, SocketError, SuperlineError
from superline_zmq.ids import ConnId, NodeId, make_conn_id, new_node_id, node_of
from superline_zmq.logs import RateLimitedLog
from superline_zmq.presence import RESERVED_FIELDS, ConnDescriptor, NodeInfo
from superline_zmq.validation import validation_error

log = logging.getLogger("superline_zmq.server")

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

Handler = Callable[[Any, Any, "Conn"], Any]
Next = Callable[[], Awaitable[Any]]
Middleware = Callable[[Any, "MiddlewareInfo", Next], Awaitable[Any]]
MaybeAwaitable = Any


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


class Auth(NamedTuple):
    """``authenticate``'s answer: the granted role and the app's context object.

    A plain ``(role, ctx)`` tuple is accepted too.
    """

    role: str
    ctx: Any = None


@dataclass(frozen=True)
class MiddlewareInfo:
    """What a middleware learns of the operation it wraps."""

    kind: Literal["request", "subscribe"]
    name: str
    conn: Conn


@dataclass(frozen=True)
class Backpressure:
    """Limit on a connection's unsent bytes, and what happens above it."""

    max_buffered_bytes: int = 8 * 1024 * 1024
    on_exceed: Literal["close", "drop"] = "close"


@dataclass(frozen=True)
class Heartbeat:
    """Server pings every ``interval`` seconds; ``max_missed`` unanswered pings terminate."""

    interval: float = 30.0
    max_missed: int | None = None


@dataclass
class ServerStats:
    """Counters of a server; read them with :meth:`SocketServer.statistics`."""

    connections_accepted: int = 0
    connections_rejected: int = 0
    frames_in: int = 0
    requests: int = 0
    bad_frames: int = 0
    internal_errors: int = 0
    dropped_backpressure: int = 0
    closed_backpressure: int = 0
    dropped_closed: int = 0
    reaped: int = 0
    late_replies: int = 0
    dropped_no_channel: int = 0
    bad_cluster_messages: int = 0
    #: Targeted sends (``to_conn``) dropped: the id's node is dead or unknown.
    dropped_unknown_node: int = 0
    #: Targeted sends that reached the id's node but no such connection was there.
    dropped_unknown_conn: int = 0
    targeted_sent: int = 0
    remote_requests: int = 0
    presence_errors: int = 0


class Conn:
    """One live client connection on this node.

    ``data`` is the role's per-connection state: ``None`` until the app sets it (see
    docs/contract.md for why not a half-built Struct).
    """

    __slots__ = (
        "_closed",
        "_desc",
        "_missed",
        "_rooms",
        "_server",
        "_surface",
        "_topics",
        "_unsubs",
        "_ws",
        "close_code",
        "connected_at",
        "ctx",
        "data",
        "id",
        "last_ping_at",
        "last_pong_at",
        "role",
        "user_id",
    )

    def __init__(self, server: SocketServer, ws: ServerConnection, id: ConnId, role: str, ctx: Any, now: float) -> None:
        self._server = server
        self._ws = ws
        self._surface = server.contract.surface(role)
        self._topics: set[str] = set()
        self._rooms: set[str] = set()
        # topic -> count of unsub frames seen; a sub still being authorized compares it
        self._unsubs: dict[str, int] = {}
        self._missed = 0
        self._closed = False
        self.id = id
        self.role = role
        self.ctx = ctx
        self.data: Any = None
        self.connected_at = now
        self.last_ping_at: float | None = None
        self.last_pong_at: float | None = None
        self.close_code: int | None = None
        #: The ``identify`` hook's answer for this connection (None without the hook).
        self.user_id: str | None = None
        self._desc: ConnDescriptor | None = None  # published presence snapshot

    def __repr__(self) -> str:
        return f"<Conn {self.id} role={self.role}>"

    @property
    def open(self) -> bool:
        """True until the connection starts closing."""
        return not self._closed and self._ws.state is State.OPEN

    @property
    def peer(self) -> str:
        """``host:port`` of the client."""
        return _peer(self._ws)

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this connection is in."""
        return frozenset(self._rooms)

    @property
    def topics(self) -> frozenset[str]:
        """The topics this connection subscribes to."""
        return frozenset(self._topics)

    @property
    def buffered_bytes(self) -> int:
        """Bytes written to this connection that the OS has not taken yet."""
        transport = self._ws.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def emit(self, event: Entry | str, payload: Any = None) -> None:
        """Push ``event`` to this connection now (node-local, never blocks).

        Raises ``ValueError`` for an event outside this connection's role surface.
        """
        srv = self._server
        name = srv.contract.name_of(event)
        entry = self._surface.events.get(name)
        if entry is None:
            raise ValueError(f"event {name!r} is not in role {self.role!r}'s surface")
        data = srv._encode(wire.EvtOut(name, payload))
        if srv._validate_out:
            srv._check_outgoing(f"event {name!r}", entry.payload, data, srv._evt_decoder)
        srv._send(self, data)

    @overload
    async def request(self, name: ServerRequest[I, O], input: I | Any, *, timeout: float = 30.0) -> O: ...
    @overload
    async def request(self, name: str, input: Any = None, *, timeout: float = 30.0) -> Any: ...
    async def request(self, name: Any, input: Any = None, *, timeout: float = 30.0) -> Any:
        """Ask the client ``name`` and wait for its typed answer.

        Rejects ``TIMEOUT`` after ``timeout`` seconds, ``DISCONNECTED`` if the connection
        closes first, ``VALIDATION`` if the answer does not fit the output schema, or the
        client's own error.
        """
        return await self._server._server_request(self, name, input, timeout)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close gracefully and wait until the connection is closed."""
        await self._ws.close(code, reason)

    def terminate(self) -> None:
        """Drop the TCP connection without a closing handshake (the peer sees 1006)."""
        if self._ws.transport is not None:
            self._ws.transport.abort()


@dataclass
class _Route:
    decoder: wire.Decoder[Any]
    handler: Handler


@dataclass
class _Pending:
    future: asyncio.Future[Any]
    conn: Conn
    name: str
    decoder: wire.Decoder[Any] | None


@dataclass
class _Ask:
    future: asyncio.Future[bytes]
    node: NodeId
    name: str


@dataclass(frozen=True)
class BusMeta:
    """Where a bus message came from."""

    #: The node that published it (this node's own id for the local echo).
    origin: NodeId


BusListener = Callable[[Any, BusMeta], Any]


def _expire(fut: asyncio.Future[Any], name: str) -> None:
    if not fut.done():
        fut.set_exception(SocketError(ErrorCode.TIMEOUT, f"Request '{name}' timed out"))


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr)


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class SocketServer:
    """A typed superline.v1 server. Create it with :func:`create_socket_server`."""

    def __init__(
        self,
        contract: Contract,
        *,
        authenticate: Callable[[Handshake], MaybeAwaitable] | None = None,
        use: Sequence[Middleware] = (),
        on_connection: Callable[[Conn], MaybeAwaitable] | None = None,
        on_disconnect: Callable[[Conn], MaybeAwaitable] | None = None,
        on_error: Callable[[BaseException, Conn | None], MaybeAwaitable] | None = None,
        authorize_subscribe: Callable[[str, Any, Conn], MaybeAwaitable] | None = None,
        max_message_size: int = 1024 * 1024,
        serializer: wire.SerializerName | wire.Serializer = "json",
        heartbeat: Heartbeat | Mapping[str, Any] | bool = True,
        backpressure: Backpressure | Mapping[str, Any] | bool | None = None,
        path: str | None = None,
        adapter: Adapter | None = None,
        validate_outgoing: bool = False,
        node_id: NodeId | None = None,
        clock: Callable[[], float] = time.time,
        identify: Callable[[Conn], Any] | None = None,
        describe_conn: Callable[[Conn], Mapping[str, Any]] | None = None,
    ) -> None:
        self.contract = contract
        self.node_id: NodeId = node_id or new_node_id()
        self._authenticate = authenticate
        self._middleware = tuple(use)
        self._on_connection = on_connection
        self._on_disconnect = on_disconnect
        self._on_error = on_error
        self._authorize_subscribe = authorize_subscribe
        self.max_message_size = max_message_size
        self.serializer = wire.get_serializer(serializer)
        self._encode = self.serializer.encode
        self._null = self.serializer.null()
        self._text = self.serializer.text
        self._frame_decoder: wire.Decoder[wire.ClientFrame] = self.serializer.decoder(wire.ClientFrame)
        self.heartbeat = _heartbeat(heartbeat)
        self.backpressure = _backpressure(backpressure)
        self._path = path
        self._clock = clock
        self._handlers: dict[str, dict[str, Handler]] = {}
        self._routes: dict[str, dict[str, _Route]] = {role: {} for role in contract.roles}
        self._conns: dict[ConnId, Conn] = {}
        #: The adapter linking this node to the others (a private in-process one by default).
        self.adapter: Adapter = adapter if adapter is not None else MemoryAdapter()
        self._channels: ChannelTable[Conn] = ChannelTable(self.adapter, self._spawn)
        self._started = False
        self._validate_out = validate_outgoing
        self._out_decoders: dict[int, wire.Decoder[Any]] = {}
        self._pub_decoder: wire.Decoder[wire.Pub] = self.serializer.decoder(wire.Pub)
        self._evt_decoder: wire.Decoder[wire.Evt] = self.serializer.decoder(wire.Evt)
        self._pending: dict[int, _Pending] = {}
        self._seq = 0
        self._conn_seq = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        # Filled by process_request, taken by handler; weak so a failed upgrade leaves nothing.
        self._auth: weakref.WeakKeyDictionary[ServerConnection, tuple[str, Any]] = weakref.WeakKeyDictionary()
        self._server: Server | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self.stats = ServerStats()
        self._rlog = RateLimitedLog(log)
        self._ping_frame = self._encode(wire.Ping())
        self._identify = identify
        self._describe_conn = describe_conn
        self._asks: dict[int, _Ask] = {}
        self._answer_decoders: dict[int, wire.Decoder[Any]] = {}  # id(server request entry) -> decoder
        self._ask_seq = 0
        self._ask_watch: asyncio.Task[None] | None = None
        #: Synchronous views of this node: ``srv.local.connections``, ``.rooms``, ``.topics``.
        self.local = LocalView(self)
        #: Asynchronous views of the whole cluster, read from the adapter's presence.
        self.cluster = ClusterView(self)

    # ------------------------------------------------------------------ setup
    def implement(self, handlers: Mapping[str, Mapping[str, Handler]]) -> None:
        """Register request handlers by block: ``{"shared": {...}, "<role>": {...}}``.

        A role block's handler overrides a shared one for that role. Raises
        ``ContractError`` for an unknown block or a name the block does not declare.
        """
        for block, table in handlers.items():
            if block == SHARED:
                surface: Surface = self.contract.shared
            elif block in self.contract.own:
                surface = self.contract.surface(block)
            else:
                raise ContractError(f"implement: unknown block {block!r}; expected 'shared' or a role name")
            for name, fn in table.items():
                if name not in surface.requests:
                    raise ContractError(f"implement: {block}.{name} is not a client_to_server request of {block!r}")
                if not callable(fn):
                    raise ContractError(f"implement: {block}.{name} must be a function (async or not)")
                self._handlers.setdefault(block, {})[name] = fn
        self._build_routes()

    def _build_routes(self) -> None:
        shared = self._handlers.get(SHARED, {})
        for role in self.contract.roles:
            surface = self.contract.surface(role)
            own = self._handlers.get(role, {})
            routes: dict[str, _Route] = {}
            for name, entry in surface.requests.items():
                fn = own.get(name) or shared.get(name)
                if fn is not None:
                    routes[name] = _Route(self.serializer.decoder(entry.input), fn)
            self._routes[role] = routes

    # ------------------------------------------------------------------ lifecycle
    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start accepting WebSocket connections on ``host:port`` (0 picks a free port)."""
        if self._server is not None:
            raise RuntimeError("this server is already listening")
        await self.start()
        self._server = await serve(
            self.handler,
            host,
            port,
            process_request=self.process_request,
            max_size=self.max_message_size,
            ping_interval=None,
            compression=None,
        )

    def use_adapter(self, adapter: Adapter) -> None:
        """Replace the adapter before the server starts (how ``superline-zmq run`` clusters an app)."""
        if self._started:
            raise RuntimeError("the server has started; choose its adapter before listen()/start()")
        self.adapter = adapter
        self._channels = ChannelTable(adapter, self._spawn)

    async def start(self) -> None:
        """Join the cluster through the adapter and start the heartbeat; idempotent.

        :meth:`listen` calls it; call it yourself when you embed :meth:`handler` in your
        own ``websockets`` server.
        """
        if self._started:
            return
        self._started = True
        await self.adapter.start(self.node_id, self._on_channel, self._on_direct)
        self._start_heartbeat()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (after :meth:`listen`)."""
        if self._server is None:
            raise RuntimeError("the server is not listening; call listen() first")
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the server has no listening socket")

    @property
    def url(self) -> str:
        """``ws://host:port/`` of the first listening socket."""
        if self._server is None:
            raise RuntimeError("the server is not listening; call listen() first")
        sock = next(iter(self._server.sockets))
        host, port = sock.getsockname()[:2]
        return f"ws://[{host}]:{port}/" if ":" in host else f"ws://{host}:{port}/"

    async def close(self) -> None:
        """Close every connection gracefully and stop; idempotent."""
        if self._closing:
            await self._closed.wait()  # another close() is finishing
            return
        self._closing = True
        try:
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()
            if self._server is not None:
                self._server.close(close_connections=False)
            conns = list(self._conns.values())
            await asyncio.gather(*(c._ws.close(1001, "server shutdown") for c in conns), return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            for p in list(self._pending.values()):
                if not p.future.done():
                    p.future.set_exception(SocketError(ErrorCode.DISCONNECTED, "Server closed"))
            self._pending.clear()
            for ask in list(self._asks.values()):
                if not ask.future.done():
                    ask.future.set_exception(SocketError(ErrorCode.DISCONNECTED, "Server closed"))
            await self._channels.drain()
            if self._started:
                await self.adapter.close()
        finally:
            self._closed.set()

    async def __aenter__(self) -> SocketServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ introspection
    @property
    def connections(self) -> list[Conn]:
        """Connections on this node."""
        return list(self._conns.values())

    def get(self, id: str) -> Conn | None:
        """The local connection with this id, or None."""
        return self._conns.get(ConnId(id))

    def statistics(self) -> dict[str, int]:
        """A snapshot of this server's counters."""
        d = dict(vars(self.stats))
        d["connections"] = len(self._conns)
        return d

    # ------------------------------------------------------------------ handshake
    async def process_request(self, connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
        """websockets ``process_request`` hook: authenticates before the upgrade (401 on failure)."""
        hs = _handshake(connection, request)
        if self._path is not None and hs.path != self._path:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self._closing:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Shutting down\n")
        try:
            granted = await self._run_authenticate(hs)
        except Exception as exc:
            self.stats.connections_rejected += 1
            self._rlog.log(logging.INFO, "auth", "rejected upgrade from %s: %s", hs.peer, exc)
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        self._auth[connection] = granted
        return None

    async def _run_authenticate(self, hs: Handshake) -> tuple[str, Any]:
        claimed = hs.query.get("role")
        if self._authenticate is None:
            if claimed is None:
                raise SocketError(ErrorCode.UNAUTHORIZED, "no role in the query string")
            role, ctx = claimed, None
        else:
            result = await _maybe_await(self._authenticate(hs))
            if not isinstance(result, tuple) or len(result) != 2:
                raise SocketError(ErrorCode.UNAUTHORIZED, "authenticate must return Auth(role, ctx)")
            role, ctx = result
        if role not in self.contract.own:
            raise SocketError(ErrorCode.UNAUTHORIZED, f"role {role!r} is not in the contract")
        if claimed is not None and claimed != role:
            raise SocketError(ErrorCode.UNAUTHORIZED, f"role {claimed!r} was claimed but {role!r} granted")
        return role, ctx

    # ------------------------------------------------------------------ connection
    async def handler(self, ws: ServerConnection) -> None:
        """websockets connection handler; usable inside your own ``websockets`` server.

        Pass ``process_request=srv.process_request`` too, so authentication can answer
        401 before the upgrade; without it, a refused handshake is closed with 4401.
        """
        granted = self._auth.pop(ws, None)
        if granted is None:
            try:
                if ws.request is None:
                    raise SocketError(ErrorCode.UNAUTHORIZED, "no handshake request")
                hs = _handshake(ws, ws.request)
                if self._closing or (self._path is not None and hs.path != self._path):
                    raise SocketError(ErrorCode.UNAUTHORIZED, "not accepting this connection")
                granted = await self._run_authenticate(hs)
            except Exception as exc:
                self.stats.connections_rejected += 1
                await ws.close(4401, str(exc).encode()[:123].decode(errors="ignore"))
                return
        role, ctx = granted
        if not self._started:
            await self.start()
        self._conn_seq += 1
        conn = Conn(self, ws, make_conn_id(self.node_id, self._conn_seq), role, ctx, self._clock())
        self._conns[conn.id] = conn
        self.stats.connections_accepted += 1
        try:
            self._send(conn, self._encode(wire.EnvOut(None)))
            if self._on_connection is not None:
                try:
                    await _maybe_await(self._on_connection(conn))
                except Exception as exc:
                    self._report(exc, conn)
                    await ws.close(1011, "on_connection failed")
                    return
            await self._announce(conn)
            await self._read_loop(conn)
        finally:
            await self._drop(conn)

    # ------------------------------------------------------------------ presence
    async def _announce(self, conn: Conn) -> None:
        """After on_connection: identify the user, join its channel, publish the descriptor."""
        extra: dict[str, Any] = {}
        if self._identify is not None:
            try:
                uid = self._identify(conn)
                conn.user_id = None if uid is None else str(uid)
            except Exception as exc:
                self._report(exc, conn)
        if self._describe_conn is not None:
            try:
                extra = dict(self._describe_conn(conn))
                clash = RESERVED_FIELDS.intersection(extra)
                if clash:
                    raise ValueError(f"describe_conn returned reserved field(s) {sorted(clash)} for {conn.id}")
                msgspec.msgpack.encode(extra)
            except Exception as exc:
                self.stats.presence_errors += 1
                self._report(exc, conn)
                extra = {}
        if conn.user_id is not None and not conn._closed:
            ch = self._channels.add_member(f"u:{conn.user_id}", conn)
            try:
                await asyncio.shield(ch.live)
            except Exception as exc:
                self._report(exc, conn)
        if conn._closed:
            return
        conn._desc = ConnDescriptor(
            id=conn.id,
            role=conn.role,
            node_id=self.node_id,
            connected_at=conn.connected_at,
            user_id=conn.user_id,
            rooms=tuple(sorted(conn._rooms)),
            extra=extra,
        )
        presence = self.adapter.presence
        if presence is not None:
            presence.put(conn._desc)

    def _presence_rooms_changed(self, conn: Conn) -> None:
        desc = conn._desc
        if desc is None or conn._closed:
            return
        conn._desc = msgspec.structs.replace(desc, rooms=tuple(sorted(conn._rooms)))
        presence = self.adapter.presence
        if presence is not None:
            presence.put(conn._desc)

    def _presence(self) -> Presence:
        presence = self.adapter.presence
        if presence is None:
            raise SuperlineError(
                f"the {self.adapter.name!r} adapter ({type(self.adapter).__name__}) has no presence, "
                "so srv.cluster and srv.is_online are unavailable; use an adapter that implements "
                "presence (memory, zeromq or redis)"
            )
        return presence

    async def is_online(self, user_id: str) -> bool:
        """Whether ``user_id`` (as ``identify`` returns it) has a connection on any live node."""
        return await self._presence().is_online(str(user_id))

    # ------------------------------------------------------------------ targeted sends
    def to_conn(self, id: str) -> ConnTarget:
        """Reach one connection on whichever node holds it (the id names the node)."""
        return ConnTarget(self, ConnId(id))

    def to_user(self, user_id: str) -> UserTarget:
        """Reach every connection of a user (as ``identify`` names it) on every node."""
        return UserTarget(self, str(user_id))

    def _shared_event(self, event: Entry | str, payload: Any, where: str) -> bytes:
        name = self.contract.name_of(event)
        entry = self.contract.shared.events.get(name)
        if entry is None:
            raise ValueError(f"{name!r} is not a shared event; {where} takes shared events only")
        data = self._encode(wire.EvtOut(name, payload))
        if self._validate_out:
            self._check_outgoing(f"event {name!r}", entry.payload, data, self._evt_decoder)
        return data

    def _drop_targeted(self, reason: str, target: str, what: str) -> None:
        if reason == "node":
            self.stats.dropped_unknown_node += 1
        else:
            self.stats.dropped_unknown_conn += 1
        self._rlog.log(
            logging.WARNING, f"target_{reason}", "dropped %s to %s: no live %s holds it", what, target, reason
        )

    def _emit_to(self, id: ConnId, data: bytes) -> None:
        node = node_of(id)
        if node == self.node_id:
            conn = self._conns.get(id)
            if conn is None:
                self._drop_targeted("connection", id, "an event")
                return
            self.stats.targeted_sent += 1
            self._send(conn, data)
            return
        if node is None or not self.adapter.is_alive(node):
            self._drop_targeted("node", id, "an event")
            return
        if self.adapter.send(node, envelope.encode(envelope.EmitTo(id, data))):
            self.stats.targeted_sent += 1
        else:
            self._drop_targeted("node", id, "an event")

    def _close_to(self, id: ConnId, code: int, reason: str) -> None:
        node = node_of(id)
        if node == self.node_id:
            conn = self._conns.get(id)
            if conn is None:
                self._drop_targeted("connection", id, "a close")
                return
            self._spawn(conn.close(code, reason))
            return
        if (
            node is None
            or not self.adapter.is_alive(node)
            or not self.adapter.send(node, envelope.encode(envelope.CloseConn(id, code, reason)))
        ):
            self._drop_targeted("node", id, "a close")

    async def _ask(self, id: ConnId, name: Any, input: Any, timeout: float) -> Any:
        n = self.contract.name_of(name)
        entry = self.contract.shared.server_requests.get(n)
        if entry is None:
            raise ValueError(f"{n!r} is not a shared server request; to_conn(id).request takes shared ones only")
        node = node_of(id)
        if node == self.node_id:
            conn = self._conns.get(id)
            if conn is None or conn._closed:
                raise SocketError(ErrorCode.TIMEOUT, f"Request '{n}': no live node holds connection {id}")
            return await self._server_request(conn, n, input, timeout)
        if node is None or not self.adapter.is_alive(node):
            raise SocketError(ErrorCode.TIMEOUT, f"Request '{n}': no live node holds connection {id}")
        self._ask_seq += 1
        rid = self._ask_seq
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._asks[rid] = _Ask(fut, node, n)
        self.stats.remote_requests += 1
        try:
            raw_input = self._encode(input)
            if not self.adapter.send(node, envelope.encode(envelope.Ask(rid, id, n, raw_input, timeout))):
                raise SocketError(ErrorCode.TIMEOUT, f"Request '{n}': node {node} is gone")
            if self._ask_watch is None or self._ask_watch.done():
                self._ask_watch = self._spawn(self._watch_asks())
            try:
                async with asyncio.timeout(timeout):
                    raw = await fut
            except TimeoutError:
                raise SocketError(ErrorCode.TIMEOUT, f"Request '{n}' timed out") from None
        finally:
            self._asks.pop(rid, None)
        try:
            return wire.payload(msgspec.Raw(raw), self._answer_decoder(entry), self._null)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, f"answer to {n!r}") from exc

    async def _watch_asks(self) -> None:
        """While requests to other nodes are pending, fail those whose node died, at once."""
        while self._asks:
            await asyncio.sleep(0.1)
            for ask in list(self._asks.values()):
                if not ask.future.done() and not self.adapter.is_alive(ask.node):
                    ask.future.set_exception(
                        SocketError(ErrorCode.TIMEOUT, f"Request '{ask.name}': node {ask.node} is gone")
                    )

    async def _read_loop(self, conn: Conn) -> None:
        ws = conn._ws
        decode = self._frame_decoder.decode
        stats = self.stats
        try:
            async for msg in ws:
                stats.frames_in += 1
                try:
                    frame = decode(msg)
                except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                    # TypeError: a text frame where the serializer wants bytes (msgpack)
                    self._bad_frame(conn, msg, exc)
                    continue
                kind = type(frame)
                if kind is wire.Req:
                    self._on_req(conn, cast(wire.Req, frame))
                elif kind is wire.Pong:
                    conn._missed = 0
                    conn.last_pong_at = self._clock()
                elif kind is wire.SRes or kind is wire.SErr:
                    self._on_answer(conn, cast("wire.SRes | wire.SErr", frame))
                elif kind is wire.Sub:
                    sub = cast(wire.Sub, frame)
                    self._spawn(self._on_sub(conn, sub, conn._unsubs.get(sub.c, 0)))
                elif kind is wire.Unsub:
                    name = cast(wire.Unsub, frame).c
                    conn._unsubs[name] = conn._unsubs.get(name, 0) + 1
                    self._leave_topic(conn, name)
                # a client ping is ignored, as the TS server does (PROTOCOL §3.1)
        except ConnectionClosed:
            pass

    async def _drop(self, conn: Conn) -> None:
        conn._closed = True
        conn.close_code = conn._ws.close_code
        self._conns.pop(conn.id, None)
        if conn._desc is not None:
            conn._desc = None
            presence = self.adapter.presence
            if presence is not None:
                presence.remove(conn.id)
        if conn.user_id is not None:
            self._channels.remove_member(f"u:{conn.user_id}", conn)
        for name in list(conn._topics):
            self._leave_topic(conn, name)
        for room in list(conn._rooms):
            self._leave_room(conn, room)
        for i, p in list(self._pending.items()):
            if p.conn is conn:
                del self._pending[i]
                if not p.future.done():
                    p.future.set_exception(
                        SocketError(ErrorCode.DISCONNECTED, f"connection {conn.id} closed before answering")
                    )
        if self._on_disconnect is not None:
            try:
                await _maybe_await(self._on_disconnect(conn))
            except Exception as exc:
                self._report(exc, conn)

    def _bad_frame(self, conn: Conn, msg: bytes | str, exc: Exception) -> None:
        self.stats.bad_frames += 1
        t, i = wire.frame_id(self.serializer, msg)
        if i is not None:
            if t in wire.COLLECTION_TAGS_WITH_ID:
                self._send_err(conn, i, ErrorCode.NOT_FOUND, f"Unknown message: {t} (collections are not supported)")
            else:
                self._send_err(conn, i, ErrorCode.BAD_REQUEST, f"Bad frame: {exc}")
        self._rlog.log(logging.WARNING, "bad_frame", "dropped a bad frame from %s (%s): %s", conn.id, conn.peer, exc)

    # ------------------------------------------------------------------ requests
    def _on_req(self, conn: Conn, frame: wire.Req) -> None:
        self.stats.requests += 1
        route = self._routes[conn.role].get(frame.m)
        if route is None:
            self._send_err(conn, frame.i, ErrorCode.NOT_FOUND, f"Unknown message: {frame.m}")
            return
        self._spawn(self._run_req(conn, frame, route))

    async def _run_req(self, conn: Conn, frame: wire.Req, route: _Route) -> None:
        try:
            if self._middleware:
                result = await self._chain(
                    conn, MiddlewareInfo("request", frame.m, conn), lambda: self._call(conn, frame, route)
                )
            else:
                result = await self._call(conn, frame, route)
            data = self._encode(wire.ResOut(frame.i, result))
        except SocketError as exc:
            self._send_err(conn, frame.i, exc.code, exc.message, exc.data)
            return
        except Exception as exc:
            self._internal(conn, frame.i, exc)
            return
        self._send(conn, data)

    async def _call(self, conn: Conn, frame: wire.Req, route: _Route) -> Any:
        try:
            value = wire.payload(frame.d, route.decoder, self._null)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, f"input of {frame.m!r}") from exc
        result = route.handler(value, conn.ctx, conn)
        return await result if inspect.isawaitable(result) else result

    async def _chain(self, conn: Conn, info: MiddlewareInfo, final: Next) -> Any:
        middleware = self._middleware
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

    def _internal(self, conn: Conn | None, i: int | None, exc: BaseException) -> None:
        self.stats.internal_errors += 1
        if conn is not None and i is not None:
            self._send_err(conn, i, ErrorCode.INTERNAL, "Internal server error")
        self._report(exc, conn)

    def _report(self, exc: BaseException, conn: Conn | None) -> None:
        if self._on_error is None:
            log.error("unhandled error on %s", conn, exc_info=exc)
            return
        try:
            result = self._on_error(exc, conn)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._on_error_done)
        except Exception:
            log.exception("on_error raised")

    def _on_error_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("on_error raised", exc_info=task.exception())

    # ------------------------------------------------------------------ topics
    async def _on_sub(self, conn: Conn, frame: wire.Sub, unsubs: int) -> None:
        """Authorize and join a topic; ``unsubs`` is the unsub count when the frame was read."""
        name = frame.c
        ns = conn._surface.topic_ns.get(name)
        if ns is None:
            self._send_err(conn, frame.i, ErrorCode.NOT_FOUND, f"Unknown topic: {name}")
            return
        try:
            if self._middleware:
                await self._chain(conn, MiddlewareInfo("subscribe", name, conn), lambda: self._authorize(conn, name))
            else:
                await self._authorize(conn, name)
        except SocketError as exc:
            self._send_err(conn, frame.i, exc.code, exc.message, exc.data)
            return
        except Exception as exc:
            self._internal(conn, frame.i, exc)
            return
        if conn._closed:
            return
        if conn._unsubs.get(name, 0) != unsubs:
            # the client unsubscribed while this sub was being authorized: ack, don't join
            self._send(conn, self._encode(wire.ResOut(frame.i, None)))
            return
        conn._topics.add(name)
        ch = self._channels.add_member(f"t:{ns}:{name}", conn)  # idempotent for a repeated sub
        try:
            await asyncio.shield(ch.live)
        except Exception as exc:
            self._leave_topic(conn, name)
            self._internal(conn, frame.i, exc)
            return
        self._send(conn, self._encode(wire.ResOut(frame.i, None)))

    async def _authorize(self, conn: Conn, name: str) -> None:
        if self._authorize_subscribe is None:
            return
        if not await _maybe_await(self._authorize_subscribe(name, conn.ctx, conn)):
            raise SocketError(ErrorCode.FORBIDDEN, f"Subscribe denied: {name}")

    def _leave_topic(self, conn: Conn, name: str) -> None:
        if name not in conn._topics:
            return
        conn._topics.discard(name)
        self._channels.remove_member(f"t:{conn._surface.topic_ns[name]}:{name}", conn)

    def publish(self, topic: Entry | str, payload: Any) -> None:
        """Publish to every subscriber of a shared topic (encoded once)."""
        name = self.contract.name_of(topic)
        entry = self.contract.shared.topics.get(name)
        if entry is None:
            raise ValueError(f"{name!r} is not a shared topic; use for_role(role).publish for role topics")
        self._publish(f"t:{SHARED}:{name}", name, entry.payload, payload)

    def _publish(self, channel: str, name: str, schema: Any, payload: Any) -> None:
        data = self._encode(wire.PubOut(name, payload, self.node_id))
        if self._validate_out:
            self._check_outgoing(f"topic {name!r}", schema, data, self._pub_decoder)
        ch = self._channels.get(channel)
        if ch is not None:
            if ch.members:
                self._fanout(ch.members, data)
            if ch.listeners:
                # deferred like a remote delivery: a listener that publishes cannot recurse
                asyncio.get_running_loop().call_soon(self._deliver_to_listeners, channel, ch.listeners, data)
        self.adapter.publish(channel, data)

    def for_role(self, role: str) -> RoleLens:
        """Publish to a role's own topics: ``srv.for_role("user").publish(...)``."""
        if role not in self.contract.own:
            raise ValueError(f"unknown role {role!r}")
        return RoleLens(self, role)

    def _fanout(self, members: set[Conn], data: bytes) -> None:
        """Send the same bytes to every member: one encode, one websockets.broadcast."""
        bp = self.backpressure
        if bp is None:
            broadcast([c._ws for c in members], data, text=self._text)
            return
        limit = bp.max_buffered_bytes - len(data)
        ready = []
        over = []
        for conn in members:
            if conn._closed:
                self.stats.dropped_closed += 1
                continue
            ws = conn._ws
            transport = ws.transport
            if transport is not None and transport.get_write_buffer_size() > limit:
                over.append(conn)
            else:
                ready.append(ws)
        broadcast(ready, data, text=self._text)
        for conn in over:
            self._over_limit(conn, len(data))

    def _check_outgoing(self, what: str, schema: Any, frame: bytes, decoder: wire.Decoder[Any]) -> None:
        """Debug mode: validate an outgoing payload against its schema (never on by default)."""
        key = id(schema)
        dec = self._out_decoders.get(key)
        if dec is None:
            dec = self._out_decoders[key] = self.serializer.decoder(schema)
        raw = decoder.decode(frame).d
        try:
            wire.payload(raw, dec, self._null)
        except msgspec.ValidationError as exc:
            raise ValueError(f"validate_outgoing: payload of {what} does not fit its schema: {exc}") from exc

    # ------------------------------------------------------------------ rooms
    def room(self, name: str) -> Room:
        """A handle on room ``name`` (cheap; rooms exist while they have members)."""
        return Room(self, name)

    def _leave_room(self, conn: Conn, name: str) -> None:
        if name in conn._rooms:
            conn._rooms.discard(name)
            self._channels.remove_member(f"r:{name}", conn)
            self._presence_rooms_changed(conn)

    # ------------------------------------------------------------------ cluster bus
    def subscribe(self, topic: Entry | str, listener: BusListener) -> BusSubscription:
        """Call ``listener(payload, meta)`` for every publish of a shared topic, from any node.

        Publishes from this node are delivered in-process (``meta.origin`` is this node);
        payloads from other nodes are validated first. Returns a handle: call it to
        unsubscribe; ``await handle.ready`` to know the channel is live.
        """
        name = self.contract.name_of(topic)
        entry = self.contract.shared.topics.get(name)
        if entry is None:
            raise ValueError(f"{name!r} is not a shared topic; the bus carries shared topics only")
        channel = f"t:{SHARED}:{name}"
        ch = self._channels.add_listener(channel, _Listener(listener, self.serializer.decoder(entry.payload)))
        return BusSubscription(self, channel, ch.listeners[-1], ch.live)

    # ------------------------------------------------------------------ inbound from other nodes
    def _on_channel(self, channel: str, data: bytes) -> None:
        ch = self._channels.get(channel)
        if ch is None:
            self.stats.dropped_no_channel += 1
            return
        if data[:1] == envelope.CONTROL_MARK:
            self._on_control(channel, ch.members, data)
            return
        if ch.members:
            self._fanout(ch.members, data)
        if ch.listeners:
            self._deliver_to_listeners(channel, ch.listeners, data)

    def _on_control(self, channel: str, members: set[Conn], data: bytes) -> None:
        try:
            ctl = envelope.decode_control(data)
        except ValueError as exc:
            self._bad_cluster_message(channel, exc)
            return
        for conn in list(members):
            self._spawn(conn.close(ctl.code, ctl.reason))

    def _deliver_to_listeners(self, channel: str, listeners: list[Any], data: bytes) -> None:
        """Decode a pub frame once per listener schema and call the bus listeners.

        The local echo goes through here too, so every listener gets the same validated,
        typed payload whichever node published it.
        """
        try:
            frame = self._pub_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.stats.bad_cluster_messages += 1
            self._report(ValueError(f"malformed publication on {channel}: {exc}"), None)
            return
        meta = BusMeta(NodeId(frame.nd) if isinstance(frame.nd, str) else NodeId("?"))
        for lst in list(listeners):
            try:
                value = wire.payload(frame.d, lst.decoder, self._null)
            except msgspec.ValidationError as exc:
                self._report(validation_error(exc, f"bus payload on {channel} from {meta.origin}"), None)
                return
            try:
                result = lst.fn(value, meta)
                if inspect.isawaitable(result):
                    self._spawn(result)
            except Exception as exc:
                self._report(exc, None)

    def _on_direct(self, sender: NodeId, data: bytes) -> None:
        try:
            msg = envelope.decode_direct(data)
        except ValueError as exc:
            self._bad_cluster_message(sender, exc)
            return
        if isinstance(msg, envelope.EmitTo):
            conn = self._conns.get(ConnId(msg.conn))
            if conn is None:
                self._drop_targeted("connection", msg.conn, f"an event from node {sender}")
            else:
                self._send(conn, msg.frame)
        elif isinstance(msg, envelope.Answer):
            ask = self._asks.get(msg.rid)
            if ask is None or ask.future.done() or ask.node != sender:
                self.stats.late_replies += 1
            elif msg.code is None:
                ask.future.set_result(msg.data if msg.data is not None else self._null)
            else:
                err_data = None
                if msg.data is not None:
                    try:
                        err_data = self.serializer.decode_any(msg.data)
                    except Exception:
                        err_data = None
                ask.future.set_exception(SocketError(msg.code, msg.message, err_data))
        elif isinstance(msg, envelope.Ask):
            self._answer_ask(sender, msg)
        else:
            conn = self._conns.get(ConnId(msg.conn))
            if conn is None:
                self._drop_targeted("connection", msg.conn, f"a close from node {sender}")
            else:
                self._spawn(conn.close(msg.code, msg.reason))

    def _answer_ask(self, sender: NodeId, ask: envelope.Ask) -> None:
        """Ask a local client for another node; its raw answer goes back from a callback.

        No task per request: the pending future's done-callback sends the answer, and a
        timer handle enforces the deadline (this path carries every cross-node request).
        """
        conn = self._conns.get(ConnId(ask.conn))
        if conn is None or conn._closed:
            self._reply_ask(sender, envelope.Answer(ask.rid, ErrorCode.TIMEOUT, f"no live node holds {ask.conn}"))
            return
        if ask.name not in conn._surface.server_requests:
            message = f"{ask.name!r} is not a server request of {conn.role!r}"
            self._reply_ask(sender, envelope.Answer(ask.rid, ErrorCode.NOT_FOUND, message))
            return
        loop = asyncio.get_running_loop()
        self._seq += 1
        i = self._seq
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[i] = _Pending(fut, conn, ask.name, None)
        timer = loop.call_later(ask.timeout, _expire, fut, ask.name)

        def done(f: asyncio.Future[Any]) -> None:
            timer.cancel()
            self._pending.pop(i, None)
            if f.cancelled():
                answer = envelope.Answer(ask.rid, ErrorCode.DISCONNECTED, "Server closed")
            elif (exc := f.exception()) is not None:
                answer = self._error_answer(ask.rid, exc)
            else:
                answer = envelope.Answer(ask.rid, None, "", bytes(f.result()))
            self._reply_ask(sender, answer)

        fut.add_done_callback(done)
        self._send(conn, self._encode(wire.SReqOut(i, ask.name, msgspec.Raw(ask.input))))

    def _answer_decoder(self, entry: ServerRequest[Any, Any]) -> wire.Decoder[Any]:
        dec = self._answer_decoders.get(id(entry))
        if dec is None:
            dec = self._answer_decoders[id(entry)] = self.serializer.decoder(entry.output)
        return dec

    def _error_answer(self, rid: int, exc: BaseException) -> envelope.Answer:
        if not isinstance(exc, SocketError):
            return envelope.Answer(rid, ErrorCode.INTERNAL, "Internal server error")
        data = None
        if exc.data is not None:
            try:
                data = self._encode(exc.data)
            except (TypeError, ValueError):
                data = None
        return envelope.Answer(rid, exc.code, exc.message, data)

    def _reply_ask(self, sender: NodeId, answer: envelope.Answer) -> None:
        if not self.adapter.send(sender, envelope.encode(answer)):
            self._rlog.log(logging.WARNING, "answer", "could not return an answer to node %s: it is gone", sender)

    def _bad_cluster_message(self, sender: str, exc: Exception) -> None:
        self.stats.bad_cluster_messages += 1
        self._rlog.log(logging.WARNING, "bad_cluster", "dropped a malformed message from node %s: %s", sender, exc)

    # ------------------------------------------------------------------ server -> client requests
    async def _server_request(self, conn: Conn, name: Any, input: Any, timeout: float) -> Any:
        n = self.contract.name_of(name)
        entry = conn._surface.server_requests.get(n)
        if entry is None:
            raise ValueError(f"server request {n!r} is not in role {conn.role!r}'s surface")
        if conn._closed:
            raise SocketError(ErrorCode.DISCONNECTED, f"connection {conn.id} is closed")
        self._seq += 1
        i = self._seq
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[i] = _Pending(fut, conn, n, self._answer_decoder(entry))
        try:
            self._send(conn, self._encode(wire.SReqOut(i, n, input)))
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise SocketError(ErrorCode.TIMEOUT, f"Request '{n}' timed out") from None
        finally:
            self._pending.pop(i, None)

    def _on_answer(self, conn: Conn, frame: wire.SRes | wire.SErr) -> None:
        p = self._pending.get(frame.i)
        if p is None or p.conn is not conn or p.future.done():
            self.stats.late_replies += 1
            return
        if isinstance(frame, wire.SErr):
            p.future.set_exception(SocketError(frame.code, frame.m, None if frame.d is msgspec.UNSET else frame.d))
            return
        if p.decoder is None:  # asked for another node: it validates the raw answer itself
            p.future.set_result(self._null if frame.d is msgspec.UNSET else frame.d)
            return
        try:
            p.future.set_result(wire.payload(frame.d, p.decoder, self._null))
        except msgspec.ValidationError as exc:
            p.future.set_exception(validation_error(exc, f"answer to {p.name!r}"))

    # ------------------------------------------------------------------ sending
    def _send(self, conn: Conn, data: bytes) -> None:
        """Hand ``data`` to the connection's write buffer under the backpressure policy."""
        ws = conn._ws
        if conn._closed or ws.state is not State.OPEN:
            self.stats.dropped_closed += 1
            return
        bp = self.backpressure
        if bp is not None and ws.transport is not None:
            if ws.transport.get_write_buffer_size() + len(data) > bp.max_buffered_bytes:
                self._over_limit(conn, len(data))
                return
        broadcast((ws,), data, text=self._text)

    def _over_limit(self, conn: Conn, size: int) -> None:
        bp = self.backpressure
        assert bp is not None
        if bp.on_exceed == "drop":
            self.stats.dropped_backpressure += 1
            self._rlog.log(
                logging.WARNING,
                "bp_drop",
                "dropped a %d-byte frame to %s: over %d buffered bytes",
                size,
                conn.id,
                bp.max_buffered_bytes,
            )
            return
        self.stats.closed_backpressure += 1
        self._rlog.log(
            logging.WARNING,
            "bp_close",
            "closing %s with 1013: over %d buffered bytes",
            conn.id,
            bp.max_buffered_bytes,
        )
        conn._closed = True
        self._spawn(self._close_slow(conn))

    async def _close_slow(self, conn: Conn) -> None:
        """Close with 1013; a peer too slow to take the close frame is cut off after a grace."""
        try:
            async with asyncio.timeout(SLOW_CLOSE_GRACE):
                await conn._ws.close(1013, "backpressure limit exceeded")
        except TimeoutError:
            conn.terminate()

    def _send_err(self, conn: Conn, i: int, code: str, message: str, data: Any = None) -> None:
        frame = wire.Err(code, message, i, msgspec.UNSET if data is None else data)
        try:
            encoded = self._encode(frame)
        except (TypeError, ValueError) as exc:  # error data that cannot be serialized
            self._report(exc, conn)
            encoded = self._encode(wire.Err(code, message, i))
        self._send(conn, encoded)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task this server owns: close() cancels it, failures reach on_error."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._report(exc, None)

    # ------------------------------------------------------------------ heartbeat
    def _start_heartbeat(self) -> None:
        if self.heartbeat is not None and self._heartbeat_task is None:
            self._heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeat_loop(self.heartbeat))

    async def _heartbeat_loop(self, hb: Heartbeat) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(hb.interval)
            conns = list(self._conns.values())
            # Small batches spread over the first half of the interval: neither the pings nor
            # the pongs they bring back arrive all at once, so 10k connections never hold
            # the event loop for long (bench/heartbeat.py).
            batches = range(0, len(conns), HEARTBEAT_BATCH)
            gap = hb.interval * HEARTBEAT_SPREAD / max(len(batches), 1)
            start = loop.time()
            for n, k in enumerate(batches):
                self._heartbeat_batch(conns[k : k + HEARTBEAT_BATCH])
                await asyncio.sleep(max(0.0, start + (n + 1) * gap - loop.time()))

    def tick_heartbeat(self) -> None:
        """Run one heartbeat tick now: ping every connection, reap those over ``max_missed``.

        One synchronous sweep, not batched (about 8 µs per connection); the timer batches.
        """
        self._heartbeat_batch(list(self._conns.values()))

    def _heartbeat_batch(self, conns: list[Conn]) -> None:
        hb = self.heartbeat
        max_missed = hb.max_missed if hb is not None else None
        now = self._clock()
        ping = self._ping_frame
        alive: list[ServerConnection] = []
        for conn in conns:
            if conn._closed:
                continue
            if max_missed is not None and conn._missed >= max_missed:
                self.stats.reaped += 1
                self._rlog.log(logging.INFO, "reap", "terminating %s: %d pings unanswered", conn.id, conn._missed)
                conn.terminate()
                continue
            conn._missed += 1
            conn.last_ping_at = now
            alive.append(conn._ws)
        broadcast(alive, ping, text=self._text)


#: Seconds a backpressure close waits for the peer's closing handshake before aborting.
SLOW_CLOSE_GRACE = 1.0

#: Connections pinged per slice of a heartbeat tick before yielding to the event loop.
HEARTBEAT_BATCH = 100
#: Fraction of the heartbeat interval over which one tick's batches are spread.
HEARTBEAT_SPREAD = 0.5


class LocalView:
    """This node's connections, rooms and topics, read synchronously."""

    def __init__(self, server: SocketServer) -> None:
        self._server = server

    @property
    def connections(self) -> list[Conn]:
        """Open connections on this node, oldest first."""
        return list(self._server._conns.values())

    @property
    def rooms(self) -> list[str]:
        """Names of rooms with members on this node."""
        return sorted(ch.name[2:] for ch in self._server._channels if ch.name.startswith("r:") and ch.members)

    @property
    def topics(self) -> list[str]:
        """Names of topics with subscribers on this node (role topics under their own name)."""
        names = {ch.name.split(":", 2)[2] for ch in self._server._channels if ch.name.startswith("t:") and ch.members}
        return sorted(names)


class ClusterView:
    """The whole cluster as the adapter's presence knows it; every read is async.

    Raises :class:`~superline_zmq.SuperlineError` on an adapter without presence.
    """

    def __init__(self, server: SocketServer) -> None:
        self._server = server

    async def count(self) -> int:
        """Connections on every live node."""
        return await self._server._presence().count()

    async def connections(self) -> list[ConnDescriptor]:
        """Descriptors of every connection on every live node, oldest first."""
        return await self._server._presence().connections()

    async def by_user(self, user_id: str) -> list[ConnDescriptor]:
        """A user's connections (as ``identify`` names the user), on any live node."""
        return await self._server._presence().by_user(str(user_id))

    async def room(self, name: str) -> list[ConnDescriptor]:
        """Members of room ``name`` on every live node."""
        return await self._server._presence().room(name)

    async def topology(self) -> list[NodeInfo]:
        """Every known node: connection count, rooms, and whether it is alive."""
        return await self._server._presence().topology()


class ConnTarget:
    """One connection anywhere in the cluster; see :meth:`SocketServer.to_conn`."""

    __slots__ = ("_server", "id")

    def __init__(self, server: SocketServer, id: ConnId) -> None:
        self._server = server
        self.id = id

    def emit(self, event: Entry | str, payload: Any = None) -> None:
        """Send a shared event; dropped and counted if no live node holds the connection."""
        srv = self._server
        srv._emit_to(self.id, srv._shared_event(event, payload, "to_conn(id).emit"))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection on whichever node holds it (does not wait)."""
        self._server._close_to(self.id, code, reason)

    @overload
    async def request(self, name: ServerRequest[I, O], input: I | Any, *, timeout: float = 30.0) -> O: ...
    @overload
    async def request(self, name: str, input: Any = None, *, timeout: float = 30.0) -> Any: ...
    async def request(self, name: Any, input: Any = None, *, timeout: float = 30.0) -> Any:
        """Ask the client a shared server request and return its validated answer.

        Rejects ``TIMEOUT`` when no live node holds the connection (at once if its node is
        known to be gone) or the client does not answer within ``timeout``; ``VALIDATION``
        when the answer does not fit the output schema; or the client's own error.
        """
        return await self._server._ask(self.id, name, input, timeout)


class UserTarget:
    """Every connection of one user, on every node; see :meth:`SocketServer.to_user`."""

    __slots__ = ("_server", "user_id")

    def __init__(self, server: SocketServer, user_id: str) -> None:
        self._server = server
        self.user_id = user_id

    def emit(self, event: Entry | str, payload: Any = None) -> None:
        """Send a shared event to each of the user's connections (encoded once)."""
        srv = self._server
        data = srv._shared_event(event, payload, "to_user(uid).emit")
        channel = f"u:{self.user_id}"
        ch = srv._channels.get(channel)
        if ch is not None and ch.members:
            srv._fanout(ch.members, data)
        srv.adapter.publish(channel, data)

    def disconnect(self, code: int = 1000, reason: str = "") -> None:
        """Close every connection of the user, on every node (does not wait)."""
        srv = self._server
        channel = f"u:{self.user_id}"
        ch = srv._channels.get(channel)
        if ch is not None:
            for conn in list(ch.members):
                srv._spawn(conn.close(code, reason))
        srv.adapter.publish(channel, envelope.control(envelope.UserControl(code, reason)))


class RoleLens:
    """Publishes to one role's own topics."""

    def __init__(self, server: SocketServer, role: str) -> None:
        self._server = server
        self.role = role

    def publish(self, topic: Entry | str, payload: Any) -> None:
        """Publish ``topic`` as this role sees it: a role topic reaches that role's subscribers;
        a shared topic reaches every subscriber, as :meth:`SocketServer.publish` does."""
        srv = self._server
        name = srv.contract.name_of(topic)
        ns = srv.contract.surface(self.role).topic_ns.get(name)
        if ns is None:
            raise ValueError(f"{name!r} is not a topic of role {self.role!r}")
        if ns == SHARED:
            srv.publish(name, payload)
            return
        srv._publish(f"t:{ns}:{name}", name, srv.contract.own[self.role].topics[name].payload, payload)


@dataclass(frozen=True)
class _Listener:
    fn: BusListener
    decoder: wire.Decoder[Any]


class BusSubscription:
    """A bus listener's handle: call it to unsubscribe; ``await .ready`` for liveness."""

    def __init__(self, server: SocketServer, channel: str, listener: _Listener, live: asyncio.Task[None]) -> None:
        self._server = server
        self._channel = channel
        self._listener = listener
        #: Resolves once publishes from every node reach this listener.
        self.ready: Awaitable[None] = asyncio.shield(live)

    def __call__(self) -> None:
        self._server._channels.remove_listener(self._channel, self._listener)


class Room:
    """A named group of connections; membership is per node, broadcast reaches every node."""

    __slots__ = ("_server", "name")

    def __init__(self, server: SocketServer, name: str) -> None:
        self._server = server
        self.name = name

    @property
    def _channel(self) -> str:
        return f"r:{self.name}"

    async def add(self, conn: Conn) -> None:
        """Add a local connection; returns once the room's channel is live on the adapter."""
        srv = self._server
        if srv._conns.get(conn.id) is not conn:
            raise ValueError(f"{conn!r} is not an open connection of this server")
        already = self.name in conn._rooms
        conn._rooms.add(self.name)
        ch = srv._channels.add_member(self._channel, conn)
        try:
            await asyncio.shield(ch.live)
        except BaseException:
            srv._leave_room(conn, self.name)
            raise
        if not already and self.name in conn._rooms:
            srv._presence_rooms_changed(conn)

    def remove(self, conn: Conn) -> None:
        """Remove a connection (no-op if it is not a member)."""
        self._server._leave_room(conn, self.name)

    def broadcast(self, event: Entry | str, payload: Any) -> None:
        """Send a shared event to every member on every node (encoded once, never blocks)."""
        srv = self._server
        name = srv.contract.name_of(event)
        entry = srv.contract.shared.events.get(name)
        if entry is None:
            raise ValueError(f"{name!r} is not a shared event; rooms mix roles, so they carry shared events only")
        data = srv._encode(wire.EvtOut(name, payload))
        if srv._validate_out:
            srv._check_outgoing(f"event {name!r}", entry.payload, data, srv._evt_decoder)
        ch = srv._channels.get(self._channel)
        if ch is not None and ch.members:
            srv._fanout(ch.members, data)
        srv.adapter.publish(self._channel, data)

    @property
    def connections(self) -> list[Conn]:
        """Members on this node."""
        ch = self._server._channels.get(self._channel)
        return list(ch.members) if ch is not None else []

    @property
    def size(self) -> int:
        """Number of members on this node."""
        ch = self._server._channels.get(self._channel)
        return len(ch.members) if ch is not None else 0


def _handshake(connection: ServerConnection, request: HttpRequest) -> Handshake:
    url = urlsplit(request.path)
    return Handshake(
        transport="websocket",
        headers=_HeaderView(request.headers),
        query=dict(parse_qsl(url.query, keep_blank_values=True)),
        peer=_peer(connection),
        path=url.path,
    )


class _HeaderView(Mapping[str, str]):
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


def _heartbeat(spec: Heartbeat | Mapping[str, Any] | bool) -> Heartbeat | None:
    if spec is False:
        return None
    if spec is True:
        return Heartbeat()
    if isinstance(spec, Heartbeat):
        return spec
    return Heartbeat(**spec)


def _backpressure(spec: Backpressure | Mapping[str, Any] | bool | None) -> Backpressure | None:
    if spec is False:
        return None
    if spec is None or spec is True:
        return Backpressure()
    if isinstance(spec, Backpressure):
        return spec
    return Backpressure(**spec)


#: Create a :class:`SocketServer` for a contract (the name super-line users know).
create_socket_server = SocketServer
