"""Test helpers: bounded waits and a raw superline.v1 client built on plain websockets.

Nothing here sleeps to "give something time": :func:`eventually` polls a condition and
fails with a clear message at its deadline, and every receive has a deadline too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from superline_zmq.testing.wait import eventually

DEFAULT_TIMEOUT = 5.0

__all__ = ["DEFAULT_TIMEOUT", "Raw", "eventually", "http_get", "raw_connect", "url_for"]


def url_for(srv: Any, role: str | None = "user", **query: str) -> str:
    """``srv.url`` with ``role`` and any extra query parameters."""
    params = dict(query)
    if role is not None:
        params["role"] = role
    qs = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{srv.url}?{qs}" if qs else srv.url


class Raw:
    """A superline.v1 peer speaking raw JSON frames over a plain websockets client.

    Used to test the server without depending on our own client. ``recv`` skips the
    server's heartbeat ``ping`` frames.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, frame: Any) -> None:
        """Send ``frame`` as JSON text, or ``str``/``bytes`` verbatim."""
        if isinstance(frame, (str, bytes)):
            await self.ws.send(frame)
        else:
            await self.ws.send(json.dumps(frame))

    async def recv_raw(self, timeout: float = DEFAULT_TIMEOUT) -> str | bytes:
        """The next message as received, ``ping`` frames included."""
        return await asyncio.wait_for(self.ws.recv(), timeout)

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next frame other than ``ping``, decoded."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no frame within {timeout} s")
            msg = await asyncio.wait_for(self.ws.recv(), left)
            frame = json.loads(msg)
            if isinstance(frame, dict) and frame.get("t") == "ping":
                continue
            return frame

    async def recv_until(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read frames until one satisfies ``pred``; return it and the ones skipped before it."""
        deadline = time.monotonic() + timeout
        skipped: list[dict[str, Any]] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout} s; got {skipped!r}")
            frame = await self.recv(left)
            if pred(frame):
                return frame, skipped
            skipped.append(frame)

    async def reply(self, i: int, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The ``res``/``err`` frame answering id ``i`` (other frames are skipped)."""
        frame, _ = await self.recv_until(lambda f: f.get("t") in ("res", "err") and f.get("i") == i, timeout)
        return frame

    async def call(self, i: int, m: str, d: Any = None, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Send ``req`` and return its reply frame."""
        await self.send({"t": "req", "i": i, "m": m, "d": d})
        return await self.reply(i, timeout)

    async def close(self) -> None:
        await self.ws.close()


async def raw_connect(srv: Any, role: str | None = "user", *, read_env: bool = True, **kwargs: Any) -> Raw:
    """Open a raw connection to ``srv`` claiming ``role``; by default consume the ``env`` frame."""
    query = kwargs.pop("query", {})
    ws = await ws_connect(url_for(srv, role, **query), open_timeout=DEFAULT_TIMEOUT, **kwargs)
    raw = Raw(ws)
    if read_env:
        first = await raw.recv()
        assert first == {"t": "env", "d": None}, first
    return raw


async def http_get(
    host: str, port: int, path: str, *, method: str = "GET", timeout: float = DEFAULT_TIMEOUT
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP/1.1 request (no upgrade); ``(status, headers with lower-case names, body)``."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body
