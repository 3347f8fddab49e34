"""superline_zmq server for the round-trip benchmark: shared `echo: request(Text, Text)`.

Same contract and CLI as rt_raw_server.py; clients connect with `?role=user` (default authenticate).
Usage: python bench/rt_ours_server.py --port 0 [--uvloop] [--transport fast|websockets|asgi]
(prints `PORT <n>`, exits on SIGTERM)
"""

from __future__ import annotations

from typing import Any

import msgspec
from benchlib import serve_until_stopped, server_cli, use_checkout

use_checkout()

from superline_zmq import create_socket_server, define_contract, request  # noqa: E402


class Text(msgspec.Struct):
    """Payload of the echo request and its reply."""

    text: str


api = define_contract(
    shared={"client_to_server": {"echo": request(Text, Text)}},
    roles={"user": {}},
)


async def echo(input: Text, ctx: Any, conn: Any) -> Text:
    """Return the input unchanged."""
    return input


async def main(port: int, transport: str) -> None:
    """Listen on 127.0.0.1:`port` with `transport` until SIGTERM/SIGINT, then close the server."""
    srv = create_socket_server(api)
    srv.implement({"shared": {"echo": echo}})
    await serve_until_stopped(srv, port, transport)


def cli() -> None:
    """Parse arguments and run the server."""
    server_cli(__doc__ or "", main, transport=True)


if __name__ == "__main__":
    cli()
