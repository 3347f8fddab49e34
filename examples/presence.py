"""Who is online, where, and how to reach them: introspection and targeted sends on two nodes.

Two servers share one MemoryBus, so they form a two-node cluster in this process. Alice
connects twice (a laptop on node A, a phone on node B) and Bob once, on node B. Node A
then:

- reads the cluster through ``srv.cluster`` (count, by_user, room, topology) and
  ``srv.is_online``;
- sends one notice to every device of Alice with ``srv.to_user``;
- asks Bob's connection a typed question with ``srv.to_conn(id).request``, answered by
  Bob's client through node B;
- kicks Alice's phone with ``srv.to_conn(id).close()``.

Run it with ``python3 examples/presence.py``. It stays on 127.0.0.1 and exits by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from superline_zmq import (
    Auth,
    Client,
    Conn,
    Handshake,
    SocketServer,
    connect,
    create_socket_server,
    define_contract,
    event,
    server_request,
)
from superline_zmq.adapters.memory import MemoryBus


class Notice(msgspec.Struct):
    text: str


class Question(msgspec.Struct):
    q: str


class Answer(msgspec.Struct):
    ok: bool


CONFIRM = server_request(Question, Answer)

api = define_contract(
    shared={"server_to_client": {"notice": event(Notice), "confirm": CONFIRM}},
    roles={"user": {}},
)


def authenticate(hs: Handshake) -> Auth:
    # A real app checks a token here; the demo trusts the query string.
    return Auth("user", {"user_id": hs.query["user"], "device": hs.query["device"]})


def build_node(bus: MemoryBus) -> SocketServer:
    async def on_connection(conn: Conn) -> None:
        # Runs before the presence snapshot, so this room shows up in every node's view.
        await srv.room("lobby").add(conn)

    srv = create_socket_server(
        api,
        adapter=bus.adapter(),
        authenticate=authenticate,
        on_connection=on_connection,
        identify=lambda conn: conn.ctx["user_id"],  # powers by_user, is_online and to_user
        describe_conn=lambda conn: {"device": conn.ctx["device"]},  # extra descriptor fields
    )
    return srv


async def client(srv: SocketServer, user: str, device: str) -> Client:
    # reconnect=False: a kicked client stays gone (by default it would reconnect, as super-line's does)
    c = await connect(api, srv.url, role="user", params={"user": user, "device": device}, reconnect=False)
    c.on("notice", lambda n: print(f"  {user}/{device} got notice: {n.text}"))
    c.implement({"confirm": lambda q: Answer(ok=q.q == "ready?")})
    return c


async def until(read: Callable[[], Awaitable[int]], want: int, timeout: float = 5.0) -> None:
    """Poll ``read()`` until it returns ``want`` (bounded: fails after ``timeout`` seconds)."""
    for _ in range(int(timeout / 0.01)):
        if await read() == want:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"still not {want} after {timeout} s")


async def _count(descs: Awaitable[list[Any]]) -> int:
    return len(await descs)


async def main() -> None:
    bus = MemoryBus()
    a, b = build_node(bus), build_node(bus)
    for srv in (a, b):
        await srv.listen("127.0.0.1", 0)
    clients = [
        await client(a, "alice", "laptop"),
        await client(b, "alice", "phone"),
        await client(b, "bob", "desktop"),
    ]
    # Presence travels between nodes as gossip; wait until node A has seen all three.
    await until(lambda: a.cluster.count(), 3)

    print("count:", await a.cluster.count())
    for d in await a.cluster.by_user("alice"):
        print("alice:", d.to_dict())
    print("lobby:", [d.extra["device"] for d in await a.cluster.room("lobby")])
    for node in await a.cluster.topology():
        print(f"node {node.node_id}: {node.connections} connections, rooms {node.rooms}, alive={node.alive}")
    print("is bob online?", await a.is_online("bob"), "| is carol?", await a.is_online("carol"))

    a.to_user("alice").emit("notice", Notice("hello on every device"))

    (bob,) = await a.cluster.by_user("bob")
    answer: Answer = await a.to_conn(bob.id).request(CONFIRM, Question("ready?"), timeout=5.0)
    print("bob answered through node B:", answer)

    phone = next(d for d in await a.cluster.by_user("alice") if d.extra["device"] == "phone")
    a.to_conn(phone.id).close()
    await until(lambda: _count(a.cluster.by_user("alice")), 1)
    print("after kicking the phone, alice has", len(await a.cluster.by_user("alice")), "connection")

    for c in clients:
        await c.close()
    for srv in (a, b):
        await srv.close()


if __name__ == "__main__":
    asyncio.run(main())
