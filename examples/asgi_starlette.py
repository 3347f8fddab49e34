"""A superline server mounted in a Starlette app, beside ordinary HTTP routes, served by uvicorn.

Run it with ``python examples/asgi_starlette.py`` (needs ``pip install 'superline-zmq[asgi]'``):
it serves the app on a free loopback port, calls the HTTP route and the WebSocket API once
each, and stops. In production you would run ``uvicorn examples.asgi_starlette:app`` instead
of the ``main()`` below; the app and its lifespan are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from superline_zmq import Conn, connect, create_socket_server, define_contract, request


class Hello(msgspec.Struct):
    name: str


class Greeting(msgspec.Struct):
    text: str
    conn_id: str


HELLO = request(Hello, Greeting)
api = define_contract(shared={"client_to_server": {"hello": HELLO}}, roles={"user": {}})
srv = create_socket_server(api, health_paths=True)


async def hello(input: Hello, ctx: None, conn: Conn) -> Greeting:
    return Greeting(f"hello, {input.name}", conn.id)


srv.implement({"shared": {"hello": hello}})


# --8<-- [start:app]
async def status(request: HttpRequest) -> JSONResponse:
    # an ordinary HTTP route of the same app, reading the realtime server's state
    return JSONResponse({"connections": len(srv.local.connections), "node": srv.node_id})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # Mounted apps get no lifespan of their own from Starlette: start and close the server here.
    await srv.start()
    try:
        yield
    finally:
        await srv.close(drain=5.0)  # requests in flight may finish; then 1001 to everyone


# Clients dial ws://host:port/ws/ (the mount point with its trailing slash).
app = Starlette(routes=[Route("/status", status), Mount("/ws", app=srv.asgi)], lifespan=lifespan)
# --8<-- [end:app]


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_ping_interval=None))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # bounded by uvicorn's own startup; the loop yields each turn
        await asyncio.sleep(0.01)
        if serving.done():
            serving.result()  # startup failed: raise why
    try:
        client = await connect(api, f"ws://127.0.0.1:{port}/ws/", role="user")
        greeting = await client.call(HELLO, Hello("asgi"))
        print(f"websocket: {greeting.text} (connection {greeting.conn_id})")
        code, body = await http_get(port, "/status")
        print(f"GET /status -> {code} {json.loads(body)}")
        code, body = await http_get(port, "/ws/healthz")
        print(f"GET /ws/healthz -> {code} {json.loads(body)}")
        await client.close()
    finally:
        server.should_exit = True
        await serving


if __name__ == "__main__":
    asyncio.run(main())
