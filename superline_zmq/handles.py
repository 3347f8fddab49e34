"""The handles an app holds: a connection, a room, a remote connection or user, the views.

Each is a thin, cheap object over the server's internals (:class:`~superline_zmq.core.Core`,
:class:`~superline_zmq.routing.Router`, :class:`~superline_zmq.connection.ConnCore`)
that calls their public methods only; none keeps state of its own beyond what the app
sets (``conn.data``, ``conn.ctx``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from superline_zmq import names
from superline_zmq.contract import SHARED, Entry, ServerRequest
from superline_zmq.ids import ConnId
from superline_zmq.presence import ConnDescriptor, NodeInfo
from superline_zmq.presence_events import PresenceSubscription, RoomListener, UserListener

if TYPE_CHECKING:
    from superline_zmq.connection import ConnCore
    from superline_zmq.core import Core
    from superline_zmq.routing import Listener, Router

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


class Conn:
    """One live client connection on this node.

    ``data`` is the role's per-connection state: ``None`` until the app sets it (see
    docs/contract.md for why not a half-built Struct).
    """

    __slots__ = ("_core", "ctx", "data", "id", "role", "user_id")

    def __init__(self, core: ConnCore, ctx: Any) -> None:
        self._core = core
        self.id: ConnId = core.id
        self.role: str = core.session.role
        self.ctx = ctx
        self.data: Any = None
        #: The ``identify`` hook's answer for this connection (None without the hook).
        self.user_id: str | None = None

    def __repr__(self) -> str:
        return f"<Conn {self.id} role={self.role}>"

    @property
    def open(self) -> bool:
        """True until the connection starts closing."""
        return self._core.session.writable and self._core.link.open

    @property
    def peer(self) -> str:
        """``host:port`` of the client."""
        return self._core.link.peer

    @property
    def connected_at(self) -> float:
        """When the connection was accepted (the server's clock, seconds)."""
        return self._core.session.connected_at

    @property
    def last_ping_at(self) -> float | None:
        """When the last heartbeat ping was sent (None before the first)."""
        return self._core.session.last_ping_at

    @property
    def last_pong_at(self) -> float | None:
        """When the client last answered a ping (None if it never has)."""
        return self._core.session.last_pong_at

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1006 for an abnormal end), else None."""
        return self._core.session.close_code

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this connection is in."""
        return frozenset(self._core.session.rooms)

    @property
    def topics(self) -> frozenset[str]:
        """The topics this connection subscribes to."""
        return frozenset(self._core.session.topics)

    @property
    def buffered_bytes(self) -> int:
        """Bytes written to this connection that the OS has not taken yet."""
        return self._core.link.buffered()

    def emit(self, event: Entry | str, payload: Any = None) -> None:
        """Push ``event`` to this connection now (node-local, never blocks).

        Raises ``ValueError`` for an event outside this connection's role surface.
        """
        self._core.emit(event, payload)

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
        return await self._core.request(name, input, timeout)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close gracefully and wait until the connection is closed."""
        await self._core.close(code, reason)

    def terminate(self) -> None:
        """Drop the TCP connection without a closing handshake (the peer sees 1006)."""
        self._core.terminate()


class Room:
    """A named group of connections; membership is per node, broadcast reaches every node."""

    __slots__ = ("_core", "_router", "name")

    def __init__(self, core: Core, router: Router, name: str) -> None:
        self._core = core
        self._router = router
        self.name = name

    async def add(self, conn: Conn) -> None:
        """Add a local connection; returns once the room's channel is live on the adapter."""
        cc = self._core.conns.get(conn.id)
        if cc is None or cc.handle is not conn:
            raise ValueError(f"{conn!r} is not an open connection of this server")
        await self._router.join_room(cc, self.name)

    def remove(self, conn: Conn) -> None:
        """Remove a connection (no-op if it is not a member)."""
        cc = self._core.conns.get(conn.id)
        if cc is not None:
            self._router.leave_room(cc, self.name)

    def broadcast(self, event: Entry | str, payload: Any) -> None:
        """Send a shared event to every member on every node (encoded once, never blocks)."""
        name = self._core.contract.name_of(event)
        if name not in self._core.contract.shared.events:
            raise ValueError(f"{name!r} is not a shared event; rooms mix roles, so they carry shared events only")
        self._router.broadcast(names.room(self.name), self._core.event_frame(name, payload, "a room"))

    @property
    def connections(self) -> list[Conn]:
        """Members on this node."""
        ch = self._router.channels.get(names.room(self.name))
        return [m.handle for m in ch.members] if ch is not None else []

    @property
    def size(self) -> int:
        """Number of members on this node."""
        ch = self._router.channels.get(names.room(self.name))
        return len(ch.members) if ch is not None else 0


class ConnTarget:
    """One connection anywhere in the cluster; see :meth:`SocketServer.to_conn`."""

    __slots__ = ("_core", "_router", "id")

    def __init__(self, core: Core, router: Router, id: ConnId) -> None:
        self._core = core
        self._router = router
        self.id = id

    def emit(self, event: Entry | str, payload: Any = None) -> None:
        """Send a shared event; dropped and counted if no live node holds the connection."""
        self._router.emit_to(self.id, self._core.event_frame(event, payload, "to_conn(id).emit"))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection on whichever node holds it (does not wait)."""
        self._router.close_to(self.id, code, reason)

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
        return await self._router.ask(self.id, self._core.contract.name_of(name), input, timeout)


class UserTarget:
    """Every connection of one user, on every node; see :meth:`SocketServer.to_user`."""

    __slots__ = ("_core", "_router", "user_id")

    def __init__(self, core: Core, router: Router, user_id: str) -> None:
        self._core = core
        self._router = router
        self.user_id = user_id

    def emit(self, event: Entry | str, payload: Any = None) -> None:
        """Send a shared event to each of the user's connections (encoded once)."""
        self._router.broadcast(names.user(self.user_id), self._core.event_frame(event, payload, "to_user(uid).emit"))

    def disconnect(self, code: int = 1000, reason: str = "") -> None:
        """Close every connection of the user, on every node (does not wait)."""
        self._router.disconnect_user(self.user_id, code, reason)


class RoleLens:
    """Publishes to one role's own topics."""

    def __init__(self, core: Core, router: Router, role: str) -> None:
        self._core = core
        self._router = router
        self.role = role

    def publish(self, topic: Entry | str, payload: Any) -> None:
        """Publish ``topic`` as this role sees it: a role topic reaches that role's subscribers;
        a shared topic reaches every subscriber, as :meth:`SocketServer.publish` does."""
        contract = self._core.contract
        name = contract.name_of(topic)
        ns = contract.surface(self.role).topic_ns.get(name)
        if ns is None:
            raise ValueError(f"{name!r} is not a topic of role {self.role!r}")
        schema = (contract.shared if ns == SHARED else contract.own[self.role]).topics[name].payload
        self._router.publish_topic(names.topic(ns, name), self._core.pub_frame(name, schema, payload))


class BusSubscription:
    """A bus listener's handle: call it to unsubscribe; ``await .ready`` for liveness."""

    def __init__(self, router: Router, channel: names.Channel, listener: Listener, live: asyncio.Task[None]) -> None:
        self._router = router
        self._channel = channel
        self._listener = listener
        #: Resolves once publishes from every node reach this listener.
        self.ready: Awaitable[None] = asyncio.shield(live)

    def __call__(self) -> None:
        self._router.channels.remove_listener(self._channel, self._listener)


class LocalView:
    """This node's connections, rooms and topics, read synchronously."""

    def __init__(self, core: Core, router: Router) -> None:
        self._core = core
        self._router = router

    @property
    def connections(self) -> list[Conn]:
        """Open connections on this node, oldest first."""
        return [c.handle for c in self._core.conns.values()]

    @property
    def rooms(self) -> list[str]:
        """Names of rooms with members on this node."""
        out = []
        for ch in self._router.channels:
            parsed = names.parse(ch.name)
            if parsed is not None and parsed.kind == "room" and ch.members:
                out.append(parsed.name)
        return sorted(out)

    @property
    def topics(self) -> list[str]:
        """Names of topics with subscribers on this node (role topics under their own name)."""
        out = set()
        for ch in self._router.channels:
            parsed = names.parse(ch.name)
            if parsed is not None and parsed.kind == "topic" and ch.members:
                out.add(parsed.name)
        return sorted(out)


class ClusterView:
    """The whole cluster as the adapter's presence knows it; every read is async.

    Raises :class:`~superline_zmq.SuperlineError` on an adapter without presence. The
    two ``on_*`` methods subscribe to its changes (see :mod:`superline_zmq.presence_events`).
    """

    def __init__(self, router: Router) -> None:
        self._router = router

    async def count(self) -> int:
        """Connections on every live node."""
        return await self._router.presence().count()

    async def connections(self) -> list[ConnDescriptor]:
        """Descriptors of every connection on every live node, oldest first."""
        return await self._router.presence().connections()

    async def by_user(self, user_id: str) -> list[ConnDescriptor]:
        """A user's connections (as ``identify`` names the user), on any live node."""
        return await self._router.presence().by_user(str(user_id))

    async def room(self, name: str) -> list[ConnDescriptor]:
        """Members of room ``name`` on every live node."""
        return await self._router.presence().room(name)

    async def topology(self) -> list[NodeInfo]:
        """Every known node: connection count, rooms, and whether it is alive."""
        return await self._router.presence().topology()

    def on_user(self, listener: UserListener, *, initial: bool = True) -> PresenceSubscription:
        """Call ``listener(UserPresence)`` whenever a user comes online or goes offline, anywhere.

        Fired on every node, exactly once per transition: a user's first connection on a
        live node (``online=True``) and its last one gone (``online=False``, its node's
        crash or leave included); a second device, or a move between nodes that overlaps,
        fires nothing. ``node_id`` is the node whose change caused it, ``connections``
        the user's count on live nodes after it. ``initial``: first call it for every user
        online now (and for what this node learns while it joins); ``False``: only for
        what changes from now on. ``listener`` may be sync or async; what it raises goes
        to ``on_error``. Returns a handle: call it to unsubscribe; ``await handle.ready``
        to know it is live. May be called before the server starts. Raises
        :class:`~superline_zmq.SuperlineError` on an adapter whose presence reports no
        changes (once started; before that, ``ready`` raises it and ``on_error`` gets it).
        """
        return self._router.hub.on_user(listener, initial=initial)

    def on_room(self, name: str, listener: RoomListener, *, initial: bool = True) -> PresenceSubscription:
        """Call ``listener(RoomDiff)`` whenever room ``name`` gains or loses members, on any node.

        One call per presence update, with the connections that joined and left together
        (``joins``, ``leaves``: descriptors, oldest first); a node's crash or leave takes
        its members out in one diff, and a descriptor replaced while it stays in the room
        leaves with its old fields and joins with its new ones. ``initial``: first call it
        with the room's current members as joins. Otherwise as :meth:`on_user`.
        """
        return self._router.hub.on_room(name, listener, initial=initial)
