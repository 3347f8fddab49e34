"""Embed a superline server in your own ``websockets`` server.

You keep the ``serve(...)`` call, so you keep its options and can answer plain HTTP on
the same port (here a ``/healthz`` check). superline only provides two hooks:
``srv.process_request`` (authentication, before the upgrade) and ``srv.handler`` (the
connection itself).

Run it with ``python3 examples/embed_websockets.py``. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import msgspec
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse

from superline_zmq import Conn, Request, connect, create_socket_server, define_contract, request


class Ping(msgspec.Struct):
    text: str


class Pong(msgspec.Struct):
    text: str
    conn_id: str


PING: Request[Ping, Pong] = request(Ping, Pong)

api = define_contract(shared={"client_to_server": {"ping": PING}}, roles={"user": {}})


async def ping(input: Ping, ctx: None, conn: Conn) -> Pong:
    return Pong(text=input.text.upper(), conn_id=conn.id)


async def main() -> None:
    srv = create_socket_server(api)
    srv.implement({"shared": {"ping": ping}})

    async def process_request(connection: ServerConnection, req: HttpRequest) -> HttpResponse | None:
        # Your own HTTP routes first; everything else is a superline upgrade.
        if req.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return await srv.process_request(connection, req)

    await srv.start()  # the heartbeat timer; listen() would have done this for us
    async with serve(
        srv.handler,
        "127.0.0.1",
        0,
        process_request=process_request,
        max_size=srv.max_message_size,  # srv.listen() would pass these three for you
        compression=None,
        ping_interval=None,  # superline has its own heartbeat
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"your websockets server listens on ws://127.0.0.1:{port}/")

        client = await connect(api, f"ws://127.0.0.1:{port}/", role="user")
        pong = await client.call(PING, Ping("hello"))
        print(f"ping -> {pong.text} (answered on connection {pong.conn_id})")
        await client.close()
        await srv.close()  # closes superline's connections and stops its timers


if __name__ == "__main__":
    asyncio.run(main())
