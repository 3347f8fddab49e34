"""Server → client requests (``conn.request``) answered by ``client.implement``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from contract_app import Answer, Confirm, api
from helpers import eventually

from superline_zmq import Conn, SocketError


async def _conn_of(srv: Any, role: str = "user") -> Conn:
    conns = await eventually(lambda: [c for c in srv.connections if c.role == role])
    assert len(conns) == 1, conns
    return conns[0]


async def test_request_answered_by_client_implement(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    asked: list[Any] = []

    async def confirm(inp: Confirm) -> Answer:
        asked.append(inp)
        return Answer(inp.q == "ready?")

    client.implement({"confirm": confirm})
    conn = await _conn_of(server)
    out = await conn.request("confirm", Confirm("ready?"), timeout=5)
    assert type(out) is Answer and out == Answer(True)
    assert asked == [Confirm("ready?")]  # the client handler got the typed input
    # a dict input and the entry object as the name work too
    out = await conn.request(api.shared.server_requests["confirm"], {"q": "no"}, timeout=5)
    assert out == Answer(False)


async def test_sync_client_handler_and_builtin_schema(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    client.implement({"poll": lambda inp: 42})
    conn = await _conn_of(server)
    assert await conn.request("poll", None, timeout=5) == 42


async def test_client_socket_error_reaches_the_server(server: Any, make_client: Any) -> None:
    client = await make_client(server)

    async def confirm(inp: Confirm) -> Answer:
        raise SocketError("DECLINED", "user said no", {"why": "busy"})

    client.implement({"confirm": confirm})
    conn = await _conn_of(server)
    with pytest.raises(SocketError) as info:
        await conn.request("confirm", Confirm("?"), timeout=5)
    assert (info.value.code, info.value.message, info.value.data) == ("DECLINED", "user said no", {"why": "busy"})


async def test_client_plain_exception_is_internal(server: Any, make_client: Any) -> None:
    reported: list[BaseException] = []
    client = await make_client(server, on_error=reported.append)

    def confirm(inp: Confirm) -> Answer:
        raise RuntimeError("client secret")

    client.implement({"confirm": confirm})
    conn = await _conn_of(server)
    with pytest.raises(SocketError) as info:
        await conn.request("confirm", Confirm("?"), timeout=5)
    assert info.value.code == "INTERNAL"
    assert info.value.message == "Internal client error"
    assert "client secret" not in str(info.value)
    assert [str(e) for e in reported] == ["client secret"]


async def test_unimplemented_name_is_not_found(server: Any, make_client: Any) -> None:
    await make_client(server)  # implements nothing
    conn = await _conn_of(server)
    with pytest.raises(SocketError) as info:
        await conn.request("confirm", Confirm("?"), timeout=5)
    assert info.value.code == "NOT_FOUND"
    assert info.value.message == "No handler for confirm"


async def test_unknown_or_cross_role_server_request_is_a_value_error(server: Any, make_client: Any) -> None:
    await make_client(server, "agent")
    conn = await _conn_of(server, "agent")
    with pytest.raises(ValueError, match="'poll' is not in role 'agent'"):
        await conn.request("poll", None, timeout=1)


def test_client_implement_rejects_unknown_names() -> None:
    from superline_zmq import Client

    client = Client(api, "ws://127.0.0.1:1/", role="agent")
    with pytest.raises(ValueError, match="'poll' is not a server request of role 'agent'"):
        client.implement({"poll": lambda inp: 1})


async def test_timeout(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    never = asyncio.Event()

    async def confirm(inp: Confirm) -> Answer:
        await never.wait()
        return Answer(True)

    client.implement({"confirm": confirm})
    conn = await _conn_of(server)
    with pytest.raises(SocketError) as info:
        await conn.request("confirm", Confirm("?"), timeout=0.1)
    assert info.value.code == "TIMEOUT"
    assert info.value.message == "Request 'confirm' timed out"
    assert server.statistics()["pending_requests"] == 0
    # a late answer is ignored and counted
    never.set()
    await eventually(lambda: server.statistics()["late_replies"] == 1)


async def test_answer_failing_output_schema_is_validation(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    client.implement({"confirm": lambda inp: {"ok": "definitely"}})
    conn = await _conn_of(server)
    with pytest.raises(SocketError) as info:
        await conn.request("confirm", Confirm("?"), timeout=5)
    assert info.value.code == "VALIDATION"
    assert "$.ok" in info.value.message
    assert info.value.data == [{"message": "Expected `bool`, got `str`", "path": ["ok"]}]


async def test_invalid_input_is_rejected_by_the_client(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    ran: list[Any] = []
    client.implement({"confirm": lambda inp: ran.append(inp) or Answer(True)})
    conn = await _conn_of(server)
    with pytest.raises(SocketError) as info:
        await conn.request("confirm", {"q": 5}, timeout=5)
    assert info.value.code == "VALIDATION"
    assert ran == []


async def test_connection_closing_while_pending_is_disconnected(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    asked = asyncio.Event()

    async def confirm(inp: Confirm) -> Answer:
        asked.set()
        await asyncio.Event().wait()  # never answers
        return Answer(True)

    client.implement({"confirm": confirm})
    conn = await _conn_of(server)
    pending = asyncio.ensure_future(conn.request("confirm", Confirm("?"), timeout=10))
    await asyncio.wait_for(asked.wait(), 5)
    await client.close()
    with pytest.raises(SocketError) as info:
        await asyncio.wait_for(pending, 5)
    assert info.value.code == "DISCONNECTED"
    assert server.statistics()["pending_requests"] == 0


async def test_request_on_closed_connection_is_disconnected(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    conn = await _conn_of(server)
    await client.close()
    await eventually(lambda: not server.connections)
    with pytest.raises(SocketError) as info:
        await conn.request("confirm", Confirm("?"), timeout=5)
    assert info.value.code == "DISCONNECTED"


async def test_answer_from_another_connection_is_ignored(server: Any, make_client: Any, open_raw: Any) -> None:
    client = await make_client(server)
    target = await _conn_of(server)
    release = asyncio.Event()

    async def confirm(inp: Confirm) -> Answer:
        await release.wait()
        return Answer(True)

    client.implement({"confirm": confirm})
    intruder = await open_raw(server)
    pending = asyncio.ensure_future(target.request("confirm", Confirm("?"), timeout=5))
    await eventually(lambda: server.statistics()["pending_requests"] == 1)
    (i,) = [entry.id for entry in server._core.table]
    await intruder.send({"t": "sres", "i": i, "d": {"ok": False}})
    assert await intruder.call(1, "nothing") == {"t": "res", "i": 1, "d": None}  # sres processed
    assert not pending.done()
    assert server.statistics()["late_replies"] == 1
    release.set()
    assert await asyncio.wait_for(pending, 5) == Answer(True)
