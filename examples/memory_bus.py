"""Several servers in one process: two nodes on one MemoryBus, and a room with members on both.

The code of docs/adapters.md ("Several servers in one process"). Run it with
``python3 examples/memory_bus.py``. Everything stays on 127.0.0.1.
"""

# --8<-- [start:code]
import asyncio
from functools import partial

import msgspec

from superline_zmq import Client, Conn, SocketServer, connect, create_socket_server, define_contract, event, request
from superline_zmq.adapters.memory import MemoryBus


class Text(msgspec.Struct):
    text: str


JOIN = request(str, None)
api = define_contract(
    shared={"client_to_server": {"join": JOIN}, "server_to_client": {"notice": event(Text)}},
    roles={"user": {}},
)


def make_node(bus: MemoryBus) -> SocketServer:
    srv = create_socket_server(api, adapter=bus.adapter())  # one adapter per server

    async def join(room: str, ctx: None, conn: Conn) -> None:
        await srv.room(room).add(conn)  # returns once the room is live on every node

    srv.implement({"shared": {"join": join}})
    return srv


async def main() -> None:
    bus = MemoryBus()
    async with make_node(bus) as a, make_node(bus) as b:
        await a.listen("127.0.0.1", 0)
        await b.listen("127.0.0.1", 0)
        heard: asyncio.Queue[str] = asyncio.Queue()

        def hear(name: str, notice: Text) -> None:
            heard.put_nowait(f"client on {name}: {notice.text}")

        clients: list[Client] = []
        for name, srv in (("a", a), ("b", b)):
            client = await connect(api, srv.url, role="user")
            client.on("notice", partial(hear, name))
            await client.call(JOIN, "lobby")
            clients.append(client)
        a.room("lobby").broadcast("notice", Text("hi"))  # one room, members on both nodes
        print(sorted([await heard.get(), await heard.get()]))
        print(a.room("lobby").size, b.room("lobby").size)  # each node counts its own: 1 1
        for client in clients:
            await client.close()


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:code]
