"""The socket server: a thin asyncio driver over sessions, a transport and an adapter.

Theory of operation. The server is the transport's
:class:`~superline_zmq.transport.Gateway`: it decides each upgrade (``authenticate``,
roles, the path) and opens each accepted connection as a
:class:`~superline_zmq.connection.ConnCore` around a pure
:class:`~superline_zmq.session.ServerSession`, which decides what every frame means.
Requests and subscribes run as tasks the server owns; every write is synchronous and
goes through :class:`~superline_zmq.delivery.Delivery` under the backpressure policy, so
a slow or hostile client can only hurt itself. Rooms, topics, users and targeted sends
cross nodes through :class:`~superline_zmq.routing.Router` and the adapter. One timer
drives the heartbeat; one timer expires the pending-request table.

How a frame flows: socket → transport (whole message) → ``ConnCore.on_message`` →
``ServerSession.receive`` (decode, route, decide) → a task runs middleware, validation
and the handler (:mod:`superline_zmq.dispatch`) → ``ServerSession.result`` encodes the
reply → ``Delivery.send`` → transport → socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from superline_zmq import names, wire
from superline_zmq.adapter import Adapter, Readiness
from superline_zmq.adapters.memory import MemoryAdapter
from superline_zmq.connection import ConnCore
from superline_zmq.contract import SHARED, Contract, Entry, Surface
from superline_zmq.core import Core
from superline_zmq.delivery import SLOW_CLOSE_GRACE
from superline_zmq.dispatch import Middleware, MiddlewareInfo
from superline_zmq.errors import ContractError, ErrorCode, SocketError
from superline_zmq.handles import (
    BusSubscription,
    ClusterView,
    Conn,
    ConnTarget,
    LocalView,
    RoleLens,
    Room,
    UserTarget,
)
from superline_zmq.health import HealthPaths
from superline_zmq.health import answer as health_answer
from superline_zmq.health import health_paths as resolve_health_paths
from superline_zmq.heartbeat import HEARTBEAT_BATCH, HEARTBEAT_SPREAD, HeartbeatTimer
from superline_zmq.ids import ConnId, NodeId, make_conn_id, new_node_id
from superline_zmq.limits import OVER_TOTAL, ConnectionLimits, OriginPolicy
from superline_zmq.logs import RateLimitedLog
from superline_zmq.metrics import Metrics
from superline_zmq.metrics import snapshot as metrics_snapshot
from superline_zmq.presence_events import PresenceHub, PresenceSubscription
from superline_zmq.routing import BusListener, BusMeta, Listener, Router
from superline_zmq.session import Backpressure, Heartbeat, Route, ServerSession, ServerStats
from superline_zmq.tasks import Reporter, maybe_await
from superline_zmq.transport import Accept, Connection, Decision, Handshake, HttpReply, Refuse, url_of

if TYPE_CHECKING:
    from superline_zmq.transport import Listener as TransportListener
    from superline_zmq.transport.asgi import AsgiEndpoint
    from superline_zmq.transport.ws import ConnectionHandler, ProcessRequest, WebsocketsEndpoint

log = logging.getLogger("superline_zmq.server")

Handler = Callable[[Any, Any, Conn], Any]
#: What :meth:`SocketServer.listen` serves with.
Transport = Literal["fast", "websockets", "asgi"]
MaybeAwaitable = Any

#: How often a drain looks again at server requests still awaiting answers (handlers are awaited directly).
DRAIN_POLL = 0.05


class Auth(NamedTuple):
    """``authenticate``'s answer: the granted role and the app's context object.

    A plain ``(role, ctx)`` tuple is accepted too.
    """

    role: str
    ctx: Any = None


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
        health_paths: HealthPaths | bool = False,
        origins: Iterable[str] | None = None,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
    ) -> None:
        self.contract = contract
        #: Answer ``/healthz`` and ``/readyz`` on the WebSocket port (None: off, the default;
        #: ``superline-zmq run`` turns it on). See :mod:`superline_zmq.health`.
        self.health_paths: HealthPaths | None = resolve_health_paths(health_paths)
        #: Browser origins allowed to connect (``origins=``; None: any); see :mod:`superline_zmq.limits`.
        self.origins = OriginPolicy(origins)
        #: ``max_connections`` and ``max_connections_per_ip`` (None: no cap).
        self.limits = ConnectionLimits(max_connections, max_connections_per_ip)
        self.node_id: NodeId = node_id or new_node_id()
        self.max_message_size = max_message_size
        self.serializer = wire.get_serializer(serializer)
        #: Send text frames (JSON) or binary ones (MessagePack): the transports read this.
        self.text = self.serializer.text
        self._authenticate = authenticate
        self._path = path
        self._reporter = Reporter(on_error)
        self._core = core = Core(
            contract=contract,
            node_id=self.node_id,
            serializer=self.serializer,
            clock=clock,
            report=self._reporter,
            heartbeat=_heartbeat(heartbeat),
            backpressure=_backpressure(backpressure),
            middleware=tuple(use),
            authorize_subscribe=authorize_subscribe,
            validate_outgoing=validate_outgoing,
            limits=self.limits,
        )
        self._reporter.tasks = core.tasks
        core.on_connection = on_connection
        core.on_disconnect = on_disconnect
        self._identify = identify
        self._describe_conn = describe_conn
        self._handlers: dict[str, dict[str, Handler]] = {}
        self._hub = PresenceHub(report=self._reporter, spawn=core.tasks.spawn, stats=core.stats)
        #: The adapter linking this node to the others (a private in-process one by default).
        self.adapter: Adapter = adapter if adapter is not None else MemoryAdapter()
        self._router = self._make_router(self.adapter)
        self._started = False
        self._listener: TransportListener | None = None
        self._tls = False
        self._ws_endpoint: WebsocketsEndpoint | None = None
        self._asgi: AsgiEndpoint | None = None
        self._heartbeat = HeartbeatTimer(self._core)
        self._closing = False
        self._draining = False
        self._drain_cut = asyncio.Event()
        self._joined = False
        self._closed = asyncio.Event()
        self._rlog = RateLimitedLog(log)
        #: Synchronous views of this node: ``srv.local.connections``, ``.rooms``, ``.topics``.
        self.local = LocalView(core, self._router)
        #: Asynchronous views of the whole cluster, read from the adapter's presence.
        self.cluster = ClusterView(self._router)

    def _make_router(self, adapter: Adapter) -> Router:
        return Router(self._core, adapter, identify=self._identify, describe_conn=self._describe_conn, hub=self._hub)

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The heartbeat settings (None: off)."""
        return self._core.heartbeat

    @heartbeat.setter
    def heartbeat(self, value: Heartbeat | None) -> None:
        self._core.heartbeat = value

    @property
    def backpressure(self) -> Backpressure | None:
        """The backpressure policy (None: off)."""
        return self._core.delivery.backpressure

    @property
    def stats(self) -> ServerStats:
        """The live counters (see :meth:`statistics` for a snapshot)."""
        return self._core.stats

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
        shared = self._handlers.get(SHARED, {})
        for role, routes in self._core.routes.items():
            own = self._handlers.get(role, {})
            routes.clear()  # in place: open sessions hold this dict
            for name, entry in self.contract.surface(role).requests.items():
                handler = own.get(name) or shared.get(name)
                if handler is not None:
                    routes[name] = Route(self.serializer.decoder(entry.input), handler)

    # ------------------------------------------------------------------ lifecycle
    async def listen(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl: ssl_module.SSLContext | None = None,
        transport: Transport | None = None,
    ) -> None:
        """Start accepting WebSocket connections on ``host:port`` (0 picks a free port); ``ssl`` serves ``wss://``.

        ``transport``: ``"fast"`` (the default: an ``asyncio.Protocol`` over websockets'
        sans-I/O protocol, framing each fan-out once), ``"websockets"`` (websockets' own
        asyncio server) or ``"asgi"`` (:attr:`asgi` served by uvicorn in this process; the
        ``[asgi]`` extra). All three behave the same; see docs/deploying-asgi.md for
        running the ASGI app under your own server instead.
        """
        if self._listener is not None:
            raise RuntimeError("this server is already listening")
        kind = transport or self.default_transport
        if kind not in ("fast", "websockets", "asgi"):
            raise ValueError(f"unknown transport {kind!r}: use 'fast', 'websockets' or 'asgi'")
        await self.start()
        if kind == "fast":
            from superline_zmq.transport import fast

            self._listener = await fast.serve(self, host, port, ssl=ssl, http=self.http)
        elif kind == "asgi":
            from superline_zmq.transport import uvicorn

            self._listener = await uvicorn.serve(
                self.asgi, host, port, max_message_size=self.max_message_size, ssl=ssl
            )
        else:
            from superline_zmq.transport import ws

            self._listener, endpoint = await ws.serve(self, host, port, ssl=ssl)
            self._ws_endpoint = self._ws_endpoint or endpoint
        self._tls = ssl is not None

    #: The transport :meth:`listen` uses when not told (tests switch it to run a suite on each).
    default_transport: ClassVar[Transport] = "fast"

    async def http(self, handshake: Handshake) -> HttpReply | None:
        """Answer a plain HTTP request that is not an upgrade: the health paths when they are on, else None."""
        paths = self.health_paths
        if paths is None:
            return None
        health = health_answer(paths, handshake.path, self.readiness)
        if health is None:
            return None
        return HttpReply(health.status, health.body, headers=health.headers)

    @property
    def asgi(self) -> AsgiEndpoint:
        """This server as an ASGI 3 application (``websocket`` scopes; ``lifespan`` starts and closes it).

        Mount it (``Mount("/ws", app=srv.asgi)``) or run it standalone
        (``uvicorn module:srv.asgi``); see docs/deploying-asgi.md.
        """
        if self._asgi is None:
            from superline_zmq.transport.asgi import AsgiEndpoint

            self._asgi = AsgiEndpoint(self, on_startup=self.start, on_shutdown=self.close, http=self.http)
        return self._asgi

    def use_adapter(self, adapter: Adapter) -> None:
        """Replace the adapter before the server starts (how ``superline-zmq run`` clusters an app)."""
        if self._started:
            raise RuntimeError("the server has started; choose its adapter before listen()/start()")
        self.adapter = adapter
        self._router = self._make_router(adapter)
        self.local = LocalView(self._core, self._router)
        self.cluster = ClusterView(self._router)

    async def start(self) -> None:
        """Join the cluster through the adapter and start the heartbeat; idempotent.

        :meth:`listen` calls it; call it yourself when you embed :attr:`handler` in your
        own ``websockets`` server.
        """
        if self._started:
            return
        self._started = True
        await self._router.start()
        self._joined = True
        self._heartbeat.start()

    def _start_heartbeat(self) -> None:  # bench/heartbeat.py switches the heartbeat on late
        self._heartbeat.start()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (after :meth:`listen`)."""
        return self._address()[1]

    @property
    def url(self) -> str:
        """``ws://host:port/`` (``wss://`` with TLS) of the first listening socket."""
        host, port = self._address()
        return url_of(host, port, tls=self._tls)

    def _address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("the server is not listening; call listen() first")
        for addr in self._listener.addresses:
            return addr
        raise RuntimeError("the server has no listening socket")

    async def close(self, drain: float = 0.0) -> None:
        """Close every connection gracefully (1001) and stop; idempotent.

        ``drain`` (seconds; default 0, none) drains first. New upgrades are refused with 503
        and ``/readyz`` answers 503 ``draining``; the node stays in its cluster, so its
        connections keep receiving and its handlers can still reach other nodes; requests
        in flight (handlers running, server requests awaiting a client's answer) may finish,
        and requests arriving on open connections meanwhile are served too. The drain ends
        as soon as none is in flight, or at the deadline; then the connections close with
        1001 and whatever still runs is cancelled, as without a drain. Another ``close()``
        during a drain ends the drain at once and waits for the close.
        """
        if self._closing:
            self._drain_cut.set()
            await self._closed.wait()  # another close() is finishing
            return
        self._closing = True
        core = self._core
        try:
            if drain > 0 and self._started:
                await self._drain(drain)
            self._heartbeat.stop()
            if self._listener is not None:
                self._listener.close()
            if self._asgi is not None:
                self._asgi.close()
            conns = list(core.conns.values())
            await asyncio.gather(*(c.close(1001, "server shutdown") for c in conns), return_exceptions=True)
            if self._listener is not None:
                await self._listener.wait_closed()
            await core.hooks.wait(timeout=SLOW_CLOSE_GRACE * 5)
            await core.calls.close()
            self._hub.close()  # no listener runs from here on: nothing is spawned after the tasks close
            await core.tasks.close()
            core.fail_all(SocketError(ErrorCode.DISCONNECTED, "Server closed"))
            await self._router.close()
            await core.hooks.close()
            await self._heartbeat.close()
        finally:
            self._closed.set()

    def in_flight(self) -> int:
        """Requests in flight on this node: handlers running, and server requests awaiting a client's answer."""
        core = self._core
        return len(core.calls) + sum(len(core.table.owned_by(o)) for o in core.table.owners() if not isinstance(o, str))

    @property
    def draining(self) -> bool:
        """Whether :meth:`close` is draining (new connections are refused with 503)."""
        return self._draining

    async def _drain(self, seconds: float) -> None:
        self._draining = True
        core = self._core
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + seconds
        log.info(
            "draining for up to %.1f s: new connections refused (503); %d request(s) in flight on %d connection(s)",
            seconds,
            self.in_flight(),
            len(core.conns),
        )
        while self.in_flight() and not self._drain_cut.is_set():
            left = deadline - loop.time()
            if left <= 0:
                break
            if len(core.calls):
                await core.calls.wait(timeout=min(left, DRAIN_POLL))  # returns once the handlers are done
            else:  # only server requests left: they settle from the table, not as tasks
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drain_cut.wait(), min(left, DRAIN_POLL))
        left_over = self.in_flight()
        if left_over:
            log.warning("drain ended after %.1f s with %d request(s) still in flight", loop.time() - start, left_over)
        else:
            log.info("drained in %.2f s", loop.time() - start)

    async def __aenter__(self) -> SocketServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ the transport's gateway
    async def decide(self, handshake: Handshake) -> Decision:
        """Accept or refuse an upgrade, before it happens and in this order: the health paths
        (answered without authentication and without a log line, see :mod:`superline_zmq.health`),
        the path (404), shutdown (503), the ``Origin`` (403), the connection caps (503), then
        ``authenticate`` and the role (401). All but the last run no application code and cost O(1)."""
        paths = self.health_paths
        if paths is not None and handshake.path in paths:
            health = health_answer(paths, handshake.path, self.readiness)
            if health is not None:
                return health
        if self._path is not None and handshake.path != self._path:
            return Refuse(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self._closing:
            return Refuse(HTTPStatus.SERVICE_UNAVAILABLE, "Shutting down\n")
        origin = handshake.headers.get("origin")
        if not self.origins.allows(origin):
            self._core.stats.connections_refused_origin += 1
            self._rlog.log(
                logging.WARNING,
                "origin",
                "refused an upgrade from %s: origin %.200r is not allowed",
                handshake.peer,
                origin,
            )
            return Refuse(HTTPStatus.FORBIDDEN, "Forbidden: origin not allowed\n")
        over = self.limits.check(handshake.peer, len(self._core.conns))
        if over is not None:
            self._over_limit(over, handshake.peer)
            return Refuse(HTTPStatus.SERVICE_UNAVAILABLE, "Too many connections\n")
        try:
            return Accept(await self._run_authenticate(handshake))
        except Exception as exc:
            self._core.stats.connections_rejected += 1
            self._rlog.log(logging.INFO, "auth", "rejected upgrade from %s: %s", handshake.peer, exc)
            return Refuse(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")

    async def _run_authenticate(self, hs: Handshake) -> tuple[str, Any]:
        claimed = hs.query.get("role")
        if self._authenticate is None:
            if claimed is None:
                raise SocketError(ErrorCode.UNAUTHORIZED, "no role in the query string")
            role, ctx = claimed, None
        else:
            result = await maybe_await(self._authenticate(hs))
            if not isinstance(result, tuple) or len(result) != 2:
                raise SocketError(ErrorCode.UNAUTHORIZED, "authenticate must return Auth(role, ctx)")
            role, ctx = result
        if role not in self.contract.own:
            raise SocketError(ErrorCode.UNAUTHORIZED, f"role {role!r} is not in the contract")
        if claimed is not None and claimed != role:
            raise SocketError(ErrorCode.UNAUTHORIZED, f"role {claimed!r} was claimed but {role!r} granted")
        return role, ctx

    def _over_limit(self, over: str, peer: str) -> None:
        stats = self._core.stats
        if over == OVER_TOTAL:
            stats.connections_refused_limit += 1
            cap = self.limits.max_connections
        else:
            stats.connections_refused_ip_limit += 1
            cap = self.limits.max_connections_per_ip
        self._rlog.log(logging.WARNING, over, "refused a connection from %s: %s (%s) reached", peer, over, cap)

    def open(self, link: Connection, grant: Any) -> None:
        """A connection ``decide`` accepted is open: greet it, then run ``on_connection`` before reading.

        Upgrades decided at the same moment may together overshoot a connection cap; the
        one that would is closed at once with 1013 (try again later) and counted like a 503.
        """
        role, ctx = grant
        core = self._core
        over = self.limits.check(link.peer, len(core.conns))
        if over is not None:
            self._over_limit(over, link.peer)
            link.start(_Unread())  # read it, so its end is seen
            core.tasks.spawn(link.close(1013, "Too many connections"))
            return
        self.limits.opened(link.peer)
        session = ServerSession(
            role=role,
            surface=self.contract.surface(role),
            routes=core.routes[role],
            serializer=self.serializer,
            frame_decoder=core.frame_decoder,
            decoders=core.decoders,
            table=core.table,
            stats=core.stats,
            now=core.clock(),
        )
        conn = ConnCore(core, self._router, make_conn_id(self.node_id, core.next_conn_seq()), session, link, ctx)
        core.conns[conn.id] = conn
        core.stats.connections_accepted += 1
        core.delivery.send(conn, session.greeting())
        core.tasks.spawn(self._opening(conn))

    async def _opening(self, conn: ConnCore) -> None:
        if not self._started:
            try:
                await self.start()
            except BaseException:
                conn.link.start(conn)  # still read, so its end is seen and cleaned up
                raise
        await conn.opening()

    @property
    def handler(self) -> ConnectionHandler:
        """A websockets connection handler, to embed this server in your own ``websockets.serve``.

        Pass :attr:`process_request` too, so authentication can answer 401 before the
        upgrade; without it, a refused handshake is closed with 4401 after the upgrade.
        """
        return self._websockets().handler

    @property
    def process_request(self) -> ProcessRequest:
        """websockets ``process_request`` hook: authenticates before the upgrade (401 on failure)."""
        return self._websockets().process_request

    def _websockets(self) -> WebsocketsEndpoint:
        if self._ws_endpoint is None:
            from superline_zmq.transport.ws import WebsocketsEndpoint

            self._ws_endpoint = WebsocketsEndpoint(self)
        return self._ws_endpoint

    # ------------------------------------------------------------------ introspection
    @property
    def connections(self) -> list[Conn]:
        """Connections on this node."""
        return [c.handle for c in self._core.conns.values()]

    def get(self, id: str) -> Conn | None:
        """The local connection with this id, or None."""
        conn = self._core.conns.get(ConnId(id))
        return conn.handle if conn is not None else None

    def statistics(self) -> dict[str, int]:
        """A snapshot of this server's counters (a flat dict; :meth:`metrics` is the typed view)."""
        return self._core.statistics({})

    def metrics(self) -> Metrics:
        """A typed snapshot of this server's metrics: counters and gauges apart, and latency histograms.

        Cheap (it copies counters and walks this node's connections and channels once), never
        blocks, and never asks other nodes. Call it on the event loop's thread. The Prometheus
        exporter (:mod:`superline_zmq.prometheus`) exposes the same numbers.
        """
        return metrics_snapshot(
            self._core,
            self.adapter,
            roles=self.contract.own,
            rooms=len(self.local.rooms),
            topics=len(self.local.topics),
            started=self._router.started,
            ready=self.readiness() is None,
            draining=self._closing,
        )

    def readiness(self) -> str | None:
        """None when this node is ready for traffic, else why not (what ``/readyz`` answers 503 with).

        Ready: started (the adapter joined: :meth:`start` returned and the adapter, if it can
        tell, says it has joined its cluster), accepting connections (:meth:`listen`
        returned, or the server is embedded), and not draining or closing.
        """
        if self._closing:
            return "draining" if self._draining else "shutting down"
        if not self._router.started or not self._joined:
            return "not started: the adapter has not joined yet"
        if self._listener is None and self._ws_endpoint is None and self._asgi is None:
            return "not listening"
        adapter = self.adapter
        if isinstance(adapter, Readiness):
            return adapter.readiness()
        return None

    async def is_online(self, user_id: str) -> bool:
        """Whether ``user_id`` (as ``identify`` returns it) has a connection on any live node."""
        return await self._router.presence().is_online(str(user_id))

    # ------------------------------------------------------------------ sending
    def to_conn(self, id: str) -> ConnTarget:
        """Reach one connection on whichever node holds it (the id names the node)."""
        return ConnTarget(self._core, self._router, ConnId(id))

    def to_user(self, user_id: str) -> UserTarget:
        """Reach every connection of a user (as ``identify`` names it) on every node."""
        return UserTarget(self._core, self._router, str(user_id))

    def room(self, name: str) -> Room:
        """A handle on room ``name`` (cheap; rooms exist while they have members)."""
        return Room(self._core, self._router, name)

    def publish(self, topic: Entry | str, payload: Any) -> None:
        """Publish to every subscriber of a shared topic (encoded once)."""
        name = self.contract.name_of(topic)
        entry = self.contract.shared.topics.get(name)
        if entry is None:
            raise ValueError(f"{name!r} is not a shared topic; use for_role(role).publish for role topics")
        self._router.publish_topic(names.topic(SHARED, name), self._core.pub_frame(name, entry.payload, payload))

    def for_role(self, role: str) -> RoleLens:
        """Publish to a role's own topics: ``srv.for_role("user").publish(...)``."""
        if role not in self.contract.own:
            raise ValueError(f"unknown role {role!r}")
        return RoleLens(self._core, self._router, role)

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
        channel = names.topic(SHARED, name)
        lst = Listener(listener, self.serializer.decoder(entry.payload))
        ch = self._router.listen(channel, lst)
        return BusSubscription(self._router, channel, lst, ch.live)

    # ------------------------------------------------------------------ heartbeat
    def tick_heartbeat(self) -> None:
        """Run one heartbeat tick now: ping every connection, reap those over ``max_missed``.

        One synchronous sweep, not batched (about 8 µs per connection); the timer batches.
        """
        self._heartbeat.tick()


class _Unread:
    """The handler of a connection closed as soon as it opened: frames are ignored."""

    def on_message(self, data: bytes | str, /) -> None:
        pass

    def on_close(self, code: int | None, /) -> None:
        pass


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

__all__ = [
    "HEARTBEAT_BATCH",
    "HEARTBEAT_SPREAD",
    "SLOW_CLOSE_GRACE",
    "Auth",
    "Backpressure",
    "BusMeta",
    "BusSubscription",
    "ClusterView",
    "Conn",
    "ConnTarget",
    "Handshake",
    "HealthPaths",
    "Heartbeat",
    "LocalView",
    "MiddlewareInfo",
    "PresenceSubscription",
    "Room",
    "ServerStats",
    "SocketServer",
    "UserTarget",
    "create_socket_server",
]
