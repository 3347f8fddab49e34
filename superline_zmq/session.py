"""The server side of one superline.v1 connection, as a plain object (pure).

A :class:`ServerSession` is what the server knows and decides about one connection,
with no sockets, no event loop and no clock: the driver feeds it each whole message with
the current time and gets back at most one :class:`Inbound` decision per message; it asks
it for the frames to send (results, errors, events, server requests) and for the
heartbeat and backpressure decisions. The driver then does the I/O: runs handlers,
writes bytes, joins channels. So every protocol rule below is unit-tested with literal
frames and a float clock (``tests/test_session.py``).

The rules it keeps:

- **Dispatch** (PROTOCOL §5): an unknown request or topic is ``NOT_FOUND`` before
  anything else runs (never ``FORBIDDEN``: the name may exist in another role); a
  known request becomes :class:`Call` for the driver (middleware, validation, handler).
- **Bad frames** (PROTOCOL §10): undecodable or non-object frames are dropped and
  counted; one that carries an ``i`` is answered ``BAD_REQUEST`` (``NOT_FOUND`` for
  collection frames, which this server does not implement), so the client does not wait
  for a timeout.
- **The sub/unsub race**: a ``sub`` is authorized asynchronously; an ``unsub`` for the
  same topic that arrives meanwhile wins. Each ``sub`` carries the topic's unsub count as
  it was read (:attr:`Subscribe.ticket`); :meth:`ServerSession.authorized` compares it.
- **Answers** to server requests resolve the one pending-request table
  (:class:`~superline_zmq.requests.PendingTable`); an answer for a request that timed
  out, was never asked, or was asked of another connection is a late reply: counted,
  dropped.
- **Heartbeat** (PROTOCOL §7): each tick either pings or, past ``max_missed`` unanswered
  pings, reaps; any ``pong`` resets the count.
- **Backpressure**: a frame that would take the unsent bytes over the limit is sent,
  dropped or answered by closing, per :class:`Backpressure`.
- **Lifecycle**: :class:`SessionState` with the legal moves in :data:`TRANSITIONS`;
  an illegal move raises :class:`SessionStateError`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from superline_zmq import names, wire
from superline_zmq.contract import Surface
from superline_zmq.errors import ErrorCode, SocketError, SuperlineError
from superline_zmq.requests import Pending, PendingTable
from superline_zmq.validation import validation_error


# ---------------------------------------------------------------- policies (public config)
@dataclass(frozen=True)
class Backpressure:
    """Limit on a connection's unsent bytes, and what happens above it."""

    max_buffered_bytes: int = 8 * 1024 * 1024
    on_exceed: Literal["close", "drop"] = "close"

    def decide(self, buffered: int, size: int) -> Literal["send", "drop", "close"]:
        """What to do with a ``size``-byte frame when ``buffered`` bytes are still unsent."""
        if buffered + size <= self.max_buffered_bytes:
            return "send"
        return self.on_exceed


@dataclass(frozen=True)
class Heartbeat:
    """Server pings every ``interval`` seconds; ``max_missed`` unanswered pings terminate."""

    interval: float = 30.0
    max_missed: int | None = None


@dataclass
class ServerStats:
    """Counters of a server; read them with ``SocketServer.statistics()``."""

    connections_accepted: int = 0
    #: Upgrades ``authenticate`` refused (401).
    connections_rejected: int = 0
    #: Upgrades refused for an ``Origin`` not in ``origins`` (403).
    connections_refused_origin: int = 0
    #: Connections refused over ``max_connections`` (503; or closed 1013 right after a racing upgrade).
    connections_refused_limit: int = 0
    #: Connections refused over ``max_connections_per_ip`` (the same way).
    connections_refused_ip_limit: int = 0
    frames_in: int = 0
    #: Frames written to connections (pings included) and their bytes.
    frames_out: int = 0
    bytes_out: int = 0
    requests: int = 0
    #: Requests answered ``NOT_FOUND`` by the session (no such request for the role, or no handler).
    requests_not_found: int = 0
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
    #: Presence events dropped because an async listener had too many waiting.
    presence_events_dropped: int = 0
    server_requests: int = 0
    #: Requests to this node's clients that got no answer in time.
    server_requests_timed_out: int = 0
    #: Requests to connections on other nodes that got no answer in time.
    asks_timed_out: int = 0


# ---------------------------------------------------------------- lifecycle
class SessionState(enum.Enum):
    """Where a connection is in its life."""

    #: Accepted and greeted (``env`` sent); ``on_connection`` and presence are running; no frame is read yet.
    OPENING = "opening"
    #: Reading and answering frames.
    OPEN = "open"
    #: The server is closing it (a kick, backpressure, shutdown); inbound frames are ignored.
    CLOSING = "closing"
    #: Gone; nothing more happens.
    CLOSED = "closed"


#: The legal moves between :class:`SessionState` s.
TRANSITIONS: Final[Mapping[SessionState, frozenset[SessionState]]] = {
    SessionState.OPENING: frozenset({SessionState.OPEN, SessionState.CLOSING, SessionState.CLOSED}),
    SessionState.OPEN: frozenset({SessionState.CLOSING, SessionState.CLOSED}),
    SessionState.CLOSING: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


class SessionStateError(SuperlineError, RuntimeError):
    """A session was asked for a move its state does not allow (a bug in the driver)."""


# ---------------------------------------------------------------- what the driver is told to do
@dataclass(frozen=True)
class Route:
    """A request's typed input decoder and the app's handler."""

    decoder: wire.Decoder[Any]
    handler: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Call:
    """Run a request: middleware, then validate ``frame.d`` with ``route.decoder``, then the handler."""

    frame: wire.Req
    route: Route


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``frame`` (an error reply decided right away)."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that could not be decoded: counted; ``reply`` (if any) is sent; log ``error``."""

    reply: bytes | None
    error: Exception


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Authorize topic ``name``, then call :meth:`ServerSession.authorized` with this object."""

    i: int
    name: str
    channel: names.Channel
    #: The topic's unsub count when this ``sub`` was read (see the module docstring).
    ticket: int


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Leave ``channel`` (the session already dropped topic ``name``)."""

    name: str
    channel: names.Channel


@dataclass(frozen=True, slots=True)
class Answered:
    """A server request was answered: complete ``entry``'s waiter with ``value`` or ``error``."""

    entry: Pending[Any]
    value: Any
    error: SocketError | None


Inbound = Call | Reply | BadFrame | Subscribe | Unsubscribe | Answered


# ---------------------------------------------------------------- the session
class ServerSession:
    """One connection's protocol state (see the module docstring)."""

    __slots__ = (
        "_decode",
        "_decoders",
        "_encode",
        "_null",
        "_routes",
        "_serializer",
        "_stats",
        "_table",
        "_unsubs",
        "close_code",
        "connected_at",
        "last_ping_at",
        "last_pong_at",
        "missed",
        "role",
        "rooms",
        "state",
        "surface",
        "topics",
        "writable",
    )

    def __init__(
        self,
        *,
        role: str,
        surface: Surface,
        routes: Mapping[str, Route],
        serializer: wire.Serializer,
        frame_decoder: wire.Decoder[wire.ClientFrame],
        decoders: wire.DecoderCache,
        table: PendingTable[Any],
        stats: ServerStats,
        now: float,
    ) -> None:
        self.role = role
        #: The role's effective surface (shared + its own block).
        self.surface = surface
        self._routes = routes  # updated in place by implement(), so late handlers are seen
        self._serializer = serializer
        self._encode = serializer.encode
        self._null = serializer.null()
        self._decode = frame_decoder.decode
        self._decoders = decoders
        self._table = table
        self._stats = stats
        self.state = SessionState.OPENING
        #: Whether frames may still be sent (not closing, not closed); kept with ``state``
        #: because every fan-out reads it once per member.
        self.writable = True
        self.connected_at = now
        self.last_ping_at: float | None = None
        self.last_pong_at: float | None = None
        #: Pings sent since the last pong.
        self.missed = 0
        self.close_code: int | None = None
        #: Topics this connection is subscribed to.
        self.topics: set[str] = set()
        #: Rooms this connection is in.
        self.rooms: set[str] = set()
        self._unsubs: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<ServerSession role={self.role} {self.state.name}>"

    # ------------------------------------------------------------ lifecycle
    def _move(self, to: SessionState) -> None:
        if to not in TRANSITIONS[self.state]:
            raise SessionStateError(f"a session cannot go from {self.state.name} to {to.name}")
        self.state = to
        self.writable = to is SessionState.OPEN or to is SessionState.OPENING

    def greeting(self) -> bytes:
        """The first frame of every connection: ``env`` (null: this server keeps no env)."""
        return self._encode(wire.EnvOut(None))

    def opened(self) -> None:
        """``on_connection`` and presence are done: frames may be read."""
        self._move(SessionState.OPEN)

    def closing(self) -> bool:
        """The server starts closing it; False if it was already closing or closed."""
        if self.state is SessionState.CLOSING or self.state is SessionState.CLOSED:
            return False
        self._move(SessionState.CLOSING)
        return True

    def closed(self, code: int | None) -> list[Pending[Any]]:
        """The connection is gone: returns its server requests still waiting (reject them DISCONNECTED)."""
        if self.state is SessionState.CLOSED:
            return []
        self._move(SessionState.CLOSED)
        self.close_code = code
        return self._table.drop_owner(self)

    # ------------------------------------------------------------ inbound
    def receive(self, msg: bytes | str, now: float) -> Inbound | None:
        """Decide what one inbound message means; None when nothing is left to do."""
        if self.state is not SessionState.OPEN:
            return None  # closing: no new work (OPENING never reads; see the driver)
        self._stats.frames_in += 1
        try:
            frame = self._decode(msg)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
            # TypeError: a text frame where the serializer wants bytes (msgpack)
            return self._bad_frame(msg, exc)
        if isinstance(frame, wire.Req):
            self._stats.requests += 1
            route = self._routes.get(frame.m)
            if route is None:
                self._stats.requests_not_found += 1
                return Reply(self.error(frame.i, ErrorCode.NOT_FOUND, f"Unknown message: {frame.m}"))
            return Call(frame, route)
        if isinstance(frame, wire.Pong):
            self.missed = 0
            self.last_pong_at = now
            return None
        if isinstance(frame, (wire.SRes, wire.SErr)):
            return self._answer(frame)
        if isinstance(frame, wire.Sub):
            ns = self.surface.topic_ns.get(frame.c)
            if ns is None:
                return Reply(self.error(frame.i, ErrorCode.NOT_FOUND, f"Unknown topic: {frame.c}"))
            return Subscribe(frame.i, frame.c, names.topic(ns, frame.c), self._unsubs.get(frame.c, 0))
        if isinstance(frame, wire.Unsub):
            self._unsubs[frame.c] = self._unsubs.get(frame.c, 0) + 1
            return self.leave_topic(frame.c)
        return None  # a client ping is ignored, as the TS server does (PROTOCOL §3.1)

    def _bad_frame(self, msg: bytes | str, exc: Exception) -> BadFrame:
        self._stats.bad_frames += 1
        t, i = wire.frame_id(self._serializer, msg)
        reply = None
        if i is not None:
            if t in wire.COLLECTION_TAGS_WITH_ID:
                reply = self.error(i, ErrorCode.NOT_FOUND, f"Unknown message: {t} (collections are not supported)")
            else:
                reply = self.error(i, ErrorCode.BAD_REQUEST, f"Bad frame: {exc}")
        return BadFrame(reply, exc)

    def _answer(self, frame: wire.SRes | wire.SErr) -> Answered | None:
        entry = self._table.resolve(frame.i, self)
        if entry is None:
            self._stats.late_replies += 1
            return None
        if isinstance(frame, wire.SErr):
            return Answered(
                entry, None, SocketError(frame.code, frame.m, None if frame.d is msgspec.UNSET else frame.d)
            )
        decoder: wire.Decoder[Any] | None = entry.meta
        if decoder is None:  # asked for another node: it validates the raw answer itself
            return Answered(entry, self._null if frame.d is msgspec.UNSET else frame.d, None)
        try:
            return Answered(entry, wire.payload(frame.d, decoder, self._null), None)
        except msgspec.ValidationError as exc:
            return Answered(entry, None, validation_error(exc, f"answer to {entry.name!r}"))

    # ------------------------------------------------------------ topics
    def authorized(self, sub: Subscribe) -> Literal["join", "ack", "gone"]:
        """A ``sub`` passed authorization: join its channel, only ack it (an unsub won the race), or drop it."""
        if self.state is not SessionState.OPEN:
            return "gone"
        if self._unsubs.get(sub.name, 0) != sub.ticket:
            return "ack"  # the client unsubscribed while this sub was being authorized
        self.topics.add(sub.name)
        return "join"

    def leave_topic(self, name: str) -> Unsubscribe | None:
        """Drop topic ``name``; the channel to leave, or None if it was not joined."""
        if name not in self.topics:
            return None
        self.topics.discard(name)
        return Unsubscribe(name, names.topic(self.surface.topic_ns[name], name))

    # ------------------------------------------------------------ outbound frames
    def result(self, i: int, value: Any) -> bytes:
        """A ``res`` frame (raises ``TypeError``/``ValueError`` if ``value`` cannot be encoded)."""
        return self._encode(wire.ResOut(i, value))

    def error(self, i: int, code: str, message: str, data: Any = None) -> bytes:
        """An ``err`` frame (unserializable ``data`` is left out; see :meth:`error_reporting`)."""
        return wire.error_frame(self._encode, i, code, message, data)[0]

    def error_reporting(self, i: int, code: str, message: str, data: Any = None) -> tuple[bytes, Exception | None]:
        """An ``err`` frame and, if ``data`` had to be left out, why."""
        return wire.error_frame(self._encode, i, code, message, data)

    def event(self, name: str, payload: Any) -> bytes:
        """An ``evt`` frame for an event of this role; ``ValueError`` for one outside its surface."""
        if name not in self.surface.events:
            raise ValueError(f"event {name!r} is not in role {self.role!r}'s surface")
        return self._encode(wire.EvtOut(name, payload))

    def server_request(
        self, name: str, payload: Any, *, waiter: Any, deadline: float | None, raw: bool = False
    ) -> tuple[Pending[Any], bytes]:
        """Open a server request: its table entry (owned by this session) and the ``sreq`` frame.

        ``raw``: the payload is already encoded and the answer is forwarded undecoded (a
        request another node asked). Raises ``ValueError`` for a name outside the role's
        surface and ``SocketError(DISCONNECTED)`` on a connection that is going away.
        """
        entry = self.surface.server_requests.get(name)
        if entry is None:
            raise ValueError(f"server request {name!r} is not in role {self.role!r}'s surface")
        if not self.writable:
            raise SocketError(ErrorCode.DISCONNECTED, "the connection is closed")
        decoder = None if raw else self._decoders.get(entry.output)
        pending = self._table.open(name, waiter, owner=self, deadline=deadline, meta=decoder)
        self._stats.server_requests += 1
        data = msgspec.Raw(payload) if raw else payload
        return pending, self._encode(wire.SReqOut(pending.id, name, data))

    # ------------------------------------------------------------ heartbeat and backpressure
    def heartbeat(self, now: float, max_missed: int | None) -> Literal["ping", "reap", "skip"]:
        """One heartbeat tick for this connection: ping it, reap it (too many pings unanswered), or skip it."""
        if self.state is not SessionState.OPEN and self.state is not SessionState.OPENING:
            return "skip"
        if max_missed is not None and self.missed >= max_missed:
            self._stats.reaped += 1
            return "reap"
        self.missed += 1
        self.last_ping_at = now
        return "ping"
