"""The asyncio client: typed calls, events, topics and server requests, with reconnect.

Theory of operation. One supervisor task owns the WebSocket: it connects, reads frames
until the connection drops, then sleeps an exponential backoff with full jitter and
connects again. Calls made while disconnected are queued and flushed, in id order, on the
next open; calls already sent when the connection drops reject ``DISCONNECTED`` (the
server may or may not have run them); topic subscriptions are sent again on every open.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import broadcast
from websockets.exceptions import ConnectionClosed, InvalidStatus

from superline_zmq import wire
from superline_zmq.contract import Contract, Entry, Request, Surface
from superline_zmq.errors import ErrorCode, SocketError
from superline_zmq.validation import validation_error

log = logging.getLogger("superline_zmq.client")

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

Callback = Callable[[Any], Any]


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``uniform(0, min(cap, base * factor**attempt))`` (full jitter)."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay before retry number ``attempt`` (0-based)."""
        # Past ~64 doublings the cap has long won; clamping keeps float ** from overflowing.
        return rng.uniform(0.0, min(self.cap, self.base * self.factor ** min(attempt, 64)))


@dataclass
class _Call:
    name: str
    future: asyncio.Future[Any]
    decoder: wire.Decoder[Any]
    data: bytes
    sent: bool = False


@dataclass
class _TopicState:
    callbacks: list[Callback] = field(default_factory=list)
    ready: asyncio.Future[None] | None = None
    decoder: wire.Decoder[Any] | None = None


class Subscription:
    """A local topic subscription: ``await sub.ready``; ``sub.unsubscribe()``."""

    def __init__(self, client: Client, topic: str, callback: Callback, ready: asyncio.Future[None]) -> None:
        self._client = client
        self.topic = topic
        self._callback = callback
        #: Resolves when the server acked the subscription; rejects FORBIDDEN/NOT_FOUND.
        self.ready = ready

    def unsubscribe(self) -> None:
        """Remove this callback; the last one for a topic sends ``unsub``."""
        self._client._unsubscribe(self.topic, self._callback)


class Client:
    """A superline.v1 client. Create it with :func:`connect`."""

    def __init__(
        self,
        contract: Contract,
        url: str,
        *,
        role: str,
        params: Mapping[str, str] | None = None,
        serializer: wire.SerializerName | wire.Serializer = "json",
        reconnect: bool = True,
        timeout: float | None = 30.0,
        backoff: Backoff = Backoff(),
        open_timeout: float = 10.0,
        max_message_size: int | None = 16 * 1024 * 1024,
        rng: random.Random | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> None:
        if role not in contract.own:
            raise ValueError(f"role {role!r} is not in the contract (roles: {', '.join(contract.roles)})")
        self.contract = contract
        self.role = role
        self.surface: Surface = contract.surface(role)
        self.url = _with_query(url, {**(params or {}), "role": role})
        self.serializer = wire.get_serializer(serializer)
        self._encode = self.serializer.encode
        self._null = self.serializer.null()
        self._text = self.serializer.text
        self._frame_decoder: wire.Decoder[wire.ServerFrame] = self.serializer.decoder(wire.ServerFrame)
        self.reconnect = reconnect
        self.timeout = timeout
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.max_message_size = max_message_size
        self._rng = rng or random.Random()
        self._on_error = on_error
        self._seq = 0
        self._calls: dict[int, _Call] = {}
        self._sub_acks: dict[int, str] = {}
        self._topics: dict[str, _TopicState] = {}
        self._events: dict[str, list[Callback]] = {}
        self._event_decoders = {n: self.serializer.decoder(e.payload) for n, e in self.surface.events.items()}
        self._handlers: dict[str, Callable[[Any], Any]] = {}
        self._decoders: dict[int, wire.Decoder[Any]] = {}
        self._ws: ClientConnection | None = None
        self._opened: asyncio.Event = asyncio.Event()
        self._released = asyncio.Event()
        self._closed = False
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._first: asyncio.Future[None] | None = None
        #: The latest ``env`` value the server sent (``None`` if none).
        self.env: Any = None
        #: Times the connection opened (1 after the first connect).
        self.opens = 0

    # ------------------------------------------------------------------ lifecycle
    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._supervisor = loop.create_task(self._run())
        try:
            async with asyncio.timeout(self.open_timeout):
                await asyncio.shield(self._first)
        except TimeoutError:
            await self.close()
            raise SocketError(
                ErrorCode.DISCONNECTED, f"could not connect to {self.url} within {self.open_timeout} s"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                ws = await ws_connect(
                    self.url,
                    max_size=self.max_message_size,
                    ping_interval=None,
                    compression=None,
                    open_timeout=self.open_timeout,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                err = SocketError(
                    ErrorCode.UNAUTHORIZED if status in (401, 403) else ErrorCode.DISCONNECTED,
                    f"the server refused the WebSocket upgrade with HTTP {status}",
                )
                err.__cause__ = exc
                if not self._fail_first(err):
                    log.warning("reconnect refused: HTTP %s", status)
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                err = SocketError(ErrorCode.DISCONNECTED, f"cannot connect to {self.url}: {exc}")
                err.__cause__ = exc
                if not self.reconnect:
                    self._fail_first(err)
            else:
                attempt = 0
                await self._session(ws)
            if not self.reconnect or self._closed:
                break
            await asyncio.sleep(self.backoff.delay(attempt, self._rng))
            attempt += 1
        self._closed = True
        self._reject_all(SocketError(ErrorCode.DISCONNECTED, "Connection closed"))

    def _fail_first(self, err: SocketError) -> bool:
        """Fail the pending ``connect()`` with ``err``; False if it already succeeded."""
        if self._first is not None and not self._first.done():
            self._first.set_exception(err)
            self._closed = True
            return True
        return False

    async def _session(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.opens += 1
        for i in sorted(self._calls):
            call = self._calls[i]
            if not call.sent:
                call.sent = True
                self._write(call.data)
        for name, state in self._topics.items():
            if state.callbacks:
                self._send_sub(name)
        self._opened.set()
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
            # Read nothing until connect() has returned: handlers its caller registers
            # right away then see the frames the server pushes at accept.
            await self._released.wait()
        try:
            await self._read_loop(ws)
        finally:
            self._ws = None
            self._opened.clear()
            self._sub_acks.clear()
            for i, call in list(self._calls.items()):
                if call.sent and not call.future.done():
                    del self._calls[i]
                    call.future.set_exception(SocketError(ErrorCode.DISCONNECTED, "Connection closed"))

    async def close(self) -> None:
        """Close the connection and stop reconnecting; pending calls reject ``DISCONNECTED``."""
        self._closed = True
        ws = self._ws
        if ws is not None:
            await ws.close()
        if self._supervisor is not None and self._supervisor is not asyncio.current_task():
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for t in list(self._tasks):
            t.cancel()
        self._reject_all(SocketError(ErrorCode.DISCONNECTED, "Client closed"))

    def _reject_all(self, err: SocketError) -> None:
        for call in self._calls.values():
            if not call.future.done():
                call.future.set_exception(err)
        self._calls.clear()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while the WebSocket is open."""
        return self._ws is not None

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the WebSocket is open (again)."""
        async with asyncio.timeout(timeout):
            await self._opened.wait()

    # ------------------------------------------------------------------ requests
    @overload
    async def call(
        self, name: Request[I, O], input: I | Mapping[str, Any] = ..., *, timeout: float | None = ...
    ) -> O: ...
    @overload
    async def call(self, name: str, input: Any = None, *, timeout: float | None = ...) -> Any: ...
    async def call(self, name: Any, input: Any = None, *, timeout: Any = ...) -> Any:
        """Call a request and wait for its typed output.

        ``input`` may be the schema's type or a plain dict (converted and validated
        here). Rejects ``TIMEOUT`` after ``timeout`` seconds (default: the client's; None
        disables), ``DISCONNECTED`` if the connection drops after sending, or the
        server's error.
        """
        if self._closed:
            raise SocketError(ErrorCode.DISCONNECTED, "Client closed")
        n = self.contract.name_of(name)
        entry = self.surface.requests.get(n)
        if entry is None:
            raise SocketError(ErrorCode.NOT_FOUND, f"Unknown message: {n}")
        value = _coerce(input, entry.input, f"input of {n!r}")
        self._seq += 1
        i = self._seq
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        call = _Call(n, fut, self._decoder(entry.output), self._encode(wire.ReqOut(i, n, value)))
        self._calls[i] = call
        if self._ws is not None:
            call.sent = True
            self._write(call.data)
        limit = self.timeout if timeout is ... else timeout
        try:
            async with asyncio.timeout(limit if limit else None):
                return await fut
        except TimeoutError:
            raise SocketError(ErrorCode.TIMEOUT, f"Request '{n}' timed out") from None
        finally:
            self._calls.pop(i, None)

    # ------------------------------------------------------------------ events and topics
    def on(self, event: Entry | str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(payload)`` for every ``event``; returns the function that stops it."""
        name = self.contract.name_of(event)
        if name not in self.surface.events:
            raise ValueError(f"{name!r} is not an event of role {self.role!r}")
        self._events.setdefault(name, []).append(callback)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._events.get(name, []).remove(callback)

        return off

    def subscribe(self, topic: Entry | str, callback: Callback) -> Subscription:
        """Subscribe ``callback(payload)`` to ``topic``; the first local one sends ``sub``."""
        name = self.contract.name_of(topic)
        entry = self.surface.topics.get(name)
        loop = asyncio.get_running_loop()
        state = self._topics.get(name)
        if state is None or state.ready is None:
            state = self._topics[name] = _TopicState(ready=loop.create_future())
        assert state.ready is not None
        if entry is None:
            fut: asyncio.Future[None] = loop.create_future()
            fut.set_exception(SocketError(ErrorCode.NOT_FOUND, f"Unknown topic: {name}"))
            fut.add_done_callback(_consume)
            del self._topics[name]
            return Subscription(self, name, callback, fut)
        state.decoder = state.decoder or self.serializer.decoder(entry.payload)
        first = not state.callbacks
        state.callbacks.append(callback)
        if first and self._ws is not None:
            self._send_sub(name)
        return Subscription(self, name, callback, state.ready)

    def _send_sub(self, name: str) -> None:
        self._seq += 1
        self._sub_acks[self._seq] = name
        self._write(self._encode(wire.Sub(self._seq, name)))

    def _unsubscribe(self, name: str, callback: Callback) -> None:
        state = self._topics.get(name)
        if state is None:
            return
        with contextlib.suppress(ValueError):
            state.callbacks.remove(callback)
        if not state.callbacks:
            del self._topics[name]
            if self._ws is not None:
                self._write(self._encode(wire.Unsub(name)))

    # ------------------------------------------------------------------ server requests
    def implement(self, handlers: Mapping[str, Callable[[Any], Any]]) -> None:
        """Answer server requests: ``{"confirm": async def (input) -> output}``."""
        for name, fn in handlers.items():
            if name not in self.surface.server_requests:
                raise ValueError(f"{name!r} is not a server request of role {self.role!r}")
            self._handlers[name] = fn

    async def _answer(self, frame: wire.SReq) -> None:
        entry = self.surface.server_requests.get(frame.m)
        fn = self._handlers.get(frame.m)
        if entry is None or fn is None:
            self._write(self._encode(wire.SErr(frame.i, ErrorCode.NOT_FOUND, f"No handler for {frame.m}")))
            return
        try:
            value = wire.payload(frame.d, self._decoder(entry.input), self._null)
        except msgspec.ValidationError as exc:
            err = validation_error(exc, f"input of {frame.m!r}")
            self._write(self._encode(wire.SErr(frame.i, err.code, err.message, err.data)))
            return
        try:
            result = fn(value)
            if inspect.isawaitable(result):
                result = await result
            data = self._encode(wire.SResOut(frame.i, result))
        except SocketError as exc:
            data = self._encode(
                wire.SErr(frame.i, exc.code, exc.message, msgspec.UNSET if exc.data is None else exc.data)
            )
        except Exception as exc:
            self._report(exc)
            data = self._encode(wire.SErr(frame.i, ErrorCode.INTERNAL, "Internal client error"))
        if self._ws is not None:
            self._write(data)

    # ------------------------------------------------------------------ inbound
    async def _read_loop(self, ws: ClientConnection) -> None:
        decode = self._frame_decoder.decode
        try:
            async for msg in ws:
                try:
                    frame = decode(msg)
                except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                    log.debug("dropped an undecodable frame: %s", exc)
                    continue
                self._dispatch(frame)
        except ConnectionClosed:
            pass

    def _dispatch(self, frame: wire.ServerFrame) -> None:
        if isinstance(frame, wire.Res):
            call = self._calls.get(frame.i)
            if call is not None:
                if not call.future.done():
                    try:
                        call.future.set_result(wire.payload(frame.d, call.decoder, self._null))
                    except msgspec.ValidationError as exc:
                        call.future.set_exception(validation_error(exc, f"output of {call.name!r}"))
                return
            topic = self._sub_acks.pop(frame.i, None)
            state = self._topics.get(topic) if topic is not None else None
            if state is not None and state.ready is not None and not state.ready.done():
                state.ready.set_result(None)
        elif isinstance(frame, wire.Err):
            if frame.i is msgspec.UNSET:
                log.debug("connection-level error from the server: %s %s", frame.code, frame.m)
                return
            err = SocketError(frame.code, frame.m, None if frame.d is msgspec.UNSET else frame.d)
            call = self._calls.get(frame.i)
            if call is not None:
                if not call.future.done():
                    call.future.set_exception(err)
                return
            topic = self._sub_acks.pop(frame.i, None)
            if topic is not None:
                state = self._topics.pop(topic, None)
                if state is not None and state.ready is not None and not state.ready.done():
                    state.ready.set_exception(err)
                    state.ready.add_done_callback(_consume)
        elif isinstance(frame, wire.Evt):
            callbacks = self._events.get(frame.e)
            ev_decoder = self._event_decoders.get(frame.e)
            if callbacks and ev_decoder is not None:
                self._deliver(f"event {frame.e!r}", frame.d, ev_decoder, callbacks)
        elif isinstance(frame, wire.Pub):
            state = self._topics.get(frame.c)
            if state is not None and state.decoder is not None and state.callbacks:
                self._deliver(f"topic {frame.c!r}", frame.d, state.decoder, state.callbacks)
        elif isinstance(frame, wire.Ping):
            self._write(self._encode(wire.Pong()))
        elif isinstance(frame, wire.SReq):
            self._spawn(self._answer(frame))
        elif isinstance(frame, wire.Env):
            self.env = None if frame.d is msgspec.UNSET else self.serializer.decode_any(frame.d)

    def _deliver(
        self, what: str, raw: msgspec.Raw | msgspec.UnsetType, decoder: wire.Decoder[Any], cbs: list[Callback]
    ) -> None:
        try:
            value = wire.payload(raw, decoder, self._null)
        except msgspec.ValidationError as exc:
            log.warning("dropped %s with an invalid payload: %s", what, exc)
            return
        for cb in list(cbs):
            try:
                result = cb(value)
                if inspect.isawaitable(result):
                    self._spawn(result)
            except Exception as exc:
                self._report(exc)

    # ------------------------------------------------------------------ plumbing
    def _decoder(self, schema: Any) -> wire.Decoder[Any]:
        """One long-lived typed decoder per schema, built on first use."""
        dec = self._decoders.get(id(schema))
        if dec is None:
            dec = self._decoders[id(schema)] = self.serializer.decoder(schema)
        return dec

    def _write(self, data: bytes) -> None:
        ws = self._ws
        if ws is not None:
            broadcast((ws,), data, text=self._text)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._report(task.exception())  # type: ignore[arg-type]

    def _report(self, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(exc)
        else:
            log.error("error in a client callback", exc_info=exc)


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved: an unawaited failed ``ready`` is not a bug."""
    if not fut.cancelled():
        fut.exception()


def _coerce(value: Any, schema: Any, where: str) -> Any:
    """Accept a dict (or any convertible value) where the schema wants a typed object."""
    try:
        if isinstance(schema, type) and isinstance(value, schema):
            return value
    except TypeError:  # TypedDict and some typing constructs refuse isinstance()
        pass
    try:
        return msgspec.convert(value, schema)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, where) from exc


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit(parts._replace(query=query))


async def connect(contract: Contract, url: str, *, role: str, **options: Any) -> Client:
    """Connect to a superline server and wait for the connection to open.

    Raises ``SocketError(UNAUTHORIZED)`` when the server refuses the handshake, or
    ``DISCONNECTED`` when it cannot be reached (after retrying for ``open_timeout``
    seconds when ``reconnect`` is on). See :class:`Client` for the options.
    """
    client = Client(contract, url, role=role, **options)
    await client._start()
    client._released.set()
    return client
