"""Middleware: order, what it sees, short-circuiting, and misbehaving middleware."""

from __future__ import annotations

from typing import Any

import pytest
from contract_app import Greet, Greeting
from helpers import eventually

from superline_zmq import Auth, Conn, MiddlewareInfo, SocketError


def _recorder(tag: str, log: list[tuple[Any, ...]]) -> Any:
    async def mw(ctx: Any, info: MiddlewareInfo, next: Any) -> Any:
        log.append((tag, "before", info.kind, info.name, info.conn, ctx))
        result = await next()
        log.append((tag, "after", info.kind, info.name))
        return result

    return mw


async def test_middleware_runs_in_order_around_the_handler(make_server: Any, make_client: Any) -> None:
    log: list[tuple[Any, ...]] = []
    conns: list[Conn] = []
    srv = await make_server(
        use=[_recorder("outer", log), _recorder("inner", log)],
        authenticate=lambda hs: Auth("user", {"uid": 1}),
        on_connection=conns.append,
    )
    client = await make_client(srv)
    assert await client.call("greet", Greet("ada")) == Greeting("hello ada")
    assert [(e[0], e[1]) for e in log] == [
        ("outer", "before"),
        ("inner", "before"),
        ("inner", "after"),
        ("outer", "after"),
    ]
    await eventually(lambda: conns)
    for entry in log:
        assert entry[2:4] == ("request", "greet")
    for entry in log[:2]:
        assert entry[4] is conns[0]
        assert entry[5] == {"uid": 1}
    assert srv.app.calls == [("greet", Greet("ada"))]


async def test_middleware_runs_before_validation(make_server: Any, open_raw: Any) -> None:
    log: list[tuple[Any, ...]] = []
    srv = await make_server(use=[_recorder("only", log)])
    raw = await open_raw(srv)
    frame = await raw.call(1, "greet", {"name": 5})
    assert frame["code"] == "VALIDATION"
    assert [(e[0], e[1]) for e in log] == [("only", "before")]


async def test_middleware_not_run_for_unknown_request(make_server: Any, open_raw: Any) -> None:
    log: list[tuple[Any, ...]] = []
    srv = await make_server(use=[_recorder("only", log)])
    raw = await open_raw(srv)
    assert (await raw.call(1, "assign", {"ticket": "x"}))["code"] == "NOT_FOUND"
    assert (await raw.call(2, "nope"))["code"] == "NOT_FOUND"
    assert log == []


async def test_middleware_short_circuits_with_socket_error(make_server: Any, make_client: Any) -> None:
    after: list[str] = []

    async def deny(ctx: Any, info: MiddlewareInfo, next: Any) -> Any:
        if info.name == "greet":
            raise SocketError("RATE_LIMITED", "slow down", {"retry_in": 5})
        return await next()

    async def inner(ctx: Any, info: MiddlewareInfo, next: Any) -> Any:
        after.append(info.name)
        return await next()

    srv = await make_server(use=[deny, inner])
    client = await make_client(srv)
    with pytest.raises(SocketError) as info:
        await client.call("greet", Greet("x"))
    assert (info.value.code, info.value.message, info.value.data) == ("RATE_LIMITED", "slow down", {"retry_in": 5})
    assert srv.app.calls == []  # the handler never ran
    assert after == []  # nor the later middleware
    assert await client.call("nothing") is None  # other requests pass
    assert after == ["nothing"]


async def test_middleware_plain_exception_is_internal(make_server: Any, make_client: Any) -> None:
    errors: list[BaseException] = []

    async def broken(ctx: Any, info: MiddlewareInfo, next: Any) -> Any:
        raise KeyError("middleware secret")

    srv = await make_server(use=[broken], on_error=lambda exc, conn: errors.append(exc))
    client = await make_client(srv)
    with pytest.raises(SocketError) as info:
        await client.call("greet", Greet("x"))
    assert info.value.code == "INTERNAL"
    assert info.value.message == "Internal server error"
    assert "middleware secret" not in str(info.value)
    await eventually(lambda: errors)
    assert isinstance(errors[0], KeyError)
    assert srv.app.calls == []


async def test_middleware_sees_subscribes(make_server: Any, make_client: Any) -> None:
    log: list[tuple[Any, ...]] = []
    conns: list[Conn] = []
    srv = await make_server(use=[_recorder("mw", log)], on_connection=conns.append)
    client = await make_client(srv)
    sub = client.subscribe("prices", lambda p: None)
    await sub.ready
    assert [(e[1], e[2], e[3]) for e in log] == [("before", "subscribe", "prices"), ("after", "subscribe", "prices")]
    await eventually(lambda: conns)
    assert log[0][4] is conns[0]


async def test_middleware_can_deny_a_subscribe(make_server: Any, make_client: Any) -> None:
    async def deny_subs(ctx: Any, info: MiddlewareInfo, next: Any) -> Any:
        if info.kind == "subscribe":
            raise SocketError("FORBIDDEN", f"no {info.name}")
        return await next()

    srv = await make_server(use=[deny_subs])
    client = await make_client(srv)
    sub = client.subscribe("prices", lambda p: None)
    with pytest.raises(SocketError) as info:
        await sub.ready
    assert (info.value.code, info.value.message) == ("FORBIDDEN", "no prices")


async def test_middleware_returning_without_next_is_internal(make_server: Any, make_client: Any) -> None:
    errors: list[tuple[BaseException, Any]] = []

    async def forgetful(ctx: Any, info: MiddlewareInfo, next: Any) -> Any:
        return "not the handler's result"

    srv = await make_server(use=[forgetful], on_error=lambda exc, conn: errors.append((exc, conn)))
    client = await make_client(srv)
    with pytest.raises(SocketError) as info:
        await client.call("greet", Greet("x"))
    assert info.value.code == "INTERNAL"
    assert srv.app.calls == []
    await eventually(lambda: errors)
    exc, conn = errors[0]
    assert "without calling next()" in str(exc)
    assert isinstance(conn, Conn)
    # a subscribe through the same middleware fails the same way
    sub = client.subscribe("prices", lambda p: None)
    with pytest.raises(SocketError) as info2:
        await sub.ready
    assert info2.value.code == "INTERNAL"
    await eventually(lambda: len(errors) == 2)


async def test_middleware_can_transform_the_result(make_server: Any, make_client: Any) -> None:
    async def shout(ctx: Any, info: MiddlewareInfo, next: Any) -> Any:
        result = await next()
        if isinstance(result, Greeting):
            return Greeting(result.text.upper())
        return result

    srv = await make_server(use=[shout])
    client = await make_client(srv)
    assert await client.call("greet", Greet("ada")) == Greeting("HELLO ADA")
