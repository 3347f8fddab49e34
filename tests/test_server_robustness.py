"""What a hostile or broken peer can do to the server (raw websockets clients only)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgspec
import pytest
from contract_app import Greet, Greeting
from helpers import DEFAULT_TIMEOUT, Raw, eventually, url_for
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from superline_zmq import Backpressure

BIG = "x" * (64 * 1024)
LIMIT = 256 * 1024
MAX_PUBLISHES = 3000  # bound on the flood loops: 3000 x 64 KiB = ~190 MiB at most


async def test_first_frame_is_exactly_env_null(server: Any) -> None:
    async with ws_connect(url_for(server, "user")) as ws:
        first = await asyncio.wait_for(ws.recv(), DEFAULT_TIMEOUT)
        assert isinstance(first, str)  # a text frame
        assert first == '{"t":"env","d":null}'


async def test_undecodable_frames_are_dropped_and_the_connection_stays_open(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await raw.send("this is not json")
    await raw.send(b"\xff\xfe\x00binary garbage")
    await raw.send('{"t":"req","i":1,')  # truncated
    # the next frame the peer sees answers this request: nothing was sent for the garbage
    await raw.send({"t": "req", "i": 2, "m": "nothing"})
    assert await raw.recv() == {"t": "res", "i": 2, "d": None}
    assert server.statistics()["bad_frames"] == 3
    assert len(server.connections) == 1


@pytest.mark.parametrize("frame", ["null", "[1]", '"x"', "42", "{}", '{"i":3}'])
async def test_non_object_or_untagged_frames_are_dropped(server: Any, open_raw: Any, frame: str) -> None:
    raw = await open_raw(server)
    await raw.send(frame)
    await raw.send({"t": "req", "i": 1, "m": "nothing"})
    reply = await raw.recv()
    if frame == '{"i":3}':
        # an object with an `i` but no `t` is a bad frame the server may answer
        assert reply["t"] == "err" and reply["i"] == 3 and reply["code"] == "BAD_REQUEST"
        reply = await raw.recv()
    assert reply == {"t": "res", "i": 1, "d": None}
    assert server.statistics()["bad_frames"] == 1
    assert server.connections and server.connections[0].open


async def test_all_non_object_frames_are_counted(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    for frame in ("null", "[1]", '"x"'):
        await raw.send(frame)
    assert await raw.call(1, "nothing") == {"t": "res", "i": 1, "d": None}
    assert server.statistics()["bad_frames"] == 3


async def test_unknown_tag_with_id_is_bad_request(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await raw.send({"t": "bogus", "i": 5, "x": 1})
    frame = await raw.recv()
    assert frame["t"] == "err" and frame["i"] == 5
    assert frame["code"] == "BAD_REQUEST"
    assert "bogus" in frame["m"] and "$.t" in frame["m"]
    assert (await raw.call(6, "nothing"))["t"] == "res"


async def test_unknown_tag_without_id_is_ignored(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await raw.send({"t": "bogus"})
    await raw.send({"t": "cuns", "c": "todos"})
    await raw.send({"t": "cdclose", "c": "todos"})
    assert await raw.call(1, "nothing") == {"t": "res", "i": 1, "d": None}  # nothing came before it


@pytest.mark.parametrize("tag", ["csub", "cbat", "cdopen", "cdwr"])
async def test_collection_frames_are_not_found(server: Any, open_raw: Any, tag: str) -> None:
    raw = await open_raw(server)
    await raw.send({"t": tag, "i": 9, "c": "todos", "q": {}})
    frame = await raw.recv()
    assert frame["t"] == "err" and frame["i"] == 9
    assert frame["code"] == "NOT_FOUND"
    assert tag in frame["m"]


async def test_req_with_wrong_typed_id_is_dropped(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await raw.send({"t": "req", "i": "x", "m": "nothing"})
    await raw.send({"t": "req", "m": "nothing"})  # no i at all
    assert await raw.call(2, "nothing") == {"t": "res", "i": 2, "d": None}
    assert server.statistics()["bad_frames"] == 2
    assert server.app.calls == [("nothing", None)]


async def test_req_with_wrong_typed_field_and_valid_id_is_bad_request(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await raw.send({"t": "req", "i": 3, "m": 42})
    frame = await raw.recv()
    assert frame["t"] == "err" and frame["i"] == 3 and frame["code"] == "BAD_REQUEST"
    assert "$.m" in frame["m"]
    assert (await raw.call(4, "nothing"))["t"] == "res"


async def test_binary_json_frames_are_accepted(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await raw.ws.send(json.dumps({"t": "req", "i": 1, "m": "greet", "d": {"name": "b"}}).encode())
    assert await raw.recv() == {"t": "res", "i": 1, "d": {"text": "hello b"}}


async def test_client_ping_is_ignored_and_stray_answers_are_counted(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await raw.send({"t": "ping"})
    await raw.send({"t": "sres", "i": 77, "d": True})
    await raw.send({"t": "serr", "i": 78, "code": "X", "m": "late"})
    await raw.send({"t": "pong"})
    await raw.send({"t": "unsub", "c": "never-joined"})
    await raw.send({"t": "req", "i": 1, "m": "nothing"})
    # no pong (or anything else) comes before the reply
    assert await raw.recv() == {"t": "res", "i": 1, "d": None}
    assert server.statistics()["late_replies"] == 2
    assert server.statistics()["bad_frames"] == 0


async def test_frame_over_max_message_size_closes_with_1009(make_server: Any) -> None:
    srv = await make_server(max_message_size=1024)
    async with ws_connect(url_for(srv, "user"), max_size=None) as ws:
        raw = Raw(ws)
        assert await raw.recv() == {"t": "env", "d": None}
        # just under the limit is fine
        small = json.dumps({"t": "req", "i": 1, "m": "greet", "d": {"name": "y" * 900}})
        assert len(small) < 1024
        await raw.send(small)
        assert (await raw.reply(1))["t"] == "res"
        await raw.send(json.dumps({"t": "req", "i": 2, "m": "greet", "d": {"name": "y" * 2000}}))
        await asyncio.wait_for(ws.wait_closed(), DEFAULT_TIMEOUT)
        assert ws.close_code == 1009
    await eventually(lambda: srv.statistics()["connections"] == 0)
    assert not any(name == "greet" and len(inp.name) > 1000 for name, inp in srv.app.calls)


async def _stalled_subscriber(open_raw: Any, srv: Any) -> Raw:
    """A raw peer subscribed to ``big`` that then never reads again."""
    # max_queue=1: websockets stops reading the socket as soon as one message is queued
    raw = await open_raw(srv, max_queue=1, max_size=None)
    assert await raw.call(1, "nothing") == {"t": "res", "i": 1, "d": None}
    await raw.send({"t": "sub", "i": 2, "c": "big"})
    assert await raw.reply(2) == {"t": "res", "i": 2, "d": None}
    return raw


async def _answered_promptly(client: Any, n: int = 5, limit: float = 1.0) -> None:
    for k in range(n):
        started = time.monotonic()
        out = await asyncio.wait_for(client.call("greet", Greet(f"p{k}")), limit)
        assert out == Greeting(f"hello p{k}")
        assert time.monotonic() - started < limit


async def test_slow_client_does_not_block_others_drop_policy(make_server: Any, make_client: Any, open_raw: Any) -> None:
    srv = await make_server(backpressure=Backpressure(max_buffered_bytes=LIMIT, on_exceed="drop"))
    stalled = await _stalled_subscriber(open_raw, srv)
    other = await make_client(srv)
    stalled_conn = next(c for c in srv.connections if "big" in c.topics)
    for n in range(MAX_PUBLISHES):
        srv.publish("big", BIG)
        await asyncio.sleep(0)  # let the loop write, and the stalled peer stop reading
        if srv.statistics()["dropped_backpressure"] > 0 and n % 8 == 0:
            await _answered_promptly(other, n=1)
        if srv.statistics()["dropped_backpressure"] >= 20:
            break
    stats = srv.statistics()
    assert stats["dropped_backpressure"] >= 20, stats
    assert stats["closed_backpressure"] == 0
    # the limit holds: the stalled connection's buffer never grows past it
    assert stalled_conn.buffered_bytes <= LIMIT
    assert stalled_conn.open
    await _answered_promptly(other)
    assert stalled.ws.transport is not None


async def test_slow_client_is_closed_with_1013_close_policy(make_server: Any, make_client: Any, open_raw: Any) -> None:
    srv = await make_server(backpressure={"max_buffered_bytes": LIMIT, "on_exceed": "close"})
    stalled = await _stalled_subscriber(open_raw, srv)
    other = await make_client(srv)
    stalled_conn = next(c for c in srv.connections if "big" in c.topics)
    for _ in range(MAX_PUBLISHES):
        srv.publish("big", BIG)
        await asyncio.sleep(0)
        if srv.statistics()["closed_backpressure"] > 0:
            break
    assert srv.statistics()["closed_backpressure"] == 1
    assert not stalled_conn.open
    await _answered_promptly(other)

    async def drain() -> ConnectionClosed:
        try:
            while True:
                await stalled.ws.recv()
        except ConnectionClosed as exc:
            return exc

    closed = await asyncio.wait_for(drain(), 10)
    assert closed.rcvd is not None and closed.rcvd.code == 1013
    assert stalled.ws.close_code == 1013
    await eventually(lambda: stalled_conn not in srv.connections)
    assert stalled_conn.close_code == 1013
    await _answered_promptly(other)


async def _closing_by_backpressure(make_server: Any, open_raw: Any) -> tuple[Any, Any]:
    """A server and its stalled connection, right after the 1013 close was decided.

    Nothing has yielded to the loop since, so the close has not started on the wire yet.
    """
    srv = await make_server(backpressure={"max_buffered_bytes": LIMIT, "on_exceed": "close"})
    await _stalled_subscriber(open_raw, srv)
    conn = next(c for c in srv.connections if "big" in c.topics)
    for _ in range(MAX_PUBLISHES):
        srv.publish("big", BIG)
        if srv.statistics()["closed_backpressure"] > 0:
            break
        await asyncio.sleep(0)
    assert srv.statistics()["closed_backpressure"] == 1
    assert not conn.open
    return srv, conn


async def test_backpressure_close_fanout_to_closing_conn_is_counted_once(make_server: Any, open_raw: Any) -> None:
    srv, _ = await _closing_by_backpressure(make_server, open_raw)
    # The connection is closing: further publishes to it must not trigger (and count)
    # another backpressure close, and every frame dropped for it is counted as such.
    for _ in range(3):
        srv.publish("big", BIG)
    stats = srv.statistics()
    assert stats["closed_backpressure"] == 1, stats
    assert stats["dropped_closed"] == 3, stats


async def test_backpressure_close_emit_to_closing_conn_is_counted_once(make_server: Any, open_raw: Any) -> None:
    srv, conn = await _closing_by_backpressure(make_server, open_raw)
    for _ in range(3):
        conn.emit("notice", {"text": BIG})  # over the limit on its own
    stats = srv.statistics()
    assert stats["closed_backpressure"] == 1, stats
    assert stats["dropped_closed"] == 3, stats


async def test_text_frame_to_a_msgpack_server_is_a_bad_frame(make_server: Any) -> None:
    # A msgpack server receiving a text frame must drop it like any undecodable frame,
    # not let the decoder's TypeError kill the connection.
    srv = await make_server(serializer="msgpack")
    async with ws_connect(url_for(srv, "user")) as ws:
        assert msgspec.msgpack.decode(await asyncio.wait_for(ws.recv(), DEFAULT_TIMEOUT)) == {"t": "env", "d": None}
        await ws.send('{"t":"req","i":1,"m":"nothing"}')  # text: wrong for this server
        await ws.send(msgspec.msgpack.encode({"t": "req", "i": 2, "m": "nothing"}))
        reply = msgspec.msgpack.decode(await asyncio.wait_for(ws.recv(), DEFAULT_TIMEOUT))
        assert reply == {"t": "res", "i": 2, "d": None}
        assert ws.close_code is None
    assert srv.statistics()["bad_frames"] == 1
