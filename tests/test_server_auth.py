"""Authentication before the upgrade: HTTP 401 refusals, the handshake view, Auth results."""

from __future__ import annotations

from typing import Any

import pytest
from contract_app import Whoami
from helpers import DEFAULT_TIMEOUT, eventually, raw_connect, url_for
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from superline_zmq import Auth, Handshake, SocketError


async def _refused(url: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url, open_timeout=DEFAULT_TIMEOUT, **kwargs):
            pass
    return info.value.response.status_code


async def test_authenticate_raising_is_http_401_and_on_connection_never_runs(make_server: Any) -> None:
    connected: list[Any] = []

    def authenticate(hs: Handshake) -> Auth:
        raise PermissionError("bad token")

    srv = await make_server(authenticate=authenticate, on_connection=connected.append)
    assert await _refused(url_for(srv, "user")) == 401
    assert srv.statistics()["connections_rejected"] == 1
    assert srv.statistics()["connections_accepted"] == 0
    assert connected == []
    assert srv.connections == []


async def test_authenticate_raising_socket_error_is_http_401(make_server: Any) -> None:
    def authenticate(hs: Handshake) -> Auth:
        raise SocketError("FORBIDDEN", "nope")

    srv = await make_server(authenticate=authenticate)
    assert await _refused(url_for(srv, "user")) == 401


async def test_role_not_in_contract_is_401(make_server: Any) -> None:
    srv = await make_server(authenticate=lambda hs: Auth("admin"))
    assert await _refused(url_for(srv, None)) == 401
    assert await _refused(url_for(srv, "admin")) == 401


async def test_claimed_role_must_match_granted_role(make_server: Any) -> None:
    connected: list[Any] = []
    srv = await make_server(authenticate=lambda hs: Auth("agent"), on_connection=connected.append)
    assert await _refused(url_for(srv, "user")) == 401
    assert connected == []
    # the role it grants is accepted
    raw = await raw_connect(srv, "agent")
    await eventually(lambda: len(connected) == 1)
    assert connected[0].role == "agent"
    await raw.close()


async def test_without_authenticate_a_role_must_be_claimed(make_server: Any) -> None:
    srv = await make_server()
    assert await _refused(url_for(srv, None)) == 401
    assert await _refused(url_for(srv, "nobody")) == 401
    raw = await raw_connect(srv, "user")
    await raw.close()


async def test_malformed_authenticate_result_is_401(make_server: Any) -> None:
    srv = await make_server(authenticate=lambda hs: "user")
    assert await _refused(url_for(srv, "user")) == 401


async def test_authenticate_sees_headers_query_peer_and_transport(make_server: Any) -> None:
    seen: list[Handshake] = []

    def authenticate(hs: Handshake) -> Auth:
        seen.append(hs)
        return Auth("user")

    srv = await make_server(authenticate=authenticate)
    url = f"{srv.url}chat?a=1&token=t0&a=2&role=user&empty="
    async with ws_connect(url, additional_headers={"X-Api-Token": "secret-1"}) as ws:
        local = ws.local_address
        assert len(seen) == 1
        hs = seen[0]
        assert hs.transport == "websocket"
        # headers are case-insensitive
        assert hs.headers["x-api-token"] == "secret-1"
        assert hs.headers["X-API-TOKEN"] == "secret-1"
        assert hs.headers["X-Api-Token"] == "secret-1"
        assert "x-api-token" in hs.headers
        assert "x-missing" not in hs.headers
        assert hs.headers.get("X-Missing") is None
        # the last value of a repeated query key wins
        assert hs.query["a"] == "2"
        assert hs.query["token"] == "t0"
        assert hs.query["role"] == "user"
        assert hs.query["empty"] == ""
        assert hs.peer == f"{local[0]}:{local[1]}"
        assert hs.path == "/chat"


async def test_async_authenticate(make_server: Any, make_client: Any) -> None:
    async def authenticate(hs: Handshake) -> Auth:
        if hs.query.get("token") != "good":
            raise PermissionError("bad token")
        return Auth("user", {"token": hs.query["token"]})

    srv = await make_server(authenticate=authenticate)
    assert await _refused(url_for(srv, "user", token="bad")) == 401
    client = await make_client(srv, params={"token": "good"})
    assert await client.call("whoami") == Whoami("user", {"token": "good"})


async def test_sync_authenticate_with_plain_tuple(make_server: Any, make_client: Any) -> None:
    srv = await make_server(authenticate=lambda hs: ("user", ["ctx", 1]))
    client = await make_client(srv)
    assert await client.call("whoami") == Whoami("user", ["ctx", 1])


async def test_auth_result_ctx_reaches_handlers_and_conn(make_server: Any, make_client: Any) -> None:
    conns: list[Any] = []
    srv = await make_server(authenticate=lambda hs: Auth("user", {"uid": 7}), on_connection=conns.append)
    client = await make_client(srv)
    assert await client.call("whoami") == Whoami("user", {"uid": 7})
    await eventually(lambda: conns)
    assert conns[0].ctx == {"uid": 7}
    assert conns[0].role == "user"


async def test_auth_default_ctx_is_none(make_server: Any, make_client: Any) -> None:
    srv = await make_server(authenticate=lambda hs: Auth("user"))
    client = await make_client(srv)
    assert await client.call("whoami") == Whoami("user", None)


async def test_client_connect_refused_is_unauthorized(make_server: Any, make_client: Any) -> None:
    def authenticate(hs: Handshake) -> Auth:
        raise PermissionError("no")

    srv = await make_server(authenticate=authenticate)
    with pytest.raises(SocketError) as info:
        await make_client(srv)
    assert info.value.code == "UNAUTHORIZED"
    assert "401" in info.value.message


async def test_path_option_refuses_other_paths(make_server: Any) -> None:
    srv = await make_server(path="/ws")
    assert await _refused(f"{srv.url}other?role=user") == 404
    async with ws_connect(f"{srv.url}ws?role=user") as ws:
        assert await ws.recv() == '{"t":"env","d":null}'
