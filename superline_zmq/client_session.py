"""The client session: superline.v1 decisions of one client, with no I/O (pure).

Theory of operation. A :class:`ClientSession` is the client's protocol state machine, the
way websockets' ``Protocol`` is to its asyncio ``Connection``: the asyncio driver
(:mod:`superline_zmq.client`) feeds it inputs and carries out the :data:`Action` values it
returns; the session never touches a socket, an event loop or a clock (``now`` is an
argument, in whatever unit and epoch the driver's clock uses).

Inputs:

- lifecycle: :meth:`~ClientSession.connected` (a connection is open),
  :meth:`~ClientSession.disconnected` (it dropped), :meth:`~ClientSession.close`;
- what the application does: :meth:`~ClientSession.call`, :meth:`~ClientSession.cancel`,
  :meth:`~ClientSession.subscribe`, :meth:`~ClientSession.unsubscribe`,
  :meth:`~ClientSession.on`, :meth:`~ClientSession.implement`, and the outcome of a
  server-request handler (:meth:`~ClientSession.answer`, :meth:`~ClientSession.fail`);
- what the network does: :meth:`~ClientSession.receive` (one whole message);
- time: :meth:`~ClientSession.expire`, due at :meth:`~ClientSession.next_deadline`.

Outputs are plain values: :class:`Send` (bytes for the open connection), :class:`Resolve`
and :class:`Reject` (settle a waiter the driver handed in: a call's or a topic's),
:class:`Deliver` (run these callbacks with this decoded payload), :class:`Ask` (run this
server-request handler, then report its outcome back) and :class:`Report` (an error for
the application's ``on_error``).

Decisions made here (PROTOCOL §4, §6, §9):

- One id counter for ``req`` and ``sub``, starting at 1, never reset on reconnect: the
  :class:`~superline_zmq.requests.PendingTable`'s. A call's owner is the connection epoch
  it was sent on (1 for the first open, 2 for the next …), or ``None`` while it is queued
  offline; so while OPEN no call is queued, and while not OPEN every call is.
- Calls made offline are queued up to ``max_queued``; beyond that a call fails at once
  with ``DISCONNECTED``. On every open the queue is flushed in id order with the original
  ids, then a fresh ``sub`` goes out for every topic that has local callbacks.
- On a drop, calls already sent reject ``DISCONNECTED`` (the server may or may not have
  run them) and pending ``sub`` acks are forgotten; queued calls wait for the next open,
  unless reconnecting is off (then they reject too).
- Timeouts count from the call, queue time included; a reply after its call timed out,
  was cancelled or was dropped is ignored and counted (``late_replies``).
- Undecodable frames and event or topic payloads that fail their schema are dropped and
  counted (``bad_frames``, ``bad_payloads``); every ``ping`` gets a ``pong``.

Lifecycle (:class:`State`; moves outside :data:`TRANSITIONS` raise
:class:`ClientStateError`)::

    CONNECTING ──connected──▶ OPEN ──disconnected──▶ RECONNECTING ──connected──▶ OPEN …
        │                      │  (reconnect off)        │
        └──────close──────▶ CLOSED ◀──────close─────────┘
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeAlias, TypeVar

import msgspec

from superline_zmq import wire
from superline_zmq.contract import Contract, Entry, Surface
from superline_zmq.errors import ErrorCode, SocketError, SuperlineError
from superline_zmq.requests import Pending, PendingTable
from superline_zmq.validation import validation_error

log = logging.getLogger("superline_zmq.client")

W = TypeVar("W")

#: A local event or topic callback (the session stores it and hands it back; never calls it).
Callback = Callable[[Any], Any]
#: A server-request handler registered with :meth:`ClientSession.implement`.
Handler = Callable[[Any], Any]


class State(enum.Enum):
    """Where a client is in its life."""

    #: Created; no connection has opened yet.
    CONNECTING = "connecting"
    #: A connection is open: calls and subscriptions are sent at once.
    OPEN = "open"
    #: The connection dropped and another will be tried: calls queue.
    RECONNECTING = "reconnecting"
    #: Closed for good (by the application, or a drop with reconnecting off).
    CLOSED = "closed"


#: The legal moves. :meth:`ClientSession.close` on a CLOSED session and
#: :meth:`ClientSession.disconnected` after it are no-ops, not moves.
TRANSITIONS: Final[Mapping[State, frozenset[State]]] = {
    State.CONNECTING: frozenset({State.OPEN, State.CLOSED}),
    State.OPEN: frozenset({State.RECONNECTING, State.CLOSED}),
    State.RECONNECTING: frozenset({State.OPEN, State.CLOSED}),
    State.CLOSED: frozenset(),
}


class ClientStateError(SuperlineError, RuntimeError):
    """The driver asked for a move the lifecycle table forbids (a bug in the driver)."""


# ---------------------------------------------------------------- actions
@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` (one whole frame) to the open connection."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Resolve(Generic[W]):
    """Settle ``waiter`` with ``value`` (a call's output, or ``None`` for a topic's ack)."""

    waiter: W
    value: Any


@dataclass(frozen=True, slots=True)
class Reject(Generic[W]):
    """Fail ``waiter`` with ``error`` (a call's error, or a refused subscription)."""

    waiter: W
    error: SocketError


@dataclass(frozen=True, slots=True)
class Deliver:
    """Call each of ``callbacks`` with ``value`` (a decoded event or topic payload)."""

    callbacks: tuple[Callback, ...]
    value: Any


@dataclass(frozen=True, slots=True)
class Ask:
    """Run ``handler(value)`` for server request ``id``; then pass its outcome to
    :meth:`ClientSession.answer` or :meth:`ClientSession.fail`."""

    id: int
    name: str
    handler: Handler
    value: Any
    #: The connection epoch the request came on; an answer after it dropped is not sent.
    epoch: int


@dataclass(frozen=True, slots=True)
class Report:
    """An error the application should hear about (``on_error``); the session carried on."""

    error: BaseException


Action: TypeAlias = Send | Resolve[W] | Reject[W] | Deliver | Ask | Report


@dataclass(slots=True)
class _CallMeta:
    decoder: wire.Decoder[Any]
    frame: bytes


@dataclass(slots=True, eq=False)
class _Topic(Generic[W]):
    name: str
    ready: W
    decoder: wire.Decoder[Any]
    callbacks: list[Callback] = field(default_factory=list)
    acked: bool = False


#: Counters of :meth:`ClientSession.statistics` (gauges are added when it is called).
COUNTERS: Final = (
    "calls",
    "calls_sent",
    "calls_answered",
    "calls_timed_out",
    "calls_disconnected",
    "calls_queue_full",
    "calls_cancelled",
    "late_replies",
    "subs_sent",
    "subs_acked",
    "subs_refused",
    "server_requests",
    "answers_sent",
    "answers_dropped",
    "frames_in",
    "frames_out",
    "bad_frames",
    "bad_payloads",
    "connection_errors",
    "pings",
    "opens",
    "reconnects",
    "disconnects",
)


class ClientSession(Generic[W]):
    """One client's protocol state (pure). ``W`` is the driver's waiter type (e.g. a future).

    ``max_queued`` bounds the calls waiting for a connection (0: a call made offline fails
    at once). ``reconnect=False`` makes the first drop final.
    """

    def __init__(
        self,
        contract: Contract,
        role: str,
        *,
        serializer: wire.SerializerName | wire.Serializer = "json",
        reconnect: bool = True,
        max_queued: int = 1000,
    ) -> None:
        if role not in contract.own:
            raise ValueError(f"role {role!r} is not in the contract (roles: {', '.join(contract.roles)})")
        if max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, got {max_queued}")
        self.contract = contract
        self.role = role
        self.surface: Surface = contract.surface(role)
        self.serializer = wire.get_serializer(serializer)
        #: Reconnect after a drop (False: the first drop closes the session).
        self.reconnect = reconnect
        #: Most calls that may wait for a connection.
        self.max_queued = max_queued
        #: The latest ``env`` value the server sent (``None`` if none).
        self.env: Any = None
        self._encode = self.serializer.encode
        self._null = self.serializer.null()
        self._frames: wire.Decoder[wire.ServerFrame] = self.serializer.decoder(wire.ServerFrame)
        self._decoders = wire.DecoderCache(self.serializer)
        self._state = State.CONNECTING
        self._epoch = 0
        self._table: PendingTable[W] = PendingTable()
        self._acks: dict[int, _Topic[W]] = {}
        self._topics: dict[str, _Topic[W]] = {}
        self._events: dict[str, list[Callback]] = {}
        self._handlers: dict[str, Handler] = {}
        self._n: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> State:
        """The lifecycle state."""
        return self._state

    @property
    def epoch(self) -> int:
        """How many connections have opened (the owner of calls sent on the current one)."""
        return self._epoch

    @property
    def topics(self) -> frozenset[str]:
        """Topics with local callbacks (sent again on every open)."""
        return frozenset(self._topics)

    def _move(self, to: State) -> None:
        if to not in TRANSITIONS[self._state]:
            raise ClientStateError(f"client session cannot go from {self._state.name} to {to.name}")
        self._state = to

    def connected(self, now: float) -> list[Action[W]]:
        """A connection opened: reject calls past their deadline, flush the queue, re-subscribe.

        Returns the timed-out rejections, then every queued ``req`` in id order (keeping
        its id), then a fresh ``sub`` per topic with local callbacks.
        """
        self._move(State.OPEN)
        self._epoch += 1
        self._n["opens"] += 1
        if self._epoch > 1:
            self._n["reconnects"] += 1
        out = self.expire(now)
        for entry in sorted(self._table.owned_by(None), key=lambda e: e.id):
            self._table.set_owner(entry.id, self._epoch)
            out.append(self._send_call(entry))
        for topic in self._topics.values():
            out.append(self._sub(topic))
        return out

    def disconnected(self) -> list[Action[W]]:
        """The open connection dropped: reject the calls sent on it, forget pending sub acks.

        A no-op after :meth:`close` (the driver closed the connection itself).
        """
        if self._state is State.CLOSED:
            return []
        final = not self.reconnect
        self._move(State.CLOSED if final else State.RECONNECTING)
        self._n["disconnects"] += 1
        self._acks.clear()
        out = self._reject(self._table.drop_owner(self._epoch), "Connection closed")
        if final:  # nothing will send the queue: it rejects too (PROTOCOL §9)
            out += self._reject(self._table.drop_all(), "Connection closed")
        return out

    def close(self, message: str = "Client closed") -> list[Action[W]]:
        """Close for good: every call, sent or queued, rejects ``DISCONNECTED`` with ``message``.

        Idempotent: closing a closed session returns nothing.
        """
        if self._state is State.CLOSED:
            return []
        self._move(State.CLOSED)
        self._acks.clear()
        return self._reject(self._table.drop_all(), message)

    def _reject(self, entries: list[Pending[W]], message: str) -> list[Action[W]]:
        self._n["calls_disconnected"] += len(entries)
        err = SocketError(ErrorCode.DISCONNECTED, message)
        return [Reject(e.waiter, err) for e in entries]

    # ------------------------------------------------------------------ calls
    def call(
        self, name: Entry | str, input: Any, waiter: W, *, now: float, timeout: float | None
    ) -> tuple[int, list[Action[W]]]:
        """Start a call; ``waiter`` is settled by a later :class:`Resolve` or :class:`Reject`.

        Returns the call's id and, when a connection is open, the ``req`` to send; offline
        the call is queued. ``timeout`` (seconds; ``None`` or 0: none) counts from ``now``.
        Raises :class:`SocketError` at once: ``DISCONNECTED`` when closed or when the offline
        queue is full, ``NOT_FOUND`` for a name outside the role's surface, ``VALIDATION``
        for an input that does not fit.
        """
        if self._state is State.CLOSED:
            raise SocketError(ErrorCode.DISCONNECTED, "Client closed")
        n = self.contract.name_of(name)
        entry = self.surface.requests.get(n)
        if entry is None:
            raise SocketError(ErrorCode.NOT_FOUND, f"Unknown message: {n}")
        value = coerce(input, entry.input, f"input of {n!r}")
        online = self._state is State.OPEN
        if not online and len(self._table) >= self.max_queued:
            # offline, every entry of the table is a queued call
            self._n["calls_queue_full"] += 1
            raise SocketError(
                ErrorCode.DISCONNECTED,
                f"Client is not connected and its queue is full ({self.max_queued} calls waiting)",
            )
        deadline = now + timeout if timeout else None
        pending = self._table.open(n, waiter, owner=self._epoch if online else None, deadline=deadline, meta=None)
        try:
            frame = self._encode(wire.ReqOut(pending.id, n, value))
        except BaseException:
            self._table.cancel(pending.id)
            raise
        pending.meta = _CallMeta(self._decoders.get(entry.output), frame)
        self._n["calls"] += 1
        return pending.id, [self._send_call(pending)] if online else []

    def _send_call(self, entry: Pending[W]) -> Send:
        self._n["calls_sent"] += 1
        self._n["frames_out"] += 1
        return Send(entry.meta.frame)

    def cancel(self, id: int) -> bool:
        """The caller stopped waiting for call ``id``; False if it was already settled."""
        if self._table.cancel(id) is None:
            return False
        self._n["calls_cancelled"] += 1
        return True

    def expire(self, now: float) -> list[Action[W]]:
        """Reject ``TIMEOUT`` every call whose deadline is at or before ``now``."""
        out: list[Action[W]] = []
        for entry in self._table.expire(now):
            self._n["calls_timed_out"] += 1
            out.append(Reject(entry.waiter, SocketError(ErrorCode.TIMEOUT, f"Request '{entry.name}' timed out")))
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has work next (None: no call has a deadline)."""
        return self._table.next_deadline()

    # ------------------------------------------------------------------ events and topics
    def on(self, event: Entry | str, callback: Callback) -> str:
        """Add ``callback`` for ``event``; returns the event's name. ``ValueError`` if not on the surface."""
        name = self.contract.name_of(event)
        if name not in self.surface.events:
            raise ValueError(f"{name!r} is not an event of role {self.role!r}")
        self._events.setdefault(name, []).append(callback)
        return name

    def off(self, event: str, callback: Callback) -> None:
        """Remove ``callback`` from ``event`` (no-op if it is not there)."""
        callbacks = self._events.get(event)
        if callbacks is not None and callback in callbacks:
            callbacks.remove(callback)

    def subscribe(
        self, topic: Entry | str, callback: Callback, new_waiter: Callable[[], W]
    ) -> tuple[W, list[Action[W]]]:
        """Add a local callback for ``topic``; returns the topic's ready waiter and frames.

        The first callback of a topic makes its waiter (``new_waiter()``, settled by the
        server's ack or refusal) and, when open, a ``sub``; offline, the ``sub`` waits for
        the next open. Raises ``SocketError(NOT_FOUND)`` for a topic not on the surface.
        """
        name = self.contract.name_of(topic)
        entry = self.surface.topics.get(name)
        if entry is None:
            raise SocketError(ErrorCode.NOT_FOUND, f"Unknown topic: {name}")
        state = self._topics.get(name)
        if state is None:
            state = self._topics[name] = _Topic(name, new_waiter(), self._decoders.get(entry.payload))
        state.callbacks.append(callback)
        if len(state.callbacks) == 1 and self._state is State.OPEN:
            return state.ready, [self._sub(state)]
        return state.ready, []

    def _sub(self, topic: _Topic[W]) -> Send:
        i = self._table.next_id()
        self._acks[i] = topic
        self._n["subs_sent"] += 1
        self._n["frames_out"] += 1
        return Send(self._encode(wire.Sub(i, topic.name)))

    def unsubscribe(self, topic: str, callback: Callback) -> list[Action[W]]:
        """Remove a local callback; the last one of a topic sends ``unsub`` (only when open)."""
        state = self._topics.get(topic)
        if state is None or callback not in state.callbacks:
            return []
        state.callbacks.remove(callback)
        if state.callbacks:
            return []
        del self._topics[topic]
        if self._state is not State.OPEN:
            return []
        self._n["frames_out"] += 1
        return [Send(self._encode(wire.Unsub(topic)))]

    # ------------------------------------------------------------------ server requests
    def implement(self, handlers: Mapping[str, Handler]) -> None:
        """Register server-request handlers; ``ValueError`` for a name not on the surface."""
        for name in handlers:
            if name not in self.surface.server_requests:
                raise ValueError(f"{name!r} is not a server request of role {self.role!r}")
        self._handlers.update(handlers)

    def answer(self, ask: Ask, result: Any) -> list[Action[W]]:
        """The handler of ``ask`` returned ``result``: an ``sres`` (or ``serr`` INTERNAL if it
        cannot be encoded)."""
        try:
            data = self._encode(wire.SResOut(ask.id, result))
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            return self.fail(ask, exc)
        return self._answer_out(ask, data)

    def fail(self, ask: Ask, exc: BaseException) -> list[Action[W]]:
        """The handler of ``ask`` raised ``exc``: ``serr`` with a :class:`SocketError`'s code,
        message and data, else ``INTERNAL`` "Internal client error" (``exc`` is reported)."""
        out: list[Action[W]] = []
        if isinstance(exc, SocketError):
            data, bad = wire.error_frame(self._encode, ask.id, exc.code, exc.message, exc.data, answer=True)
            if bad is not None:
                out.append(Report(bad))
        else:
            data, _ = wire.error_frame(self._encode, ask.id, ErrorCode.INTERNAL, "Internal client error", answer=True)
            out.append(Report(exc))
        out += self._answer_out(ask, data)
        return out

    def _answer_out(self, ask: Ask, data: bytes) -> list[Action[W]]:
        if self._state is not State.OPEN or ask.epoch != self._epoch:
            self._n["answers_dropped"] += 1  # answers are not queued (PROTOCOL §9)
            return []
        self._n["answers_sent"] += 1
        self._n["frames_out"] += 1
        return [Send(data)]

    def _serr(self, i: int, code: str, message: str, data: Any = None) -> list[Action[W]]:
        frame, _ = wire.error_frame(self._encode, i, code, message, data, answer=True)
        self._n["answers_sent"] += 1
        self._n["frames_out"] += 1
        return [Send(frame)]

    # ------------------------------------------------------------------ inbound
    def receive(self, message: bytes | str) -> list[Action[W]]:
        """One whole message from the server: what to do about it.

        Messages arriving when no connection is open (a closing one) are dropped.
        """
        self._n["frames_in"] += 1
        if self._state is not State.OPEN:
            return []
        try:
            frame = self._frames.decode(message)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
            self._n["bad_frames"] += 1
            log.debug("dropped an undecodable frame: %s", exc)
            return []
        match frame:
            case wire.Res():
                return self._on_res(frame)
            case wire.Evt():
                callbacks = self._events.get(frame.e)
                if not callbacks:
                    return []
                return self._deliver(
                    f"event {frame.e!r}", frame.d, self._decoders.get(self.surface.events[frame.e].payload), callbacks
                )
            case wire.Pub():
                topic = self._topics.get(frame.c)
                if topic is None:
                    return []
                return self._deliver(f"topic {frame.c!r}", frame.d, topic.decoder, topic.callbacks)
            case wire.Err():
                return self._on_err(frame)
            case wire.SReq():
                return self._on_sreq(frame)
            case wire.Ping():
                self._n["pings"] += 1
                self._n["frames_out"] += 1
                return [Send(self._encode(wire.Pong()))]
            case wire.Env():
                self.env = None if frame.d is msgspec.UNSET else self.serializer.decode_any(frame.d)
                return []
            case _:  # pong: the TS server never sends it; ignored
                return []

    def _on_res(self, frame: wire.Res) -> list[Action[W]]:
        entry = self._table.resolve(frame.i, self._epoch)
        if entry is not None:
            self._n["calls_answered"] += 1
            meta: _CallMeta = entry.meta
            try:
                value = wire.payload(frame.d, meta.decoder, self._null)
            except msgspec.ValidationError as exc:
                return [Reject(entry.waiter, validation_error(exc, f"output of {entry.name!r}"))]
            return [Resolve(entry.waiter, value)]
        topic = self._acks.pop(frame.i, None)
        if topic is None:
            self._n["late_replies"] += 1
            return []
        self._n["subs_acked"] += 1
        if topic.acked or self._topics.get(topic.name) is not topic:
            return []  # a re-subscribe after reconnect, or a topic dropped meanwhile
        topic.acked = True
        return [Resolve(topic.ready, None)]

    def _on_err(self, frame: wire.Err) -> list[Action[W]]:
        if frame.i is msgspec.UNSET:
            self._n["connection_errors"] += 1
            log.debug("connection-level error from the server: %s %s", frame.code, frame.m)
            return []
        err = SocketError(frame.code, frame.m, None if frame.d is msgspec.UNSET else frame.d)
        entry = self._table.resolve(frame.i, self._epoch)
        if entry is not None:
            self._n["calls_answered"] += 1
            return [Reject(entry.waiter, err)]
        topic = self._acks.pop(frame.i, None)
        if topic is None:
            self._n["late_replies"] += 1
            return []
        self._n["subs_refused"] += 1
        if self._topics.get(topic.name) is not topic:
            return []
        # refused: the topic's local callbacks go, and it is not sent again (PROTOCOL §6)
        del self._topics[topic.name]
        return [Reject(topic.ready, err)]

    def _on_sreq(self, frame: wire.SReq) -> list[Action[W]]:
        self._n["server_requests"] += 1
        entry = self.surface.server_requests.get(frame.m)
        handler = self._handlers.get(frame.m)
        if entry is None or handler is None:
            return self._serr(frame.i, ErrorCode.NOT_FOUND, f"No handler for {frame.m}")
        try:
            value = wire.payload(frame.d, self._decoders.get(entry.input), self._null)
        except msgspec.ValidationError as exc:
            err = validation_error(exc, f"input of {frame.m!r}")
            return self._serr(frame.i, err.code, err.message, err.data)
        return [Ask(frame.i, frame.m, handler, value, self._epoch)]

    def _deliver(
        self, what: str, raw: msgspec.Raw | msgspec.UnsetType, decoder: wire.Decoder[Any], callbacks: list[Callback]
    ) -> list[Action[W]]:
        try:
            value = wire.payload(raw, decoder, self._null)
        except msgspec.ValidationError as exc:
            self._n["bad_payloads"] += 1
            log.warning("dropped %s with an invalid payload: %s", what, exc)
            return []
        return [Deliver(tuple(callbacks), value)]

    # ------------------------------------------------------------------ introspection
    @property
    def opens(self) -> int:
        """Times a connection opened."""
        return self._epoch

    def statistics(self) -> dict[str, int]:
        """Counters since creation (see :data:`COUNTERS`) and gauges of right now.

        Gauges: ``queued`` (calls waiting for a connection), ``pending`` (calls sent and
        unanswered), ``subscriptions`` (topics with local callbacks), ``sub_acks`` (subs
        sent and not yet acked), ``connected`` (1 while open).
        """
        stats = dict(self._n)
        waiting = len(self._table)
        online = self._state is State.OPEN
        stats["queued"] = 0 if online else waiting
        stats["pending"] = waiting if online else 0
        stats["subscriptions"] = len(self._topics)
        stats["sub_acks"] = len(self._acks)
        stats["connected"] = int(online)
        return stats


def coerce(value: Any, schema: Any, where: str) -> Any:
    """Accept a dict (or any convertible value) where the schema wants a typed object.

    Raises ``SocketError(VALIDATION)`` when it does not fit.
    """
    try:
        if isinstance(schema, type) and isinstance(value, schema):
            return value
    except TypeError:  # TypedDict and some typing constructs refuse isinstance()
        pass
    try:
        return msgspec.convert(value, schema)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, where) from exc


__all__ = [
    "TRANSITIONS",
    "Action",
    "Ask",
    "ClientSession",
    "ClientStateError",
    "Deliver",
    "Reject",
    "Report",
    "Resolve",
    "Send",
    "State",
]
