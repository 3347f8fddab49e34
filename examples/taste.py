"""The README's taste, as a script: a typed request, an event, and the client's typed result.

Run it with ``python3 examples/taste.py``. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from superline_zmq import Conn, connect, create_socket_server, define_contract, event, request


class Join(msgspec.Struct):
    room: str


class Ok(msgspec.Struct):
    ok: bool


JOIN = request(Join, Ok)
api = define_contract(
    shared={"client_to_server": {"join": JOIN}, "server_to_client": {"notice": event(Join)}},
    roles={"user": {}},
)


async def join(input: Join, ctx: Any, conn: Conn) -> Ok:
    conn.emit("notice", input)
    return Ok(True)


async def main() -> None:
    srv = create_socket_server(api)
    srv.implement({"shared": {"join": join}})
    async with srv:
        await srv.listen("127.0.0.1", 0)
        client = await connect(api, srv.url, role="user")
        notices: asyncio.Queue[Join] = asyncio.Queue()
        client.on("notice", notices.put_nowait)
        ok = await client.call(JOIN, Join("lobby"))  # typed: Ok
        print("join ->", ok)
        print("notice ->", await asyncio.wait_for(notices.get(), 5))
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
