"""Reading RESP2 replies in bulk, and packing the few commands the hot paths send.

redis-py opens, authenticates (and wraps in TLS) the adapter's two dedicated
connections; after that the adapter reads their replies itself: one ``read()`` of up to
64 KiB, then every complete reply in it parsed from one buffer. redis-py's pure-Python
parser awaits the stream once per line (four times per pub/sub message), which costs
more than everything else a delivery does. If a connection does not expose its
``asyncio.StreamReader`` (a redis-py that changed its internals), :class:`Replies` falls
back to redis-py's own ``read_response``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, InvalidResponse, ResponseError

#: What :func:`parse` returns when the buffer does not hold a whole reply yet.
INCOMPLETE: Any = object()
_READ_SIZE = 1 << 16
_CRLF = b"\r\n"
_MESSAGE = b"*3\r\n$7\r\nmessage\r\n"


def parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One reply at ``buf[pos:]``: ``(value, next position)``, or ``(INCOMPLETE, pos)``.

    Bulk strings come back as ``bytes``, integers as ``int``, simple strings as ``bytes``,
    arrays as ``list`` and error replies as a ``ResponseError`` instance (not raised).
    Raises ``InvalidResponse`` on bytes that are not RESP2.
    """
    if buf.startswith(_MESSAGE, pos):  # the hot path: a pub/sub message, [message, channel, data]
        i = pos + len(_MESSAGE)
        channel, i = _bulk(buf, i)
        if channel is INCOMPLETE:
            return INCOMPLETE, pos
        data, i = _bulk(buf, i)
        if data is INCOMPLETE:
            return INCOMPLETE, pos
        return [b"message", channel, data], i
    end = buf.find(_CRLF, pos)
    if end < 0:
        return INCOMPLETE, pos
    kind = buf[pos]
    if kind == 0x3A:  # ':' integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 0x24:  # '$' bulk string
        return _bulk(buf, pos)
    if kind == 0x2A:  # '*' array
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        items = []
        i = end + 2
        for _ in range(n):
            item, i = parse(buf, i)
            if item is INCOMPLETE:
                return INCOMPLETE, pos
            items.append(item)
        return items, i
    if kind == 0x2B:  # '+' simple string
        return bytes(buf[pos + 1 : end]), end + 2
    if kind == 0x2D:  # '-' error
        return ResponseError(buf[pos + 1 : end].decode(errors="replace")), end + 2
    raise InvalidResponse(f"Protocol Error: {bytes(buf[pos : min(end, pos + 40)])!r}")


def _bulk(buf: bytearray, pos: int) -> tuple[Any, int]:
    end = buf.find(_CRLF, pos)
    if end < 0:
        return INCOMPLETE, pos
    if buf[pos] != 0x24:
        raise InvalidResponse(f"Protocol Error: expected a bulk string, got {bytes(buf[pos : pos + 40])!r}")
    n = int(buf[pos + 1 : end])
    if n < 0:
        return None, end + 2
    start = end + 2
    stop = start + n
    if len(buf) < stop + 2:
        return INCOMPLETE, pos
    return bytes(buf[start:stop]), stop + 2


class Replies:
    """The replies arriving on one connection, parsed from a buffer refilled 64 KiB at a time."""

    def __init__(self, conn: AbstractConnection) -> None:
        self._conn = conn
        reader = getattr(conn, "_reader", None)
        self._reader: asyncio.StreamReader | None = reader if isinstance(reader, asyncio.StreamReader) else None
        self._buf = bytearray()
        self._pos = 0

    @property
    def bulk(self) -> bool:
        """Whether replies are parsed here in bulk (False: one by one through redis-py)."""
        return self._reader is not None

    def closed_by_server(self) -> bool:
        """Whether the server has closed the connection (seen without reading: its EOF is buffered)."""
        return self._reader is not None and self._reader.at_eof()

    async def fill(self) -> None:
        """Read what has arrived (at least one byte); ``ConnectionError`` when the server closed."""
        assert self._reader is not None
        data = await self._reader.read(_READ_SIZE)
        if not data:
            raise ConnectionError("Connection closed by server.")
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def take(self) -> Any:
        """The next complete reply already read, or :data:`INCOMPLETE`."""
        value, self._pos = parse(self._buf, self._pos)
        return value

    async def next(self) -> Any:
        """The next reply (error replies come back as ``ResponseError`` instances)."""
        if not self.bulk:
            try:
                return await self._conn.read_response(disconnect_on_error=False)
            except ResponseError as exc:
                return exc
        while True:
            value = self.take()
            if value is not INCOMPLETE:
                return value
            await self.fill()


def command(*args: bytes) -> bytes:
    """One command in RESP2, ready to write."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(out)


def publish(channel: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """``PUBLISH channel data`` as three pieces (the payload is not copied)."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n" % (len(channel), channel, len(data)), data, _CRLF
