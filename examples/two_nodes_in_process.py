"""Two servers in one process, linked by one MemoryBus into a two-node cluster.

Each node has a client of its own. Both clients join the room ``lobby`` with a request.
A broadcast made on node A then reaches both of them, and a bus listener on node B sees
a publish made on node A, with ``meta.origin`` naming node A.

This is how to test cluster behaviour in your own suite with no network between the
nodes. Run it with ``python3 examples/two_nodes_in_process.py``. Everything stays on
127.0.0.1 and the script exits by itself.
"""

from __future__ import annotations

import asyncio

import msgspec

from superline_zmq import Conn, SocketServer, connect, create_socket_server, define_contract, event, request, topic
from superline_zmq.adapters.memory import MemoryBus
from superline_zmq.server import BusMeta


class Join(msgspec.Struct):
    room: str


class Joined(msgspec.Struct):
    room: str
    node: str
    #: Members of the room on the node that answered (a room's size is per node).
    local_size: int


class Notice(msgspec.Struct):
    text: str


class News(msgspec.Struct):
    headline: str


JOIN = request(Join, Joined)

api = define_contract(
    shared={
        "client_to_server": {"join": JOIN},
        "server_to_client": {"notice": event(Notice), "news": topic(News)},
    },
    roles={"user": {}},
)


def build_node(bus: MemoryBus) -> SocketServer:
    """A server whose adapter is on ``bus``; every server on the same bus is one cluster."""
    srv = create_socket_server(api, adapter=bus.adapter())

    async def join(input: Join, ctx: None, conn: Conn) -> Joined:
        room = srv.room(input.room)
        await room.add(conn)  # returns once broadcasts from any node reach this connection
        return Joined(input.room, srv.node_id, room.size)

    srv.implement({"shared": {"join": join}})
    return srv


async def main() -> None:
    bus = MemoryBus()
    async with build_node(bus) as a, build_node(bus) as b:
        await a.listen("127.0.0.1", 0)
        await b.listen("127.0.0.1", 0)
        print(f"node A {a.node_id} on {a.url}")
        print(f"node B {b.node_id} on {b.url}")

        loop = asyncio.get_running_loop()
        notices: dict[str, asyncio.Future[Notice]] = {"alice": loop.create_future(), "bob": loop.create_future()}

        def on_notice(name: str, notice: Notice) -> None:
            print(f"  [{name}] notice: {notice.text}")
            if not notices[name].done():
                notices[name].set_result(notice)

        alice = await connect(api, a.url, role="user")
        bob = await connect(api, b.url, role="user")
        alice.on("notice", lambda n: on_notice("alice", n))
        bob.on("notice", lambda n: on_notice("bob", n))

        for name, client in (("alice", alice), ("bob", bob)):
            joined = await client.call(JOIN, Join("lobby"))
            print(f"  [{name}] joined {joined.room!r} on node {joined.node} ({joined.local_size} member here)")

        print("node A broadcasts to 'lobby'")
        a.room("lobby").broadcast("notice", Notice("hello from node A"))
        await asyncio.wait_for(asyncio.gather(*notices.values()), 5)
        print(f"lobby size: {a.room('lobby').size} on A, {b.room('lobby').size} on B (each node counts its own)")

        heard: asyncio.Future[tuple[News, BusMeta]] = loop.create_future()

        def on_news(news: News, meta: BusMeta) -> None:
            print(f"  [bus on B] {news.headline!r} from node {meta.origin}")
            if not heard.done():
                heard.set_result((news, meta))

        off = b.subscribe("news", on_news)
        await off.ready  # from here on, publishes from any node reach the listener
        print("node A publishes to 'news'")
        a.publish("news", News("two nodes, one bus"))
        news, meta = await asyncio.wait_for(heard, 5)
        assert meta.origin == a.node_id, (meta.origin, a.node_id)
        assert isinstance(news, News)  # validated and decoded on arrival at B
        print(f"meta.origin is node A: {meta.origin == a.node_id}")
        off()

        await alice.close()
        await bob.close()
    print("both nodes closed")


if __name__ == "__main__":
    asyncio.run(main())
