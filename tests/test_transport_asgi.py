"""The ASGI transport (``superline_zmq.transport.asgi``): in-process unit tests, then real servers.

The unit tests call the ASGI app with fake ``receive``/``send`` (servers without the
``websocket.http.response`` extension, lifespan, scopes). The rest starts uvicorn (asyncio +
websockets-sansio, and uvloop + wsproto) and hypercorn as separate processes on a loopback
socket we bind and pass them (``--fd`` / ``fd://``, so no port race), serving ``asgi_app.py``:
Starlette with ``/hello`` beside the echo gateway mounted under ``/ws``. Each process is
stopped by its PID in a ``finally``. Those tests run under one client loop (``one_loop``):
the server processes pick their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from transport_gateway import EchoGateway
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from superline_zmq.testing import eventually
from superline_zmq.transport import Handshake, HttpReply
from superline_zmq.transport.asgi import AsgiEndpoint, AsgiLink, handshake_of, route_path

TESTS = Path(__file__).resolve().parent
TIMEOUT = 5.0
START_TIMEOUT = 30.0

# -- in-process: the ASGI app with fake receive / send ---------------------------------------


class FakeServer:
    """Feeds ``receive`` from a queue and records what the app sends."""

    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in incoming:
            self.inbox.put_nowait(message)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))


def ws_scope(query: bytes = b"role=ok", **extra: Any) -> dict[str, Any]:
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws/",
        "root_path": "/ws",
        "query_string": query,
        "headers": [(b"host", b"x"), (b"x-token", b"a"), (b"x-token", b"b")],
        "client": ("127.0.0.1", 5555),
    }
    scope.update(extra)
    return scope


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [("/ws/", "/ws", "/"), ("/ws", "/ws", "/"), ("/ws/rt", "/ws", "/rt"), ("/rt", "", "/rt"), ("/wsx", "/ws", "/wsx")],
)
def test_route_path_strips_the_mount_point(path: str, root: str, expected: str) -> None:
    assert route_path({"path": path, "root_path": root}) == expected


def test_handshake_of_a_scope() -> None:
    hs = handshake_of(ws_scope(b"token=a%20b&role=x&role=ok"))
    assert hs == Handshake("websocket", hs.headers, {"token": "a b", "role": "ok"}, "127.0.0.1:5555", "/")
    assert hs.headers["X-Token"] == "b" and len(hs.headers) == 2 and set(hs.headers) == {"host", "x-token"}
    assert handshake_of({"type": "websocket", "path": "/"}).peer == "?"


async def test_refusal_without_the_extension_is_close_1008_before_accept() -> None:
    fake = FakeServer({"type": "websocket.connect"})
    endpoint = AsgiEndpoint(EchoGateway())
    await endpoint(ws_scope(b"role=nope"), fake.receive, fake.send)
    assert fake.sent == [{"type": "websocket.close", "code": 1008, "reason": "unauthorized"}]
    assert endpoint.statistics()["refused_by_close"] == 1


async def test_refusal_with_the_extension_is_an_http_response() -> None:
    fake = FakeServer({"type": "websocket.connect"})
    endpoint = AsgiEndpoint(EchoGateway())
    await endpoint(ws_scope(b"role=missing", extensions={"websocket.http.response": {}}), fake.receive, fake.send)
    assert [m["type"] for m in fake.sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert fake.sent[0]["status"] == 404 and fake.sent[1]["body"] == b"no such endpoint\n"


async def test_closing_endpoint_refuses_503() -> None:
    fake = FakeServer({"type": "websocket.connect"})
    endpoint = AsgiEndpoint(EchoGateway())
    endpoint.close()
    await endpoint(ws_scope(extensions={"websocket.http.response": {}}), fake.receive, fake.send)
    assert fake.sent[0]["status"] == 503


async def test_accept_echo_oversize_and_disconnect_in_process() -> None:
    gw = EchoGateway(max_message_size=10)
    endpoint = AsgiEndpoint(gw)
    fake = FakeServer(
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.receive", "bytes": b"\x00"},
        {"type": "websocket.receive", "text": "é" * 6},  # 12 bytes in UTF-8: over the limit of 10
        {"type": "websocket.receive", "text": "after"},  # closing: not delivered
    )
    app = asyncio.ensure_future(endpoint(ws_scope(), fake.receive, fake.send))
    await eventually(lambda: any(m["type"] == "websocket.close" for m in fake.sent))
    assert fake.sent == [
        {"type": "websocket.accept"},
        {"type": "websocket.send", "text": "welcome"},
        {"type": "websocket.send", "text": "hi"},
        {"type": "websocket.send", "text": "\x00"},
        {"type": "websocket.close", "code": 1009, "reason": "message too big"},
    ]
    assert gw.recorders[0].messages == ["hi", b"\x00"]
    fake.inbox.put_nowait({"type": "websocket.disconnect", "code": 1009})
    await asyncio.wait_for(app, TIMEOUT)
    assert gw.closed == [1009] and gw.conns[0].close_code == 1009
    assert endpoint.statistics() == {**endpoint.stats, "connections": 0} and endpoint.stats["too_big"] == 1


async def test_send_never_waits_and_buffered_counts_what_the_server_has_not_taken() -> None:
    gw = EchoGateway()
    endpoint = AsgiEndpoint(gw)
    fake = FakeServer({"type": "websocket.connect"})
    gate = asyncio.Event()
    taken: list[dict[str, Any]] = []

    async def slow_send(message: Any) -> None:
        if message["type"] == "websocket.send":
            await gate.wait()  # a peer that does not read: the server's send blocks
        taken.append(message)

    app = asyncio.ensure_future(endpoint(ws_scope(), fake.receive, slow_send))
    await eventually(lambda: len(gw.conns) == 1)
    link = gw.conns[0]
    assert isinstance(link, AsgiLink)
    for _ in range(100):
        assert link.send(b"x" * 1000)
    assert link.buffered() >= 99 * 1000
    assert link.fanout([link], b"y") == 1
    gate.set()
    await eventually(lambda: link.buffered() == 0)
    assert taken[-1] == {"type": "websocket.send", "text": "y"}
    fake.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(app, TIMEOUT)


async def test_abort_ends_the_application_call_and_reports_1006() -> None:
    gw = EchoGateway()
    endpoint = AsgiEndpoint(gw)
    fake = FakeServer({"type": "websocket.connect"})
    app = asyncio.ensure_future(endpoint(ws_scope(), fake.receive, fake.send))
    await eventually(lambda: len(gw.conns) == 1)
    gw.conns[0].abort()
    await asyncio.wait_for(app, TIMEOUT)
    assert not app.cancelled()
    assert gw.closed == [1006] and not gw.conns[0].send(b"late")


async def test_close_before_start_and_start_after_close() -> None:
    gw = EchoGateway(auto_start=False)
    endpoint = AsgiEndpoint(gw, close_timeout=0.2)
    fake = FakeServer({"type": "websocket.connect"})
    app = asyncio.ensure_future(endpoint(ws_scope(), fake.receive, fake.send))
    await eventually(lambda: len(gw.conns) == 1)
    conn, rec = gw.conns[0], gw.recorders[0]
    closing = asyncio.ensure_future(conn.close(4003, "bye"))
    await eventually(lambda: fake.sent[-1:] == [{"type": "websocket.close", "code": 4003, "reason": "bye"}])
    fake.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(closing, TIMEOUT)
    await asyncio.wait_for(app, TIMEOUT)
    conn.start(rec)
    await eventually(lambda: rec.closes == [4003])


async def test_http_scope_is_404_or_the_hook() -> None:
    async def health(hs: Handshake) -> HttpReply | None:
        return HttpReply(200, "ok") if hs.path == "/healthz" else None

    for endpoint, path, status in (
        (AsgiEndpoint(EchoGateway()), "/healthz", 404),
        (AsgiEndpoint(EchoGateway(), http=health), "/healthz", 200),
        (AsgiEndpoint(EchoGateway(), http=health), "/x", 404),
    ):
        fake = FakeServer({"type": "http.request", "body": b""})
        await endpoint({"type": "http", "method": "GET", "path": path}, fake.receive, fake.send)
        assert fake.sent[0]["status"] == status and fake.sent[0]["type"] == "http.response.start"


async def test_lifespan_complete_and_failed() -> None:
    calls: list[str] = []

    async def up() -> None:
        calls.append("up")

    async def down() -> None:
        calls.append("down")

    fake = FakeServer({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})
    await AsgiEndpoint(EchoGateway(), on_startup=up, on_shutdown=down)({"type": "lifespan"}, fake.receive, fake.send)
    assert calls == ["up", "down"]
    assert [m["type"] for m in fake.sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    async def broken() -> None:
        raise RuntimeError("no database")

    fake = FakeServer({"type": "lifespan.startup"})
    await AsgiEndpoint(EchoGateway(), on_startup=broken)({"type": "lifespan"}, fake.receive, fake.send)
    assert fake.sent == [{"type": "lifespan.startup.failed", "message": "RuntimeError: no database"}]
    with pytest.raises(ValueError, match="unsupported"):
        await AsgiEndpoint(EchoGateway())({"type": "nope"}, fake.receive, fake.send)


# -- real servers as processes ------------------------------------------------------------------

SERVERS = {
    "uvicorn": ["-m", "uvicorn", "--loop", "asyncio", "--ws", "websockets-sansio", "--no-access-log"],
    "uvicorn-uvloop-wsproto": ["-m", "uvicorn", "--loop", "uvloop", "--ws", "wsproto", "--no-access-log"],
    "hypercorn": ["-m", "hypercorn", "--log-level", "warning"],
}


class AsgiProcess:
    """An ASGI server process on a loopback socket we bound; stopped by PID."""

    def __init__(self, kind: str, app: str, env: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        fd = self.sock.fileno()
        bind = ["--fd", str(fd)] if kind.startswith("uvicorn") else ["--bind", f"fd://{fd}"]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, *SERVERS[kind], *bind, app],
            pass_fds=[fd],
            cwd=TESTS,
            env={**os.environ, "PYTHONPATH": str(TESTS), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.sock.close()  # the child has its own copy

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self) -> None:
        """Until the server answers HTTP (connections queue in the backlog before that)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.kind} exited {self.proc.returncode}:\n{self.output()}")
            try:
                status, _ = http_get(self.port, "/", timeout=1.0)
                if status:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.kind} not ready in {START_TIMEOUT} s:\n{self.output()}")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` s; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def url(self, role: str = "ok", path: str = "/ws/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}?role={role}"


def http_get(port: int, path: str, timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """A blocking HTTP/1.1 GET on 127.0.0.1 (status, body); closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while len(data) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return (int(head.split()[1]) if head else 0), body


@pytest.fixture(scope="module", params=sorted(SERVERS))
def asgi_server(request: pytest.FixtureRequest) -> Iterator[AsgiProcess]:
    """One server process per kind for the whole module, serving ``asgi_app:app``."""
    server = AsgiProcess(request.param, "asgi_app:app")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def client(url: str, **kwargs: Any) -> ClientConnection:
    ws = await connect(url, compression=None, open_timeout=TIMEOUT, **kwargs)
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "welcome"
    return ws


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def closed_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        for _ in range(1000):
            await recv(ws)
    return ws.close_code


async def stats(server: AsgiProcess) -> dict[str, Any]:
    ws = await client(server.url())
    await ws.send("stats")
    answer = json.loads(await recv(ws))
    await ws.close()
    return answer


@pytest.mark.one_loop
def test_http_route_beside_the_mounted_endpoint(asgi_server: AsgiProcess) -> None:
    assert http_get(asgi_server.port, "/hello") == (200, b"hello from starlette")
    assert http_get(asgi_server.port, "/ws/") == (404, b"Not Found\n")


@pytest.mark.one_loop
@pytest.mark.parametrize(("role", "status"), [("nope", 401), ("missing", 404)])
async def test_refused_handshake_is_the_gateway_status(asgi_server: AsgiProcess, role: str, status: int) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(asgi_server.url(role), open_timeout=TIMEOUT)
    assert info.value.response.status_code == status


@pytest.mark.one_loop
async def test_echo_under_the_mount(asgi_server: AsgiProcess) -> None:
    ws = await client(asgi_server.url(), additional_headers={"X-Token": "abc"})
    await ws.send("hello")
    assert await recv(ws) == "hello"
    await ws.send(b"bin")
    assert await recv(ws) == "bin"
    await ws.send(["frag", "mented"])
    assert await recv(ws) == "fragmented"
    await ws.send("stats")
    answer = json.loads(await recv(ws))
    assert answer["transports"] == ["websocket"] and answer["paths"] == ["/"]
    await ws.close()


@pytest.mark.one_loop
async def test_oversize_message_closes_1009(asgi_server: AsgiProcess) -> None:
    ws = await client(asgi_server.url())
    other = await client(asgi_server.url())
    await ws.send("x" * (64 * 1024 + 1))
    assert await closed_code(ws) == 1009
    await other.send("x" * (64 * 1024))
    assert await recv(other) == "x" * (64 * 1024)
    await other.close()


@pytest.mark.one_loop
async def test_close_codes_both_ways(asgi_server: AsgiProcess) -> None:
    ws = await client(asgi_server.url())
    await ws.send("close:4001")
    assert await closed_code(ws) == 4001
    ws = await client(asgi_server.url())
    await ws.close(4002, "client says bye")
    # hypercorn reports 1006 for a client's clean close (see the asgi module doc).
    expected = 1006 if asgi_server.kind == "hypercorn" else 4002

    async def seen() -> bool:
        closed = (await stats(asgi_server))["closed"]
        return 4001 in closed and expected in closed

    await eventually(seen)


@pytest.mark.one_loop
async def test_many_connections_and_fanout(asgi_server: AsgiProcess) -> None:
    clients = await asyncio.gather(*(client(asgi_server.url()) for _ in range(100)))
    for i, ws in enumerate(clients):
        await ws.send(f"m{i}")
    assert [await recv(ws) for ws in clients] == [f"m{i}" for i in range(100)]
    await clients[0].send("fanout:all")
    first = {await recv(clients[0]), await recv(clients[0])}
    assert "all" in first
    fanned = next(m for m in first if isinstance(m, str) and m.startswith("fanned:"))
    assert int(fanned[7:]) >= 100
    for ws in clients[1:]:
        assert await recv(ws) == "all"
    await asyncio.gather(*(ws.close() for ws in clients))


@pytest.mark.one_loop
async def test_peer_that_stops_reading_grows_buffered_while_others_receive(asgi_server: AsgiProcess) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", asgi_server.port)), TIMEOUT)
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    try:
        writer.write(
            b"GET /ws/?role=ok HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101"), head
        # From here on this peer never reads.
        good = await client(asgi_server.url())
        count, size = 200, 32 * 1024
        await good.send(f"flood:{count}:{size}")
        for _ in range(count):
            assert len(await recv(good)) == size
        await good.send("stats")
        answer = json.loads(await recv(good))
        assert max(answer["buffered"]) > 1024 * 1024, answer["buffered"]
        await good.close()
    finally:
        writer.transport.abort()


@pytest.mark.one_loop
def test_lifespan_runs_the_hooks_standalone() -> None:
    with tempfile.TemporaryDirectory() as markers:
        server = AsgiProcess("uvicorn", "asgi_app:standalone", {"ASGI_MARKERS": markers})
        try:
            server.wait_ready()
            assert (Path(markers) / "startup").exists()
            assert http_get(server.port, "/anything")[0] == 404
        finally:
            code = server.stop()
        assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
        assert (Path(markers) / "shutdown").exists()


@pytest.mark.one_loop
def test_failed_startup_stops_the_server() -> None:
    server = AsgiProcess("uvicorn", "asgi_app:failing")
    try:
        server.proc.wait(START_TIMEOUT)
        out = server.output()
    finally:
        code = server.stop()
    assert code != 0
    assert "no database" in out
