"""What reaches the server's upgrade decision before authentication: TLS, the Origin check, connection caps.

Every refusal is an HTTP status before the upgrade (websockets' client raises
``InvalidStatus``) and a counter in ``srv.statistics()``; nothing here sleeps.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from contract_app import Greet, Greeting, api, build_server
from helpers import DEFAULT_TIMEOUT, eventually, url_for
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from superline_zmq import Handshake, connect
from superline_zmq.transport import Accept


async def _status(url: str, **kwargs: Any) -> int:
    """The HTTP status a refused upgrade got (fails if the upgrade went through)."""
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url, open_timeout=DEFAULT_TIMEOUT, **kwargs):
            pass
    return info.value.response.status_code


# ---------------------------------------------------------------- TLS (tls_files: conftest.py)
async def test_listen_with_an_ssl_context_serves_wss(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    srv = build_server()  # not make_server: that one listens without TLS
    try:
        await srv.listen("127.0.0.1", 0, ssl=server_ctx)
        assert srv.url == f"wss://127.0.0.1:{srv.port}/"
        client_ctx = ssl.create_default_context(cafile=str(cert))
        async with await connect(api, srv.url, role="user", ssl=client_ctx, reconnect=False) as client:
            assert await client.call("greet", Greet("tls")) == Greeting("hello tls")
        # a plain ws:// client gets nowhere on a TLS port
        with pytest.raises(Exception):  # noqa: B017 - the handshake fails, whichever way websockets says it
            async with ws_connect(srv.url.replace("wss://", "ws://"), open_timeout=DEFAULT_TIMEOUT):
                pass
    finally:
        srv.app.release.set()
        await srv.close()


# ---------------------------------------------------------------- Origin
async def test_a_foreign_origin_is_refused_with_403_before_authentication(make_server: Any) -> None:
    authenticated: list[Handshake] = []

    def authenticate(hs: Handshake) -> tuple[str, None]:
        authenticated.append(hs)
        return ("user", None)

    srv = await make_server(authenticate=authenticate, origins=["https://app.example.com", "http://localhost:8080"])
    url = url_for(srv, None)
    assert await _status(url, origin="https://evil.example") == 403
    assert await _status(url, origin="null") == 403  # a sandboxed frame or a file: page
    assert authenticated == []  # refused before any application code ran
    assert srv.statistics()["connections_refused_origin"] == 2
    # a listed origin, as a browser writes it, and a client that sends none (not a browser) both get in
    for origin in ("https://app.example.com", "http://localhost:8080", None):
        async with ws_connect(url, origin=origin, open_timeout=DEFAULT_TIMEOUT) as ws:  # type: ignore[arg-type]
            assert await ws.recv()  # the greeting
    async with await connect(api, srv.url, role="user", reconnect=False) as client:
        assert await client.call("greet", Greet("no origin")) == Greeting("hello no origin")
    assert srv.statistics()["connections_refused_origin"] == 2
    assert len(authenticated) == 4


async def test_origins_none_allows_any(make_server: Any) -> None:
    srv = await make_server()
    async with ws_connect(url_for(srv), origin="https://anywhere.example", open_timeout=DEFAULT_TIMEOUT) as ws:  # type: ignore[arg-type]
        assert await ws.recv()


def test_a_bad_origin_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="not an origin"):
        build_server(origins=["example.com"])


# ---------------------------------------------------------------- connection caps
async def test_max_connections_refuses_the_next_handshake_with_503(make_server: Any, make_client: Any) -> None:
    srv = await make_server(max_connections=2)
    first = await make_client(srv)
    await make_client(srv)
    assert await _status(url_for(srv)) == 503
    stats = srv.statistics()
    assert stats["connections_refused_limit"] == 1 and stats["connections"] == 2
    # the others are not slowed down, and a freed slot is taken again
    assert await first.call("greet", Greet("still")) == Greeting("hello still")
    await first.close()
    await eventually(lambda: srv.statistics()["connections"] == 1)
    third = await make_client(srv)
    assert await third.call("greet", Greet("in")) == Greeting("hello in")
    assert srv.statistics()["connections_refused_limit"] == 1


async def test_max_connections_per_ip_counts_each_address(make_server: Any) -> None:
    srv = await make_server(max_connections_per_ip=1)
    url = url_for(srv)
    async with ws_connect(url, open_timeout=DEFAULT_TIMEOUT) as ws:
        assert await ws.recv()
        assert await _status(url) == 503
        # another loopback address is another peer
        async with ws_connect(url, open_timeout=DEFAULT_TIMEOUT, local_addr=("127.0.0.2", 0)) as other:
            assert await other.recv()
    await eventually(lambda: srv.statistics()["connections"] == 0)
    async with ws_connect(url, open_timeout=DEFAULT_TIMEOUT) as ws:  # its slot was given back
        assert await ws.recv()
    stats = srv.statistics()
    assert stats["connections_refused_ip_limit"] == 1 and stats["connections_refused_limit"] == 0


class _Link:
    """A transport connection as the gateway sees it, recording what it was told."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.handler: Any = None

    open = True
    close_code = None

    def send(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    def buffered(self) -> int:
        return 0

    def fanout(self, conns: Any, data: bytes) -> int:
        return 0

    def start(self, handler: Any) -> None:
        self.handler = handler

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


async def test_upgrades_decided_together_cannot_overshoot_the_cap() -> None:
    # both are decided while nothing is open; the second to open is closed at once (1013)
    srv = build_server(max_connections=1)
    await srv.start()
    try:
        hs = Handshake(transport="test", headers={}, query={"role": "user"}, peer="127.0.0.1:1")
        decisions = [await srv.decide(hs), await srv.decide(hs)]
        assert all(isinstance(d, Accept) for d in decisions)
        a, b = _Link("127.0.0.1:1"), _Link("127.0.0.1:2")
        srv.open(a, decisions[0].grant)
        srv.open(b, decisions[1].grant)
        assert len(srv.connections) == 1 and a.sent and not b.sent
        await eventually(lambda: b.closed == (1013, "Too many connections"))
        assert srv.statistics()["connections_refused_limit"] == 1
    finally:
        srv.app.release.set()
        await srv.close()
