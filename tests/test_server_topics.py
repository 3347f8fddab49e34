"""Topics: subscribe acks, publications, authorization, unsub, and role topics."""

from __future__ import annotations

from typing import Any

import pytest
from contract_app import Alert, Price
from helpers import eventually

from superline_zmq import Conn, SocketError


async def _sub(raw: Any, i: int, topic: str) -> dict[str, Any]:
    await raw.send({"t": "sub", "i": i, "c": topic})
    return await raw.reply(i)


async def _nothing_comes_before_reply(raw: Any, i: int) -> None:
    """A request round trip: asserts no other frame arrived on ``raw`` before its reply."""
    await raw.send({"t": "req", "i": i, "m": "nothing"})
    assert await raw.recv() == {"t": "res", "i": i, "d": None}


async def test_subscribe_ack_then_publish_arrives(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    assert await _sub(raw, 3, "prices") == {"t": "res", "i": 3, "d": None}
    server.publish("prices", Price("ACME", 12.5))
    assert await raw.recv() == {
        "t": "pub",
        "c": "prices",
        "d": {"symbol": "ACME", "price": 12.5},
        "nd": server.node_id,
    }


async def test_publish_with_entry_object_and_dict_payload(server: Any, open_raw: Any) -> None:
    from contract_app import api

    raw = await open_raw(server)
    await _sub(raw, 1, "prices")
    server.publish(api.shared.topics["prices"], {"symbol": "X", "price": 1.0})
    frame = await raw.recv()
    assert frame["c"] == "prices" and frame["d"] == {"symbol": "X", "price": 1.0}


async def test_publish_without_subscribers_is_a_no_op(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    server.publish("prices", Price("ACME", 1.0))
    await _nothing_comes_before_reply(raw, 1)


async def test_unknown_topic_is_not_found(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    assert await _sub(raw, 4, "x") == {"t": "err", "i": 4, "code": "NOT_FOUND", "m": "Unknown topic: x"}


async def test_other_roles_topic_is_not_found(server: Any, open_raw: Any) -> None:
    user = await open_raw(server, role="user")
    assert await _sub(user, 1, "tasks") == {"t": "err", "i": 1, "code": "NOT_FOUND", "m": "Unknown topic: tasks"}
    agent = await open_raw(server, role="agent")
    assert (await _sub(agent, 1, "alerts"))["code"] == "NOT_FOUND"
    assert await _sub(agent, 2, "tasks") == {"t": "res", "i": 2, "d": None}


async def test_authorize_subscribe_false_is_forbidden(make_server: Any, open_raw: Any) -> None:
    asked: list[tuple[str, Any, Any]] = []

    def authorize(topic: str, ctx: Any, conn: Conn) -> bool:
        asked.append((topic, ctx, conn))
        return topic != "secret"

    srv = await make_server(authorize_subscribe=authorize, authenticate=lambda hs: ("user", "CTX"))
    raw = await open_raw(srv)
    assert await _sub(raw, 1, "secret") == {
        "t": "err",
        "i": 1,
        "code": "FORBIDDEN",
        "m": "Subscribe denied: secret",
    }
    assert await _sub(raw, 2, "prices") == {"t": "res", "i": 2, "d": None}
    assert [(t, c) for t, c, _ in asked] == [("secret", "CTX"), ("prices", "CTX")]
    assert all(isinstance(conn, Conn) and conn.role == "user" for _, _, conn in asked)
    # a denied subscription receives nothing
    srv.publish("secret", Price("S", 0.0))
    srv.publish("prices", Price("P", 1.0))
    frame = await raw.recv()
    assert frame["c"] == "prices"
    await _nothing_comes_before_reply(raw, 3)


async def test_async_authorize_subscribe(make_server: Any, make_client: Any) -> None:
    async def authorize(topic: str, ctx: Any, conn: Conn) -> bool:
        return topic == "prices"

    srv = await make_server(authorize_subscribe=authorize)
    client = await make_client(srv)
    await client.subscribe("prices", lambda p: None).ready
    with pytest.raises(SocketError) as info:
        await client.subscribe("secret", lambda p: None).ready
    assert (info.value.code, info.value.message) == ("FORBIDDEN", "Subscribe denied: secret")


async def test_authorize_subscribe_raising(make_server: Any, open_raw: Any) -> None:
    errors: list[BaseException] = []

    def authorize(topic: str, ctx: Any, conn: Conn) -> bool:
        if topic == "secret":
            raise SocketError("PAYMENT_REQUIRED", "upgrade your plan", {"plan": "pro"})
        raise RuntimeError("authorizer exploded")

    srv = await make_server(authorize_subscribe=authorize, on_error=lambda e, c: errors.append(e))
    raw = await open_raw(srv)
    assert await _sub(raw, 1, "secret") == {
        "t": "err",
        "i": 1,
        "code": "PAYMENT_REQUIRED",
        "m": "upgrade your plan",
        "d": {"plan": "pro"},
    }
    assert await _sub(raw, 2, "prices") == {"t": "err", "i": 2, "code": "INTERNAL", "m": "Internal server error"}
    await eventually(lambda: errors)
    assert str(errors[0]) == "authorizer exploded"


async def test_unsub_stops_delivery(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await _sub(raw, 1, "prices")
    server.publish("prices", Price("A", 1.0))
    assert (await raw.recv())["d"] == {"symbol": "A", "price": 1.0}
    await raw.send({"t": "unsub", "c": "prices"})
    await _nothing_comes_before_reply(raw, 2)  # the server has processed the unsub
    server.publish("prices", Price("B", 2.0))
    await _nothing_comes_before_reply(raw, 3)


async def test_repeated_sub_is_acked_again_and_delivers_once(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    assert await _sub(raw, 1, "prices") == {"t": "res", "i": 1, "d": None}
    assert await _sub(raw, 2, "prices") == {"t": "res", "i": 2, "d": None}
    server.publish("prices", Price("A", 1.0))
    assert (await raw.recv())["t"] == "pub"
    await _nothing_comes_before_reply(raw, 3)


async def test_role_topics_via_for_role(server: Any, open_raw: Any) -> None:
    user = await open_raw(server, role="user")
    agent = await open_raw(server, role="agent")
    await _sub(user, 1, "alerts")
    await _sub(agent, 1, "tasks")
    server.for_role("user").publish("alerts", Alert(3))
    assert await user.recv() == {"t": "pub", "c": "alerts", "d": {"level": 3}, "nd": server.node_id}
    server.for_role("agent").publish("tasks", {"ticket": "T-9"})
    assert (await agent.recv())["d"] == {"ticket": "T-9"}
    await _nothing_comes_before_reply(user, 2)  # the agent's publication did not reach the user


async def test_for_role_publish_of_a_shared_topic_reaches_every_role(server: Any, open_raw: Any) -> None:
    user = await open_raw(server, role="user")
    agent = await open_raw(server, role="agent")
    await _sub(user, 1, "prices")
    await _sub(agent, 1, "prices")
    server.for_role("user").publish("prices", Price("Z", 9.0))
    assert (await user.recv())["c"] == "prices"
    assert (await agent.recv())["c"] == "prices"


def test_publish_scoping_errors(server: Any) -> None:
    with pytest.raises(ValueError, match="not a shared topic"):
        server.publish("alerts", Alert(1))
    with pytest.raises(ValueError, match="is not a topic of role 'agent'"):
        server.for_role("agent").publish("alerts", Alert(1))
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        server.for_role("admin")


async def test_our_client_receives_typed_publications(server: Any, make_client: Any) -> None:
    client = await make_client(server)
    got: list[Any] = []
    sub = client.subscribe("prices", got.append)
    await sub.ready
    server.publish("prices", {"symbol": "ACME", "price": 3.5})
    await eventually(lambda: got)
    assert got == [Price("ACME", 3.5)]
    alerts: list[Any] = []
    await client.subscribe("alerts", alerts.append).ready
    server.for_role("user").publish("alerts", Alert(2))
    await eventually(lambda: alerts)
    assert alerts == [Alert(2)]


async def test_disconnect_removes_subscriptions(server: Any, open_raw: Any) -> None:
    raw = await open_raw(server)
    await _sub(raw, 1, "prices")
    await raw.close()
    await eventually(lambda: not server.connections)
    server.publish("prices", Price("A", 1.0))  # nobody left: no error, nothing counted as sent
    assert server.statistics()["dropped_closed"] == 0
