"""Per-connection state: ``conn.data`` is the app's, per connection, for the connection's life."""

from __future__ import annotations

from helpers import eventually
from presence_app import UserState, api, build_server
from presence_cluster import PresenceCluster

from superline_zmq import Conn, connect, create_socket_server


async def test_data_is_per_connection_and_survives_between_requests(pcluster: PresenceCluster) -> None:
    a = await pcluster.user(pcluster.nodes - 1, "a")
    b = await pcluster.user(pcluster.nodes - 1, "a")  # the same user, another device
    assert [await a.client.call("ack") for _ in range(3)] == [1, 2, 3]
    assert await b.client.call("ack") == 1  # its own state, not the user's


async def test_data_starts_as_none_and_is_never_serialized() -> None:
    seen: list[object] = []

    def on_connection(conn: Conn) -> None:
        seen.append(conn.data)
        conn.data = UserState(acks=41)

    srv = create_socket_server(api, on_connection=on_connection, identify=lambda c: "u")
    srv.implement({"user": {"ack": lambda _, ctx, conn: conn.data.acks + 1}})
    await srv.listen("127.0.0.1", 0)
    try:
        client = await connect(api, srv.url, role="user", reconnect=False)
        assert await client.call("ack") == 42
        assert seen == [None]
        (desc,) = await srv.cluster.by_user("u")
        assert "acks" not in desc.to_dict() and desc.extra == {}
        await client.close()
    finally:
        await srv.close()


async def test_a_role_without_a_data_schema_still_gets_a_data_slot() -> None:
    srv = build_server()
    await srv.listen("127.0.0.1", 0)
    try:
        client = await connect(api, srv.url, role="admin", reconnect=False)
        await eventually(lambda: srv.local.connections)
        conn = srv.local.connections[0]
        assert conn.data is None
        conn.data = {"anything": 1}  # the app's own business
        assert conn.data == {"anything": 1}
        await client.close()
    finally:
        await srv.close()
