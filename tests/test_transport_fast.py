"""The fast transport (``superline_zmq.transport.fast``) at the transport level, on 127.0.0.1 port 0.

A real websockets client where a well-behaved peer is wanted, raw TCP for hostile ones; the
gateway is ``transport_gateway.EchoGateway``. Every test runs under asyncio and uvloop.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from transport_gateway import EchoGateway
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

from superline_zmq.testing import eventually
from superline_zmq.transport import Handshake, HttpReply, fast
from superline_zmq.transport.fast import FastConnection, FastListener, Limits, encode_frame

TIMEOUT = 5.0
QUICK = Limits(open_timeout=0.5, close_timeout=0.5)


class Served:
    """A gateway behind a running fast listener."""

    def __init__(self, gw: EchoGateway, listener: FastListener) -> None:
        self.gw = gw
        self.listener = listener
        self.host, self.port = listener.addresses[0]

    def url(self, role: str | None = "ok", path: str = "/") -> str:
        query = "" if role is None else f"?role={role}"
        return f"ws://{self.host}:{self.port}{path}{query}"

    def conn(self, i: int = -1) -> FastConnection:
        conn = self.gw.conns[i]
        assert isinstance(conn, FastConnection)
        return conn


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start fast listeners over fresh EchoGateways; everything is torn down after the test."""
    started: list[Served] = []

    async def make(
        limits: Limits = QUICK, http: Any = None, tls: ssl.SSLContext | None = None, **gateway: Any
    ) -> Served:
        gw = EchoGateway(**gateway)
        listener = await fast.serve(gw, "127.0.0.1", 0, limits=limits, http=http, ssl=tls)
        started.append(Served(gw, listener))
        return started[-1]

    yield make
    for s in started:
        s.gw.release.set()
        s.listener.close()
        await s.gw.aclose()
        for conn in list(s.listener.conns):
            conn.abort()
        await asyncio.wait_for(s.listener.wait_closed(), TIMEOUT)


async def client(url: str, **kwargs: Any) -> ClientConnection:
    """A websockets client that has read the server's ``welcome``."""
    ws = await connect(url, compression=None, open_timeout=TIMEOUT, **kwargs)
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) in ("welcome", b"welcome")
    return ws


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def closed_code(ws: ClientConnection) -> int | None:
    """Read until the connection closes; its close code as the client saw it."""
    with pytest.raises(ConnectionClosed):
        for _ in range(1000):
            await recv(ws)
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return ws.close_code


# -- raw TCP peers ----------------------------------------------------------------------------

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def masked(data: bytes, opcode: Opcode = Opcode.TEXT, fin: bool = True) -> bytes:
    """A client frame as it goes on the wire."""
    return Frame(opcode, data, fin).serialize(mask=True)


async def raw_open(s: Served) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(s.host, s.port), TIMEOUT)


async def raw_upgrade(
    s: Served, path: str = "/?role=ok", then: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Upgrade over raw TCP (``then`` goes in the same write as the request); the 101 is read."""
    reader, writer = await raw_open(s)
    writer.write(UPGRADE.format(path=path).encode() + then)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


async def read_to_eof(reader: asyncio.StreamReader, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes (bounded)."""
    out = b""
    while len(out) < limit:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def close_frame_code(data: bytes) -> int:
    """The code of the server close frame that ``data`` ends with (server frames are unmasked)."""
    at = data.rfind(b"\x88")
    assert at >= 0, data
    return int.from_bytes(data[at + 2 : at + 4], "big")


# -- framing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [True, False])
def test_encode_frame_matches_websockets(size: int, text: bool) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    opcode = Opcode.TEXT if text else Opcode.BINARY
    assert encode_frame(data, text) == Frame(opcode, data).serialize(mask=False)


# -- the happy path -----------------------------------------------------------------------------


async def test_echo_text_and_handshake(serve: Serve) -> None:
    s = await serve()
    ws = await client(s.url(path="/rt"), additional_headers={"X-Token": "abc"})
    await ws.send("hello")
    assert await recv(ws) == "hello"
    await ws.send(b"bin")  # binary in; a text gateway answers in text frames
    assert await recv(ws) == "bin"
    assert s.gw.recorders[0].messages == ["hello", b"bin"]
    hs: Handshake = s.gw.handshakes[0]
    assert hs.transport == "websocket"
    assert hs.path == "/rt"
    assert hs.query == {"role": "ok"}
    assert hs.headers["x-token"] == "abc" and hs.headers["X-TOKEN"] == "abc"
    assert hs.peer == f"127.0.0.1:{ws.local_address[1]}"
    assert s.conn().peer == hs.peer
    await ws.close()


async def test_binary_gateway(serve: Serve) -> None:
    s = await serve(text=False)
    ws = await client(s.url())
    await ws.send(b"\x00\x01")
    assert await recv(ws) == b"\x00\x01"
    await ws.send("text in")
    assert await recv(ws) == b"text in"
    assert s.gw.recorders[0].messages == [b"\x00\x01", "text in"]
    await ws.close()


async def test_fragmented_message_is_delivered_whole(serve: Serve) -> None:
    s = await serve()
    ws = await client(s.url())
    await ws.send(["frag", "ment", "ed"])
    assert await recv(ws) == "fragmented"
    await ws.send([b"ab", b"cd"])
    assert await recv(ws) == "abcd"
    assert s.gw.recorders[0].messages == ["fragmented", b"abcd"]
    await ws.close()


async def test_protocol_ping_is_answered(serve: Serve) -> None:
    s = await serve()
    ws = await client(s.url())
    pong = await ws.ping(b"p")
    await asyncio.wait_for(pong, TIMEOUT)
    await ws.close()


async def test_many_connections(serve: Serve) -> None:
    s = await serve()
    clients = await asyncio.gather(*(client(s.url()) for _ in range(200)))
    for i, ws in enumerate(clients):
        await ws.send(f"m{i}")
    assert [await recv(ws) for ws in clients] == [f"m{i}" for i in range(200)]
    await clients[0].send("fanout:all")
    assert await recv(clients[0]) in ("all", "fanned:200")
    for ws in clients[1:]:
        assert await recv(ws) == "all"
    await asyncio.gather(*(ws.close() for ws in clients))
    await eventually(lambda: len(s.gw.closed) == 200)
    assert set(s.gw.closed) == {1000}


# -- refusals and plain HTTP ----------------------------------------------------------------------


@pytest.mark.parametrize(("role", "status"), [("nope", 401), ("missing", 404)])
async def test_refusal_is_an_http_status(serve: Serve, role: str, status: int) -> None:
    s = await serve()
    with pytest.raises(InvalidStatus) as info:
        await connect(s.url(role), open_timeout=TIMEOUT)
    assert info.value.response.status_code == status
    assert info.value.response.body in (b"unauthorized\n", b"no such endpoint\n")
    assert s.gw.conns == []
    assert s.listener.statistics()["refused"] == 1


async def test_listener_close_refuses_deciding_handshakes_with_503(serve: Serve) -> None:
    s = await serve()
    ws = await client(s.url())
    attempt = asyncio.ensure_future(connect(s.url("slow"), open_timeout=TIMEOUT))
    await eventually(lambda: len(s.gw.handshakes) == 2)
    s.listener.close()
    s.gw.release.set()
    with pytest.raises(InvalidStatus) as info:
        await attempt
    assert info.value.response.status_code == 503
    with pytest.raises(OSError):
        await asyncio.open_connection(s.host, s.port)
    await ws.send("still open")
    assert await recv(ws) == "still open"
    await ws.close()


async def test_plain_http_gets_the_http_hook_then_the_gateways_answer(serve: Serve) -> None:
    async def health(hs: Handshake) -> HttpReply | None:
        return HttpReply(200, '{"ok":true}', "application/json") if hs.path == "/healthz" else None

    s = await serve(http=health)
    # no hook answer: the gateway decides, as behind websockets' process_request (401 without a
    # role); a plain GET it would accept still gets 426 Upgrade Required
    for path, status in (("/healthz", b"200"), ("/other", b"401"), ("/other?role=ok", b"426")):
        reader, writer = await raw_open(s)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = await read_to_eof(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 " + status), answer
        if status == b"200":
            assert answer.endswith(b'{"ok":true}') and b"Content-Type: application/json" in answer
    assert [hs.path for hs in s.gw.handshakes] == ["/other", "/other"]  # the hook answered /healthz alone
    plain = await serve()
    reader, writer = await raw_open(plain)
    writer.write(b"GET /healthz?role=ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_to_eof(reader)).startswith(b"HTTP/1.1 426 ")
    writer.close()


# -- hostile and slow peers -----------------------------------------------------------------------


async def test_garbage_request_is_dropped_and_others_unaffected(serve: Serve) -> None:
    s = await serve()
    ws = await client(s.url())
    reader, writer = await raw_open(s)
    writer.write(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    answer = await read_to_eof(reader)
    assert not answer.startswith(b"HTTP/1.1 101")
    writer.close()
    await ws.send("fine")
    assert await recv(ws) == "fine"
    await ws.close()


async def test_huge_request_head_is_refused_431_without_buffering_it(serve: Serve) -> None:
    s = await serve()
    ws = await client(s.url())
    reader, writer = await raw_open(s)
    writer.write(b"GET /?role=ok HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        for _ in range(160):  # up to 10 MB of one header line, 64 KiB at a time
            writer.write(b"a" * 65536)
            await asyncio.wait_for(writer.drain(), TIMEOUT)
            sent += 65536
            if reader.at_eof() or len(reader._buffer) > 0:  # the server answered early
                break
    except (ConnectionError, TimeoutError):
        pass
    answer = await read_to_eof(reader)
    # Our head limit (16 KiB) answers 431; websockets' own line limit (8 KiB) may come first,
    # answering 431 since websockets 17 and closing without an answer before.
    assert answer.startswith(b"HTTP/1.1 431 ") or answer == b"", answer[:100]
    assert sent < 10 * 1024 * 1024
    writer.close()
    # Many short header lines: our own head limit (16 KiB here) rather than websockets' line limit.
    reader, writer = await raw_open(s)
    writer.write(b"GET /?role=ok HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 200) for i in range(100)))
    answer = await read_to_eof(reader)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    writer.close()
    await ws.send("fine")
    assert await recv(ws) == "fine"
    await ws.close()


async def test_half_open_peer_is_dropped_after_open_timeout(serve: Serve) -> None:
    s = await serve()
    silent = await raw_open(s)
    slowloris = await raw_open(s)
    slowloris[1].write(b"GET /?role=ok HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
    for reader, writer in (silent, slowloris):
        assert await read_to_eof(reader) == b""
        writer.close()
    assert s.listener.statistics()["open_timeouts"] == 2
    await eventually(lambda: s.listener.connections() == 0)


async def test_slow_decide_is_bounded_by_open_timeout(serve: Serve) -> None:
    s = await serve()
    reader, writer = await raw_open(s)
    writer.write(UPGRADE.format(path="/?role=slow").encode())
    assert await read_to_eof(reader) == b""
    writer.close()
    assert s.gw.conns == []
    assert s.listener.statistics()["open_timeouts"] == 1


async def test_unmasked_client_frame_is_a_protocol_error(serve: Serve) -> None:
    s = await serve()
    reader, writer = await raw_upgrade(s)
    writer.write(Frame(Opcode.TEXT, b"hi").serialize(mask=False))
    data = await read_to_eof(reader)
    assert close_frame_code(data) == 1002
    writer.close()
    await eventually(lambda: s.gw.closed == [1002])


async def test_invalid_utf8_closes_1007(serve: Serve) -> None:
    s = await serve()
    reader, writer = await raw_upgrade(s)
    writer.write(masked(b"\xff\xfe"))
    data = await read_to_eof(reader)
    assert close_frame_code(data) == 1007
    writer.close()
    await eventually(lambda: s.gw.closed == [1007])


async def test_oversize_message_closes_1009_and_others_carry_on(serve: Serve) -> None:
    s = await serve(max_message_size=1024)
    big = await client(s.url())
    other = await client(s.url())
    await big.send("x" * 2000)
    assert await closed_code(big) == 1009
    fragmented = await client(s.url())
    await fragmented.send(["y" * 600, "y" * 600])
    assert await closed_code(fragmented) == 1009
    await other.send("x" * 1024)
    assert await recv(other) == "x" * 1024
    await eventually(lambda: sorted(s.gw.closed, key=str) == [1009, 1009])
    await other.close()


async def test_peer_that_stops_reading_grows_buffered_while_others_receive(serve: Serve) -> None:
    s = await serve()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's buffer fills
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (s.host, s.port)), TIMEOUT)
    stuck_reader, stuck_writer = await asyncio.open_connection(sock=sock, limit=4096)
    stuck_writer.write(UPGRADE.format(path="/?role=ok").encode())
    assert (await asyncio.wait_for(stuck_reader.readuntil(b"\r\n\r\n"), TIMEOUT)).startswith(b"HTTP/1.1 101")
    # From here on the peer never reads: its StreamReader stops the socket at 2 x 4 KiB.
    good = await client(s.url())
    stuck = s.conn(0)
    count, size = 200, 32 * 1024  # 6.4 MB to each: more than the kernel buffers of a loopback socket
    await good.send(f"flood:{count}:{size}")
    got = 0
    for _ in range(count):
        msg = await recv(good)
        assert len(msg) == size
        got += 1
    assert got == count
    assert stuck.open
    assert stuck.buffered() > QUICK.write_high
    assert s.gw.max_buffered >= stuck.buffered()
    assert s.conn(1).buffered() < stuck.buffered()
    stuck_writer.transport.abort()
    await eventually(lambda: not stuck.open)
    await good.close()


async def test_close_handshake_times_out_then_aborts(serve: Serve) -> None:
    s = await serve()
    reader, writer = await raw_upgrade(s)  # a peer that never answers the close frame
    await eventually(lambda: len(s.gw.conns) == 1)
    conn = s.conn()
    await asyncio.wait_for(conn.close(1001, "going"), TIMEOUT)
    assert not conn.open
    assert s.listener.statistics()["close_timeouts"] == 1
    assert s.gw.closed == [1001]  # the code we sent, as no close frame came back
    data = await read_to_eof(reader)
    assert close_frame_code(data) == 1001
    writer.close()


# -- start, close codes, on_close -------------------------------------------------------------


async def test_nothing_is_delivered_before_start_then_everything_in_order(serve: Serve) -> None:
    s = await serve(auto_start=False)
    # Frames in the same TCP segment as the request are parsed during the handshake and held.
    early = masked(b"one") + masked(b"two")
    _reader, writer = await raw_upgrade(s, then=early)
    ws = await client(s.url())
    await ws.send("three")
    await ws.send("four")
    await eventually(lambda: len(s.gw.conns) == 2)
    rec0, rec1 = s.gw.recorders
    assert rec0.messages == [] and rec1.messages == []
    s.gw.conns[0].start(rec0)
    s.gw.conns[1].start(rec1)
    await eventually(lambda: rec0.messages == ["one", "two"] and rec1.messages == ["three", "four"])
    assert await recv(ws) == "three"
    with pytest.raises(RuntimeError):
        s.gw.conns[1].start(rec1)
    writer.close()
    await ws.close()


async def test_too_much_sent_before_the_101_is_refused(serve: Serve) -> None:
    s = await serve(limits=Limits(max_pending=1000, open_timeout=1, close_timeout=1), auto_start=False)
    reader, writer = await raw_open(s)
    writer.write(UPGRADE.format(path="/?role=ok").encode() + masked(b"a" * 600) + masked(b"b" * 600))
    answer = await read_to_eof(reader)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert s.listener.statistics()["pending_overflows"] == 1
    assert s.gw.conns == []
    writer.close()


async def test_on_close_once_with_the_code_either_side_used(serve: Serve) -> None:
    s = await serve()
    by_client = await client(s.url())
    await by_client.close(4002, "mine")
    await eventually(lambda: s.gw.closed == [4002])
    by_server = await client(s.url())
    await by_server.send("close:4001")
    assert await closed_code(by_server) == 4001
    await eventually(lambda: s.gw.closed == [4002, 4001])
    aborted = await client(s.url())
    await eventually(lambda: len(s.gw.conns) == 3)
    s.conn(2).abort()
    assert await closed_code(aborted) == 1006
    await eventually(lambda: s.gw.closed == [4002, 4001, 1006])
    assert [r.closes for r in s.gw.recorders] == [[4002], [4001], [1006]]
    assert [c.close_code for c in s.gw.conns] == [4002, 4001, 1006]
    assert not s.conn(0).send(b"late")


async def test_closed_before_start_reports_on_start(serve: Serve) -> None:
    s = await serve(auto_start=False)
    ws = await client(s.url())
    await eventually(lambda: len(s.gw.conns) == 1)
    conn, rec = s.conn(), s.gw.recorders[0]
    await conn.close(4003)
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    await conn.wait_closed()
    conn.start(rec)
    await eventually(lambda: rec.closes == [4003])


# -- fanout ----------------------------------------------------------------------------------------


async def test_fanout_frames_once_for_all_receivers(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await serve()
    clients = await asyncio.gather(*(client(s.url()) for _ in range(20)))
    await eventually(lambda: len(s.gw.conns) == 20)
    builds: list[int] = []
    real = fast.encode_frame

    def counting(data: bytes, text: bool) -> bytes:
        builds.append(len(data))
        return real(data, text)

    monkeypatch.setattr(fast, "encode_frame", counting)
    conns = list(s.gw.conns)
    closed = conns[5]
    await clients[5].close()
    await eventually(lambda: not closed.open)
    assert s.conn(0).fanout(conns, b"tick") == 19
    assert builds == [4]  # one frame built, written 19 times
    for i, ws in enumerate(clients):
        if i != 5:
            assert await recv(ws) == "tick"
    await asyncio.gather(*(ws.close() for ws in clients))


async def test_fanout_writes_the_same_bytes_object_to_every_transport(serve: Serve) -> None:
    s = await serve()
    clients = await asyncio.gather(*(client(s.url()) for _ in range(5)))
    await eventually(lambda: len(s.gw.conns) == 5)
    seen: list[bytes] = []

    class Spy:
        """Records what is written, passes everything to the real transport (uvloop's are read-only)."""

        def __init__(self, real: Any) -> None:
            self.real = real

        def write(self, data: bytes) -> None:
            seen.append(data)
            self.real.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    spied = []
    for conn in s.gw.conns:
        assert isinstance(conn, FastConnection)
        spied.append((conn, conn._transport))
        conn._transport = Spy(conn._transport)  # type: ignore[assignment]
    try:
        s.conn(0).fanout(s.gw.conns, b"same")
    finally:
        for conn, real in spied:
            conn._transport = real
    assert len(seen) == 5 and all(b is seen[0] for b in seen)
    for ws in clients:
        assert await recv(ws) == "same"
    await asyncio.gather(*(ws.close() for ws in clients))


async def test_stats_command(serve: Serve) -> None:
    s = await serve()
    ws = await client(s.url())
    await ws.send("stats")
    stats = json.loads(await recv(ws))
    assert stats["open"] == 1 and stats["transports"] == ["websocket"]
    await ws.close()


# -- TLS ---------------------------------------------------------------------------------------------


async def test_tls_echo_fanout_and_close(serve: Serve, tls_files: tuple[Path, Path]) -> None:
    cert, key = (str(f) for f in tls_files)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)
    s = await serve(tls=server_ctx)
    url = s.url().replace("ws://", "wss://")
    a, b = await client(url, ssl=client_ctx), await client(url, ssl=client_ctx)
    await a.send("over tls")
    assert await recv(a) == "over tls"
    await a.send("fanout:both")
    assert {await recv(a), await recv(a)} == {"both", "fanned:2"}
    assert await recv(b) == "both"
    await b.send("close:4001")
    assert await closed_code(b) == 4001
    await a.close()
    await eventually(lambda: sorted(s.gw.closed) == [1000, 4001])


# -- the direct frame parser ------------------------------------------------------------------


async def test_frames_are_parsed_directly_once_open(serve: Serve) -> None:
    """Fails when the direct parser is silently off (e.g. websockets' read buffer moved)."""
    s = await serve()
    ws = await client(s.url())
    await ws.send("hello")
    assert await recv(ws) == "hello"
    stats = s.listener.statistics()
    assert (stats["direct_parsed"], stats["protocol_parsed"], stats["direct_handoffs"]) == (1, 0, 0)
    assert s.conn()._direct
    await ws.close()


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
async def test_frames_split_anywhere_are_delivered_whole_and_in_order(serve: Serve, chunk: int) -> None:
    """Every header size (7-, 16- and 64-bit lengths), fragments with a ping between, cut at any byte."""
    s = await serve(max_message_size=1 << 20)
    ws = await client(s.url())
    wire = b"".join(
        [
            masked(b"a"),
            masked(b"b" * 200),
            masked(b"c" * 70_000),
            masked(b"d1", fin=False),
            masked(b"p", Opcode.PING),
            masked(b"d2", Opcode.CONT, fin=False),
            masked(b"d3", Opcode.CONT),
            masked(b"\x00\x01", Opcode.BINARY),
            masked("é€".encode()),
        ]
    )
    conn = s.conn()
    for at in range(0, len(wire), chunk):
        conn.data_received(wire[at : at + chunk])
    expected: list[str | bytes] = ["a", "b" * 200, "c" * 70_000, "d1d2d3", b"\x00\x01", "é€"]
    echoed = [m if isinstance(m, str) else m.decode() for m in expected]  # a text gateway echoes in text
    assert [await recv(ws) for _ in expected] == echoed
    assert s.gw.recorders[0].messages == expected
    assert conn._direct and s.listener.statistics()["direct_handoffs"] == 0
    await ws.close()


@pytest.mark.parametrize(
    ("frames", "code", "handoff"),
    [
        ([masked(b"a", fin=False), masked(b"b")], 1002, 0),  # a new message inside a fragmented one
        ([masked(b"a", Opcode.CONT)], 1002, 1),  # a continuation of nothing: websockets decides
        ([b"\xc1\x81" + b"\x00" * 4 + b"a"], 1002, 1),  # RSV1 without an extension
        ([b"\x83\x81" + b"\x00" * 4 + b"a"], 1002, 1),  # reserved opcode 3
        ([b"\x89\xfe\x00\x7e" + b"\x00" * 4 + b"x" * 126], 1002, 1),  # a ping over 125 bytes
        ([b"\x09\x81" + b"\x00" * 4 + b"p"], 1002, 1),  # a fragmented ping
        ([masked(b"y" * 600, fin=False), masked(b"y" * 600, Opcode.CONT)], 1009, 0),  # fragments over the limit
    ],
)
async def test_bad_frames_close_as_websockets_would(serve: Serve, frames: list[bytes], code: int, handoff: int) -> None:
    s = await serve(max_message_size=1024)
    reader, writer = await raw_upgrade(s)
    writer.write(b"".join(frames))
    data = await read_to_eof(reader)
    assert close_frame_code(data) == code
    writer.close()
    await eventually(lambda: s.gw.closed == [code])
    assert s.listener.statistics()["direct_handoffs"] == handoff


async def test_peer_close_frame_goes_to_the_protocol(serve: Serve) -> None:
    s = await serve()
    reader, writer = await raw_upgrade(s)
    writer.write(masked(b"hi") + Frame(Opcode.CLOSE, b"\x03\xe8bye").serialize(mask=True) + masked(b"late"))
    data = await read_to_eof(reader)
    assert close_frame_code(data) == 1000
    writer.close()
    await eventually(lambda: s.gw.closed == [1000])
    assert s.gw.recorders[0].messages == ["hi"]
