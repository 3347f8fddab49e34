"""One connection's driver: pumps its session, runs its calls, owns its link.

:class:`ConnCore` is the server's :class:`~superline_zmq.transport.MessageHandler` for one
connection. The transport delivers each whole message to :meth:`ConnCore.on_message`,
which asks the :class:`~superline_zmq.session.ServerSession` what it means and carries
the decision out: a request runs as its own task (replies may come back out of order, as
in super-line), a subscribe is authorized then joined, an error is answered at once, an
answer completes a pending request. Nothing here decides protocol rules; it only does
the I/O the session asks for.

A connection's life: the transport opens it; the greeting (``env``) is sent at once;
:meth:`ConnCore.opening` runs ``on_connection`` and writes its presence, then starts
reading; when the transport reports the end, :meth:`ConnCore.on_close` leaves every
channel, withdraws presence, fails its pending server requests ``DISCONNECTED`` and runs
``on_disconnect``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from superline_zmq.contract import Entry
from superline_zmq.errors import ErrorCode, SocketError
from superline_zmq.handles import Conn
from superline_zmq.ids import ConnId
from superline_zmq.logs import RateLimitedLog
from superline_zmq.presence import ConnDescriptor
from superline_zmq.session import Answered, Call, Reply, ServerSession, SessionState, Subscribe, Unsubscribe
from superline_zmq.tasks import maybe_await
from superline_zmq.transport import Connection

if TYPE_CHECKING:
    from superline_zmq.core import Core
    from superline_zmq.routing import Router

log = logging.getLogger("superline_zmq.server")
_rlog = RateLimitedLog(log)


class ConnCore:
    """The driver of one connection (see the module docstring)."""

    __slots__ = ("__weakref__", "_core", "_router", "desc", "handle", "id", "link", "session")

    def __init__(
        self, core: Core, router: Router, id: ConnId, session: ServerSession, link: Connection, ctx: Any
    ) -> None:
        self._core = core
        self._router = router
        self.id = id
        self.session = session
        self.link = link
        #: The public handle the app sees.
        self.handle = Conn(self, ctx)
        #: The presence descriptor published for this connection (None until announced, or without presence).
        self.desc: ConnDescriptor | None = None

    def __repr__(self) -> str:
        return f"<ConnCore {self.id} {self.session.state.name}>"

    # ------------------------------------------------------------ life
    async def opening(self) -> None:
        """Run ``on_connection`` and announce presence, then start reading (always, even after a failure)."""
        on_connection = self._core.on_connection
        try:
            if on_connection is not None:
                try:
                    await maybe_await(on_connection(self.handle))
                except Exception as exc:
                    self._core.report(exc, self.handle)
                    self.session.closing()
                    await self.link.close(1011, "on_connection failed")
                    return
            await self._router.announce(self)
            if self.session.state is SessionState.OPENING:
                self.session.opened()
        finally:
            self.link.start(self)

    def on_close(self, code: int | None) -> None:
        """The transport says the connection is gone: clean up everything it held."""
        core = self._core
        if core.conns.pop(self.id, None) is not None:
            core.limits.closed(self.link.peer)
        for entry in self.session.closed(code):
            core.settle(
                entry, None, SocketError(ErrorCode.DISCONNECTED, f"connection {self.id} closed before answering")
            )
        self._router.retract(self)
        hook = core.on_disconnect
        if hook is not None:
            core.hooks.spawn(self._disconnected(hook))

    async def _disconnected(self, hook: Any) -> None:
        try:
            await maybe_await(hook(self.handle))
        except Exception as exc:
            self._core.report(exc, self.handle)

    # ------------------------------------------------------------ inbound
    def on_message(self, data: bytes | str) -> None:
        """One whole message from the client: do what the session decides."""
        ev = self.session.receive(data, self._core.clock())
        if ev is None:
            return
        core = self._core
        if isinstance(ev, Call):
            core.calls.spawn(self._call(ev))
        elif isinstance(ev, Reply):
            core.delivery.send(self, ev.frame)  # NOT_FOUND (counted by the session) or a bad subscribe
        elif isinstance(ev, Answered):
            core.settle(ev.entry, ev.value, ev.error)
        elif isinstance(ev, Subscribe):
            core.tasks.spawn(self._subscribe(ev))
        elif isinstance(ev, Unsubscribe):
            self._router.channels.remove_member(ev.channel, self)
        else:
            if ev.reply is not None:
                core.delivery.send(self, ev.reply)
            _rlog.log(
                logging.WARNING, "bad_frame", "dropped a bad frame from %s (%s): %s", self.id, self.link.peer, ev.error
            )

    async def _call(self, ev: Call) -> None:
        frame = ev.frame
        core = self._core
        timer = core.timer
        start = timer()
        try:
            result = await core.dispatch.request(self.handle, frame, ev.route)
            data = self.session.result(frame.i, result)
        except SocketError as exc:
            core.requests.error(exc.code, timer() - start)
            self.send_error(frame.i, exc.code, exc.message, exc.data)
            return
        except Exception as exc:
            core.requests.error(ErrorCode.INTERNAL, timer() - start)
            self.internal(frame.i, exc)
            return
        core.requests.ok(timer() - start)
        core.delivery.send(self, data)

    async def _subscribe(self, sub: Subscribe) -> None:
        core = self._core
        try:
            await core.dispatch.subscribe(self.handle, sub.name)
        except SocketError as exc:
            self.send_error(sub.i, exc.code, exc.message, exc.data)
            return
        except Exception as exc:
            self.internal(sub.i, exc)
            return
        decision = self.session.authorized(sub)
        if decision == "gone":
            return
        if decision == "join":
            ch = self._router.channels.add_member(sub.channel, self)  # idempotent for a repeated sub
            try:
                await asyncio.shield(ch.live)
            except Exception as exc:
                leave = self.session.leave_topic(sub.name)
                if leave is not None:
                    self._router.channels.remove_member(leave.channel, self)
                self.internal(sub.i, exc)
                return
        core.delivery.send(self, self.session.result(sub.i, None))

    # ------------------------------------------------------------ outbound
    def send(self, data: bytes) -> bool:
        """Write one frame under the backpressure policy."""
        return self._core.delivery.send(self, data)

    def send_error(self, i: int, code: str, message: str, data: Any = None) -> None:
        """Answer request ``i`` with an ``err`` frame (error data that cannot be encoded is reported, then left out)."""
        frame, dropped = self.session.error_reporting(i, code, message, data)
        if dropped is not None:
            self._core.report(dropped, self.handle)
        self.send(frame)

    def internal(self, i: int | None, exc: BaseException) -> None:
        """An unexpected exception in the app: INTERNAL to the client (nothing leaked), the exception to on_error."""
        self._core.stats.internal_errors += 1
        if i is not None:
            self.send_error(i, ErrorCode.INTERNAL, "Internal server error")
        self._core.report(exc, self.handle)

    def emit(self, event: Entry | str, payload: Any) -> None:
        """Push an event of this connection's role (``ValueError`` for one outside its surface)."""
        core = self._core
        name = core.contract.name_of(event)
        data = self.session.event(name, payload)
        if core.validate_outgoing:
            core.check_event(name, self.session.surface.events[name].payload, data)
        self.send(data)

    async def request(self, name: Entry | str, payload: Any, timeout: float) -> Any:
        """Ask the client server request ``name`` and wait for its validated answer."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        entry, frame = self.session.server_request(
            self._core.contract.name_of(name), payload, waiter=fut, deadline=loop.time() + timeout
        )
        self._core.watch(entry)
        self.send(frame)
        try:
            return await fut
        finally:
            self._core.table.cancel(entry.id)  # answered, failed or cancelled: the entry is gone either way

    def forward_request(self, name: str, raw: bytes, timeout: float, answer: Any) -> None:
        """Ask the client for another node; ``answer(value, error)`` gets the raw answer (no task per request)."""
        loop = asyncio.get_running_loop()
        entry, frame = self.session.server_request(name, raw, waiter=answer, deadline=loop.time() + timeout, raw=True)
        self._core.watch(entry)
        self.send(frame)

    async def close(self, code: int, reason: str) -> None:
        """Close gracefully and wait until the connection is closed."""
        self.session.closing()
        await self.link.close(code, reason)

    def terminate(self) -> None:
        """Drop the TCP connection without a closing handshake (the peer sees 1006)."""
        self.link.abort()
