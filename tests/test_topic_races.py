"""Subscribe/unsubscribe ordering races, seen from a raw client."""

from __future__ import annotations

import asyncio
from typing import Any

from contract_app import build_server
from helpers import raw_connect

from superline_zmq import MemoryAdapter


async def test_unsub_right_after_sub_leaves_the_connection_unsubscribed() -> None:
    gate = asyncio.Event()

    async def authorize(topic: str, ctx: Any, conn: Any) -> bool:
        await gate.wait()  # hold the sub in authorization while the unsub arrives
        return True

    srv = build_server(authorize_subscribe=authorize)
    async with srv:
        await srv.listen("127.0.0.1", 0)
        raw = await raw_connect(srv)
        try:
            await raw.send({"t": "sub", "i": 1, "c": "prices"})
            await raw.send({"t": "unsub", "c": "prices"})
            assert (await raw.call(2, "echo", {"id": 1}))["t"] == "res"
            gate.set()
            assert await raw.reply(1) == {"t": "res", "i": 1, "d": None}
            (conn,) = srv.connections
            assert conn.topics == frozenset()
            assert srv.adapter.channels == frozenset()  # type: ignore[attr-defined]
        finally:
            await raw.close()


class FlakyAdapter(MemoryAdapter):
    """Fails the first subscribe, then works: a channel must not stay broken."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def subscribe(self, channel: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("adapter down")
        await super().subscribe(channel)


async def test_a_failed_room_subscribe_is_undone_and_retried() -> None:
    errors: list[BaseException] = []
    srv = build_server(adapter=FlakyAdapter(), on_error=lambda e, c: errors.append(e))
    async with srv:
        await srv.listen("127.0.0.1", 0)
        raw = await raw_connect(srv)
        try:
            (conn,) = srv.connections
            room = srv.room("lobby")
            try:
                await room.add(conn)
            except ConnectionError:
                pass
            else:
                raise AssertionError("the first add should fail with the adapter's error")
            assert conn.rooms == frozenset() and room.size == 0
            await room.add(conn)  # the channel is subscribed again, not stuck failed
            assert room.size == 1 and "r:lobby" in srv.adapter.channels  # type: ignore[attr-defined]
            room.broadcast("notice", {"text": "hi"})
            frame, _ = await raw.recv_until(lambda f: f.get("t") == "evt")
            assert frame == {"t": "evt", "e": "notice", "d": {"text": "hi"}}
        finally:
            await raw.close()
