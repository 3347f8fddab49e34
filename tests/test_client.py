"""The asyncio client: events, topics, timeouts, cancellation, reconnect, hooks, close, serializers, TLS."""

from __future__ import annotations

import asyncio
import gc
import random
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from contract_app import Greet, Greeting, Notice, Price, api, build_server
from helpers import DEFAULT_TIMEOUT, eventually, url_for
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

from superline_zmq import Auth, Backoff, Client, Conn, Handshake, SocketError, connect
from superline_zmq.transport import ConnectError


async def _conn_of(srv: Any) -> Conn:
    conns = await eventually(lambda: srv.connections)
    assert len(conns) == 1, conns
    return conns[0]


class Doorman:
    """An authenticate that refuses every handshake while ``refuse`` is set: keeps a client offline."""

    def __init__(self) -> None:
        self.refuse = False

    def __call__(self, hs: Handshake) -> Auth:
        if self.refuse:
            raise PermissionError("come back later")
        return Auth(hs.query["role"])


def _no_calls(client: Client) -> bool:
    """Nothing in the client's request table: no call sent and unanswered, none queued."""
    stats = client.statistics()
    return stats["pending"] == 0 and stats["queued"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- events
async def test_on_returns_a_working_unsubscribe(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    got: list[Any] = []
    also: list[Any] = []
    off = client.on("notice", got.append)
    client.on(api.shared.events["notice"], also.append)
    conn = await _conn_of(server)
    conn.emit("notice", Notice("one"))
    await eventually(lambda: got and also)
    assert got == [Notice("one")] and also == [Notice("one")]
    off()
    off()  # idempotent
    conn.emit("notice", {"text": "two"})
    await eventually(lambda: len(also) == 2)
    assert also[-1] == Notice("two")
    assert got == [Notice("one")]


def test_on_rejects_names_outside_the_surface() -> None:
    client = Client(api, "ws://127.0.0.1:1/", role="user")
    with pytest.raises(ValueError, match="'prices' is not an event of role 'user'"):
        client.on("prices", print)


def test_client_rejects_unknown_role() -> None:
    with pytest.raises(ValueError, match="role 'admin' is not in the contract"):
        Client(api, "ws://127.0.0.1:1/", role="admin")


async def test_callback_errors_are_reported_not_fatal(server: Any, make_client: Any) -> None:
    reported: list[BaseException] = []
    client = await make_client(server, on_error=reported.append)
    got: list[Any] = []

    def bad(n: Notice) -> None:
        raise RuntimeError("callback broke")

    client.on("notice", bad)
    client.on("notice", got.append)
    conn = await _conn_of(server)
    conn.emit("notice", Notice("x"))
    await eventually(lambda: got)
    assert [str(e) for e in reported] == ["callback broke"]
    assert await client.call("nothing") is None


# ---------------------------------------------------------------- topics
async def test_subscribe_ready_and_unsubscribe(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    a: list[Any] = []
    b: list[Any] = []
    sub_a = client.subscribe("prices", a.append)
    sub_b = client.subscribe("prices", b.append)
    await sub_a.ready
    await sub_b.ready
    conn = await _conn_of(server)
    server.publish("prices", Price("A", 1.0))
    await eventually(lambda: a and b)
    sub_a.unsubscribe()  # b still listens: no unsub on the wire
    assert "prices" in conn.topics
    server.publish("prices", Price("B", 2.0))
    await eventually(lambda: len(b) == 2)
    assert a == [Price("A", 1.0)]
    sub_b.unsubscribe()  # the last one: unsub is sent
    await eventually(lambda: "prices" not in conn.topics)
    server.publish("prices", Price("C", 3.0))
    assert await client.call("nothing") is None  # a round trip after the publish
    assert b == [Price("A", 1.0), Price("B", 2.0)]


async def test_subscribe_ready_rejects_forbidden(make_server: Any, make_client: Any) -> None:
    srv = await make_server(authorize_subscribe=lambda topic, ctx, conn: topic != "secret")
    client = await make_client(srv)
    got: list[Any] = []
    sub = client.subscribe("secret", got.append)
    with pytest.raises(SocketError) as info:
        await sub.ready
    assert (info.value.code, info.value.message) == ("FORBIDDEN", "Subscribe denied: secret")
    # the topic's local handlers are dropped: a later successful subscription starts fresh
    assert "secret" not in client.topics


async def test_subscribe_ready_rejects_not_found(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    for name in ("nope", "tasks"):  # unknown, and another role's topic
        sub = client.subscribe(name, print)
        with pytest.raises(SocketError) as info:
            await sub.ready
        assert (info.value.code, info.value.message) == ("NOT_FOUND", f"Unknown topic: {name}")


async def test_unawaited_failed_ready_is_not_reported_as_never_retrieved(
    make_server: Any, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await make_server(authorize_subscribe=lambda topic, ctx, conn: False)
    client = await make_client(srv)
    client.subscribe("nope", print)  # local NOT_FOUND; the Subscription is dropped unawaited
    client.subscribe("secret", print)  # server FORBIDDEN; likewise
    assert await client.call("nothing") is None  # the sub's err has been processed
    await eventually(lambda: "secret" not in client.topics)
    gc.collect()  # an unretrieved exception is reported (logged) from Future.__del__
    never = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert never == []


# ---------------------------------------------------------------- calls
async def test_call_unknown_or_cross_role_name_is_local_not_found(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    for name in ("nope", "assign"):
        with pytest.raises(SocketError) as info:
            await client.call(name, None)
        assert info.value.code == "NOT_FOUND"
    assert _no_calls(client)


async def test_call_timeout_cleans_the_pending_table(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    started = time.monotonic()
    with pytest.raises(SocketError) as info:
        await client.call("block", timeout=0.1)
    assert info.value.code == "TIMEOUT"
    assert info.value.message == "Request 'block' timed out"
    assert time.monotonic() - started < 2
    assert _no_calls(client)
    # a late reply is ignored and the client keeps working
    server.app.release.set()
    assert await client.call("nothing") is None


async def test_client_default_timeout_option(server: Any, make_client: Any) -> None:
    client = await make_client(server, timeout=0.1)
    with pytest.raises(SocketError) as info:
        await client.call("block")
    assert info.value.code == "TIMEOUT"
    # timeout=None on the call disables it: the call waits for the release
    task = asyncio.ensure_future(client.call("block", timeout=None))
    await eventually(lambda: server.app.blocked == 2)
    server.app.release.set()
    assert await asyncio.wait_for(task, 5) is None


async def test_wait_for_cancellation_cleans_the_pending_table(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.call("block"), 0.1)
    assert _no_calls(client)


async def test_task_cancel_cleans_the_pending_table(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    task = asyncio.ensure_future(client.call("block"))
    await eventually(lambda: server.app.blocked == 1)
    assert client.statistics()["pending"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _no_calls(client)
    server.app.release.set()  # the late reply is ignored
    assert await client.call("nothing") is None


# ---------------------------------------------------------------- reconnect
async def test_in_flight_call_rejects_disconnected_on_drop(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    task = asyncio.ensure_future(client.call("block"))
    await eventually(lambda: server.app.blocked == 1)
    conn = await _conn_of(server)
    conn.terminate()
    with pytest.raises(SocketError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code == "DISCONNECTED"
    assert _no_calls(client)
    # the client reconnects by itself and works again
    await eventually(lambda: client.opens == 2 and client.connected)
    assert await client.call("greet", Greet("again")) == Greeting("hello again")


async def test_call_while_disconnected_is_queued_and_sent_after_reconnect(make_server: Any, make_client: Any) -> None:
    door = Doorman()
    srv = await make_server(authenticate=door)
    client = await make_client(srv)
    door.refuse = True
    (await _conn_of(srv)).terminate()
    await eventually(lambda: not client.connected)
    await eventually(lambda: srv.statistics()["connections_rejected"] >= 1)  # the client is retrying
    task = asyncio.ensure_future(client.call("greet", Greet("queued"), timeout=10))
    await eventually(lambda: client.statistics()["queued"] == 1)
    assert client.statistics()["pending"] == 0  # queued, not sent
    rejected = srv.statistics()["connections_rejected"]
    await eventually(lambda: srv.statistics()["connections_rejected"] > rejected)  # refused again
    assert not task.done()
    door.refuse = False
    assert await asyncio.wait_for(task, 5) == Greeting("hello queued")
    assert client.opens == 2
    assert srv.app.calls == [("greet", Greet("queued"))]


async def test_topic_subscriptions_are_resent_after_reconnect(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    got: list[Any] = []
    await client.subscribe("prices", got.append).ready
    (await _conn_of(server)).terminate()
    await eventually(lambda: client.opens == 2 and client.connected)
    got.clear()

    def publish_and_check() -> bool:
        server.publish("prices", Price("after", 1.0))
        return bool(got)

    await eventually(publish_and_check, interval=0.01)
    assert got[0] == Price("after", 1.0)
    conn = await _conn_of(server)
    assert "prices" in conn.topics


async def test_reconnect_false_rejects_calls_after_drop(server: Any, make_client: Any) -> None:
    client = await make_client(server, reconnect=False)
    task = asyncio.ensure_future(client.call("block"))
    await eventually(lambda: server.app.blocked == 1)
    (await _conn_of(server)).terminate()
    with pytest.raises(SocketError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code == "DISCONNECTED"
    await eventually(lambda: not client.connected)
    with pytest.raises(SocketError) as info2:
        await client.call("nothing")
    assert info2.value.code == "DISCONNECTED"
    assert client.opens == 1


async def test_connect_refused_by_authenticate_is_unauthorized(make_server: Any) -> None:
    def authenticate(hs: Handshake) -> Auth:
        raise PermissionError("no")

    srv = await make_server(authenticate=authenticate)
    started = time.monotonic()
    with pytest.raises(SocketError) as info:
        await connect(api, srv.url, role="user", open_timeout=DEFAULT_TIMEOUT)
    assert info.value.code == "UNAUTHORIZED"
    assert time.monotonic() - started < 2  # no retrying on a refused first connect
    assert srv.statistics()["connections_rejected"] == 1


async def test_connect_to_a_closed_port_is_disconnected_quickly() -> None:
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(SocketError) as info:
        await connect(api, f"ws://127.0.0.1:{port}/", role="user", reconnect=False, open_timeout=5)
    assert info.value.code == "DISCONNECTED"
    assert time.monotonic() - started < 2


async def test_connect_to_a_closed_port_with_reconnect_gives_up_at_open_timeout() -> None:
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(SocketError) as info:
        await connect(
            api,
            f"ws://127.0.0.1:{port}/",
            role="user",
            open_timeout=0.3,
            backoff=Backoff(0.01, 2.0, 0.05),
        )
    assert info.value.code == "DISCONNECTED"
    assert 0.25 < time.monotonic() - started < 3


async def test_a_bad_url_fails_connect_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(SocketError) as info:
        await connect(api, "http://127.0.0.1:1/", role="user", open_timeout=5)
    assert info.value.code == "DISCONNECTED" and info.value.__cause__ is not None
    assert time.monotonic() - started < 2  # not after open_timeout
    with pytest.raises(ValueError, match="ssl= needs a wss:// URL"):
        Client(api, "ws://127.0.0.1:1/", role="user", ssl=ssl.create_default_context())


# ---------------------------------------------------------------- backoff
def test_backoff_delay_is_within_full_jitter_bounds() -> None:
    rng = random.Random(1234)
    for base, factor, cap in [(0.5, 2.0, 30.0), (0.01, 3.0, 0.05), (1.0, 1.5, 10.0)]:
        b = Backoff(base=base, factor=factor, cap=cap)
        for n in range(15):
            bound = min(cap, base * factor**n)
            delays = [b.delay(n, rng) for _ in range(100)]
            assert all(0.0 <= d <= bound for d in delays), (n, bound, max(delays))
            assert max(delays) > bound / 2  # full jitter: the range is really used


def test_backoff_asks_the_injected_rng_for_the_right_range() -> None:
    seen: list[tuple[float, float]] = []

    class Spy(random.Random):
        def uniform(self, a: float, b: float) -> float:
            seen.append((a, b))
            return b

    b = Backoff(base=0.5, factor=2.0, cap=30.0)
    assert [b.delay(n, Spy()) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert all(a == 0.0 for a, _ in seen)
    # the same seed gives the same delays
    assert [b.delay(n, random.Random(7)) for n in range(6)] == [b.delay(n, random.Random(7)) for n in range(6)]


def test_backoff_delay_for_a_large_attempt_is_capped() -> None:
    # A client retrying for hours reaches attempt numbers where factor**attempt overflows
    # a float (2.0**1024); the delay must stay at the cap instead of raising.
    b = Backoff(base=0.5, factor=2.0, cap=30.0)
    assert 0.0 <= b.delay(5000, random.Random(1)) <= 30.0


# ---------------------------------------------------------------- close
async def test_close_is_idempotent_and_rejects_pending_calls(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    task = asyncio.ensure_future(client.call("block"))
    await eventually(lambda: server.app.blocked == 1)
    await client.close()
    await client.close()
    with pytest.raises(SocketError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code == "DISCONNECTED"
    assert _no_calls(client)
    assert not client.connected
    with pytest.raises(SocketError) as info2:
        await client.call("nothing")
    assert (info2.value.code, info2.value.message) == ("DISCONNECTED", "Client closed")
    await eventually(lambda: not server.connections)


async def test_async_with_for_server_and_client() -> None:
    async with build_server() as srv:
        await srv.listen("127.0.0.1", 0)
        port = srv.port
        async with await connect(api, srv.url, role="user") as client:
            assert await client.call("greet", Greet("ctx")) == Greeting("hello ctx")
            assert client.env is None
        assert not client.connected
        with pytest.raises(SocketError, match="DISCONNECTED"):
            await client.call("nothing")
        await eventually(lambda: not srv.connections)
    with pytest.raises(SocketError) as info:
        await connect(api, f"ws://127.0.0.1:{port}/", role="user", reconnect=False)
    assert info.value.code == "DISCONNECTED"
    await srv.close()  # idempotent after __aexit__


async def test_server_close_disconnects_clients(make_server: Any, make_client: Any) -> None:
    srv = await make_server()
    client = await make_client(srv, reconnect=False)
    task = asyncio.ensure_future(client.call("block"))
    await eventually(lambda: srv.app.blocked == 1)
    await srv.close()
    with pytest.raises(SocketError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code == "DISCONNECTED"


# ---------------------------------------------------------------- serializers
async def test_msgpack_server_and_client_round_trip(make_server: Any, make_client: Any) -> None:
    srv = await make_server(serializer="msgpack")
    client = await make_client(srv, serializer="msgpack")
    assert await client.call("greet", {"name": "mp"}) == Greeting("hello mp")
    assert await client.call("nothing") is None
    got: list[Any] = []
    await client.subscribe("prices", got.append).ready
    srv.publish("prices", Price("MP", 2.5))
    await eventually(lambda: got)
    assert got == [Price("MP", 2.5)]
    with pytest.raises(SocketError) as info:
        await client.call("fail")
    assert (info.value.code, info.value.data) == ("CONFLICT", {"room": "lobby", "n": 3})


async def test_msgpack_frames_are_binary(make_server: Any) -> None:
    srv = await make_server(serializer="msgpack")
    async with ws_connect(url_for(srv, "user")) as ws:
        first = await asyncio.wait_for(ws.recv(), DEFAULT_TIMEOUT)
        assert isinstance(first, bytes)
        assert msgspec.msgpack.decode(first) == {"t": "env", "d": None}
        await ws.send(msgspec.msgpack.encode({"t": "req", "i": 1, "m": "greet", "d": {"name": "b"}}))
        reply = await asyncio.wait_for(ws.recv(), DEFAULT_TIMEOUT)
        assert isinstance(reply, bytes)
        assert msgspec.msgpack.decode(reply) == {"t": "res", "i": 1, "d": {"text": "hello b"}}


async def test_msgpack_client_against_json_server_does_not_crash(server: Any) -> None:
    # Mismatched serializers are a configuration error, but the client must survive
    # frames it cannot decode (here: text frames) rather than crash its supervisor.
    client = await connect(api, server.url, role="user", serializer="msgpack", reconnect=False)
    try:
        with pytest.raises(SocketError) as info:
            await client.call("nothing", timeout=0.2)
        assert info.value.code == "TIMEOUT"
        # the supervisor survived: still connected (reconnect is off), the frames counted
        assert client.connected
        assert client.statistics()["bad_frames"] >= 1
    finally:
        await client.close()


# ---------------------------------------------------------------- hooks (issue 16)
async def test_on_disconnect_and_on_reconnect_hooks(make_server: Any, make_client: Any) -> None:
    door = Doorman()
    srv = await make_server(authenticate=door)
    seen: list[Any] = []
    rejoined: list[Any] = []

    async def on_reconnect() -> None:
        # runs once queued calls are flushed and topics re-sent: an app re-joins rooms here
        stats = client.statistics()
        seen.append(("reconnect", stats["queued"], stats["subs_sent"]))
        rejoined.append(await client.call("greet", Greet("rejoin")))

    def on_disconnect(code: int | None) -> None:
        seen.append(("disconnect", code))

    client = await make_client(srv, on_reconnect=on_reconnect, on_disconnect=on_disconnect)
    await client.subscribe("prices", print).ready
    assert seen == []  # the first open is not a reconnect
    door.refuse = True
    (await _conn_of(srv)).terminate()
    await eventually(lambda: seen == [("disconnect", 1006)])
    queued = asyncio.ensure_future(client.call("greet", Greet("queued"), timeout=10))
    await eventually(lambda: client.statistics()["queued"] == 1)
    door.refuse = False
    assert await asyncio.wait_for(queued, 5) == Greeting("hello queued")
    await eventually(lambda: rejoined)
    assert rejoined == [Greeting("hello rejoin")]
    assert seen == [("disconnect", 1006), ("reconnect", 0, 2)]
    assert srv.app.calls == [("greet", Greet("queued")), ("greet", Greet("rejoin"))]
    stats = client.statistics()
    assert (stats["opens"], stats["reconnects"], stats["disconnects"]) == (2, 1, 1)
    # closing the client ourselves is not a disconnect to report
    await client.close()
    assert seen == [("disconnect", 1006), ("reconnect", 0, 2)]


async def test_raising_hooks_go_to_on_error_and_the_client_keeps_reconnecting(server: Any, make_client: Any) -> None:
    reported: list[BaseException] = []

    def on_disconnect(code: int | None) -> None:
        raise RuntimeError(f"disconnect hook broke ({code})")

    async def on_reconnect() -> None:
        raise RuntimeError("reconnect hook broke")

    client = await make_client(server, on_error=reported.append, on_disconnect=on_disconnect, on_reconnect=on_reconnect)
    dropped: list[Conn] = []
    for n in (2, 3):
        (conn, *_) = await eventually(lambda: [c for c in server.connections if c not in dropped])
        conn.terminate()
        dropped.append(conn)

        def back(n: int = n) -> bool:
            return client.opens == n and client.connected and len(reported) == 2 * (n - 1)

        await eventually(back)
    assert sorted(map(str, reported)) == ["disconnect hook broke (1006)"] * 2 + ["reconnect hook broke"] * 2
    assert await client.call("greet", Greet("still")) == Greeting("hello still")


async def test_reconnect_false_reports_the_drop_and_never_reconnects(server: Any, make_client: Any) -> None:
    seen: list[Any] = []
    client = await make_client(
        server, reconnect=False, on_disconnect=seen.append, on_reconnect=lambda: seen.append("reconnect")
    )
    (await _conn_of(server)).terminate()
    await eventually(lambda: seen == [1006])
    await eventually(lambda: not client.connected)
    assert client.opens == 1 and seen == [1006]


# ---------------------------------------------------------------- offline queue bound
async def test_calls_beyond_max_queued_fail_at_once_while_offline(make_server: Any, make_client: Any) -> None:
    door = Doorman()
    srv = await make_server(authenticate=door)
    client = await make_client(srv, max_queued=1)
    assert client.max_queued == 1
    door.refuse = True
    (await _conn_of(srv)).terminate()
    await eventually(lambda: not client.connected)
    first = asyncio.ensure_future(client.call("greet", Greet("one"), timeout=10))
    await eventually(lambda: client.statistics()["queued"] == 1)
    with pytest.raises(SocketError) as info:
        await client.call("greet", Greet("two"))
    assert info.value.code == "DISCONNECTED"
    assert "queue is full (1 calls waiting)" in info.value.message
    assert client.statistics()["calls_queue_full"] == 1
    door.refuse = False
    assert await asyncio.wait_for(first, 5) == Greeting("hello one")
    assert srv.app.calls == [("greet", Greet("one"))]


# ---------------------------------------------------------------- close
async def test_close_leaves_nothing_running(server: Any, make_client: Any) -> None:
    started = asyncio.Event()

    async def slow_callback(_: Notice) -> None:
        started.set()
        await asyncio.Event().wait()

    client = await make_client(server)
    client.on("notice", slow_callback)
    (await _conn_of(server)).emit("notice", Notice("x"))
    await asyncio.wait_for(started.wait(), 5)
    call = asyncio.ensure_future(client.call("block", timeout=60))  # arms the timer
    await eventually(lambda: server.app.blocked == 1)
    assert client.statistics()["tasks"] == 1
    await client.close()
    assert client.statistics()["tasks"] == 0
    with pytest.raises(SocketError, match="DISCONNECTED"):
        await call

    def ours(task: asyncio.Task[Any]) -> bool:
        name = task.get_coro().__qualname__  # type: ignore[union-attr]
        return name.split(".")[0] in ("Client", "WsLink") or "slow_callback" in name

    assert [t for t in asyncio.all_tasks() if ours(t)] == []
    assert client.statistics()["connected"] == 0


# ---------------------------------------------------------------- TLS (tls_files: conftest.py)
async def test_wss_with_the_ssl_option(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    srv = build_server()
    await srv.start()
    try:
        async with ws_serve(
            srv.handler, "127.0.0.1", 0, process_request=srv.process_request, ssl=server_ctx, ping_interval=None
        ) as tls_server:
            port = tls_server.sockets[0].getsockname()[1]
            url = f"wss://127.0.0.1:{port}/"
            async with await connect(api, url, role="user", ssl=client_ctx, reconnect=False) as client:
                assert await client.call("greet", Greet("tls")) == Greeting("hello tls")
            # without our context the self-signed certificate is refused: the option is what made it work
            with pytest.raises(SocketError) as info:
                await connect(api, url, role="user", reconnect=False, open_timeout=DEFAULT_TIMEOUT)
            assert info.value.code == "DISCONNECTED"
            assert isinstance(info.value.__cause__, ConnectError)
    finally:
        srv.app.release.set()
        await srv.close()


async def test_a_reconnecting_client_rejoins_its_room_through_on_reconnect() -> None:
    """The pattern docs/contract.md recommends: rooms are server state, so re-join them in the hook."""
    from superline_zmq import create_socket_server, define_contract, event, request

    class Note(msgspec.Struct):
        text: str

    rooms_api = define_contract(
        shared={"client_to_server": {"join": request(str, None)}, "server_to_client": {"note": event(Note)}},
        roles={"user": {}},
    )
    srv = create_socket_server(rooms_api)

    async def join(room: str, ctx: Any, conn: Any) -> None:
        await srv.room(room).add(conn)

    srv.implement({"shared": {"join": join}})
    await srv.listen()
    got: list[str] = []
    rejoined = asyncio.Event()

    async def on_reconnect() -> None:
        await client.call("join", "lobby")
        rejoined.set()

    fast = Backoff(base=0.01, factor=2.0, cap=0.05)
    client = await connect(rooms_api, srv.url, role="user", backoff=fast, on_reconnect=on_reconnect)
    try:
        client.on("note", lambda n: got.append(n.text))
        await client.call("join", "lobby")
        srv.room("lobby").broadcast("note", Note("first"))
        await eventually(lambda: got == ["first"])
        (await _conn_of(srv)).terminate()  # the network drops: a new connection, in no room
        await asyncio.wait_for(rejoined.wait(), 5)
        assert srv.room("lobby").size == 1 and srv.connections[0].rooms == {"lobby"}
        srv.room("lobby").broadcast("note", Note("after the reconnect"))
        await eventually(lambda: got == ["first", "after the reconnect"])
    finally:
        await client.close()
        await srv.close()
