"""A node's operations port: ``/metrics``, ``/healthz`` and ``/readyz`` over plain HTTP.

``superline-zmq run --metrics HOST:PORT`` serves it; in your own program::

    ops = await serve_ops(srv, "127.0.0.1", 9100)     # http://127.0.0.1:9100/metrics
    ...
    await ops.close()

A deliberately tiny HTTP/1.1 server on the event loop (``asyncio.start_server``: no
thread, every connection handled by a task it owns and cancels on :meth:`OpsServer.close`):
one ``GET`` or ``HEAD`` per connection, answered and closed. ``/metrics`` is the
Prometheus text format from :mod:`superline_zmq.prometheus` (extra
``superline-zmq[metrics]``; scraped on the loop's thread, so it reads the server
consistently); the health paths answer as on the WebSocket port
(:mod:`superline_zmq.health`). Nothing is logged per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from superline_zmq.health import HealthPaths
from superline_zmq.health import answer as health_answer
from superline_zmq.transport import format_peer

if TYPE_CHECKING:
    from superline_zmq.server import SocketServer

log = logging.getLogger("superline_zmq.ops")

#: Largest request head read (request line and headers), in bytes.
MAX_HEAD = 16 * 1024
#: How long a client may take to send its request.
READ_TIMEOUT = 5.0
#: The path of the Prometheus exposition.
METRICS_PATH = "/metrics"


class OpsServer:
    """The operations HTTP server of one :class:`~superline_zmq.server.SocketServer` (see the module docstring)."""

    def __init__(self, server: SocketServer, *, metrics: bool = True, health_paths: HealthPaths | None = None) -> None:
        self.server = server
        self.health_paths = health_paths if health_paths is not None else HealthPaths()
        self._metrics: Callable[[], tuple[bytes, str]] | None = None
        if metrics:
            from superline_zmq.prometheus import renderer  # ImportError (with the pip hint) without the extra

            self._metrics = renderer(server)
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port)."""
        if self._listener is not None:
            raise RuntimeError("this operations server is already listening")
        self._listener = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every listening socket."""
        if self._listener is None:
            return []
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._listener.sockets]

    @property
    def port(self) -> int:
        """The port of the first listening socket."""
        addresses = self.addresses
        if not addresses:
            raise RuntimeError("the operations server is not listening")
        return addresses[0][1]

    @property
    def url(self) -> str:
        """``http://host:port`` of the first listening socket (no path)."""
        host, port = self.addresses[0]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def close(self) -> None:
        """Stop listening and end every request still being served; idempotent."""
        if self._listener is not None:
            self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            await self._listener.wait_closed()

    async def __aenter__(self) -> OpsServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ one request
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            status, headers, body, head_only = self._answer(head)
            lines = [f"HTTP/1.1 {int(status)} {HTTPStatus(status).phrase}"]
            lines += [f"{k}: {v}" for k, v in headers]
            lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1") + (b"" if head_only else body))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except Exception as exc:  # never let one bad request take anything else down
            log.warning("operations request from %s failed: %r", format_peer(writer.get_extra_info("peername")), exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    def _answer(self, head: bytes) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        """``(status, headers, body, head only)`` for one request head."""
        text = [("Content-Type", "text/plain; charset=utf-8")]
        try:
            method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        except ValueError:
            return HTTPStatus.BAD_REQUEST, text, b"Bad Request\n", False
        if method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, [*text, ("Allow", "GET, HEAD")], b"Method Not Allowed\n", False
        head_only = method == "HEAD"
        path = target.split("?", 1)[0]
        if path == METRICS_PATH and self._metrics is not None:
            data, content_type = self._metrics()
            return HTTPStatus.OK, [("Content-Type", content_type)], data, head_only
        health = health_answer(self.health_paths, path, self.server.readiness)
        if health is not None:
            return health.status, list(health.headers), health.body.encode(), head_only
        return HTTPStatus.NOT_FOUND, text, b"Not Found\n", head_only


async def serve_ops(
    server: SocketServer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    metrics: bool = True,
    health_paths: HealthPaths | None = None,
) -> OpsServer:
    """Start an :class:`OpsServer` for ``server`` on ``host:port``.

    ``metrics=True`` needs prometheus_client (``pip install 'superline-zmq[metrics]'``) and
    raises ImportError, saying so, without it.
    """
    ops = OpsServer(server, metrics=metrics, health_paths=health_paths)
    await ops.start(host, port)
    return ops


__all__ = ["MAX_HEAD", "METRICS_PATH", "READ_TIMEOUT", "OpsServer", "serve_ops"]
