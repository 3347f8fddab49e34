"""The fault-injecting TCP proxy of the test kit: forwarding, cut, blackhole, delay, heal, per peer.

An echo server on 127.0.0.1 stands behind the proxy; clients are plain asyncio streams.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from helpers import eventually

from superline_zmq.testing.faults import FaultProxy, client_pid

TIMEOUT = 5.0


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, int]]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield "127.0.0.1", int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


@pytest.fixture
async def proxy(echo: tuple[str, int]) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(echo) as p:
        yield p


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def ask(self, data: bytes, timeout: float = TIMEOUT) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        return await asyncio.wait_for(self.reader.readexactly(len(data)), timeout)

    async def closed(self) -> bool:
        """Whether the proxy has closed (or reset) this connection (closed on our side too, then)."""
        try:
            gone = await asyncio.wait_for(self.reader.read(1), TIMEOUT) == b""
        except OSError:
            gone = True
        if gone:
            self.close()
        return gone

    def close(self) -> None:
        self.writer.transport.abort()


async def open_client(p: FaultProxy) -> Client:
    return Client(*await asyncio.open_connection(p.host, p.port))


async def test_it_forwards_both_ways_and_counts(proxy: FaultProxy) -> None:
    c = await open_client(proxy)
    assert await c.ask(b"hello") == b"hello"
    await eventually(lambda: proxy.active == 1)
    stats = proxy.statistics()
    assert stats["accepted"] == 1 and stats["bytes_in"] == 5 and stats["bytes_out"] == 5
    c.close()
    await eventually(lambda: proxy.active == 0)
    assert proxy.statistics()["closed"] == 1
    assert proxy.endpoint == f"tcp://127.0.0.1:{proxy.port}"


async def test_a_cut_resets_connections_and_refuses_new_ones_until_healed(proxy: FaultProxy) -> None:
    c = await open_client(proxy)
    assert await c.ask(b"x") == b"x"
    proxy.cut()
    assert await c.closed()
    refused = await open_client(proxy)
    assert await refused.closed()
    await eventually(lambda: proxy.active == 0)
    assert proxy.statistics()["refused"] == 1
    proxy.heal()
    assert not proxy.faulty()
    again = await open_client(proxy)
    assert await again.ask(b"back") == b"back"
    again.close()
    c.close()
    refused.close()


async def test_a_blackhole_drops_one_direction_and_keeps_the_connection(proxy: FaultProxy) -> None:
    c = await open_client(proxy)
    proxy.blackhole("out")  # the echo comes back no more
    c.writer.write(b"lost")
    await c.writer.drain()
    await eventually(lambda: proxy.statistics()["dropped_out"] == 4)
    assert proxy.statistics()["bytes_in"] == 4  # it went in
    proxy.heal("out")
    assert await c.ask(b"ok") == b"ok"
    proxy.blackhole("in")
    c.writer.write(b"gone")
    await c.writer.drain()
    await eventually(lambda: proxy.statistics()["dropped_in"] == 4)
    proxy.heal()
    assert await c.ask(b"ok2") == b"ok2"
    assert proxy.active == 1
    c.close()


async def test_a_delay_holds_bytes_back_in_order(proxy: FaultProxy) -> None:
    c = await open_client(proxy)
    proxy.delay(0.2, "in")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    c.writer.write(b"a")
    c.writer.write(b"b")
    assert await asyncio.wait_for(c.reader.readexactly(2), TIMEOUT) == b"ab"
    assert loop.time() - t0 >= 0.2
    proxy.heal("in")
    t1 = loop.time()
    assert await c.ask(b"c") == b"c"
    assert loop.time() - t1 < 0.2
    with pytest.raises(ValueError):
        proxy.delay(-1.0)
    c.close()


async def test_faults_limited_to_some_peers(echo: tuple[str, int]) -> None:
    # identify: the client's port parity stands in for "which node opened it"
    async with FaultProxy(echo, identify=lambda peer: peer[1] % 2) as p:
        clients = [await open_client(p) for _ in range(6)]
        ports = [c.writer.get_extra_info("sockname")[1] for c in clients]
        p.cut(peers=[0])
        for c, port in zip(clients, ports, strict=True):
            if port % 2 == 0:
                assert await c.closed()
            else:
                assert await c.ask(b"y") == b"y"
        p.heal(peers=[0])
        fresh = await open_client(p)
        assert await fresh.ask(b"z") == b"z"
        for c in [*clients, fresh]:
            c.close()
        await eventually(lambda: p.active == 0)


async def test_a_target_given_later_and_close_leaves_nothing_open(echo: tuple[str, int]) -> None:
    p = await FaultProxy().start()
    c = await open_client(p)
    c.writer.write(b"early")
    await c.writer.drain()
    await asyncio.sleep(0)
    p.retarget(*echo)  # the node behind it is up now
    assert await asyncio.wait_for(c.reader.readexactly(5), TIMEOUT) == b"early"
    await p.close()
    assert await c.closed()
    assert p.active == 0


async def test_client_pid_names_the_process_holding_the_client_end(proxy: FaultProxy) -> None:
    seen: list[int | None] = []
    proxy.identify = lambda peer: seen.append(client_pid(peer, ("127.0.0.1", proxy.port), [os.getpid()])) or None
    c = await open_client(proxy)
    assert await c.ask(b"who") == b"who"
    assert seen == [os.getpid()]
    c.close()
