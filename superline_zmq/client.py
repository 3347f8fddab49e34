"""The asyncio client: typed calls, events, topics and server requests, with reconnect.

Theory of operation. Every protocol decision (ids, the offline queue, re-subscribing,
answers to server requests, timeouts) is made by a pure
:class:`~superline_zmq.client_session.ClientSession`; this module only pumps it, the way
websockets' asyncio ``Connection`` pumps its sans-I/O ``Protocol``:

- one **supervisor** task owns the network: it opens a connection through the transport
  seam (:func:`superline_zmq.transport.ws.connect`), tells the session
  (``connected``), sends what it returns, lets the connection's reader feed every
  message to ``session.receive`` until the connection ends, tells the session
  (``disconnected``), then sleeps an exponential backoff with full jitter (an injected
  :class:`random.Random`) and starts over;
- **one timer** (``loop.call_at``) sleeps until the session's ``next_deadline()`` and
  then calls ``expire`` — not one ``asyncio.timeout`` per call;
- a call's **waiter is a future** stored in the session's request table: the session
  says which future to settle and how, this module settles it;
- event and topic **callbacks**, server-request **handlers** and the ``on_reconnect`` /
  ``on_disconnect`` **hooks** run here; the async ones run as tasks the client owns, and
  whatever they raise goes to ``on_error`` (the supervisor never dies of it).

:meth:`Client.close` closes the connection, stops the supervisor, the timer and every
task it owns: nothing keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload
from urllib.parse import urlencode, urlsplit, urlunsplit

from superline_zmq import wire
from superline_zmq.client_session import (
    Action,
    Ask,
    Callback,
    ClientSession,
    Deliver,
    Reject,
    Report,
    Resolve,
    Send,
    State,
)
from superline_zmq.contract import Contract, Entry, Request, Surface
from superline_zmq.errors import ErrorCode, SocketError
from superline_zmq.transport import ConnectError
from superline_zmq.transport import ws as ws_transport

log = logging.getLogger("superline_zmq.client")

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

_Waiter = asyncio.Future[Any]


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


class _Reader:
    """The transport's :class:`~superline_zmq.transport.MessageHandler` for one connection."""

    __slots__ = ("_client",)

    def __init__(self, client: Client) -> None:
        self._client = client

    def on_message(self, data: bytes | str, /) -> None:
        self._client._receive(data)

    def on_close(self, code: int | None, /) -> None:
        pass  # the supervisor learns of it from wait_closed()


class Client:
    """A superline.v1 client. Create it with :func:`connect`.

    Options (keyword arguments of :func:`connect`): ``params`` (query parameters of the
    handshake), ``serializer``, ``reconnect``, ``timeout`` (default per call, seconds;
    ``None`` or 0: none), ``backoff``, ``open_timeout``, ``max_message_size`` (inbound,
    bytes; ``None``: no limit), ``max_queued`` (calls that may wait for a connection;
    beyond it a call fails ``DISCONNECTED`` at once), ``ssl`` (an
    :class:`ssl.SSLContext` for ``wss://``), ``rng`` (jitter), ``on_error`` (gets what
    callbacks, handlers and hooks raise), ``on_reconnect()`` (after every re-open, once
    queued calls and subscriptions are sent again) and ``on_disconnect(code)`` (each time
    an open connection drops; not after :meth:`close`). Hooks may be sync or async.
    """

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
        max_queued: int = 1000,
        ssl: ssl_module.SSLContext | None = None,
        rng: random.Random | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        on_reconnect: Callable[[], Any] | None = None,
        on_disconnect: Callable[[int | None], Any] | None = None,
    ) -> None:
        if ssl is not None and urlsplit(url).scheme != "wss":
            raise ValueError(f"ssl= needs a wss:// URL, got {url!r}")
        self._session: ClientSession[_Waiter] = ClientSession(
            contract, role, serializer=serializer, reconnect=reconnect, max_queued=max_queued
        )
        self.contract = contract
        self.role = role
        self.surface: Surface = self._session.surface
        self.url = _with_query(url, {**(params or {}), "role": role})
        self.serializer = self._session.serializer
        self.timeout = timeout
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.max_message_size = max_message_size
        self.ssl = ssl
        self._rng = rng or random.Random()
        self._on_error = on_error
        self._on_reconnect = on_reconnect
        self._on_disconnect = on_disconnect
        self._link: ws_transport.WsLink | None = None
        self._opened = asyncio.Event()
        self._released = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._first: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._connect_attempts = 0
        self._connect_failures = 0

    # ------------------------------------------------------------------ properties
    @property
    def reconnect(self) -> bool:
        """Reconnect after the connection drops."""
        return self._session.reconnect

    @reconnect.setter
    def reconnect(self, value: bool) -> None:
        self._session.reconnect = value

    @property
    def max_queued(self) -> int:
        """Most calls that may wait for a connection."""
        return self._session.max_queued

    @property
    def env(self) -> Any:
        """The latest ``env`` value the server sent (``None`` if none)."""
        return self._session.env

    @property
    def opens(self) -> int:
        """Times the connection opened (1 after the first connect)."""
        return self._session.opens

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._session.state is State.OPEN

    @property
    def topics(self) -> frozenset[str]:
        """Topics with local callbacks (subscribed again on every open)."""
        return self._session.topics

    def statistics(self) -> dict[str, int]:
        """Counters and gauges: calls (sent, answered, timed out, rejected …), ``queued`` and
        ``pending`` now, frames in and out, bad frames, opens and reconnects, connect
        attempts, and the ``tasks`` (callbacks, handlers, hooks) running. Never blocks."""
        stats = self._session.statistics()
        stats["connect_attempts"] = self._connect_attempts
        stats["connect_failures"] = self._connect_failures
        stats["tasks"] = len(self._tasks)
        return stats

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
        """The supervisor: connect, serve the connection, back off, again."""
        attempt = 0
        try:
            while not self._closed():
                self._connect_attempts += 1
                try:
                    link = await self._open_link()
                except ConnectError as exc:
                    self._connect_failures += 1
                    refused = exc.status is not None
                    code = ErrorCode.UNAUTHORIZED if exc.status in (401, 403) else ErrorCode.DISCONNECTED
                    err = SocketError(code, str(exc))
                    err.__cause__ = exc
                    if refused:
                        if not self._fail_first(err):
                            log.warning("reconnect refused: HTTP %s", exc.status)
                    elif not self.reconnect:
                        self._fail_first(err)
                else:
                    attempt = 0
                    await self._serve(link)
                if not self.reconnect or self._closed():
                    break
                await asyncio.sleep(self.backoff.delay(attempt, self._rng))
                attempt += 1
        except Exception as exc:  # a bad URL or a bug: fail connect() or report it, never vanish
            err = SocketError(ErrorCode.DISCONNECTED, f"cannot connect to {self.url}: {exc!r}")
            err.__cause__ = exc
            if not self._fail_first(err):
                self._report(exc)
        finally:
            self._apply(self._session.close("Connection closed"))

    async def _open_link(self) -> ws_transport.WsLink:
        """Open a connection; if the client closes meanwhile, the connection is not leaked."""
        task = asyncio.ensure_future(
            ws_transport.connect(
                self.url,
                text=self.serializer.text,
                max_message_size=self.max_message_size,
                open_timeout=self.open_timeout,
                ssl=self.ssl,
            )
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            try:
                link = await task
            except BaseException:
                pass
            else:
                link.abort()
                await link.wait_closed()
            raise

    def _closed(self) -> bool:
        return self._session.state is State.CLOSED

    def _fail_first(self, err: SocketError) -> bool:
        """Fail the pending ``connect()`` with ``err``; False if it already succeeded."""
        if self._first is not None and not self._first.done():
            self._first.set_exception(err)
            self._apply(self._session.close("Connection closed"))
            return True
        return False

    async def _serve(self, link: ws_transport.WsLink) -> None:
        """Pump one open connection until it closes."""
        if self._closed():  # closed while the handshake completed
            link.abort()
            await link.wait_closed()
            return
        self._link = link
        self._apply(self._session.connected(asyncio.get_running_loop().time()))
        self._arm()
        self._opened.set()
        try:
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
                # Read nothing until connect() has returned: handlers its caller registers
                # right away then see the frames the server pushes at accept.
                await self._released.wait()
            link.start_reader(_Reader(self))
            if self._session.opens > 1:
                self._hook(self._on_reconnect)
            await link.wait_closed()
        finally:
            self._link = None
            self._opened.clear()
            self._apply(self._session.disconnected())
        if not self._closing:
            self._hook(self._on_disconnect, link.close_code)

    async def close(self) -> None:
        """Close the connection and stop reconnecting; pending calls reject ``DISCONNECTED``.

        Waits until the connection, the supervisor, the timer and every task the client
        started (async callbacks, handlers, hooks) are gone. Idempotent.
        """
        self._closing = True
        self._apply(self._session.close("Client closed"))
        link = self._link
        if link is not None:
            await link.close()
        current = asyncio.current_task()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not current:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        if link is not None:
            await link.wait_closed()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the connection is open (again)."""
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
        disables), ``DISCONNECTED`` if the connection drops after sending (or while
        offline, at once, when ``max_queued`` calls already wait), or the server's error.
        """
        loop = asyncio.get_running_loop()
        fut: _Waiter = loop.create_future()
        limit = self.timeout if timeout is ... else timeout
        i, actions = self._session.call(name, input, fut, now=loop.time(), timeout=limit)
        self._apply(actions)
        self._arm()
        try:
            return await fut
        finally:
            self._session.cancel(i)  # a no-op unless the caller gave up (cancelled)

    # ------------------------------------------------------------------ timer
    def _arm(self) -> None:
        """Keep the one timer at the session's next deadline (or earlier: it re-arms)."""
        deadline = self._session.next_deadline()
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer, deadline)
        self._timer_at = deadline

    def _on_timer(self, deadline: float) -> None:
        self._timer = self._timer_at = None
        # call_at may fire a hair before its time: treat now as at least the deadline
        now = max(asyncio.get_running_loop().time(), deadline)
        self._apply(self._session.expire(now))
        self._arm()

    # ------------------------------------------------------------------ events and topics
    def on(self, event: Entry | str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(payload)`` for every ``event``; returns the function that stops it."""
        name = self._session.on(event, callback)

        def off() -> None:
            self._session.off(name, callback)

        return off

    def subscribe(self, topic: Entry | str, callback: Callback) -> Subscription:
        """Subscribe ``callback(payload)`` to ``topic``; the first local one sends ``sub``."""
        name = self.contract.name_of(topic)
        loop = asyncio.get_running_loop()
        try:
            ready, actions = self._session.subscribe(name, callback, loop.create_future)
        except SocketError as exc:
            failed: asyncio.Future[None] = loop.create_future()
            failed.set_exception(exc)
            failed.add_done_callback(_consume)
            return Subscription(self, name, callback, failed)
        self._apply(actions)
        return Subscription(self, name, callback, ready)

    def _unsubscribe(self, name: str, callback: Callback) -> None:
        self._apply(self._session.unsubscribe(name, callback))

    # ------------------------------------------------------------------ server requests
    def implement(self, handlers: Mapping[str, Callable[[Any], Any]]) -> None:
        """Answer server requests: ``{"confirm": async def (input) -> output}``."""
        self._session.implement(handlers)

    def _ask(self, ask: Ask) -> None:
        try:
            result = ask.handler(ask.value)
        except Exception as exc:
            self._apply(self._session.fail(ask, exc))
            return
        if inspect.isawaitable(result):
            self._spawn(self._finish(ask, result))
        else:
            self._apply(self._session.answer(ask, result))

    async def _finish(self, ask: Ask, pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._apply(self._session.fail(ask, exc))
        else:
            self._apply(self._session.answer(ask, result))

    # ------------------------------------------------------------------ pumping the session
    def _receive(self, data: bytes | str) -> None:
        try:
            self._apply(self._session.receive(data))
        except Exception as exc:  # the transport's reader must not die of a bug here
            self._report(exc)

    def _apply(self, actions: list[Action[_Waiter]]) -> None:
        """Carry out what the session decided."""
        for action in actions:
            match action:
                case Send(data):
                    link = self._link
                    if link is not None:
                        link.send(data)
                case Resolve(waiter, value):
                    if not waiter.done():
                        waiter.set_result(value)
                case Reject(waiter, error):
                    if not waiter.done():
                        waiter.set_exception(error)
                        waiter.add_done_callback(_consume)
                case Deliver(callbacks, value):
                    for cb in callbacks:
                        try:
                            result = cb(value)
                        except Exception as exc:
                            self._report(exc)
                        else:
                            if inspect.isawaitable(result):
                                self._spawn(result)
                case Ask():
                    self._ask(action)
                case Report(error):
                    self._report(error)

    def _hook(self, fn: Callable[..., Any] | None, *args: Any) -> None:
        """Run an ``on_reconnect``/``on_disconnect`` hook; what it raises goes to ``on_error``."""
        if fn is None:
            return
        try:
            result = fn(*args)
        except Exception as exc:
            self._report(exc)
            return
        if inspect.isawaitable(result):
            self._spawn(result)

    def _spawn(self, aw: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._report(task.exception())  # type: ignore[arg-type]

    def _report(self, exc: BaseException) -> None:
        if self._on_error is not None:
            try:
                self._on_error(exc)
                return
            except Exception:
                log.exception("on_error raised while reporting an error")
        log.error("error in a client callback", exc_info=exc)


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved: an unawaited failed ``ready`` is not a bug."""
    if not fut.cancelled():
        fut.exception()


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
