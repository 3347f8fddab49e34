"""Serving the ASGI transport with uvicorn in this process (``srv.listen(transport="asgi")``).

For most deployments you run uvicorn yourself (``uvicorn module:srv.asgi``, or mounted in
a Starlette/FastAPI app; see docs/deploying-asgi.md). This is the same thing started from
``listen``: uvicorn's server on a socket bound here, in the running event loop, without
its signal handling or lifespan (the server is already started). Needs the ``[asgi]``
extra. The socket is bound before uvicorn sees it, so port 0 works and
:attr:`UvicornListener.addresses` are known at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl as ssl_module
from typing import Any

from superline_zmq.transport.asgi import AsgiEndpoint

log = logging.getLogger("superline_zmq.transport")


class UvicornListener:
    """A uvicorn server in this process, as a :class:`~superline_zmq.transport.Listener`."""

    def __init__(self, server: Any, sock: socket.socket) -> None:
        self._server = server
        self._sock = sock
        self._stopped = False

    @property
    def addresses(self) -> list[tuple[str, int]]:
        host, port = self._sock.getsockname()[:2]
        return [(str(host), int(port))]

    def close(self) -> None:
        """Stop accepting (open connections are the server's to close)."""
        for srv in getattr(self._server, "servers", ()):
            srv.close()

    async def wait_closed(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self._server.shutdown()
        with contextlib.suppress(OSError):
            self._sock.close()


async def serve(
    endpoint: AsgiEndpoint,
    host: str,
    port: int,
    *,
    max_message_size: int,
    ssl: ssl_module.SSLContext | None = None,
) -> UvicornListener:
    """Serve ``endpoint`` with uvicorn on ``host:port`` (0: a free port); ``ssl`` for ``wss://``."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("transport='asgi' needs uvicorn: pip install 'superline-zmq[asgi]'") from exc
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
        config = uvicorn.Config(
            endpoint,
            lifespan="off",  # the server is started already; closing it is srv.close()'s job
            log_level="warning",
            access_log=False,
            ws_max_size=max_message_size + 1024,  # the endpoint checks the exact limit itself (1009)
            ws_ping_interval=None,  # superline has its own heartbeat
            ws_per_message_deflate=False,
        )
        config.load()
        if ssl is not None:
            config.ssl = ssl
        server = uvicorn.Server(config)
        # what Server.serve() does before startup(), minus the signal handlers and main loop
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
    except BaseException:
        sock.close()
        raise
    return UvicornListener(server, sock)
