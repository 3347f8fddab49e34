"""The fast transport: one ``asyncio.Protocol`` per socket pumping websockets' sans-I/O ``ServerProtocol``.

Theory of operation. websockets' asyncio server gives every connection a reader task, a
message assembler and a future per received message; this module keeps only the part that
decides things, :class:`websockets.server.ServerProtocol` (HTTP upgrade parsing, the
handshake response, frame parsing, pings, the closing handshake), and pumps it from the
event loop's own callbacks:

* ``data_received`` feeds bytes to the protocol, writes what it wants written (pongs, close
  frames, HTTP responses) and hands each whole message straight to the connection's
  :class:`~superline_zmq.transport.MessageHandler`: no task, no future, no queue per message;
* once open, well-formed data frames are parsed here (a header check and websockets' C
  ``apply_mask``, about a sixth of the cost of its generator parser); control frames are
  handed to the protocol whole, so it always sits at a frame boundary, and the first frame
  out of the ordinary (reserved bits, unknown opcode, unmasked, a stray continuation) is
  handed to it together with everything after, so websockets keeps deciding every error.
  Entering that mode needs websockets' read buffer to be empty at the handshake; where that
  cannot be checked (a future websockets), every frame goes through the protocol, counted
  in ``statistics()["protocol_parsed"]``;
* sending frames the payload ourselves (server frames are never masked and compression is
  off, so a frame is a 2-10 byte header plus the payload) and calls ``transport.write``;
  :meth:`FastConnection.fanout` frames once and writes the same bytes to every connection.

One connection's life:

1. **head**: bytes go to the protocol until it has parsed the request; more than
   :attr:`Limits.max_request_head` bytes without a whole request is answered 431, no request
   within :attr:`Limits.open_timeout` is dropped;
2. **deciding**: reading pauses, the request is checked (a bad one gets websockets' own 4xx),
   and one task per handshake awaits :meth:`Gateway.decide`; a refusal is an HTTP response with
   the gateway's status, never an upgrade; a plain ``GET`` goes to the ``http`` hook if any;
3. **open, not started**: after the 101 the gateway gets the connection; reading stays paused
   and frames that already arrived wait (at most :attr:`Limits.max_pending` bytes) until
   :meth:`FastConnection.start`;
4. **open**: messages are delivered as they are parsed; reading pauses while our own writes
   are over :attr:`Limits.write_high` (a peer that does not read what we send gets nothing
   more read from it) and resumes under :attr:`Limits.write_low`;
5. **closing**: after a close frame (ours or theirs) nothing more is delivered; the TCP
   connection must end within :attr:`Limits.close_timeout` or it is aborted;
6. **closed**: ``on_close`` is called exactly once (if the connection was started).

Memory per connection is therefore bounded: the request head limit while handshaking, then
the largest message (``gateway.max_message_size``, over it the connection is closed 1009
exactly as websockets does) plus one socket read, plus whatever the gateway chooses to send,
which :meth:`FastConnection.buffered` reports so the gateway can apply its policy.

websockets' per-connection log lines ("connection open", "connection closed", INFO on
``websockets.server``) are demoted to DEBUG on ``superline_zmq.transport.fast``; its errors
stay errors. Only public asyncio transport calls are used, so the same code runs on uvloop.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import ssl as ssl_module
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from superline_zmq.transport import (
    Accept,
    Connection,
    Gateway,
    Handshake,
    HttpHandler,
    HttpReply,
    MessageHandler,
    Refuse,
    format_peer,
)
from superline_zmq.transport.ws import HeaderView

try:
    from websockets.speedups import apply_mask
except ImportError:  # a build without the C extension: the same function in Python
    from websockets.utils import apply_mask

log = logging.getLogger("superline_zmq.transport.fast")

CONNECTING, OPEN = State.CONNECTING, State.OPEN
TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_DATA_OPCODES = (CONT, TEXT, BINARY)  # indexed by the opcode's value

# Why reading is paused; it resumes when no reason is left.
_HOLD_HANDSHAKE = 1  # the gateway is deciding
_HOLD_START = 2  # open, but the gateway has not called start() yet
_HOLD_WRITE = 4  # our writes are over the high-water mark


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits of the fast transport (the largest message is ``gateway.max_message_size``)."""

    #: Bytes of HTTP request line and headers before the request is whole; over it: 431.
    max_request_head: int = 16 * 1024
    #: Bytes of messages held for a connection the gateway has not started yet; over it: close 1009.
    max_pending: int = 1024 * 1024
    #: Unsent bytes above which we stop reading from the peer (``pause_writing``) ...
    write_high: int = 64 * 1024
    #: ... and below which we read again.
    write_low: int = 16 * 1024
    #: Seconds from TCP accept to the end of the opening handshake (``decide`` included).
    open_timeout: float = 10.0
    #: Seconds from the first close frame (or a refusal) to the end of TCP; then abort.
    close_timeout: float = 10.0


DEFAULT_LIMITS = Limits()

_head_short = struct.Struct("!BB").pack
_head_medium = struct.Struct("!BBH").pack
_head_long = struct.Struct("!BBQ").pack


def encode_frame(data: bytes, text: bool) -> bytes:
    """One whole unmasked, uncompressed server frame (text or binary) carrying ``data``."""
    n = len(data)
    first = 0x81 if text else 0x82
    if n < 126:
        return _head_short(first, n) + data
    if n < 0x10000:
        return _head_medium(first, 126, n) + data
    return _head_long(first, 127, n) + data


class _QuietInfo(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs every connection's open and close at INFO; we keep those at DEBUG."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


_protocol_log = _QuietInfo(log, {})


class FastListener:
    """The accept loop of :func:`serve` (a :class:`~superline_zmq.transport.Listener`)."""

    def __init__(self, gateway: Gateway, limits: Limits, http: HttpHandler | None) -> None:
        self.gateway = gateway
        self.limits = limits
        self.http = http
        self.closing = False
        self.conns: set[FastConnection] = set()
        self.server: asyncio.Server | None = None
        self.stats = {
            "accepted": 0,
            "refused": 0,
            "bad_requests": 0,
            "http_answers": 0,
            "open_timeouts": 0,
            "close_timeouts": 0,
            "pending_overflows": 0,
            "direct_parsed": 0,
            "protocol_parsed": 0,
            "direct_handoffs": 0,
        }

    @property
    def addresses(self) -> list[tuple[str, int]]:
        sockets = self.server.sockets if self.server is not None else ()
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in sockets]

    def close(self) -> None:
        """Stop accepting; handshakes still deciding are answered 503, open connections stay open."""
        self.closing = True
        if self.server is not None:
            self.server.close()

    async def wait_closed(self) -> None:
        """Wait for the listening sockets and then every connection handled to be closed."""
        if self.server is not None:
            await self.server.wait_closed()
        while self.conns:
            conn = next(iter(self.conns))
            await conn.wait_closed()
            if conn in self.conns:
                await asyncio.sleep(0)  # closed, but not yet forgotten (that runs from the loop): never spin

    def connections(self) -> int:
        """TCP connections handled now (handshaking, open or closing)."""
        return len(self.conns)

    def statistics(self) -> dict[str, int]:
        """Counters since start: handshakes accepted and refused, bad requests, timeouts, overflows.

        ``direct_parsed`` / ``protocol_parsed``: connections opened with frames parsed here or by
        websockets; ``direct_handoffs``: connections handed to websockets' parser by an unusual frame.
        """
        return {**self.stats, "connections": len(self.conns)}


class FastConnection(asyncio.Protocol):
    """One socket: the asyncio protocol and, once upgraded, the :class:`~superline_zmq.transport.Connection`."""

    __slots__ = (
        "_close_timer",
        "_closed",
        "_closing",
        "_dead",
        "_decide_task",
        "_dfrag",
        "_direct",
        "_frag_text",
        "_frags",
        "_handler",
        "_head_bytes",
        "_held",
        "_lis",
        "_open_timer",
        "_pending",
        "_pending_bytes",
        "_rbuf",
        "_reported",
        "_text",
        "_transport",
        "_ws",
        "peer",
    )

    def __init__(self, listener: FastListener) -> None:
        self._lis = listener
        self._ws = ServerProtocol(max_size=listener.gateway.max_message_size, logger=_protocol_log)
        self._transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self._text = True
        self._handler: MessageHandler | None = None
        self._held = 0
        self._head_bytes = 0  # bytes of the request head so far; -1 once it is whole
        self._pending: list[Frame] | None = None
        self._pending_bytes = 0
        self._frags: list[bytes] | None = None
        self._frag_text = False
        self._direct = False  # frames parsed here (see the module docstring)
        self._rbuf = bytearray()  # direct mode: the start of a frame not yet whole
        self._dfrag: int | None = None  # direct mode: bytes of the fragmented message so far
        self._dead = False  # aborted or lost: no more writes
        self._closing = False  # we sent a close frame: nothing more is delivered
        self._reported = False  # on_close called
        self._closed: asyncio.Future[None] | None = None
        self._decide_task: asyncio.Task[None] | None = None
        self._open_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self.peer = "?"

    # -- the Connection seen by the gateway ----------------------------------------------

    @property
    def open(self) -> bool:
        return self._ws.state is OPEN and not self._dead

    @property
    def close_code(self) -> int | None:
        ws = self._ws
        if ws.state is not State.CLOSED:
            return None
        if ws.close_rcvd is not None:
            return ws.close_rcvd.code
        if ws.close_sent is not None:
            return ws.close_sent.code
        return 1006

    def send(self, data: bytes) -> bool:
        """Frame ``data`` and write it now (never waits); False once closing."""
        if self._ws.state is not OPEN or self._dead:
            return False
        self._transport.write(encode_frame(data, self._text))
        return True

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    def fanout(self, conns: Sequence[Connection], data: bytes) -> int:
        """Frame ``data`` once and write those same bytes to every open connection among ``conns``.

        Connections of another transport (if mixed in) get ``send`` instead.
        """
        frame = encode_frame(data, self._text)
        n = 0
        for conn in conns:
            if type(conn) is FastConnection:
                if conn._ws.state is OPEN and not conn._dead:
                    conn._transport.write(frame)
                    n += 1
            elif conn.send(data):
                n += 1
        return n

    def start(self, handler: MessageHandler) -> None:
        """Deliver to ``handler`` from now on: first what arrived before, then as it comes."""
        if self._handler is not None:
            raise RuntimeError("this connection was already started")
        self._handler = handler
        if self._pending or self._closed_now():
            asyncio.get_running_loop().call_soon(self._replay)
        else:
            self._release(_HOLD_START)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (after what is already buffered) and wait for the end of TCP.

        Bounded by :attr:`Limits.close_timeout`, after which the connection is aborted.
        """
        ws = self._ws
        if ws.state is OPEN and not self._dead:
            ws.send_close(code, reason)
            self._closing = True
            self._flush()
            self._arm_close_timer()
            self._release(_HOLD_START)  # read the peer's close frame even if never started
        await self.wait_closed()

    def abort(self) -> None:
        """Drop the TCP connection now; the peer sees 1006."""
        self._dead = True
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        if self._closed_now():
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have the same methods.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        lis = self._lis
        lim = lis.limits
        transport.set_write_buffer_limits(high=lim.write_high, low=lim.write_low)
        self.peer = format_peer(transport.get_extra_info("peername"))
        lis.conns.add(self)
        self._open_timer = asyncio.get_running_loop().call_later(lim.open_timeout, self._open_expired)

    def data_received(self, data: bytes) -> None:
        if self._direct:
            self._receive_direct(data)
        else:
            self._receive_protocol(data)

    def _receive_protocol(self, data: bytes) -> None:
        ws = self._ws
        if self._head_bytes >= 0 and ws.state is CONNECTING and not ws.eof_sent:
            # Checked before parsing, so that every websockets release answers 431 here.
            self._head_bytes += len(data)
            if self._head_bytes > self._lis.limits.max_request_head:
                self._lis.stats["bad_requests"] += 1
                self._respond(ws.reject(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Request head too large.\n"))
                return
        ws.receive_data(data)
        events = ws.events_received()
        writes = ws.data_to_send()
        if writes:
            self._write(writes)
        for event in events:
            if type(event) is Frame:
                self._frame(event)
            elif type(event) is Request:
                self._request(event)
        if ws.state is not OPEN:
            self._after_receive()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._flush()
        return None  # let the transport close: we never write after the peer's EOF

    def pause_writing(self) -> None:
        self._hold(_HOLD_WRITE)

    def resume_writing(self) -> None:
        self._release(_HOLD_WRITE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead = True
        self._ws.receive_eof()  # idempotent: the protocol is CLOSED now
        for timer in (self._open_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._open_timer = self._close_timer = None
        if self._decide_task is not None:
            self._decide_task.cancel()
            self._decide_task = None
        self._lis.conns.discard(self)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if self._handler is not None and not self._pending:
            self._report_close()

    # -- inbound ----------------------------------------------------------------------------

    def _receive_direct(self, data: bytes) -> None:
        """Parse whole, well-formed frames here; anything else goes to the protocol from that byte on."""
        rbuf = self._rbuf
        if rbuf:
            rbuf += data
            buf: bytes | bytearray = rbuf
        else:
            buf = data
        end = len(buf)
        pos = 0
        max_size = self._lis.gateway.max_message_size
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            op = b0 & 0x0F
            length = b1 & 0x7F
            if b0 & 0x70 or not b1 & 0x80 or 2 < op < 8 or op > 10:
                self._hand_off(buf, pos)  # reserved bits or opcode, or unmasked: websockets says which
                return
            if length < 126:
                head = 6
            elif length == 126:
                head = 8
                if end - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            else:
                head = 14
                if end - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            fin = bool(b0 & 0x80)
            if op >= 8:
                if length > 125 or not fin:
                    self._hand_off(buf, pos)
                    return
                if end - pos < head + length:
                    break
                stop = pos + head + length
                self._receive_protocol(bytes(buf[pos:stop]))  # ping, pong, close: whole, at a boundary
                pos = stop
                if self._ws.state is not OPEN or self._closing:
                    self._hand_off(buf, pos)
                    return
                continue
            frag = self._dfrag
            if op == 0:
                if frag is None:
                    self._hand_off(buf, pos)  # a continuation of nothing
                    return
            elif frag is not None:
                self._direct_fail(buf, 1002, "expected a continuation frame")
                return
            size = length + (frag or 0)
            if max_size is not None and size > max_size:
                self._direct_fail(buf, 1009, f"frame with {size} bytes exceeds limit of {max_size} bytes")
                return
            if end - pos < head + length:
                break
            start = pos + head
            pos = start + length
            payload: bytes = apply_mask(buf[start:pos], buf[start - 4 : start])
            self._dfrag = None if fin else size
            self._data(_DATA_OPCODES[op], fin, payload)
            if not self._direct or self._closing:
                self._hand_off(buf, pos)
                return
        if buf is rbuf:
            del rbuf[:pos]
        elif pos < end:
            rbuf += buf[pos:]

    def _hand_off(self, buf: bytes | bytearray, pos: int) -> None:
        """Leave direct mode: the protocol parses from ``buf[pos:]`` on (it is at a frame boundary)."""
        if self._direct:
            self._direct = False
            if self._ws.state is OPEN and not self._closing:
                self._lis.stats["direct_handoffs"] += 1
        rest = bytes(buf[pos:])
        self._rbuf = bytearray()
        if rest:
            self._receive_protocol(rest)

    def _direct_fail(self, buf: bytes | bytearray, code: int, reason: str) -> None:
        """A rule websockets cannot check here (it never saw the fragments): fail as it would."""
        self._direct = False
        self._rbuf = bytearray()
        self._fail(code, reason)
        self._after_receive()

    def _frame(self, frame: Frame) -> None:
        """A data frame parsed by the protocol (control frames are its business)."""
        op = frame.opcode
        if op is not TEXT and op is not BINARY and op is not CONT:
            return
        self._data(op, frame.fin, frame.data)

    def _data(self, op: Opcode, fin: bool, data: bytes | bytearray | memoryview) -> None:
        """Deliver a data frame's payload (or hold it until start(); fragments are joined here)."""
        if self._closing:
            return  # we are closing: nothing more is delivered (the peer's own close is no reason)
        handler = self._handler
        if handler is None or self._pending:
            self._hold_frame(Frame(op, bytes(data), fin))
            return
        if op is CONT:
            frags = self._frags
            if frags is None:
                return  # the protocol rejects this; never reached
            frags.append(bytes(data))
            if not fin:
                return
            data = b"".join(frags)
            text = self._frag_text
            self._frags = None
        elif not fin:
            self._frags = [bytes(data)]
            self._frag_text = op is TEXT
            return
        else:
            if type(data) is memoryview:
                data = bytes(data)
            text = op is TEXT
        if text:
            try:
                message: bytes | str = data.decode()
            except UnicodeDecodeError as exc:
                self._fail(1007, f"invalid UTF-8 at position {exc.start}")
                return
        else:
            message = bytes(data)
        try:
            handler.on_message(message)
        except Exception:
            log.exception("message handler of %s failed", self.peer)

    def _hold_frame(self, frame: Frame) -> None:
        """Keep a frame that arrived before start(); bounded by Limits.max_pending."""
        if self._pending is None:
            self._pending = []
        self._pending.append(frame)
        self._pending_bytes += len(frame.data)
        if self._pending_bytes > self._lis.limits.max_pending:
            self._lis.stats["pending_overflows"] += 1
            self._pending = None
            if self._ws.state is CONNECTING:
                # Frames sent before our 101 (RFC 6455 §4.1 says wait for it): no upgrade then.
                if self._decide_task is not None:
                    self._decide_task.cancel()
                    self._decide_task = None
                if not self._ws.eof_sent:
                    self._respond(self._refusal(400, "Too much data before the handshake completed.\n"))
            else:
                self._fail(1009, "too much data before the session started")

    def _replay(self) -> None:
        """Deliver what arrived before start(), then read on (or report a close that came first)."""
        pending, self._pending = self._pending, None
        for frame in pending or ():
            self._frame(frame)
        if self._closed_now():
            self._report_close()
        else:
            self._release(_HOLD_START)

    def _report_close(self) -> None:
        if self._reported or self._handler is None:
            return
        self._reported = True
        try:
            self._handler.on_close(self.close_code)
        except Exception:
            log.exception("close handler of %s failed", self.peer)

    def _closed_now(self) -> bool:
        return self._ws.state is State.CLOSED and self._dead

    # -- handshake --------------------------------------------------------------------------

    def _request(self, request: Request) -> None:
        """The upgrade request is whole: check it, then ask the gateway (or the http hook)."""
        self._head_bytes = -1  # the head is whole: its limit no longer applies
        self._hold(_HOLD_HANDSHAKE)
        ws = self._ws
        response = ws.accept(request)
        lis = self._lis
        if response.status_code != 101:
            if response.status_code == 426 and getattr(request, "method", "GET") == "GET":
                # a plain GET: the http hook (health), else the gateway's refusal, as websockets'
                # own server gives it (process_request runs before the upgrade check there too)
                self._decide_task = asyncio.get_running_loop().create_task(self._answer_http(request, response))
                self._decide_task.add_done_callback(self._decided)
                return
            lis.stats["bad_requests"] += 1
            self._respond(response)
            return
        self._decide_task = asyncio.get_running_loop().create_task(self._decide(request, response))
        self._decide_task.add_done_callback(self._decided)

    def _decided(self, task: asyncio.Task[None]) -> None:
        """A handshake task that failed past its own error handling: log it and drop the peer."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("the handshake with %s failed", self.peer, exc_info=exc)
            self.abort()

    def _handshake(self, request: Request) -> Handshake:
        url = urlsplit(request.path)
        return Handshake(
            transport="websocket",
            headers=HeaderView(request.headers),
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            peer=self.peer,
            path=url.path or "/",
        )

    async def _decide(self, request: Request, upgrade: Response) -> None:
        lis = self._lis
        try:
            decision = await lis.gateway.decide(self._handshake(request))
        except Exception:
            log.exception("deciding on the upgrade from %s failed", self.peer)
            decision = Refuse(500, "Internal Server Error\n")
        self._decide_task = None
        if self._answered():
            return
        if lis.closing:
            decision = Refuse(503, "The server is shutting down.\n")
        if isinstance(decision, Refuse):
            lis.stats["refused"] += 1
            self._log_refusal(decision)
            self._respond(self._refusal(decision.status, decision.body, extra=decision.headers))
            return
        assert isinstance(decision, Accept)
        ws = self._ws
        ws.send_response(upgrade)
        self._flush()
        self._direct = _at_frame_boundary(ws)
        lis.stats["direct_parsed" if self._direct else "protocol_parsed"] += 1
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        lis.stats["accepted"] += 1
        self._text = lis.gateway.text
        self._held |= _HOLD_START  # stays paused (as during the handshake) until start()
        self._release(_HOLD_HANDSHAKE)
        try:
            lis.gateway.open(self, decision.grant)
        except Exception:
            log.exception("opening the connection from %s failed", self.peer)
            self.abort()

    async def _answer_http(self, request: Request, upgrade_required: Response) -> None:
        lis = self._lis
        handshake = self._handshake(request)
        refusal: Refuse | None = None
        try:
            reply = await lis.http(handshake) if lis.http is not None else None
            if reply is None:
                decision = await lis.gateway.decide(handshake)
                refusal = decision if isinstance(decision, Refuse) else None
        except Exception:
            log.exception("answering %s %s failed", self.peer, request.path)
            reply = HttpReply(500, "Internal Server Error\n")
        self._decide_task = None
        if self._answered():
            return
        if reply is not None:
            lis.stats["http_answers"] += 1
            self._respond(self._refusal(reply.status, reply.body, reply.content_type, extra=reply.headers))
        elif refusal is not None:
            lis.stats["refused"] += 1
            self._log_refusal(refusal)
            self._respond(self._refusal(refusal.status, refusal.body, extra=refusal.headers))
        else:
            self._respond(upgrade_required)

    def _log_refusal(self, refusal: Refuse) -> None:
        if not refusal.quiet:
            log.info("refused the upgrade from %s with %d", self.peer, refusal.status)

    def _answered(self) -> bool:
        """The handshake already ended (lost, timed out, or answered with an error)."""
        ws = self._ws
        return self._dead or ws.state is not CONNECTING or ws.eof_sent

    def _refusal(
        self,
        status: int,
        body: str,
        content_type: str = "text/plain; charset=utf-8",
        *,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        payload = body.encode()
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(payload))),
                ("Content-Type", content_type),
            ]
        )
        for name, value in extra:  # the gateway's own headers replace ours of the same name
            if name in headers:
                del headers[name]
            headers[name] = value
        return Response(status, phrase, headers, payload)

    def _respond(self, response: Response) -> None:
        """Send a non-101 response: the protocol half-closes and discards what follows."""
        self._ws.send_response(response)
        self._flush()
        self._release(_HOLD_HANDSHAKE)  # read on, to see the peer's EOF
        self._after_receive()

    def _open_expired(self) -> None:
        self._open_timer = None
        if self._ws.state is CONNECTING and not self._ws.eof_sent:
            self._lis.stats["open_timeouts"] += 1
            self.abort()

    def _after_receive(self) -> None:
        """Off the OPEN fast path: arm the close deadline once the protocol expects the end of TCP."""
        ws = self._ws
        if ws.close_expected():
            self._arm_close_timer()

    # -- outbound and flow control ------------------------------------------------------

    def _fail(self, code: int, reason: str) -> None:
        self._closing = True
        self._ws.fail(code, reason)
        self._flush()
        self._arm_close_timer()

    def _flush(self) -> None:
        writes = self._ws.data_to_send()
        if writes:
            self._write(writes)

    def _write(self, writes: list[bytes]) -> None:
        transport = self._transport
        for data in writes:
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except (OSError, RuntimeError):  # uvloop raises RuntimeError on a closing transport
                    transport.close()
            else:
                transport.close()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and not self._dead:
            timeout = self._lis.limits.close_timeout
            self._close_timer = asyncio.get_running_loop().call_later(timeout, self._close_expired)

    def _close_expired(self) -> None:
        self._close_timer = None
        if not self._dead:
            self._lis.stats["close_timeouts"] += 1
            self.abort()

    def _hold(self, reason: int) -> None:
        held = self._held
        self._held = held | reason
        if not held and not self._dead:
            try:
                self._transport.pause_reading()
            except RuntimeError:  # closing transport
                pass

    def _release(self, reason: int) -> None:
        held = self._held
        if held & reason:
            self._held = held & ~reason
            if not self._held and not self._dead and not self._transport.is_closing():
                try:
                    self._transport.resume_reading()
                except RuntimeError:
                    pass


async def serve(
    gateway: Gateway,
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
    limits: Limits = DEFAULT_LIMITS,
    http: HttpHandler | None = None,
    backlog: int = 1024,
) -> FastListener:
    """Listen on ``host:port`` (port 0: any free one) with the fast transport.

    ``http`` answers plain ``GET`` requests that are not WebSocket upgrades (health checks);
    without it they get 426 Upgrade Required.
    """
    listener = FastListener(gateway, limits, http)
    loop = asyncio.get_running_loop()
    listener.server = await loop.create_server(lambda: FastConnection(listener), host, port, ssl=ssl, backlog=backlog)
    return listener


__all__ = ["DEFAULT_LIMITS", "FastConnection", "FastListener", "Limits", "encode_frame", "serve"]


def _at_frame_boundary(ws: ServerProtocol) -> bool:
    """True when the protocol holds no unparsed bytes (so it waits at a frame boundary) and no extension is on.

    Reads ``ws.reader.buffer``, which websockets does not document: where it is missing or not a
    buffer, False (every frame then goes through the protocol; counted as ``protocol_parsed``).
    """
    buffer = getattr(getattr(ws, "reader", None), "buffer", None)
    return isinstance(buffer, (bytes, bytearray)) and not buffer and not ws.extensions and ws.state is OPEN
