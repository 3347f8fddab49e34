"""Client → server requests: typed round trips, errors, validation and role scoping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from contract_app import BOOM_DETAIL, Greet, Greeting, Item, Whoami, api, build_server
from helpers import eventually

from superline_zmq import Conn, ContractError, SocketError, create_socket_server


async def test_round_trip_returns_the_typed_output(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    out = await client.call("greet", Greet("ada"))
    assert type(out) is Greeting
    assert out == Greeting("hello ada")
    # the entry object works as the name too
    entry = api.shared.requests["greet"]
    assert await client.call(entry, Greet("bob")) == Greeting("hello bob")
    assert server.app.calls[-1] == ("greet", Greet("bob"))


async def test_dict_input_is_accepted_and_validated(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    out = await client.call("echo", {"id": 3, "tags": ["a", "b"]})
    assert out == Item(3, ["a", "b"])
    # the handler received the typed Struct, not a dict
    name, received = server.app.calls[-1]
    assert name == "echo" and type(received) is Item


async def test_none_result_round_trip(server: Any, make_client: Any, open_raw: Any) -> None:
    client = await make_client(server)
    assert await client.call("nothing") is None
    raw = await open_raw(server)
    assert await raw.call(1, "nothing") == {"t": "res", "i": 1, "d": None}


async def test_missing_d_means_null_input(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await raw.send({"t": "req", "i": 4, "m": "whoami"})
    assert await raw.reply(4) == {"t": "res", "i": 4, "d": {"role": "user", "ctx": None}}


async def test_typed_error_reaches_the_client(server: Any, make_client: Any, open_raw: Any) -> None:
    client = await make_client(server)
    with pytest.raises(SocketError) as info:
        await client.call("fail")
    assert info.value.code == "CONFLICT"
    assert info.value.message == "room is taken"
    assert info.value.data == {"room": "lobby", "n": 3}
    raw = await open_raw(server)
    assert await raw.call(1, "fail") == {
        "t": "err",
        "i": 1,
        "code": "CONFLICT",
        "m": "room is taken",
        "d": {"room": "lobby", "n": 3},
    }


async def test_internal_error_hides_details_and_reaches_on_error(
    make_server: Any, make_client: Any, open_raw: Any
) -> None:
    seen: list[tuple[BaseException, Any]] = []
    srv = await make_server(on_error=lambda exc, conn: seen.append((exc, conn)))
    client = await make_client(srv)
    with pytest.raises(SocketError) as info:
        await client.call("boom")
    assert info.value.code == "INTERNAL"
    assert info.value.message == "Internal server error"
    assert BOOM_DETAIL not in str(info.value) and "kaboom" not in repr(info.value)
    assert info.value.data is None
    await eventually(lambda: len(seen) == 1)
    exc, conn = seen[0]
    assert type(exc) is RuntimeError and str(exc) == BOOM_DETAIL
    assert isinstance(conn, Conn) and conn.role == "user"
    assert srv.statistics()["internal_errors"] == 1

    raw = await open_raw(srv)
    frame = await raw.call(9, "boom")
    assert frame == {"t": "err", "i": 9, "code": "INTERNAL", "m": "Internal server error"}
    # the connection survives an INTERNAL error
    assert (await raw.call(10, "nothing"))["t"] == "res"


async def test_async_on_error_is_awaited(make_server: Any, make_client: Any) -> None:
    seen: list[BaseException] = []

    async def on_error(exc: BaseException, conn: Any) -> None:
        await asyncio.sleep(0)
        seen.append(exc)

    srv = await make_server(on_error=on_error)
    client = await make_client(srv)
    with pytest.raises(SocketError, match="INTERNAL"):
        await client.call("boom")
    await eventually(lambda: len(seen) == 1)
    assert str(seen[0]) == BOOM_DETAIL


async def test_validation_error_for_a_raw_frame(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    frame = await raw.call(5, "greet", {"name": 42})
    assert frame["t"] == "err" and frame["i"] == 5
    assert frame["code"] == "VALIDATION"
    assert "greet" in frame["m"]
    assert "$.name" in frame["m"]
    assert frame["d"] == [{"message": "Expected `str`, got `int`", "path": ["name"]}]
    # the handler never ran
    assert not any(name == "greet" for name, _ in server.app.calls)


async def test_validation_message_contains_nested_path(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    frame = await raw.call(6, "echo", {"id": 1, "tags": ["ok", 7]})
    assert frame["code"] == "VALIDATION"
    assert "$.tags[1]" in frame["m"]
    assert frame["d"][0]["path"] == ["tags", 1]
    missing = await raw.call(7, "echo", {"tags": []})
    assert missing["code"] == "VALIDATION"
    assert "id" in missing["m"]


async def test_validation_of_missing_input_for_a_struct(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await raw.send({"t": "req", "i": 8, "m": "greet"})
    frame = await raw.reply(8)
    assert frame["code"] == "VALIDATION"
    assert "null" in frame["m"]


async def test_client_side_validation_of_dict_input(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    with pytest.raises(SocketError) as info:
        await client.call("greet", {"name": 1})
    assert info.value.code == "VALIDATION"
    assert "$.name" in info.value.message
    assert server.app.calls == []


async def test_cross_role_request_is_not_found(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server, role="user")
    frame = await raw.call(3, "assign", {"ticket": "T-1"})
    assert frame == {"t": "err", "i": 3, "code": "NOT_FOUND", "m": "Unknown message: assign"}
    assert "FORBIDDEN" not in str(frame)
    # the same request works for the role that has it
    agent = await open_raw(server, role="agent")
    assert await agent.call(3, "assign", {"ticket": "T-1"}) == {"t": "res", "i": 3, "d": {"ok": True}}
    # and the user-only request is NOT_FOUND for the agent
    frame = await agent.call(4, "whoami")
    assert frame["code"] == "NOT_FOUND" and frame["m"] == "Unknown message: whoami"


async def test_cross_role_not_found_runs_before_validation(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server, role="user")
    frame = await raw.call(3, "assign", {"bogus": True})  # invalid input too: NOT_FOUND wins
    assert frame["code"] == "NOT_FOUND"


async def test_unknown_method_is_not_found(server: Any, open_raw: Any, make_client: Any) -> None:
    raw = await open_raw(server)
    assert await raw.call(11, "nope") == {"t": "err", "i": 11, "code": "NOT_FOUND", "m": "Unknown message: nope"}
    client = await make_client(server)
    with pytest.raises(SocketError) as info:
        await client.call("nope")
    assert info.value.code == "NOT_FOUND"


async def test_declared_but_unimplemented_request_is_not_found(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    frame = await raw.call(12, "unimplemented")
    assert frame == {"t": "err", "i": 12, "code": "NOT_FOUND", "m": "Unknown message: unimplemented"}


async def test_requests_run_concurrently_and_reply_out_of_order(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await raw.send({"t": "req", "i": 1, "m": "block"})
    await eventually(lambda: server.app.blocked == 1)
    # a later request is answered while the first is still blocked
    assert await raw.call(2, "nothing") == {"t": "res", "i": 2, "d": None}
    server.app.release.set()
    assert await raw.reply(1) == {"t": "res", "i": 1, "d": None}


async def test_ctx_and_conn_reach_the_handler(make_server: Any, make_client: Any) -> None:
    def authenticate(hs: Any) -> tuple[str, Any]:
        return hs.query["role"], {"user": "alice"}

    srv = await make_server(authenticate=authenticate)
    client = await make_client(srv)
    assert await client.call("whoami") == Whoami("user", {"user": "alice"})


async def test_role_handler_overrides_shared_handler(make_server: Any, make_client: Any) -> None:
    srv = await make_server()

    async def agent_greet(inp: Greet, ctx: Any, conn: Conn) -> Greeting:
        return Greeting(f"agent hi {inp.name}")

    srv.implement({"agent": {"greet": agent_greet}})
    user = await make_client(srv, "user")
    agent = await make_client(srv, "agent")
    assert await user.call("greet", Greet("x")) == Greeting("hello x")
    assert await agent.call("greet", Greet("x")) == Greeting("agent hi x")


def test_implement_rejects_unknown_block_and_name() -> None:
    srv = create_socket_server(api)

    async def h(inp: Any, ctx: Any, conn: Any) -> None:
        return None

    with pytest.raises(ContractError, match="unknown block 'admin'"):
        srv.implement({"admin": {"greet": h}})
    with pytest.raises(ContractError, match=r"user\.assign is not a client_to_server request"):
        srv.implement({"user": {"assign": h}})
    with pytest.raises(ContractError, match=r"shared\.whoami"):
        srv.implement({"shared": {"whoami": h}})
    with pytest.raises(ContractError, match="must be a function"):
        srv.implement({"shared": {"greet": 42}})  # type: ignore[dict-item]


async def test_sync_handler_is_accepted(make_server: Any, make_client: Any) -> None:
    srv = await make_server()

    def agent_greet(inp: Greet, ctx: Any, conn: Conn) -> Greeting:
        return Greeting(f"sync {inp.name}")

    srv.implement({"agent": {"greet": agent_greet}})
    agent = await make_client(srv, "agent")
    assert await agent.call("greet", Greet("x")) == Greeting("sync x")


def test_build_server_is_unstarted() -> None:
    srv = build_server()
    with pytest.raises(RuntimeError, match="not listening"):
        _ = srv.port
