"""Shared fixtures: the event-loop choice (asyncio / uvloop), servers, clients, raw peers.

Event loop. pytest-asyncio 1.5 deprecates overriding the ``event_loop_policy`` fixture
(it emits a ``PytestDeprecationWarning``, an error under ``filterwarnings = error``) in
favour of the ``pytest_asyncio_loop_factories`` hook: the mapping it returns
parametrizes pytest-asyncio's session-scoped ``_asyncio_loop_factory`` fixture, so every
async test runs once per loop, with the loop's name in the test id (``test_x[asyncio]``,
``test_x[uvloop]``). When uvloop is not importable the ``uvloop`` variant is skipped
with a reason rather than silently dropped.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contract_app import api, build_server
from helpers import DEFAULT_TIMEOUT, Raw, raw_connect

from superline_zmq import Backoff, Client, SocketServer, connect

try:
    import uvloop
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None  # type: ignore[assignment]

#: Fast reconnects for tests: retries after 0..10 ms, 0..20 ms, ... capped at 50 ms.
FAST_BACKOFF = Backoff(base=0.01, factor=2.0, cap=0.05)


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    if uvloop is None:
        pytest.skip("uvloop is not installed (pip install uvloop) - uvloop variant skipped")
    return uvloop.new_event_loop()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Run every async test under the default asyncio loop and under uvloop.

    Tests on a cluster of node processes run once: the nodes themselves run uvloop (the
    CLI's default), and the test process only drives them; so do tests marked ``one_loop``
    (e.g. against ASGI server processes, which choose their own loop).
    """
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("make_presence_cluster") == "zeromq":
        return {"asyncio": asyncio.new_event_loop}
    if item.get_closest_marker("one_loop") is not None:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": _uvloop_factory}


#: Every transport ``srv.listen()`` can serve with.
TRANSPORTS = ("fast", "websockets", "asgi")

#: Test modules whose servers run in this process: each of their tests runs once per transport
#: (the default ``fast`` under asyncio and uvloop, the others under asyncio), through
#: ``SocketServer.default_transport``, so the same assertions hold on every transport.
TRANSPORT_MODULES = frozenset(
    {
        "test_backpressure_cluster",
        "test_client",
        "test_cluster_introspection",
        "test_conn_data",
        "test_conn_metadata",
        "test_drain",
        "test_fanout",
        "test_health",
        "test_heartbeat",
        "test_interop_ts",
        "test_local_introspection",
        "test_metrics",
        "test_presence_events",
        "test_server_auth",
        "test_server_limits",
        "test_server_middleware",
        "test_server_requests",
        "test_server_requests_cluster",
        "test_server_requests_s2c",
        "test_server_robustness",
        "test_server_topics",
        "test_targeted_send",
        "test_topic_races",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server_transport" in metafunc.fixturenames and metafunc.module.__name__ in TRANSPORT_MODULES:
        metafunc.parametrize("server_transport", TRANSPORTS, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Node processes choose their own transport: their tests run once, not once per transport;
    and the transports other than the default run under asyncio only (fast takes both loops)."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        p = params.params if params is not None else {}
        other = p.get("server_transport", "fast") != "fast"
        if other and (p.get("make_presence_cluster") == "zeromq" or "uvloop" in item.name):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def server_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The transport ``srv.listen()`` uses in this test (see :data:`TRANSPORT_MODULES`)."""
    kind: str = getattr(request, "param", "fast")
    monkeypatch.setattr(SocketServer, "default_transport", kind)
    return kind


MakeServer = Callable[..., Awaitable[SocketServer]]
MakeClient = Callable[..., Awaitable[Client]]
OpenRaw = Callable[..., Awaitable[Raw]]


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    """Build and start servers on 127.0.0.1:0; every one is closed after the test.

    ``await make_server(**options)`` uses :func:`contract_app.build_server`; pass
    ``builder=`` for another factory taking the same options.
    """
    servers: list[SocketServer] = []

    async def make(builder: Callable[..., SocketServer] = build_server, **options: Any) -> SocketServer:
        srv = builder(**options)
        servers.append(srv)
        await srv.listen("127.0.0.1", 0)
        return srv

    yield make
    for srv in reversed(servers):
        app = getattr(srv, "app", None)
        if app is not None:
            app.release.set()
        await asyncio.wait_for(srv.close(), 10)


@pytest.fixture
async def server(make_server: MakeServer) -> SocketServer:
    """A started server with the standard handlers and default options."""
    return await make_server()


@pytest.fixture
async def make_client(make_server: MakeServer) -> AsyncIterator[MakeClient]:
    """Connect our client (fast backoff by default); every client is closed after the test."""
    clients: list[Client] = []

    async def make(srv: SocketServer, role: str = "user", **options: Any) -> Client:
        options.setdefault("backoff", FAST_BACKOFF)
        options.setdefault("open_timeout", DEFAULT_TIMEOUT)
        client = await connect(api, srv.url, role=role, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await asyncio.wait_for(client.close(), 10)


@pytest.fixture
async def open_raw(make_server: MakeServer) -> AsyncIterator[OpenRaw]:
    """Open raw websockets peers (see :func:`helpers.raw_connect`); closed after the test."""
    peers: list[Raw] = []

    async def make(srv: SocketServer, role: str | None = "user", **kwargs: Any) -> Raw:
        raw = await raw_connect(srv, role, **kwargs)
        peers.append(raw)
        return raw

    yield make
    for raw in peers:
        # Abort rather than close: some peers deliberately stopped reading, so a closing
        # handshake could only time out.
        if raw.ws.transport is not None:
            raw.ws.transport.abort()
        await asyncio.wait_for(raw.ws.wait_closed(), 10)


# Fan-out fixtures (a cluster of N nodes behind one interface; see tests/cluster.py).
from cluster import cluster, make_cluster  # noqa: E402, F401

# Presence fixtures (N nodes driven over WebSockets only; see tests/presence_cluster.py).
from presence_cluster import make_presence_cluster, multi, pcluster  # noqa: E402, F401


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (openssl CLI; skipped without it)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (.ci/deps installs it): cannot make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key
